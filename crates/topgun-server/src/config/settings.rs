//! The settings read from the environment for the admin plane, HTTP and SQL (COMPAT.md
//! §2–§4), parsed and checked at start-up so that a bad value stops the server before it
//! serves. SQL is not built yet: its switch changes nothing so far.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::env::{Env, list, names, switch};
use super::error::ConfigError;

/// A value kept out of logs: its `Debug` says only that it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The admin REST API's settings (COMPAT.md §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// JWT subjects that bypass every data-plane policy (`TOPGUN_ADMIN_SUBJECTS`, §3.3): the
    /// bypass is anchored in server configuration, never in a token's role claims.
    pub subjects: BTreeSet<String>,
    /// `POST /api/auth/login`'s user name (`TOPGUN_ADMIN_USERNAME`, default `admin`).
    pub username: String,
    /// Its password (`TOPGUN_ADMIN_PASSWORD`); without one, login answers 500.
    pub password: Option<Secret>,
    /// A static dashboard served under `/admin` (`TOPGUN_ADMIN_DIR`).
    pub dir: Option<PathBuf>,
    /// Mount the admin plane on a no-auth server bound off loopback
    /// (`TOPGUN_ALLOW_NO_AUTH_PUBLIC_BIND`, §3.1).
    pub allow_no_auth_public_bind: bool,
}

/// The login's user name when none is configured (the TopGun server's).
pub const ADMIN_USERNAME_DEFAULT: &str = "admin";

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            subjects: BTreeSet::new(),
            username: ADMIN_USERNAME_DEFAULT.to_owned(),
            password: None,
            dir: None,
            allow_no_auth_public_bind: false,
        }
    }
}

impl AdminSettings {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            subjects: list(env.admin_subjects.as_deref())
                .map(str::to_owned)
                .collect(),
            username: env
                .admin_username
                .clone()
                .unwrap_or_else(|| ADMIN_USERNAME_DEFAULT.to_owned()),
            password: env.admin_password.clone().map(Secret),
            dir: env.admin_dir.as_ref().map(PathBuf::from),
            allow_no_auth_public_bind: switch(
                names::ALLOW_NO_AUTH_PUBLIC_BIND,
                env.allow_no_auth_public_bind.as_deref(),
                false,
            )?,
        })
    }
}

/// Which browser origins may call `/sync` and `/api/*` (`TOPGUN_CORS_ORIGINS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers: browsers on other origins are refused (the default).
    #[default]
    None,
    /// `*`: every origin.
    Any,
    /// Exactly these, each `scheme://host[:port]` in lower case.
    Only(BTreeSet<String>),
}

impl CorsOrigins {
    fn parse(value: Option<&str>) -> Result<Self, ConfigError> {
        let entries: Vec<&str> = list(value).collect();
        if entries.is_empty() {
            return Ok(Self::None);
        }
        if entries.contains(&"*") {
            return match entries.len() {
                1 => Ok(Self::Any),
                _ => Err(bad_origins(
                    value,
                    "`*` alone, or a list of origins without it",
                )),
            };
        }
        let mut origins = BTreeSet::new();
        for entry in entries {
            let origin = origin(entry).ok_or_else(|| {
                bad_origins(
                    value,
                    &format!("origins like https://app.example.com:8443; {entry:?} is not one"),
                )
            })?;
            origins.insert(origin);
        }
        Ok(Self::Only(origins))
    }
}

fn bad_origins(value: Option<&str>, rule: &str) -> ConfigError {
    ConfigError::BadEnv {
        name: names::CORS_ORIGINS,
        value: value.unwrap_or_default().to_owned(),
        rule: rule.to_owned(),
    }
}

/// `entry` as a browser sends it in `Origin` (`http` or `https`, a host, maybe a port, no
/// path; a trailing `/` dropped), or `None` if it is not an origin.
fn origin(entry: &str) -> Option<String> {
    let lower = entry.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    (host_ok && port_ok).then(|| format!("{scheme}://{authority}"))
}

/// HTTP settings (COMPAT.md §2, §3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpSettings {
    pub cors_origins: CorsOrigins,
    /// Per-IP limits read the client's address from `X-Forwarded-For`
    /// (`TOPGUN_TRUSTED_PROXY`): only behind a proxy that sets it, or clients could pick
    /// their own address.
    pub trusted_proxy: bool,
    /// A token-less `POST /sync` on a JWT server is served as the anonymous subject
    /// (`TOPGUN_HTTP_SYNC_ALLOW_ANONYMOUS`, §2.3); off: 401.
    pub sync_allow_anonymous: bool,
}

impl HttpSettings {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            cors_origins: CorsOrigins::parse(env.cors_origins.as_deref())?,
            trusted_proxy: switch(names::TRUSTED_PROXY, env.trusted_proxy.as_deref(), false)?,
            sync_allow_anonymous: switch(
                names::HTTP_SYNC_ALLOW_ANONYMOUS,
                env.http_sync_allow_anonymous.as_deref(),
                false,
            )?,
        })
    }
}

/// How log lines are written to stderr (`TOPGUN_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub(super) fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let Some(value) = env.log_format.as_deref() else {
            return Ok(Self::default());
        };
        // The text formats' other names, as deployments spell them.
        match value.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "text" | "pretty" | "plain" | "compact" | "full" => Ok(Self::Text),
            _ => Err(ConfigError::BadEnv {
                name: names::LOG_FORMAT,
                value: value.to_owned(),
                rule: "json or text".to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_and_anything_else_is_refused() {
        assert_eq!(
            origin("HTTPS://App.Example.com:8443/"),
            Some("https://app.example.com:8443".into())
        );
        assert_eq!(
            origin("http://[::1]:3000"),
            Some("http://[::1]:3000".into())
        );
        assert_eq!(origin("http://localhost"), Some("http://localhost".into()));
        for bad in [
            "app.example.com",
            "ftp://a",
            "https://",
            "https://a/path",
            "https://a:0",
            "https://a:99999",
            "https://a?x",
        ] {
            assert_eq!(origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_secret_stays_out_of_debug_output() {
        let admin = AdminSettings {
            password: Some(Secret("hunter2".into())),
            ..AdminSettings::default()
        };
        assert!(!format!("{admin:?}").contains("hunter2"));
        assert_eq!(admin.password.unwrap().expose(), "hunter2");
    }
}
