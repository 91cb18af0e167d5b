//! The reference server's role-less policies, as the admin API creates them (COMPAT §3.3),
//! and the one decision procedure that weighs them with the config file's role policies —
//! sans I/O.
//!
//! A policy names maps by a pattern over dot-separated segments, an action (`read`, `write`,
//! `remove`, `all`), an effect (`allow`, `deny`) and optionally a condition on the caller
//! (`auth.*`) and the record written (`data.*`). The decision, in order:
//! 1. a subject listed in `TOPGUN_ADMIN_SUBJECTS` is allowed (no policy or condition is read);
//! 2. the config file's admin role (`ADMIN`) is allowed;
//! 3. an applicable `deny` whose condition holds denies — deny wins;
//! 4. an applicable `allow` whose condition holds allows, whole records;
//! 5. a grant of the config file's role policies allows, with its field limits;
//! 6. with no role policies and no admin policy ever configured, everything is allowed;
//!    otherwise nothing else is.
//!
//! "Configured" turns on with the first admin policy and stays on when all are deleted, so
//! deleting the last policy never opens the server. A `roles: ["admin"]` claim bypasses
//! nothing: role claims can be self-granted, the bypass is anchored in configuration.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;
use topgun_core::Value;
use topgun_core::predicate::Filter;
use topgun_core::protocol::query::{PredicateNode, Query};

use crate::security::condition::{self, ConditionError};
use crate::security::policy::{Action, Decision, PolicySet, Resource, Subject};

/// What an admin policy governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyAction {
    Read,
    Write,
    Remove,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// A request as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// A remove: governed by `write` and `remove` policies alike (the reference checks
    /// removes as writes; `remove` refines).
    Remove,
}

impl Access {
    /// The role policies' view: a remove is a write.
    fn role_action(self) -> Action {
        match self {
            Self::Read => Action::Read,
            Self::Write | Self::Remove => Action::Write,
        }
    }

    fn governed_by(self, action: PolicyAction) -> bool {
        matches!(
            (self, action),
            (_, PolicyAction::All)
                | (Self::Read, PolicyAction::Read)
                | (Self::Write | Self::Remove, PolicyAction::Write)
                | (Self::Remove, PolicyAction::Remove)
        )
    }
}

/// Longest map pattern, in bytes.
const PATTERN_BYTES_MAX: usize = 256;

/// A map-name pattern over dot-separated segments: a lone `*` or `**` matches every name;
/// `*` as a segment matches exactly one segment; `**` matches zero or more; other segments
/// are literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapPattern {
    source: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Any,
}

