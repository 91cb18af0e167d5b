//! The admin API's durable catalogs — its policies (`__topgun_policies`) and the index
//! catalog (`__topgun_indexes`) — and where a change to them is made durable.
//!
//! * **A single node** checks each change's condition and bound against what is in force,
//!   writes it as a record of the reserved map through the ordinary write path (the log,
//!   checkpoints, recovery, backups), then puts it in force. Changes are serialised by the
//!   catalog's `changes` lock, which the routes hold across `put`.
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
use crate::security::admin_policy::AdminPolicies;
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
    #[error("the catalog holds the most entries allowed")]
    Full,
    /// The change could not be made durable now (the store, or the control log).
    #[error("{0}")]
    Unavailable(String),
}

/// One change: `value` set under `key` of `map`, or the key removed (`None`), if `expect`
/// holds and a new key leaves the catalog within `max_entries`.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub map: &'static str,
    pub key: String,
    pub value: Option<Value>,
    pub expect: Expect,
    pub max_entries: usize,
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

    /// Cluster mode: changes go through `replicated` from now on, and until the first
    /// applied catalogs are followed no admin policy is in force and the store counts as
    /// configured — every request is denied but to admins. A node's own policies are not the
    /// cluster's: leaving them in force meanwhile could allow what the cluster denies. Set
    /// once; `false` if one was set already.
    pub fn set_replicated(&self, replicated: Arc<dyn Replicated>) -> bool {
        if self.replicated.set(replicated).is_err() {
            return false;
        }
        if !self.policies.get().admin.is_empty() || !self.indexes.is_empty() {
            tracing::warn!(
                "this node's own admin policies and indexes are set aside: in a cluster they \
                 live in the control log"
            );
        }
        self.policies
            .update(|rules| rules.admin = AdminPolicies::restore(Vec::new(), true));
        self.indexes.replace(Vec::new());
        true
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
            max_entries: u32::try_from(change.max_entries).unwrap_or(u32::MAX),
        };
        let applied = replicated.put(put).await?;
        self.follow(&applied);
        Ok(())
    }

    /// A single node: the condition and the bound checked, the record written, then the
    /// change in force. Removing what is not there writes nothing.
    async fn put_local(&self, change: Change) -> Result<(), CatalogError> {
        let present = self.check(&change)?;
        let Change {
            map, key, value, ..
        } = change;
        if value.is_none() && !present {
            return Ok(());
        }
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

    /// Whether `change`'s key is in force; an error when its condition or its bound does
    /// not hold.
    fn check(&self, change: &Change) -> Result<bool, CatalogError> {
        let key = change.key.as_str();
        let (present, len) = match change.map {
            POLICIES_MAP => {
                let admin = self.policies.get();
                let admin = &admin.admin;
                let present = if key == CONFIGURED_KEY {
                    admin.is_configured()
                } else {
                    admin.iter().any(|p| p.id == key)
                };
                // The configured mark is a key of the catalog too.
                (present, admin.len() + usize::from(admin.is_configured()))
            }
            INDEXES_MAP => {
                let pair = index_catalog::parse_key(key);
                let present = pair.is_some_and(|(m, a)| self.indexes.get(m, a).is_some());
                (present, self.indexes.len())
            }
            _ => (false, 0),
        };
        match change.expect {
            Expect::Absent if present => return Err(CatalogError::Exists),
            Expect::Present if !present => return Err(CatalogError::Missing),
            _ => {}
        }
        if change.value.is_some() && !present && len >= change.max_entries {
            return Err(CatalogError::Full);
        }
        Ok(present)
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
        *seen = Some(catalogs.revision());
        // Held while both are replaced, so that two followers cannot interleave them.
        let admin = admin_store::restore(decoded(catalogs, POLICIES_MAP));
        let defs = decoded(catalogs, INDEXES_MAP)
            .filter_map(|(key, value)| index_catalog::from_value(&key, &value));
        let defs: Vec<_> = defs.collect();
        self.policies.update(|rules| rules.admin = admin);
        self.indexes.replace(defs);
    }
}

