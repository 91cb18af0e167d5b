//! `GET`/`PUT /api/admin/settings` (COMPAT §3.6): the node's settings, and the three that
//! change while it runs.
//!
//! | field | source | `PUT` |
//! |---|---|---|
//! | `logLevel` | the tracing filter (`RUST_LOG`) | reloads the filter at once (when the binary wired it) |
//! | `gcIntervalMs` | `gc_interval_ms` | the GC task's next wait uses it |
//! | `maxConcurrentOperations` | the bound on data requests waiting in the shards' queues ([`QueueGate`]) | moves the bound at once, from 1 up to the queues' capacity |
//! | the rest | configuration | 400 naming the field: read-only |
//!
//! A `PUT` is checked whole before anything changes: a refused body changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, field_error, guard, json_body};
use crate::data::gate::QueueGate;
use crate::http::{Host, Refused};

/// The GC interval's bounds, as the configuration's (`gc_interval_ms`).
const GC_INTERVAL_MS_MIN: u64 = 10;
const GC_INTERVAL_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// The longest log filter accepted, in bytes.
const LOG_FILTER_BYTES_MAX: usize = 4096;

/// The binary's hold on the log filter: the filter in force and how to replace it.
pub struct LogControl {
    /// std Mutex: never held across an `.await`; held while reloading, so that the filter
    /// shown is the one in force.
    current: Mutex<String>,
    reload: Reload,
}

/// Parses a filter and puts it in force, or says why not (changing nothing).
type Reload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

impl LogControl {
    /// `reload` parses a filter and puts it in force, or says why it cannot; it must change
    /// nothing when it fails.
    pub fn new(
        current: impl Into<String>,
        reload: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            current: Mutex::new(current.into()),
            reload: Box::new(reload),
        }
    }

    pub fn current(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, filter: &str) -> Result<(), String> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.reload)(filter)?;
        filter.clone_into(&mut current);
        Ok(())
    }
}

/// The node's settings: fixed at start, but for the GC interval and the log filter.
#[derive(Debug)]
pub struct Settings {
    pub node_id: String,
    pub host: String,
    pub port: u16,
    pub require_auth: bool,
    /// `value_bytes_max` (0: only the frame bound).
    pub max_value_bytes: usize,
    /// The bound on data requests waiting in the shards' queues.
    gate: Arc<QueueGate>,
    gc_interval_ms: AtomicU64,
    /// Set once by the binary; embedded servers leave the log to their host.
    log: OnceLock<LogControl>,
}

impl Settings {
    pub fn new(
        node_id: String,
        addr: std::net::SocketAddr,
        require_auth: bool,
        max_value_bytes: usize,
        gate: Arc<QueueGate>,
        gc_interval_ms: u64,
    ) -> Self {
        Self {
            node_id,
            host: addr.ip().to_string(),
            port: addr.port(),
            require_auth,
            max_value_bytes,
            gate,
            gc_interval_ms: AtomicU64::new(gc_interval_ms),
            log: OnceLock::new(),
        }
    }

    pub fn gc_interval_ms(&self) -> u64 {
        self.gc_interval_ms.load(Ordering::Relaxed)
    }

    /// Hands the log filter to the admin API; a second call is ignored.
    pub fn set_log_control(&self, control: LogControl) {
        let _ = self.log.set(control);
    }

    fn view(&self) -> SettingsResponse {
        SettingsResponse {
            node_id: self.node_id.clone(),
            default_operation_timeout_ms: 0,
            max_concurrent_operations: self.gate.limit(),
            gc_interval_ms: self.gc_interval_ms(),
            partition_count: topgun_core::hash::PARTITION_COUNT,
            host: self.host.clone(),
            port: self.port,
            require_auth: self.require_auth,
            max_value_bytes: self.max_value_bytes,
            log_level: self.log.get().map(LogControl::current),
        }
    }
}

/// The settings as the API shows them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingsResponse {
    node_id: String,
    /// 0: this server sets no deadline on an `OP_BATCH` without `timeout` (it is answered
    /// once its write concern is met).
    default_operation_timeout_ms: u64,
    /// Data requests that can wait in the shards' queues at once.
    max_concurrent_operations: usize,
    gc_interval_ms: u64,
    /// Always 271.
    partition_count: u32,
    host: String,
    port: u16,
    require_auth: bool,
    /// The largest encoded op value accepted; 0: only the frame bound.
    max_value_bytes: usize,
    /// The log filter in force (`RUST_LOG` syntax); absent when logs are not this server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    log_level: Option<String>,
}

