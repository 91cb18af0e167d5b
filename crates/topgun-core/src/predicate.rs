//! Which records a live query selects (PROTOCOL.md §5.1–§5.2), evaluated here so that the
//! server and clients share one semantics.
//!
//! A [`Filter`] is compiled once from a query's `where` and `predicate` — both apply when
//! both are given — and then tested against record values. Compiling checks every node
//! (operands, patterns, references) so that a bad query is refused with a reason instead of
//! silently matching nothing.
//!
//! Semantics:
//! * **Three-valued logic.** A comparison with a missing or `nil` field, or with a `nil`
//!   operand, is *unknown*; `and`/`or`/`not` follow SQL (`not unknown` is unknown), and a
//!   record matches only when the whole predicate is *true*. So `neq` never selects nulls,
//!   and only `isNull`/`isNotNull` test for them.
//! * **Attributes** name a top-level field, or a dot path through nested maps
//!   (`address.city`) when no top-level field has the literal name.
//! * **Numbers** compare by value across integers and floats (`3 == 3.0`); **strings**
//!   compare in UTF-16 code-unit order, as JavaScript does. Ordering other kinds is false.
//! * `like`: SQL `%`/`_`, case-insensitive, whole value. `regex`: unanchored, linear-time
//!   (the `regex` crate), at most [`PATTERN_MAX`] bytes.
//! * `in`: the operand array holds the field; or, with a scalar operand, the field's array
//!   holds it. `between`: `[low, high]`, inclusive.
//! * `contains`, `containsAll`, `containsAny`: element membership when the field is an
//!   array; case-insensitive substring when it is a string.
//! * `startsWith`, `endsWith`: case-sensitive string prefix and suffix.
//! * `valueRef` (`data.<path>` or `auth.<path>`) takes the operand from the record itself
//!   or from the caller's auth context (absent for plain client queries: unknown).
//! * `where` is equality on top-level fields; an absent field equals `nil`.
//! * The full-text operators (`match`, `matchPhrase`, `matchPrefix`) belong to search and
//!   are refused here.

use std::cmp::Ordering;

use crate::protocol::enums::PredicateOp;
use crate::protocol::query::{PredicateNode, Query};
use crate::value::{Value, ValueMap};

/// Longest `like` or `regex` pattern, in bytes.
pub const PATTERN_MAX: usize = 1024;
/// Compiled size limit of one regex (the `regex` crate's own bound).
const REGEX_SIZE_MAX: usize = 1 << 20;

