//! Cluster mode's settings (CLUSTER.md §14): each flag, variable and `[cluster]` key read,
//! its defaults, and each refusal's message.

use topgun_core::protocol::enums::WriteConcern;

use super::cluster::{BOOTSTRAP_EXPECT_MAX, FLAGS};
use super::*;

const SECRET: &str = "cluster-tests-secret-0123456789abcdef";

fn no_auth() -> Env {
    Env {
        no_auth: Some("1".into()),
        ..Env::default()
    }
}

/// No-auth, plus `set` applied.
fn env(set: impl FnOnce(&mut Env)) -> Env {
    let mut env = no_auth();
    set(&mut env);
    env
}

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("topgun-server").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn resolve(args: &[&str], file: Option<&str>, env: &Env) -> Result<Config, String> {
    Config::resolve(&cli(args), file, env).map_err(|e| e.to_string())
}

/// The cluster settings `args` give without a file, no-auth.
fn cluster(args: &[&str]) -> ClusterConfig {
    cluster_with(args, None, &no_auth()).unwrap()
}

fn cluster_with(args: &[&str], file: Option<&str>, env: &Env) -> Result<ClusterConfig, String> {
    resolve(args, file, env).map(|c| c.cluster.expect("cluster mode"))
}

/// The message `args` are refused with (no-auth, no file).
fn refusal(args: &[&str]) -> String {
    refusal_with(args, None, &no_auth())
}

fn refusal_with(args: &[&str], file: Option<&str>, env: &Env) -> String {
    resolve(args, file, env).map(|_| ()).unwrap_err()
}

