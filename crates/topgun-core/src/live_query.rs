//! One live query's result window, sans I/O (PROTOCOL.md §5.1, §5.5): the rows a query
//! selects, in its sort order, and the `ENTER`/`UPDATE`/`LEAVE` changes each write makes to
//! the first `limit` of them.
//!
//! The view keeps *every* matching record in order, not just the window, so that a delete
//! inside the window promotes the next row without asking the store again. Order: the sort
//! fields in turn (numbers by value, strings in UTF-16 order, other kinds by their canonical
//! order; a missing or `nil` value after every value ascending, before them descending), then
//! the key, so that the order is total and the same on every node.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, HashMap};

use std::ops::Bound;

use crate::hash::Fnv1a;
use crate::predicate::{Filter, PredicateError};
use crate::protocol::enums::{ChangeType, CursorStatus, SortDirection};
use crate::protocol::query::Query;
use crate::protocol::{Limits, Path, Reader, Wire, Writer};
use crate::value::{Value, ValueMap};

/// One change to a subscriber's result window.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub change: ChangeType,
    /// The (projected) value; `Nil` for `LEAVE`.
    pub value: Value,
}

/// A sort value with the order live queries sort by (see the module docs).
#[derive(Debug, Clone)]
struct SortValue(Option<Value>);

impl Ord for SortValue {
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(Value::Str(a)), Some(Value::Str(b))) => crate::js::cmp_utf16(a, b),
            (Some(a), Some(b)) => a.canonical_cmp(b),
        }
    }
}

impl PartialOrd for SortValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SortValue {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SortValue {}

/// One sort field's value, in its direction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Cell {
    Asc(SortValue),
    Desc(Reverse<SortValue>),
}

/// A row's place in the order: its sort cells, then its key.
type Place = (Vec<Cell>, String);

/// Where the window ends: its last row (`None`: empty), and how many rows follow the start.
#[derive(Debug, Clone)]
struct Edge {
    last: Option<Place>,
    len: usize,
}

/// A live query's rows and window.
#[derive(Debug, Clone)]
pub struct View {
    filter: Filter,
    sort: Vec<(String, SortDirection)>,
    limit: Option<usize>,
    fields: Option<Vec<String>>,
    rows: BTreeMap<Place, Value>,
    places: HashMap<String, Place>,
    /// The window starts after this row (a cursor's page); `None`: at the first row.
    start: Option<Place>,
    /// The window's last row and the number of rows after `start`, kept up to date by
    /// `apply` so that a change costs O(log n); `None` until first needed after a `load`
    /// or `resume`, which work them out afresh.
    edge: Option<Edge>,
    /// Identifies the filter and order, so that a cursor from another query is refused.
    fingerprint: u32,
}

impl View {
    /// A view of `query`, projected to `fields` when given (`QUERY_SUB.fields`).
    pub fn new(query: &Query, fields: Option<Vec<String>>) -> Result<Self, PredicateError> {
        Ok(Self {
            filter: Filter::new(query)?,
            sort: query
                .sort
                .iter()
                .flat_map(|s| s.0.iter())
                .map(|f| (f.field.to_string(), f.direction))
                .collect(),
            // No response lists more than ROWS_MAX rows: an unlimited query is a window of
            // that many, with `hasMore` and a cursor for the rest.
            limit: Some(query.limit.map_or(ROWS_MAX, |l| (l as usize).min(ROWS_MAX))),
            fields: fields.or_else(|| query.fields.clone()),
            rows: BTreeMap::new(),
            places: HashMap::new(),
            start: None,
            edge: None,
            fingerprint: fingerprint(query),
        })
    }

    /// A field every selected record has with one value (see
    /// [`Filter::required_equality`]): what a registry of many views can index them by.
    pub fn required_equality(&self) -> Option<(&str, &Value)> {
        self.filter.required_equality()
    }

