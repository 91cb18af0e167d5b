//! The index catalog (COMPAT §3.5): which attributes of which maps an operator asked to
//! index, and how. It records intent: every map is searchable and queryable without it, and
//! no result ever depends on it.
//!
//! Stored as records of the reserved map `__topgun_indexes`, one per `(map, attribute)`
//! (`{mapName, attribute, indexType}`), through the ordinary write path — the log,
//! checkpoints, recovery and backups — like the admin policies; memory only with `null`. In
//! a cluster they live in the control log instead ([`crate::http::admin::catalogs`]).
//!
//! Invariants: the in-memory catalog holds exactly the definitions whose record was durable
//! when their change was answered (changes are serialised, the record written first); a
//! `(map, attribute)` pair has at most one definition.

use std::collections::BTreeMap;
use std::sync::Mutex;

use topgun_core::Value;

use crate::storage::store::{StoredEntry, latest_lww};

pub const INDEXES_MAP: &str = "__topgun_indexes";

/// The most definitions the catalog holds: each costs a stored record and a line of every
/// listing.
pub const INDEXES_MAX: usize = 1024;

/// The longest map name or attribute accepted, in bytes.
pub const NAME_BYTES_MAX: usize = 256;

/// How an attribute is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// Equality lookups.
    Hash,
    /// Ranges and sorting.
    Navigable,
    /// A separately scored text field.
    Inverted,
}

impl IndexKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Navigable => "navigable",
            Self::Inverted => "inverted",
        }
    }

    /// The kind of this name; `vector` is not one (vector indexes have their own routes).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "hash" => Self::Hash,
            "navigable" => Self::Navigable,
            "inverted" => Self::Inverted,
            _ => return None,
        })
    }
}

/// One definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    pub map: String,
    pub attribute: String,
    pub kind: IndexKind,
}

/// The definitions in force. std `Mutex`: never held across an `.await`; changes are
/// serialised by the caller's `changes` lock, which is.
#[derive(Debug, Default)]
pub struct IndexCatalog {
    defs: Mutex<BTreeMap<(String, String), IndexKind>>,
    /// Held across a change's durable write, so that two requests for the same pair cannot
    /// both find it free and both answer 201.
    pub changes: tokio::sync::Mutex<()>,
}

