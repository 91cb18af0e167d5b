//! The admin API's policy decision (COMPAT §3.3) against a small model of its six steps, on
//! random admin policies, role policies, subjects and requests. The model matches map
//! patterns with a regular expression and evaluates the conditions by hand; the engine has
//! its own segment matcher and compiles conditions to predicate trees.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use topgun_core::Value;
use topgun_server::security::admin_policy::{
    Access, AdminPolicies, AdminPolicy, Effect, PolicyAction, Request, Rules,
};
use topgun_server::security::policy::{Decision, PolicySet, PolicySpec, Resource, Subject};

/// The conditions the generator draws from, with how the model evaluates each.
const CONDITIONS: [&str; 3] = ["auth.id == data.owner", "data.n > 2", "data.owner == 'u'"];

fn model_condition(expr: &str, user: Option<&str>, data: Option<&Value>) -> bool {
    let field = |name: &str| data.and_then(|d| d.get(name));
    match expr {
        "auth.id == data.owner" => user.is_some_and(|u| field("owner") == Some(&Value::from(u))),
        "data.n > 2" => matches!(field("n"), Some(Value::Int(n)) if *n > 2),
        "data.owner == 'u'" => field("owner") == Some(&Value::from("u")),
        other => unreachable!("{other}"),
    }
}

/// A segment pattern as a regular expression over the name with a dot in front of every
/// segment (`.a.b` for `a.b`): `*` is one `.segment`, `**` any number of them, a literal
/// `.literal` — so that a `**` matching nothing leaves no dot to account for.
fn model_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" || pattern == "**" {
        return true;
    }
    let mut re = String::from("^");
    for segment in pattern.split('.') {
        match segment {
            "**" => re.push_str(r"(?:\.[^.]+)*"),
            "*" => re.push_str(r"\.[^.]+"),
            literal => {
                re.push_str(r"\.");
                re.push_str(&regex::escape(literal));
            }
        }
    }
    re.push('$');
    regex::Regex::new(&re)
        .unwrap()
        .is_match(&format!(".{name}"))
}

#[derive(Debug, Clone)]
struct ModelPolicy {
    pattern: String,
    action: PolicyAction,
    effect: Effect,
    condition: Option<&'static str>,
}

fn governs(access: Access, action: PolicyAction) -> bool {
    action == PolicyAction::All
        || match access {
            Access::Read => action == PolicyAction::Read,
            Access::Write => action == PolicyAction::Write,
            Access::Remove => matches!(action, PolicyAction::Write | PolicyAction::Remove),
        }
}

#[derive(Debug, Clone)]
struct Case {
    admin: Vec<ModelPolicy>,
    configured: bool,
    roles: Vec<PolicySpec>,
    admin_subjects: BTreeSet<String>,
    subject: Subject,
    resource: Resource,
    name: String,
    access: Access,
    data: Option<Value>,
}

fn model_decide(case: &Case, roles: &PolicySet) -> Decision {
    let user = case.subject.user_id.as_deref();
    if user.is_some_and(|u| case.admin_subjects.contains(u))
        || case.subject.roles.iter().any(|r| r == "ADMIN")
    {
        return Decision::Allow(None);
    }
    let governed = match case.resource {
        Resource::Map => true,
        Resource::Topic | Resource::Counter => case.access == Access::Write,
        Resource::Lock => false,
    };
    if governed {
        let data = if case.access == Access::Write {
            case.data.as_ref()
        } else {
            None
        };
        let applicable: Vec<&ModelPolicy> = case
            .admin
            .iter()
            .filter(|p| {
                governs(case.access, p.action)
                    && model_matches(&p.pattern, &case.name)
                    && p.condition.is_none_or(|c| model_condition(c, user, data))
            })
            .collect();
        if applicable.iter().any(|p| p.effect == Effect::Deny) {
            return Decision::Deny;
        }
        if !applicable.is_empty() {
            return Decision::Allow(None);
        }
    }
    let configured = case.configured || !case.admin.is_empty();
    match (case.roles.is_empty(), configured) {
        (true, false) => Decision::Allow(None),
        (true, true) => Decision::Deny,
        (false, _) => {
            let action = match case.access {
                Access::Read => topgun_server::security::policy::Action::Read,
                Access::Write | Access::Remove => topgun_server::security::policy::Action::Write,
            };
            // The role engine has a model test of its own (policy_model.rs).
            roles.decide(&case.subject, case.resource, &case.name, action)
        }
    }
}

fn segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c"])
}

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "**"]), 1..4)
        .prop_map(|s| s.join("."))
}

fn admin_policy() -> impl Strategy<Value = ModelPolicy> {
    (
        pattern(),
        prop::sample::select(vec![
            PolicyAction::Read,
            PolicyAction::Write,
            PolicyAction::Remove,
            PolicyAction::All,
        ]),
        prop::sample::select(vec![Effect::Allow, Effect::Deny]),
        prop::option::of(prop::sample::select(CONDITIONS.to_vec())),
    )
        .prop_map(|(pattern, action, effect, condition)| ModelPolicy {
            pattern,
            action,
            effect,
            condition,
        })
}

