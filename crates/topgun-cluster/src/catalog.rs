//! The server's replicated catalogs (CLUSTER.md §3.1 "security" and "catalogs"): the admin
//! API's policies and the index catalog, which every member must hold alike — "policies are
//! replicated, every node decides alike" (§8).
//!
//! To the control plane a catalog is a bounded map of keys to opaque values: the server
//! encodes and decodes them, so this crate stays free of its types. A change is one
//! [`CatalogPut`], applied in log order, optionally on a condition (the key absent, or
//! present) that the state machine checks — so two members creating one index at once get
//! one `201` and one `409`, whichever the leader commits first.
//!
//! Invariants:
//! * at most [`CATALOGS_MAX`] catalogs, each of at most [`ENTRIES_MAX`] keys (and of at most
//!   the bound each change names, so that the server's own bounds hold across members),
//!   each key and value within [`KEY_BYTES_MAX`] and [`VALUE_BYTES_MAX`]: the control state
//!   and its snapshots stay bounded;
//! * `revision` rises by one exactly when a catalog changes, so a member that saw revision
//!   r holds every change up to r.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{CommandResult, Refusal};

/// Most catalogs.
pub const CATALOGS_MAX: usize = 4;
/// Most keys in one catalog.
pub const ENTRIES_MAX: usize = 2_048;
/// Longest catalog name or key, in bytes.
pub const KEY_BYTES_MAX: usize = 1_024;
/// Largest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 64 * 1024;

/// When a [`CatalogPut`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// Always: set or remove the key, whatever it holds.
    Any,
    /// Only if the key is absent (a create that must not replace).
    Absent,
    /// Only if the key is present (a removal that must find it).
    Present,
}

/// One change of one catalog key: `value` set, or the key removed when `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogPut {
    pub catalog: String,
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub expect: Expect,
    /// The most keys the catalog may hold after a new one (at most [`ENTRIES_MAX`]).
    pub max_entries: u32,
}

/// Every catalog, by name, and the count of changes applied to them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Catalogs {
    catalogs: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    revision: u64,
}

