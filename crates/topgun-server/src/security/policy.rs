//! Role-based access policies, sans I/O (DESIGN §4.3).
//!
//! A policy grants a role `READ`, `WRITE` or both (`ALL`) on the resources whose name
//! matches its pattern — maps, topics, locks or counters — and may limit what the role
//! reads of a map to some top-level fields (`allowed_fields`). Rules:
//!
//! * **No policies, no restrictions**: a server without policies lets every authenticated
//!   connection do everything (as TopGun does). Once any policy is configured, whatever no
//!   policy allows is denied.
//! * The `ADMIN` role may do everything, whatever the policies say.
//! * A request is allowed if any policy of one of the caller's roles whose pattern matches
//!   the name grants the action. The fields a reader sees are the union of what the
//!   matching read grants allow; a grant without `allowed_fields` allows every field.
//! * Patterns: `*` matches any run of characters (including none and `/`); `{userId}` is
//!   replaced by the caller's user id, matched literally, so `users/{userId}/*` confines a
//!   user to their own prefix. A caller without a user id matches no `{userId}` pattern.
//! * `allowed_fields` restricts reads only: a `WRITE` grant is a grant on whole records.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// The role that bypasses every policy.
pub const ADMIN_ROLE: &str = "ADMIN";
/// The placeholder replaced by the caller's user id.
pub const USER_ID: &str = "{userId}";

/// What a policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Map,
    Topic,
    Lock,
    Counter,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Map => "map",
            Self::Topic => "topic",
            Self::Lock => "lock",
            Self::Counter => "counter",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    Write,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "READ",
            Self::Write => "WRITE",
        })
    }
}

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    pub user_id: Option<String>,
    pub roles: Vec<String>,
}

impl Subject {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }
}

/// The top-level fields a reader may see.
pub type Fields = Arc<BTreeSet<String>>;

/// The answer to "may this subject do that?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Deny,
    /// Allowed; for reads of a map, `Some(fields)` limits what is seen.
    Allow(Option<Fields>),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }
}

/// A name pattern: literal text, `*` and `{userId}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Any,
    UserId,
}

impl Pattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.is_empty() {
            return Err("the pattern is empty".into());
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(c) = rest.chars().next() {
            if rest.starts_with(USER_ID) {
                push_text(&mut parts, &mut text);
                parts.push(Part::UserId);
                rest = &rest[USER_ID.len()..];
                continue;
            }
            match c {
                '*' => {
                    push_text(&mut parts, &mut text);
                    if parts.last() != Some(&Part::Any) {
                        parts.push(Part::Any);
                    }
                }
                '{' | '}' => {
                    return Err(format!(
                        "{source:?} has a brace outside {USER_ID}, the only placeholder"
                    ));
                }
                c => text.push(c),
            }
            rest = &rest[c.len_utf8()..];
        }
        push_text(&mut parts, &mut text);
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `name` matches, with `{userId}` standing for `user_id`.
    pub fn matches(&self, name: &str, user_id: Option<&str>) -> bool {
        let mut literals = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            literals.push(match part {
                Part::Text(t) => Some(t.as_str()),
                Part::UserId => match user_id {
                    Some(id) => Some(id),
                    None => return false,
                },
                Part::Any => None,
            });
        }
        glob(&literals, name)
    }
}

fn push_text(parts: &mut Vec<Part>, text: &mut String) {
    if !text.is_empty() {
        parts.push(Part::Text(std::mem::take(text)));
    }
}

/// Matches `name` against literals (`Some`) and wildcards (`None`) in order, in
/// O(name × pattern) time whatever the pattern: names come from clients, and a pattern
/// tried by backtracking through every way its wildcards could split a name takes time
/// that grows as the name's length to the power of the wildcards (`*a*a*a*a*a*a*b` against
/// 256 `a`s: about C(256, 6) ≈ 4·10¹¹ steps).
///
/// The literals before the first wildcard must begin the name and those after the last
/// must end it. Each run of literals in between is taken at its leftmost place after the
/// previous one: with only `*` wildcards, if any placement matches, the leftmost does.
fn glob(parts: &[Option<&str>], name: &str) -> bool {
    let mut name = name;
    let mut parts = parts;
    while let Some((Some(text), rest)) = parts.split_first() {
        let Some(after) = name.strip_prefix(text) else {
            return false;
        };
        (name, parts) = (after, rest);
    }
    if parts.is_empty() {
        return name.is_empty();
    }
    while let Some((Some(text), rest)) = parts.split_last() {
        let Some(before) = name.strip_suffix(text) else {
            return false;
        };
        (name, parts) = (before, rest);
    }
    // `parts` now starts and ends with a wildcard.
    for run in parts.split(Option::is_none).filter(|run| !run.is_empty()) {
        match leftmost_run(name, run) {
            Some(end) => name = &name[end..],
            None => return false,
        }
    }
    true
}