    /// The keys of every selected row.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.places.keys().map(String::as_str)
    }

    /// A matching row's value (unprojected), if the key is selected.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.places.get(key).and_then(|place| self.rows.get(place))
    }

    /// Every matching row, in order.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The window: the first `limit` rows (all without a limit), projected.
    pub fn window(&self) -> Vec<(String, Value)> {
        self.tail()
            .take(self.limit.unwrap_or(usize::MAX))
            .map(|((_, key), value)| (key.clone(), self.project(value)))
            .collect()
    }

    /// Whether rows beyond the window match too.
    pub fn has_more(&self) -> bool {
        self.limit.is_some_and(|limit| {
            (self.start.is_some() || self.rows.len() > limit) && self.tail().nth(limit).is_some()
        })
    }

    /// The rows from the window's start on.
    fn tail(&self) -> std::collections::btree_map::Range<'_, Place, Value> {
        match &self.start {
            Some(start) => self
                .rows
                .range((Bound::Excluded(start.clone()), Bound::Unbounded)),
            None => self.rows.range::<Place, _>(..),
        }
    }

    /// Starts the window after the row `cursor` names (a page after the one it ended), and
    /// says what became of the cursor. An unusable cursor starts at the first row.
    pub fn resume(&mut self, cursor: Option<&str>, now_ms: u64) -> CursorStatus {
        self.start = None;
        self.edge = None;
        let Some(cursor) = cursor else {
            return CursorStatus::None;
        };
        match self.decode_cursor(cursor) {
            Some((issued_ms, place)) => {
                if now_ms.saturating_sub(issued_ms) > CURSOR_TTL_MS {
                    return CursorStatus::Expired;
                }
                self.start = Some(place);
                CursorStatus::Valid
            }
            None => CursorStatus::Invalid,
        }
    }

    /// The cursor for the page after the window, when rows follow it and a limit was given.
    pub fn next_cursor(&self, now_ms: u64) -> Option<String> {
        let limit = self.limit?;
        if !self.has_more() {
            return None;
        }
        let (last, _) = self.tail().take(limit).last()?;
        let sort_values = last.0.iter().map(|cell| {
            let SortValue(v) = match cell {
                Cell::Asc(v) | Cell::Desc(Reverse(v)) => v,
            };
            v.clone().unwrap_or(Value::Nil)
        });
        let body = Value::Array(vec![
            Value::Int(CURSOR_VERSION),
            Value::from(u64::from(self.fingerprint)),
            Value::from(now_ms),
            Value::from(last.1.as_str()),
            Value::Array(sort_values.collect()),
        ]);
        let mut w = Writer::new();
        body.encode(&mut w);
        Some(base64url::encode(w.as_bytes()))
    }

    /// `(issued, place)` of a cursor this query issued; `None` for anything else.
    fn decode_cursor(&self, cursor: &str) -> Option<(u64, Place)> {
        let bytes = base64url::decode(cursor)?;
        let mut r = Reader::new(&bytes, &Limits::default()).ok()?;
        let body = Value::decode(&mut r, Path::Root).ok()?;
        let [version, fingerprint, issued, key, values] = body.as_array()? else {
            return None;
        };
        let fingerprint = u32::try_from(uint(fingerprint)?).ok()?;
        if *version != Value::Int(CURSOR_VERSION) || fingerprint != self.fingerprint {
            return None;
        }
        let values = values.as_array()?;
        if values.len() != self.sort.len() {
            return None;
        }
        let cells = self
            .sort
            .iter()
            .zip(values)
            .map(|((_, direction), v)| cell(*direction, Some(v.clone()).filter(|v| !v.is_nil())))
            .collect();
        Some((uint(issued)?, (cells, key.as_str()?.to_owned())))
    }

    /// Takes a record's state without working out what a subscriber must be told: for
    /// filling a view from a snapshot before its first response (O(log n) a row, where
    /// [`View::apply`] also walks the window).
    pub fn load(&mut self, key: &str, value: Option<&Value>, auth: Option<&Value>) {
        self.edge = None;
        if let Some(place) = self.places.remove(key) {
            self.rows.remove(&place);
        }
        if let Some(v) = value.filter(|v| self.filter.matches(v, auth) && !v.is_nil()) {
            let place = self.place(key, v);
            self.rows.insert(place.clone(), v.clone());
            self.places.insert(key.to_owned(), place);
        }
    }

    /// Applies a record's new state (`None`: deleted) and returns what the window's
    /// subscriber must be told, in order: the row itself, then any row pushed out of the
    /// window or pulled into it.
    pub fn apply(&mut self, key: &str, value: Option<&Value>, auth: Option<&Value>) -> Vec<Change> {
        let limit = self.limit.unwrap_or(usize::MAX);
        let before = self.edge.take().unwrap_or_else(|| self.measure(limit));
        // A one-row change moves at most one other row across the window's edge: the last
        // row inside is pushed out, or the first row outside is pulled in.
        let full = before.len >= limit;
        let last_inside = before.last.clone().filter(|_| full);
        let first_outside = last_inside
            .as_ref()
            .and_then(|last| self.after(last).cloned());
        let was_in = self
            .places
            .get(key)
            .is_some_and(|p| self.inside(p, &before));
        let mut edge = before;
        if let Some(place) = self.places.remove(key) {
            self.rows.remove(&place);
            self.removed(&place, &mut edge, limit);
        }
        let selected = value.filter(|v| self.filter.matches(v, auth) && !v.is_nil());
        if let Some(v) = selected {
            let place = self.place(key, v);
            self.rows.insert(place.clone(), v.clone());
            self.places.insert(key.to_owned(), place.clone());
            self.inserted(&place, &mut edge, limit);
        }
        let inside =
            |view: &Self, k: &str| view.places.get(k).is_some_and(|p| view.inside(p, &edge));
        let mut changes = Vec::new();
        match (was_in, inside(self, key)) {
            (false, true) => changes.push(self.change(key, ChangeType::Enter)),
            (true, true) => changes.push(self.change(key, ChangeType::Update)),
            (true, false) => changes.push(leave(key)),
            (false, false) => {}
        }
        if let Some((_, last)) = last_inside.filter(|(_, k)| k != key && !inside(self, k)) {
            changes.push(leave(&last));
        }
        if let Some((_, next)) = first_outside.filter(|(_, k)| k != key && inside(self, k)) {
            changes.push(self.change(&next, ChangeType::Enter));
        }
        self.edge = Some(edge);
        changes
    }

    /// The window's edge worked out from scratch: O(rows after the start).
    fn measure(&self, limit: usize) -> Edge {
        let len = self.tail().count();
        let last = match limit {
            0 => None,
            usize::MAX => self.tail().next_back().map(|(p, _)| p.clone()),
            _ => self.tail().take(limit).last().map(|(p, _)| p.clone()),
        };
        Edge { last, len }
    }

    /// Whether a row is in the window an edge describes.
    fn inside(&self, place: &Place, edge: &Edge) -> bool {
        self.start.as_ref().is_none_or(|start| place > start)
            && edge.last.as_ref().is_some_and(|last| place <= last)
    }

    fn after(&self, place: &Place) -> Option<&Place> {
        self.rows
            .range((Bound::Excluded(place.clone()), Bound::Unbounded))
            .next()
            .map(|(p, _)| p)
    }

    /// Moves the edge for a row just taken out of the order.
    fn removed(&self, place: &Place, edge: &mut Edge, limit: usize) {
        if self.start.as_ref().is_some_and(|start| place <= start) {
            return;
        }
        edge.len -= 1;
        let Some(last) = edge.last.clone() else {
            return;
        };
        if *place > last {
            return;
        }
        edge.last = if edge.len >= limit {
            // Still full: the next row moves in.
            self.after(&last).cloned()
        } else {
            // Every remaining row fits: the window ends at the last one.
            self.tail().next_back().map(|(p, _)| p.clone())
        };
    }

    /// Moves the edge for a row just put into the order.
    fn inserted(&self, place: &Place, edge: &mut Edge, limit: usize) {
        if limit == 0 || self.start.as_ref().is_some_and(|start| place <= start) {
            if self.start.as_ref().is_none_or(|start| place > start) {
                edge.len += 1;
            }
            return;
        }
        edge.len += 1;
        match edge.last.clone() {
            None => edge.last = Some(place.clone()),
            Some(last) if edge.len <= limit => {
                if *place > last {
                    edge.last = Some(place.clone());
                }
            }
            Some(last) => {
                if *place < last {
                    // The old last row is pushed out: the one before it ends the window.
                    edge.last = self.rows.range(..last).next_back().map(|(p, _)| p.clone());
                }
            }
        }
    }

    fn place(&self, key: &str, value: &Value) -> Place {
        let cells = self
            .sort
            .iter()
            .map(|(field, direction)| {
                let v = value
                    .get(field)
                    .or_else(|| value.get_path(field))
                    .filter(|v| !v.is_nil())
                    .cloned();
                cell(*direction, v)
            })
            .collect();
        (cells, key.to_owned())
    }

    fn change(&self, key: &str, change: ChangeType) -> Change {
        let value = self
            .places
            .get(key)
            .and_then(|p| self.rows.get(p))
            .map_or(Value::Nil, |v| self.project(v));
        Change {
            key: key.to_owned(),
            change,
            value,
        }
    }

    /// The value with only the projected fields, when a projection was asked for.
    fn project(&self, value: &Value) -> Value {
        match (&self.fields, value.as_map()) {
            (Some(fields), Some(map)) => Value::Map(
                fields
                    .iter()
                    .filter_map(|f| map.get(f).map(|v| (f.as_str(), v.clone())))
                    .collect::<ValueMap>(),
            ),
            _ => value.clone(),
        }
    }
}

