//! The maps catalog (COMPAT §3.4): every client map holding a live key, by name, with its
//! count of keys with a live value (summed over the shards — in a cluster, over every
//! member's owned partitions; reserved maps hidden).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, guard};
use crate::http::{Host, unavailable};

/// One map of the catalog.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MapEntry {
    name: String,
    /// Keys with a live value: LWW records that are not tombstones, OR keys with a record.
    entry_count: usize,
}

/// `GET /api/admin/maps`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct MapList {
    maps: Vec<MapEntry>,
}

/// `GET /api/admin/maps`: every client map with its keys holding a live value, by name.
#[utoipa::path(
    get, path = "/api/admin/maps", tag = "maps", security(("bearer" = [])),
    responses(
        (status = 200, body = MapList),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
        (status = 503, description = "the data cannot be read now: the shards are gone \
            (shutting down), or a cluster member did not answer", body = ApiError),
    )
)]
pub async fn maps<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    if let Err(refused) = guard(&*host, &headers) {
        return *refused.0;
    }
    match host.data().map_catalog().await {
        Ok(catalog) => {
            let maps = catalog
                .into_iter()
                .map(|(name, entry_count)| MapEntry { name, entry_count })
                .collect();
            Json(MapList { maps }).into_response()
        }
        Err(refused) => unavailable(*refused),
    }
}
