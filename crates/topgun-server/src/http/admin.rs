//! The admin REST API (COMPAT §3), first part: the policy routes, the maps catalog, and the
//! public status routes. Served on the client port under `/api`.
//!
//! Who may call `/api/admin/*` (§3.1): on a JWT server, a bearer token whose roles hold
//! `admin` (the admin plane's role) or `ADMIN` (ours) — 401 without a valid token, 403
//! without the role; on a server without auth, only when it listens on loopback (or the
//! operator opted in with `TOPGUN_ALLOW_NO_AUTH_PUBLIC_BIND`), else the routes are absent
//! (404). The admin role opens the admin plane only: it bypasses no data-plane policy.
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

use super::{Host, Refused, bearer, json_error, refuse};
use crate::clock::now_ms;
use crate::security::admin_policy::{AdminPolicy, AdminPolicyError};
use crate::security::admin_store::{
    CONFIGURED_KEY, POLICIES_MAP, action_name, effect_name, parse_action, parse_effect, to_value,
};

/// The admin plane's own role, and ours, which opens it too.
const ADMIN_ROLES: [&str; 2] = ["admin", "ADMIN"];

/// May this request use the admin plane? `Err` is the answer that refuses it.
fn guard(host: &impl Host, headers: &HeaderMap) -> Result<(), Refused> {
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

/// A refusal that names the request field at fault: `{code, message, field}`.
fn field_error(status: StatusCode, message: &str, field: &str) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message, "field": field });
    (status, Json(body)).into_response()
}

/// `POST /api/admin/policies`'s body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRequest {
    id: Option<String>,
    map_pattern: String,
    action: String,
    effect: String,
    condition: Option<serde_json::Value>,
    condition_expr: Option<String>,
}

/// A policy as the API shows it.
#[derive(Debug, Serialize)]
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

/// `POST /api/admin/policies`: 201 with the policy as compiled; a posted id replaces.
pub async fn create_policy<H: Host>(
    State(host): State<Arc<H>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(refused) = guard(&*host, &headers) {
        return *refused.0;
    }
    let request: PolicyRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return field_error(
                StatusCode::BAD_REQUEST,
                &format!("invalid body: {e}"),
                "body",
            );
        }
    };
    let policy = match compile(request) {
        Ok(policy) => policy,
        Err(e) => return field_error(StatusCode::BAD_REQUEST, &e.to_string(), e.field_name()),
    };
    let data = host.data();
    let stored = data
        .write_internal(POLICIES_MAP, &policy.id, Some(to_value(&policy)))
        .await;
    let configured = data
        .write_internal(POLICIES_MAP, CONFIGURED_KEY, Some(Value::Bool(true)))
        .await;
    if let Err(why) = stored.and(configured) {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    let response = PolicyResponse::of(&policy);
    host.policies().update(|rules| rules.admin.put(policy));
    (StatusCode::CREATED, Json(response)).into_response()
}

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
        Some(id) if id.is_empty() || id == CONFIGURED_KEY => {
            return Err(bad(
                "id",
                "must be a non-empty name other than __configured".into(),
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
pub async fn list_policies<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    if let Err(refused) = guard(&*host, &headers) {
        return *refused.0;
    }
    let rules = host.policies().get();
    let policies: Vec<PolicyResponse> = rules.admin.iter().map(PolicyResponse::of).collect();
    Json(serde_json::json!({ "policies": policies })).into_response()
}

/// `DELETE /api/admin/policies/{id}`: 204, also when there was none.
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
    if host.policies().get().admin.iter().any(|p| p.id == id) {
        if let Err(why) = host.data().write_internal(POLICIES_MAP, &id, None).await {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, why);
        }
        host.policies().update(|rules| {
            rules.admin.remove(&id);
        });
    }
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /api/admin/maps`: every client map with its keys holding a live value, by name.
pub async fn maps<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    if let Err(refused) = guard(&*host, &headers) {
        return *refused.0;
    }
    match host.data().map_catalog().await {
        Ok(catalog) => {
            let maps: Vec<_> = catalog
                .into_iter()
                .map(|(name, count)| serde_json::json!({ "name": name, "entryCount": count }))
                .collect();
            Json(serde_json::json!({ "maps": maps })).into_response()
        }
        Err(gone) => json_error(StatusCode::SERVICE_UNAVAILABLE, gone.to_string()),
    }
}

/// `GET /api/status` (public).
pub async fn status<H: Host>(State(host): State<Arc<H>>) -> Response {
    let (connections, uptime, operations) = host.status();
    Json(serde_json::json!({
        "configured": true,
        "version": env!("CARGO_PKG_VERSION"),
        "mode": "normal",
        "connections": connections,
        "uptimeSeconds": uptime,
        "totalOperations": operations,
    }))
    .into_response()
}

/// `GET /api/auth/status` (public).
pub async fn auth_status<H: Host>(State(host): State<Arc<H>>) -> Response {
    Json(serde_json::json!({ "authRequired": host.auth_required() })).into_response()
}

/// `POST /api/auth/token` and `/api/auth/refresh`: external token exchange is not offered.
pub async fn not_offered() -> Response {
    json_error(
        StatusCode::NOT_IMPLEMENTED,
        "token exchange is not offered by this server",
    )
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
