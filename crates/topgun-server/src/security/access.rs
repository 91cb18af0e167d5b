//! Access checks as the server runs them: the policies in force (replaced whole on reload)
//! and each connection's current subject, with a small decision cache.
//!
//! Every place that serves a connection or delivers to it — the data plane, shards
//! publishing events, topics, counters, the journal, live queries — asks the connection's
//! [`ConnAccess`] at that moment. So a re-`AUTH` with other roles, or a policy reload, takes
//! effect at once, on existing subscriptions too: the next event is checked against the
//! new subject and policies.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use topgun_core::protocol::Message;
use topgun_core::protocol::messages::ServerEvent;
use topgun_core::protocol::query::{PredicateNode, Query};
use topgun_core::value::ValueMap;
use topgun_core::{LwwRecord, OrRecord, Value};

use crate::security::admin_policy::{Access, Request, Rules};
use crate::security::policy::{Action, Decision, Fields, PolicySet, Resource, Subject};

/// The rules in force — the config file's role policies, the admin API's policies and the
/// admin subjects — with a version that changes on every change: read together, so a
/// decision is never cached under a version newer than the rules it was made with.
#[derive(Debug, Default)]
pub struct Policies {
    current: RwLock<(u64, Arc<Rules>)>,
    /// Held by an admin API change across its durable write and [`Policies::update`], so
    /// that the order of the rules in force is the order their records were written.
    pub changes: tokio::sync::Mutex<()>,
}

impl Policies {
    /// With the config file's role policies only.
    pub fn new(set: PolicySet) -> Self {
        Self::with_rules(Rules {
            roles: set,
            ..Rules::default()
        })
    }

    pub fn with_rules(rules: Rules) -> Self {
        Self {
            current: RwLock::new((0, Arc::new(rules))),
            changes: tokio::sync::Mutex::default(),
        }
    }

    pub fn get(&self) -> Arc<Rules> {
        self.versioned().1
    }

    /// The rules and their version, as one consistent pair.
    fn versioned(&self) -> (u64, Arc<Rules>) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (current.0, Arc::clone(&current.1))
    }

    /// Puts `set` in force as the role policies (a `SIGHUP` reload), for every request and
    /// delivery from now on; the admin API's policies stay.
    pub fn replace(&self, set: PolicySet) {
        self.update(|rules| rules.roles = set);
    }

    /// Changes the rules in force (the admin API's policies, say), as one step.
    pub fn update(&self, change: impl FnOnce(&mut Rules)) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let mut rules = Rules::clone(&current.1);
        change(&mut rules);
        *current = (current.0 + 1, Arc::new(rules));
    }
}

/// Decisions cached per connection; beyond this many the cache starts over.
const CACHE_MAX: usize = 1024;

type Key = (Resource, String, bool);

/// One connection's subject and its cached decisions.
#[derive(Debug)]
pub struct ConnAccess {
    policies: Arc<Policies>,
    /// `None` until authenticated (and after a logout): nothing is allowed. Held inline
    /// (not behind another `Arc`): it is read under the lock, and cloned only for callers
    /// that keep it.
    subject: RwLock<Option<Subject>>,
    /// Bumped when the subject changes.
    generation: AtomicU64,
    /// Allocated on the first decision under policies (an idle connection, or any connection
    /// of a server without policies, never needs one).
    cache: Mutex<Option<Box<Cache>>>,
}

#[derive(Debug, Default)]
struct Cache {
    /// (policies version, subject generation) the entries were decided under.
    under: (u64, u64),
    decisions: HashMap<Key, Decision>,
}

impl ConnAccess {
    pub fn new(policies: Arc<Policies>) -> Self {
        Self {
            policies,
            subject: RwLock::default(),
            generation: AtomicU64::new(0),
            cache: Mutex::default(),
        }
    }

    /// An anonymous subject with everything allowed, for tests and tools without policies.
    pub fn open() -> Self {
        let access = Self::new(Arc::new(Policies::default()));
        access.set_subject(Some(Subject::default()));
        access
    }

    /// A copy of the current subject (for a caller that keeps it).
    pub fn subject(&self) -> Option<Subject> {
        self.subject
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The authenticated user's id, if any.
    pub fn user_id(&self) -> Option<String> {
        self.subject
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|s| s.user_id.clone())
    }

    /// Whether the current subject is the given one (`None`: not authenticated).
    pub fn subject_is(&self, wanted: Option<(Option<&str>, &[String])>) -> bool {
        let current = self.subject.read().unwrap_or_else(PoisonError::into_inner);
        match (current.as_ref(), wanted) {
            (Some(s), Some((user, roles))) => s.user_id.as_deref() == user && s.roles == roles,
            (None, None) => true,
            _ => false,
        }
    }

