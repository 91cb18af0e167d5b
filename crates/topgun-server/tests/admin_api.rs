//! The admin REST API (COMPAT §3) over real HTTP against a real server: who may call it,
//! every policy route with its statuses, a policy changing what a connected WebSocket client
//! may do on its next request, policies surviving a restart, the maps catalog, and the public
//! status routes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value as Json, json};
use topgun_core::protocol::Message;
use topgun_core::protocol::messages::ClientOp;
use topgun_core::{NodeId, OrRecord, Timestamp, Value};

fn at() -> Timestamp {
    Timestamp::new(now_ms(), 0, NodeId::new("client").unwrap())
}

fn doc(id: u64, map: &str, key: &str, fields: &[(&str, Value)]) -> ClientOp {
    put_op(
        id,
        map,
        key,
        Value::Map(fields.iter().cloned().collect()),
        at(),
    )
}

/// The code of the op's refusal, or `None` when it was applied.
async fn refused(c: &mut Client, op: ClientOp) -> Option<u32> {
    send(c, &op_batch(vec![op])).await;
    let replies = drain(c, 9).await;
    replies.iter().find_map(|m| match m {
        Message::OpRejected(r) => r.code,
        _ => None,
    })
}

#[tokio::test]
async fn the_admin_plane_needs_a_token_with_the_admin_role() {
    let server = start(jwt(), None).await;
    let (status, body) = json_call(server.addr, "GET", "/api/admin/policies", &[], None).await;
    assert_eq!(
        (status, body),
        (
            401,
            json!({"code": 401, "message": "missing or invalid Bearer token"})
        )
    );
    let bad = vec!["Authorization: Bearer x.y.z".to_owned()];
    assert_eq!(
        json_call(server.addr, "GET", "/api/admin/maps", &bad, None)
            .await
            .0,
        401
    );
    let user = vec![admin_bearer(&["user"])];
    let (status, body) = json_call(server.addr, "GET", "/api/admin/policies", &user, None).await;
    assert_eq!(
        (status, body),
        (403, json!({"code": 403, "message": "admin role required"}))
    );
    for role in ["admin", "ADMIN"] {
        let admin = vec![admin_bearer(&[role])];
        let (status, body) =
            json_call(server.addr, "GET", "/api/admin/policies", &admin, None).await;
        assert_eq!((status, body), (200, json!({"policies": []})), "{role}");
    }
    // The public routes need nothing.
    let (status, body) = json_call(server.addr, "GET", "/api/auth/status", &[], None).await;
    assert_eq!((status, body), (200, json!({"authRequired": true})));
    let (status, body) = json_call(server.addr, "GET", "/api/status", &[], None).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["configured"].clone(), body["mode"].clone()),
        (json!(true), json!("normal"))
    );
    assert_eq!(
        json_call(server.addr, "POST", "/api/auth/token", &[], None)
            .await
            .0,
        501
    );
}

#[tokio::test]
async fn policies_are_created_listed_replaced_and_deleted_with_exact_statuses() {
    let server = start(jwt(), None).await;
    let admin = vec![admin_bearer(&["admin"])];
    let post = |body: Json| {
        json_call(
            server.addr,
            "POST",
            "/api/admin/policies",
            &admin,
            Some(body),
        )
    };

    let (status, created) = post(json!({
        "mapPattern": "owned-docs", "action": "write", "effect": "allow",
        "conditionExpr": "auth.id == data.ownerId"
    }))
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "a UUID when none is given");
    assert_eq!(
        created["condition"],
        json!({"op": "eq", "attribute": "ownerId", "valueRef": "auth.id"})
    );

    let (status, replaced) =
        post(json!({"id": id, "mapPattern": "docs.**", "action": "all", "effect": "deny"})).await;
    assert_eq!(
        (status, replaced["mapPattern"].clone()),
        (201, json!("docs.**"))
    );

    for (body, field) in [
        (
            json!({"mapPattern": "m", "action": "write", "effect": "allow", "conditionExpr": "auth.id ="}),
            "conditionExpr",
        ),
        (
            json!({"mapPattern": "m", "action": "fly", "effect": "allow"}),
            "action",
        ),
        (
            json!({"mapPattern": "m", "action": "read", "effect": "maybe"}),
            "effect",
        ),
        (
            json!({"mapPattern": "a..b", "action": "read", "effect": "allow"}),
            "mapPattern",
        ),
        (json!({"action": "read"}), "body"),
    ] {
        let (status, error) = post(body.clone()).await;
        assert_eq!(
            (status, error["field"].clone()),
            (400, json!(field)),
            "{body}: {error}"
        );
        assert_eq!(error["code"], 400);
    }
    let (_, error) = post(json!({"mapPattern": "m", "action": "write", "effect": "allow", "conditionExpr": "data.a = 1"})).await;
    assert!(
        error["message"].as_str().unwrap().contains("at column 8"),
        "{error}"
    );

    let (status, listed) = json_call(server.addr, "GET", "/api/admin/policies", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["policies"].as_array().unwrap().len(), 1, "{listed}");
    let path = format!("/api/admin/policies/{id}");
    assert_eq!(
        json_call(server.addr, "DELETE", &path, &admin, None)
            .await
            .0,
        204
    );
    assert_eq!(
        json_call(server.addr, "DELETE", &path, &admin, None)
            .await
            .0,
        204,
        "absent: 204 too"
    );
    let (_, listed) = json_call(server.addr, "GET", "/api/admin/policies", &admin, None).await;
    assert_eq!(listed, json!({"policies": []}));
}