fn cell(direction: SortDirection, value: Option<Value>) -> Cell {
    match direction {
        SortDirection::Asc => Cell::Asc(SortValue(value)),
        SortDirection::Desc => Cell::Desc(Reverse(SortValue(value))),
    }
}

/// Most rows in one window (one `QUERY_RESP`), as in PROTOCOL.md §5.1.
pub const ROWS_MAX: usize = 10_000;

/// How long a cursor stays usable (PROTOCOL.md §5.4).
pub const CURSOR_TTL_MS: u64 = 10 * 60 * 1000;
const CURSOR_VERSION: i64 = 1;

/// A hash of what decides a query's rows and their order: its `where`, `predicate` and
/// `sort`, as encoded on the wire.
fn fingerprint(query: &Query) -> u32 {
    let mut w = Writer::new();
    query.where_.encode(&mut w);
    query.predicate.encode(&mut w);
    query.sort.encode(&mut w);
    let mut hash = Fnv1a::new();
    for &b in w.as_bytes() {
        hash.write_unit(u16::from(b));
    }
    hash.finish()
}

/// Unpadded base64url, the cursor's text form.
mod base64url {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub(super) fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    pub(super) fn decode(text: &str) -> Option<Vec<u8>> {
        let digit = |c: u8| {
            let at = ALPHABET.iter().position(|&a| a == c)?;
            u32::try_from(at).ok()
        };
        let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
        for chunk in text.as_bytes().chunks(4) {
            if chunk.len() < 2 {
                return None;
            }
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                n |= digit(c)? << (18 - 6 * i);
            }
            for i in 0..chunk.len() - 1 {
                // `n` holds 24 bits: its big-endian bytes 1 to 3.
                out.push(n.to_be_bytes()[1 + i]);
            }
        }
        Some(out)
    }
}

