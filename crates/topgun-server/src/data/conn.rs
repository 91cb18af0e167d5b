//! What one connection holds in the data path: its handle, the maps whose events it
//! receives, and its coordination state.

use std::collections::HashMap;

use crate::connection::fanout::ConnHandle;
use crate::coordination::router::CoordState;
use crate::security::auth::Principal;
use crate::security::policy::Subject;
use crate::storage::store::MapKind;

/// One connection's state, owned by its reader task and lent to each request it serves.
#[derive(Debug)]
pub struct ConnState {
    pub handle: ConnHandle,
    /// Maps whose events this connection receives.
    pub(crate) maps: MapEvents,
    pub(crate) coordination: CoordState,
}

/// The maps a connection receives events for, and why: it syncs or writes the LWW map or
/// the OR-Map of a name, or holds live queries on the name (COMPAT §4.2: a query subscriber
/// hears of both maps' writes, as on the reference server). At most `max` slots: a synced or
/// written map is a slot, and a name held only by queries is one slot for both its maps.
#[derive(Debug)]
pub(crate) struct MapEvents {
    names: HashMap<String, Interest>,
    /// The live query ids holding each name, so that an unsubscribe finds its map.
    queries: HashMap<String, String>,
    slots: usize,
    max: usize,
    queries_max: usize,
}

/// Why a connection receives a map name's events.
#[derive(Debug, Default, Clone, Copy)]
struct Interest {
    /// Synced or written: kept until the connection closes.
    lww: bool,
    or: bool,
    /// Live queries on the name.
    queries: usize,
}

impl Interest {
    fn slots(self) -> usize {
        (usize::from(self.lww) + usize::from(self.or)).max(usize::from(self.queries > 0))
    }

    fn holds(self, kind: MapKind) -> bool {
        self.queries > 0
            || match kind {
                MapKind::Lww => self.lww,
                MapKind::Or => self.or,
            }
    }
}

/// What [`MapEvents::add`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// The connection already receives the map's events.
    Known,
    /// It does now: the shards must be told.
    New,
    /// It receives the most maps allowed; nothing changed.
    Full,
}

/// Both map kinds, for a name's query-held events.
const KINDS: [MapKind; 2] = [MapKind::Lww, MapKind::Or];

impl MapEvents {
    fn new(max: usize, queries_max: usize) -> Self {
        Self {
            names: HashMap::new(),
            queries: HashMap::new(),
            slots: 0,
            max,
            queries_max,
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Changes `map`'s interest if the slots allow; returns the kinds it newly receives.
    fn change(&mut self, map: &str, edit: impl FnOnce(&mut Interest)) -> Option<Vec<MapKind>> {
        let old = self.names.get(map).copied().unwrap_or_default();
        let mut new = old;
        edit(&mut new);
        let slots = self.slots - old.slots() + new.slots();
        if slots > self.max && new.slots() > old.slots() {
            return None;
        }
        self.slots = slots;
        if new.slots() == 0 {
            self.names.remove(map);
        } else {
            self.names.insert(map.to_owned(), new);
        }
        Some(
            KINDS
                .into_iter()
                .filter(|k| new.holds(*k) && !old.holds(*k))
                .collect(),
        )
    }

    /// The connection syncs or writes `kind`'s map `map`.
    pub(crate) fn add(&mut self, kind: MapKind, map: &str) -> Added {
        let known = self.names.get(map).is_some_and(|i| match kind {
            MapKind::Lww => i.lww,
            MapKind::Or => i.or,
        });
        if known {
            return Added::Known;
        }
        let changed = self.change(map, |i| match kind {
            MapKind::Lww => i.lww = true,
            MapKind::Or => i.or = true,
        });
        match changed {
            None => Added::Full,
            Some(kinds) if kinds.is_empty() => Added::Known,
            Some(_) => Added::New,
        }
    }

    /// Live query `query_id` now reads `map` (a re-sent id replaces its query): the kinds
    /// whose events the connection must now be subscribed to, and those it must leave.
    pub(crate) fn add_query(&mut self, query_id: &str, map: &str) -> Changes {
        let mut changes = Changes::default();
        match self.queries.get(query_id) {
            Some(held) if held == map => return changes,
            Some(_) => changes.leave = self.remove_query(query_id).leave,
            None if self.queries.len() >= self.queries_max => return changes,
            None => {}
        }
        if let Some(join) = self.change(map, |i| i.queries += 1) {
            self.queries.insert(query_id.to_owned(), map.to_owned());
            changes.join = join;
        }
        changes
    }

    /// Every (kind, map) the connection receives events of, forgotten: it closed.
    pub(crate) fn take_all(&mut self) -> Vec<(MapKind, String)> {
        self.queries.clear();
        self.slots = 0;
        let mut out = Vec::new();
        for (map, interest) in self.names.drain() {
            for kind in KINDS.into_iter().filter(|k| interest.holds(*k)) {
                out.push((kind, map.clone()));
            }
        }
        out
    }

    /// Live query `query_id` ended: the kinds of its map whose events nothing else holds.
    pub(crate) fn remove_query(&mut self, query_id: &str) -> Changes {
        let Some(map) = self.queries.remove(query_id) else {
            return Changes::default();
        };
        let old = self.names.get(&map).copied().unwrap_or_default();
        self.change(&map, |i| i.queries = i.queries.saturating_sub(1));
        let new = self.names.get(&map).copied().unwrap_or_default();
        let leave = KINDS
            .into_iter()
            .filter(|k| old.holds(*k) && !new.holds(*k))
            .map(|k| (k, map.clone()))
            .collect();
        Changes {
            join: Vec::new(),
            leave,
        }
    }
}

/// The shard subscriptions a query change needs: the kinds of the query's map to join, and
/// the (kind, map) pairs to leave.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) join: Vec<MapKind>,
    pub(crate) leave: Vec<(MapKind, String)>,
}

impl ConnState {
    pub fn new(handle: ConnHandle, maps_max: usize, queries_max: usize) -> Self {
        Self {
            handle,
            maps: MapEvents::new(maps_max, queries_max),
            coordination: CoordState::default(),
        }
    }

