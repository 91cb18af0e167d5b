//! `POST /api/auth/login` (COMPAT §3.8): the configured admin's user name and password
//! (`TOPGUN_ADMIN_USERNAME`, default `admin`; `TOPGUN_ADMIN_PASSWORD`) for an HS256 token
//! `{sub, roles: ["admin"], exp: now + 24 h}` signed with `JWT_SECRET`.
//!
//! Both are compared in constant time (no early exit on the first differing byte, and the
//! length is not leaked by timing beyond its own comparison). A failure is counted against
//! the caller's address like a failed `AUTH`; an address over its budget is refused (429)
//! before its password is even compared. 500 when no password is configured or the server
//! cannot sign (an RS256 key, or no JWT at all).

use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, json_body};
use crate::clock::now_ms;
use crate::connection::listener::Peer;
use crate::http::{Host, Refused, client_ip, json_error};

/// How long a login's token lives.
const TOKEN_LIFETIME_SECS: u64 = 24 * 60 * 60;

/// `POST /api/auth/login`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
}

/// A token for the admin plane.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    token: String,
}

/// What login needs of the server.
#[derive(Debug)]
pub struct Credentials<'a> {
    pub username: &'a str,
    pub password: Option<&'a str>,
}

/// Equal bytes, in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

/// `POST /api/auth/login`.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 400, description = "not a login body", body = ApiError),
        (status = 401, description = "invalid credentials", body = ApiError),
        (status = 429, description = "too many failed attempts from this address", body = ApiError),
        (status = 500, description = "no password configured, or the server cannot sign (RS256)", body = ApiError),
    )
)]
pub async fn login<H: Host>(
    State(host): State<Arc<H>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let ip = client_ip(&*host, &headers, peer.addr.ip());
    let signed = (|| {
        let now = now_ms();
        if let Err(wait_ms) = host.auth_failures().admits(ip, now) {
            let why = format!(
                "too many failed authentication attempts from {ip}; retry in {} s",
                wait_ms.div_ceil(1000)
            );
            return Err(refused(StatusCode::TOO_MANY_REQUESTS, &why));
        }
        let request: LoginRequest = json_body(&body)?;
        let credentials = host.credentials();
        let Some(password) = credentials.password else {
            return Err(refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "login is not configured: set TOPGUN_ADMIN_PASSWORD",
            ));
        };
        let user_ok = same(request.username.as_bytes(), credentials.username.as_bytes());
        let password_ok = same(request.password.as_bytes(), password.as_bytes());
        if !(user_ok & password_ok) {
            host.auth_failures().failed(ip, now);
            return Err(refused(StatusCode::UNAUTHORIZED, "invalid credentials"));
        }
        let exp = now / 1000 + TOKEN_LIFETIME_SECS;
        host.sign(credentials.username, &["admin"], exp)
            .ok_or_else(|| {
                refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "this server cannot sign tokens: login needs an HS256 JWT_SECRET",
                )
            })
    })();
    match signed {
        Ok(token) => Json(LoginResponse { token }).into_response(),
        Err(refused) => *refused.0,
    }
}

fn refused(status: StatusCode, message: &str) -> Refused {
    Refused(Box::new(json_error(status, message)))
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn comparison_is_exact() {
        assert!(same(b"hunter2", b"hunter2"));
        assert!(same(b"", b""));
        assert!(!same(b"hunter2", b"hunter3"));
        assert!(!same(b"hunter2", b"hunter"));
        assert!(!same(b"hunter", b"hunter2"));
        assert!(!same(b"a\0", b"a"));
    }
}
