//! The admin plane beyond policies and catalogs, over real HTTP against a real server:
//! settings, cluster status, login, the per-IP rate limit, CORS and backups on the admin
//! plane (COMPAT §3.1, §3.6–§3.8).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value as Json, json};
use topgun_core::protocol::Message;
use topgun_server::clock::now_ms;
use topgun_server::config::Env;

fn jwt_with(change: impl FnOnce(&mut Env)) -> Env {
    let mut env = jwt();
    change(&mut env);
    env
}

#[tokio::test]
async fn settings_are_shown_and_changed_with_exact_statuses() {
    let server = start(jwt(), None).await;
    let admin = vec![admin_bearer(&["admin"])];
    let path = "/api/admin/settings";
    assert_eq!(json_call(server.addr, "GET", path, &[], None).await.0, 401);
    assert_eq!(
        json_call(server.addr, "GET", path, &[admin_bearer(&["user"])], None)
            .await
            .0,
        403
    );
    let (status, settings) = json_call(server.addr, "GET", path, &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(settings["partitionCount"], 271);
    assert_eq!(settings["host"], "127.0.0.1");
    assert_eq!(settings["port"], server.addr.port());
    assert_eq!(settings["requireAuth"], true);
    assert_eq!(settings["gcIntervalMs"], 3_600_000);
    for field in [
        "nodeId",
        "defaultOperationTimeoutMs",
        "maxConcurrentOperations",
        "maxValueBytes",
    ] {
        assert!(settings.get(field).is_some(), "{field}: {settings}");
    }

    let (status, changed) = json_call(
        server.addr,
        "PUT",
        path,
        &admin,
        Some(json!({"gcIntervalMs": 5000})),
    )
    .await;
    assert_eq!(
        (status, changed["gcIntervalMs"].clone()),
        (200, json!(5000))
    );
    let one = Some(json!({"maxConcurrentOperations": 1}));
    let (status, changed) = json_call(server.addr, "PUT", path, &admin, one).await;
    assert_eq!(
        (status, changed["maxConcurrentOperations"].clone()),
        (200, json!(1))
    );
    for (body, field) in [
        (json!({"gcIntervalMs": 60000, "port": 1}), "port"),
        (json!({"nodeId": "other"}), "nodeId"),
        (json!({"gcIntervalMs": 1}), "gcIntervalMs"),
        (
            json!({"maxConcurrentOperations": 0}),
            "maxConcurrentOperations",
        ),
        (
            json!({"maxConcurrentOperations": 100_000_000}),
            "maxConcurrentOperations",
        ),
        (
            json!({"maxConcurrentOperations": 8, "logLevel": "debug"}),
            "logLevel",
        ),
        (json!({"colour": "blue"}), "colour"),
        // Embedded, the host program owns logging: refused, never pretended.
        (json!({"logLevel": "debug"}), "logLevel"),
    ] {
        let (status, error) = json_call(server.addr, "PUT", path, &admin, Some(body.clone())).await;
        assert_eq!(
            (status, error["field"].clone()),
            (400, json!(field)),
            "{body}: {error}"
        );
    }
    let (status, error) = json_call(server.addr, "PUT", path, &admin, None).await;
    assert_eq!((status, error["field"].clone()), (400, json!("body")));
    let (_, settings) = json_call(server.addr, "GET", path, &admin, None).await;
    assert_eq!(
        (
            settings["gcIntervalMs"].clone(),
            settings["maxConcurrentOperations"].clone()
        ),
        (json!(5000), json!(1)),
        "refused bodies changed nothing"
    );
    assert_eq!(
        json_call(server.addr, "PUT", path, &[], Some(json!({})))
            .await
            .0,
        401
    );
}

/// The binary wires its log filter to the API: a good filter is in force at once, a bad one
/// is refused and the old one stays.
#[tokio::test]
async fn the_binary_changes_its_log_filter_at_once() {
    let mut cmd = binary();
    cmd.env("TOPGUN_NO_AUTH", "1")
        .env("STORAGE_BACKEND", "null");
    let server = serve_binary(&mut cmd);
    let path = "/api/admin/settings";
    let (_, settings) = json_call(server.addr, "GET", path, &[], None).await;
    assert_eq!(settings["logLevel"], "warn");
    let (status, settings) = json_call(
        server.addr,
        "PUT",
        path,
        &[],
        Some(json!({"logLevel": "info,topgun_server=debug"})),
    )
    .await;
    assert_eq!(
        (status, settings["logLevel"].clone()),
        (200, json!("info,topgun_server=debug"))
    );
    let (status, error) = json_call(
        server.addr,
        "PUT",
        path,
        &[],
        Some(json!({"logLevel": "info,[=x"})),
    )
    .await;
    assert_eq!(
        (status, error["field"].clone()),
        (400, json!("logLevel")),
        "{error}"
    );
    let (_, settings) = json_call(server.addr, "GET", path, &[], None).await;
    assert_eq!(settings["logLevel"], "info,topgun_server=debug");
}

#[tokio::test]
async fn a_lone_node_reports_itself_owning_every_partition() {
    let server = start(jwt(), None).await;
    let path = "/api/admin/cluster/status";
    assert_eq!(json_call(server.addr, "GET", path, &[], None).await.0, 401);
    assert_eq!(
        json_call(server.addr, "GET", path, &[admin_bearer(&["user"])], None)
            .await
            .0,
        403
    );
    let (status, cluster) =
        json_call(server.addr, "GET", path, &[admin_bearer(&["ADMIN"])], None).await;
    assert_eq!(status, 200);
    let node = &cluster["nodes"][0];
    assert_eq!(cluster["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(node["address"], server.addr.to_string());
    assert_eq!(
        (node["status"].clone(), node["partitionCount"].clone()),
        (json!("healthy"), json!(271))
    );
    assert!(node["memory"].as_u64().unwrap() > 1 << 20, "{node}");
    assert_ne!(node["nodeId"], "local");
    let partitions = cluster["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 271);
    assert!(
        partitions
            .iter()
            .all(|p| p["ownerNodeId"] == node["nodeId"])
    );
    assert_eq!(
        (
            cluster["totalPartitions"].clone(),
            cluster["isRebalancing"].clone()
        ),
        (json!(271), json!(false))
    );
}

#[tokio::test]
async fn login_gives_an_admin_token_for_the_configured_password_only() {
    let server = start(
        jwt_with(|env| env.admin_password = Some("hunter2".into())),
        None,
    )
    .await;
    let login = |body: Json| json_call(server.addr, "POST", "/api/auth/login", &[], Some(body));
    let (status, answer) = login(json!({"username": "admin", "password": "hunter2"})).await;
    assert_eq!(status, 200, "{answer}");
    let token = answer["token"].as_str().unwrap();
    let auth = vec![format!("Authorization: Bearer {token}")];
    assert_eq!(
        json_call(server.addr, "GET", "/api/admin/maps", &auth, None)
            .await
            .0,
        200
    );
    for wrong in [
        json!({"username": "admin", "password": "hunter3"}),
        json!({"username": "root", "password": "hunter2"}),
        json!({"username": "admin", "password": ""}),
    ] {
        assert_eq!(
            login(wrong).await,
            (401, json!({"code": 401, "message": "invalid credentials"}))
        );
    }
    let (status, error) = login(json!({"username": "admin"})).await;
    assert_eq!((status, error["field"].clone()), (400, json!("body")));
}

/// Failed logins count against the address like failed `AUTH`s: past the budget (10 a
/// minute by default) even the right password is refused for a while.
#[tokio::test]
async fn failed_logins_are_counted_per_address() {
    let server = start(
        jwt_with(|env| env.admin_password = Some("hunter2".into())),
        None,
    )
    .await;
    let login = |password: &str| {
        let body = json!({"username": "admin", "password": password});
        json_call(server.addr, "POST", "/api/auth/login", &[], Some(body))
    };
    for _ in 0..10 {
        assert_eq!(login("nope").await.0, 401);
    }
    let (status, error) = login("hunter2").await;
    assert_eq!(status, 429, "{error}");
}

#[tokio::test]
async fn login_answers_500_when_it_cannot_issue_tokens() {
    let server = start(jwt(), None).await;
    let body = json!({"username": "admin", "password": "x"});
    let (status, error) = json_call(
        server.addr,
        "POST",
        "/api/auth/login",
        &[],
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 500, "no password: {error}");
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rs256-public.pem"
    ))
    .unwrap();
    let rs256 = Env {
        jwt_secret: Some(pem),
        admin_password: Some("x".into()),
        ..Env::default()
    };
    let server = start(rs256, None).await;
    let (status, error) = json_call(server.addr, "POST", "/api/auth/login", &[], Some(body)).await;
    assert_eq!(status, 500, "RS256: {error}");
    assert!(
        error["message"].as_str().unwrap().contains("HS256"),
        "{error}"
    );
}

/// 100 requests a second with bursts of 50 per address on `/api/admin/*` and `/api/auth/*`;
/// other routes are not counted; behind a trusted proxy each forwarded client has its own.
#[tokio::test]
async fn the_admin_and_auth_routes_are_rate_limited_per_address() {
    let server = start(jwt_with(|env| env.trusted_proxy = Some("1".into())), None).await;
    let from = |ip: &str| vec![format!("X-Forwarded-For: {ip}, 10.9.9.9")];
    // The burst passes whatever the pace; past it, requests faster than 100/s are refused
    // (the bucket's exact arithmetic is unit-tested in `http::edge`).
    for n in 0..50 {
        let reply = json_request(
            server.addr,
            "GET",
            "/api/auth/status",
            &from("192.0.2.1"),
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "request {n} of the burst");
    }
    let mut refusal = None;
    for _ in 0..1000 {
        let reply = json_request(
            server.addr,
            "GET",
            "/api/admin/maps",
            &from("192.0.2.1"),
            None,
        )
        .await;
        if reply.status == 429 {
            refusal = Some(reply);
            break;
        }
    }
    let refusal = refusal.expect("a 429 once past the burst");
    assert!(refusal.header("retry-after").is_some());
    let error: Json = serde_json::from_slice(&refusal.body).unwrap();
    assert_eq!(error["code"], 429, "{error}");
    assert_eq!(
        json_call(
            server.addr,
            "GET",
            "/api/auth/status",
            &from("192.0.2.2"),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        json_call(server.addr, "GET", "/api/status", &from("192.0.2.1"), None)
            .await
            .0,
        200,
        "not limited"
    );
}

#[tokio::test]
async fn cors_answers_preflights_for_listed_origins_only() {
    let env = jwt_with(|env| env.cors_origins = Some("https://app.example".into()));
    let server = start(env, None).await;
    let preflight = |origin: &str| {
        let headers = vec![
            format!("Origin: {origin}"),
            "Access-Control-Request-Method: POST".to_owned(),
            "Access-Control-Request-Headers: authorization, content-type".to_owned(),
        ];
        async move { json_request(server.addr, "OPTIONS", "/sync", &headers, None).await }
    };
    let reply = preflight("https://app.example").await;
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        reply
            .header("access-control-allow-headers")
            .unwrap()
            .contains("authorization")
    );
    let reply = preflight("https://evil.example").await;
    assert_eq!(reply.header("access-control-allow-origin"), None);
    let origin = vec!["Origin: https://app.example".to_owned()];
    let reply = json_request(server.addr, "GET", "/api/status", &origin, None).await;
    assert_eq!(
        (reply.status, reply.header("access-control-allow-origin")),
        (200, Some("https://app.example"))
    );
    let reply = json_request(server.addr, "GET", "/metrics", &origin, None).await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        None,
        "only /sync and /api/*"
    );

    let plain = start(jwt(), None).await;
    let reply = json_request(plain.addr, "GET", "/api/status", &origin, None).await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        None,
        "none by default"
    );
}

