//! The policy routes (COMPAT §3.2–§3.3): create (201; a posted id replaces), list, delete
//! (204, also when absent) the reference server's role-less policies.
//!
//! A policy change is durable (the reserved map `__topgun_policies`) before it is answered,
//! and in force for the next request on every connection once answered.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use topgun_core::Value;
use topgun_core::protocol::query::PredicateNode;
use topgun_core::protocol::{Limits, decode_standalone, encode_standalone};
use utoipa::ToSchema;

use super::catalogs::{CatalogError, Change, Expect};
use super::{ApiError, field_error, guard, json_body};
use crate::clock::now_ms;
use crate::http::{Host, json_error};
use crate::security::admin_policy::{AdminPolicy, AdminPolicyError};
use crate::security::admin_store::{
    CONFIGURED_KEY, POLICIES_MAP, action_name, effect_name, parse_action, parse_effect, to_value,
};

/// `POST /api/admin/policies`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRequest {
    /// Absent: a new UUID v4. An existing id replaces that policy.
    id: Option<String>,
    /// A glob over dot-separated segments: `*` one segment, `**` any number.
    map_pattern: String,
    /// `read`, `write`, `remove` or `all`.
    action: String,
    /// `allow` or `deny`.
    effect: String,
    /// A predicate tree (PROTOCOL §5.2); wins over `conditionExpr`.
    condition: Option<serde_json::Value>,
    /// An expression such as `auth.id == data.ownerId`, compiled to a predicate tree.
    condition_expr: Option<String>,
}

/// A policy as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResponse {
    id: String,
    map_pattern: String,
    action: &'static str,
    effect: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<serde_json::Value>,
}

impl PolicyResponse {
    fn of(policy: &AdminPolicy) -> Self {
        Self {
            id: policy.id.clone(),
            map_pattern: policy.pattern.as_str().to_owned(),
            action: action_name(policy.action),
            effect: effect_name(policy.effect),
            condition: policy.condition.as_ref().map(condition_json),
        }
    }
}

/// A predicate tree as JSON (its wire form, MsgPack, read back as a value).
fn condition_json(node: &PredicateNode) -> serde_json::Value {
    let bytes = encode_standalone(node);
    decode_standalone::<Value>(&bytes, &Limits::default())
        .map_or(serde_json::Value::Null, |v| value_json(&v))
}

fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::UInt(u) => (*u).into(),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Value::Str(s) => s.as_str().into(),
        Value::Array(items) => items.iter().map(value_json).collect(),
        Value::Map(map) => map
            .iter()
            .map(|(k, v)| (k.to_string(), value_json(v)))
            .collect(),
        other => format!("{other:?}").into(),
    }
}

/// A JSON predicate tree as ours, through its wire form.
fn condition_node(json: &serde_json::Value) -> Result<PredicateNode, String> {
    let value = json_value(json);
    let bytes = encode_standalone(&value);
    decode_standalone(&bytes, &Limits::default()).map_err(|e| e.to_string())
}

fn json_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_u64().map(Value::UInt))
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(0.0))),
        serde_json::Value::String(s) => Value::Str(s.as_str().into()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(json_value).collect()),
        serde_json::Value::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| (k.as_str(), json_value(v)))
                .collect(),
        ),
    }
}

/// Every policy, by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    policies: Vec<PolicyResponse>,
}

/// `POST /api/admin/policies`: 201 with the policy as compiled; a posted id replaces.
#[utoipa::path(
    post, path = "/api/admin/policies", tag = "policies", security(("bearer" = [])),
    request_body = PolicyRequest,
    responses(
        (status = 201, description = "created or replaced, as compiled", body = PolicyResponse),
        (status = 400, description = "a bad field, named in `field`", body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
    )
)]
pub async fn create_policy<H: Host>(
    State(host): State<Arc<H>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(refused) = guard(&*host, &headers) {
        return *refused.0;
    }
    let request: PolicyRequest = match json_body(&body) {
        Ok(request) => request,
        Err(refused) => return *refused.0,
    };
    let policy = match compile(request) {
        Ok(policy) => policy,
        Err(e) => return field_error(StatusCode::BAD_REQUEST, &e.to_string(), e.field_name()),
    };
    let _change = host.policies().changes.lock().await;
    let response = PolicyResponse::of(&policy);
    let catalogs = host.catalogs();
    // The policy first: were the mark written alone, an empty configured store would deny
    // everything.
    let stored = catalogs.put(change(&policy.id, Some(to_value(&policy))));
    if let Err(e) = stored.await {
        return refused(&e);
    }
    let configured = catalogs.put(change(CONFIGURED_KEY, Some(Value::Bool(true))));
    if let Err(e) = configured.await {
        return refused(&e);
    }
    (StatusCode::CREATED, Json(response)).into_response()
}