/// `PUT /api/admin/settings`'s body: any of these; every other field is refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
// Read field by field instead (to name a read-only field); this type documents the body.
#[allow(dead_code)]
pub struct SettingsChange {
    /// A `RUST_LOG` filter, such as `info,topgun_server=debug`.
    log_level: Option<String>,
    /// 10 ms to 24 h.
    gc_interval_ms: Option<u64>,
    /// From 1 up to the shards' queues' capacity (shards × 1,024).
    max_concurrent_operations: Option<u64>,
}

/// A checked change, not yet applied.
#[derive(Debug, Default, PartialEq)]
struct Change {
    log_level: Option<String>,
    gc_interval_ms: Option<u64>,
    max_concurrent_operations: Option<usize>,
}

const READ_ONLY: [&str; 7] = [
    "nodeId",
    "defaultOperationTimeoutMs",
    "partitionCount",
    "host",
    "port",
    "requireAuth",
    "maxValueBytes",
];

/// Why a body is refused: the field at fault and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
struct BadField {
    field: String,
    message: &'static str,
}

/// The change a body asks for, or the field at fault.
fn change(body: &serde_json::Map<String, serde_json::Value>) -> Result<Change, BadField> {
    let bad = |message, field: &str| BadField {
        field: field.to_owned(),
        message,
    };
    let mut change = Change::default();
    for (field, value) in body {
        match field.as_str() {
            "logLevel" => match value.as_str() {
                Some(filter)
                    if !filter.trim().is_empty() && filter.len() <= LOG_FILTER_BYTES_MAX =>
                {
                    change.log_level = Some(filter.to_owned());
                }
                _ => return Err(bad("must be a log filter such as \"info\"", field)),
            },
            "gcIntervalMs" => match value.as_u64() {
                Some(ms) if (GC_INTERVAL_MS_MIN..=GC_INTERVAL_MS_MAX).contains(&ms) => {
                    change.gc_interval_ms = Some(ms);
                }
                _ => {
                    return Err(bad(
                        "must be a whole number of ms from 10 to 86400000",
                        field,
                    ));
                }
            },
            "maxConcurrentOperations" => match value.as_u64().map(usize::try_from) {
                Some(Ok(n)) if n >= 1 => change.max_concurrent_operations = Some(n),
                _ => return Err(bad("must be a whole number from 1", field)),
            },
            name if READ_ONLY.contains(&name) => return Err(bad("read-only", field)),
            _ => return Err(bad("not a setting", field)),
        }
    }
    Ok(change)
}

/// `GET /api/admin/settings`.
#[utoipa::path(
    get, path = "/api/admin/settings", tag = "settings", security(("bearer" = [])),
    responses(
        (status = 200, body = SettingsResponse),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
    )
)]
pub async fn get_settings<H: Host>(State(host): State<Arc<H>>, headers: HeaderMap) -> Response {
    match guard(&*host, &headers) {
        Ok(()) => Json(host.settings().view()).into_response(),
        Err(refused) => *refused.0,
    }
}

/// `PUT /api/admin/settings`: applies at once and answers the settings now in force.
#[utoipa::path(
    put, path = "/api/admin/settings", tag = "settings", security(("bearer" = [])),
    request_body = SettingsChange,
    responses(
        (status = 200, body = SettingsResponse),
        (status = 400, description = "a read-only, unknown or bad field, named in `field`", body = ApiError),
        (status = 401, body = ApiError), (status = 403, body = ApiError),
    )
)]
pub async fn put_settings<H: Host>(
    State(host): State<Arc<H>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let applied = (|| {
        guard(&*host, &headers)?;
        let body: serde_json::Map<String, serde_json::Value> = json_body(&body)?;
        let change = change(&body).map_err(|bad| {
            Refused(Box::new(field_error(
                StatusCode::BAD_REQUEST,
                bad.message,
                &bad.field,
            )))
        })?;
        apply(host.settings(), &change)
    })();
    match applied {
        Ok(()) => Json(host.settings().view()).into_response(),
        Err(refused) => *refused.0,
    }
}

