//! Short runs of every scenario against a real `topgun-server` (in this process, on real
//! loopback sockets) and against the ceiling, so that the tool cannot rot. The figures are
//! checked for consistency, not speed: performance is measured by `scripts/bench.sh`.

// Helpers outside #[test] functions panic on setup failures, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use topgun_bench::cli::{Common, ConnsArgs, FanoutArgs, QueryArgs, SyncArgs, WriteArgs};
use topgun_bench::client::Target;
use topgun_bench::report::Report;
use topgun_bench::scenario;
use topgun_server::Server;
use topgun_server::config::{AuthEnv, Cli, Config};
use topgun_server::storage::store::MemoryStore;

const SECRET: &str = "bench-smoke-secret-0123456789abcdef";

/// A server on a free port; stops when dropped.
struct Running {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn server(env: AuthEnv) -> Running {
    server_with(env, None).await
}

/// A server with `file` as its configuration file's text.
async fn server_with(env: AuthEnv, file: Option<&str>) -> Running {
    let cli = Cli {
        port: Some(0),
        host: Some("127.0.0.1".parse().unwrap()),
        ..Cli::default()
    };
    let config = Config::resolve(&cli, file, &env).unwrap();
    let server = Server::bind_with_store(config, Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running { addr, _stop: stop }
}

async fn no_auth_server() -> Running {
    server(AuthEnv {
        no_auth: Some("1".into()),
        ..AuthEnv::default()
    })
    .await
}

async fn ceiling() -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(topgun_bench::ceiling::serve(listener, async {
        let _ = stopped.await;
    }));
    Running { addr, _stop: stop }
}

fn common(addr: SocketAddr) -> Common {
    Common {
        url: format!("ws://{addr}/ws"),
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        ..Common::default()
    }
}

fn int(report: &Report, name: &str) -> u64 {
    report
        .get(name)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no integer {name} in {}", report.to_json()))
}

fn float(report: &Report, name: &str) -> f64 {
    report
        .get(name)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number {name} in {}", report.to_json()))
}

fn small_write() -> WriteArgs {
    WriteArgs {
        connections: 4,
        batch: 5,
        ..WriteArgs::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_counts_what_the_server_acknowledged() {
    let server = no_auth_server().await;
    let common = common(server.addr);
    let report = scenario::write::run(&Target::new(&common), &common, &small_write())
        .await
        .unwrap();
    let acked = int(&report, "acked_ops");
    assert!(acked > 0, "{}", report.to_json());
    assert_eq!(acked, int(&report, "acked_batches") * 5);
    assert_eq!(int(&report, "errors"), 0);
    assert_eq!(int(&report, "timeouts"), 0);
    assert_eq!(int(&report, "lost_connections"), 0);
    assert!(int(&report, "batch_latency_count") > 0);
    assert!(float(&report, "batch_latency_p99_ms") >= float(&report, "batch_latency_p50_ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_write_offers_the_rate_asked_for() {
    let server = no_auth_server().await;
    let mut common = common(server.addr);
    common.duration = Duration::from_secs(2);
    let args = WriteArgs {
        rate: Some(1000.0),
        ..small_write()
    };
    let report = scenario::write::run(&Target::new(&common), &common, &args)
        .await
        .unwrap();
    let rate = float(&report, "acked_ops_per_sec");
    assert!((800.0..=1200.0).contains(&rate), "{}", report.to_json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_runs_against_the_ceiling() {
    let ceiling = ceiling().await;
    let common = common(ceiling.addr);
    let report = scenario::write::run(&Target::new(&common), &common, &small_write())
        .await
        .unwrap();
    assert!(int(&report, "acked_ops") > 0, "{}", report.to_json());
    assert_eq!(int(&report, "errors") + int(&report, "timeouts"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_write_to_every_subscriber_once() {
    let server = no_auth_server().await;
    assert_every_event_arrives_once(&common(server.addr)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_runs_against_the_ceiling() {
    let ceiling = ceiling().await;
    assert_every_event_arrives_once(&common(ceiling.addr)).await;
}

/// A small `fanout` run: 20 subscribers, 200 writes a second.
async fn assert_every_event_arrives_once(common: &Common) {
    let args = &FanoutArgs {
        subscribers: 20,
        rate: 200.0,
        ..FanoutArgs::default()
    };
    let report = scenario::fanout::run(&Target::new(common), common, args)
        .await
        .unwrap();
    let acked = int(&report, "writes_acked");
    assert!(acked >= 200, "{}", report.to_json());
    assert_eq!(int(&report, "events_lost"), 0, "{}", report.to_json());
    assert_eq!(int(&report, "events_duplicated"), 0);
    assert_eq!(
        int(&report, "events_received"),
        acked * args.subscribers as u64
    );
    assert!(int(&report, "delivery_latency_count") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tells_every_matching_query_of_every_write_once() {
    let server = no_auth_server().await;
    let common = common(server.addr);
    let args = QueryArgs {
        queries: 200,
        matching: 0.05,
        rate: 200.0,
        connections: 4,
        ..QueryArgs::default()
    };
    let report = scenario::query::run(&Target::new(&common), &common, &args)
        .await
        .unwrap();
    let acked = int(&report, "writes_acked");
    assert!(acked >= 200, "{}", report.to_json());
    // 200 queries in 20 buckets: every write matches 10 of them.
    assert_eq!(int(&report, "updates_expected"), acked * 10);
    assert_eq!(int(&report, "updates_lost"), 0, "{}", report.to_json());
    assert_eq!(int(&report, "updates_duplicated"), 0);
    assert!(int(&report, "update_latency_count") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conns_reads_the_servers_memory_at_every_step() {
    let server = no_auth_server().await;
    let mut common = common(server.addr);
    common.duration = Duration::from_millis(300);
    let args = ConnsArgs {
        connections: 60,
        step: 30,
        // The server runs in this process.
        server_pid: Some(std::process::id()),
        settle: Duration::from_millis(100),
        ..ConnsArgs::default()
    };
    let report = scenario::conns::run(&Target::new(&common), &common, &args)
        .await
        .unwrap();
    assert_eq!(report.steps().len(), 2, "{}", report.to_json());
    assert_eq!(report.steps()[1]["connections"], 60);
    assert_eq!(int(&report, "connections"), 60);
    assert_eq!(int(&report, "lost"), 0);
    assert!(float(&report, "server_rss_mb") > 1.0);
    assert!(report.get("server_bytes_per_conn").is_some());
}

/// The sync scenario over 3,000 keys, 1 % changed, 500 puts per batch.
async fn small_sync(addr: std::net::SocketAddr) -> topgun_bench::report::Report {
    let common = common(addr);
    let args = SyncArgs {
        keys: 3000,
        changed: 0.01,
        batch: 500,
        ..SyncArgs::default()
    };
    scenario::sync::run(&Target::new(&common), &common, &args)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_walks_to_the_servers_root_and_resyncs_only_what_changed() {
    let server = no_auth_server().await;
    let report = small_sync(server.addr).await;
    let json = report.to_json();
    assert_eq!(json["full_roots_match"], true, "{json}");
    assert_eq!(json["resync_roots_match"], true, "{json}");
    assert_eq!(int(&report, "full_records"), 3000);
    assert_eq!(int(&report, "changed_keys"), 30);
    // Every changed key comes back, in leaves that also hold unchanged keys.
    let resync = int(&report, "resync_records");
    assert!((30..3000).contains(&resync), "{json}");
    assert!(int(&report, "resync_leaf_requests") <= 30, "{json}");
    assert!(
        float(&report, "resync_bytes_per_changed_byte") >= 1.0,
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preload_waits_out_a_servers_rate_limit() {
    // 3,000 ops against 500 a second with bursts of 1,000: most batches are refused in part
    // (OP_REJECTED 429, "retry in N ms") and must be sent again until every key is there.
    let server = server_with(
        AuthEnv {
            no_auth: Some("1".into()),
            ..AuthEnv::default()
        },
        Some("ops_per_sec_per_connection = 500"),
    )
    .await;
    let report = small_sync(server.addr).await;
    assert_eq!(int(&report, "full_records"), 3000, "{}", report.to_json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_servers_take_a_signed_token_and_refuse_a_wrong_one() {
    let server = server(AuthEnv {
        jwt_secret: Some(SECRET.into()),
        ..AuthEnv::default()
    })
    .await;
    let mut common = common(server.addr);
    common.jwt_secret = Some(SECRET.into());
    let report = scenario::write::run(&Target::new(&common), &common, &small_write())
        .await
        .unwrap();
    assert!(int(&report, "acked_ops") > 0);

    common.jwt_secret = Some("not-the-secret".into());
    let refused = scenario::write::run(&Target::new(&common), &common, &small_write())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("refused the token"), "{refused}");

    common.jwt_secret = None;
    let unauthenticated = scenario::write::run(&Target::new(&common), &common, &small_write())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        unauthenticated.contains("--jwt-secret"),
        "{unauthenticated}"
    );
}

/// The binary end to end: its JSON line, its exit status, and the ceiling it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_json_last_and_fails_clearly() {
    let server = no_auth_server().await;
    let url = format!("ws://{}/ws", server.addr);
    let bench = env!("CARGO_BIN_EXE_topgun-bench");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bench)
            .args(["write", "--url", &url, "-c", "2", "--duration", "500ms"])
            .args(["--warmup", "100ms", "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let json: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(json["scenario"], "write");
    assert!(json["acked_ops_per_sec"].as_f64().unwrap() > 0.0, "{json}");

    let refused = std::process::Command::new(bench)
        .args(["write", "--url", "ws://127.0.0.1:9/ws", "--duration", "1s"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert!(
        stderr.contains("cannot connect to ws://127.0.0.1:9/ws"),
        "{stderr}"
    );
}

#[test]
fn the_ceiling_binary_prints_its_port_and_stops_on_sigterm() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_topgun-bench"))
        .args(["ceiling", "--port", "0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().strip_prefix("PORT=").unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
