//! Entry processors and conflict resolvers (PROTOCOL §4.12) run client-supplied code on the
//! server; until a sandbox is chosen they are declined — each request gets the response
//! its client waits for, saying why, rather than silence.

use std::collections::BTreeMap;

use topgun_core::protocol::Message;
use topgun_core::protocol::messages::{
    EntryProcessBatchResponse, EntryProcessKeyResult, EntryProcessResponse, ListResolversResponse,
    ResolverResponse,
};

pub const ENTRY_PROCESSORS_DECLINED: &str =
    "entry processors are not supported by this server: running client code needs a sandbox";
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
