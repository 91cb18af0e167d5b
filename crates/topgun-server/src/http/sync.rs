//! `POST /sync` (COMPAT §2): stateless polling for callers that cannot hold a WebSocket. One
//! MsgPack map in (no `type`), one out: the server's clock, the ack of the request's ops with a
//! result per op, each synced map's delta, one-shot query results, and an error per refused
//! item.
//!
//! A request is served as a connection that lives for the request: its ops go through the
//! WebSocket write path (admission, interceptors, policies, rate limits, write concern), its
//! queries through the query engine with the same access checks. It receives no events: what
//! others wrote reaches it as `deltas`, the LWW records of each `syncMaps` entry that arrived
//! since its last sync (by server arrival time, see `data/deltas.rs`). Its own ops are applied
//! first, so they are in its deltas and in every later request's.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use topgun_core::Value;
use topgun_core::protocol::enums::WriteConcern;
use topgun_core::protocol::http::{
    HttpAck, HttpDelta, HttpError, HttpQuery, HttpQueryResult, HttpSearch, HttpSyncRequest,
    HttpSyncResponse, SyncMapRequest,
};
use topgun_core::protocol::messages::{ClientOp, OpBatch, OpResult};
use topgun_core::protocol::query::Query;
use topgun_core::protocol::{Message, decode_standalone, encode_standalone};
use topgun_core::value::CompactString;

use super::{Host, Refused, bearer, code_and_message, json_error, refuse};
use crate::clock::now_ms;
use crate::connection::fanout::{ConnHandle, Outbound};
use crate::data::conn::ConnState;
use crate::error::code;
use crate::security::access::ConnAccess;
use crate::security::policy::Subject;

/// Most entries in each list of a request but `operations` (which `ops_per_batch_max` bounds).
const LIST_MAX: usize = 64;

/// The content type of a reply: exactly this, without parameters (the TS provider compares).
const MSGPACK: &str = "application/msgpack";

/// Serves one `POST /sync`.
pub async fn handle<H: Host>(
    State(host): State<Arc<H>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let subject = match caller(&*host, &headers) {
        Ok(subject) => subject,
        Err(refused) => return *refused.0,
    };
    let limit = host.decode_limits().max_frame_bytes;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        let why = format!("the body is over max_frame_bytes ({limit} bytes)");
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, why);
    };
    let ops_max = host.data().ops_per_batch_max();
    let request = match decode(&bytes, host.decode_limits(), ops_max) {
        Ok(request) => request,
        Err(refused) => return *refused.0,
    };
    match serve(&*host, subject, request).await {
        Ok(response) => (
            [(header::CONTENT_TYPE, MSGPACK)],
            encode_standalone(&response),
        )
            .into_response(),
        Err(refused) => *refused.0,
    }
}

/// Who the caller is (COMPAT §2.3): the token's subject; without a token, the anonymous
/// subject where the server allows one; else 401 before the body is read.
fn caller(host: &impl Host, headers: &HeaderMap) -> Result<Subject, Refused> {
    if !host.auth_required() {
        return Ok(Subject::default());
    }
    match bearer(headers) {
        Some(token) => match host.verify(token, now_ms()) {
            Ok(principal) => Ok(Subject {
                user_id: Some(principal.user_id),
                roles: principal.roles,
            }),
            Err(e) => Err(refuse(
                StatusCode::UNAUTHORIZED,
                format!("Authentication failed: {e}"),
            )),
        },
        None if host.http_sync_allows_anonymous() => Ok(Subject::default()),
        None => Err(refuse(StatusCode::UNAUTHORIZED, "authentication required")),
    }
}

/// The request, through the bounded decoder; an empty body is an empty request. Lists over
/// their bounds refuse the whole request with 413 before anything in it is served.
fn decode(
    bytes: &Bytes,
    limits: &topgun_core::protocol::Limits,
    ops_max: usize,
) -> Result<Option<HttpSyncRequest>, Refused> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let request: HttpSyncRequest = decode_standalone(bytes, limits).map_err(|e| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("invalid MsgPack body: {e}"),
        )
    })?;
    let lists = [
        request.sync_maps.as_ref().map_or(0, Vec::len),
        request.queries.as_ref().map_or(0, Vec::len),
        request.searches.as_ref().map_or(0, Vec::len),
    ];
    if lists.iter().any(|len| *len > LIST_MAX) {
        let why = format!("syncMaps, queries and searches hold at most {LIST_MAX} entries each");
        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, why));
    }
    let ops = request.operations.as_ref().map_or(0, Vec::len);
    if ops > ops_max {
        let why = format!(
            "the request holds {ops} operations; at most {ops_max} are allowed (ops_per_batch_max)"
        );
        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, why));
    }
    Ok(Some(request))
}

