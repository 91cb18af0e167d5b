//! A live query's view, shared by every subscription that asks the same, and how a record's
//! change steps it.

use topgun_core::LwwRecord;
use topgun_core::aggregate::Aggregates;
use topgun_core::live_query::{Change, View};
use topgun_core::protocol::query::Query;
use topgun_core::value::Value;

use crate::connection::ConnId;
use crate::security::policy::{Fields, Subject};

/// What makes two subscriptions share one view: the same map and query (and projection),
/// admitted under the same field limit, and — when the predicate reads `auth.*` — for the
/// same identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ViewKey {
    pub(super) map: String,
    pub(super) query: Vec<u8>,
    pub(super) fields: Option<Vec<String>>,
    pub(super) allowed: Option<Fields>,
    pub(super) subject: Option<(Option<String>, Vec<String>)>,
}

/// A live query's rows (or groups), kept once for every subscription that asks the same.
/// 500 subscribers of `QUERY_SUB {}` on one map hold one copy of its rows, and a write is
/// evaluated once for all of them.
pub(super) struct SharedView {
    pub(super) key: ViewKey,
    pub(super) map: String,
    /// The field limit its subscriptions were admitted under.
    pub(super) allowed: Option<Fields>,
    /// Who subscribed, and (when its predicate reads `auth.*`) that context:
    /// `{userId, roles}`.
    pub(super) subject: Option<Subject>,
    pub(super) auth: Option<Value>,
    pub(super) view: View,
    /// With `groupBy`/`aggregations`: the groups, fed by the view's matching rows; the
    /// subscribers are told of groups, not rows.
    pub(super) groups: Option<Aggregates>,
    pub(super) cursor_status: topgun_core::protocol::enums::CursorStatus,
    /// `Some` while the snapshot loads: the changes committed meanwhile.
    pub(super) loading: Option<Vec<(ConnId, String, LwwRecord)>>,
    pub(super) overflowed: bool,
    pub(super) subs: Vec<u64>,
}

/// A record's value for a view: `None` for a tombstone or an expired record.
pub(super) fn live_value(record: &LwwRecord) -> Option<&Value> {
    let now = crate::clock::now_ms();
    record.is_visible(now).then_some(&record.value)
}

/// Applies a record's new state to a view: the changes its subscribers are owed (the
/// window's rows, or its groups when it aggregates).
pub(super) fn step(view: &mut SharedView, key: &str, record: &LwwRecord) -> Vec<Change> {
    let auth = view.auth.as_ref();
    let value = readable(view, record);
    let value = value.as_deref();
    match view.groups.as_mut() {
        None => view.view.apply(key, value, auth),
        Some(groups) => {
            let old = view.view.get(key).cloned();
            view.view.apply(key, value, auth);
            groups.apply(old.as_ref(), view.view.get(key))
        }
    }
}

/// A record's live value as the view's subscribers may read it: limited to their fields
/// when they are (so filters, sort and groups only ever see what they may see).
pub(super) fn readable<'a>(
    view: &SharedView,
    record: &'a LwwRecord,
) -> Option<std::borrow::Cow<'a, Value>> {
    let value = live_value(record)?;
    Some(match &view.allowed {
        Some(fields) => std::borrow::Cow::Owned(crate::security::access::project(value, fields)),
        None => std::borrow::Cow::Borrowed(value),
    })
}

/// [`step`] for a snapshot row: nothing is owed yet (the response carries the window).
pub(super) fn load(view: &mut SharedView, key: &str, record: &LwwRecord) {
    let old = view
        .groups
        .as_ref()
        .and_then(|_| view.view.get(key).cloned());
    let value = readable(view, record);
    view.view.load(key, value.as_deref(), view.auth.as_ref());
    if let Some(groups) = view.groups.as_mut() {
        groups.apply(old.as_ref(), view.view.get(key));
    }
}

/// Whether a query's predicate reads the subscriber's identity (`valueRef: "auth.…"`).
pub(crate) fn uses_auth(query: &Query) -> bool {
    fn walk(node: &topgun_core::protocol::query::PredicateNode) -> bool {
        node.value_ref
            .as_deref()
            .is_some_and(|r| r.starts_with("auth."))
            || node.children.iter().flatten().any(walk)
    }
    query.predicate.as_ref().is_some_and(walk)
}

/// What a predicate's `valueRef: "auth.<path>"` reads: `{userId, roles}`.
pub(crate) fn auth_context(subject: &Subject) -> Value {
    let user = subject
        .user_id
        .as_deref()
        .map_or(Value::Nil, |u| Value::Str(u.into()));
    let roles = subject
        .roles
        .iter()
        .map(|r| Value::Str(r.as_str().into()))
        .collect();
    Value::Map(
        [("userId", user), ("roles", Value::Array(roles))]
            .into_iter()
            .collect(),
    )
}