    /// Records who is authenticated on the connection (after every frame: an `AUTH` may
    /// have changed it, or a logout ended it). With authentication off, every connection is
    /// an anonymous subject from the start.
    pub fn set_principal(&mut self, principal: Option<&Principal>, auth_required: bool) {
        let wanted = match principal {
            Some(p) => Some((Some(p.user_id.as_str()), p.roles.as_slice())),
            None if !auth_required => Some((None, &[][..])),
            None => None,
        };
        if !self.handle.access().subject_is(wanted) {
            let subject = wanted.map(|(user, roles)| Subject {
                user_id: user.map(str::to_owned),
                roles: roles.to_vec(),
            });
            self.handle.access().set_subject(subject);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MapKind::{Lww, Or};

    #[test]
    fn synced_and_written_maps_take_a_slot_each_up_to_the_limit() {
        let mut maps = MapEvents::new(2, 8);
        assert_eq!(maps.add(Lww, "a"), Added::New);
        assert_eq!(maps.add(Lww, "a"), Added::Known);
        assert_eq!(maps.add(Or, "a"), Added::New);
        assert_eq!(maps.add(Lww, "b"), Added::Full);
    }

    #[test]
    fn a_query_joins_both_kinds_in_one_slot_and_leaves_what_nothing_else_holds() {
        let mut maps = MapEvents::new(2, 8);
        assert_eq!(maps.add(Lww, "a"), Added::New);
        let joined = maps.add_query("q1", "a");
        assert_eq!(joined.join, [Or], "LWW events were already received");
        assert_eq!(maps.add_query("q2", "b").join, [Lww, Or]);
        assert_eq!(
            maps.add_query("q3", "c"),
            Changes::default(),
            "no slot left"
        );
        assert_eq!(
            maps.add_query("q4", "b"),
            Changes::default(),
            "b is held already"
        );
        assert_eq!(maps.remove_query("q2").leave, [], "q4 still holds b");
        assert_eq!(
            maps.remove_query("q4").leave,
            [(Lww, "b".into()), (Or, "b".into())]
        );
        assert_eq!(
            maps.remove_query("q1").leave,
            [(Or, "a".into())],
            "a is synced"
        );
        assert_eq!(maps.remove_query("q1"), Changes::default(), "already gone");
        assert_eq!(maps.add(Lww, "c"), Added::New, "the slots are free again");
    }

    #[test]
    fn a_re_sent_query_id_moves_to_its_new_map() {
        let mut maps = MapEvents::new(4, 8);
        maps.add_query("q", "a");
        let moved = maps.add_query("q", "b");
        assert_eq!(moved.join, [Lww, Or]);
        assert_eq!(moved.leave, [(Lww, "a".into()), (Or, "a".into())]);
        assert_eq!(maps.add_query("q", "b"), Changes::default());
    }

    #[test]
    fn a_closed_connection_gives_up_every_kind_it_held_once() {
        let mut maps = MapEvents::new(4, 8);
        maps.add(Lww, "a");
        maps.add_query("q", "b");
        maps.add_query("q2", "b");
        let mut held = maps.take_all();
        held.sort();
        assert_eq!(
            held,
            [(Lww, "a".into()), (Lww, "b".into()), (Or, "b".into())]
        );
        assert!(maps.take_all().is_empty());
        assert_eq!(maps.add(Lww, "a"), Added::New);
    }

    #[test]
    fn query_ids_are_bounded() {
        let mut maps = MapEvents::new(4, 1);
        maps.add_query("q1", "a");
        assert_eq!(maps.add_query("q2", "b"), Changes::default());
        assert_eq!(maps.remove_query("q2"), Changes::default());
    }
}