/// Created over HTTP, a policy is in force for a connected client's next request; its
/// condition reads the record written; deleting it never reopens the server.
#[tokio::test]
async fn a_policy_changes_what_a_connected_client_may_do_next() {
    let server = start(jwt(), None).await;
    let admin = vec![admin_bearer(&["admin"])];
    let mut alice = connect(server.addr, "/ws").await;
    let jwt = token(&json!({"sub": "alice", "exp": now_secs() + 3600}), SECRET);
    send(&mut alice, &auth(&jwt)).await;
    drain(&mut alice, 0).await;
    let owned = |id, owner: &str| doc(id, "owned-docs", "d", &[("ownerId", Value::from(owner))]);
    assert_eq!(
        refused(&mut alice, owned(1, "bob")).await,
        None,
        "no policy yet: open"
    );

    let (status, _) = json_call(
        server.addr,
        "POST",
        "/api/admin/policies",
        &admin,
        Some(
            json!({"id": "own", "mapPattern": "owned-docs", "action": "write", "effect": "allow",
                    "conditionExpr": "auth.id == data.ownerId"}),
        ),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        refused(&mut alice, owned(2, "alice")).await,
        None,
        "her own record"
    );
    assert_eq!(
        refused(&mut alice, owned(3, "bob")).await,
        Some(403),
        "someone else's"
    );
    let other = doc(4, "todos", "t", &[("title", Value::from("x"))]);
    assert_eq!(
        refused(&mut alice, other).await,
        Some(403),
        "configured: default deny"
    );

    assert_eq!(
        json_call(
            server.addr,
            "DELETE",
            "/api/admin/policies/own",
            &admin,
            None
        )
        .await
        .0,
        204
    );
    let after = doc(5, "todos", "t", &[("title", Value::from("x"))]);
    assert_eq!(
        refused(&mut alice, after).await,
        Some(403),
        "deleting all never reopens"
    );
}

