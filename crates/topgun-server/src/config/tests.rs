use std::time::Duration;

use super::*;

/// 32 bytes or more, as HS256 requires.
const SECRET: &str = "config-tests-secret-0123456789abcdef";

fn no_auth() -> AuthEnv {
    AuthEnv {
        no_auth: Some("1".into()),
        ..AuthEnv::default()
    }
}

#[test]
fn defaults_without_auth_bind_loopback() {
    let c = Config::resolve(&Cli::default(), None, &no_auth()).unwrap();
    assert_eq!(c.bind, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.node_id.as_str(), NODE_ID_DEFAULT);
    assert!(matches!(c.auth, AuthMode::Disabled));
    assert_eq!(c.session, SessionLimits::default());
}

#[test]
fn jwt_mode_binds_all_interfaces_by_default() {
    let env = AuthEnv {
        jwt_secret: Some(SECRET.into()),
        ..AuthEnv::default()
    };
    let c = Config::resolve(&Cli::default(), None, &env).unwrap();
    assert_eq!(c.bind, "0.0.0.0:8080".parse().unwrap());
    assert!(matches!(c.auth, AuthMode::Jwt(_)));
}

#[test]
fn refuses_to_start_without_an_auth_decision() {
    let err = Config::resolve(&Cli::default(), None, &AuthEnv::default()).unwrap_err();
    assert!(matches!(err, ConfigError::NoAuth));
    assert!(err.to_string().contains("TOPGUN_NO_AUTH=1"));
    let off = AuthEnv {
        no_auth: Some("0".into()),
        ..AuthEnv::default()
    };
    assert!(matches!(
        Config::resolve(&Cli::default(), None, &off),
        Err(ConfigError::NoAuth)
    ));
    let odd = AuthEnv {
        no_auth: Some("yes please".into()),
        ..AuthEnv::default()
    };
    let err = Config::resolve(&Cli::default(), None, &odd).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::BadEnv {
                name: "TOPGUN_NO_AUTH",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn flags_beat_the_file_which_beats_defaults() {
    let file = "port = 9000\nhost = \"0.0.0.0\"\nnode_id = \"from-file\"\n\
                idle_timeout_ms = 5000\nshards = 3\nmax_drift_ms = 1000\n";
    let cli = Cli {
        port: Some(9100),
        ..Cli::default()
    };
    let c = Config::resolve(&cli, Some(file), &no_auth()).unwrap();
    assert_eq!(c.bind, "0.0.0.0:9100".parse().unwrap());
    assert_eq!(c.node_id.as_str(), "from-file");
    assert_eq!(c.session.idle_timeout_ms, 5000);
    assert_eq!((c.shards, c.max_drift_ms), (3, 1000));
    assert_eq!(c.storage.durability, Durability::Fsync);
    assert_eq!(c.storage.backend, Backend::Redb);
}

#[test]
fn storage_settings_resolve_and_bad_ones_are_named() {
    let cli = Cli {
        durability: Some("os".into()),
        wal_discard_corrupt: true,
        ..Cli::default()
    };
    let c = Config::resolve(&cli, Some("storage_backend = \"memory\"\n"), &no_auth()).unwrap();
    assert_eq!(c.storage.durability, Durability::Os);
    assert_eq!(c.storage.backend, Backend::Memory);
    assert_eq!(c.storage.on_corruption, OnCorruption::Discard);
    let cli = Cli {
        durability: Some("sometimes".into()),
        ..Cli::default()
    };
    let err = Config::resolve(&cli, None, &no_auth()).unwrap_err();
    assert!(err.to_string().contains("durability"), "{err}");
    let err =
        Config::resolve(&Cli::default(), Some("wal_max_bytes = 10\n"), &no_auth()).unwrap_err();
    assert!(err.to_string().contains("wal_max_bytes"), "{err}");
}

#[test]
fn the_commit_delay_has_a_default_can_be_turned_off_and_is_bounded() {
    let delay = |file: Option<&str>| {
        Config::resolve(&Cli::default(), file, &no_auth()).map(|c| c.storage.wal_commit_delay)
    };
    assert_eq!(delay(None).unwrap(), Duration::from_micros(500));
    assert_eq!(
        delay(Some("wal_commit_delay_us = 0\n")).unwrap(),
        Duration::ZERO
    );
    assert_eq!(
        delay(Some("wal_commit_delay_us = 2000\n")).unwrap(),
        Duration::from_millis(2)
    );
    let err = delay(Some("wal_commit_delay_us = 100001\n")).unwrap_err();
    assert!(err.to_string().contains("wal_commit_delay_us"), "{err}");
}

#[test]
fn the_redb_cache_has_a_default_and_a_floor() {
    let cache = |file: Option<&str>| {
        Config::resolve(&Cli::default(), file, &no_auth()).map(|c| c.storage.redb_cache_bytes)
    };
    assert_eq!(cache(None).unwrap(), 64 << 20);
    assert_eq!(
        cache(Some("redb_cache_bytes = 1073741824\n")).unwrap(),
        1 << 30
    );
    let err = cache(Some("redb_cache_bytes = 4096\n")).unwrap_err();
    assert!(err.to_string().contains("redb_cache_bytes"), "{err}");
}

#[test]
fn bad_files_and_values_are_named() {
    let err = Config::resolve(&Cli::default(), Some("prot = 1\n"), &no_auth()).unwrap_err();
    assert!(err.to_string().contains("prot"), "{err}");
    let err = Config::resolve(&Cli::default(), Some("max_depth = 0\n"), &no_auth()).unwrap_err();
    assert!(err.to_string().contains("max_depth"), "{err}");
    let cli = Cli {
        node_id: Some("a:b".into()),
        ..Cli::default()
    };
    assert!(matches!(
        Config::resolve(&cli, None, &no_auth()),
        Err(ConfigError::BadNodeId(..))
    ));
}

fn file_error(file: &str) -> String {
    Config::resolve(&Cli::default(), Some(file), &no_auth())
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn a_short_hs256_secret_is_refused_and_a_pem_key_is_not() {
    let short = AuthEnv {
        jwt_secret: Some("s3cret".into()),
        ..AuthEnv::default()
    };
    let err = Config::resolve(&Cli::default(), None, &short).unwrap_err();
    assert_eq!(
        err.to_string(),
        "JWT_SECRET: an HS256 secret must be at least 32 bytes (RFC 7518 §3.2), got 6; use \
         a longer random secret, or an RS256 public key in PEM"
    );
    let just_enough = AuthEnv {
        jwt_secret: Some("x".repeat(32)),
        ..AuthEnv::default()
    };
    assert!(Config::resolve(&Cli::default(), None, &just_enough).is_ok());
    let pem = AuthEnv {
        jwt_secret: Some(include_str!("../../tests/fixtures/rs256-public.pem").into()),
        ..AuthEnv::default()
    };
    let c = Config::resolve(&Cli::default(), None, &pem).unwrap();
    assert!(matches!(&c.auth, AuthMode::Jwt(v) if v.algorithm() == jsonwebtoken::Algorithm::RS256));
}

/// Each numeric key: the values just outside its range are refused with a message naming
/// the key and the range, and the ends of the range are accepted.
#[test]
fn every_numeric_key_refuses_values_outside_its_range() {
    for range in NUMERIC_KEYS {
        let rule = range.describe();
        let mut refused = vec![range.max + 1];
        if range.min > 0 && range.zero.is_none() {
            refused.push(0);
        }
        if range.min > 1 {
            refused.push(range.min - 1);
        }
        for value in refused {
            let err = file_error(&format!("{} = {value}\n", range.key));
            assert_eq!(
                err,
                format!("{} must be {rule}, got {value}", range.key),
                "{}",
                range.key
            );
        }
        let mut accepted = vec![range.min, range.max];
        if range.zero.is_some() {
            accepted.push(0);
        }
        for value in accepted {
            // The keys checked against another key get a partner that allows the value.
            let partner = match range.key {
                "wal_segment_bytes" => format!("wal_max_bytes = {}\n", 2 * value),
                "wal_max_bytes" => "wal_segment_bytes = 4096\n".to_owned(),
                "value_bytes_max" => format!("max_frame_bytes = {}\n", value.max(1024)),
                "connection_backlog_bytes_max" => {
                    format!("max_frame_bytes = {}\n", value.clamp(1024, 64 << 20))
                }
                "server_backlog_bytes_max" => format!(
                    "connection_backlog_bytes_max = {0}\nmax_frame_bytes = {0}\n",
                    value.min(64 << 10)
                ),
                _ => String::new(),
            };
            let file = format!("{} = {value}\n{partner}", range.key);
            let resolved = Config::resolve(&Cli::default(), Some(&file), &no_auth());
            assert!(resolved.is_ok(), "{file}: {:?}", resolved.err());
        }
    }
}

#[test]
fn the_backlog_budgets_hold_a_frame_and_a_connection() {
    assert_eq!(
        file_error("max_frame_bytes = 4194304\nconnection_backlog_bytes_max = 2097152\n"),
        "connection_backlog_bytes_max must be at least max_frame_bytes (4194304), got 2097152"
    );
    assert_eq!(
        file_error("connection_backlog_bytes_max = 4194304\nserver_backlog_bytes_max = 2097152\n"),
        "server_backlog_bytes_max must be at least connection_backlog_bytes_max (4194304), \
         got 2097152"
    );
    // Unset, a budget grows to what the other settings need.
    let file = "max_frame_bytes = 67108864\n";
    let c = Config::resolve(&Cli::default(), Some(file), &no_auth()).unwrap();
    assert_eq!(c.backlog.connection_bytes, 64 << 20);
    assert_eq!(c.backlog.server_bytes, 512 << 20);
    let c = Config::resolve(&Cli::default(), None, &no_auth()).unwrap();
    assert_eq!(c.backlog, BacklogLimits::default());
}

#[test]
fn range_refusals_read_plainly() {
    assert_eq!(
        file_error("idle_timeout_ms = 0\n"),
        "idle_timeout_ms must be 1 s..=1 day, got 0"
    );
    assert_eq!(
        file_error("auth_deadline_ms = 0\n"),
        "auth_deadline_ms must be 100 ms..=10 min, got 0"
    );
    assert_eq!(
        file_error("max_depth = 257\n"),
        "max_depth must be 1..=256, got 257"
    );
    assert_eq!(
        file_error("max_frame_bytes = 9223372036854775807\n"),
        "max_frame_bytes must be 1 KiB..=64 MiB, got 9223372036854775807"
    );
    assert_eq!(
        file_error("journal_capacity = 10000001\n"),
        "journal_capacity must be 0 (off), or 1..=10000000, got 10000001"
    );
}

#[test]
fn values_beyond_what_toml_holds_are_refused_naming_the_key() {
    // 2^63 does not fit TOML's integers; -1 fits no key.
    for file in [
        "max_frame_bytes = 9223372036854775808\n",
        "max_depth = -1\n",
    ] {
        let err = file_error(file);
        let key = file.split(' ').next().unwrap();
        assert!(err.contains(key), "{err}");
    }
}

#[test]
fn keys_checked_against_each_other_name_both() {
    let err = file_error("max_frame_bytes = 4096\nvalue_bytes_max = 4097\n");
    assert_eq!(
        err,
        "value_bytes_max must be 0, or at most max_frame_bytes (4096), got 4097"
    );
    let err = file_error("wal_segment_bytes = 1048576\nwal_max_bytes = 2097151\n");
    assert_eq!(
        err,
        "wal_max_bytes must be at least twice wal_segment_bytes (1048576), got 2097151"
    );
    assert!(
        Config::resolve(
            &Cli::default(),
            Some("wal_segment_bytes = 1048576\nwal_max_bytes = 2097152\n"),
            &no_auth()
        )
        .is_ok()
    );
}

/// The defaults, as resolved, lie inside their ranges (the table names them all).
#[test]
fn the_defaults_are_valid_and_the_table_knows_the_decoder_s_bounds() {
    let c = Config::resolve(&Cli::default(), None, &no_auth()).unwrap();
    assert_eq!(c.decode.max_depth, MAX_DEPTH_MAX);
    assert_eq!(c.preauth, PreAuthLimits::default());
    assert_eq!(
        keys::OPS_PER_BATCH_MAX.max,
        Limits::default().max_collection_len as u64,
        "more ops than the decoder takes could never be honoured"
    );
    assert_eq!(
        NUMERIC_KEYS.len(),
        NUMERIC_KEYS
            .iter()
            .map(|r| r.key)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    );
}

/// README.md's table of keys shows each numeric key's range as the code checks it.
#[test]
fn the_readme_shows_every_range() {
    let readme = include_str!("../../../../README.md");
    for range in NUMERIC_KEYS {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", range.key)))
            .unwrap_or_else(|| panic!("README.md has no row for {}", range.key));
        assert!(
            row.contains(&format!("| {} |", range.describe())),
            "README.md's row for {} should show {:?}: {row}",
            range.key,
            range.describe()
        );
    }
}

#[test]
fn help_names_the_auth_environment_and_every_range() {
    let help = after_help();
    assert!(help.contains("JWT_SECRET") && help.contains("TOPGUN_NO_AUTH=1"));
    for range in NUMERIC_KEYS {
        assert!(help.contains(range.key), "{}", range.key);
    }
    assert!(
        help.contains("preauth_connections_max           1..=1000000"),
        "{help}"
    );
}

/// Where each numeric key's value lands in `Config`.
fn resolved(c: &Config, key: &str) -> u64 {
    let (session, guards, preauth, storage) = (&c.session, &c.guards, &c.preauth, &c.storage);
    let size = |value: usize| value as u64;
    match key {
        "auth_deadline_ms" => session.auth_deadline_ms,
        "idle_timeout_ms" => session.idle_timeout_ms,
        "max_frame_bytes" => size(c.decode.max_frame_bytes),
        "max_depth" => size(c.decode.max_depth),
        "outbound_queue_len" => size(session.outbound_queue_len),
        "connection_backlog_bytes_max" => size(c.backlog.connection_bytes),
        "server_backlog_bytes_max" => size(c.backlog.server_bytes),
        "write_timeout_ms" => session.write_timeout_ms,
        "maps_per_connection_max" => size(session.maps_per_connection_max),
        "topics_per_connection_max" => size(session.topics_per_connection_max),
        "shards" => size(c.shards),
        "max_drift_ms" => c.max_drift_ms,
        "wal_segment_bytes" => storage.wal_segment_bytes,
        "wal_max_bytes" => storage.wal_max_bytes,
        "wal_commit_delay_us" => u64::try_from(storage.wal_commit_delay.as_micros()).unwrap(),
        "redb_cache_bytes" => size(storage.redb_cache_bytes),
        "journal_capacity" => size(storage.journal.capacity),
        "journal_max_age_ms" => storage.journal.max_age_ms,
        "tombstone_ttl_ms" => c.tombstone_ttl_ms,
        "gc_interval_ms" => c.gc_interval_ms,
        "ops_per_batch_max" => size(guards.ops_per_batch_max),
        "value_bytes_max" => size(guards.value_bytes_max),
        "queries_per_connection_max" => size(guards.queries_per_connection_max),
        "connections_per_user_max" => size(guards.connections_per_user_max),
        "auth_failures_per_ip_per_minute" => u64::from(guards.auth_failures_per_ip_per_minute),
        "ops_per_sec_per_connection" => u64::from(guards.ops_per_sec_per_connection),
        "ops_per_sec_per_user" => u64::from(guards.ops_per_sec_per_user),
        "preauth_bytes_max" => size(preauth.bytes_max),
        "preauth_connections_max" => size(preauth.connections_max),
        "preauth_connections_per_ip_max" => size(preauth.connections_per_ip_max),
        _ => panic!("the test does not know where {key} lands in Config"),
    }
}

/// The other keys a file sets so that `key = value` meets the rules between keys.
fn partners(key: &str, value: u64) -> String {
    match key {
        "wal_segment_bytes" => format!("wal_max_bytes = {}\n", 2 * value),
        "wal_max_bytes" => "wal_segment_bytes = 4096\n".to_owned(),
        "value_bytes_max" => format!("max_frame_bytes = {}\n", value.max(1024)),
        "connection_backlog_bytes_max" => {
            format!("max_frame_bytes = {}\n", value.clamp(1024, 64 << 20))
        }
        "server_backlog_bytes_max" => {
            "connection_backlog_bytes_max = 65536\nmax_frame_bytes = 65536\n".to_owned()
        }
        _ => String::new(),
    }
}

/// Each declared numeric key is accepted in a file at both ends of its range, and its value
/// reaches its place in `Config`.
#[test]
fn every_numeric_key_in_a_file_reaches_the_config() {
    for range in NUMERIC_KEYS {
        for value in [range.min, range.max] {
            let file = format!("{} = {value}\n{}", range.key, partners(range.key, value));
            let c = Config::resolve(&Cli::default(), Some(&file), &no_auth())
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(resolved(&c, range.key), value, "{file}");
        }
    }
}

/// What a file without a key gets is the key's declared default, and it is in range.
#[test]
fn an_empty_file_gives_the_declared_defaults() {
    assert_eq!(
        Numbers::resolve(&FileConfig::default()).unwrap(),
        Numbers::defaults()
    );
    let c = Config::resolve(&Cli::default(), Some(""), &no_auth()).unwrap();
    assert_eq!(c.session, SessionLimits::default());
    assert_eq!(c.guards, Guards::default());
    assert_eq!(c.preauth, PreAuthLimits::default());
}

/// Each key that is a flag as well is read from the file, and its flag wins.
#[test]
fn every_flag_key_is_read_from_the_file_and_its_flag_wins() {
    let file = "port = 9000\nhost = \"0.0.0.0\"\nnode_id = \"from-file\"\n\
                data_dir = \"from-file\"\ndurability = \"os\"\nstorage_backend = \"memory\"\n";
    let c = Config::resolve(&Cli::default(), Some(file), &no_auth()).unwrap();
    assert_eq!(c.bind, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(c.node_id.as_str(), "from-file");
    assert_eq!(c.storage.data_dir, PathBuf::from("from-file"));
    assert_eq!(c.storage.durability, Durability::Os);
    assert_eq!(c.storage.backend, Backend::Memory);
    let flags = [
        "topgun-server",
        "--port=9100",
        "--host=127.0.0.2",
        "--node-id=from-flag",
        "--data-dir=from-flag",
        "--durability=memory",
        "--storage=redb",
    ];
    let cli = Cli::try_parse_from(flags).unwrap();
    let c = Config::resolve(&cli, Some(file), &no_auth()).unwrap();
    let resolved = (
        c.bind.to_string(),
        c.node_id.as_str(),
        c.storage.data_dir.clone(),
    );
    assert_eq!(
        resolved,
        (
            "127.0.0.2:9100".into(),
            "from-flag",
            PathBuf::from("from-flag")
        )
    );
    let storage = (c.storage.durability, c.storage.backend);
    assert_eq!(storage, (Durability::Memory, Backend::Redb));
}

#[test]
fn unknown_durabilities_and_backends_are_refused_listing_the_known_ones() {
    let cli = Cli {
        durability: Some("sometimes".into()),
        ..Cli::default()
    };
    let err = Config::resolve(&cli, None, &no_auth()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--durability / TOPGUN_DURABILITY must be fsync, os or memory, got sometimes"
    );
    assert_eq!(
        file_error("durability = \"sometimes\"\n"),
        "durability must be fsync, os or memory, got sometimes"
    );
    assert_eq!(
        file_error("storage_backend = \"sqlite\"\n"),
        "storage_backend must be redb, postgres, memory or null, got sqlite"
    );
    let cli = Cli {
        storage_backend: Some("sqlite".into()),
        ..Cli::default()
    };
    let err = Config::resolve(&cli, None, &no_auth()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--storage / STORAGE_BACKEND must be redb, postgres, memory or null, got sqlite"
    );
}

/// The flags' environment names are the TopGun server's.
#[test]
fn each_flag_key_has_its_environment_name() {
    use clap::CommandFactory;
    let command = Cli::command();
    let env = |id: &str| {
        let arg = command.get_arguments().find(|a| a.get_id() == id)?;
        Some(arg.get_env()?.to_string_lossy().into_owned())
    };
    for (id, name) in [
        ("port", "PORT"),
        ("host", "TOPGUN_BIND_ADDR"),
        ("node_id", "TOPGUN_NODE_ID"),
        ("data_dir", "TOPGUN_DATA_DIR"),
        ("redb_path", "TOPGUN_REDB_PATH"),
        ("wal_dir", "TOPGUN_WAL_DIR"),
        ("durability", "TOPGUN_DURABILITY"),
        ("storage_backend", "STORAGE_BACKEND"),
        ("database_url", "DATABASE_URL"),
    ] {
        assert_eq!(env(id).as_deref(), Some(name), "{id}");
    }
}

/// A flag with several environment names reads the first one set, and names the first in
/// `--help` when none is: the port is `PORT`, else `TOPGUN_PORT`.
#[test]
fn of_several_environment_names_the_first_one_set_is_read() {
    let names = PORT_ENV_NAMES;
    assert_eq!(first_set(names, |_| false), "PORT");
    assert_eq!(
        first_set(names, |name| name == "TOPGUN_PORT"),
        "TOPGUN_PORT"
    );
    assert_eq!(first_set(names, |_| true), "PORT", "PORT wins");
}
