//! One-shot queries (HTTP sync's `queries`, COMPAT §2.2): the query engine over a snapshot of
//! the map's records gathered from every shard (in a cluster, every member), without a live
//! subscription.

use topgun_core::Value;
use topgun_core::live_query::View;
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::LeafRecord;
use topgun_core::protocol::query::Query;

use crate::clock::now_ms;
use crate::data::peers::{Cluster, Local, Read, ReadPart, gather};
use crate::data::shards::Shards;
use crate::security::access::project;
use crate::security::policy::Fields;

/// A page of a one-shot query's rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page {
    /// `(key, value)`, in the query's order, projected.
    pub(crate) rows: Vec<(String, Value)>,
    pub(crate) has_more: bool,
    pub(crate) next_cursor: Option<String>,
}

/// What a one-shot query asks, once admitted.
#[derive(Debug)]
pub(crate) struct Ask<'a> {
    pub(crate) map: &'a str,
    pub(crate) query: &'a Query,
    /// The fields rows show (`None`: all).
    pub(crate) fields: Option<Vec<String>>,
    /// The fields its reader may see: filters and sort see only these.
    pub(crate) allowed: Option<&'a Fields>,
    /// Rows of the window to skip.
    pub(crate) offset: usize,
    /// `{userId, roles}` of the reader, for a predicate reading `auth.*`.
    pub(crate) auth: Option<Value>,
}

/// Runs `ask` over the map's current records — in a `cluster`, every member's. `Err` is
/// the refusal to answer with (shutting down, a member that did not answer).
pub(crate) async fn run(
    shards: &Shards,
    cluster: Option<&Cluster>,
    ask: Ask<'_>,
) -> Result<Result<Page, String>, Box<Message>> {
    let read = Read::LwwRecords {
        map: ask.map.to_owned(),
    };
    let parts = gather(shards, cluster, read, Local::default(), 0).await?;
    let parts = parts.await?;
    let records = parts.into_iter().flat_map(|part| match part {
        ReadPart::LwwRecords(records) => records,
        _ => Vec::new(),
    });
    let mut view = match View::new(ask.query, ask.fields) {
        Ok(view) => view,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let now = now_ms();
    view.resume(ask.query.cursor.as_deref(), now);
    for LeafRecord { key, record } in records {
        if !record.is_visible(now) {
            continue;
        }
        let value = match ask.allowed {
            Some(allowed) => std::borrow::Cow::Owned(project(&record.value, allowed)),
            None => std::borrow::Cow::Borrowed(&record.value),
        };
        view.load(&key, Some(&value), ask.auth.as_ref());
    }
    Ok(Ok(Page {
        rows: view.window().into_iter().skip(ask.offset).collect(),
        has_more: view.has_more(),
        next_cursor: view.next_cursor(now),
    }))
}