#[tokio::test]
async fn policies_survive_a_restart_and_the_catalog_counts_live_keys() {
    let dir = tempfile::tempdir().unwrap();
    let launch = || {
        let mut cmd = binary();
        cmd.env("TOPGUN_NO_AUTH", "1")
            .arg("--data-dir")
            .arg(dir.path());
        serve_binary(&mut cmd)
    };
    let mut server = launch();
    // No auth on loopback: the admin plane runs as the local admin. Deny wins over allow.
    for policy in [
        json!({"id": "frozen", "mapPattern": "frozen", "action": "write", "effect": "deny"}),
        json!({"id": "rest", "mapPattern": "**", "action": "all", "effect": "allow"}),
        json!({"id": "dropped", "mapPattern": "x", "action": "all", "effect": "deny"}),
    ] {
        let (status, _) = json_call(
            server.addr,
            "POST",
            "/api/admin/policies",
            &[],
            Some(policy),
        )
        .await;
        assert_eq!(status, 201);
    }
    let dropped = json_call(
        server.addr,
        "DELETE",
        "/api/admin/policies/dropped",
        &[],
        None,
    );
    assert_eq!(
        dropped.await.0,
        204,
        "deleted before the crash: stays deleted"
    );
    let mut c = connect(server.addr, "/ws").await;
    assert_eq!(refused(&mut c, doc(1, "frozen", "k", &[])).await, Some(403));
    let record = OrRecord {
        value: Value::from("milk"),
        tag: "t1".into(),
        timestamp: at(),
        ttl_ms: None,
    };
    let ops = vec![
        doc(2, "todos", "a", &[]),
        doc(3, "todos", "b", &[]),
        doc(4, "todos", "c", &[]),
        ClientOp {
            op_type: Some("REMOVE".into()),
            ..blank_op(5, "todos", "c")
        },
        or_add_op(6, "todos", "shared", record),
    ];
    send(&mut c, &op_batch(ops)).await;
    drain(&mut c, 1).await;
    let (status, catalog) = json_call(server.addr, "GET", "/api/admin/maps", &[], None).await;
    assert_eq!(status, 200);
    // a and b live, c removed, one OR key: the reserved policy map is not listed.
    assert_eq!(
        catalog,
        json!({"maps": [{"name": "todos", "entryCount": 3}]})
    );
    drop(c);
    // A crash, not a shutdown: the policies were durable when they were answered.
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let mut server = launch();
    let (_, listed) = json_call(server.addr, "GET", "/api/admin/policies", &[], None).await;
    assert_eq!(listed["policies"][0]["id"], "frozen", "{listed}");
    assert_eq!(listed["policies"].as_array().unwrap().len(), 2);
    let mut c = connect(server.addr, "/ws").await;
    assert_eq!(refused(&mut c, doc(7, "frozen", "k", &[])).await, Some(403));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Every route of the API, with its methods: what `/api/openapi.json` must document.
const API_ROUTES: &[(&str, &[&str])] = &[
    ("/api/admin/policies", &["get", "post"]),
    ("/api/admin/policies/{id}", &["delete"]),
    ("/api/admin/maps", &["get"]),
    ("/api/admin/indexes", &["get", "post"]),
    ("/api/admin/indexes/{map}/{attribute}", &["delete"]),
    ("/api/admin/indexes/{map}/{attribute}/status", &["get"]),
    ("/api/admin/indexes/vector", &["get", "post"]),
    ("/api/admin/indexes/vector/{map}/{name}", &["delete"]),
    ("/api/admin/indexes/vector/{map}/{name}/optimize", &["post"]),
    (
        "/api/admin/indexes/vector/{map}/{name}/optimize/{id}",
        &["delete"],
    ),
    ("/api/admin/indexes/vector/{map}/{name}/status", &["get"]),
    ("/api/status", &["get"]),
    ("/api/admin/settings", &["get", "put"]),
    ("/api/admin/cluster/status", &["get"]),
    ("/api/auth/status", &["get"]),
    ("/api/auth/login", &["post"]),
    ("/api/auth/token", &["post"]),
    ("/api/auth/refresh", &["post"]),
    ("/api/openapi.json", &["get"]),
];

#[tokio::test]
async fn the_openapi_document_lists_every_route_with_its_methods_and_needs_no_token() {
    let server = start(jwt(), None).await;
    let (status, doc) = json_call(server.addr, "GET", "/api/openapi.json", &[], None).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in API_ROUTES {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not documented"));
        let mut documented: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| ["get", "post", "put", "delete", "patch"].contains(k))
            .collect();
        documented.sort_unstable();
        assert_eq!(documented, *methods, "{path}");
    }
    assert_eq!(
        paths.len(),
        API_ROUTES.len(),
        "no undocumented extra routes"
    );
    // Each route exists: documented paths are served (401 without a token, not 404).
    for (path, methods) in API_ROUTES {
        let concrete = path
            .replace("{id}", "x")
            .replace("{map}", "m")
            .replace("{attribute}", "a")
            .replace("{name}", "n");
        let method = methods[0].to_ascii_uppercase();
        let method: &'static str = Box::leak(method.into_boxed_str());
        let (status, _) = json_call(server.addr, method, &concrete, &[], None).await;
        assert_ne!(status, 404, "{method} {concrete}");
        assert_ne!(status, 405, "{method} {concrete}");
    }
    let schemes = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(schemes["scheme"], "bearer", "{schemes}");
}

