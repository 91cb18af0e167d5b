//! The admin REST API (COMPAT §3), served on the client port under `/api`.
//!
//! | module | routes |
//! |---|---|
//! | [`policies`] | `/api/admin/policies` (§3.3) |
//! | [`maps`] | `/api/admin/maps` (§3.4) |
//! | [`indexes`] | `/api/admin/indexes…` (§3.5; the vector routes answer 501) |
//! | [`settings`] | `/api/admin/settings` (§3.6) |
//! | [`cluster`] | `/api/admin/cluster/status` (§3.7) |
//! | [`login`] | `/api/auth/login` (§3.8) |
//! | [`public`] | `/api/status`, `/api/auth/status`, `/api/auth/token|refresh` |
//! | [`openapi`] | `/api/openapi.json`: the document of all of these, from their annotations |
//!
//! Who may call `/api/admin/*` (§3.1): on a JWT server, a bearer token whose roles hold
//! `admin` (the admin plane's role) or `ADMIN` (ours) — 401 without a valid token, 403
//! without the role; on a server without auth, only when it listens on loopback (or the
//! operator opted in with `TOPGUN_ALLOW_NO_AUTH_PUBLIC_BIND`), else the routes are absent
//! (404). The admin role opens the admin plane only: it bypasses no data-plane policy.
//!
//! Invariants: a refused request changes nothing; a change is durable (a reserved map written
//! through the shards) before it is answered, and in force once answered.

pub mod catalogs;
pub mod cluster;
pub mod dashboard;
pub mod indexes;
pub mod login;
pub mod maps;
pub mod openapi;
pub mod policies;
pub mod public;
pub mod settings;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Host, Refused, bearer, refuse};
use crate::clock::now_ms;

/// The admin plane's own role, and ours, which opens it too.
pub(crate) const ADMIN_ROLES: [&str; 2] = ["admin", "ADMIN"];

/// Every route of the API with its handler. The server merges it with its own routes; the
/// `OpenAPI` document lists the same paths (a test holds the two together).
pub fn routes<H: Host>() -> Router<Arc<H>> {
    Router::new()
        .route(
            "/api/admin/policies",
            get(policies::list_policies::<H>).post(policies::create_policy::<H>),
        )
        .route(
            "/api/admin/policies/{id}",
            delete(policies::delete_policy::<H>),
        )
        .route("/api/admin/maps", get(maps::maps::<H>))
        .route(
            "/api/admin/indexes",
            get(indexes::list::<H>).post(indexes::create::<H>),
        )
        .route(
            "/api/admin/indexes/{map}/{attribute}",
            delete(indexes::remove::<H>),
        )
        .route(
            "/api/admin/indexes/{map}/{attribute}/status",
            get(indexes::status::<H>),
        )
        .merge(indexes::vector_routes::<H>())
        .route(
            "/api/admin/settings",
            get(settings::get_settings::<H>).put(settings::put_settings::<H>),
        )
        .route("/api/admin/cluster/status", get(cluster::status::<H>))
        .route("/api/status", get(public::status::<H>))
        .route("/api/auth/status", get(public::auth_status::<H>))
        .route("/api/auth/login", post(login::login::<H>))
        .route("/api/auth/token", post(public::token))
        .route("/api/auth/refresh", post(public::refresh))
        .route("/api/openapi.json", get(openapi::document))
}

/// May this request use the admin plane? `Err` is the answer that refuses it.
pub(crate) fn guard(host: &impl Host, headers: &HeaderMap) -> Result<(), Refused> {
    if !host.auth_required() {
        return if host.admin_plane_without_auth() {
            Ok(())
        } else {
            Err(Refused(Box::new(StatusCode::NOT_FOUND.into_response())))
        };
    }
    let principal = bearer(headers)
        .and_then(|token| host.verify(token, now_ms()).ok())
        .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "missing or invalid Bearer token"))?;
    if principal
        .roles
        .iter()
        .any(|r| ADMIN_ROLES.contains(&r.as_str()))
    {
        Ok(())
    } else {
        Err(refuse(StatusCode::FORBIDDEN, "admin role required"))
    }
}

/// Every error answer of the API: the status again as `code`, what went wrong, and the
/// request field at fault when one is.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    code: u16,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

/// A refusal that names the request field at fault: `{code, message, field}`.
pub(crate) fn field_error(status: StatusCode, message: &str, field: &str) -> Response {
    let body = ApiError {
        code: status.as_u16(),
        message: message.to_owned(),
        field: Some(field.to_owned()),
    };
    (status, Json(body)).into_response()
}

/// A JSON body of type `T`, or the 400 naming `body` that refuses it.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refused> {
    serde_json::from_slice(body).map_err(|e| {
        Refused(Box::new(field_error(
            StatusCode::BAD_REQUEST,
            &format!("invalid body: {e}"),
            "body",
        )))
    })
}
