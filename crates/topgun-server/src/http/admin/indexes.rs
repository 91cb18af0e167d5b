//! The index routes (COMPAT §3.5): create (201; 409 if the pair has one; 400 for `vector`),
//! list, delete (204; 404 unknown) and the backfill status of an index. The catalog records
//! intent ([`crate::query::index_catalog`]): results never depend on it, so creation answers
//! at once and its status is always done. `entryCount` is the map's keys whose live value has
//! the attribute, counted by the shards now.
//!
//! The vector index routes answer 501 until vector search exists.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::catalogs::{CatalogError, Change, Expect};
use super::{ApiError, field_error, guard, json_body};
use crate::data::ops::RESERVED_PREFIXES;
use crate::http::{Host, Refused, json_error, unavailable};
use crate::query::index_catalog::{
    INDEXES_MAP, INDEXES_MAX, IndexDef, IndexKind, NAME_BYTES_MAX, record_key, to_value,
};

/// `POST /api/admin/indexes`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexRequest {
    map_name: String,
    /// A field name, or a dotted path into nested maps.
    attribute: String,
    /// `hash`, `navigable` or `inverted` (`vector` has its own routes).
    index_type: String,
}

/// An index as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexResponse {
    map_name: String,
    attribute: String,
    index_type: &'static str,
    /// The map's keys whose live value has the attribute.
    entry_count: usize,
}

/// `GET /api/admin/indexes`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct IndexList {
    indexes: Vec<IndexResponse>,
}

/// An index's backfill: always done, as nothing is built.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexStatus {
    map_name: String,
    attribute: String,
    total: usize,
    processed: usize,
    done: bool,
    /// Always `backfill`.
    rebuild_type: &'static str,
}

/// The definition a request asks for, or the 400 naming the field at fault.
fn definition(request: IndexRequest) -> Result<IndexDef, Refused> {
    let bad = |message: &str, field| {
        Refused(Box::new(field_error(
            StatusCode::BAD_REQUEST,
            message,
            field,
        )))
    };
    let name_ok = |name: &str| !name.is_empty() && name.len() <= NAME_BYTES_MAX;
    if !name_ok(&request.map_name) {
        return Err(bad("must be 1 to 256 bytes", "mapName"));
    }
    if RESERVED_PREFIXES
        .iter()
        .any(|prefix| request.map_name.starts_with(prefix))
    {
        return Err(bad("reserved maps cannot be indexed", "mapName"));
    }
    if !name_ok(&request.attribute) {
        return Err(bad("must be 1 to 256 bytes", "attribute"));
    }
    let kind = match (
        IndexKind::parse(&request.index_type),
        request.index_type.as_str(),
    ) {
        (Some(kind), _) => kind,
        (None, "vector") => {
            return Err(bad(
                "vector indexes are made with POST /api/admin/indexes/vector",
                "indexType",
            ));
        }
        (None, _) => return Err(bad("must be hash, navigable or inverted", "indexType")),
    };
    Ok(IndexDef {
        map: request.map_name,
        attribute: request.attribute,
        kind,
    })
}

/// The definition as the API shows it, with the shards' count of its records.
async fn response(host: &impl Host, def: &IndexDef) -> Result<IndexResponse, Refused> {
    let entry_count = host
        .data()
        .attribute_count(&def.map, &def.attribute)
        .await
        .map_err(|refused| Refused(Box::new(unavailable(*refused))))?;
    Ok(IndexResponse {
        map_name: def.map.clone(),
        attribute: def.attribute.clone(),
        index_type: def.kind.name(),
        entry_count,
    })
}

