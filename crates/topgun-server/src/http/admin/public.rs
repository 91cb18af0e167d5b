//! The public routes: server status, whether auth is on, and the token exchange this server
//! does not offer. No token needed.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use crate::http::{Host, json_error};

/// `GET /api/status`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    /// Always true: this server needs no setup wizard.
    configured: bool,
    version: &'static str,
    /// Always `normal`.
    mode: &'static str,
    connections: usize,
    uptime_seconds: u64,
    /// Ops applied since start.
    total_operations: u64,
}

/// `GET /api/auth/status`'s answer.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthStatus {
    auth_required: bool,
}

/// `GET /api/status` (public).
#[utoipa::path(get, path = "/api/status", tag = "public", responses((status = 200, body = StatusResponse)))]
pub async fn status<H: Host>(State(host): State<Arc<H>>) -> Response {
    let (connections, uptime_seconds, total_operations) = host.status();
    Json(StatusResponse {
        configured: true,
        version: env!("CARGO_PKG_VERSION"),
        mode: "normal",
        connections,
        uptime_seconds,
        total_operations,
    })
    .into_response()
}

/// `GET /api/auth/status` (public).
#[utoipa::path(get, path = "/api/auth/status", tag = "public", responses((status = 200, body = AuthStatus)))]
pub async fn auth_status<H: Host>(State(host): State<Arc<H>>) -> Response {
    Json(AuthStatus {
        auth_required: host.auth_required(),
    })
    .into_response()
}

/// External token exchange is not offered: tokens come from the operator's issuer, or from
/// `POST /api/auth/login`.
fn not_offered() -> Response {
    json_error(
        StatusCode::NOT_IMPLEMENTED,
        "token exchange is not offered by this server",
    )
}

/// `POST /api/auth/token`: not offered (501).
#[utoipa::path(post, path = "/api/auth/token", tag = "auth", responses((status = 501, body = ApiError)))]
pub async fn token() -> Response {
    not_offered()
}

/// `POST /api/auth/refresh`: not offered (501).
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", responses((status = 501, body = ApiError)))]
pub async fn refresh() -> Response {
    not_offered()
}