/// Serves a decoded request as a connection that lives for it.
async fn serve(
    host: &impl Host,
    subject: Subject,
    request: Option<HttpSyncRequest>,
) -> Result<HttpSyncResponse, Refused> {
    let data = host.data();
    let now = now_ms();
    let mut response = HttpSyncResponse {
        server_hlc: data.server_time(now),
        ack: None,
        deltas: None,
        query_results: None,
        search_results: None,
        errors: None,
    };
    let Some(request) = request else {
        return Ok(response);
    };
    data.observe_clock(&request.client_hlc, now);
    let access = ConnAccess::new(Arc::clone(host.policies()));
    access.set_subject(Some(subject));
    let (handle, _kicked) = ConnHandle::open(host.backlog(), access);
    let mut conn = data.request_connection(handle);
    let served = serve_items(host, &mut conn, request, &mut response).await;
    // Whatever the outcome, the request's connection ends here, so that nothing it left
    // (the rate limiter's bucket above all) outlives it.
    data.end_request(&mut conn).await;
    served?;
    response.server_hlc = data.server_time(now_ms());
    Ok(response)
}

/// The request's ops, deltas, queries and searches, in that order, into `response`.
async fn serve_items(
    host: &impl Host,
    conn: &mut ConnState,
    request: HttpSyncRequest,
    response: &mut HttpSyncResponse,
) -> Result<(), Refused> {
    let mut errors = Vec::new();
    if let Some(ops) = request.operations.filter(|ops| !ops.is_empty()) {
        response.ack = write(host, conn, ops, &mut errors).await?;
    }
    if let Some(maps) = request.sync_maps {
        response.deltas = Some(deltas(host, conn, maps, &mut errors).await);
    }
    if let Some(queries) = request.queries {
        response.query_results = Some(query(host, conn, queries, &mut errors).await);
    }
    if let Some(searches) = request.searches {
        errors.extend(searches.iter().map(search_not_served));
    }
    response.errors = (!errors.is_empty()).then_some(errors);
    Ok(())
}

/// The request's ops, through the write path as one `OP_BATCH`: the ack with a result per
/// op, and an error per refused op. A log that refuses writes makes the answer 503.
async fn write(
    host: &impl Host,
    conn: &mut ConnState,
    ops: Vec<ClientOp>,
    errors: &mut Vec<HttpError>,
) -> Result<Option<HttpAck>, Refused> {
    let maps: HashMap<CompactString, CompactString> = ops
        .iter()
        .filter_map(|op| Some((op.id.clone()?, op.map_name.clone())))
        .collect();
    let ids: Vec<CompactString> = ops.iter().filter_map(|op| op.id.clone()).collect();
    let batch = Message::OpBatch(OpBatch {
        ops,
        write_concern: None,
        timeout: None,
    });
    let frames = match host.data().dispatch(conn, batch, now_ms()).await {
        Some(Outbound::Later(later)) => later.await,
        Some(Outbound::Message(msg)) => vec![*msg],
        Some(Outbound::Close { .. } | Outbound::Frame(_) | Outbound::Ping) | None => Vec::new(),
    };
    let mut outcome = Outcome::default();
    for frame in frames {
        outcome.read(frame, &maps, errors)?;
    }
    Ok(outcome.ack(&ids))
}

/// What the write path answered, gathered into HTTP sync's ack.
#[derive(Debug, Default)]
struct Outcome {
    refused: HashMap<CompactString, CompactString>,
    acked: Option<(CompactString, WriteConcern)>,
}

impl Outcome {
    fn read(
        &mut self,
        frame: Message,
        maps: &HashMap<CompactString, CompactString>,
        errors: &mut Vec<HttpError>,
    ) -> Result<(), Refused> {
        match frame {
            Message::OpRejected(r) => {
                let map = maps.get(&r.op_id).cloned();
                errors.push(HttpError {
                    code: r.code.unwrap_or(code::BAD_REQUEST),
                    message: r.reason.clone(),
                    context: Some(context("opId", &r.op_id, map)),
                });
                self.refused.insert(r.op_id, r.reason);
            }
            Message::OpAck(ack) => {
                self.acked = Some((
                    ack.last_id,
                    ack.achieved_level.unwrap_or(WriteConcern::Applied),
                ));
            }
            Message::Error(e) if e.code == code::UNAVAILABLE => {
                return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, e.message.as_str()));
            }
            // The ERRORs summing up refused ops repeat what `errors` already lists per op.
            Message::Error(e) if e.details.is_some() || e.code == code::TOO_MANY => {}
            Message::Error(e) => errors.push(HttpError {
                code: e.code,
                message: e.message,
                context: None,
            }),
            _ => {}
        }
        Ok(())
    }

    /// `{lastId, results}` by the WebSocket rules: one result per op up to and including
    /// the acknowledged one; `None` when nothing was acknowledged.
    fn ack(self, ids: &[CompactString]) -> Option<HttpAck> {
        let (last_id, level) = self.acked?;
        let covered = ids
            .iter()
            .position(|id| *id == last_id)
            .map_or(ids.len(), |at| at + 1);
        let results = ids[..covered]
            .iter()
            .map(|id| match self.refused.get(id) {
                Some(why) => OpResult {
                    op_id: id.clone(),
                    success: false,
                    achieved_level: WriteConcern::FireAndForget,
                    error: Some(why.clone()),
                },
                None => OpResult {
                    op_id: id.clone(),
                    success: true,
                    achieved_level: level,
                    error: None,
                },
            })
            .collect();
        Some(HttpAck {
            last_id,
            results: Some(results),
        })
    }
}

