//! The policy engine against a small reference model of the policy semantics, on random
//! policy sets and random requests. The model matches patterns with a regular expression
//! (the engine has its own matcher) and decides by the rules as written in `policy.rs`.

// Test code: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use topgun_server::security::policy::{Action, Decision, PolicySet, PolicySpec, Resource, Subject};

/// A policy as the model sees it.
#[derive(Debug, Clone)]
struct ModelPolicy {
    role: String,
    resource: Resource,
    pattern: String,
    actions: Vec<String>,
    fields: Option<Vec<String>>,
}

fn model_matches(pattern: &str, name: &str, user: Option<&str>) -> bool {
    if pattern.contains("{userId}") && user.is_none() {
        return false;
    }
    let mut re = String::from("^");
    let mut rest = pattern;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("{userId}") {
            re.push_str(&regex::escape(user.unwrap()));
            rest = after;
        } else if let Some(after) = rest.strip_prefix('*') {
            re.push_str("(?s:.*)");
            rest = after;
        } else {
            let c = rest.chars().next().unwrap();
            re.push_str(&regex::escape(&c.to_string()));
            rest = &rest[c.len_utf8()..];
        }
    }
    re.push('$');
    regex::Regex::new(&re).unwrap().is_match(name)
}

fn model_decide(
    policies: &[ModelPolicy],
    subject: &Subject,
    resource: Resource,
    name: &str,
    action: Action,
) -> Model {
    if policies.is_empty() || subject.roles.iter().any(|r| r == "ADMIN") {
        return Model::Allow(None);
    }
    let wanted = match action {
        Action::Read => "READ",
        Action::Write => "WRITE",
    };
    let matching: Vec<&ModelPolicy> = policies
        .iter()
        .filter(|p| {
            p.resource == resource
                && subject.roles.contains(&p.role)
                && p.actions.iter().any(|a| a == wanted || a == "ALL")
                && model_matches(&p.pattern, name, subject.user_id.as_deref())
        })
        .collect();
    if matching.is_empty() {
        return Model::Deny;
    }
    if action == Action::Write || matching.iter().any(|p| p.fields.is_none()) {
        return Model::Allow(None);
    }
    Model::Allow(Some(
        matching
            .iter()
            .flat_map(|p| p.fields.clone().unwrap_or_default())
            .collect(),
    ))
}

/// The model's answer: denied, or allowed with the fields seen (`None`: all).
#[derive(Debug, PartialEq, Eq)]
enum Model {
    Deny,
    Allow(Option<BTreeSet<String>>),
}

fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["x", "y", "/", "u", "*", "{userId}", "é"])
}

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 1..5).prop_map(|p| p.concat())
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["x", "y", "/", "u", "u*", "é"]),
        0..6,
    )
    .prop_map(|p| p.concat())
}

fn resource() -> impl Strategy<Value = Resource> {
    prop::sample::select(vec![
        Resource::Map,
        Resource::Topic,
        Resource::Lock,
        Resource::Counter,
    ])
}

fn policy() -> impl Strategy<Value = ModelPolicy> {
    (
        prop::sample::select(vec!["a", "b", "c"]),
        resource(),
        pattern(),
        prop::collection::vec(prop::sample::select(vec!["READ", "WRITE", "ALL"]), 1..3),
        prop::option::of(prop::collection::vec(
            prop::sample::select(vec!["f1", "f2", "f3"]),
            1..3,
        )),
    )
        .prop_map(|(role, resource, pattern, actions, fields)| ModelPolicy {
            role: role.into(),
            resource,
            pattern,
            actions: actions.into_iter().map(Into::into).collect(),
            // Field lists apply to maps only.
            fields: fields
                .filter(|_| resource == Resource::Map)
                .map(|f| f.into_iter().map(Into::into).collect()),
        })
}

fn subject() -> impl Strategy<Value = Subject> {
    (
        prop::option::of(prop::sample::select(vec!["u", "x", "u*", "é/"])),
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "ADMIN"]), 0..3),
    )
        .prop_map(|(user, roles)| Subject {
            user_id: user.map(Into::into),
            roles: roles.into_iter().map(Into::into).collect(),
        })
}

fn spec(p: &ModelPolicy) -> PolicySpec {
    let pattern = Some(p.pattern.clone());
    let mut spec = PolicySpec {
        role: Some(p.role.clone()),
        actions: Some(p.actions.clone()),
        allowed_fields: p.fields.clone(),
        ..PolicySpec::default()
    };
    match p.resource {
        Resource::Map => spec.map_name_pattern = pattern,
        Resource::Topic => spec.topic_pattern = pattern,
        Resource::Lock => spec.lock_pattern = pattern,
        Resource::Counter => spec.counter_pattern = pattern,
    }
    spec
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_engine_decides_as_the_model(
        policies in prop::collection::vec(policy(), 0..6),
        requests in prop::collection::vec(
            (subject(), resource(), name(), prop::bool::ANY),
            1..20,
        ),
    ) {
        let specs: Vec<PolicySpec> = policies.iter().map(spec).collect();
        let set = PolicySet::compile(&specs).unwrap();
        for (subject, resource, name, write) in requests {
            let action = if write { Action::Write } else { Action::Read };
            let got = match set.decide(&subject, resource, &name, action) {
                Decision::Deny => Model::Deny,
                Decision::Allow(fields) => Model::Allow(fields.map(|f| (*f).clone())),
            };
            let expected = model_decide(&policies, &subject, resource, &name, action);
            prop_assert_eq!(
                got, expected,
                "{:?} {} {:?} {:?} under {:?}", subject, resource, name, action, policies
            );
        }
    }
}
