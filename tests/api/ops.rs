//! Health, readiness, the Meta handshake, API keys, the exposition and start-up rules.

use std::process::Command;

use messaging_exporter::clock::ManualClock;
use secrecy::SecretString;

use crate::helpers::{config_for, template_hook, Backend, TestApp, TestDb, T0_MS};

#[tokio::test]
async fn health_readiness_and_the_metrics_exposition() {
    let db = TestDb::new(Backend::Postgres).await;
    let app = TestApp::spawn(&db).await;
    let get = |p: &str| app.client.get(app.url(p)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    // Families appear with their first series: give each of them one.
    app.post_json(
        "/v1/events/sent",
        &template_hook("wamid.o", "919812345678", "promo", "marketing", T0_MS),
    )
    .await;
    app.post_meta(&crate::helpers::meta_status(
        "wamid.o",
        "read",
        T0_MS / 1000 + 9,
        "919812345678",
    ))
    .await;
    app.post_meta(&crate::helpers::meta_status(
        "wamid.f",
        "failed",
        T0_MS / 1000 + 9,
        "919812345678",
    ))
    .await;
    app.post_meta(&crate::helpers::meta_inbound(
        "wamid.i",
        "919812345678",
        T0_MS / 1000 + 20,
    ))
    .await;
    app.post_json(
        "/v1/events/sent",
        &template_hook(
            "wamid.o2",
            "919812345678",
            "promo",
            "marketing",
            T0_MS + 30_000,
        ),
    )
    .await;
    app.post_meta(&crate::helpers::meta_status(
        "wamid.o2",
        "delivered",
        T0_MS / 1000 + 40,
        "919812345678",
    ))
    .await;
    app.post_meta(&crate::helpers::meta_status(
        "wamid.o2",
        "read",
        T0_MS / 1000 + 50,
        "919812345678",
    ))
    .await;
    let ai = serde_json::json!({"operation": "reply", "model": "m", "latency_ms": 5, "outcome": "ok", "intent": "greet",
        "input_tokens": 1, "output_tokens": 1, "cost": 0.1, "currency": "USD"});
    app.post_json("/v1/events/ai", &ai).await;
    app.clock.advance_ms(31_000);
    app.wait_for("the failed message to be counted", |s| {
        s.sum("messaging_message_errors_total", &[]) == 1.0
    })
    .await;
    let resp = get("/metrics").await.unwrap();
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"));
    for family in [
        "messaging_outbound_messages",
        "messaging_inbound_messages",
        "messaging_message_errors",
        "messaging_cost",
        "messaging_delivery_latency_seconds",
        "messaging_read_latency_seconds",
        "messaging_response_latency_seconds",
        "messaging_ai_latency_seconds",
        "messaging_ai_requests",
        "messaging_ai_tokens",
        "messaging_ai_cost",
        "messaging_ai_intents",
        "messaging_sessions_active",
        "messaging_webhook_events",
        "messaging_label_overflow",
        "messaging_exporter_build_info",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} is not exposed"
        );
    }
    assert!(text.contains(&format!(
        "messaging_exporter_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert_eq!(get("/nope").await.unwrap().status(), 404);
}

#[tokio::test]
async fn meta_handshake_echoes_the_challenge_only_for_the_right_token() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = config_for(&db.url);
    config.meta_verify_token = Some(SecretString::from("verify-me"));
    let app = TestApp::spawn_with(config, ManualClock::new(T0_MS)).await;
    let hs = |q: &str| {
        app.client
            .get(app.url(&format!("/webhooks/meta?{q}")))
            .send()
    };
    let ok = hs("hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=verify-me")
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    for q in [
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong",
        "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=verify-me",
        "hub.mode=subscribe&hub.verify_token=verify-me",
        "",
    ] {
        assert_eq!(hs(q).await.unwrap().status(), 403, "{q}");
    }
}

#[tokio::test]
async fn v1_routes_need_the_api_key_when_one_is_set_and_webhooks_do_not() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = config_for(&db.url);
    config.api_key = Some(SecretString::from("0123456789abcdef-key"));
    let app = TestApp::spawn_with(config, ManualClock::new(T0_MS)).await;
    let hook = template_hook("wamid.k", "919812345678", "promo", "marketing", T0_MS);
    for path in ["/v1/events/sent", "/v1/events/ai"] {
        for auth in [
            None,
            Some(("authorization", "Bearer wrong")),
            Some(("x-api-key", "0123456789abcdef-ke")),
        ] {
            let mut req = app.client.post(app.url(path)).json(&hook);
            if let Some((k, v)) = auth {
                req = req.header(k, v);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{path} with {auth:?}");
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    let bearer = app
        .client
        .post(app.url("/v1/events/sent"))
        .bearer_auth("0123456789abcdef-key")
        .json(&hook)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 202);
    let header = app
        .client
        .post(app.url("/v1/events/sent"))
        .header("x-api-key", "0123456789abcdef-key")
        .json(&hook)
        .send()
        .await
        .unwrap();
    assert_eq!(
        header.json::<serde_json::Value>().await.unwrap()["duplicates"],
        1
    );
    assert_eq!(app.get("/metrics").await.status(), 200);
}

#[test]
fn refuses_to_listen_publicly_without_an_api_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_messaging-exporter"))
        .args(["--listen", "0.0.0.0:0", "--database-url", "sqlite::memory:"])
        .env_remove("API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("API_KEY") && stderr.contains("--allow-unauthenticated"),
        "{stderr}"
    );
}

#[test]
fn starts_on_embedded_sqlite_creating_the_file_and_stops_on_sigterm() {
    let dir = crate::helpers::tempdir::Dir::new();
    let db_path = dir.path.join("fresh.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_messaging-exporter"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            &format!("sqlite://{}", db_path.display()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Ready once /healthz answers (binding the port comes before migrations and signal handling).
    while !healthz_ok(port) {
        assert!(
            std::time::Instant::now() < deadline,
            "the exporter did not start serving"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(db_path.exists(), "the SQLite file is created when absent");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM, got {status:?}");
    let mut logs = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut logs).unwrap();
    assert!(
        logs.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{logs}"
    );
    assert!(
        logs.contains("META_APP_SECRET"),
        "missing secrets are warned about: {logs}"
    );
}

fn healthz_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ =
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}

#[tokio::test]
async fn every_embedded_sqlite_connection_commits_through_a_synced_wal_with_journals_in_memory() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = messaging_exporter::store::Db::connect(&db.url, &Default::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    // Several connections held at once, so that each is a separately opened one.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(store.pool().acquire().await.unwrap());
    }
    for conn in &mut held {
        assert_eq!(pragma(conn, "journal_mode").await, "wal");
        // 2 = FULL: the WAL is synced at every commit, so an answered request survives a crash.
        assert_eq!(pragma(conn, "synchronous").await, "2");
        // 2 = MEMORY: statement journals are not written to a file.
        assert_eq!(pragma(conn, "temp_store").await, "2");
    }
}

async fn pragma(conn: &mut sqlx::AnyConnection, name: &str) -> String {
    let row = sqlx::query(&format!("PRAGMA {name}"))
        .fetch_one(conn)
        .await
        .unwrap();
    // journal_mode answers text, the others numbers.
    sqlx::Row::try_get::<String, _>(&row, 0)
        .or_else(|_| sqlx::Row::try_get::<i64, _>(&row, 0).map(|n| n.to_string()))
        .unwrap()
}
