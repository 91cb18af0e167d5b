//! One test (or more) per row of COMPAT.md §1.1: each environment variable that is not a
//! flag's, accepted, refused naming the variable, and its precedence where the table gives one.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

const SECRET: &str = "config-tests-secret-0123456789abcdef";

/// No-auth, plus `set` applied.
fn env(set: impl FnOnce(&mut Env)) -> Env {
    let mut env = Env {
        no_auth: Some("1".into()),
        ..Env::default()
    };
    set(&mut env);
    env
}

fn resolve(env: &Env) -> Result<Config, ConfigError> {
    Config::resolve(&Cli::default(), None, env)
}

/// The message of the error `env` resolves to.
fn refusal(env: &Env) -> String {
    resolve(env).map(|_| ()).unwrap_err().to_string()
}

#[test]
fn no_auth_wins_over_a_jwt_secret_with_a_warning() {
    let both = Env {
        jwt_secret: Some(SECRET.into()),
        no_auth: Some("true".into()),
        ..Env::default()
    };
    let c = resolve(&both).unwrap();
    assert!(matches!(c.auth, AuthMode::Disabled));
    assert_eq!(
        c.bind.ip().to_string(),
        "127.0.0.1",
        "the no-auth default bind"
    );
    assert_eq!(
        c.warnings,
        [
            "TOPGUN_NO_AUTH and JWT_SECRET are both set: authentication is OFF (TOPGUN_NO_AUTH \
          wins); JWT_SECRET is ignored"
        ]
    );
    // The ignored secret is not checked either.
    let short = Env {
        jwt_secret: Some("short".into()),
        ..both
    };
    assert!(resolve(&short).is_ok());
    // Off with a secret: JWT, no warning.
    let jwt = Env {
        jwt_secret: Some(SECRET.into()),
        no_auth: Some("false".into()),
        ..Env::default()
    };
    let c = resolve(&jwt).unwrap();
    assert!(matches!(c.auth, AuthMode::Jwt(_)) && c.warnings.is_empty());
}

#[test]
fn jwt_issuer_and_audience_are_read_with_the_secret() {
    let env = Env {
        jwt_secret: Some(SECRET.into()),
        issuer: Some("https://issuer".into()),
        audience: Some("topgun".into()),
        ..Env::default()
    };
    assert!(matches!(resolve(&env).unwrap().auth, AuthMode::Jwt(_)));
}

#[test]
fn storage_backend_null_is_memory() {
    let cli = Cli {
        storage_backend: Some("null".into()),
        ..Cli::default()
    };
    let c = Config::resolve(&cli, None, &env(|_| {})).unwrap();
    assert_eq!(c.storage.backend, Backend::Memory);
    let c = Config::resolve(
        &Cli::default(),
        Some("storage_backend = \"null\"\n"),
        &env(|_| {}),
    )
    .unwrap();
    assert_eq!(c.storage.backend, Backend::Memory);
}

#[test]
fn the_store_file_and_the_log_directory_default_into_the_data_directory() {
    let c = resolve(&env(|_| {})).unwrap();
    assert_eq!(
        c.storage.paths(),
        StorePaths {
            store: PathBuf::from("topgun-data/store.redb"),
            wal: PathBuf::from("topgun-data/wal"),
        }
    );
    let cli = Cli::try_parse_from([
        "topgun-server",
        "--data-dir=d",
        "--redb-path=/elsewhere/s.redb",
        "--wal-dir=/logs",
    ])
    .unwrap();
    let c = Config::resolve(&cli, None, &env(|_| {})).unwrap();
    assert_eq!(
        c.storage.paths(),
        StorePaths {
            store: PathBuf::from("/elsewhere/s.redb"),
            wal: PathBuf::from("/logs"),
        }
    );
    assert_eq!(
        c.storage.paths(),
        cli.store_paths(),
        "restore finds the same"
    );
    // Each one alone: the other stays in the data directory.
    let cli = Cli::try_parse_from(["topgun-server", "--data-dir=d", "--wal-dir=/logs"]).unwrap();
    assert_eq!(cli.store_paths().store, PathBuf::from("d/store.redb"));
    // Global: `restore` takes them after its name.
    let cli = Cli::try_parse_from(["topgun-server", "restore", "f", "--redb-path=/s.redb"]);
    assert_eq!(cli.unwrap().store_paths().store, PathBuf::from("/s.redb"));
}

/// `(durability, timed sync)` as resolved from the policy, a `--durability` and a file.
fn durability_of(
    policy: Option<&str>,
    flag: Option<&str>,
    file: Option<&str>,
) -> Result<(Durability, Option<Duration>), String> {
    let cli = Cli {
        durability: flag.map(Into::into),
        ..Cli::default()
    };
    let file = file.map(|d| format!("durability = \"{d}\"\n"));
    let env = env(|e| e.wal_fsync_policy = policy.map(Into::into));
    Config::resolve(&cli, file.as_deref(), &env)
        .map(|c| (c.storage.durability, c.storage.wal_sync_interval))
        .map_err(|e| e.to_string())
}