/// Why a query's filter cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PredicateError {
    #[error("`{0}` needs an `attribute`")]
    MissingAttribute(&'static str),
    #[error("`{0}` needs a `value` (or a `valueRef`)")]
    MissingValue(&'static str),
    #[error("`{op}` needs {expected}")]
    BadOperand {
        op: &'static str,
        expected: &'static str,
    },
    #[error("`{op}` pattern is longer than {PATTERN_MAX} bytes")]
    PatternTooLong { op: &'static str },
    #[error("`regex` pattern does not compile: {0}")]
    BadRegex(String),
    #[error("`valueRef` {0:?} must start with `data.` or `auth.`")]
    BadValueRef(String),
    #[error("`{0}` is a full-text operator: use search, not a query")]
    FullText(&'static str),
}

/// SQL's three truth values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown,
}

impl Truth {
    fn of(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }

    fn not(self) -> Self {
        match self {
            Self::True => Self::False,
            Self::False => Self::True,
            Self::Unknown => Self::Unknown,
        }
    }
}

/// A compiled `where` + `predicate`.
#[derive(Debug, Clone)]
pub struct Filter {
    equal: Option<ValueMap>,
    predicate: Option<Node>,
}

impl Filter {
    /// Compiles a query's filter; a query with neither selects every record.
    pub fn new(query: &Query) -> Result<Self, PredicateError> {
        Ok(Self {
            equal: query.where_.clone(),
            predicate: query.predicate.as_ref().map(Node::compile).transpose()?,
        })
    }

    /// Whether `record` (a record's value) is selected; `auth` is the context `auth.<path>`
    /// references read.
    pub fn matches(&self, record: &Value, auth: Option<&Value>) -> bool {
        let equal = self.equal.as_ref().is_none_or(|fields| {
            fields
                .iter()
                .all(|(name, want)| record.get(name).unwrap_or(&Value::Nil) == want)
        });
        equal
            && self
                .predicate
                .as_ref()
                .is_none_or(|p| p.eval(record, auth) == Truth::True)
    }

    /// A field the filter requires to equal a value — from `where`, or an `eq` at the top
    /// of the predicate or directly under a top-level `and` — so that a caller can index
    /// filters by it: a record whose field differs can never match.
    pub fn required_equality(&self) -> Option<(&str, &Value)> {
        if let Some((name, value)) = self.equal.as_ref().and_then(|e| e.iter().next()) {
            return Some((name, value));
        }
        match self.predicate.as_ref()? {
            Node::All(children) => children.iter().find_map(Node::equality),
            node => node.equality(),
        }
    }

    /// The predicate's truth value for `record` (`where` not included).
    pub fn truth(&self, record: &Value, auth: Option<&Value>) -> Truth {
        self.predicate
            .as_ref()
            .map_or(Truth::True, |p| p.eval(record, auth))
    }
}

#[derive(Debug, Clone)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    /// `None`: `not` without a child, which is true.
    Not(Option<Box<Node>>),
    IsNull {
        attr: String,
        null: bool,
    },
    Test {
        attr: String,
        test: Test,
        operand: Operand,
    },
}

#[derive(Debug, Clone)]
enum Operand {
    Value(Value),
    Data(String),
    Auth(String),
}

#[derive(Debug, Clone)]
enum Test {
    Eq,
    Neq,
    Order(fn(Ordering) -> bool),
    Like(Vec<char>),
    Regex(regex::Regex),
    In,
    Between,
    ContainsAll,
    ContainsAny,
    Contains,
    StartsWith,
    EndsWith,
}

impl Node {
    fn compile(node: &PredicateNode) -> Result<Self, PredicateError> {
        let op = node.op;
        let children = || -> Result<Vec<Node>, PredicateError> {
            node.children.iter().flatten().map(Node::compile).collect()
        };
        let test = match op {
            PredicateOp::And => return Ok(Self::All(children()?)),
            PredicateOp::Or => return Ok(Self::Any(children()?)),
            PredicateOp::Not => {
                return Ok(Self::Not(children()?.into_iter().next().map(Box::new)));
            }
            PredicateOp::IsNull | PredicateOp::IsNotNull => {
                return Ok(Self::IsNull {
                    attr: attribute(node)?,
                    null: op == PredicateOp::IsNull,
                });
            }
            PredicateOp::Match | PredicateOp::MatchPhrase | PredicateOp::MatchPrefix => {
                return Err(PredicateError::FullText(op.as_str()));
            }
            PredicateOp::Eq => Test::Eq,
            PredicateOp::Neq => Test::Neq,
            PredicateOp::Gt => Test::Order(Ordering::is_gt),
            PredicateOp::Gte => Test::Order(Ordering::is_ge),
            PredicateOp::Lt => Test::Order(Ordering::is_lt),
            PredicateOp::Lte => Test::Order(Ordering::is_le),
            PredicateOp::Like => Test::Like(pattern(node)?.to_lowercase().chars().collect()),
            PredicateOp::Regex => Test::Regex(regex(pattern(node)?)?),
            PredicateOp::In => Test::In,
            PredicateOp::Between => {
                let pair = node.value.value().and_then(Value::as_array);
                if pair.is_none_or(|p| p.len() != 2) {
                    return Err(PredicateError::BadOperand {
                        op: op.as_str(),
                        expected: "a `value` of [low, high]",
                    });
                }
                Test::Between
            }
            PredicateOp::ContainsAll => Test::ContainsAll,
            PredicateOp::ContainsAny => Test::ContainsAny,
            PredicateOp::Contains => Test::Contains,
            PredicateOp::StartsWith => Test::StartsWith,
            PredicateOp::EndsWith => Test::EndsWith,
        };
        Ok(Self::Test {
            attr: attribute(node)?,
            operand: operand(node)?,
            test,
        })
    }

    /// `(attribute, value)` when this node is an `eq` on a top-level field with a literal.
    fn equality(&self) -> Option<(&str, &Value)> {
        match self {
            Self::Test {
                attr,
                test: Test::Eq,
                operand: Operand::Value(value),
            } if !attr.contains('.') && !value.is_nil() => Some((attr.as_str(), value)),
            _ => None,
        }
    }

    fn eval(&self, record: &Value, auth: Option<&Value>) -> Truth {
        match self {
            Self::All(nodes) => {
                nodes
                    .iter()
                    .fold(Truth::True, |acc, n| match (acc, n.eval(record, auth)) {
                        (Truth::False, _) | (_, Truth::False) => Truth::False,
                        (Truth::Unknown, _) | (_, Truth::Unknown) => Truth::Unknown,
                        _ => Truth::True,
                    })
            }
            Self::Any(nodes) => {
                nodes
                    .iter()
                    .fold(Truth::False, |acc, n| match (acc, n.eval(record, auth)) {
                        (Truth::True, _) | (_, Truth::True) => Truth::True,
                        (Truth::Unknown, _) | (_, Truth::Unknown) => Truth::Unknown,
                        _ => Truth::False,
                    })
            }
            Self::Not(child) => child
                .as_ref()
                .map_or(Truth::True, |c| c.eval(record, auth).not()),
            Self::IsNull { attr, null } => Truth::of(field(record, attr).is_none() == *null),
            Self::Test {
                attr,
                test,
                operand,
            } => {
                let Some(value) = field(record, attr) else {
                    return Truth::Unknown;
                };
                let operand = match operand {
                    Operand::Value(v) => Some(v),
                    Operand::Data(path) => field(record, path),
                    Operand::Auth(path) => auth.and_then(|a| field(a, path)),
                };
                match operand {
                    Some(operand) if !operand.is_nil() => test.apply(value, operand),
                    _ => Truth::Unknown,
                }
            }
        }
    }
}

impl Test {
    /// `value` and `operand` are both present and not `nil`.
    fn apply(&self, value: &Value, operand: &Value) -> Truth {
        Truth::of(match self {
            Self::Eq => value == operand,
            Self::Neq => value != operand,
            Self::Order(holds) => order(value, operand).is_some_and(holds),
            Self::Like(pattern) => value.as_str().is_some_and(|s| like(s, pattern)),
            Self::Regex(re) => value.as_str().is_some_and(|s| re.is_match(s)),
            Self::In => match operand.as_array() {
                Some(items) => items.contains(value),
                None => value
                    .as_array()
                    .is_some_and(|items| items.contains(operand)),
            },
            Self::Between => operand.as_array().is_some_and(|pair| {
                let above = order(value, &pair[0]).is_some_and(Ordering::is_ge);
                above && order(value, &pair[1]).is_some_and(Ordering::is_le)
            }),
            Self::ContainsAll => each_operand(operand).all(|o| contains(value, o)),
            Self::ContainsAny => each_operand(operand).any(|o| contains(value, o)),
            Self::Contains => contains(value, operand),
            Self::StartsWith => both_str(value, operand).is_some_and(|(v, o)| v.starts_with(o)),
            Self::EndsWith => both_str(value, operand).is_some_and(|(v, o)| v.ends_with(o)),
        })
    }
}

/// The field an attribute names: the literal top-level field, else the dot path. `nil` is
/// reported as absent.
fn field<'a>(record: &'a Value, attr: &str) -> Option<&'a Value> {
    let found = match record.get(attr) {
        Some(v) => Some(v),
        None if attr.contains('.') => record.get_path(attr),
        None => None,
    };
    found.filter(|v| !v.is_nil())
}