/// A JWT server holding four `articles`, two with a `title`.
async fn articles() -> Running {
    let server = start(jwt(), None).await;
    let mut c = connect(server.addr, "/ws").await;
    let jwt = token(
        &json!({"sub": "root", "roles": ["ADMIN"], "exp": now_secs() + 3600}),
        SECRET,
    );
    send(&mut c, &auth(&jwt)).await;
    drain(&mut c, 0).await;
    let ops = vec![
        doc(1, "articles", "a", &[("title", Value::from("one"))]),
        doc(2, "articles", "b", &[("title", Value::from("two"))]),
        doc(3, "articles", "c", &[("body", Value::from("no title"))]),
        doc(4, "articles", "d", &[("title", Value::Nil)]),
    ];
    send(&mut c, &op_batch(ops)).await;
    drain(&mut c, 1).await;
    server
}

async fn post_index(addr: std::net::SocketAddr, body: Json, headers: Vec<String>) -> (u16, Json) {
    json_call(addr, "POST", "/api/admin/indexes", &headers, Some(body)).await
}

/// The MCP package's setup call, and creation's statuses: 201 with the records that have the
/// attribute, 401/403 without an admin token, 409 for a second, 400 for bad fields and
/// `vector`.
#[tokio::test]
async fn indexes_are_created_with_exact_statuses() {
    let server = articles().await;
    let admin = vec![admin_bearer(&["admin"])];
    let post = |body, headers| post_index(server.addr, body, headers);
    let inverted = json!({"mapName": "articles", "attribute": "title", "indexType": "inverted"});
    assert_eq!(post(inverted.clone(), vec![]).await.0, 401);
    assert_eq!(
        post(inverted.clone(), vec![admin_bearer(&["user"])])
            .await
            .0,
        403
    );
    let (status, created) = post(inverted.clone(), admin.clone()).await;
    assert_eq!(
        (status, created),
        (
            201,
            json!({"mapName": "articles", "attribute": "title", "indexType": "inverted", "entryCount": 2})
        )
    );
    let (status, error) = post(inverted, admin.clone()).await;
    assert_eq!(
        (status, error["code"].clone()),
        (409, json!(409)),
        "{error}"
    );

    for (body, field) in [
        (
            json!({"mapName": "articles", "attribute": "v", "indexType": "vector"}),
            "indexType",
        ),
        (
            json!({"mapName": "articles", "attribute": "v", "indexType": "btree"}),
            "indexType",
        ),
        (
            json!({"mapName": "", "attribute": "v", "indexType": "hash"}),
            "mapName",
        ),
        (
            json!({"mapName": "__topgun_indexes", "attribute": "v", "indexType": "hash"}),
            "mapName",
        ),
        (
            json!({"mapName": "m", "attribute": "", "indexType": "hash"}),
            "attribute",
        ),
        (json!({"mapName": "m", "indexType": "hash"}), "body"),
    ] {
        let (status, error) = post(body.clone(), admin.clone()).await;
        assert_eq!(
            (status, error["field"].clone()),
            (400, json!(field)),
            "{body}: {error}"
        );
    }
}