impl IndexCatalog {
    fn defs(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), IndexKind>> {
        // A panic while holding it cannot leave the map half-changed: every change is one
        // insert or remove.
        self.defs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn restore(defs: impl IntoIterator<Item = IndexDef>) -> Self {
        let catalog = Self::default();
        {
            let mut map = catalog.defs();
            for def in defs {
                map.insert((def.map, def.attribute), def.kind);
            }
        }
        catalog
    }

    pub fn get(&self, map: &str, attribute: &str) -> Option<IndexKind> {
        self.defs()
            .get(&(map.to_owned(), attribute.to_owned()))
            .copied()
    }

    /// Every definition, by map then attribute.
    pub fn list(&self) -> Vec<IndexDef> {
        self.defs()
            .iter()
            .map(|((map, attribute), kind)| IndexDef {
                map: map.clone(),
                attribute: attribute.clone(),
                kind: *kind,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.defs().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts a definition in force (its record already durable).
    pub fn insert(&self, def: IndexDef) {
        let mut defs = self.defs();
        defs.insert((def.map, def.attribute), def.kind);
        debug_assert!(defs.len() <= INDEXES_MAX, "the catalog outgrew its bound");
    }

    pub fn remove(&self, map: &str, attribute: &str) {
        self.defs().remove(&(map.to_owned(), attribute.to_owned()));
    }

    /// Puts exactly `defs` in force, as one step (a cluster's applied catalog).
    pub fn replace(&self, defs: impl IntoIterator<Item = IndexDef>) {
        let defs = defs
            .into_iter()
            .map(|def| ((def.map, def.attribute), def.kind));
        *self.defs() = defs.collect();
    }
}

/// The record key of a pair: the map name's length first, so that no two pairs share a key
/// whatever characters their names hold.
pub fn record_key(map: &str, attribute: &str) -> String {
    format!("{}:{map}/{attribute}", map.len())
}

/// The `(map, attribute)` of a record key ([`record_key`]'s inverse).
pub fn parse_key(key: &str) -> Option<(&str, &str)> {
    let (len, rest) = key.split_once(':')?;
    let len: usize = len.parse().ok()?;
    let map = rest.get(..len)?;
    let attribute = rest.get(len..)?.strip_prefix('/')?;
    Some((map, attribute))
}

/// A definition's stored value.
pub fn to_value(def: &IndexDef) -> Value {
    Value::Map(
        [
            ("mapName", Value::Str(def.map.as_str().into())),
            ("attribute", Value::Str(def.attribute.as_str().into())),
            ("indexType", Value::Str(def.kind.name().into())),
        ]
        .into_iter()
        .collect(),
    )
}

/// A stored definition back, or `None` for a record this server could not have written.
pub fn from_value(key: &str, value: &Value) -> Option<IndexDef> {
    let text = |name| match value.get(name) {
        Some(Value::Str(s)) => Some(s.as_str().to_owned()),
        _ => None,
    };
    let def = IndexDef {
        map: text("mapName")?,
        attribute: text("attribute")?,
        kind: IndexKind::parse(&text("indexType")?)?,
    };
    (record_key(&def.map, &def.attribute) == key).then_some(def)
}

/// The catalog among what storage loaded (live records of `__topgun_indexes`).
pub fn recover(entries: &[StoredEntry]) -> IndexCatalog {
    let mut defs = Vec::new();
    for (key, record) in latest_lww(entries, INDEXES_MAP) {
        if record.is_tombstone() {
            continue;
        }
        if let Some(def) = from_value(key, &record.value) {
            defs.push(def);
        } else {
            tracing::warn!(index = %key, "ignoring a malformed stored index");
        }
    }
    IndexCatalog::restore(defs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(map: &str, attribute: &str, kind: IndexKind) -> IndexDef {
        IndexDef {
            map: map.into(),
            attribute: attribute.into(),
            kind,
        }
    }

    #[test]
    fn a_definition_survives_its_stored_form_and_keys_never_collide() {
        let d = def("a/b", "c", IndexKind::Navigable);
        let key = record_key(&d.map, &d.attribute);
        assert_eq!(from_value(&key, &to_value(&d)), Some(d));
        assert_ne!(record_key("a/b", "c"), record_key("a", "b/c"));
        assert_eq!(parse_key(&record_key("a/b", "c")), Some(("a/b", "c")));
        assert_eq!(parse_key(&record_key("a", "b/c")), Some(("a", "b/c")));
        assert_eq!(parse_key(&record_key("é", "x:y")), Some(("é", "x:y")));
        for bad in ["", "x", "3:ab/c", "9:a/b", "1:ab", "1:é/x"] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
        assert_eq!(
            from_value("other", &to_value(&def("m", "x", IndexKind::Hash))),
            None
        );
        assert_eq!(from_value("k", &Value::from("not an index")), None);
    }

    #[test]
    fn recovery_keeps_the_latest_record_of_each_key_in_any_order() {
        use topgun_core::{LwwRecord, NodeId, Timestamp};
        let at = |millis| Timestamp::new(millis, 0, NodeId::new("n").unwrap());
        let d = def("todos", "title", IndexKind::Hash);
        let entry = |record| StoredEntry {
            map: INDEXES_MAP.into(),
            key: record_key(&d.map, &d.attribute),
            value: crate::storage::store::StoredValue::Lww(record),
        };
        let put = entry(LwwRecord::new(to_value(&d), at(1), None));
        let removed = entry(LwwRecord::tombstone(at(2)));
        for loaded in [
            vec![put.clone(), removed.clone()],
            vec![removed.clone(), put.clone()],
        ] {
            assert!(recover(&loaded).is_empty());
        }
        assert_eq!(recover(&[put]).list(), vec![d]);
    }

    #[test]
    fn kinds_parse_by_name_and_vector_is_not_one() {
        for kind in [IndexKind::Hash, IndexKind::Navigable, IndexKind::Inverted] {
            assert_eq!(IndexKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(IndexKind::parse("vector"), None);
        assert_eq!(IndexKind::parse("HASH"), None);
    }

    #[test]
    fn the_catalog_lists_by_map_then_attribute() {
        let catalog = IndexCatalog::restore([
            def("todos", "title", IndexKind::Inverted),
            def("notes", "at", IndexKind::Navigable),
        ]);
        catalog.insert(def("notes", "a", IndexKind::Hash));
        let names: Vec<_> = catalog
            .list()
            .into_iter()
            .map(|d| (d.map, d.attribute))
            .collect();
        assert_eq!(
            names,
            [("notes", "a"), ("notes", "at"), ("todos", "title")]
                .map(|(m, a)| (m.to_owned(), a.to_owned()))
        );
        catalog.remove("notes", "a");
        assert_eq!(catalog.get("notes", "a"), None);
        assert_eq!(catalog.get("notes", "at"), Some(IndexKind::Navigable));
    }
}