/// Where the leftmost occurrence of the literals of `run` (a stretch between wildcards:
/// literals only), one right after the other, ends in `name`.
fn leftmost_run(name: &str, run: &[Option<&str>]) -> Option<usize> {
    let mut texts = run.iter().flatten();
    let first = texts.next()?;
    let mut from = 0;
    while let Some(at) = name[from..].find(first) {
        let start = from + at;
        let mut end = start + first.len();
        let rest_follows = texts.clone().all(|text| {
            let follows = name[end..].starts_with(text);
            end += if follows { text.len() } else { 0 };
            follows
        });
        if rest_follows {
            return Some(end);
        }
        from = start + name[start..].chars().next()?.len_utf8();
    }
    None
}

/// One configured policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub role: String,
    pub resource: Resource,
    pub pattern: Pattern,
    pub read: bool,
    pub write: bool,
    /// `None`: every field.
    pub allowed_fields: Option<Fields>,
}

/// A policy as written in the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub role: Option<String>,
    pub map_name_pattern: Option<String>,
    pub topic_pattern: Option<String>,
    pub lock_pattern: Option<String>,
    pub counter_pattern: Option<String>,
    /// `READ`, `WRITE`, `ALL`.
    pub actions: Option<Vec<String>>,
    pub allowed_fields: Option<Vec<String>>,
}

/// A policy that cannot be loaded; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("policy {index} ({summary}): {problem}")]
pub struct PolicyError {
    /// 1-based position in the file.
    pub index: usize,
    pub summary: String,
    pub problem: String,
}

impl PolicySpec {
    fn summary(&self) -> String {
        let pattern = [
            ("map", &self.map_name_pattern),
            ("topic", &self.topic_pattern),
            ("lock", &self.lock_pattern),
            ("counter", &self.counter_pattern),
        ]
        .into_iter()
        .filter_map(|(kind, p)| p.as_ref().map(|p| format!("{kind} {p:?}")))
        .collect::<Vec<_>>()
        .join(", ");
        format!(
            "role {:?}, {}",
            self.role.as_deref().unwrap_or(""),
            if pattern.is_empty() {
                "no pattern".into()
            } else {
                pattern
            }
        )
    }

    /// Checks and compiles the policy at 0-based position `at`.
    pub fn compile(&self, at: usize) -> Result<Policy, PolicyError> {
        let fail = |problem: String| PolicyError {
            index: at + 1,
            summary: self.summary(),
            problem,
        };
        let role = match self.role.as_deref().map(str::trim) {
            Some(role) if !role.is_empty() => role.to_owned(),
            _ => return Err(fail("role is missing or empty".into())),
        };
        let named: Vec<(Resource, &String)> = [
            (Resource::Map, &self.map_name_pattern),
            (Resource::Topic, &self.topic_pattern),
            (Resource::Lock, &self.lock_pattern),
            (Resource::Counter, &self.counter_pattern),
        ]
        .into_iter()
        .filter_map(|(r, p)| p.as_ref().map(|p| (r, p)))
        .collect();
        let [(resource, source)] = named[..] else {
            return Err(fail(
                "name exactly one of map_name_pattern, topic_pattern, lock_pattern, \
                 counter_pattern"
                    .into(),
            ));
        };
        let pattern = Pattern::parse(source).map_err(fail)?;
        let (mut read, mut write) = (false, false);
        let actions = self.actions.as_deref().unwrap_or_default();
        if actions.is_empty() {
            return Err(fail(
                "actions is missing or empty (READ, WRITE, ALL)".into(),
            ));
        }
        for action in actions {
            match action.as_str() {
                "READ" => read = true,
                "WRITE" => write = true,
                "ALL" => (read, write) = (true, true),
                other => {
                    return Err(fail(format!(
                        "action {other:?} is not one of READ, WRITE, ALL"
                    )));
                }
            }
        }
        let allowed_fields = match &self.allowed_fields {
            None => None,
            Some(_) if resource != Resource::Map => {
                return Err(fail("allowed_fields applies to maps only".into()));
            }
            Some(fields) if fields.iter().any(String::is_empty) => {
                return Err(fail("allowed_fields has an empty field name".into()));
            }
            Some(fields) => Some(Arc::new(fields.iter().cloned().collect())),
        };
        Ok(Policy {
            role,
            resource,
            pattern,
            read,
            write,
            allowed_fields,
        })
    }
}

