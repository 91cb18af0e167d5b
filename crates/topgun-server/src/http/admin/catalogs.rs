//! The admin API's durable catalogs — its policies (`__topgun_policies`) and the index
//! catalog (`__topgun_indexes`) — and where a change to them is made durable.
//!
//! * **A single node** writes each change as a record of the reserved map, through the
//!   ordinary write path (the log, checkpoints, recovery, backups), then puts it in force.
//!   Changes are serialised by the catalog's `changes` lock, under which the routes check
//!   their conditions (an index that exists, a policy that does not).
//! * **A cluster member** proposes each change as a `CatalogPut` to the control log
//!   (CLUSTER.md §3.1): the state machine checks its condition, every member applies it in
//!   log order, and each member puts the applied catalogs in force whenever they change —
//!   so "policies are replicated, every node decides alike" (§8). A route answers once its
//!   change is applied here, so the next request to this member sees it.
//!
//! Values travel as the MsgPack of the same `Value` the reserved map stores, so one decoder
//! serves recovery and the control log alike.
//!
//! Invariant (cluster): the policies and indexes in force are exactly those of the newest
//! applied catalogs this member has seen — never an older revision after a newer one.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use futures_util::future::BoxFuture;
pub use topgun_cluster::Expect;
use topgun_cluster::{CatalogPut, Catalogs};
use topgun_core::Value;
use topgun_core::protocol::{Limits, decode_standalone, encode_standalone};

use crate::coordination::internal::InternalWriter;
use crate::query::index_catalog::{self, INDEXES_MAP, IndexCatalog};
use crate::security::access::Policies;
use crate::security::admin_store::{self, CONFIGURED_KEY, POLICIES_MAP};

/// Why a change was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// It asked for the key to be absent, and it is there.
    #[error("it exists already")]
    Exists,
    /// It asked for the key to be present, and it is not.
    #[error("it does not exist")]
    Missing,
    /// The catalog holds the most entries allowed.
    #[error("{0}")]
    Full(String),
    /// The change could not be made durable now (the store, or the control log).
    #[error("{0}")]
    Unavailable(String),
}

/// One change: `value` set under `key` of `map`, or the key removed (`None`), if `expect`
/// holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub map: &'static str,
    pub key: String,
    pub value: Option<Value>,
    pub expect: Expect,
}

/// A cluster's control log, as the catalogs use it.
pub trait Replicated: Send + Sync + std::fmt::Debug {
    /// Commits `put` and returns the catalogs as applied on this member once it is.
    fn put(&self, put: CatalogPut) -> BoxFuture<'static, Result<Catalogs, CatalogError>>;
}

/// The catalogs in force and where their changes go.
#[derive(Debug)]
pub struct AdminCatalogs {
    policies: Arc<Policies>,
    indexes: IndexCatalog,
    internal: InternalWriter,
    /// Set once, when this node starts as a cluster member.
    replicated: OnceLock<Arc<dyn Replicated>>,
    /// The revision of the applied catalogs in force (cluster); `None` until the first.
    seen: Mutex<Option<u64>>,
}

impl AdminCatalogs {
    pub fn new(policies: Arc<Policies>, indexes: IndexCatalog, internal: InternalWriter) -> Self {
        Self {
            policies,
            indexes,
            internal,
            replicated: OnceLock::new(),
            seen: Mutex::new(None),
        }
    }

    pub fn indexes(&self) -> &IndexCatalog {
        &self.indexes
    }

    /// Cluster mode: changes go through `replicated` from now on. Set once; `false` if one
    /// was set already.
    pub fn set_replicated(&self, replicated: Arc<dyn Replicated>) -> bool {
        self.replicated.set(replicated).is_ok()
    }

    /// Makes `change` durable and puts it in force; see the module's notes for each mode.
    pub async fn put(&self, change: Change) -> Result<(), CatalogError> {
        let Some(replicated) = self.replicated.get() else {
            return self.put_local(change).await;
        };
        let put = CatalogPut {
            catalog: change.map.to_owned(),
            key: change.key,
            value: change.value.as_ref().map(encode_standalone),
            expect: change.expect,
        };
        let applied = replicated.put(put).await?;
        self.follow(&applied);
        Ok(())
    }

    /// A single node: the record first, then the change in force.
    async fn put_local(&self, change: Change) -> Result<(), CatalogError> {
        let Change {
            map, key, value, ..
        } = change;
        let written = match &value {
            Some(value) => {
                let record = self.internal.stamp(value.clone());
                self.internal.put(map, &key, record).await
            }
            None => self.internal.remove(map, &key).await,
        };
        written.map_err(CatalogError::Unavailable)?;
        match map {
            POLICIES_MAP => self.policy_changed(&key, value.as_ref()),
            INDEXES_MAP => self.index_changed(&key, value.as_ref()),
            _ => {}
        }
        Ok(())
    }

    fn policy_changed(&self, key: &str, value: Option<&Value>) {
        if key == CONFIGURED_KEY {
            // A policy's own change already marks the store configured, and the mark is
            // never removed.
            return;
        }
        let policy = value.and_then(|v| admin_store::from_value(key, v));
        self.policies.update(|rules| match policy {
            Some(policy) => rules.admin.put(policy),
            None => {
                rules.admin.remove(key);
            }
        });
    }

    fn index_changed(&self, key: &str, value: Option<&Value>) {
        match value.and_then(|v| index_catalog::from_value(key, v)) {
            Some(def) => self.indexes.insert(def),
            None => {
                if let Some((map, attribute)) = index_catalog::parse_key(key) {
                    self.indexes.remove(map, attribute);
                }
            }
        }
    }

    /// Cluster: puts `catalogs` in force, unless what is in force is as new. Called on every
    /// applied state and by the route that made a change.
    pub fn follow(&self, catalogs: &Catalogs) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.is_some_and(|s| s >= catalogs.revision()) {
            return;
        }
        let first = seen.is_none();
        *seen = Some(catalogs.revision());
        // Held while both are replaced, so that two followers cannot interleave them.
        let admin = admin_store::restore(decoded(catalogs, POLICIES_MAP));
        let defs = decoded(catalogs, INDEXES_MAP)
            .filter_map(|(key, value)| index_catalog::from_value(&key, &value));
        let defs: Vec<_> = defs.collect();
        if first && (!self.policies.get().admin.is_empty() || !self.indexes.is_empty()) {
            tracing::warn!(
                "this member's own admin policies and indexes are replaced by the cluster's: \
                 in a cluster they live in the control log"
            );
        }
        self.policies.update(|rules| rules.admin = admin);
        self.indexes.replace(defs);
    }
}

/// The entries of `catalog`, decoded; one that does not decode is skipped with a warning.
fn decoded<'a>(
    catalogs: &'a Catalogs,
    catalog: &'a str,
) -> impl Iterator<Item = (String, Value)> + 'a {
    catalogs.entries(catalog).filter_map(move |(key, bytes)| {
        match decode_standalone::<Value>(bytes, &Limits::default()) {
            Ok(value) => Some((key.to_owned(), value)),
            Err(e) => {
                tracing::warn!(%catalog, %key, error = %e, "ignoring an undecodable catalog entry");
                None
            }
        }
    })
}
