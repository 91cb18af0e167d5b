//! Live aggregations of a query's matching rows (PROTOCOL.md §5.1, §5.3): `count`, `sum`,
//! `min`, `max` and `avg`, per `groupBy` group, kept up to date as rows enter, change and
//! leave, without rescanning.
//!
//! A group's row has the group key as its key and, as its value, a map of `__key` (the group
//! key), `__count`, one `__<func>_<field>` per requested aggregation, and each `groupBy`
//! column's value. `sum` stays an integer while every input is one; `avg` is a float; `min`
//! and `max` order numbers by value and strings in UTF-16 order, and remember every value
//! (a multiset), so a deleted minimum gives way to the next. Only numbers count towards
//! `sum` and `avg`; a field that is missing or not a number is skipped. Float sums are kept
//! incrementally, so after many changes they may differ from a fresh sum in the last bits;
//! integer sums are exact.

use std::collections::{BTreeMap, HashMap};

use crate::js::hash_value_string;
use crate::live_query::Change;
use crate::protocol::enums::{AggFunc, ChangeType};
use crate::protocol::query::Query;
use crate::value::{Value, ValueMap};

/// The key of the single group when a query aggregates without `groupBy`.
pub const ALL: &str = "__all";

/// Aggregates over groups.
#[derive(Debug, Clone, Default)]
pub struct Aggregates {
    group_by: Vec<String>,
    /// `(func, field)`; `count` is always kept, as `__count`.
    measures: Vec<(AggFunc, String)>,
    groups: HashMap<String, Group>,
}

#[derive(Debug, Clone, Default)]
struct Group {
    columns: Vec<(String, Value)>,
    count: u64,
    /// Per measure (same order as `Aggregates::measures`).
    stats: Vec<Stat>,
}

#[derive(Debug, Clone, Default)]
struct Stat {
    numbers: u64,
    int_sum: i128,
    float_sum: f64,
    /// Non-integer numbers among the inputs: `sum` is an integer while there are none.
    floats: u64,
    /// Values by order, with their multiplicity (for `min`/`max`).
    values: BTreeMap<Ordered, u64>,
}

/// A value in aggregation order.
#[derive(Debug, Clone)]
struct Ordered(Value);

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (&self.0, &other.0) {
            (Value::Str(a), Value::Str(b)) => crate::js::cmp_utf16(a, b),
            (a, b) => a.canonical_cmp(b),
        }
    }
}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Ordered {}

impl Aggregates {
    /// `None` when the query neither groups nor aggregates.
    pub fn new(query: &Query) -> Option<Self> {
        if query.group_by.is_none() && query.aggregations.is_none() {
            return None;
        }
        let measures = query
            .aggregations
            .iter()
            .flatten()
            .filter(|a| a.func != AggFunc::Count)
            .filter_map(|a| Some((a.func, a.field.as_deref()?.to_owned())))
            .collect();
        Some(Self {
            group_by: query.group_by.clone().unwrap_or_default(),
            measures,
            groups: HashMap::new(),
        })
    }

    /// Moves a row's contribution from `old` to `new` (either may be `None`: the row did not
    /// or no longer matches) and returns the changed group rows: `ENTER` for a new group,
    /// `UPDATE`, or `LEAVE` for a group left empty.
    pub fn apply(&mut self, old: Option<&Value>, new: Option<&Value>) -> Vec<Change> {
        let mut touched: Vec<(String, bool)> = Vec::new();
        if let Some(old) = old {
            let key = self.group_key(old);
            if let Some(group) = self.groups.get_mut(&key) {
                group.add(&self.measures, old, false);
                touched.push((key, false));
            }
        }
        if let Some(new) = new {
            let key = self.group_key(new);
            let is_new = !self.groups.contains_key(&key);
            let columns = self.columns(new);
            let measures = &self.measures;
            let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
                columns,
                count: 0,
                stats: vec![Stat::default(); measures.len()],
            });
            group.add(measures, new, true);
            touched.retain(|(k, _)| *k != key);
            touched.push((key, is_new));
        }
        touched
            .into_iter()
            .map(|(key, is_new)| self.change(&key, is_new))
            .collect()
    }

    /// Every group's row, by group key.
    pub fn rows(&self) -> Vec<(String, Value)> {
        let mut rows: Vec<_> = self
            .groups
            .iter()
            .map(|(key, group)| (key.clone(), group.row(key, &self.measures)))
            .collect();
        rows.sort_by(|a, b| crate::js::cmp_utf16(&a.0, &b.0));
        rows
    }

    fn change(&mut self, key: &str, is_new: bool) -> Change {
        let empty = self.groups.get(key).is_none_or(|g| g.count == 0);
        if empty {
            self.groups.remove(key);
            return Change {
                key: key.to_owned(),
                change: ChangeType::Leave,
                value: Value::Nil,
            };
        }
        let row = self.groups[key].row(key, &self.measures);
        Change {
            key: key.to_owned(),
            change: if is_new {
                ChangeType::Enter
            } else {
                ChangeType::Update
            },
            value: row,
        }
    }

    /// The group key: the `groupBy` columns' values as JavaScript's `String` renders them,
    /// joined by `|`; [`ALL`] without `groupBy`.
    fn group_key(&self, value: &Value) -> String {
        if self.group_by.is_empty() {
            return ALL.to_owned();
        }
        self.group_by
            .iter()
            .map(|field| hash_value_string(column(value, field)))
            .collect::<Vec<_>>()
            .join("|")
    }

    fn columns(&self, value: &Value) -> Vec<(String, Value)> {
        self.group_by
            .iter()
            .map(|field| (field.clone(), column(value, field).clone()))
            .collect()
    }
}

