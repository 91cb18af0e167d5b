//! What one connection holds in the data path: its handle, the maps whose events it
//! receives, and its coordination state.

use std::collections::HashSet;

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

/// The maps a connection receives events for: those it syncs and those it writes to, at
/// most `max` of them.
#[derive(Debug)]
pub(crate) struct MapEvents {
    lww: HashSet<String>,
    or: HashSet<String>,
    max: usize,
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

impl MapEvents {
    fn new(max: usize) -> Self {
        Self {
            lww: HashSet::new(),
            or: HashSet::new(),
            max,
        }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn add(&mut self, kind: MapKind, map: &str) -> Added {
        let full = self.lww.len() + self.or.len() >= self.max;
        let set = match kind {
            MapKind::Lww => &mut self.lww,
            MapKind::Or => &mut self.or,
        };
        if set.contains(map) {
            Added::Known
        } else if full {
            Added::Full
        } else {
            set.insert(map.to_owned());
            Added::New
        }
    }
}

impl ConnState {
    pub fn new(handle: ConnHandle, maps_max: usize) -> Self {
        Self {
            handle,
            maps: MapEvents::new(maps_max),
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
