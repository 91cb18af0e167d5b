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

use crate::predicate::{Filter, PredicateError};
use crate::protocol::enums::{ChangeType, SortDirection};
use crate::protocol::query::Query;
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
            (Some(Value::Str(a)), Some(Value::Str(b))) => a.encode_utf16().cmp(b.encode_utf16()),
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

/// A live query's rows and window.
#[derive(Debug, Clone)]
pub struct View {
    filter: Filter,
    sort: Vec<(String, SortDirection)>,
    limit: Option<usize>,
    fields: Option<Vec<String>>,
    rows: BTreeMap<Place, Value>,
    places: HashMap<String, Place>,
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
            limit: query.limit.map(|l| l as usize),
            fields: fields.or_else(|| query.fields.clone()),
            rows: BTreeMap::new(),
            places: HashMap::new(),
        })
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
        self.rows
            .iter()
            .take(self.limit.unwrap_or(usize::MAX))
            .map(|((_, key), value)| (key.clone(), self.project(value)))
            .collect()
    }

    /// Whether rows beyond the window match too.
    pub fn has_more(&self) -> bool {
        self.limit.is_some_and(|limit| self.rows.len() > limit)
    }

    /// Applies a record's new state (`None`: deleted) and returns what the window's
    /// subscriber must be told, in order: the row itself, then any row pushed out of the
    /// window or pulled into it.
    pub fn apply(&mut self, key: &str, value: Option<&Value>, auth: Option<&Value>) -> Vec<Change> {
        let limit = self.limit.unwrap_or(usize::MAX);
        // A one-row change moves at most one other row across the window's edge: the last
        // row inside is pushed out, or the first row outside is pulled in.
        let last_inside = self.key_at(limit.checked_sub(1));
        let first_outside = self.key_at(Some(limit));
        let was_in = self
            .places
            .get(key)
            .is_some_and(|p| self.in_window(p, limit));
        if let Some(place) = self.places.remove(key) {
            self.rows.remove(&place);
        }
        let selected = value.filter(|v| self.filter.matches(v, auth) && !v.is_nil());
        if let Some(v) = selected {
            let place = self.place(key, v);
            self.rows.insert(place.clone(), v.clone());
            self.places.insert(key.to_owned(), place);
        }
        let inside =
            |view: &Self, k: &str| view.places.get(k).is_some_and(|p| view.in_window(p, limit));
        let mut changes = Vec::new();
        match (was_in, inside(self, key)) {
            (false, true) => changes.push(self.change(key, ChangeType::Enter)),
            (true, true) => changes.push(self.change(key, ChangeType::Update)),
            (true, false) => changes.push(leave(key)),
            (false, false) => {}
        }
        if let Some(edge) = last_inside.filter(|k| k != key && !inside(self, k)) {
            changes.push(leave(&edge));
        }
        if let Some(next) = first_outside.filter(|k| k != key && inside(self, k)) {
            changes.push(self.change(&next, ChangeType::Enter));
        }
        changes
    }

    /// The key at a position of the order (a window of `usize::MAX` has no edge).
    fn key_at(&self, at: Option<usize>) -> Option<String> {
        let at = at.filter(|&at| at < usize::MAX - 1)?;
        self.rows.keys().nth(at).map(|(_, key)| key.clone())
    }

    /// Whether a row is among the first `limit`: at or before the window's last row (an
    /// O(limit) walk, independent of how many rows match).
    fn in_window(&self, place: &Place, limit: usize) -> bool {
        if limit == usize::MAX {
            return true;
        }
        match limit.checked_sub(1).and_then(|at| self.rows.keys().nth(at)) {
            Some(last) => place <= last,
            None => limit > 0,
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
                match direction {
                    SortDirection::Asc => Cell::Asc(SortValue(v)),
                    SortDirection::Desc => Cell::Desc(Reverse(SortValue(v))),
                }
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
            for (key, state) in writes {
                let key = format!("k{key}");
                let value = state.map(|(score, mine)| doc(score, if mine { "a" } else { "b" }));
                for change in view.apply(&key, value.as_ref(), None) {
                    match change.change {
                        ChangeType::Enter => {
                            proptest::prop_assert!(replica.insert(change.key, change.value).is_none());
                        }
                        ChangeType::Update => {
                            proptest::prop_assert!(replica.insert(change.key, change.value).is_some());
                        }
                        ChangeType::Leave => {
                            proptest::prop_assert!(replica.remove(&change.key).is_some());
                        }
                    }
                }
                let window: BTreeMap<String, Value> = view.window().into_iter().collect();
                proptest::prop_assert_eq!(&replica, &window);
            }
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
