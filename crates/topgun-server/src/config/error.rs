//! Why a configuration is refused: each error names the flag, variable, file key or rule at
//! fault (`main` prints it and exits with status 2).

use thiserror::Error;

use crate::security::auth::KeyError;
use crate::security::policy::PolicyError;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(
        "no authentication configured: set JWT_SECRET (an HS256 secret or an RS256 public key \
         in PEM) or, for development only, TOPGUN_NO_AUTH=1"
    )]
    NoAuth,
    /// An environment variable that is not a flag's, with a value it does not take.
    #[error("{name}={value:?}: expected {rule}")]
    BadEnv {
        name: &'static str,
        value: String,
        rule: String,
    },
    #[error("JWT_SECRET: {0}")]
    BadKey(#[from] KeyError),
    #[error("node id {0:?}: {1}")]
    BadNodeId(String, topgun_core::HlcError),
    /// In cluster mode the node id is the member name, which has rules of its own.
    #[error("--node-id / TOPGUN_NODE_ID names this member in cluster mode: {0}")]
    BadMemberName(#[from] topgun_cluster::ids::NameError),
    /// A cluster flag given on the command line without cluster mode on: refused rather than
    /// ignored, as the operator evidently meant a cluster.
    #[error(
        "{flag} is a cluster setting, and cluster mode is off: add --cluster-port (or \
         TOPGUN_CLUSTER_PORT), or drop {flag}"
    )]
    NotClustered { flag: &'static str },
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{field} must be {rule}, got {value}")]
    OutOfRange {
        field: &'static str,
        rule: String,
        value: String,
    },
}