#[test]
fn without_a_cluster_port_the_server_is_a_single_node() {
    let c = resolve(&[], None, &no_auth()).unwrap();
    assert!(c.cluster.is_none());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn a_cluster_port_alone_gives_every_default() {
    let c = cluster(&["--cluster-port=9000"]);
    let expected = ClusterConfig {
        listen: "127.0.0.1:9000".parse().unwrap(),
        seeds: Vec::new(),
        discovery: None,
        bootstrap_expect: 1,
        advertise_host: "127.0.0.1".into(),
        advertise_url: None,
        backups: 1,
        write_concern: WriteConcern::Replicated,
        min_insync_replicas: 1,
        secret: None,
        name: "topgun".into(),
        timing: ClusterTiming::default(),
    };
    assert_eq!(c, expected);
    let t = c.timing;
    assert_eq!(
        (
            t.member_down_after_ms,
            t.member_remove_after_ms,
            t.raft_heartbeat_ms
        ),
        (3000, 300_000, 250)
    );
    assert_eq!(
        (
            t.raft_election_timeout_min_ms,
            t.raft_election_timeout_max_ms
        ),
        (1000, 2000)
    );
    assert_eq!(
        (
            t.bootstrap_timeout_ms,
            t.replication_timeout_ms,
            t.lost_promote_after_ms
        ),
        (10_000, 2000, 30_000)
    );
    assert_eq!(
        (t.max_parallel_migrations, t.migration_chunk_bytes),
        (2, 1 << 20)
    );
    assert_eq!(
        (
            t.cluster_lock_max_ttl_ms,
            t.session_ttl_ms,
            t.map_push_interval_ms,
            t.ws_ping_interval_ms
        ),
        (60_000, 10_000, 100, 20_000)
    );
    assert_eq!(cluster(&["--cluster-port=0"]).listen.port(), 0, "ephemeral");
    let warnings = resolve(&["--cluster-port=0"], None, &no_auth())
        .unwrap()
        .warnings;
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn every_cluster_flag_is_read() {
    let c = cluster_with(
        &[
            "--port=8081",
            "--cluster-port=9081",
            "--cluster-host=127.0.0.2",
            "--seed-nodes=localhost:9082, [::1]:9083,db.example:9084",
            "--bootstrap-expect=5",
            "--advertise-host=Node-1.example",
            "--advertise-url=wss://node-1.example/ws",
            "--backups=3",
            "--discovery=dns:topgun.svc:9081",
        ],
        None,
        &env(|e| e.cluster_secret = Some(SECRET.to_owned().into())),
    )
    .unwrap();
    assert_eq!(c.listen, "127.0.0.2:9081".parse().unwrap());
    let seeds: Vec<String> = c.seeds.iter().map(ToString::to_string).collect();
    assert_eq!(seeds, ["localhost:9082", "[::1]:9083", "db.example:9084"]);
    assert_eq!(c.bootstrap_expect, 5);
    assert_eq!(c.advertise_host, "node-1.example");
    assert_eq!(c.advertise_url.as_deref(), Some("wss://node-1.example/ws"));
    assert_eq!(c.backups, 3);
    assert_eq!(
        c.discovery,
        Some(Discovery::Dns {
            name: "topgun.svc".into(),
            port: 9081
        })
    );
    assert_eq!(c.secret.as_deref(), Some(SECRET.as_bytes()));
}

#[test]
fn the_variables_without_a_flag_are_read() {
    let e = env(|e| {
        e.cluster_write_concern = Some("persisted".into());
        e.min_insync_replicas = Some("2".into());
        e.cluster_secret = Some(SECRET.to_owned().into());
        e.cluster_name = Some("prod eu-1".into());
    });
    let c = cluster_with(&["--cluster-port=9000"], None, &e).unwrap();
    assert_eq!(c.write_concern, WriteConcern::Persisted);
    assert_eq!(c.min_insync_replicas, 2);
    assert_eq!(c.name, "prod eu-1");
    assert_eq!(c.secret.as_deref(), Some(SECRET.as_bytes()));
    let e = env(|e| e.cluster_write_concern = Some("FIRE_AND_FORGET".into()));
    let c = cluster_with(&["--cluster-port=9000"], None, &e).unwrap();
    assert_eq!(c.write_concern, WriteConcern::FireAndForget);
}

/// The flags' environment names are CLUSTER.md §14's.
#[test]
fn each_cluster_flag_has_its_environment_name() {
    use clap::CommandFactory;
    let command = Cli::command();
    let arg = |id: &str| {
        command
            .get_arguments()
            .find(|a| a.get_id() == id)
            .unwrap_or_else(|| panic!("no flag {id}"))
    };
    let env_of = |id: &str| arg(id).get_env().map(|e| e.to_string_lossy().into_owned());
    assert_eq!(
        env_of("cluster_port").as_deref(),
        Some("TOPGUN_CLUSTER_PORT")
    );
    for (id, name) in [
        ("cluster_host", "TOPGUN_CLUSTER_BIND_ADDR"),
        ("seed_nodes", "TOPGUN_SEED_NODES"),
        ("discovery", "TOPGUN_DISCOVERY"),
        ("bootstrap_expect", "TOPGUN_BOOTSTRAP_EXPECT"),
        ("advertise_host", "TOPGUN_ADVERTISE_HOST"),
        ("advertise_url", "TOPGUN_ADVERTISE_URL"),
        ("backups", "TOPGUN_BACKUP_COUNT"),
    ] {
        assert_eq!(env_of(id).as_deref(), Some(name), "{id}");
        let flag = FLAGS.iter().find(|f| f.id == id).expect("in FLAGS");
        assert_eq!(flag.env(), name, "{id}");
        let long = arg(id).get_long().expect("a long flag");
        assert_eq!(flag.flag(), format!("--{long}"), "{id}");
    }
    assert_eq!(FLAGS.len(), 7);
}

#[test]
fn flags_from_the_command_line_are_not_taken_for_variables() {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command()
        .try_get_matches_from(["topgun-server", "--seed-nodes=a:1", "--backups=2"])
        .unwrap();
    assert!(cluster::env_sourced(&matches).is_empty());
    assert!(
        Cli::from_arg_matches(&matches)
            .unwrap()
            .env_sourced
            .is_empty()
    );
}

#[test]
fn cluster_flags_without_cluster_mode_are_refused() {
    for (arg, flag) in [
        ("--seed-nodes=a:1", "--seed-nodes"),
        ("--discovery=dns:a:1", "--discovery"),
        ("--bootstrap-expect=3", "--bootstrap-expect"),
        ("--backups=2", "--backups"),
        ("--cluster-host=0.0.0.0", "--cluster-host"),
        ("--advertise-host=a", "--advertise-host"),
        ("--advertise-url=ws://a", "--advertise-url"),
    ] {
        assert_eq!(
            refusal(&[arg]),
            format!(
                "{flag} is a cluster setting, and cluster mode is off: add --cluster-port (or \
                 TOPGUN_CLUSTER_PORT), or drop {flag}"
            )
        );
    }
}

#[test]
fn cluster_variables_without_cluster_mode_are_a_warning() {
    let mut cli = cli(&["--seed-nodes=a:1", "--backups=2"]);
    cli.env_sourced = vec!["seed_nodes", "backups"];
    let e = env(|e| {
        e.cluster_secret = Some("short".to_owned().into());
        e.cluster_name = Some("x".into());
    });
    let c = Config::resolve(&cli, None, &e).unwrap();
    assert!(c.cluster.is_none());
    assert_eq!(
        c.warnings,
        [
            "cluster mode is off (no --cluster-port or TOPGUN_CLUSTER_PORT), so these cluster \
          variables are not used: TOPGUN_SEED_NODES, TOPGUN_BACKUP_COUNT, \
          TOPGUN_CLUSTER_SECRET, TOPGUN_CLUSTER_NAME"
        ]
    );
    let c = resolve(
        &[],
        Some("[cluster]\nraft_heartbeat_ms = 100\n"),
        &no_auth(),
    )
    .unwrap();
    assert!(c.cluster.is_none());
    assert_eq!(
        c.warnings,
        [
            "cluster mode is off (no --cluster-port, TOPGUN_CLUSTER_PORT or cluster.port), so the \
          config file's [cluster] table is not used"
        ]
    );
}

#[test]
fn bad_seeds_are_refused_naming_the_entry() {
    let rule = "a list of host:port, each port 1..=65535 and IPv6 addresses in brackets \
                ([::1]:9000)";
    for entry in [
        "localhost",
        "a:0",
        "a:70000",
        "::1:9000",
        "0.0.0.0:9000",
        "a b:1",
    ] {
        assert_eq!(
            refusal(&["--cluster-port=9000", &format!("--seed-nodes=b:1,{entry}")]),
            format!("--seed-nodes / TOPGUN_SEED_NODES must be {rule}, got {entry}")
        );
    }
    assert_eq!(
        refusal_with(
            &["--cluster-port=9000"],
            Some("[cluster]\nseed_nodes = [\"a\"]\n"),
            &no_auth()
        ),
        format!("cluster.seed_nodes must be {rule}, got a")
    );
}

#[test]
fn seeds_are_deduplicated_and_this_member_is_left_out() {
    let c = cluster(&[
        "--cluster-port=9081",
        "--seed-nodes=localhost:9081,LOCALHOST:9082,localhost:9082,127.0.0.1:9081,localhost:9083",
    ]);
    let seeds: Vec<String> = c.seeds.iter().map(ToString::to_string).collect();
    assert_eq!(seeds, ["localhost:9082", "localhost:9083"]);
    assert_eq!(c.bootstrap_expect, 3, "1 + the others");
    // Another host at the same port is another member.
    let c = cluster(&["--cluster-port=9081", "--seed-nodes=10.0.0.2:9081"]);
    assert_eq!(c.seeds.len(), 1);
    // With an ephemeral port nothing can be recognised as this member.
    let c = cluster(&[
        "--cluster-port=0",
        "--seed-nodes=localhost:9081,localhost:9082",
    ]);
    assert_eq!(c.bootstrap_expect, 3);
}

#[test]
fn bootstrap_expect_defaults_to_one_more_than_the_seeds() {
    let c = cluster(&["--cluster-port=9000", "--seed-nodes=a:1,b:2,a:1"]);
    assert_eq!((c.seeds.len(), c.bootstrap_expect), (2, 3));
    assert_eq!(cluster(&["--cluster-port=9000"]).bootstrap_expect, 1);
    for bad in ["0", &(BOOTSTRAP_EXPECT_MAX + 1).to_string()] {
        assert_eq!(
            refusal(&["--cluster-port=9000", &format!("--bootstrap-expect={bad}")]),
            format!("--bootstrap-expect / TOPGUN_BOOTSTRAP_EXPECT must be 1..=271, got {bad}")
        );
    }
}

#[test]
fn dns_discovery_is_parsed_and_needs_bootstrap_expect() {
    let c = cluster(&[
        "--cluster-port=9000",
        "--discovery=dns:topgun-headless.default.svc.cluster.local:9000",
        "--bootstrap-expect=3",
    ]);
    assert_eq!(
        c.discovery,
        Some(Discovery::Dns {
            name: "topgun-headless.default.svc.cluster.local".into(),
            port: 9000
        })
    );
    assert_eq!(
        refusal(&["--cluster-port=9000", "--discovery=dns:svc:9000"]),
        "--bootstrap-expect / TOPGUN_BOOTSTRAP_EXPECT must be set with --discovery (the number \
         of members to wait for), got nothing"
    );
    for bad in ["svc:9000", "dns:svc", "dns:svc:0", "k8s:svc:1"] {
        assert_eq!(
            refusal(&[
                "--cluster-port=9000",
                "--bootstrap-expect=3",
                &format!("--discovery={bad}")
            ]),
            format!(
                "--discovery / TOPGUN_DISCOVERY must be dns:<name>:<port>, the port 1..=65535, \
                 got {bad}"
            )
        );
    }
}

#[test]
fn the_advertised_host_defaults_to_a_specific_bind_address_else_loopback() {
    let secret = env(|e| e.cluster_secret = Some(SECRET.to_owned().into()));
    let advertised = |args: &[&str]| cluster_with(args, None, &secret).unwrap();
    let c = advertised(&["--cluster-port=9000", "--host=0.0.0.0"]);
    assert_eq!(c.advertise_host, "127.0.0.1");
    assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(
        advertised(&["--cluster-port=9000", "--host=::"]).advertise_host,
        "127.0.0.1"
    );
    let c = advertised(&["--cluster-port=9000", "--host=10.1.2.3"]);
    assert_eq!(c.advertise_host, "10.1.2.3");
    assert_eq!(c.advertise_url(8080), "ws://10.1.2.3:8080");
    assert_eq!(c.http_url(8080), "http://10.1.2.3:8080");
    assert_eq!(c.cluster_addr(9000), "10.1.2.3:9000");
    // IPv6 hosts are bracketed in URLs and addresses.
    let c = advertised(&["--cluster-port=0", "--host=::1"]);
    assert_eq!(c.advertise_host, "::1");
    assert_eq!(c.advertise_url(8080), "ws://[::1]:8080");
    assert_eq!(c.http_url(8080), "http://[::1]:8080");
    assert_eq!(
        c.cluster_addr(41_234),
        "[::1]:41234",
        "the port actually bound"
    );
    let c = advertised(&["--cluster-port=0", "--advertise-host=[fd00::7]"]);
    assert_eq!(c.advertise_host, "fd00::7");
    assert_eq!(c.cluster_addr(1), "[fd00::7]:1");
}

#[test]
fn an_advertised_url_is_given_to_clients_and_sets_the_http_scheme() {
    let c = cluster(&[
        "--cluster-port=0",
        "--advertise-url=wss://n1.example.com/ws",
    ]);
    assert_eq!(c.advertise_url(8080), "wss://n1.example.com/ws");
    assert_eq!(c.http_url(8080), "https://n1.example.com");
    let c = cluster(&["--cluster-port=0", "--advertise-url=ws://lb:8000"]);
    assert_eq!(c.http_url(8080), "http://lb:8000");
    for bad in ["http://a", "ws://", "wss:///x", "a:1", "ws://a b"] {
        assert_eq!(
            refusal(&["--cluster-port=0", &format!("--advertise-url={bad}")]),
            format!(
                "--advertise-url / TOPGUN_ADVERTISE_URL must be a ws:// or wss:// URL with a \
                 host, got {bad}"
            )
        );
    }
    for bad in ["0.0.0.0", "::", "a b", "http://a"] {
        assert_eq!(
            refusal(&["--cluster-port=0", &format!("--advertise-host={bad}")]),
            format!(
                "--advertise-host / TOPGUN_ADVERTISE_HOST must be a hostname or an IP address \
                 peers can dial (not 0.0.0.0 or ::), got {bad}"
            )
        );
    }
}

#[test]
fn a_secret_is_required_off_loopback_and_must_be_long_enough() {
    assert_eq!(
        refusal(&["--cluster-port=9000", "--cluster-host=0.0.0.0"]),
        "TOPGUN_CLUSTER_SECRET must be set (at least 32 bytes) when the cluster listens off \
         loopback (0.0.0.0:9000), got nothing"
    );
    // With JWT the client listener, and so the cluster's, is on every interface.
    let jwt = Env {
        jwt_secret: Some(SECRET.into()),
        ..Env::default()
    };
    let err = refusal_with(&["--cluster-port=9000"], None, &jwt);
    assert!(
        err.starts_with("TOPGUN_CLUSTER_SECRET must be set"),
        "{err}"
    );
    let short = env(|e| e.cluster_secret = Some("hunter2".to_owned().into()));
    let err = refusal_with(&["--cluster-port=9000"], None, &short);
    assert_eq!(
        err,
        "TOPGUN_CLUSTER_SECRET must be at least 32 bytes, got 7 bytes"
    );
    let just_enough = env(|e| e.cluster_secret = Some("x".repeat(32).into()));
    let c = cluster_with(
        &["--cluster-port=9000", "--cluster-host=0.0.0.0"],
        None,
        &just_enough,
    );
    assert_eq!(c.unwrap().secret, Some(vec![b'x'; 32]));
    // Loopback needs none; IPv6 loopback too.
    assert_eq!(
        cluster(&["--cluster-port=9000", "--cluster-host=::1"]).secret,
        None
    );
}

#[test]
fn the_secret_stays_out_of_debug_output() {
    let e = env(|e| e.cluster_secret = Some(SECRET.to_owned().into()));
    let c = resolve(&["--cluster-port=9000"], None, &e).unwrap();
    for text in [
        format!("{c:?}"),
        format!("{:?}", c.cluster),
        format!("{e:?}"),
    ] {
        assert!(!text.contains(SECRET), "{text}");
    }
    assert!(format!("{:?}", c.cluster).contains("secret: \"set\""));
    assert!(format!("{:?}", cluster(&["--cluster-port=1"])).contains("secret: \"none\""));
}

#[test]
fn bad_cluster_variables_are_refused_naming_them() {
    let on = ["--cluster-port=9000"];
    let bad = |set: fn(&mut Env)| refusal_with(&on, None, &env(set));
    assert_eq!(
        bad(|e| e.cluster_write_concern = Some("ALL".into())),
        "TOPGUN_CLUSTER_WRITE_CONCERN=\"ALL\": expected one of FIRE_AND_FORGET, MEMORY, \
         APPLIED, REPLICATED, PERSISTED"
    );
    assert_eq!(
        bad(|e| e.min_insync_replicas = Some("two".into())),
        "TOPGUN_MIN_INSYNC_REPLICAS=\"two\": expected a count, 1..=4"
    );
    assert_eq!(
        bad(|e| e.min_insync_replicas = Some("5".into())),
        "TOPGUN_MIN_INSYNC_REPLICAS must be 1..=4, got 5"
    );
    assert_eq!(
        bad(|e| e.min_insync_replicas = Some("3".into())),
        "TOPGUN_MIN_INSYNC_REPLICAS must be at most the backups + 1 (2), got 3"
    );
    let rule = "a name of 1 to 64 bytes without control characters";
    let long = "n".repeat(65);
    assert_eq!(
        refusal_with(&on, None, &env(|e| e.cluster_name = Some(long.clone()))),
        format!("TOPGUN_CLUSTER_NAME={long:?}: expected {rule}")
    );
    assert_eq!(
        bad(|e| e.cluster_name = Some("a\tb".into())),
        format!("TOPGUN_CLUSTER_NAME=\"a\\tb\": expected {rule}")
    );
    let c = cluster_with(&on, None, &env(|e| e.cluster_name = Some("n".repeat(64)))).unwrap();
    assert_eq!(c.name.len(), 64);
}

#[test]
fn backups_are_zero_to_three_and_bound_the_in_sync_replicas() {
    assert_eq!(cluster(&["--cluster-port=1", "--backups=0"]).backups, 0);
    assert_eq!(
        refusal(&["--cluster-port=1", "--backups=4"]),
        "--backups / TOPGUN_BACKUP_COUNT must be 0 (the owner only), or 1..=3, got 4"
    );
    let three = env(|e| e.min_insync_replicas = Some("3".into()));
    let c = cluster_with(&["--cluster-port=1", "--backups=2"], None, &three).unwrap();
    assert_eq!((c.backups, c.min_insync_replicas), (2, 3));
    assert_eq!(
        refusal_with(
            &["--cluster-port=1"],
            Some("[cluster]\nbackups = 0\nmin_insync_replicas = 2\n"),
            &no_auth()
        ),
        "cluster.min_insync_replicas must be at most the backups + 1 (1), got 2"
    );
}

#[test]
fn the_member_name_rules_apply_in_cluster_mode() {
    let long = format!("--node-id={}", "n".repeat(129));
    assert!(resolve(&[&long], None, &no_auth()).is_ok(), "a single node");
    assert_eq!(
        refusal(&["--cluster-port=1", &long]),
        "--node-id / TOPGUN_NODE_ID names this member in cluster mode: member name is 129 \
         bytes long (at most 128)"
    );
    assert_eq!(
        refusal(&["--cluster-port=1", "--node-id=a\u{7}b"]),
        "--node-id / TOPGUN_NODE_ID names this member in cluster mode: member name \"a\\u{7}b\" \
         contains a control character"
    );
    // A colon is refused before cluster mode is considered: HLC node ids never take one.
    let err = refusal(&["--cluster-port=1", "--node-id=a:b"]);
    assert!(err.starts_with("node id \"a:b\""), "{err}");
}

#[test]
fn the_file_s_cluster_table_turns_cluster_mode_on_and_its_flags_win() {
    let file = "[cluster]\nport = 9000\nhost = \"127.0.0.3\"\nseed_nodes = [\"a:1\", \"b:2\"]\n\
                bootstrap_expect = 2\nadvertise_host = \"me\"\n\
                advertise_url = \"ws://me:1\"\nbackups = 2\nmin_insync_replicas = 3\n\
                discovery = \"dns:svc:9000\"\n";
    let c = cluster_with(&[], Some(file), &no_auth()).unwrap();
    assert_eq!(c.listen, "127.0.0.3:9000".parse().unwrap());
    assert_eq!(c.seeds.len(), 2);
    assert_eq!(
        (c.bootstrap_expect, c.backups, c.min_insync_replicas),
        (2, 2, 3)
    );
    assert_eq!(
        (c.advertise_host.as_str(), c.advertise_url.as_deref()),
        ("me", Some("ws://me:1"))
    );
    assert!(c.discovery.is_some());
    let flags = [
        "--cluster-port=9100",
        "--cluster-host=127.0.0.4",
        "--seed-nodes=c:3",
        "--bootstrap-expect=4",
        "--advertise-host=you",
        "--advertise-url=ws://you:2",
        "--backups=3",
        "--discovery=dns:other:1",
    ];
    let c = cluster_with(&flags, Some(file), &no_auth()).unwrap();
    assert_eq!(c.listen, "127.0.0.4:9100".parse().unwrap());
    assert_eq!(c.seeds, [SeedAddr::parse("c:3").unwrap()]);
    assert_eq!((c.bootstrap_expect, c.backups), (4, 3));
    assert_eq!(
        (c.advertise_host.as_str(), c.advertise_url.as_deref()),
        ("you", Some("ws://you:2"))
    );
    assert_eq!(c.discovery, Discovery::parse("dns:other:1"));
    let err = refusal_with(
        &["--cluster-port=1"],
        Some("[cluster]\nprot = 1\n"),
        &no_auth(),
    );
    assert!(err.contains("prot"), "{err}");
}

/// Each `[cluster]` numeric key: refused just outside its range naming the key and the
/// range, accepted at both ends (with partners that keep the rules between keys), and its
/// value reaches the config.
#[test]
fn every_cluster_key_refuses_values_outside_its_range_and_reaches_the_config() {
    for range in cluster::NUMERIC_KEYS {
        let name = range.key.strip_prefix("cluster.").expect("a [cluster] key");
        // Out of range is refused before any rule between keys: no partners needed.
        let alone = |value: u64| format!("[cluster]\n{name} = {value}\n");
        let file = |value: u64| format!("{}{}", alone(value), partners(name, value));
        let mut refused = vec![range.max + 1];
        if range.min > 0 && range.zero.is_none() {
            refused.push(0);
        }
        if range.min > 1 {
            refused.push(range.min - 1);
        }
        for value in refused {
            let err = refusal_with(&["--cluster-port=1"], Some(&alone(value)), &no_auth());
            let expected = format!("{} must be {}, got {value}", range.key, range.describe());
            assert_eq!(err, expected);
        }
        let mut accepted = vec![range.min, range.max];
        accepted.extend(range.zero.map(|_| 0));
        for value in accepted {
            let c = cluster_with(&["--cluster-port=1"], Some(&file(value)), &no_auth())
                .unwrap_or_else(|e| panic!("{}: {e}", file(value)));
            assert_eq!(resolved(&c, name), value, "{}", file(value));
        }
    }
}

/// Where each `[cluster]` numeric key lands.
fn resolved(c: &ClusterConfig, key: &str) -> u64 {
    let t = &c.timing;
    let size = |value: usize| value as u64;
    match key {
        "backups" => u64::from(c.backups),
        "min_insync_replicas" => u64::from(c.min_insync_replicas),
        "member_down_after_ms" => t.member_down_after_ms,
        "member_remove_after_ms" => t.member_remove_after_ms,
        "raft_heartbeat_ms" => t.raft_heartbeat_ms,
        "raft_election_timeout_min_ms" => t.raft_election_timeout_min_ms,
        "raft_election_timeout_max_ms" => t.raft_election_timeout_max_ms,
        "bootstrap_timeout_ms" => t.bootstrap_timeout_ms,
        "replication_timeout_ms" => t.replication_timeout_ms,
        "max_parallel_migrations" => size(t.max_parallel_migrations),
        "migration_chunk_bytes" => size(t.migration_chunk_bytes),
        "lost_promote_after_ms" => t.lost_promote_after_ms,
        "cluster_lock_max_ttl_ms" => t.cluster_lock_max_ttl_ms,
        "session_ttl_ms" => t.session_ttl_ms,
        "map_push_interval_ms" => t.map_push_interval_ms,
        "ws_ping_interval_ms" => t.ws_ping_interval_ms,
        _ => panic!("the test does not know where {key} lands"),
    }
}

/// The other `[cluster]` keys a file sets so that `key = value` meets the rules between keys.
fn partners(key: &str, value: u64) -> String {
    match key {
        "raft_heartbeat_ms" => {
            let min = (value + 1).max(50);
            format!(
                "raft_election_timeout_min_ms = {min}\nraft_election_timeout_max_ms = {}\n",
                (min + 1).max(100)
            )
        }
        "raft_election_timeout_min_ms" => format!(
            "raft_heartbeat_ms = 10\nraft_election_timeout_max_ms = {}\n",
            (value + 1).max(100)
        ),
        "raft_election_timeout_max_ms" => format!(
            "raft_heartbeat_ms = 10\nraft_election_timeout_min_ms = {}\n",
            (value - 1).min(60_000)
        ),
        "member_down_after_ms" => format!("member_remove_after_ms = {}\n", value.max(1000) + 1),
        "member_remove_after_ms" => format!("member_down_after_ms = {}\n", value.min(1001) - 1),
        "min_insync_replicas" => "backups = 3\n".to_owned(),
        _ => String::new(),
    }
}

#[test]
fn the_timing_keys_are_checked_against_each_other() {
    let on = ["--cluster-port=1"];
    let refused = |file: &str| refusal_with(&on, Some(&format!("[cluster]\n{file}")), &no_auth());
    assert_eq!(
        refused("raft_heartbeat_ms = 1000\n"),
        "cluster.raft_heartbeat_ms must be less than cluster.raft_election_timeout_min_ms \
         (1000), got 1000"
    );
    assert_eq!(
        refused("raft_election_timeout_min_ms = 2000\n"),
        "cluster.raft_election_timeout_min_ms must be less than \
         cluster.raft_election_timeout_max_ms (2000), got 2000"
    );
    assert_eq!(
        refused("member_down_after_ms = 300000\n"),
        "cluster.member_down_after_ms must be less than cluster.member_remove_after_ms \
         (300000), got 300000"
    );
}

/// README.md's table shows each `[cluster]` key's range as the code checks it, and `--help`
/// lists them.
#[test]
fn the_readme_and_help_show_every_cluster_key() {
    let readme = include_str!("../../../../README.md");
    let help = after_help();
    for range in cluster::NUMERIC_KEYS {
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
        assert!(help.contains(range.key), "{}", range.key);
    }
}

#[test]
fn storage_backend_null_stays_memory_in_cluster_mode() {
    let c = resolve(&["--cluster-port=0", "--storage=null"], None, &no_auth()).unwrap();
    assert_eq!(c.storage.backend, Backend::Memory);
}