/// The request's one-shot queries: rows as `{key, value}`; a refused query is an error.
async fn query(
    host: &impl Host,
    conn: &ConnState,
    queries: Vec<HttpQuery>,
    errors: &mut Vec<HttpError>,
) -> Vec<HttpQueryResult> {
    let mut results = Vec::new();
    for q in queries {
        let where_ = match q.filter.clone() {
            None | Some(Value::Nil) => None,
            Some(Value::Map(fields)) => Some(fields),
            Some(_) => {
                let map = Some(q.map_name.clone());
                errors.push(HttpError {
                    code: code::BAD_REQUEST,
                    message: "filter must be a map of field → value".into(),
                    context: Some(context("queryId", &q.query_id, map)),
                });
                continue;
            }
        };
        let query = Query {
            where_,
            limit: q.limit,
            cursor: q.cursor.clone(),
            ..Query::default()
        };
        let offset = q
            .offset
            .map_or(0, |o| usize::try_from(o).unwrap_or(usize::MAX));
        let answer = host
            .data()
            .query_once(conn, &q.query_id, &q.map_name, &query, offset)
            .await;
        match answer {
            Ok(page) => results.push(HttpQueryResult {
                query_id: q.query_id,
                results: page.rows.into_iter().map(row).collect(),
                has_more: page.has_more.then_some(true),
                next_cursor: page.next_cursor.map(Into::into),
            }),
            Err(refused) => {
                let (code, message) = code_and_message(*refused);
                let map = Some(q.map_name.clone());
                errors.push(HttpError {
                    code,
                    message,
                    context: Some(context("queryId", &q.query_id, map)),
                });
            }
        }
    }
    results
}

/// The request's `syncMaps`: each map's delta since its `lastSyncTimestamp` (an empty node id,
/// as the TS provider sends first, is accepted and means "from `millis`"); a map the caller
/// may not read is an error with its name.
async fn deltas(
    host: &impl Host,
    conn: &ConnState,
    maps: Vec<SyncMapRequest>,
    errors: &mut Vec<HttpError>,
) -> Vec<HttpDelta> {
    let mut out = Vec::with_capacity(maps.len());
    for m in maps {
        let last = &m.last_sync_timestamp;
        let delta = host.data().lww_delta(conn, &m.map_name, last, now_ms());
        match delta.await {
            Ok(delta) => out.push(delta),
            Err(refused) => {
                let (code, message) = code_and_message(*refused);
                let context =
                    Value::Map([("mapName", Value::Str(m.map_name))].into_iter().collect());
                errors.push(HttpError {
                    code,
                    message,
                    context: Some(context),
                });
            }
        }
    }
    out
}

/// A row as the TS client's `QUERY_RESP` handling reads it: `{key, value}`.
fn row((key, value): (String, Value)) -> Value {
    Value::Map(
        [("key", Value::Str(key.into())), ("value", value)]
            .into_iter()
            .collect(),
    )
}

/// Search is a later issue: each search is refused with 501 rather than answered empty.
fn search_not_served(search: &HttpSearch) -> HttpError {
    HttpError {
        code: code::NOT_IMPLEMENTED,
        message: "search is not served by this server yet".into(),
        context: Some(context(
            "searchId",
            &search.search_id,
            Some(search.map_name.clone()),
        )),
    }
}

/// An error's `context`: the item's id under `id_key`, and its map.
fn context(id_key: &str, id: &CompactString, map: Option<CompactString>) -> Value {
    let mut entries = vec![(id_key, Value::Str(id.clone()))];
    if let Some(map) = map {
        entries.push(("mapName", Value::Str(map)));
    }
    Value::Map(entries.into_iter().collect())
}