/// Most admin policies the store holds: every decision on a map weighs all of them.
const POLICIES_MAX: usize = 1_024;
/// Longest policy id, in bytes.
const ID_BYTES_MAX: usize = 128;

fn compile(request: PolicyRequest) -> Result<AdminPolicy, AdminPolicyError> {
    let bad = |field: &'static str, why: String| AdminPolicyError::Field { field, why };
    let action = parse_action(&request.action)
        .ok_or_else(|| bad("action", "must be read, write, remove or all".into()))?;
    let effect = parse_effect(&request.effect)
        .ok_or_else(|| bad("effect", "must be allow or deny".into()))?;
    let condition = match &request.condition {
        Some(json) => Some(condition_node(json).map_err(|why| bad("condition", why))?),
        None => None,
    };
    let id = match request.id {
        Some(id) if id.is_empty() || id.len() > ID_BYTES_MAX || id == CONFIGURED_KEY => {
            return Err(bad(
                "id",
                "must be 1 to 128 bytes, and not __configured".into(),
            ));
        }
        Some(id) => id,
        None => new_id(),
    };
    AdminPolicy::new(
        id,
        &request.map_pattern,
        action,
        effect,
        condition,
        request.condition_expr.as_deref(),
    )
}

/// A random UUID (version 4) for a policy posted without an id. The bytes come from the
/// standard library's randomly keyed hasher, fed the time and a counter: unpredictable
/// enough for an id, and no dependency for sixteen bytes.
fn new_id() -> String {
    use std::fmt::Write as _;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = (now_ms(), NEXT.fetch_add(1, Ordering::Relaxed));
    let mut bytes = [0_u8; 16];
    for half in bytes.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(seed.0);
        hasher.write_u64(seed.1);
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = bytes.iter().fold(String::with_capacity(32), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    });
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// `GET /api/admin/policies`: every policy, by id.
#[utoipa::path(
    get, path = "/api/admin/policies", tag = "policies", security(("bearer" = [])),
    responses(
        (status = 200, body = PolicyList),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
    )
)]
pub async fn list_policies<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    if let Err(refused) = guard(&*host, &headers) {
        return *refused.0;
    }
    let rules = host.policies().get();
    let policies = rules.admin.iter().map(PolicyResponse::of).collect();
    Json(PolicyList { policies }).into_response()
}

/// `DELETE /api/admin/policies/{id}`: 204, also when there was none.
#[utoipa::path(
    delete, path = "/api/admin/policies/{id}", tag = "policies", security(("bearer" = [])),
    params(("id" = String, Path, description = "the policy's id")),
    responses(
        (status = 204, description = "deleted, or there was none"),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
    )
)]
pub async fn delete_policy<H: Host>(
    State(host): State<Arc<H>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = guard(&*host, &headers) {
        return *refused.0;
    }
    if id == CONFIGURED_KEY {
        return StatusCode::NO_CONTENT.into_response();
    }
    let _change = host.policies().changes.lock().await;
    // Asked of the store (in a cluster, of the control log) even when this member does not
    // list it: another member may have created it a moment ago.
    if let Err(e) = host.catalogs().put(change(&id, None)).await {
        return refused(&e);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// A change of one key of the policies' catalog, whatever it holds.
fn change(key: &str, value: Option<Value>) -> Change {
    Change {
        map: POLICIES_MAP,
        key: key.to_owned(),
        value,
        expect: Expect::Any,
        // The configured mark is a key of the catalog too.
        max_entries: POLICIES_MAX + 1,
    }
}

/// The answer to a change not made: a full store is the request's fault (400 on `id`),
/// anything else the store's or the cluster's (503).
fn refused(e: &CatalogError) -> Response {
    match e {
        CatalogError::Full => {
            let why = format!(
                "the store holds the most policies allowed ({POLICIES_MAX}); delete one first"
            );
            field_error(StatusCode::BAD_REQUEST, &why, "id")
        }
        other => json_error(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_4_uuids() {
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(new_id(), id);
    }

    #[test]
    fn a_condition_round_trips_through_json() {
        let node = crate::security::condition::compile("auth.id == data.ownerId").unwrap();
        let json = condition_json(&node);
        assert_eq!(json["op"], "eq");
        assert_eq!(json["attribute"], "ownerId");
        assert_eq!(json["valueRef"], "auth.id");
        assert_eq!(condition_node(&json).unwrap(), node);
    }
}
