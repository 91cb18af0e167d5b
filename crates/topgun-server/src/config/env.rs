//! The environment variables the server reads that are not a flag's (a flag's environment
//! names are on its [`Cli`](super::Cli) field): authentication, the write-ahead log's fsync
//! policy, the journal, the admin plane, HTTP, SQL, the log format (COMPAT.md §1.1) and the
//! cluster's settings that have no flag (CLUSTER.md §14).
//!
//! [`Env`] holds their raw text, read once from the process ([`Env::from_process`]) or
//! built by hand in tests; [`Config::resolve`](super::Config::resolve) parses and checks
//! them, so that every rule is tested without touching the process environment. Each
//! variable's name is written once, in [`names`].

use super::error::ConfigError;
use super::settings::Secret;

/// The variables' names.
pub mod names {
    pub const JWT_SECRET: &str = "JWT_SECRET";
    pub const NO_AUTH: &str = "TOPGUN_NO_AUTH";
    pub const JWT_ISSUER: &str = "TOPGUN_JWT_ISSUER";
    pub const JWT_AUDIENCE: &str = "TOPGUN_JWT_AUDIENCE";
    pub const WAL_FSYNC_POLICY: &str = "TOPGUN_WAL_FSYNC_POLICY";
    pub const JOURNAL_ENABLED: &str = "TOPGUN_JOURNAL_ENABLED";
    pub const JOURNAL_CAPACITY: &str = "TOPGUN_JOURNAL_CAPACITY";
    pub const ADMIN_SUBJECTS: &str = "TOPGUN_ADMIN_SUBJECTS";
    pub const ADMIN_USERNAME: &str = "TOPGUN_ADMIN_USERNAME";
    pub const ADMIN_PASSWORD: &str = "TOPGUN_ADMIN_PASSWORD";
    pub const ADMIN_DIR: &str = "TOPGUN_ADMIN_DIR";
    pub const ALLOW_NO_AUTH_PUBLIC_BIND: &str = "TOPGUN_ALLOW_NO_AUTH_PUBLIC_BIND";
    pub const CORS_ORIGINS: &str = "TOPGUN_CORS_ORIGINS";
    pub const TRUSTED_PROXY: &str = "TOPGUN_TRUSTED_PROXY";
    pub const SQL: &str = "TOPGUN_SQL";
    pub const HTTP_SYNC_ALLOW_ANONYMOUS: &str = "TOPGUN_HTTP_SYNC_ALLOW_ANONYMOUS";
    pub const LOG_FORMAT: &str = "TOPGUN_LOG_FORMAT";
    pub const CLUSTER_WRITE_CONCERN: &str = "TOPGUN_CLUSTER_WRITE_CONCERN";
    pub const MIN_INSYNC_REPLICAS: &str = "TOPGUN_MIN_INSYNC_REPLICAS";
    pub const CLUSTER_SECRET: &str = "TOPGUN_CLUSTER_SECRET";
    pub const CLUSTER_NAME: &str = "TOPGUN_CLUSTER_NAME";

    /// Every name above (the README's table lists each; a test checks it).
    pub const ALL: &[&str] = &[
        JWT_SECRET,
        NO_AUTH,
        JWT_ISSUER,
        JWT_AUDIENCE,
        WAL_FSYNC_POLICY,
        JOURNAL_ENABLED,
        JOURNAL_CAPACITY,
        ADMIN_SUBJECTS,
        ADMIN_USERNAME,
        ADMIN_PASSWORD,
        ADMIN_DIR,
        ALLOW_NO_AUTH_PUBLIC_BIND,
        CORS_ORIGINS,
        TRUSTED_PROXY,
        SQL,
        HTTP_SYNC_ALLOW_ANONYMOUS,
        LOG_FORMAT,
        CLUSTER_WRITE_CONCERN,
        MIN_INSYNC_REPLICAS,
        CLUSTER_SECRET,
        CLUSTER_NAME,
    ];
}

/// Variables of the TopGun server's deployments that mean nothing here: accepted, and named
/// once at start as not used, so that an operator who set one is not left guessing. A name
/// ending in `_` stands for every variable it starts.
pub const TOLERATED: &[&str] = &[
    "TOPGUN_MAX_RAM_MB",
    "TOPGUN_EVICTION_",
    "TOPGUN_WRITEBEHIND_",
    "TOPGUN_OR_DELTA_WAL",
    "TOPGUN_INDEX_PATH",
    "TOPGUN_VECTOR_INDEX_PATH",
    "TOPGUN_EPOCH_WIDTH",
    "TOPGUN_RECLAMATION_MARGIN_EPOCHS",
    "INSECURE_FORWARD_AUTH_ERRORS",
    "RUST_BACKTRACE",
];

/// Whether `name` is one of [`TOLERATED`].
pub fn is_tolerated(name: &str) -> bool {
    TOLERATED
        .iter()
        .any(|tolerated| match tolerated.strip_suffix('_') {
            Some(prefix) => name.len() > tolerated.len() && name.starts_with(prefix),
            None => name == *tolerated,
        })
}