/// A non-negative integer value.
fn uint(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::UInt(u) => Some(*u),
        _ => None,
    }
}

fn leave(key: &str) -> Change {
    Change {
        key: key.to_owned(),
        change: ChangeType::Leave,
        value: Value::Nil,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::enums::PredicateOp;
    use crate::protocol::query::{PredicateNode, Sort, SortField};

    fn doc(score: i64, team: &str) -> Value {
        Value::Map(
            [("score", Value::Int(score)), ("team", Value::from(team))]
                .into_iter()
                .collect(),
        )
    }

    /// Top `limit` of team "a" by score, descending.
    fn top(limit: u32) -> View {
        let query = Query {
            predicate: Some(PredicateNode::leaf(PredicateOp::Eq, "team", "a".into())),
            sort: Some(Sort(vec![SortField {
                field: "score".into(),
                direction: SortDirection::Desc,
            }])),
            limit: Some(limit),
            ..Query::default()
        };
        View::new(&query, None).unwrap()
    }

    fn kinds(changes: &[Change]) -> Vec<(&str, ChangeType)> {
        changes.iter().map(|c| (c.key.as_str(), c.change)).collect()
    }

    fn keys(view: &View) -> Vec<String> {
        view.window().into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn an_insert_above_the_edge_displaces_the_last_row() {
        let mut view = top(2);
        assert_eq!(
            kinds(&view.apply("x", Some(&doc(10, "a")), None)),
            [("x", ChangeType::Enter)]
        );
        assert_eq!(
            kinds(&view.apply("y", Some(&doc(5, "a")), None)),
            [("y", ChangeType::Enter)]
        );
        let changes = view.apply("z", Some(&doc(7, "a")), None);
        assert_eq!(
            kinds(&changes),
            [("z", ChangeType::Enter), ("y", ChangeType::Leave)]
        );
        assert_eq!(keys(&view), ["x", "z"]);
        assert!(view.has_more());
        // Below the edge: nothing to tell.
        assert!(view.apply("w", Some(&doc(1, "a")), None).is_empty());
        // Not selected at all.
        assert!(view.apply("v", Some(&doc(99, "b")), None).is_empty());
    }

    #[test]
    fn a_delete_inside_the_window_promotes_the_next_row() {
        let mut view = top(2);
        for (k, s) in [("x", 10), ("y", 5), ("z", 7)] {
            view.apply(k, Some(&doc(s, "a")), None);
        }
        let changes = view.apply("x", None, None);
        assert_eq!(
            kinds(&changes),
            [("x", ChangeType::Leave), ("y", ChangeType::Enter)]
        );
        assert_eq!(changes[1].value, doc(5, "a"));
        assert_eq!(keys(&view), ["z", "y"]);
    }

    #[test]
    fn updates_move_rows_across_the_edge_and_out_of_the_filter() {
        let mut view = top(2);
        for (k, s) in [("x", 10), ("y", 5), ("z", 7)] {
            view.apply(k, Some(&doc(s, "a")), None);
        }
        // Still inside, new value.
        assert_eq!(
            kinds(&view.apply("z", Some(&doc(8, "a")), None)),
            [("z", ChangeType::Update)]
        );
        // From outside to the top: enters, and pushes the edge row out.
        let changes = view.apply("y", Some(&doc(20, "a")), None);
        assert_eq!(
            kinds(&changes),
            [("y", ChangeType::Enter), ("z", ChangeType::Leave)]
        );
        // Out of the filter: leaves, and the next row comes in.
        let changes = view.apply("y", Some(&doc(20, "b")), None);
        assert_eq!(
            kinds(&changes),
            [("y", ChangeType::Leave), ("z", ChangeType::Enter)]
        );
        assert_eq!(keys(&view), ["x", "z"]);
    }

    #[test]
    fn without_a_limit_every_match_is_in_the_window() {
        let query = Query::default();
        let mut view = View::new(&query, Some(vec!["team".into()])).unwrap();
        let changes = view.apply("k", Some(&doc(1, "a")), None);
        assert_eq!(kinds(&changes), [("k", ChangeType::Enter)]);
        // Projected to `team`.
        let team_only: Value = Value::Map([("team", Value::from("a"))].into_iter().collect());
        assert_eq!(changes[0].value, team_only);
        assert_eq!(
            kinds(&view.apply("k", None, None)),
            [("k", ChangeType::Leave)]
        );
        assert!(view.is_empty());
    }

    /// Applies random writes to `view`, applying exactly the reported changes to `replica`,
    /// which must equal the window after every write.
    fn replay(
        view: &mut View,
        replica: &mut BTreeMap<String, Value>,
        writes: Vec<(u8, Option<(i64, bool)>)>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        for (key, state) in writes {
            let key = format!("k{key}");
            let value = state.map(|(score, mine)| doc(score, if mine { "a" } else { "b" }));
            for change in view.apply(&key, value.as_ref(), None) {
                let known = match change.change {
                    ChangeType::Enter => replica.insert(change.key, change.value).is_none(),
                    ChangeType::Update => replica.insert(change.key, change.value).is_some(),
                    ChangeType::Leave => replica.remove(&change.key).is_some(),
                };
                proptest::prop_assert!(known, "a change the replica cannot take");
            }
            let window: BTreeMap<String, Value> = view.window().into_iter().collect();
            proptest::prop_assert_eq!(&*replica, &window);
        }
        Ok(())
    }

    proptest::proptest! {
        /// A subscriber that applies exactly the reported changes always holds the window.
        #[test]
        fn replaying_the_changes_reproduces_the_window(
            limit in 1u32..5,
            writes in proptest::collection::vec(
                (0u8..8, proptest::option::of((0i64..6, proptest::bool::ANY))),
                1..60,
            ),
        ) {
            let mut view = top(limit);
            let mut replica: BTreeMap<String, Value> = BTreeMap::new();
            replay(&mut view, &mut replica, writes)?;
        }
    }

    #[test]
    fn base64url_round_trips_every_length() {
        for len in 0..10 {
            let bytes: Vec<u8> = (0..len)
                .map(|i: u8| i.wrapping_mul(37).wrapping_add(250))
                .collect();
            let text = base64url::encode(&bytes);
            assert!(!text.contains('=') && !text.contains('+') && !text.contains('/'));
            assert_eq!(base64url::decode(&text), Some(bytes));
        }
        assert_eq!(base64url::decode("a"), None);
        assert_eq!(base64url::decode("a*"), None);
    }

    #[test]
    fn cursors_page_through_every_row_once_in_order() {
        let mut view = top(100);
        for i in 0..2500 {
            // Many equal scores: the key breaks ties, so pages neither skip nor repeat.
            view.apply(&format!("k{i:04}"), Some(&doc(i % 7, "a")), None);
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let status = view.resume(cursor.as_deref(), 1_000);
            let expected = if cursor.is_some() {
                CursorStatus::Valid
            } else {
                CursorStatus::None
            };
            assert_eq!(status, expected);
            seen.extend(view.window().into_iter().map(|(k, _)| k));
            cursor = view.next_cursor(1_000);
            if cursor.is_none() {
                assert!(!view.has_more());
                break;
            }
        }
        view.resume(None, 1_000);
        let all: Vec<String> = view.rows.keys().map(|(_, k)| k.clone()).collect();
        assert_eq!(seen.len(), 2500);
        assert_eq!(seen, all, "every row once, in the query's order");
    }

    #[test]
    fn foreign_stale_and_garbage_cursors_start_over() {
        let mut view = top(2);
        for (k, s) in [("x", 10), ("y", 5), ("z", 7)] {
            view.apply(k, Some(&doc(s, "a")), None);
        }
        let cursor = view.next_cursor(1_000).unwrap();
        assert_eq!(
            view.resume(Some(&cursor), 1_000 + CURSOR_TTL_MS + 1),
            CursorStatus::Expired
        );
        assert_eq!(keys(&view), ["x", "z"]);
        assert_eq!(
            view.resume(Some("not a cursor"), 1_000),
            CursorStatus::Invalid
        );
        // A page size may change between pages; the filter or order may not.
        assert_eq!(top(3).resume(Some(&cursor), 1_000), CursorStatus::Valid);
        let mut other = View::new(&Query::default(), None).unwrap();
        assert_eq!(
            other.resume(Some(&cursor), 1_000),
            CursorStatus::Invalid,
            "another query's"
        );
        assert_eq!(view.resume(Some(&cursor), 2_000), CursorStatus::Valid);
        assert_eq!(keys(&view), ["y"]);
    }

    #[test]
    fn a_paged_window_ignores_rows_before_its_start() {
        let mut view = top(2);
        for (k, s) in [("a", 50), ("b", 40), ("c", 30), ("d", 20)] {
            view.apply(k, Some(&doc(s, "a")), None);
        }
        let cursor = view.next_cursor(0).unwrap();
        view.resume(Some(&cursor), 0);
        assert_eq!(keys(&view), ["c", "d"]);
        // Above the page: not this window's business.
        assert!(view.apply("e", Some(&doc(60, "a")), None).is_empty());
        // Into the page, pushing its last row out.
        let changes = view.apply("f", Some(&doc(35, "a")), None);
        assert_eq!(
            kinds(&changes),
            [("f", ChangeType::Enter), ("d", ChangeType::Leave)]
        );
        // A row of the page moving above it leaves, and the next comes in.
        let changes = view.apply("c", Some(&doc(70, "a")), None);
        assert_eq!(
            kinds(&changes),
            [("c", ChangeType::Leave), ("d", ChangeType::Enter)]
        );
    }

    #[test]
    fn an_unlimited_query_is_capped_at_rows_max_with_a_cursor() {
        let mut view = View::new(&Query::default(), None).unwrap();
        for i in 0..ROWS_MAX + 5 {
            view.apply(&format!("k{i:05}"), Some(&doc(1, "a")), None);
        }
        assert_eq!(view.window().len(), ROWS_MAX);
        assert!(view.has_more());
        let cursor = view.next_cursor(0).unwrap();
        view.resume(Some(&cursor), 0);
        assert_eq!(view.window().len(), 5);
        assert_eq!(
            view.get("k00000"),
            Some(&doc(1, "a")),
            "rows before the page are kept"
        );
    }

    proptest::proptest! {
        /// The same for a window that starts after a cursor: a subscriber holding the page
        /// and applying the changes always holds the page.
        #[test]
        fn replaying_the_changes_reproduces_a_paged_window(
            limit in 1u32..4,
            before in proptest::collection::vec((0u8..10, 0i64..6), 4..12),
            writes in proptest::collection::vec(
                (0u8..10, proptest::option::of((0i64..6, proptest::bool::ANY))),
                1..40,
            ),
        ) {
            let mut view = top(limit);
            for (key, score) in before {
                view.apply(&format!("k{key}"), Some(&doc(score, "a")), None);
            }
            let Some(cursor) = view.next_cursor(0) else {
                return Ok(());
            };
            proptest::prop_assert_eq!(view.resume(Some(&cursor), 0), CursorStatus::Valid);
            let mut replica: BTreeMap<String, Value> = view.window().into_iter().collect();
            replay(&mut view, &mut replica, writes)?;
        }
    }

    #[test]
    fn the_order_is_total_missing_values_last_then_by_key() {
        let query = Query {
            sort: Some(Sort(vec![SortField {
                field: "score".into(),
                direction: SortDirection::Asc,
            }])),
            ..Query::default()
        };
        let mut view = View::new(&query, None).unwrap();
        view.apply("b", Some(&doc(1, "a")), None);
        view.apply("a", Some(&doc(1, "a")), None);
        view.apply("none", Some(&Value::Map(ValueMap::new())), None);
        view.apply(
            "c",
            Some(&Value::Map(
                [("score", Value::Float(0.5))].into_iter().collect(),
            )),
            None,
        );
        assert_eq!(keys(&view), ["c", "a", "b", "none"]);
    }
}