/// `POST /api/admin/indexes`: 201 with the new index; it is durable before it is answered.
#[utoipa::path(
    post, path = "/api/admin/indexes", tag = "indexes", security(("bearer" = [])),
    request_body = IndexRequest,
    responses(
        (status = 201, body = IndexResponse),
        (status = 400, description = "a bad field, named in `field`; `vector`", body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 409, description = "the attribute has an index", body = ApiError),
    )
)]
pub async fn create<H: Host>(
    State(host): State<Arc<H>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let created = async {
        guard(&*host, &headers)?;
        let def = definition(json_body(&body)?)?;
        let catalog = host.indexes();
        let _change = catalog.changes.lock().await;
        let change = Change {
            map: INDEXES_MAP,
            key: record_key(&def.map, &def.attribute),
            value: Some(to_value(&def)),
            // Checked by the store — in a cluster by the control log, as another member may
            // have created it since this one last applied the log.
            expect: Expect::Absent,
            max_entries: INDEXES_MAX,
        };
        host.catalogs().put(change).await.map_err(not_made)?;
        response(&*host, &def).await
    };
    match created.await {
        Ok(index) => (StatusCode::CREATED, Json(index)).into_response(),
        Err(refused) => *refused.0,
    }
}

fn refused(status: StatusCode, message: &str) -> Refused {
    Refused(Box::new(json_error(status, message)))
}

/// The answer to a change not made: its condition (`409` exists, `404` missing), a full
/// catalog (`400`), or the store or the cluster (`503`).
fn not_made(e: CatalogError) -> Refused {
    match e {
        CatalogError::Exists => {
            refused(StatusCode::CONFLICT, "this attribute already has an index")
        }
        CatalogError::Missing => refused(StatusCode::NOT_FOUND, "no such index"),
        CatalogError::Full => refused(
            StatusCode::BAD_REQUEST,
            &format!(
                "the catalog holds the most indexes allowed ({INDEXES_MAX}); delete one first"
            ),
        ),
        CatalogError::Unavailable(why) => refused(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

/// `GET /api/admin/indexes`: every index, by map then attribute.
#[utoipa::path(
    get, path = "/api/admin/indexes", tag = "indexes", security(("bearer" = [])),
    responses(
        (status = 200, body = IndexList),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
    )
)]
pub async fn list<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    let listed = async {
        guard(&*host, &headers)?;
        let mut indexes = Vec::new();
        for def in host.indexes().list() {
            indexes.push(response(&*host, &def).await?);
        }
        Ok::<_, Refused>(IndexList { indexes })
    };
    match listed.await {
        Ok(list) => Json(list).into_response(),
        Err(refused) => *refused.0,
    }
}

/// `DELETE /api/admin/indexes/{map}/{attribute}`: 204, or 404 for no such index.
#[utoipa::path(
    delete, path = "/api/admin/indexes/{map}/{attribute}", tag = "indexes",
    security(("bearer" = [])),
    params(("map" = String, Path), ("attribute" = String, Path)),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, description = "no such index", body = ApiError),
    )
)]
pub async fn remove<H: Host>(
    State(host): State<Arc<H>>,
    Path((map, attribute)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let removed = async {
        guard(&*host, &headers)?;
        let catalog = host.indexes();
        let _change = catalog.changes.lock().await;
        let change = Change {
            map: INDEXES_MAP,
            key: record_key(&map, &attribute),
            value: None,
            expect: Expect::Present,
            max_entries: INDEXES_MAX,
        };
        host.catalogs().put(change).await.map_err(not_made)
    };
    match removed.await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => *refused.0,
    }
}