#[test]
fn the_fsync_policy_maps_onto_durability_and_the_timed_sync() {
    let batched = Some(Duration::from_millis(10));
    assert_eq!(
        durability_of(None, None, None),
        Ok((Durability::Fsync, None))
    );
    assert_eq!(
        durability_of(Some("per_op"), None, None),
        Ok((Durability::Fsync, None))
    );
    assert_eq!(
        durability_of(Some("batched"), None, None),
        Ok((Durability::Os, batched))
    );
    assert_eq!(
        durability_of(Some("BATCHED"), None, None),
        Ok((Durability::Os, batched)),
        "case does not matter"
    );
    assert_eq!(
        durability_of(Some("none"), None, None),
        Ok((Durability::Os, None))
    );
    assert_eq!(
        durability_of(Some("always"), None, None),
        Err("TOPGUN_WAL_FSYNC_POLICY must be per_op, batched or none, got always".into())
    );
}

#[test]
fn topgun_durability_wins_over_the_fsync_policy_which_wins_over_the_file() {
    assert_eq!(
        durability_of(Some("batched"), Some("fsync"), None),
        Ok((Durability::Fsync, None))
    );
    assert_eq!(
        durability_of(Some("per_op"), Some("memory"), None),
        Ok((Durability::Memory, None))
    );
    assert_eq!(
        durability_of(Some("batched"), None, Some("fsync")),
        Ok((Durability::Os, Some(Duration::from_millis(10))))
    );
    assert_eq!(
        durability_of(None, None, Some("os")),
        Ok((Durability::Os, None))
    );
    // A bad policy is refused even where it would lose.
    let err = durability_of(Some("sometimes"), Some("fsync"), None).unwrap_err();
    assert!(err.starts_with("TOPGUN_WAL_FSYNC_POLICY"), "{err}");
}

#[test]
fn admin_settings_are_read_and_default_sensibly() {
    let c = resolve(&env(|_| {})).unwrap();
    assert_eq!(c.admin, AdminSettings::default());
    assert_eq!(c.admin.username, "admin");
    let c = resolve(&env(|e| {
        e.admin_subjects = Some(" alice, bob,,alice ".into());
        e.admin_username = Some("root".into());
        e.admin_password = Some("hunter2".into());
        e.admin_dir = Some("/srv/admin".into());
        e.allow_no_auth_public_bind = Some("1".into());
    }))
    .unwrap();
    let subjects: BTreeSet<String> = ["alice", "bob"].map(String::from).into();
    assert_eq!(c.admin.subjects, subjects);
    assert_eq!(c.admin.username, "root");
    assert_eq!(
        c.admin.password.as_ref().map(Secret::expose),
        Some("hunter2")
    );
    assert_eq!(c.admin.dir, Some(PathBuf::from("/srv/admin")));
    assert!(c.admin.allow_no_auth_public_bind);
    assert!(
        !format!("{c:?}").contains("hunter2"),
        "the password stays out of logs"
    );
    let err = refusal(&env(|e| e.allow_no_auth_public_bind = Some("maybe".into())));
    assert!(
        err.starts_with("TOPGUN_ALLOW_NO_AUTH_PUBLIC_BIND=\"maybe\""),
        "{err}"
    );
}

#[test]
fn cors_origins_and_the_trusted_proxy_are_read_and_checked() {
    let c = resolve(&env(|_| {})).unwrap();
    assert_eq!(c.http, HttpSettings::default());
    assert_eq!(c.http.cors_origins, CorsOrigins::None);
    let c = resolve(&env(|e| {
        e.cors_origins = Some("https://a.example, http://localhost:5173/".into());
        e.trusted_proxy = Some("1".into());
    }))
    .unwrap();
    let origins = ["https://a.example", "http://localhost:5173"].map(String::from);
    assert_eq!(c.http.cors_origins, CorsOrigins::Only(origins.into()));
    assert!(c.http.trusted_proxy);
    let any = resolve(&env(|e| e.cors_origins = Some("*".into()))).unwrap();
    assert_eq!(any.http.cors_origins, CorsOrigins::Any);
    let err = refusal(&env(|e| {
        e.cors_origins = Some("https://a, a.example".into());
    }));
    assert!(
        err.starts_with("TOPGUN_CORS_ORIGINS=\"https://a, a.example\""),
        "{err}"
    );
    assert!(err.contains("\"a.example\" is not one"), "{err}");
    let err = refusal(&env(|e| e.cors_origins = Some("*, https://a".into())));
    assert!(err.starts_with("TOPGUN_CORS_ORIGINS"), "{err}");
    let err = refusal(&env(|e| e.trusted_proxy = Some("2".into())));
    assert!(err.starts_with("TOPGUN_TRUSTED_PROXY=\"2\""), "{err}");
}

