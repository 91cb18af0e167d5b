//! The admin API's policies as records of the reserved map `__topgun_policies` (COMPAT §3.3):
//! one record per policy id, and `__configured` once any policy was ever created. They travel
//! the ordinary write path — the log, checkpoints, recovery, backups — like the server's other
//! own state; with `null` storage they live in memory only. In a cluster the same values
//! live in the control log instead ([`crate::http::admin::catalogs`]).

use topgun_core::Value;
use topgun_core::protocol::query::PredicateNode;
use topgun_core::protocol::{Limits, decode_standalone, encode_standalone};

use crate::security::admin_policy::{AdminPolicies, AdminPolicy, Effect, PolicyAction};
use crate::storage::store::{StoredEntry, latest_lww};

pub const POLICIES_MAP: &str = "__topgun_policies";
/// The key recording that the policy store was configured (it never goes back).
pub const CONFIGURED_KEY: &str = "__configured";

pub fn action_name(action: PolicyAction) -> &'static str {
    match action {
        PolicyAction::Read => "read",
        PolicyAction::Write => "write",
        PolicyAction::Remove => "remove",
        PolicyAction::All => "all",
    }
}

pub fn parse_action(name: &str) -> Option<PolicyAction> {
    Some(match name {
        "read" => PolicyAction::Read,
        "write" => PolicyAction::Write,
        "remove" => PolicyAction::Remove,
        "all" => PolicyAction::All,
        _ => return None,
    })
}

pub fn effect_name(effect: Effect) -> &'static str {
    match effect {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
    }
}

pub fn parse_effect(name: &str) -> Option<Effect> {
    Some(match name {
        "allow" => Effect::Allow,
        "deny" => Effect::Deny,
        _ => return None,
    })
}

/// A policy's stored value: `{mapPattern, action, effect, condition?}`, the condition as the
/// MsgPack of its predicate tree.
pub fn to_value(policy: &AdminPolicy) -> Value {
    let mut fields = vec![
        ("mapPattern", Value::Str(policy.pattern.as_str().into())),
        ("action", Value::Str(action_name(policy.action).into())),
        ("effect", Value::Str(effect_name(policy.effect).into())),
    ];
    if let Some(condition) = &policy.condition {
        fields.push(("condition", Value::Bin(encode_standalone(condition))));
    }
    Value::Map(fields.into_iter().collect())
}

/// A stored policy back, or `None` for a record this server could not have written.
pub fn from_value(id: &str, value: &Value) -> Option<AdminPolicy> {
    let text = |name| match value.get(name) {
        Some(Value::Str(s)) => Some(s.as_str()),
        _ => None,
    };
    let condition: Option<PredicateNode> = match value.get("condition") {
        Some(Value::Bin(bytes)) => Some(decode_standalone(bytes, &Limits::default()).ok()?),
        None => None,
        Some(_) => return None,
    };
    AdminPolicy::new(
        id.to_owned(),
        text("mapPattern")?,
        parse_action(text("action")?)?,
        parse_effect(text("effect")?)?,
        condition,
        None,
    )
    .ok()
}

/// The admin policies among what storage loaded (live records of `__topgun_policies`).
pub fn recover(entries: &[StoredEntry]) -> AdminPolicies {
    // The record in force per key: a policy deleted after its creation was logged must
    // stay deleted, whichever order loading yields the two in.
    let live = latest_lww(entries, POLICIES_MAP)
        .into_iter()
        .filter(|(_, record)| !record.is_tombstone())
        .map(|(key, record)| (key.to_owned(), record.value.clone()));
    restore(live)
}

/// The admin policies of a store's live `(key, value)` pairs: the policies and the
/// configured mark. A value this server cannot read (written by another version, or
/// damaged) might have been a deny: rather than leave it out and allow what it denied, no
/// admin policy is put in force and the store counts as configured — everything is denied
/// but to admins — until the policy is written again or deleted.
pub fn restore(live: impl IntoIterator<Item = (String, Value)>) -> AdminPolicies {
    let mut policies = Vec::new();
    let mut configured = false;
    let mut unreadable = Vec::new();
    for (key, value) in live {
        if key == CONFIGURED_KEY {
            configured = true;
        } else if let Some(policy) = from_value(&key, &value) {
            policies.push(policy);
        } else {
            unreadable.push(key);
        }
    }
    if !unreadable.is_empty() {
        tracing::error!(
            ?unreadable,
            "stored admin policies this server cannot read: every request is denied but to \
             admins until they are written again or deleted"
        );
        return AdminPolicies::restore(Vec::new(), true);
    }
    AdminPolicies::restore(policies, configured)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::condition;

    #[test]
    fn a_policy_survives_its_stored_form() {
        let condition = condition::compile("auth.id == data.ownerId").unwrap();
        let policy = AdminPolicy::new(
            "owned".into(),
            "docs.**",
            PolicyAction::Write,
            Effect::Allow,
            Some(condition.clone()),
            None,
        )
        .unwrap();
        let back = from_value("owned", &to_value(&policy)).unwrap();
        assert_eq!(back.pattern, policy.pattern);
        assert_eq!(
            (back.action, back.effect),
            (PolicyAction::Write, Effect::Allow)
        );
        assert_eq!(back.condition, Some(condition));
        assert!(from_value("x", &Value::from("not a policy")).is_none());
    }

    #[test]
    fn an_unreadable_policy_puts_none_in_force_and_denies_by_default() {
        let allow = AdminPolicy::new(
            "a".into(),
            "docs",
            PolicyAction::All,
            Effect::Allow,
            None,
            None,
        );
        let allow = to_value(&allow.unwrap());
        let restored = restore([("a".to_owned(), allow.clone())]);
        assert_eq!(restored.len(), 1);
        let restored = restore([
            ("a".to_owned(), allow),
            ("d".to_owned(), Value::from("a deny from another version")),
        ]);
        assert!(restored.is_empty(), "not the readable allow alone");
        assert!(restored.is_configured(), "so nothing but admins is allowed");
    }
}