/// Applies a checked change: the parts that can still fail first (the operations bound
/// against the queues' capacity, then the log filter), so a refused change changes nothing.
fn apply(settings: &Settings, change: &Change) -> Result<(), Refused> {
    let bad_field = |message: &str, field: &str| {
        Refused(Box::new(field_error(
            StatusCode::BAD_REQUEST,
            message,
            field,
        )))
    };
    let bad = |message: &str| bad_field(message, "logLevel");
    if let Some(n) = change.max_concurrent_operations {
        let ceiling = settings.gate.ceiling();
        if n > ceiling {
            let why =
                format!("at most {ceiling} on this server: the shards' queues hold that many");
            return Err(bad_field(&why, "maxConcurrentOperations"));
        }
    }
    if let Some(filter) = &change.log_level {
        let log = settings
            .log
            .get()
            .ok_or_else(|| bad("this server's log filter cannot be changed while it runs (embedded: the host program owns logging)"))?;
        log.set(filter)
            .map_err(|why| bad(&format!("not a log filter: {why}")))?;
        tracing::info!(filter = %filter, "log filter changed through the admin API");
    }
    if let Some(ms) = change.gc_interval_ms {
        settings.gc_interval_ms.store(ms, Ordering::Relaxed);
    }
    if let Some(n) = change.max_concurrent_operations {
        settings.gate.set_limit(n);
        tracing::info!(
            limit = n,
            "maxConcurrentOperations changed through the admin API"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_change_is_checked_whole_and_names_the_field_at_fault() {
        assert_eq!(
            change(&map(&json!({"logLevel": "debug", "gcIntervalMs": 1000}))).ok(),
            Some(Change {
                log_level: Some("debug".into()),
                gc_interval_ms: Some(1000),
                max_concurrent_operations: None,
            })
        );
        let bound = change(&map(&json!({"maxConcurrentOperations": 10}))).ok();
        assert_eq!(bound.and_then(|c| c.max_concurrent_operations), Some(10));
        for (body, field) in [
            (json!({"gcIntervalMs": 1000, "port": 1}), "port"),
            (json!({"gcIntervalMs": 5}), "gcIntervalMs"),
            (json!({"gcIntervalMs": "60"}), "gcIntervalMs"),
            (json!({"logLevel": ""}), "logLevel"),
            (
                json!({"maxConcurrentOperations": 0}),
                "maxConcurrentOperations",
            ),
            (
                json!({"maxConcurrentOperations": -1}),
                "maxConcurrentOperations",
            ),
            (json!({"colour": "blue"}), "colour"),
        ] {
            let bad = change(&map(&body)).err().unwrap();
            assert_eq!(bad.field, field, "{body}");
        }
    }

    #[test]
    fn a_refused_filter_changes_nothing() {
        let settings = Settings::new(
            "n".into(),
            "127.0.0.1:1".parse().unwrap(),
            false,
            0,
            QueueGate::new(100),
            60_000,
        );
        settings.set_log_control(LogControl::new("info", |f: &str| {
            if f == "bad" { Err("no".into()) } else { Ok(()) }
        }));
        let bad = Change {
            log_level: Some("bad".into()),
            gc_interval_ms: Some(20),
            max_concurrent_operations: Some(5),
        };
        assert!(apply(&settings, &bad).is_err());
        let over = Change {
            max_concurrent_operations: Some(101),
            gc_interval_ms: Some(20),
            ..Change::default()
        };
        assert!(
            apply(&settings, &over).is_err(),
            "over the queues' capacity"
        );
        let now = |s: &Settings| {
            let view = s.view();
            (
                view.log_level,
                s.gc_interval_ms(),
                view.max_concurrent_operations,
            )
        };
        assert_eq!(now(&settings), (Some("info".into()), 60_000, 100));
        let good = Change {
            log_level: Some("debug".into()),
            gc_interval_ms: Some(20),
            max_concurrent_operations: Some(5),
        };
        assert!(apply(&settings, &good).is_ok());
        assert_eq!(now(&settings), (Some("debug".into()), 20, 5));
    }
}
