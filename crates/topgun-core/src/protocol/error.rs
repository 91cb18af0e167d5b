//! Decode errors that name the message type and the field that failed.
//!
//! The path of the value being decoded is a linked list on the stack ([`Path`]); it is only
//! rendered into a string when an error is built, so the happy path pays nothing for it.

use std::fmt;

use thiserror::Error;

/// Where in a frame a value sits: `payload.ops[3].record.timestamp.millis`.
#[derive(Debug, Clone, Copy)]
pub enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl<'p> Path<'p> {
    #[must_use]
    pub fn key(&'p self, key: &'p str) -> Path<'p> {
        Path::Key(self, key)
    }

    #[must_use]
    pub fn index(&'p self, i: usize) -> Path<'p> {
        Path::Index(self, i)
    }

    fn render(&self, out: &mut String) {
        match self {
            Path::Root => {}
            Path::Key(parent, key) => {
                parent.render(out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Index(parent, i) => {
                parent.render(out);
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.render(&mut out);
        f.write_str(&out)
    }
}

/// What was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ErrorKind {
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    FrameTooLarge { size: usize, max: usize },
    #[error("nesting deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("length {len} exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
    #[error("frame ends in the middle of a value")]
    Truncated,
    #[error("{count} bytes follow the message")]
    TrailingBytes { count: usize },
    #[error("byte 0x{0:02x} is not valid MsgPack")]
    ReservedByte(u8),
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("map key is {0}; keys must be strings")]
    NonStringKey(&'static str),
    #[error("MsgPack extension type {0} is not supported")]
    UnsupportedExt(i8),
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    #[error("expected {expected}, found {found}, which does not convert losslessly")]
    OutOfRange {
        expected: &'static str,
        found: String,
    },
    #[error("required field is missing")]
    MissingField,
    #[error("message has no string `type` field")]
    MissingType,
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("unknown value {value:?}; expected one of {expected}")]
    UnknownVariant {
        value: String,
        expected: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A frame that could not be decoded. Nothing was applied.
///
/// Boxed: decoding returns `Result`s on every field, and a pointer-sized error keeps those
/// cheap to move on the happy path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(Box<Details>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Details {
    message_type: Option<&'static str>,
    field: String,
    kind: ErrorKind,
}

impl std::error::Error for DecodeError {}

impl DecodeError {
    pub fn at(path: Path<'_>, kind: ErrorKind) -> Self {
        Self(Box::new(Details {
            message_type: None,
            field: path.to_string(),
            kind,
        }))
    }

    pub fn frame(kind: ErrorKind) -> Self {
        Self::at(Path::Root, kind)
    }

    pub(crate) fn wrong_type(
        path: Path<'_>,
        expected: &'static str,
        found: impl fmt::Display,
    ) -> Self {
        Self::at(
            path,
            ErrorKind::WrongType {
                expected,
                found: found.to_string(),
            },
        )
    }

    #[must_use]
    pub fn in_message(mut self, message_type: &'static str) -> Self {
        self.0.message_type = Some(message_type);
        self
    }

    /// The message type, once the `type` field was read.
    pub fn message_type(&self) -> Option<&'static str> {
        self.0.message_type
    }

    /// Dotted path of the offending field; empty for frame-level errors.
    pub fn field(&self) -> &str {
        &self.0.field
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = self.0.message_type {
            write!(f, "{t}: ")?;
        }
        if !self.0.field.is_empty() {
            write!(f, "field {}: ", self.0.field)?;
        }
        write!(f, "{}", self.0.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_dotted_with_indices() {
        let root = Path::Root;
        let payload = root.key("payload");
        let ops = payload.key("ops");
        let third = ops.index(3);
        let record = third.key("record");
        assert_eq!(record.to_string(), "payload.ops[3].record");
        assert_eq!(root.index(0).to_string(), "[0]");
    }

    #[test]
    fn display_names_type_field_and_problem() {
        let root = Path::Root;
        let err =
            DecodeError::wrong_type(root.key("payload").key("limit"), "an integer", "float 10.5")
                .in_message("QUERY_SUB");
        assert_eq!(
            err.to_string(),
            "QUERY_SUB: field payload.limit: expected an integer, found float 10.5"
        );
    }
}