#[tokio::test]
async fn backups_are_on_the_admin_plane_and_the_old_path_stays() {
    let server = start(jwt(), None).await;
    assert_eq!(
        json_request(server.addr, "GET", "/api/admin/backup", &[], None)
            .await
            .status,
        401
    );
    assert_eq!(
        json_request(
            server.addr,
            "GET",
            "/api/admin/backup",
            &[admin_bearer(&["user"])],
            None
        )
        .await
        .status,
        403
    );
    for role in ["admin", "ADMIN"] {
        let reply = json_request(
            server.addr,
            "GET",
            "/api/admin/backup",
            &[admin_bearer(&[role])],
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{role}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/octet-stream")
        );
    }
    assert_eq!(
        json_request(
            server.addr,
            "GET",
            "/admin/backup",
            &[admin_bearer(&["ADMIN"])],
            None
        )
        .await
        .status,
        200
    );
}

/// `TOPGUN_ADMIN_DIR` serves a dashboard under `/admin`: its files with their types, its
/// routes as `index.html`, nothing outside the directory, and no token needed (the files hold
/// no data; the dashboard signs in through the API).
#[tokio::test]
async fn a_dashboard_directory_is_served_under_admin_and_nothing_outside_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("dashboard");
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<title>TopGun admin</title>").unwrap();
    std::fs::write(dir.join("assets/app.js"), "console.log(1)").unwrap();
    std::fs::write(dir.join(".env"), "SECRET=1").unwrap();
    std::fs::write(root.path().join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(root.path().join("secret.txt"), dir.join("leak.txt")).unwrap();
    let dashboard = dir.to_str().unwrap().to_owned();
    let server = start(jwt_with(|e| e.admin_dir = Some(dashboard)), None).await;
    let get = |path: &str| http_request_async(server.addr, "GET", path.to_owned(), vec![], vec![]);

    for path in ["/admin", "/admin/", "/admin/policies/p1", "/admin/backup"] {
        let page = get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(page.body, b"<title>TopGun admin</title>", "{path}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
    }
    let script = get("/admin/assets/app.js").await;
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    for path in [
        "/admin/missing.js",
        "/admin/.env",
        "/admin/leak.txt",
        "/admin/../secret.txt",
        "/admin/assets/../../secret.txt",
    ] {
        let refused = get(path).await;
        assert_eq!(
            refused.status,
            404,
            "{path}: {:?}",
            String::from_utf8_lossy(&refused.body)
        );
    }
    // The backup moved to the API path once a dashboard is served.
    let backup = http_request_async(
        server.addr,
        "GET",
        "/api/admin/backup".into(),
        vec![admin_bearer(&["admin"])],
        vec![],
    )
    .await;
    assert_eq!(backup.status, 200);
}

/// With the bound on queued data requests lowered to one, the data plane goes on serving:
/// requests wait their turn, none is refused.
#[tokio::test]
async fn a_lowered_operations_bound_still_serves_every_write() {
    let server = start(jwt(), None).await;
    let admin = vec![admin_bearer(&["admin"])];
    let path = "/api/admin/settings";
    let one = Some(json!({"maxConcurrentOperations": 1}));
    assert_eq!(
        json_call(server.addr, "PUT", path, &admin, one).await.0,
        200
    );
    let mut ws = connect(server.addr, "/ws").await;
    let user = json!({"sub": "u", "roles": ["user"], "exp": now_secs() + 3600});
    send(&mut ws, &auth(&token(&user, SECRET))).await;
    let at = topgun_core::Timestamp::new(now_ms(), 0, topgun_core::NodeId::new("c").unwrap());
    let one = topgun_core::Value::from(1);
    let ops = (0..50)
        .map(|i| put_op(i, "todos", &format!("k{i}"), one.clone(), at.clone()))
        .collect();
    send(&mut ws, &op_batch(ops)).await;
    loop {
        match recv(&mut ws).await.unwrap() {
            Message::OpAck(ack) if ack.last_id == "49" => break,
            Message::AuthRequired(_) | Message::AuthAck(_) | Message::OpAck(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let (_, settings) = json_call(server.addr, "GET", path, &admin, None).await;
    assert_eq!(settings["maxConcurrentOperations"], 1);
}
