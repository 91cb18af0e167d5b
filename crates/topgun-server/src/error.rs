//! The refusals the server sends: every `ERROR` code, the `ERROR` frame, and the message
//! shapes more than one module sends (a refusal by policy, a shutdown, a request not served).
//! Every `ERROR` frame is built through here, so that a code means one thing wherever it is
//! sent and clients can match messages that read alike.
//!
//! Codes follow HTTP's meanings, as the TopGun server's do; an op refused inside a batch is
//! an `OP_REJECTED` with one of the same codes, not an `ERROR`.

use topgun_core::protocol::Message;
use topgun_core::protocol::messages::ErrorPayload;

use crate::security::policy::{Action, Resource};

/// The codes of `ERROR` and `OP_REJECTED` frames.
pub mod code {
    /// Malformed, or well-formed but invalid (a bad name, an unknown cursor).
    pub const BAD_REQUEST: u32 = 400;
    /// The request needs an authenticated connection, or the token was refused.
    pub const UNAUTHORIZED: u32 = 401;
    /// The connection's roles do not allow the request.
    pub const FORBIDDEN: u32 = 403;
    /// A frame, batch or value over its limit.
    pub const TOO_LARGE: u32 = 413;
    /// A per-connection, per-user or per-address limit, or a rate limit.
    pub const TOO_MANY: u32 = 429;
    /// The server failed; the request may not have been served.
    pub const INTERNAL: u32 = 500;
    /// A request this server does not serve (yet, or by design).
    pub const NOT_IMPLEMENTED: u32 = 501;
    /// Storage or a service is unavailable for now; the request may be sent again.
    pub const UNAVAILABLE: u32 = 503;
}

/// An `ERROR` frame.
pub fn error(code: u32, message: impl Into<String>) -> Message {
    Message::Error(ErrorPayload {
        code,
        message: message.into().into(),
        details: None,
    })
}

/// An `ERROR` frame, boxed as the data path's refusals travel.
pub fn refusal(code: u32, message: impl Into<String>) -> Box<Message> {
    Box::new(error(code, message))
}

/// `ERROR 403`: the connection's roles do not allow `action` on the named resource.
pub fn forbidden(resource: Resource, name: &str, action: Action) -> Box<Message> {
    refusal(code::FORBIDDEN, forbidden_reason(resource, name, action))
}

/// The reason a refusal by policy gives, for `ERROR` and `OP_REJECTED` alike.
pub fn forbidden_reason(resource: Resource, name: &str, action: Action) -> String {
    format!("not allowed: {action} on {resource} {name:?}")
}

/// `ERROR 500`: a shard task stopped, which happens only while the server shuts down.
pub fn shutting_down() -> Box<Message> {
    refusal(
        code::INTERNAL,
        "a partition shard stopped; the server is shutting down",
    )
}

/// `ERROR 501` for a request type this server does not serve.
pub fn not_served(type_name: &str) -> Box<Message> {
    refusal(
        code::NOT_IMPLEMENTED,
        format!("{type_name} is not served by this server yet"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_by_policy_names_action_resource_and_name() {
        let Message::Error(e) = *forbidden(Resource::Lock, "jobs", Action::Write) else {
            panic!("an ERROR frame");
        };
        assert_eq!(e.code, 403);
        assert_eq!(e.message.as_str(), "not allowed: WRITE on lock \"jobs\"");
    }
}
