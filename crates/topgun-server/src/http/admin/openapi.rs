//! `GET /api/openapi.json` (public): the `OpenAPI` 3 document of the `/api` routes, generated
//! by `utoipa` from each handler's `#[utoipa::path]` and each body type's `ToSchema`, so it
//! changes with the code. A test checks that every route [`super::routes`] mounts is in it
//! with its methods.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{cluster, indexes, login, maps, policies, public, settings};

/// The document's root: the paths and schemas the handlers declare.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "TopGun server admin API",
        description = "The admin REST API of the TopGun data-grid server (drop-in for TopGun's \
                       reference server). `/api/admin/*` needs a bearer JWT whose roles hold \
                       `admin` or `ADMIN`."
    ),
    paths(
        policies::create_policy,
        policies::list_policies,
        policies::delete_policy,
        maps::maps,
        indexes::create,
        indexes::list,
        indexes::remove,
        indexes::status,
        indexes::vector_list,
        indexes::vector_create,
        indexes::vector_delete,
        indexes::vector_optimize,
        indexes::vector_cancel,
        indexes::vector_status,
        settings::get_settings,
        settings::put_settings,
        cluster::status,
        login::login,
        public::status,
        public::auth_status,
        public::token,
        public::refresh,
        document,
    ),
    components(schemas(super::ApiError)),
    modifiers(&BearerScheme),
    tags(
        (name = "policies", description = "role-less data-plane policies (COMPAT §3.3)"),
        (name = "maps", description = "the maps catalog"),
        (name = "indexes", description = "the index catalog (intent only: results never depend on it)"),
        (name = "settings", description = "the node's settings"),
        (name = "cluster", description = "nodes and partition owners"),
        (name = "public", description = "no token needed"),
        (name = "auth", description = "tokens for the admin plane"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the admin routes name.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document as JSON text; built once (it never changes while the process runs).
pub fn json() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}

/// `GET /api/openapi.json` (public).
#[utoipa::path(
    get, path = "/api/openapi.json", tag = "public",
    responses((status = 200, description = "this document", content_type = "application/json"))
)]
pub async fn document() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json(),
    )
        .into_response()
}
