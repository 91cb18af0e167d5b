//! `conditionExpr`: the admin API's condition language (COMPAT §3.3), parsed and compiled to
//! the predicate tree the query engine evaluates (PROTOCOL §5.2), sans I/O.
//!
//! ```text
//! expr     := and ( "||" and )*
//! and      := unary ( "&&" unary )*
//! unary    := "!" unary | "(" expr ")" | compare
//! compare  := ref op operand | ref "in" ref
//! op       := "==" | "!=" | ">" | ">=" | "<" | "<=" | "contains" | "containsAll"
//!           | "containsAny" | "startsWith" | "endsWith"
//! operand  := ref | 'text' | number | true | false | null
//! ref      := ident ( "." ident )*        rooted at `auth` or `data`
//! ```
//!
//! A comparison tests a field of the record (`data.…`) against a literal or the caller's
//! identity (`auth.…`): `data.X op auth.Y` → `{op, attribute: X, valueRef: "auth.Y"}`, `auth.Y
//! op data.X` is mirrored, `data.X op literal` → `{op, attribute: X, value}`, `== null` →
//! `isNull`, `!= null` → `isNotNull`, and an ordering against `null` never holds. An error
//! names what was wrong and the column (1-based) where.

use thiserror::Error;
use topgun_core::Value;
use topgun_core::protocol::enums::PredicateOp;
use topgun_core::protocol::query::PredicateNode;
use topgun_core::protocol::wire::Field;

/// Longest expression, in characters.
pub const SOURCE_CHARS_MAX: usize = 4_096;
/// Deepest nesting of `!` and parentheses: the parser recurses once per level.
const DEPTH_MAX: usize = 64;

/// A `conditionExpr` that does not parse or compile.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{what} at column {column}")]
pub struct ConditionError {
    pub what: String,
    pub column: usize,
}

