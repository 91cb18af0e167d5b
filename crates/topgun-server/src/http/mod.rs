//! The server's HTTP surfaces besides the WebSocket and health: `POST /sync`, the TS client's
//! HTTP sync for serverless and edge callers ([`sync`], COMPAT §2), and the admin REST API
//! ([`admin`], COMPAT §3).
//!
//! Owns what HTTP callers share: who the caller is (a bearer token, or the anonymous subject
//! where the server allows one), and errors as `{code, message}` JSON with that status.
//!
//! Invariants:
//! * a request is authenticated before its body is read;
//! * a refused request changes nothing, and the next request is served normally;
//! * every data request runs the WebSocket data path unchanged (admission, interceptors,
//!   policies, rate limits, write concern).
//!
//! Public face: the [`Host`] trait the server implements, and the handlers it mounts.

pub mod admin;
pub mod edge;
pub mod sync;

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use topgun_core::protocol::Limits;

use crate::connection::outbox::Backlog;
use crate::data::plane::DataPlane;
use crate::security::access::Policies;
use crate::security::auth::{AuthError, Principal};

/// What the HTTP handlers need of the server.
pub trait Host: Send + Sync + 'static {
    fn data(&self) -> &DataPlane;
    fn policies(&self) -> &Arc<Policies>;
    /// The budget request-scoped connections count their (never used) outboxes against.
    fn backlog(&self) -> &Arc<Backlog>;
    fn decode_limits(&self) -> &Limits;
    /// Whether tokens are checked at all (JWT mode).
    fn auth_required(&self) -> bool;
    fn verify(&self, token: &str, now_ms: u64) -> Result<Principal, AuthError>;
    /// Whether a token-less `POST /sync` on a JWT server is served as the anonymous subject
    /// (`TOPGUN_HTTP_SYNC_ALLOW_ANONYMOUS`; off by default).
    fn http_sync_allows_anonymous(&self) -> bool;
    /// Without auth: whether the admin plane is served (loopback bind, or
    /// `TOPGUN_ALLOW_NO_AUTH_PUBLIC_BIND`).
    fn admin_plane_without_auth(&self) -> bool;
    /// The static dashboard's directory (`TOPGUN_ADMIN_DIR`), if one is served.
    fn admin_dir(&self) -> Option<&std::path::Path>;
    /// The admin API's durable catalogs: policies and indexes, and where their changes go.
    fn catalogs(&self) -> &admin::catalogs::AdminCatalogs;
    /// The index catalog (`/api/admin/indexes`).
    fn indexes(&self) -> &crate::query::index_catalog::IndexCatalog {
        self.catalogs().indexes()
    }
    /// `(connections, uptime in seconds, ops applied since start)` for `/api/status`.
    fn status(&self) -> (usize, u64, u64);
    /// The settings `/api/admin/settings` shows and changes.
    fn settings(&self) -> &admin::settings::Settings;
    /// This node, for `/api/admin/cluster/status`.
    fn node(&self) -> admin::cluster::NodeView;
    /// The applied control state in cluster mode; `None` on a single node or while forming.
    fn cluster(&self) -> Option<std::sync::Arc<topgun_cluster::state::ControlState>> {
        None
    }
    /// The admin login's user name and password.
    fn credentials(&self) -> admin::login::Credentials<'_>;
    /// An HS256 token for `sub` with `roles`, or `None` when this server cannot sign.
    fn sign(&self, sub: &str, roles: &[&str], exp_secs: u64) -> Option<String>;
    /// Failed authentications per address, shared with the WebSocket's `AUTH`.
    fn auth_failures(&self) -> &crate::security::guard::AuthFailures;
    /// `TOPGUN_TRUSTED_PROXY`: a request's client is the first `X-Forwarded-For` address.
    fn trusted_proxy(&self) -> bool;
    /// The per-address limit of `/api/admin/*` and `/api/auth/*`.
    fn api_rate_limit(&self) -> &edge::ApiRateLimit;
    /// `TOPGUN_CORS_ORIGINS`.
    fn cors(&self) -> &crate::config::CorsOrigins;
}

/// The address per-IP limits count a request against: the peer's, or behind a trusted
/// proxy the left-most `X-Forwarded-For` entry (the client as the first proxy saw it; a
/// value that is not an address falls back to the peer).
pub(crate) fn client_ip(host: &impl Host, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    if !host.trusted_proxy() {
        return peer;
    }
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|first| first.trim().parse().ok())
        .unwrap_or(peer)
}

/// An error answer: `{code, message}` JSON with the status of the same code.
pub(crate) fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message.into() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The code and message of a data-path refusal (an `ERROR`; anything else is an internal
/// error).
pub(crate) fn code_and_message(
    refused: topgun_core::protocol::Message,
) -> (u32, topgun_core::value::CompactString) {
    match refused {
        topgun_core::protocol::Message::Error(e) => (e.code, e.message),
        other => (crate::error::code::INTERNAL, other.type_name().into()),
    }
}

/// `503` with the reason a read of the data could not be answered now: the shards are gone
/// (shutting down), or in a cluster a member did not answer or ownership kept moving.
pub(crate) fn unavailable(refused: topgun_core::protocol::Message) -> Response {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        code_and_message(refused).1.to_string(),
    )
}

/// An error answer on its way up through a request's steps (boxed: a `Response` is large).
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) Box<Response>);

pub(crate) fn refuse(status: StatusCode, message: impl Into<String>) -> Refused {
    Refused(Box::new(json_error(status, message)))
}

/// The bearer token of a request, if it carries one. The TS provider sends `Bearer` with an
/// empty, `undefined` or `null` token when it has none: that is no token.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").unwrap_or(value).trim();
    (!matches!(token, "" | "undefined" | "null" | "Bearer")).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn placeholder_tokens_are_no_token() {
        assert_eq!(bearer(&HeaderMap::new()), None);
        for empty in ["Bearer ", "Bearer undefined", "Bearer null", "Bearer"] {
            assert_eq!(bearer(&with(empty)), None, "{empty:?}");
        }
        assert_eq!(bearer(&with("Bearer abc.def")), Some("abc.def"));
    }
}
