//! The admin API's catalogs through the control log (CLUSTER.md §3.1, §8): a change is
//! proposed as a `CatalogPut`, whose condition the state machine checks, and answered once
//! this member has applied it; every member puts each applied catalog revision in force
//! ([`crate::http::admin::catalogs::AdminCatalogs::follow`], called as each applied state
//! is published).

use std::sync::Weak;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use topgun_cluster::{CatalogPut, Catalogs, Command, CommandResult, Refusal};
use topgun_control::ControlPlane;

use super::node::ClusterNode;
use crate::http::admin::catalogs::{CatalogError, Replicated};

/// This member's control log, as the admin catalogs use it.
#[derive(Debug)]
pub struct ControlCatalogs(pub Weak<ClusterNode>);

impl Replicated for ControlCatalogs {
    fn put(&self, put: CatalogPut) -> BoxFuture<'static, Result<Catalogs, CatalogError>> {
        let node = self.0.upgrade();
        async move {
            let unavailable = |why: &str| CatalogError::Unavailable(why.to_owned());
            let node = node.ok_or_else(|| unavailable("the member is stopping"))?;
            let control = node.control().ok_or_else(|| {
                unavailable("this member is not in a cluster yet; try again shortly")
            })?;
            let answer = control.propose(Command::CatalogPut(put)).await;
            match answer.map_err(|e| CatalogError::Unavailable(e.to_string()))? {
                CommandResult::Done | CommandResult::Unchanged => {}
                CommandResult::Refused(refusal) => return Err(refused(refusal)),
                other => {
                    return Err(CatalogError::Unavailable(format!(
                        "the control log answered {other:?}"
                    )));
                }
            }
            // `propose` returns once this member's state shows the command applied.
            let applied = control.state().borrow().clone();
            let cluster = applied.state.cluster();
            let catalogs = cluster.map(|c| c.catalogs().clone());
            catalogs.ok_or_else(|| unavailable("the cluster is not formed yet"))
        }
        .boxed()
    }
}

fn refused(refusal: Refusal) -> CatalogError {
    match refusal {
        Refusal::CatalogCondition { present: true, .. } => CatalogError::Exists,
        Refusal::CatalogCondition { present: false, .. } => CatalogError::Missing,
        Refusal::CatalogFull { .. } => CatalogError::Full,
        other => CatalogError::Unavailable(other.to_string()),
    }
}