fn column<'a>(value: &'a Value, field: &str) -> &'a Value {
    value
        .get(field)
        .or_else(|| value.get_path(field))
        .unwrap_or(&Value::Nil)
}

impl Group {
    /// Adds (`plus`) or removes a row's contribution.
    fn add(&mut self, measures: &[(AggFunc, String)], value: &Value, plus: bool) {
        if plus {
            self.count += 1;
        } else {
            self.count = self.count.saturating_sub(1);
        }
        for ((_, field), stat) in measures.iter().zip(&mut self.stats) {
            let v = column(value, field);
            if !v.is_nil() {
                stat.add(v, plus);
            }
        }
    }

    fn row(&self, key: &str, measures: &[(AggFunc, String)]) -> Value {
        let mut row = ValueMap::new();
        row.insert("__key", Value::from(key));
        row.insert("__count", Value::from(self.count));
        for ((func, field), stat) in measures.iter().zip(&self.stats) {
            row.insert(format!("__{}_{field}", func.as_str()), stat.result(*func));
        }
        for (field, value) in &self.columns {
            row.insert(field.as_str(), value.clone());
        }
        Value::Map(row)
    }
}

impl Stat {
    fn add(&mut self, value: &Value, plus: bool) {
        let slot = Ordered(value.clone());
        if plus {
            *self.values.entry(slot).or_insert(0) += 1;
        } else if let Some(n) = self.values.get_mut(&slot) {
            *n -= 1;
            if *n == 0 {
                self.values.remove(&slot);
            }
        }
        if !value.is_number() {
            return;
        }
        let sign: i128 = if plus { 1 } else { -1 };
        self.numbers = if plus {
            self.numbers + 1
        } else {
            self.numbers.saturating_sub(1)
        };
        match value {
            Value::Int(i) => self.int_sum += sign * i128::from(*i),
            Value::UInt(u) => self.int_sum += sign * i128::from(*u),
            _ => {}
        }
        let x = value.as_f64().unwrap_or(0.0);
        self.float_sum += if plus { x } else { -x };
        if matches!(value, Value::Float(_)) {
            self.floats = if plus {
                self.floats + 1
            } else {
                self.floats.saturating_sub(1)
            };
        }
    }

