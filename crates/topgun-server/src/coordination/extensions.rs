//! Features this server declines, each answered with the response its client waits for,
//! saying why, rather than silence or an `ERROR` the client cannot match to its request:
//! entry processors and conflict resolvers (PROTOCOL §4.12), which run client-supplied code
//! and wait for a sandbox, and SQL while it is off (COMPAT §4.4: the TS client's
//! `client.sql()` fails at once with its typed `FEATURE_DISABLED` error).

use std::collections::BTreeMap;

use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{
    EntryProcessBatchResponse, EntryProcessKeyResult, EntryProcessResponse, ListResolversResponse,
    ResolverResponse, SqlQueryResp,
};

pub const ENTRY_PROCESSORS_DECLINED: &str =
    "entry processors are not supported by this server: running client code needs a sandbox";
/// What a `SQL_QUERY` is told while SQL is off; the TS client matches "SQL is not available".
pub const SQL_DISABLED: &str =
    "SQL is not available: SQL is disabled on this server (set TOPGUN_SQL=1)";
/// The TS client's `SqlError.code` for a feature that is turned off.
pub const SQL_DISABLED_CODE: &str = "FEATURE_DISABLED";
pub const RESOLVERS_DECLINED: &str =
    "conflict resolvers are not supported by this server: running client code needs a sandbox";

/// The answer to an extension request, or the message back if it is none.
pub fn declined(msg: Message) -> Result<Box<Message>, Box<Message>> {
    Ok(Box::new(match msg {
        Message::EntryProcess(r) => Message::EntryProcessResponse(EntryProcessResponse {
            request_id: r.request_id,
            success: false,
            result: None,
            new_value: None,
            error: Some(ENTRY_PROCESSORS_DECLINED.into()),
        }),
        Message::EntryProcessBatch(r) => {
            let failed = || EntryProcessKeyResult {
                success: false,
                result: None,
                new_value: None,
                error: Some(ENTRY_PROCESSORS_DECLINED.into()),
            };
            let results: BTreeMap<String, EntryProcessKeyResult> =
                r.keys.into_iter().map(|key| (key, failed())).collect();
            Message::EntryProcessBatchResponse(EntryProcessBatchResponse {
                request_id: r.request_id,
                results,
            })
        }
        Message::SqlQuery(q) => Message::SqlQueryResp(SqlQueryResp {
            query_id: q.query_id,
            columns: Vec::new(),
            rows: Vec::new(),
            error: Some(SQL_DISABLED.into()),
            code: Some(SQL_DISABLED_CODE.into()),
        }),
        Message::RegisterResolver(r) => Message::RegisterResolverResponse(refused(r.request_id)),
        Message::UnregisterResolver(r) => {
            Message::UnregisterResolverResponse(refused(r.request_id))
        }
        Message::ListResolvers(r) => Message::ListResolversResponse(ListResolversResponse {
            request_id: r.request_id,
            resolvers: Vec::new(),
        }),
        other => return Err(Box::new(other)),
    }))
}

fn refused(request_id: topgun_core::value::CompactString) -> ResolverResponse {
    ResolverResponse {
        request_id,
        success: false,
        error: Some(RESOLVERS_DECLINED.into()),
    }
}