fn role_policy() -> impl Strategy<Value = PolicySpec> {
    (
        prop::sample::select(vec!["a*", "*", "b.c"]),
        prop::sample::select(vec!["READ", "WRITE", "ALL"]),
        prop::option::of(prop::sample::select(vec!["n", "owner"])),
    )
        .prop_map(|(pattern, action, field)| PolicySpec {
            role: Some("r".into()),
            map_name_pattern: Some(pattern.into()),
            actions: Some(vec![action.into()]),
            allowed_fields: field.map(|f| vec![f.into()]),
            ..PolicySpec::default()
        })
}

fn case() -> impl Strategy<Value = Case> {
    let subject = (
        prop::option::of(prop::sample::select(vec!["u", "v"])),
        prop::collection::btree_set(prop::sample::select(vec!["r", "ADMIN", "admin"]), 0..2),
    )
        .prop_map(|(user, roles)| Subject {
            user_id: user.map(Into::into),
            roles: roles.into_iter().map(Into::into).collect(),
        });
    let data = prop::option::of((
        prop::sample::select(vec!["u", "v"]),
        prop::sample::select(vec![1_i64, 3]),
    ))
    .prop_map(|d| {
        d.map(|(owner, n)| {
            Value::Map(
                [("owner", Value::from(owner)), ("n", Value::Int(n))]
                    .into_iter()
                    .collect(),
            )
        })
    });
    (
        prop::collection::vec(admin_policy(), 0..4),
        any::<bool>(),
        prop::collection::vec(role_policy(), 0..2),
        any::<bool>(),
        subject,
        prop::sample::select(vec![
            Resource::Map,
            Resource::Topic,
            Resource::Counter,
            Resource::Lock,
        ]),
        prop::collection::vec(segment(), 1..4).prop_map(|s| s.join(".")),
        prop::sample::select(vec![Access::Read, Access::Write, Access::Remove]),
        data,
    )
        .prop_map(
            |(admin, configured, roles, v_is_admin, subject, resource, name, access, data)| Case {
                admin,
                configured,
                roles,
                admin_subjects: if v_is_admin {
                    BTreeSet::from(["v".to_owned()])
                } else {
                    BTreeSet::new()
                },
                subject,
                resource,
                name,
                access,
                data,
            },
        )
}

fn engine(case: &Case) -> (Rules, PolicySet) {
    let admin = case
        .admin
        .iter()
        .enumerate()
        .map(|(at, p)| {
            AdminPolicy::new(
                at.to_string(),
                &p.pattern,
                p.action,
                p.effect,
                None,
                p.condition,
            )
            .unwrap()
        })
        .collect();
    let role_set = PolicySet::compile(&case.roles).unwrap();
    let rules = Rules {
        roles: role_set.clone(),
        admin: AdminPolicies::restore(admin, case.configured),
        admin_subjects: case.admin_subjects.clone(),
    };
    (rules, role_set)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_decision_follows_the_six_steps(case in case()) {
        let (rules, roles) = engine(&case);
        // Reads and removes carry no record: their conditions on `data` never hold.
        let data = if case.access == Access::Write { case.data.as_ref() } else { None };
        let request = Request {
            resource: case.resource,
            name: &case.name,
            access: case.access,
            data,
        };
        prop_assert_eq!(rules.decide(&case.subject, request), model_decide(&case, &roles));
    }
}

#[test]
fn deleting_every_policy_never_opens_the_server() {
    let deny = AdminPolicy::new(
        "d".into(),
        "**",
        PolicyAction::All,
        Effect::Deny,
        None,
        None,
    )
    .unwrap();
    let mut admin = AdminPolicies::default();
    admin.put(deny);
    assert!(admin.remove("d"));
    assert!(!admin.remove("d"), "deleting is idempotent");
    let rules = Rules {
        admin,
        ..Rules::default()
    };
    let anyone = Subject {
        user_id: Some("u".into()),
        roles: vec![],
    };
    let request = Request {
        resource: Resource::Map,
        name: "todos",
        access: Access::Read,
        data: None,
    };
    assert_eq!(rules.decide(&anyone, request), Decision::Deny);
    assert!(!rules.is_open());
}

#[test]
fn the_model_matcher_agrees_with_the_spec_examples() {
    for (pattern, name, expected) in [
        ("users.*", "users.profiles", true),
        ("users.*", "users", false),
        ("users.**", "users", true),
        ("users.**", "users.a.b", true),
        ("**.b", "b", true),
        ("**.b", "a.a.b", true),
        ("a.**.b", "a.b", true),
        ("**.**.*", "a", true),
        ("**.*", "a.b", true),
        ("a.*", "a", false),
    ] {
        assert_eq!(model_matches(pattern, name), expected, "{pattern} ~ {name}");
    }
}