#[test]
fn sql_and_anonymous_http_sync_are_off_unless_turned_on() {
    let c = resolve(&env(|_| {})).unwrap();
    assert!(!c.sql && !c.http.sync_allow_anonymous);
    let c = resolve(&env(|e| {
        e.sql = Some("1".into());
        e.http_sync_allow_anonymous = Some("true".into());
    }))
    .unwrap();
    assert!(c.sql && c.http.sync_allow_anonymous);
    let err = refusal(&env(|e| e.sql = Some("enable".into())));
    assert!(err.starts_with("TOPGUN_SQL=\"enable\""), "{err}");
    let err = refusal(&env(|e| e.http_sync_allow_anonymous = Some("x".into())));
    assert!(err.starts_with("TOPGUN_HTTP_SYNC_ALLOW_ANONYMOUS"), "{err}");
}

fn journal_capacity(env: &Env, file: Option<&str>) -> Result<usize, String> {
    Config::resolve(&Cli::default(), file, env)
        .map(|c| c.storage.journal.capacity)
        .map_err(|e| e.to_string())
}

#[test]
fn the_journal_is_sized_or_turned_off_from_the_environment() {
    let default = crate::journal::Retention::default().capacity;
    assert_eq!(journal_capacity(&env(|_| {}), None), Ok(default));
    for off in ["false", "0", "no", "off", "OFF"] {
        let e = env(|e| e.journal_enabled = Some(off.into()));
        assert_eq!(journal_capacity(&e, None), Ok(0), "{off}");
    }
    let on = env(|e| e.journal_enabled = Some("true".into()));
    assert_eq!(journal_capacity(&on, None), Ok(default));
    let sized = env(|e| e.journal_capacity = Some("500".into()));
    assert_eq!(journal_capacity(&sized, None), Ok(500));
    // The variable wins over the file; off wins over any capacity.
    let file = Some("journal_capacity = 9\n");
    assert_eq!(journal_capacity(&sized, file), Ok(500));
    let off_and_sized = env(|e| {
        e.journal_capacity = Some("500".into());
        e.journal_enabled = Some("off".into());
    });
    assert_eq!(journal_capacity(&off_and_sized, file), Ok(0));
    assert_eq!(
        journal_capacity(&env(|e| e.journal_capacity = Some("10000001".into())), None),
        Err("TOPGUN_JOURNAL_CAPACITY must be 0 (off), or 1..=10000000, got 10000001".into())
    );
    let err = journal_capacity(&env(|e| e.journal_capacity = Some("lots".into())), None);
    assert!(
        err.unwrap_err()
            .starts_with("TOPGUN_JOURNAL_CAPACITY=\"lots\"")
    );
    let err = journal_capacity(&env(|e| e.journal_enabled = Some("nah".into())), None);
    assert!(
        err.unwrap_err()
            .starts_with("TOPGUN_JOURNAL_ENABLED=\"nah\"")
    );
}

#[test]
fn the_log_format_is_text_or_json() {
    assert_eq!(resolve(&env(|_| {})).unwrap().log_format, LogFormat::Text);
    let json = env(|e| e.log_format = Some("json".into()));
    assert_eq!(resolve(&json).unwrap().log_format, LogFormat::Json);
    let text = env(|e| e.log_format = Some("pretty".into()));
    assert_eq!(resolve(&text).unwrap().log_format, LogFormat::Text);
    let err = refusal(&env(|e| e.log_format = Some("xml".into())));
    assert_eq!(err, "TOPGUN_LOG_FORMAT=\"xml\": expected json or text");
}

#[test]
fn tolerated_variables_are_carried_to_be_named_once() {
    let c = resolve(&env(|e| {
        e.tolerated = vec!["RUST_BACKTRACE".into(), "TOPGUN_MAX_RAM_MB".into()];
    }))
    .unwrap();
    assert_eq!(c.unused_env, ["RUST_BACKTRACE", "TOPGUN_MAX_RAM_MB"]);
    assert!(resolve(&env(|_| {})).unwrap().unused_env.is_empty());
}

/// README.md's settings table names every environment variable: the flags' (all their
/// names), the others', and the tolerated ones.
#[test]
fn the_readme_names_every_environment_variable() {
    use clap::CommandFactory;
    let readme = include_str!("../../../../README.md");
    let table: String = readme
        .lines()
        .skip_while(|l| !l.starts_with("| Setting |"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    let command = Cli::command();
    let flags = command
        .get_arguments()
        .filter_map(|a| a.get_env()?.to_str().map(str::to_owned));
    let tolerated = env::TOLERATED.iter().map(|name| {
        name.strip_suffix('_')
            .map_or((*name).to_owned(), |p| format!("{p}_*"))
    });
    let names = flags
        .chain(PORT_ENV_NAMES.iter().map(|n| (*n).to_owned()))
        .chain(names::ALL.iter().map(|n| (*n).to_owned()))
        .chain(tolerated)
        .chain(["RUST_LOG".to_owned()]);
    for name in names {
        assert!(
            table.contains(&format!("`{name}")),
            "README.md's table lacks {name}"
        );
    }
}