/// Every configured policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet {
    policies: Vec<Policy>,
}

impl PolicySet {
    /// Compiles every spec, or names the first that is invalid.
    pub fn compile(specs: &[PolicySpec]) -> Result<Self, PolicyError> {
        let policies = specs
            .iter()
            .enumerate()
            .map(|(at, spec)| spec.compile(at))
            .collect::<Result<_, _>>()?;
        Ok(Self { policies })
    }

    pub fn from_policies(policies: Vec<Policy>) -> Self {
        Self { policies }
    }

    /// Whether no policy is configured (everything is allowed).
    pub fn is_open(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// May `subject` do `action` on the resource named `name`?
    pub fn decide(
        &self,
        subject: &Subject,
        resource: Resource,
        name: &str,
        action: Action,
    ) -> Decision {
        if self.is_open() || subject.is_admin() {
            return Decision::Allow(None);
        }
        let mut allowed = false;
        let mut fields: Option<BTreeSet<String>> = Some(BTreeSet::new());
        for policy in &self.policies {
            let grants = match action {
                Action::Read => policy.read,
                Action::Write => policy.write,
            };
            if !grants
                || policy.resource != resource
                || !subject.roles.contains(&policy.role)
                || !policy.pattern.matches(name, subject.user_id.as_deref())
            {
                continue;
            }
            allowed = true;
            match (&mut fields, &policy.allowed_fields) {
                (Some(all), Some(more)) if action == Action::Read => {
                    all.extend(more.iter().cloned());
                }
                _ => fields = None,
            }
        }
        match (allowed, fields) {
            (false, _) => Decision::Deny,
            (true, fields) => Decision::Allow(fields.map(Arc::new)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(role: &str, map: &str, actions: &[&str], fields: Option<&[&str]>) -> PolicySpec {
        PolicySpec {
            role: Some(role.into()),
            map_name_pattern: Some(map.into()),
            actions: Some(actions.iter().map(|a| (*a).to_owned()).collect()),
            allowed_fields: fields.map(|f| f.iter().map(|s| (*s).to_owned()).collect()),
            ..PolicySpec::default()
        }
    }

    fn subject(user: &str, roles: &[&str]) -> Subject {
        Subject {
            user_id: Some(user.into()),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    /// Each case: pattern, name, the caller's user id, whether it matches.
    fn assert_matches(cases: &[(&str, &str, Option<&str>, bool)]) {
        for &(pattern, name, user, expected) in cases {
            let p = Pattern::parse(pattern).unwrap();
            assert_eq!(
                p.matches(name, user),
                expected,
                "{pattern} vs {name} ({user:?})"
            );
        }
    }

    #[test]
    fn patterns_match_wildcards_and_the_callers_own_id() {
        let cases = [
            ("todos", "todos", Some("u"), true),
            ("todos", "todos2", Some("u"), false),
            ("todo*", "todos", Some("u"), true),
            ("todo*", "todo", Some("u"), true),
            ("*", "anything/at/all", Some("u"), true),
            ("users/{userId}/*", "users/alice/notes", Some("alice"), true),
            ("users/{userId}/*", "users/bob/notes", Some("alice"), false),
            ("users/{userId}/*", "users/alice", Some("alice"), false),
            ("users/{userId}/*", "users/alice/notes", None, false),
            ("users/{userId}", "users/al*", Some("al*"), true),
            ("users/{userId}", "users/alice", Some("al*"), false),
            ("a*b*c", "axxbyyc", None, true),
            ("a*b*c", "axxbyy", None, false),
            ("*.log", "x.log.log", None, true),
            ("é*ü", "éaü", None, true),
        ];
        assert_matches(&cases);
        assert!(Pattern::parse("users/{user}/x").is_err());
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn runs_of_literals_and_wildcards_match_in_order() {
        let cases = [
            ("ab*ba", "aba", None, false),
            ("ab*ba", "abba", None, true),
            ("*{userId}-x*", "pre-u-y-u-x-post", Some("u"), true),
            ("*{userId}-x*", "pre-u-y-u-z", Some("u"), false),
            ("*a*b*a*", "xxbxxaxxbxxa", None, true),
            ("*a*b*a*", "xxbxxaxxbxx", None, false),
            ("a*", "", None, false),
            ("*", "", None, true),
            ("*ü*ü", "üxü", None, true),
            ("*ü*ü", "ü", None, false),
        ];
        assert_matches(&cases);
    }

    #[test]
    fn a_pattern_of_many_wildcards_is_matched_without_backtracking() {
        // Tried by every split of the name, this takes about C(256, 6) ≈ 4·10¹¹ steps.
        let pattern = Pattern::parse("*a*a*a*a*a*a*b").unwrap();
        let name = "a".repeat(256);
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(pattern.matches(&name, None));
        });
        let matched = finished
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("the match ends");
        assert!(!matched);
    }

    #[test]
    fn invalid_policies_are_named() {
        let mut no_actions = spec("user", "todos", &[], None);
        no_actions.actions = None;
        let two_patterns = PolicySpec {
            topic_pattern: Some("t".into()),
            ..spec("user", "todos", &["READ"], None)
        };
        let fields_on_topic = PolicySpec {
            role: Some("user".into()),
            topic_pattern: Some("t".into()),
            actions: Some(vec!["READ".into()]),
            allowed_fields: Some(vec!["a".into()]),
            ..PolicySpec::default()
        };
        let cases = [
            (spec("", "todos", &["READ"], None), "role"),
            (no_actions, "actions"),
            (spec("user", "todos", &["DELETE"], None), "\"DELETE\""),
            (spec("user", "t{x}", &["READ"], None), "brace"),
            (two_patterns, "exactly one"),
            (fields_on_topic, "maps only"),
        ];
        for (bad, why) in cases {
            let specs = vec![spec("user", "ok", &["READ"], None), bad];
            let err = PolicySet::compile(&specs).unwrap_err();
            assert_eq!(err.index, 2);
            assert!(err.to_string().starts_with("policy 2 (role"), "{err}");
            assert!(err.to_string().contains(why), "{err} should say {why}");
        }
    }

    #[test]
    fn decisions_follow_roles_patterns_actions_and_fields() {
        let set = PolicySet::compile(&[
            spec("user", "public/*", &["READ"], Some(&["title"])),
            spec("user", "public/*", &["READ"], Some(&["body"])),
            spec("user", "users/{userId}/*", &["ALL"], None),
            spec("editor", "public/*", &["WRITE"], None),
        ])
        .unwrap();
        let alice = subject("alice", &["user"]);
        let fields = |d: Decision| match d {
            Decision::Allow(Some(f)) => f.iter().cloned().collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let read = set.decide(&alice, Resource::Map, "public/news", Action::Read);
        assert_eq!(fields(read), ["body", "title"], "grants add up");
        assert_eq!(
            set.decide(&alice, Resource::Map, "public/news", Action::Write),
            Decision::Deny
        );
        assert_eq!(
            set.decide(&alice, Resource::Map, "users/alice/x", Action::Write),
            Decision::Allow(None)
        );
        assert_eq!(
            set.decide(&alice, Resource::Map, "users/bob/x", Action::Read),
            Decision::Deny
        );
        assert_eq!(
            set.decide(&alice, Resource::Topic, "public/news", Action::Read),
            Decision::Deny,
            "a map policy says nothing about topics"
        );
        let both = subject("bob", &["user", "editor"]);
        assert!(
            set.decide(&both, Resource::Map, "public/x", Action::Write)
                .allowed()
        );
        let admin = subject("root", &["ADMIN"]);
        assert_eq!(
            set.decide(&admin, Resource::Lock, "anything", Action::Write),
            Decision::Allow(None)
        );
        let open = PolicySet::default();
        assert_eq!(
            open.decide(&Subject::default(), Resource::Map, "m", Action::Write),
            Decision::Allow(None),
            "no policies, no restrictions"
        );
    }
}