fn attribute(node: &PredicateNode) -> Result<String, PredicateError> {
    node.attribute
        .as_deref()
        .map(str::to_owned)
        .ok_or(PredicateError::MissingAttribute(node.op.as_str()))
}

fn operand(node: &PredicateNode) -> Result<Operand, PredicateError> {
    if let Some(reference) = node.value_ref.as_deref() {
        return match reference.split_once('.') {
            Some(("data", path)) if !path.is_empty() => Ok(Operand::Data(path.to_owned())),
            Some(("auth", path)) if !path.is_empty() => Ok(Operand::Auth(path.to_owned())),
            _ => Err(PredicateError::BadValueRef(reference.to_owned())),
        };
    }
    // `value: null` is a present operand (comparisons with it are unknown); absent is an error.
    match &node.value {
        crate::protocol::wire::Field::Absent => Err(PredicateError::MissingValue(node.op.as_str())),
        crate::protocol::wire::Field::Null => Ok(Operand::Value(Value::Nil)),
        crate::protocol::wire::Field::Value(v) => Ok(Operand::Value(v.clone())),
    }
}

/// The string operand of `like`/`regex`, within [`PATTERN_MAX`].
fn pattern(node: &PredicateNode) -> Result<&str, PredicateError> {
    let op = node.op.as_str();
    let text = node
        .value
        .value()
        .and_then(Value::as_str)
        .ok_or(PredicateError::BadOperand {
            op,
            expected: "a string `value`",
        })?;
    if text.len() > PATTERN_MAX {
        return Err(PredicateError::PatternTooLong { op });
    }
    Ok(text)
}