/// Parses and compiles a condition.
pub fn compile(source: &str) -> Result<PredicateNode, ConditionError> {
    let length = source.chars().count();
    if length > SOURCE_CHARS_MAX {
        let what = format!("the expression is longer than {SOURCE_CHARS_MAX} characters");
        return Err(at(SOURCE_CHARS_MAX + 1, what));
    }
    let tokens = lex(source)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        end: length + 1,
        depth: 0,
    };
    let node = parser.expr()?;
    match parser.peek() {
        None => Ok(node),
        Some(token) => Err(at(token.column, format!("unexpected {}", token.kind))),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ref(Vec<String>),
    Text(String),
    Number(Value),
    Word(&'static str),
    Symbol(&'static str),
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ref(path) => write!(f, "`{}`", path.join(".")),
            Self::Text(text) => write!(f, "'{text}'"),
            Self::Number(n) => write!(f, "number {n:?}"),
            Self::Word(w) | Self::Symbol(w) => write!(f, "`{w}`"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: Kind,
    column: usize,
}

const WORDS: [&str; 9] = [
    "contains",
    "containsAll",
    "containsAny",
    "startsWith",
    "endsWith",
    "in",
    "true",
    "false",
    "null",
];
const SYMBOLS: [&str; 12] = [
    "||", "&&", "==", "!=", ">=", "<=", ">", "<", "!", "(", ")", ".",
];

fn lex(source: &str) -> Result<Vec<Token>, ConditionError> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let column = at + 1;
        let c = chars[at];
        let error = |what: String| ConditionError { what, column };
        if c.is_whitespace() {
            at += 1;
        } else if c == '\'' {
            let end = chars[at + 1..]
                .iter()
                .position(|&c| c == '\'')
                .ok_or_else(|| error("unterminated string".into()))?;
            let text: String = chars[at + 1..at + 1 + end].iter().collect();
            tokens.push(Token {
                kind: Kind::Text(text),
                column,
            });
            at += end + 2;
        } else if c.is_ascii_digit() {
            let (value, len) = number(&chars[at..]).map_err(error)?;
            tokens.push(Token {
                kind: Kind::Number(value),
                column,
            });
            at += len;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let (kind, len) = word_or_ref(&chars[at..]).map_err(error)?;
            tokens.push(Token { kind, column });
            at += len;
        } else {
            let rest: String = chars[at..chars.len().min(at + 2)].iter().collect();
            let symbol = SYMBOLS
                .iter()
                .find(|s| rest.starts_with(**s))
                .ok_or_else(|| error(format!("unexpected character {c:?}")))?;
            tokens.push(Token {
                kind: Kind::Symbol(symbol),
                column,
            });
            at += symbol.len();
        }
    }
    Ok(tokens)
}

/// `digits [ "." digits ]`: an integer or a float, and how many characters it took.
fn number(chars: &[char]) -> Result<(Value, usize), String> {
    let digits = |from: usize| {
        chars[from..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let whole = digits(0);
    let mut len = whole;
    if chars.get(whole) == Some(&'.') {
        let fraction = digits(whole + 1);
        if fraction == 0 {
            return Err("a number needs digits after its `.`".into());
        }
        len = whole + 1 + fraction;
    }
    let text: String = chars[..len].iter().collect();
    let value = if len == whole {
        text.parse::<i64>()
            .map(Value::Int)
            .map_err(|_| format!("number {text} is too large"))?
    } else {
        Value::Float(text.parse().map_err(|_| format!("bad number {text}"))?)
    };
    Ok((value, len))
}

/// A keyword, or a dotted reference, and how many characters it took.
fn word_or_ref(chars: &[char]) -> Result<(Kind, usize), String> {
    let ident = |from: usize| {
        chars[from..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .count()
    };
    let first = ident(0);
    let head: String = chars[..first].iter().collect();
    if let Some(word) = WORDS.iter().find(|w| **w == head) {
        return Ok((Kind::Word(word), first));
    }
    let mut path = vec![head];
    let mut len = first;
    while chars.get(len) == Some(&'.') {
        let next = ident(len + 1);
        if next == 0 || !(chars[len + 1].is_ascii_alphabetic() || chars[len + 1] == '_') {
            return Err(format!("a field name must follow `{}.`", path.join(".")));
        }
        path.push(chars[len + 1..len + 1 + next].iter().collect());
        len += 1 + next;
    }
    Ok((Kind::Ref(path), len))
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// The column just past the source, where "unexpected end" points.
    end: usize,
    /// Levels of `!` and parentheses open at this point.
    depth: usize,
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Data(String),
    Auth(String),
    Literal(Value),
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Result<Token, ConditionError> {
        let token = self
            .peek()
            .cloned()
            .ok_or_else(|| at(self.end, "unexpected end".into()))?;
        self.at += 1;
        Ok(token)
    }

    fn eat(&mut self, symbol: &str) -> bool {
        let found =
            matches!(self.peek(), Some(Token { kind: Kind::Symbol(s), .. }) if *s == symbol);
        if found {
            self.at += 1;
        }
        found
    }

    fn deeper(&mut self, column: usize) -> Result<(), ConditionError> {
        self.depth += 1;
        if self.depth > DEPTH_MAX {
            return Err(at(column, format!("nested deeper than {DEPTH_MAX} levels")));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<PredicateNode, ConditionError> {
        let mut terms = vec![self.and()?];
        while self.eat("||") {
            terms.push(self.and()?);
        }
        Ok(join(PredicateOp::Or, terms))
    }

    fn and(&mut self) -> Result<PredicateNode, ConditionError> {
        let mut terms = vec![self.unary()?];
        while self.eat("&&") {
            terms.push(self.unary()?);
        }
        Ok(join(PredicateOp::And, terms))
    }

    fn unary(&mut self) -> Result<PredicateNode, ConditionError> {
        let column = self.peek().map_or(self.end, |t| t.column);
        if self.eat("!") {
            self.deeper(column)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(PredicateNode::branch(PredicateOp::Not, vec![inner]));
        }
        if self.eat("(") {
            self.deeper(column)?;
            let inner = self.expr()?;
            self.depth -= 1;
            let close = self.next()?;
            if close.kind != Kind::Symbol(")") {
                return Err(at(
                    close.column,
                    format!("expected `)`, found {}", close.kind),
                ));
            }
            return Ok(inner);
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<PredicateNode, ConditionError> {
        let left_token = self.next()?;
        let left = Self::operand(&left_token)?;
        let op_token = self.next()?;
        let op = comparison(&op_token.kind).ok_or_else(|| {
            at(
                op_token.column,
                format!("expected a comparison, found {}", op_token.kind),
            )
        })?;
        let right_token = self.next()?;
        let right = Self::operand(&right_token)?;
        build(op, left, right).map_err(|what| at(op_token.column, what))
    }

    fn operand(token: &Token) -> Result<Operand, ConditionError> {
        match &token.kind {
            Kind::Ref(path) => match path.split_first() {
                Some((root, rest)) if root == "data" && !rest.is_empty() => {
                    Ok(Operand::Data(rest.join(".")))
                }
                Some((root, rest)) if root == "auth" && !rest.is_empty() => {
                    Ok(Operand::Auth(path.join(".")))
                }
                _ => Err(at(
                    token.column,
                    format!("{} must start with `auth.` or `data.`", token.kind),
                )),
            },
            Kind::Text(text) => Ok(Operand::Literal(Value::Str(text.as_str().into()))),
            Kind::Number(n) => Ok(Operand::Literal(n.clone())),
            Kind::Word("true") => Ok(Operand::Literal(Value::Bool(true))),
            Kind::Word("false") => Ok(Operand::Literal(Value::Bool(false))),
            Kind::Word("null") => Ok(Operand::Literal(Value::Nil)),
            other => Err(at(
                token.column,
                format!("expected a reference or a value, found {other}"),
            )),
        }
    }
}

fn at(column: usize, what: String) -> ConditionError {
    ConditionError { what, column }
}

/// `and`/`or` of `terms`, or the one term alone.
fn join(op: PredicateOp, mut terms: Vec<PredicateNode>) -> PredicateNode {
    if terms.len() == 1 {
        return terms.remove(0);
    }
    PredicateNode::branch(op, terms)
}

fn comparison(kind: &Kind) -> Option<PredicateOp> {
    Some(match kind {
        Kind::Symbol("==") => PredicateOp::Eq,
        Kind::Symbol("!=") => PredicateOp::Neq,
        Kind::Symbol(">") => PredicateOp::Gt,
        Kind::Symbol(">=") => PredicateOp::Gte,
        Kind::Symbol("<") => PredicateOp::Lt,
        Kind::Symbol("<=") => PredicateOp::Lte,
        Kind::Word("contains") => PredicateOp::Contains,
        Kind::Word("containsAll") => PredicateOp::ContainsAll,
        Kind::Word("containsAny") => PredicateOp::ContainsAny,
        Kind::Word("startsWith") => PredicateOp::StartsWith,
        Kind::Word("endsWith") => PredicateOp::EndsWith,
        Kind::Word("in") => PredicateOp::In,
        _ => return None,
    })
}

/// The comparison seen from the other side (`a > b` ⇔ `b < a`); `None` for the operators
/// that are not symmetric in that way.
fn mirrored(op: PredicateOp) -> Option<PredicateOp> {
    Some(match op {
        PredicateOp::Eq | PredicateOp::Neq => op,
        PredicateOp::Gt => PredicateOp::Lt,
        PredicateOp::Gte => PredicateOp::Lte,
        PredicateOp::Lt => PredicateOp::Gt,
        PredicateOp::Lte => PredicateOp::Gte,
        _ => return None,
    })
}

fn build(op: PredicateOp, left: Operand, right: Operand) -> Result<PredicateNode, String> {
    match (left, right) {
        (Operand::Data(field), Operand::Auth(path)) => Ok(by_ref(op, &field, path)),
        (Operand::Auth(path), Operand::Data(field)) => {
            let op = mirrored(op).ok_or("put the `data.` field on the left of this comparison")?;
            Ok(by_ref(op, &field, path))
        }
        (Operand::Data(_), Operand::Literal(_)) if op == PredicateOp::In => {
            Err("`in` compares a `data.` field with an `auth.` list".into())
        }
        (Operand::Data(field), Operand::Literal(Value::Nil)) => against_null(op, &field),
        (Operand::Data(field), Operand::Literal(value)) => {
            Ok(PredicateNode::leaf(op, &field, value))
        }
        (Operand::Literal(value), Operand::Data(field)) => {
            let op = mirrored(op).ok_or("put the `data.` field on the left of this comparison")?;
            build(op, Operand::Data(field), Operand::Literal(value))
        }
        (Operand::Data(_), Operand::Data(_)) => Err("two `data.` fields cannot be compared".into()),
        _ => Err("a comparison needs a `data.` field on one side".into()),
    }
}

fn by_ref(op: PredicateOp, field: &str, path: String) -> PredicateNode {
    PredicateNode {
        value: Field::Absent,
        value_ref: Some(path.into()),
        ..PredicateNode::leaf(op, field, Value::Nil)
    }
}

/// `== null` and `!= null` test presence; an ordering against `null` never holds.
fn against_null(op: PredicateOp, field: &str) -> Result<PredicateNode, String> {
    let test = |op| PredicateNode {
        value: Field::Absent,
        ..PredicateNode::leaf(op, field, Value::Nil)
    };
    Ok(match op {
        PredicateOp::Eq => test(PredicateOp::IsNull),
        PredicateOp::Neq => test(PredicateOp::IsNotNull),
        PredicateOp::Gt | PredicateOp::Gte | PredicateOp::Lt | PredicateOp::Lte => {
            PredicateNode::branch(
                PredicateOp::And,
                vec![test(PredicateOp::IsNull), test(PredicateOp::IsNotNull)],
            )
        }
        _ => return Err("only `==`, `!=` and orderings compare with `null`".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use topgun_core::predicate::Filter;
    use topgun_core::protocol::query::Query;

    fn holds(expr: &str, data: &Value, auth: &Value) -> bool {
        let node = compile(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let query = Query {
            predicate: Some(node),
            ..Query::default()
        };
        Filter::new(&query).unwrap().matches(data, Some(auth))
    }

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(entries.iter().cloned().collect())
    }

    #[test]
    fn ownership_and_literals_compile_to_what_the_engine_evaluates() {
        let alice = map(&[
            ("id", Value::from("alice")),
            ("roles", Value::Array(vec![Value::from("dev")])),
        ]);
        let doc = map(&[
            ("ownerId", Value::from("alice")),
            ("size", Value::Int(3)),
            ("tag", Value::from("dev")),
        ]);
        assert!(holds("auth.id == data.ownerId", &doc, &alice));
        assert!(holds("data.ownerId == auth.id", &doc, &alice));
        assert!(holds("data.size > 2 && data.size <= 3", &doc, &alice));
        assert!(
            holds("2 < data.size", &doc, &alice),
            "a literal on the left is mirrored"
        );
        assert!(holds(
            "!(data.size >= 4) || data.missing == 'x'",
            &doc,
            &alice
        ));
        assert!(holds("data.tag in auth.roles", &doc, &alice));
        assert!(holds(
            "data.missing == null && data.size != null",
            &doc,
            &alice
        ));
        assert!(
            !holds("data.size > null", &doc, &alice),
            "ordering against null never holds"
        );
        assert!(holds(
            "data.tag startsWith 'd' && data.tag endsWith 'v'",
            &doc,
            &alice
        ));
        let bob = map(&[("id", Value::from("bob"))]);
        assert!(!holds("auth.id == data.ownerId", &doc, &bob));
        assert!(
            !holds("auth.id == data.ownerId", &Value::Nil, &alice),
            "no record: unknown"
        );
    }

    #[test]
    fn errors_name_what_and_where() {
        let cases = [
            ("auth.id ==", "unexpected end at column 11"),
            ("data.a = 1", "unexpected character '=' at column 8"),
            ("data.a == 'x", "unterminated string at column 11"),
            (
                "owner == 'x'",
                "`owner` must start with `auth.` or `data.` at column 1",
            ),
            (
                "auth.id == 'x'",
                "a comparison needs a `data.` field on one side at column 9",
            ),
            (
                "data.a == data.b",
                "two `data.` fields cannot be compared at column 8",
            ),
            ("(data.a == 1", "unexpected end at column 13"),
            ("data.a == 1 data.b", "unexpected `data.b` at column 13"),
            (
                "auth.id contains data.a",
                "put the `data.` field on the left of this comparison at column 9",
            ),
            (
                "data.a == 1.",
                "a number needs digits after its `.` at column 11",
            ),
            ("data. == 1", "a field name must follow `data.` at column 1"),
            (
                &"(".repeat(100),
                "nested deeper than 64 levels at column 65",
            ),
            (&"!".repeat(65), "nested deeper than 64 levels at column 65"),
            (
                &"a".repeat(5_000),
                "longer than 4096 characters at column 4097",
            ),
        ];
        for (source, expected) in cases {
            let error = compile(source).expect_err(source).to_string();
            assert!(error.contains(expected), "{source:?}: {error}");
        }
    }
}