/// `GET /api/admin/indexes/{map}/{attribute}/status`: the backfill, done at once.
#[utoipa::path(
    get, path = "/api/admin/indexes/{map}/{attribute}/status", tag = "indexes",
    security(("bearer" = [])),
    params(("map" = String, Path), ("attribute" = String, Path)),
    responses(
        (status = 200, body = IndexStatus),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 404, description = "no such index", body = ApiError),
    )
)]
pub async fn status<H: Host>(
    State(host): State<Arc<H>>,
    Path((map, attribute)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let status = async {
        guard(&*host, &headers)?;
        let kind = host
            .indexes()
            .get(&map, &attribute)
            .ok_or_else(|| refused(StatusCode::NOT_FOUND, "no such index"))?;
        let def = IndexDef {
            map,
            attribute,
            kind,
        };
        let index = response(&*host, &def).await?;
        Ok::<_, Refused>(IndexStatus {
            map_name: index.map_name,
            attribute: index.attribute,
            total: index.entry_count,
            processed: index.entry_count,
            done: true,
            rebuild_type: "backfill",
        })
    };
    match status.await {
        Ok(status) => Json(status).into_response(),
        Err(refused) => *refused.0,
    }
}

/// The vector index routes, each answering 501 to an admin (after the same guard).
pub fn vector_routes<H: Host>() -> Router<Arc<H>> {
    Router::new()
        .route(
            "/api/admin/indexes/vector",
            get(vector_list::<H>).post(vector_create::<H>),
        )
        .route(
            "/api/admin/indexes/vector/{map}/{name}",
            delete(vector_delete::<H>),
        )
        .route(
            "/api/admin/indexes/vector/{map}/{name}/optimize",
            post(vector_optimize::<H>),
        )
        .route(
            "/api/admin/indexes/vector/{map}/{name}/optimize/{id}",
            delete(vector_cancel::<H>),
        )
        .route(
            "/api/admin/indexes/vector/{map}/{name}/status",
            get(vector_status::<H>),
        )
}

/// 501 for an admin: vector search is not built yet.
fn vector_not_built(host: &impl Host, headers: &HeaderMap) -> Response {
    match guard(host, headers) {
        Ok(()) => json_error(
            StatusCode::NOT_IMPLEMENTED,
            "vector indexes are not offered yet: this server has no vector search",
        ),
        Err(refused) => *refused.0,
    }
}

/// `GET /api/admin/indexes/vector`: 501 until vector search exists.
#[utoipa::path(get, path = "/api/admin/indexes/vector", tag = "indexes", security(("bearer" = [])),
    responses((status = 501, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn vector_list<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    vector_not_built(&*host, &headers)
}

/// `POST /api/admin/indexes/vector`: 501 until vector search exists.
#[utoipa::path(post, path = "/api/admin/indexes/vector", tag = "indexes", security(("bearer" = [])),
    responses((status = 501, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn vector_create<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    vector_not_built(&*host, &headers)
}

/// `DELETE /api/admin/indexes/vector/{map}/{name}`: 501 until vector search exists.
#[utoipa::path(delete, path = "/api/admin/indexes/vector/{map}/{name}", tag = "indexes",
    security(("bearer" = [])), params(("map" = String, Path), ("name" = String, Path)),
    responses((status = 501, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn vector_delete<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    vector_not_built(&*host, &headers)
}

/// `POST /api/admin/indexes/vector/{map}/{name}/optimize`: 501 until vector search exists.
#[utoipa::path(post, path = "/api/admin/indexes/vector/{map}/{name}/optimize", tag = "indexes",
    security(("bearer" = [])), params(("map" = String, Path), ("name" = String, Path)),
    responses((status = 501, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn vector_optimize<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    vector_not_built(&*host, &headers)
}

/// `DELETE /api/admin/indexes/vector/{map}/{name}/optimize/{id}`: 501 until vector search
/// exists.
#[utoipa::path(delete, path = "/api/admin/indexes/vector/{map}/{name}/optimize/{id}",
    tag = "indexes", security(("bearer" = [])),
    params(("map" = String, Path), ("name" = String, Path), ("id" = String, Path)),
    responses((status = 501, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn vector_cancel<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    vector_not_built(&*host, &headers)
}

/// `GET /api/admin/indexes/vector/{map}/{name}/status`: 501 until vector search exists.
#[utoipa::path(get, path = "/api/admin/indexes/vector/{map}/{name}/status", tag = "indexes",
    security(("bearer" = [])), params(("map" = String, Path), ("name" = String, Path)),
    responses((status = 501, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
pub async fn vector_status<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    vector_not_built(&*host, &headers)
}