    fn result(&self, func: AggFunc) -> Value {
        match func {
            AggFunc::Count => Value::from(self.numbers),
            AggFunc::Sum if self.floats == 0 => {
                i64::try_from(self.int_sum).map_or(Value::Float(self.float_sum), Value::Int)
            }
            AggFunc::Sum => Value::Float(self.float_sum),
            AggFunc::Avg if self.numbers == 0 => Value::Nil,
            #[allow(clippy::cast_precision_loss)]
            AggFunc::Avg => Value::Float(self.float_sum / self.numbers as f64),
            AggFunc::Min => self
                .values
                .keys()
                .next()
                .map_or(Value::Nil, |v| v.0.clone()),
            AggFunc::Max => self
                .values
                .keys()
                .next_back()
                .map_or(Value::Nil, |v| v.0.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::query::Aggregation;

    fn sale(region: &str, price: Value) -> Value {
        Value::Map(
            [("region", Value::from(region)), ("price", price)]
                .into_iter()
                .collect(),
        )
    }

    fn by_region() -> Aggregates {
        let aggregations = [
            AggFunc::Count,
            AggFunc::Sum,
            AggFunc::Min,
            AggFunc::Max,
            AggFunc::Avg,
        ]
        .into_iter()
        .map(|func| Aggregation {
            func,
            field: (func != AggFunc::Count).then(|| "price".into()),
        })
        .collect();
        let query = Query {
            group_by: Some(vec!["region".into()]),
            aggregations: Some(aggregations),
            ..Query::default()
        };
        Aggregates::new(&query).unwrap()
    }

    fn field<'a>(change: &'a Change, name: &str) -> &'a Value {
        change.value.get(name).unwrap_or(&Value::Nil)
    }

    #[test]
    fn groups_enter_update_and_leave_with_their_figures() {
        let mut agg = by_region();
        let a = sale("eu", Value::Int(10));
        let b = sale("eu", Value::Int(4));
        let c = sale("us", Value::Float(2.5));
        let first = agg.apply(None, Some(&a));
        assert_eq!(first[0].change, ChangeType::Enter);
        assert_eq!(first[0].key, "eu");
        let second = agg.apply(None, Some(&b));
        assert_eq!(second[0].change, ChangeType::Update);
        assert_eq!(field(&second[0], "__count"), &Value::Int(2));
        assert_eq!(
            field(&second[0], "__sum_price"),
            &Value::Int(14),
            "integers stay integers"
        );
        assert_eq!(field(&second[0], "__min_price"), &Value::Int(4));
        assert_eq!(field(&second[0], "__max_price"), &Value::Int(10));
        assert_eq!(field(&second[0], "__avg_price"), &Value::Float(7.0));
        assert_eq!(field(&second[0], "region"), &Value::from("eu"));
        assert_eq!(field(&second[0], "__key"), &Value::from("eu"));
        agg.apply(None, Some(&c));
        // The minimum leaves: the next one takes its place.
        let changed = agg.apply(Some(&b), None);
        assert_eq!(field(&changed[0], "__min_price"), &Value::Int(10));
        // A row moving between groups updates both.
        let moved = agg.apply(Some(&a), Some(&sale("us", Value::Int(1))));
        let kinds: Vec<_> = moved.iter().map(|c| (c.key.as_str(), c.change)).collect();
        assert_eq!(
            kinds,
            [("eu", ChangeType::Leave), ("us", ChangeType::Update)]
        );
        assert_eq!(
            field(&moved[1], "__sum_price"),
            &Value::Float(3.5),
            "a float makes a float sum"
        );
        // Once the float is gone, the sum is an integer again.
        let without_float = agg.apply(Some(&c), None);
        assert_eq!(field(&without_float[0], "__sum_price"), &Value::Int(1));
        let rows = agg.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "us");
        assert_eq!(rows[0].1.get("__count"), Some(&Value::Int(1)));
    }

    proptest::proptest! {
        /// Kept up to date row by row, the groups equal those computed from scratch.
        #[test]
        fn incremental_equals_recomputed(
            ops in proptest::collection::vec(
                (0u8..6, proptest::option::of((0u8..3, -5i64..5, proptest::bool::ANY))),
                1..50,
            ),
        ) {
            let mut agg = by_region();
            let mut rows: BTreeMap<u8, Value> = BTreeMap::new();
            for (key, state) in ops {
                let new = state.map(|(region, price, float)| {
                    #[allow(clippy::cast_precision_loss)]
                    let price = if float { Value::Float(price as f64 + 0.5) } else { Value::Int(price) };
                    sale(["eu", "us", "asia"][usize::from(region)], price)
                });
                let old = match &new {
                    Some(v) => rows.insert(key, v.clone()),
                    None => rows.remove(&key),
                };
                agg.apply(old.as_ref(), new.as_ref());
                let mut fresh = by_region();
                for value in rows.values() {
                    fresh.apply(None, Some(value));
                }
                proptest::prop_assert_eq!(agg.rows(), fresh.rows());
            }
        }
    }

    #[test]
    fn without_group_by_one_group_counts_everything() {
        let query = Query {
            aggregations: Some(vec![Aggregation {
                func: AggFunc::Count,
                field: None,
            }]),
            ..Query::default()
        };
        let mut agg = Aggregates::new(&query).unwrap();
        agg.apply(None, Some(&sale("eu", Value::Int(1))));
        let changes = agg.apply(None, Some(&sale("us", Value::Nil)));
        assert_eq!(changes[0].key, ALL);
        assert_eq!(field(&changes[0], "__count"), &Value::Int(2));
        assert!(Aggregates::new(&Query::default()).is_none());
    }
}