fn regex(pattern: &str) -> Result<regex::Regex, PredicateError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_MAX)
        .dfa_size_limit(REGEX_SIZE_MAX)
        .build()
        .map_err(|e| PredicateError::BadRegex(e.to_string()))
}

/// Numbers by value, strings in UTF-16 order; `None` for any other pairing.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    if a.is_number() && b.is_number() {
        return Some(a.canonical_cmp(b));
    }
    let (a, b) = both_str(a, b)?;
    Some(crate::js::cmp_utf16(a, b))
}

fn both_str<'a>(a: &'a Value, b: &'a Value) -> Option<(&'a str, &'a str)> {
    Some((a.as_str()?, b.as_str()?))
}

/// The items of an array operand, or the operand itself.
fn each_operand(operand: &Value) -> impl Iterator<Item = &Value> {
    operand
        .as_array()
        .map_or(std::slice::from_ref(operand), |items| items)
        .iter()
}

/// Array membership, or case-insensitive substring.
fn contains(value: &Value, item: &Value) -> bool {
    match value {
        Value::Array(items) => items.contains(item),
        Value::Str(text) => item
            .as_str()
            .is_some_and(|needle| text.to_lowercase().contains(&needle.to_lowercase())),
        _ => false,
    }
}

/// SQL `LIKE` over lower-cased text: `%` any run, `_` one character, anchored at both ends.
/// Greedy with one backtrack point, so it runs in O(text × pattern) at worst.
fn like(text: &str, pattern: &[char]) -> bool {
    let text: Vec<char> = text.to_lowercase().chars().collect();
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('%') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '_' || c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '%')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(p: &str) -> Vec<char> {
        p.chars().collect()
    }

    #[test]
    fn like_matches_whole_values_with_wildcards() {
        assert!(like("Hello World", &chars("hello%")));
        assert!(like("hello", &chars("h_llo")));
        assert!(like("abcabc", &chars("%abc")));
        assert!(like("", &chars("%")));
        assert!(!like("hello", &chars("hell")));
        assert!(!like("hello", &chars("_")));
        assert!(like("a%b", &chars("a%b")));
        // A pathological pattern stays quick: one backtrack point at a time.
        let long = "a".repeat(5000);
        assert!(!like(&long, &chars(&format!("{}b", "%a".repeat(50)))));
    }

    #[test]
    fn strings_order_as_javascript_does() {
        // U+FF61 sorts before U+1F600 in UTF-8 byte order but after it in UTF-16 (a surrogate).
        let (a, b) = (Value::from("\u{FF61}"), Value::from("\u{1F600}"));
        assert_eq!(order(&a, &b), Some(Ordering::Greater));
        assert_eq!(
            order(&Value::Int(3), &Value::Float(3.0)),
            Some(Ordering::Equal)
        );
        assert_eq!(order(&Value::Int(3), &Value::from("3")), None);
    }
}