/// The raw values of the variables in [`names`]; unset and empty are both `None`.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub jwt_secret: Option<String>,
    pub no_auth: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub wal_fsync_policy: Option<String>,
    pub journal_enabled: Option<String>,
    pub journal_capacity: Option<String>,
    pub admin_subjects: Option<String>,
    pub admin_username: Option<String>,
    pub admin_password: Option<String>,
    pub admin_dir: Option<String>,
    pub allow_no_auth_public_bind: Option<String>,
    pub cors_origins: Option<String>,
    pub trusted_proxy: Option<String>,
    pub sql: Option<String>,
    pub http_sync_allow_anonymous: Option<String>,
    pub log_format: Option<String>,
    pub cluster_write_concern: Option<String>,
    pub min_insync_replicas: Option<String>,
    /// Kept out of `Debug` output, as the cluster's peers authenticate with it.
    pub cluster_secret: Option<Secret>,
    pub cluster_name: Option<String>,
    /// The [`TOLERATED`] variables that are set, sorted.
    pub tolerated: Vec<String>,
}

impl Env {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        let mut tolerated: Vec<String> = std::env::vars_os()
            .filter(|(_, value)| !value.is_empty())
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| is_tolerated(name))
            .collect();
        tolerated.sort();
        Self {
            jwt_secret: var(names::JWT_SECRET),
            no_auth: var(names::NO_AUTH),
            issuer: var(names::JWT_ISSUER),
            audience: var(names::JWT_AUDIENCE),
            wal_fsync_policy: var(names::WAL_FSYNC_POLICY),
            journal_enabled: var(names::JOURNAL_ENABLED),
            journal_capacity: var(names::JOURNAL_CAPACITY),
            admin_subjects: var(names::ADMIN_SUBJECTS),
            admin_username: var(names::ADMIN_USERNAME),
            admin_password: var(names::ADMIN_PASSWORD),
            admin_dir: var(names::ADMIN_DIR),
            allow_no_auth_public_bind: var(names::ALLOW_NO_AUTH_PUBLIC_BIND),
            cors_origins: var(names::CORS_ORIGINS),
            trusted_proxy: var(names::TRUSTED_PROXY),
            sql: var(names::SQL),
            http_sync_allow_anonymous: var(names::HTTP_SYNC_ALLOW_ANONYMOUS),
            log_format: var(names::LOG_FORMAT),
            cluster_write_concern: var(names::CLUSTER_WRITE_CONCERN),
            min_insync_replicas: var(names::MIN_INSYNC_REPLICAS),
            cluster_secret: var(names::CLUSTER_SECRET).map(Secret::from),
            cluster_name: var(names::CLUSTER_NAME),
            tolerated,
        }
    }
}

/// The values a yes/no variable takes (case does not matter).
const YES: &[&str] = &["1", "true", "yes", "on"];
const NO: &[&str] = &["0", "false", "no", "off"];

/// A yes/no variable: unset is `default`; anything but [`YES`] and [`NO`] is refused,
/// naming the variable (a typo must not turn a setting silently off).
pub fn switch(name: &'static str, value: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let lower = value.trim().to_ascii_lowercase();
    if YES.contains(&lower.as_str()) {
        return Ok(true);
    }
    if NO.contains(&lower.as_str()) {
        return Ok(false);
    }
    Err(ConfigError::BadEnv {
        name,
        value: value.to_owned(),
        rule: "one of 1, true, yes, on, 0, false, no, off".to_owned(),
    })
}

/// A comma-separated list: entries trimmed, empty ones (a trailing comma) dropped.
pub fn list(value: Option<&str>) -> impl Iterator<Item = &str> {
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_and_no_are_spelled_several_ways_and_nothing_else_passes() {
        for yes in ["1", "true", "TRUE", "yes", "On", " 1 "] {
            assert!(switch("X", Some(yes), false).unwrap(), "{yes}");
        }
        for no in ["0", "false", "No", "off"] {
            assert!(!switch("X", Some(no), true).unwrap(), "{no}");
        }
        assert!(switch("X", None, true).unwrap());
        let err = switch("TOPGUN_SQL", Some("enabled"), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TOPGUN_SQL=\"enabled\": expected one of 1, true, yes, on, 0, false, no, off"
        );
    }

    #[test]
    fn tolerated_names_match_exactly_or_by_their_prefix() {
        for name in [
            "TOPGUN_MAX_RAM_MB",
            "TOPGUN_EVICTION_POLICY",
            "TOPGUN_WRITEBEHIND_INTERVAL_MS",
            "RUST_BACKTRACE",
        ] {
            assert!(is_tolerated(name), "{name}");
        }
        for name in ["TOPGUN_EVICTION_", "TOPGUN_MAX_RAM", "TOPGUN_SQL", "PATH"] {
            assert!(!is_tolerated(name), "{name}");
        }
    }

    #[test]
    fn lists_drop_blanks() {
        let entries: Vec<_> = list(Some(" a, b ,,c,")).collect();
        assert_eq!(entries, ["a", "b", "c"]);
        assert_eq!(list(None).count(), 0);
    }
}