/// Listing, backfill status and deletion: 404 for an index that is not there, the vector
/// routes 501 until vector search exists.
#[tokio::test]
async fn indexes_are_listed_followed_and_deleted_with_exact_statuses() {
    let server = articles().await;
    let admin = vec![admin_bearer(&["admin"])];
    let post = |body, headers| post_index(server.addr, body, headers);
    let inverted = json!({"mapName": "articles", "attribute": "title", "indexType": "inverted"});
    assert_eq!(post(inverted, admin.clone()).await.0, 201);
    let (status, _) = post(
        json!({"mapName": "notes", "attribute": "at", "indexType": "navigable"}),
        admin.clone(),
    )
    .await;
    assert_eq!(status, 201);

    let (status, listed) = json_call(server.addr, "GET", "/api/admin/indexes", &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed,
        json!({"indexes": [
            {"mapName": "articles", "attribute": "title", "indexType": "inverted", "entryCount": 2},
            {"mapName": "notes", "attribute": "at", "indexType": "navigable", "entryCount": 0},
        ]})
    );
    let (status, progress) = json_call(
        server.addr,
        "GET",
        "/api/admin/indexes/articles/title/status",
        &admin,
        None,
    )
    .await;
    assert_eq!(
        (status, progress),
        (
            200,
            json!({"mapName": "articles", "attribute": "title", "total": 2, "processed": 2, "done": true, "rebuildType": "backfill"})
        )
    );
    let unknown = "/api/admin/indexes/articles/body";
    assert_eq!(
        json_call(
            server.addr,
            "GET",
            &format!("{unknown}/status"),
            &admin,
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        json_call(server.addr, "DELETE", unknown, &admin, None)
            .await
            .0,
        404
    );
    assert_eq!(
        json_call(
            server.addr,
            "DELETE",
            "/api/admin/indexes/notes/at",
            &[],
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        json_call(
            server.addr,
            "DELETE",
            "/api/admin/indexes/notes/at",
            &admin,
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        json_call(
            server.addr,
            "DELETE",
            "/api/admin/indexes/notes/at",
            &admin,
            None
        )
        .await
        .0,
        404
    );
    let (_, listed) = json_call(server.addr, "GET", "/api/admin/indexes", &admin, None).await;
    assert_eq!(listed["indexes"].as_array().unwrap().len(), 1, "{listed}");
    // The reserved map holding the catalog is not a client map.
    let (_, maps) = json_call(server.addr, "GET", "/api/admin/maps", &admin, None).await;
    assert_eq!(
        maps,
        json!({"maps": [{"name": "articles", "entryCount": 4}]})
    );
}

/// The vector index routes answer 501 to an admin until vector search exists, and are
/// guarded like the others.
#[tokio::test]
async fn vector_index_routes_are_not_offered_yet() {
    let server = start(jwt(), None).await;
    let admin = vec![admin_bearer(&["admin"])];
    let (status, error) = json_call(
        server.addr,
        "POST",
        "/api/admin/indexes/vector",
        &admin,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 501, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("vector"),
        "{error}"
    );
    assert_eq!(
        json_call(server.addr, "GET", "/api/admin/indexes/vector", &[], None)
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn the_index_catalog_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let launch = || {
        let mut cmd = binary();
        cmd.env("TOPGUN_NO_AUTH", "1")
            .arg("--data-dir")
            .arg(dir.path());
        serve_binary(&mut cmd)
    };
    let mut server = launch();
    for attribute in ["title", "gone"] {
        let body = json!({"mapName": "todos", "attribute": attribute, "indexType": "hash"});
        let (status, _) =
            json_call(server.addr, "POST", "/api/admin/indexes", &[], Some(body)).await;
        assert_eq!(status, 201);
    }
    assert_eq!(
        json_call(
            server.addr,
            "DELETE",
            "/api/admin/indexes/todos/gone",
            &[],
            None
        )
        .await
        .0,
        204
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let mut server = launch();
    let (_, listed) = json_call(server.addr, "GET", "/api/admin/indexes", &[], None).await;
    assert_eq!(
        listed,
        json!({"indexes": [{"mapName": "todos", "attribute": "title", "indexType": "hash", "entryCount": 0}]})
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// The store holds at most 1,024 policies: the next new one is refused with 400 naming `id`
/// and changes nothing, while replacing an existing one still works.
#[tokio::test]
async fn the_policy_store_is_bounded_at_1024() {
    let mut env = jwt();
    // Behind a trusted proxy each forwarded address has its own rate-limit bucket, so that
    // 1,025 requests need not wait for the per-address limit.
    env.trusted_proxy = Some("1".into());
    let server = start(env, None).await;
    let admin = admin_bearer(&["admin"]);
    let policy = |id: &str| json!({"id": id, "mapPattern": format!("m-{id}"), "action": "read", "effect": "allow"});
    let post = |n: usize, body: Json| {
        let headers = vec![
            admin.clone(),
            format!("X-Forwarded-For: 10.{}.{}.1", n / 250, n % 250),
        ];
        async move {
            json_call(
                server.addr,
                "POST",
                "/api/admin/policies",
                &headers,
                Some(body),
            )
            .await
        }
    };
    for n in 0..1_024 {
        let (status, body) = post(n, policy(&format!("p{n}"))).await;
        assert_eq!(status, 201, "policy {n}: {body}");
    }
    let (status, error) = post(1_024, policy("one-too-many")).await;
    assert_eq!(
        (status, error["field"].clone()),
        (400, json!("id")),
        "{error}"
    );
    let (status, _) = post(1_025, policy("p7")).await;
    assert_eq!(status, 201, "an existing id is replaced, not added");
    let headers = vec![admin.clone(), "X-Forwarded-For: 10.200.0.1".to_owned()];
    let (_, listed) = json_call(server.addr, "GET", "/api/admin/policies", &headers, None).await;
    assert_eq!(listed["policies"].as_array().unwrap().len(), 1_024);
}