impl Catalogs {
    /// Rises by one with every change: equal revisions mean equal catalogs.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The entries of `catalog`, by key (none for a catalog never written).
    pub fn entries(&self, catalog: &str) -> impl Iterator<Item = (&str, &[u8])> {
        self.catalogs
            .get(catalog)
            .into_iter()
            .flat_map(|entries| entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    pub fn get(&self, catalog: &str, key: &str) -> Option<&[u8]> {
        self.catalogs.get(catalog)?.get(key).map(Vec::as_slice)
    }

    /// Applies `put`: `Done` when it changed a catalog, `Unchanged` when it set what was
    /// there already (a retried proposal), refused — changing nothing — when its condition
    /// or a bound does not hold.
    pub(crate) fn apply(&mut self, put: CatalogPut) -> CommandResult {
        let CatalogPut {
            catalog,
            key,
            value,
            expect,
            max_entries,
        } = put;
        let max_entries = usize::try_from(max_entries).map_or(ENTRIES_MAX, |m| m.min(ENTRIES_MAX));
        if let Err(refusal) = check_sizes(&catalog, &key, value.as_deref()) {
            return CommandResult::Refused(refusal);
        }
        let present = self.get(&catalog, &key);
        let condition_holds = match expect {
            Expect::Any => true,
            Expect::Absent => present.is_none(),
            Expect::Present => present.is_some(),
        };
        if !condition_holds {
            return CommandResult::Refused(Refusal::CatalogCondition {
                catalog: catalog.into(),
                key: key.into(),
                present: present.is_some(),
            });
        }
        if present == value.as_deref() {
            return CommandResult::Unchanged;
        }
        if let Some(value) = value {
            if let Err(refusal) = self.room_for(&catalog, &key, max_entries) {
                return CommandResult::Refused(refusal);
            }
            self.catalogs.entry(catalog).or_default().insert(key, value);
        } else if let Some(entries) = self.catalogs.get_mut(&catalog) {
            entries.remove(&key);
            if entries.is_empty() {
                self.catalogs.remove(&catalog);
            }
        }
        self.revision += 1;
        CommandResult::Done
    }

    /// Whether a new `key` fits in `catalog`, which may hold `max` keys (an existing key
    /// always does).
    fn room_for(&self, catalog: &str, key: &str, max: usize) -> Result<(), Refusal> {
        let over = match self.catalogs.get(catalog) {
            Some(entries) if entries.contains_key(key) => None,
            Some(entries) => (entries.len() >= max).then_some(max),
            None => (self.catalogs.len() >= CATALOGS_MAX).then_some(CATALOGS_MAX),
        };
        over.map_or(Ok(()), |max| {
            Err(Refusal::CatalogFull {
                catalog: catalog.to_owned().into(),
                max,
            })
        })
    }

    /// Panics when a bound is broken (debug builds and tests, after every command).
    pub(crate) fn check(&self) {
        assert!(self.catalogs.len() <= CATALOGS_MAX, "too many catalogs");
        for (name, entries) in &self.catalogs {
            assert!(!entries.is_empty(), "catalog {name} is kept empty");
            assert!(
                entries.len() <= ENTRIES_MAX,
                "catalog {name} is over its bound"
            );
            for (key, value) in entries {
                assert!(check_sizes(name, key, Some(value)).is_ok(), "{name}/{key}");
            }
        }
    }
}

fn check_sizes(catalog: &str, key: &str, value: Option<&[u8]>) -> Result<(), Refusal> {
    let reason = if catalog.is_empty() || catalog.len() > KEY_BYTES_MAX {
        "the catalog name is empty or too long"
    } else if key.is_empty() || key.len() > KEY_BYTES_MAX {
        "the key is empty or too long"
    } else if value.is_some_and(|v| v.len() > VALUE_BYTES_MAX) {
        "the value is too large"
    } else {
        return Ok(());
    };
    Err(Refusal::BadCatalogPut {
        reason: reason.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: Option<&str>, expect: Expect) -> CatalogPut {
        CatalogPut {
            catalog: "policies".into(),
            key: key.into(),
            value: value.map(|v| v.as_bytes().to_vec()),
            expect,
            max_entries: 10_000,
        }
    }

    #[test]
    fn puts_and_removals_count_one_revision_each_and_repeats_none() {
        let mut c = Catalogs::default();
        assert_eq!(
            c.apply(put("a", Some("1"), Expect::Any)),
            CommandResult::Done
        );
        assert_eq!(c.revision(), 1);
        assert_eq!(
            c.apply(put("a", Some("1"), Expect::Any)),
            CommandResult::Unchanged
        );
        assert_eq!(
            c.apply(put("a", Some("2"), Expect::Any)),
            CommandResult::Done
        );
        assert_eq!(c.get("policies", "a"), Some(&b"2"[..]));
        assert_eq!(c.apply(put("a", None, Expect::Any)), CommandResult::Done);
        assert_eq!(
            c.apply(put("a", None, Expect::Any)),
            CommandResult::Unchanged
        );
        assert_eq!(c.revision(), 3);
        assert_eq!(c.entries("policies").count(), 0);
        assert_eq!(
            c,
            Catalogs {
                revision: 3,
                ..Catalogs::default()
            },
            "no empty catalog kept"
        );
        c.check();
    }

    #[test]
    fn a_condition_that_does_not_hold_refuses_and_changes_nothing() {
        let mut c = Catalogs::default();
        let missing = c.apply(put("a", None, Expect::Present));
        assert!(matches!(
            missing,
            CommandResult::Refused(Refusal::CatalogCondition { present: false, .. })
        ));
        assert_eq!(
            c.apply(put("a", Some("1"), Expect::Absent)),
            CommandResult::Done
        );
        let before = c.clone();
        let exists = c.apply(put("a", Some("2"), Expect::Absent));
        assert!(matches!(
            exists,
            CommandResult::Refused(Refusal::CatalogCondition { present: true, .. })
        ));
        assert_eq!(c, before);
        assert_eq!(
            c.apply(put("a", None, Expect::Present)),
            CommandResult::Done
        );
    }

    #[test]
    fn bounds_refuse_what_would_grow_the_state_past_them() {
        let mut c = Catalogs::default();
        for i in 0..ENTRIES_MAX {
            let key = format!("k{i}");
            assert_eq!(
                c.apply(put(&key, Some("v"), Expect::Any)),
                CommandResult::Done
            );
        }
        let full = c.apply(put("one-more", Some("v"), Expect::Any));
        assert!(matches!(
            full,
            CommandResult::Refused(Refusal::CatalogFull { .. })
        ));
        assert_eq!(
            c.apply(put("k0", Some("w"), Expect::Any)),
            CommandResult::Done,
            "an existing key still changes"
        );
        let big = "x".repeat(VALUE_BYTES_MAX + 1);
        let too_big = c.apply(put("k1", Some(&big), Expect::Any));
        assert!(matches!(
            too_big,
            CommandResult::Refused(Refusal::BadCatalogPut { .. })
        ));
        assert!(matches!(
            c.apply(put("", Some("v"), Expect::Any)),
            CommandResult::Refused(Refusal::BadCatalogPut { .. })
        ));
        let bounded = CatalogPut {
            max_entries: 3,
            ..put("k-new", Some("v"), Expect::Any)
        };
        assert!(
            matches!(
                c.apply(bounded),
                CommandResult::Refused(Refusal::CatalogFull { max: 3, .. })
            ),
            "the change's own bound"
        );
        let mut many = Catalogs::default();
        for i in 0..CATALOGS_MAX {
            let put = CatalogPut {
                catalog: format!("c{i}"),
                ..put("k", Some("v"), Expect::Any)
            };
            assert_eq!(many.apply(put), CommandResult::Done);
        }
        let ninth = CatalogPut {
            catalog: "c-extra".into(),
            ..put("k", Some("v"), Expect::Any)
        };
        assert!(matches!(
            many.apply(ninth),
            CommandResult::Refused(Refusal::CatalogFull { .. })
        ));
        c.check();
        many.check();
    }
}