impl MapPattern {
    pub fn parse(source: &str) -> Result<Self, AdminPolicyError> {
        if source.is_empty() || source.len() > PATTERN_BYTES_MAX {
            return Err(AdminPolicyError::field(
                "mapPattern",
                "must be 1 to 256 bytes",
            ));
        }
        let segments = source
            .split('.')
            .map(|s| match s {
                "*" => Ok(Segment::One),
                "**" => Ok(Segment::Any),
                "" => Err(AdminPolicyError::field(
                    "mapPattern",
                    "has an empty segment",
                )),
                literal => Ok(Segment::Literal(literal.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            source: source.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, name: &str) -> bool {
        if matches!(self.segments.as_slice(), [Segment::One | Segment::Any]) {
            return true;
        }
        let parts: Vec<&str> = name.split('.').collect();
        matches_from(&self.segments, &parts)
    }
}

/// Whether `segments` match `parts`, in O(segments × parts): `reach[j]` says the segments
/// so far can match the first `j` parts. (Backtracking over several `**` would be
/// exponential, and this runs on every write while admin policies are in force.)
fn matches_from(segments: &[Segment], parts: &[&str]) -> bool {
    let mut reach = vec![false; parts.len() + 1];
    reach[0] = true;
    for segment in segments {
        let mut next = vec![false; parts.len() + 1];
        match segment {
            Segment::Any => {
                let mut any = false;
                for (j, slot) in next.iter_mut().enumerate() {
                    any |= reach[j];
                    *slot = any;
                }
            }
            Segment::One | Segment::Literal(_) => {
                for (j, part) in parts.iter().enumerate() {
                    let fits = match segment {
                        Segment::Literal(literal) => literal == part,
                        _ => true,
                    };
                    next[j + 1] = reach[j] && fits;
                }
            }
        }
        reach = next;
    }
    reach[parts.len()]
}

/// An admin policy that does not validate; `field` names the request field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdminPolicyError {
    #[error("{field} {why}")]
    Field { field: &'static str, why: String },
    #[error("conditionExpr: {0}")]
    Condition(#[from] ConditionError),
}

impl AdminPolicyError {
    fn field(field: &'static str, why: &str) -> Self {
        Self::Field {
            field,
            why: why.to_owned(),
        }
    }

    /// The request field at fault, for the API's `{field}`.
    pub fn field_name(&self) -> &'static str {
        match self {
            Self::Field { field, .. } => field,
            Self::Condition(_) => "conditionExpr",
        }
    }
}

/// One admin policy, compiled.
#[derive(Debug, Clone)]
pub struct AdminPolicy {
    pub id: String,
    pub pattern: MapPattern,
    pub action: PolicyAction,
    pub effect: Effect,
    /// The condition as a predicate tree (what the API shows), and compiled.
    pub condition: Option<PredicateNode>,
    filter: Option<Filter>,
}

impl AdminPolicy {
    /// Compiles a policy; `condition` wins over `condition_expr` when both are given.
    pub fn new(
        id: String,
        pattern: &str,
        action: PolicyAction,
        effect: Effect,
        condition: Option<PredicateNode>,
        condition_expr: Option<&str>,
    ) -> Result<Self, AdminPolicyError> {
        let condition = match (condition, condition_expr) {
            (Some(node), _) => Some(node),
            (None, Some(expr)) => Some(condition::compile(expr)?),
            (None, None) => None,
        };
        let filter = match &condition {
            Some(node) => Some(compile_filter(node)?),
            None => None,
        };
        Ok(Self {
            id,
            pattern: MapPattern::parse(pattern)?,
            action,
            effect,
            condition,
            filter,
        })
    }

    /// Whether the condition holds (three-valued: only *true* holds) for the caller's
    /// `auth` context and the record written (`data`; nil for reads).
    fn holds(&self, auth: Option<&Value>, data: &Value) -> bool {
        match &self.filter {
            None => true,
            Some(filter) => filter.matches(data, auth),
        }
    }
}

fn compile_filter(node: &PredicateNode) -> Result<Filter, AdminPolicyError> {
    let query = Query {
        predicate: Some(node.clone()),
        ..Query::default()
    };
    Filter::new(&query).map_err(|e| AdminPolicyError::field("condition", &e.to_string()))
}

/// The admin API's policies, and whether any was ever configured.
#[derive(Debug, Clone, Default)]
pub struct AdminPolicies {
    by_id: BTreeMap<String, AdminPolicy>,
    configured: bool,
}

impl AdminPolicies {
    /// Restored from storage: the policies and the configured flag.
    pub fn restore(policies: Vec<AdminPolicy>, configured: bool) -> Self {
        let by_id = policies.into_iter().map(|p| (p.id.clone(), p)).collect();
        Self {
            configured: configured || !BTreeMap::is_empty(&by_id),
            by_id,
        }
    }

    /// Adds or replaces a policy by id; the store is configured from now on.
    pub fn put(&mut self, policy: AdminPolicy) {
        self.configured = true;
        self.by_id.insert(policy.id.clone(), policy);
    }

    /// Removes a policy; `false` when there was none (deleting stays idempotent).
    pub fn remove(&mut self, id: &str) -> bool {
        self.by_id.remove(id).is_some()
    }

    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// How many policies are in force.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Every policy, by id.
    pub fn iter(&self) -> impl Iterator<Item = &AdminPolicy> {
        self.by_id.values()
    }

    /// Whether any policy has a condition: decisions then depend on the record written and
    /// may not be cached by name alone.
    pub fn any_conditional(&self) -> bool {
        self.by_id.values().any(|p| p.condition.is_some())
    }
}

/// Everything that decides: the role policies, the admin policies and the admin subjects.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub roles: PolicySet,
    pub admin: AdminPolicies,
    /// JWT subjects that bypass every policy (`TOPGUN_ADMIN_SUBJECTS`).
    pub admin_subjects: BTreeSet<String>,
}

/// What a request asks of the rules.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub resource: Resource,
    pub name: &'a str,
    pub access: Access,
    /// The record written (`record.value` or `orRecord.value`); `None` for reads and removes.
    pub data: Option<&'a Value>,
}

impl Rules {
    /// Whether everything is allowed to everyone (no policy of either kind, ever).
    pub fn is_open(&self) -> bool {
        self.roles.is_open() && !self.admin.is_configured()
    }

    /// The decision for `subject` (see the module's six steps).
    pub fn decide(&self, subject: &Subject, request: Request<'_>) -> Decision {
        if subject
            .user_id
            .as_ref()
            .is_some_and(|user| self.admin_subjects.contains(user))
            || subject.is_admin()
        {
            return Decision::Allow(None);
        }
        if let Some(effect) = self.admin_effect(subject, request) {
            return match effect {
                Effect::Deny => Decision::Deny,
                Effect::Allow => Decision::Allow(None),
            };
        }
        match (self.roles.is_open(), self.admin.is_configured()) {
            (true, false) => Decision::Allow(None),
            (true, true) => Decision::Deny,
            (false, _) => {
                let action = request.access.role_action();
                self.roles
                    .decide(subject, request.resource, request.name, action)
            }
        }
    }

    /// Steps 3 and 4: deny wins over allow among the applicable admin policies whose
    /// condition holds; `None` when none applies. Admin policies govern maps, and the
    /// names `TOPIC_PUB` and `COUNTER_SYNC` write to.
    fn admin_effect(&self, subject: &Subject, request: Request<'_>) -> Option<Effect> {
        let governed = match request.resource {
            Resource::Map => true,
            Resource::Topic | Resource::Counter => request.access == Access::Write,
            Resource::Lock => false,
        };
        if !governed || self.admin.by_id.is_empty() {
            return None;
        }
        let auth = auth_context(subject);
        let data = request.data.unwrap_or(&Value::Nil);
        let mut effect = None;
        for policy in self.admin.by_id.values() {
            if request.access.governed_by(policy.action)
                && policy.pattern.matches(request.name)
                && policy.holds(auth.as_ref(), data)
            {
                if policy.effect == Effect::Deny {
                    return Some(Effect::Deny);
                }
                effect = Some(Effect::Allow);
            }
        }
        effect
    }
}

/// `auth` in a condition: `{id, userId, roles}` of the caller; absent for an anonymous one,
/// so every `auth.*` comparison is unknown.
pub fn auth_context(subject: &Subject) -> Option<Value> {
    let user = subject.user_id.as_deref()?;
    let roles = subject
        .roles
        .iter()
        .map(|r| Value::Str(r.as_str().into()))
        .collect();
    Some(Value::Map(
        [
            ("id", Value::Str(user.into())),
            ("userId", Value::Str(user.into())),
            ("roles", Value::Array(roles)),
        ]
        .into_iter()
        .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_patterns_match_by_segment() {
        let cases = [
            ("*", "anything.at.all", true),
            ("**", "x", true),
            ("users.*", "users.profiles", true),
            ("users.*", "users", false),
            ("users.*", "users.a.b", false),
            ("users.**", "users", true),
            ("users.**", "users.a.b", true),
            ("users.**", "usersx", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.c", false),
            ("todos", "todos", true),
            ("todos", "todos.x", false),
            ("a.**.z", "a.z", true),
            ("a.**.z", "a.b.c.z", true),
        ];
        for (pattern, name, expected) in cases {
            let p = MapPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(name), expected, "{pattern} ~ {name}");
        }
        // Many `**` against a long name that does not match: answered at once, not by
        // backtracking through every way to split the name.
        let many = MapPattern::parse(&["**"; 40].join(".").replace("**.**.**", "**.x.**")).unwrap();
        let long: Vec<&str> = vec!["a"; 60];
        assert!(!many.matches(&long.join(".")));
        assert!(MapPattern::parse(&"a".repeat(257)).is_err());
        assert!(MapPattern::parse("a..b").is_err());
        assert!(MapPattern::parse("").is_err());
    }

    #[test]
    fn a_bad_condition_names_its_field_and_column() {
        let error = AdminPolicy::new(
            "p".into(),
            "docs",
            PolicyAction::Write,
            Effect::Allow,
            None,
            Some("auth.id === data.ownerId"),
        )
        .unwrap_err();
        assert_eq!(error.field_name(), "conditionExpr");
        assert!(error.to_string().contains("column"), "{error}");
    }
}