    /// Records who the connection is now: `Some` after an `AUTH` (or from the start, with
    /// authentication off), `None` after a logout.
    pub fn set_subject(&self, subject: Option<Subject>) {
        let mut current = self.subject.write().unwrap_or_else(PoisonError::into_inner);
        if *current != subject {
            *current = subject;
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// May this connection do `action` on the resource named `name`, now?
    pub fn decide(&self, resource: Resource, name: &str, action: Action) -> Decision {
        let subject = self.subject.read().unwrap_or_else(PoisonError::into_inner);
        let Some(subject) = subject.as_ref() else {
            return Decision::Deny;
        };
        let (version, rules) = self.policies.versioned();
        if rules.is_open() {
            return Decision::Allow(None);
        }
        // The subject's generation cannot move while its read lock is held.
        let under = (version, self.generation.load(Ordering::SeqCst));
        let key = (resource, name.to_owned(), action == Action::Write);
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(cache) = cache.as_ref()
                && cache.under == under
                && let Some(decision) = cache.decisions.get(&key)
            {
                return decision.clone();
            }
        }
        // Without a record (`data` nil) a decision depends on the subject and the rules only,
        // so it may be cached under both.
        let access = match action {
            Action::Read => Access::Read,
            Action::Write => Access::Write,
        };
        let request = Request {
            resource,
            name,
            access,
            data: None,
        };
        let decision = rules.decide(subject, request);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let cache = cache.get_or_insert_with(Box::default);
        if cache.under != under || cache.decisions.len() >= CACHE_MAX {
            cache.decisions.clear();
            cache.under = under;
        }
        cache.decisions.insert(key, decision.clone());
        decision
    }
}

impl ConnAccess {
    /// May this connection write (or, with `remove`, remove) the record `data` under the
    /// map `map`, now? Admin policies may test the record (`data.*`), so with any in force
    /// the decision is made afresh; without, it is the cached decision for the map.
    pub fn decide_write(&self, map: &str, remove: bool, data: Option<&Value>) -> Decision {
        let rules = self.policies.get();
        if rules.admin.iter().next().is_none() {
            return self.decide(Resource::Map, map, Action::Write);
        }
        let subject = self.subject.read().unwrap_or_else(PoisonError::into_inner);
        let Some(subject) = subject.as_ref() else {
            return Decision::Deny;
        };
        let request = Request {
            resource: Resource::Map,
            name: map,
            access: if remove {
                Access::Remove
            } else {
                Access::Write
            },
            data: if remove { None } else { data },
        };
        rules.decide(subject, request)
    }
}

/// What a reader limited to `fields` sees of a value: a map keeps only those top-level
/// fields; any other value (which has no fields) is seen as an empty map. `nil` (a
/// tombstone) stays `nil`, so deletions still reach the reader.
pub fn project(value: &Value, fields: &Fields) -> Value {
    match value {
        Value::Nil => Value::Nil,
        Value::Map(map) => Value::Map(ValueMap::from_entries(
            map.iter()
                .filter(|(k, _)| fields.contains(*k))
                .map(|(k, v)| (k.into(), v.clone()))
                .collect(),
        )),
        _ => Value::Map(ValueMap::new()),
    }
}

/// The top-level fields a query looks at (filters, sort, grouping, aggregations). A reader
/// limited to some fields is refused a query on others, to say so plainly; the query task
/// also evaluates its queries on the limited values only, so nothing hidden (a top-level
/// field whose name contains a dot included) can steer a result.
pub fn fields_used(query: &Query) -> BTreeSet<String> {
    fn top(path: &str) -> String {
        path.split('.').next().unwrap_or(path).to_owned()
    }
    fn walk(node: &PredicateNode, out: &mut BTreeSet<String>) {
        if let Some(attribute) = &node.attribute {
            out.insert(top(attribute));
        }
        if let Some(path) = node
            .value_ref
            .as_deref()
            .and_then(|r| r.strip_prefix("data."))
        {
            out.insert(top(path));
        }
        for child in node.children.iter().flatten() {
            walk(child, out);
        }
    }
    let mut out = BTreeSet::new();
    out.extend(query.where_.iter().flat_map(|w| w.keys().map(top)));
    if let Some(predicate) = &query.predicate {
        walk(predicate, &mut out);
    }
    out.extend(
        query
            .sort
            .iter()
            .flat_map(|s| s.0.iter().map(|f| top(&f.field))),
    );
    out.extend(query.group_by.iter().flatten().map(|g| top(g)));
    out.extend(
        query
            .aggregations
            .iter()
            .flatten()
            .filter_map(|a| a.field.as_deref().map(top)),
    );
    out
}

/// Limits every record value in a map-data reply or event to `fields` (see [`project`]).
/// Merkle hashes do not cover values, so a projected leaf still hashes as the full one and
/// roots keep matching.
pub fn project_message(msg: &mut Message, fields: &Fields) {
    let lww = |r: &mut LwwRecord| r.value = project(&r.value, fields);
    let or = |r: &mut OrRecord| r.value = project(&r.value, fields);
    match msg {
        Message::SyncRespLeaf(leaf) => leaf.records.iter_mut().for_each(|r| lww(&mut r.record)),
        Message::OrMapSyncRespLeaf(leaf) => leaf
            .entries
            .iter_mut()
            .for_each(|e| e.records.iter_mut().for_each(or)),
        Message::OrMapDiffResponse(diff) => diff
            .entries
            .iter_mut()
            .for_each(|e| e.records.iter_mut().for_each(or)),
        Message::ServerEvent(event) => project_event(event, fields),
        Message::ServerBatchEvent(batch) => batch
            .events
            .iter_mut()
            .for_each(|e| project_event(e, fields)),
        Message::JournalEvent(event) => {
            for value in [&mut event.value, &mut event.previous_value]
                .into_iter()
                .flatten()
            {
                *value = project(value, fields);
            }
        }
        _ => {}
    }
}

fn project_event(event: &mut ServerEvent, fields: &Fields) {
    if let Some(r) = &mut event.record {
        r.value = project(&r.value, fields);
    }
    if let Some(r) = &mut event.or_record {
        r.value = project(&r.value, fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::policy::PolicySpec;

    fn policies(role: &str, map: &str, fields: Option<Vec<String>>) -> PolicySet {
        PolicySet::compile(&[PolicySpec {
            role: Some(role.into()),
            map_name_pattern: Some(map.into()),
            actions: Some(vec!["READ".into()]),
            allowed_fields: fields,
            ..PolicySpec::default()
        }])
        .unwrap()
    }

    #[test]
    fn cached_decisions_keep_resources_and_actions_apart() {
        let access = ConnAccess::new(Arc::new(Policies::new(policies("user", "m*", None))));
        access.set_subject(Some(Subject {
            user_id: Some("u".into()),
            roles: vec!["user".into()],
        }));
        // Twice each: the second answer comes from the cache.
        for _ in 0..2 {
            assert!(access.decide(Resource::Map, "m", Action::Read).allowed());
            assert_eq!(
                access.decide(Resource::Map, "m", Action::Write),
                Decision::Deny
            );
            assert_eq!(
                access.decide(Resource::Topic, "m", Action::Read),
                Decision::Deny
            );
        }
        // Past the cache's bound it starts over and still answers the same.
        for i in 0..=CACHE_MAX {
            assert!(
                access
                    .decide(Resource::Map, &format!("m{i}"), Action::Read)
                    .allowed()
            );
        }
        assert_eq!(
            access.decide(Resource::Map, "m", Action::Write),
            Decision::Deny
        );
    }

    #[test]
    fn decisions_follow_the_subject_and_the_policies_in_force() {
        let shared = Arc::new(Policies::new(policies("user", "m", None)));
        let access = ConnAccess::new(Arc::clone(&shared));
        assert_eq!(
            access.decide(Resource::Map, "m", Action::Read),
            Decision::Deny
        );
        access.set_subject(Some(Subject {
            user_id: Some("u".into()),
            roles: vec!["user".into()],
        }));
        assert!(access.decide(Resource::Map, "m", Action::Read).allowed());
        shared.replace(policies("other", "m", None));
        assert_eq!(
            access.decide(Resource::Map, "m", Action::Read),
            Decision::Deny,
            "a reload takes effect at once"
        );
        shared.replace(PolicySet::default());
        assert!(access.decide(Resource::Lock, "l", Action::Write).allowed());
        access.set_subject(None);
        assert_eq!(
            access.decide(Resource::Lock, "l", Action::Write),
            Decision::Deny,
            "logged out: nothing, even without policies"
        );
    }

    #[test]
    fn projection_keeps_allowed_fields_and_tombstones() {
        let fields: Fields = Arc::new(["a".to_owned()].into_iter().collect());
        let value = Value::Map(ValueMap::from_entries(vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::Int(2)),
        ]));
        let seen = project(&value, &fields);
        assert_eq!(seen.get("a"), Some(&Value::Int(1)));
        assert_eq!(seen.get("b"), None);
        assert_eq!(project(&Value::Nil, &fields), Value::Nil);
        assert_eq!(
            project(&Value::Int(3), &fields),
            Value::Map(ValueMap::new())
        );
    }
}