/// The entries of `catalog`, decoded; one that does not decode reads as nil, which no
/// catalog accepts (an unreadable policy denies everything but to admins: see
/// [`admin_store::restore`]).
fn decoded<'a>(
    catalogs: &'a Catalogs,
    catalog: &'a str,
) -> impl Iterator<Item = (String, Value)> + 'a {
    catalogs.entries(catalog).map(move |(key, bytes)| {
        let value = decode_standalone::<Value>(bytes, &Limits::default()).unwrap_or_else(|e| {
            tracing::error!(%catalog, %key, error = %e, "an undecodable catalog entry");
            Value::Nil
        });
        (key.to_owned(), value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ServerClock;
    use crate::data::shards::{Shards, shard_queue};
    use crate::security::admin_policy::{AdminPolicy, Effect, PolicyAction, Rules};
    use topgun_cluster::{BootstrapMember, ClusterUuid, Command, ControlState, Incarnation};
    use topgun_cluster::{MemberAddrs, MemberName};
    use topgun_core::{Hlc, NodeId};

    fn policy(id: &str) -> AdminPolicy {
        AdminPolicy::new(
            id.into(),
            "docs",
            PolicyAction::All,
            Effect::Allow,
            None,
            None,
        )
        .unwrap()
    }

    /// Catalogs that are never written to here (the shards' queue is never read).
    fn catalogs(admin: AdminPolicies) -> (AdminCatalogs, Arc<Policies>) {
        let policies = Arc::new(Policies::with_rules(Rules {
            admin,
            ..Rules::default()
        }));
        let (queue, _) = shard_queue();
        let clock = ServerClock::new(Hlc::new(NodeId::new("n").unwrap()));
        let internal = InternalWriter::new(Shards::new(vec![queue]), clock);
        let catalogs = AdminCatalogs::new(Arc::clone(&policies), IndexCatalog::default(), internal);
        (catalogs, policies)
    }

    #[derive(Debug)]
    struct NeverAsked;

    impl Replicated for NeverAsked {
        fn put(&self, _: CatalogPut) -> BoxFuture<'static, Result<Catalogs, CatalogError>> {
            unreachable!("the tests follow applied catalogs directly")
        }
    }

    /// A formed control state with `puts` applied: its catalogs.
    fn applied(puts: &[(&str, Vec<u8>)]) -> Catalogs {
        let mut state = ControlState::new();
        let member = BootstrapMember {
            name: MemberName::new("n1").unwrap(),
            incarnation: Incarnation(1),
            addrs: MemberAddrs {
                cluster_addr: "127.0.0.1:1".into(),
                client_url: "ws://127.0.0.1:2".into(),
                http_url: "http://127.0.0.1:2".into(),
            },
        };
        let boot = Command::Bootstrap {
            cluster_uuid: ClusterUuid(1),
            version_base: 1,
            backups: 0,
            members: vec![member],
        };
        state.apply(boot, 1);
        for (key, value) in puts {
            let put = CatalogPut {
                catalog: POLICIES_MAP.into(),
                key: (*key).into(),
                value: Some(value.clone()),
                expect: Expect::Any,
                max_entries: 10,
            };
            state.apply(Command::CatalogPut(put), 2);
        }
        state.cluster().unwrap().catalogs().clone()
    }

    #[test]
    fn a_cluster_member_denies_until_it_follows_the_cluster_s_policies() {
        let (catalogs, policies) = catalogs(AdminPolicies::restore(vec![policy("own")], false));
        assert!(catalogs.set_replicated(Arc::new(NeverAsked)));
        let rules = policies.get();
        assert!(rules.admin.is_empty(), "the node's own policy is set aside");
        assert!(
            rules.admin.is_configured(),
            "so everything is denied but to admins"
        );
        assert!(!rules.is_open());

        let one = encode_standalone(&admin_store::to_value(&policy("p1")));
        catalogs.follow(&applied(&[("p1", one.clone())]));
        assert_eq!(
            policies
                .get()
                .admin
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>(),
            ["p1"]
        );
        // An older revision, seen late, changes nothing.
        catalogs.follow(&applied(&[]));
        assert_eq!(policies.get().admin.len(), 1);
        // An entry this member cannot read denies rather than being skipped.
        let unreadable = applied(&[("p1", one), ("p2", b"\xc1".to_vec())]);
        catalogs.follow(&unreadable);
        let rules = policies.get();
        assert!(rules.admin.is_empty() && rules.admin.is_configured());
    }
}
