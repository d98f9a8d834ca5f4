//! Slow and greedy clients: header and request timeouts and the concurrency cap keep the
//! exporter serving real traffic.

use std::time::{Duration, Instant};

use messaging_exporter::clock::ManualClock;
use messaging_exporter::providers::meta;
use secrecy::SecretString;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{config_for, meta_status, Backend, TestApp, TestDb, T0_MS};

async fn app_with(header_ms: u64, request_ms: u64, max_concurrent: usize) -> (TestDb, TestApp) {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = config_for(&db.url);
    config.header_read_timeout_ms = header_ms;
    config.request_timeout_ms = request_ms;
    config.max_concurrent_requests = max_concurrent;
    let app = TestApp::spawn_with(config, ManualClock::new(T0_MS)).await;
    (db, app)
}

/// Reads until the server closes the connection, returning what it sent.
async fn read_until_closed(conn: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(within, conn.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

/// Webhooks processed, as `/metrics` says.
async fn processed(app: &TestApp) -> f64 {
    let s = app.scrape().await;
    s.sum(
        "messaging_webhook_events_total",
        &[("outcome", "processed")],
    )
}

/// True while the server has neither closed the connection nor written to it.
fn still_waiting(conn: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(conn.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_is_cut_off_and_real_requests_are_served_meanwhile() {
    // The header timeout is long so that "meanwhile" is decided by order, not by a clock: real
    // requests answered while every slow connection is still open were not queued behind them,
    // however slow this machine's disk makes each webhook's commit.
    let header_timeout = Duration::from_secs(10);
    let (_db, app) = app_with(header_timeout.as_millis() as u64, 5_000, 1024).await;
    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut c = TcpStream::connect(app.addr).await.unwrap();
        c.write_all(b"POST /webhooks/meta HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(c);
    }
    let real_requests = async {
        for i in 0..20 {
            let body = meta_status(&format!("wamid.s{i}"), "sent", T0_MS / 1000, "919812345678");
            assert_eq!(app.post_meta(&body).await.status(), 200);
        }
    };
    tokio::time::timeout(header_timeout, real_requests)
        .await
        .expect("real requests were not answered before the slow connections' header timeout");
    let waiting = slow.iter().filter(|c| still_waiting(c)).count();
    assert_eq!(
        waiting, 200,
        "real requests were answered only after slow connections had been dropped"
    );
    assert_eq!(
        app.scrape().await.sum(
            "messaging_webhook_events_total",
            &[("provider", "meta"), ("outcome", "processed")]
        ),
        20.0
    );
    for c in &mut slow {
        assert!(
            read_until_closed(c, header_timeout + Duration::from_secs(5))
                .await
                .is_some(),
            "a client that never finished its headers was not cut off"
        );
    }
    assert!(
        opened.elapsed() >= header_timeout,
        "slow clients were cut off before the header timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_408_and_holds_no_place() {
    let (_db, app) = app_with(5_000, 700, 2).await;
    let stalled_request = b"POST /webhooks/meta HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"entry\": [";
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(app.addr).await.unwrap();
        c.write_all(stalled_request).await.unwrap();
        stalled.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Both would-be places are taken by nobody: a body still arriving holds none.
    let body = meta_status("wamid.real", "sent", T0_MS / 1000, "919812345678");
    assert_eq!(app.post_meta(&body).await.status(), 200);
    for c in &mut stalled {
        let reply = read_until_closed(c, Duration::from_secs(5))
            .await
            .expect("the stalled request was answered");
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    }
    assert_eq!(processed(&app).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_cap_are_shed_with_503_while_health_is_still_served() {
    let (db, app) = app_with(5_000, 10_000, 2).await;
    // Another process holds SQLite's write lock: two webhooks wait on it (up to the
    // database timeout), holding both places.
    let mut holder = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::Executor::execute(&mut holder, "BEGIN IMMEDIATE")
        .await
        .unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let (client, url) = (app.client.clone(), app.url("/webhooks/meta"));
            let body = meta_status(&format!("wamid.w{i}"), "sent", T0_MS / 1000, "919812345678");
            tokio::spawn(async move {
                let req = client.post(url).header("content-type", "application/json");
                req.body(body).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = app
        .post_meta(&meta_status(
            "wamid.x",
            "sent",
            T0_MS / 1000,
            "919812345678",
        ))
        .await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    for path in ["/healthz", "/metrics"] {
        assert_eq!(app.get(path).await.status(), 200, "{path} while at the cap");
    }
    sqlx::Executor::execute(&mut holder, "ROLLBACK")
        .await
        .unwrap();
    for w in waiting {
        assert!(matches!(w.await.unwrap(), 200 | 503));
    }
}

/// The signature Meta would send for `body` with the test's app secret.
fn meta_signed(app: &TestApp, body: Vec<u8>) -> reqwest::RequestBuilder {
    let signature = meta::sign(SECRET.as_bytes(), &body);
    app.client
        .post(app.url("/webhooks/meta"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
}

const SECRET: &str = "trickle-test-app-secret";
const API_KEY: &str = "trickle-test-api-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_trickling_bodies_starve_neither_probes_nor_signed_traffic() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = config_for(&db.url);
    config.meta_app_secret = Some(SecretString::from(SECRET));
    config.api_key = Some(SecretString::from(API_KEY));
    config.request_timeout_ms = 60_000;
    let slow_count = config.max_concurrent_requests + 76; // 1,100 with the default cap
    let app = TestApp::spawn_with(config, ManualClock::new(T0_MS)).await;

    // Unauthenticated clients announce a megabyte and send a byte a second.
    let head = b"POST /webhooks/meta HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n";
    let mut slow = Vec::with_capacity(slow_count);
    for _ in 0..slow_count {
        let mut c = TcpStream::connect(app.addr).await.unwrap();
        c.write_all(head).await.unwrap();
        slow.push(c);
    }
    let trickle = tokio::spawn(async move {
        for _ in 0..3 {
            for c in &mut slow {
                c.write_all(b" ").await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        slow
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    let body = meta_status("wamid.signed", "sent", T0_MS / 1000, "919812345678");
    assert_eq!(meta_signed(&app, body).send().await.unwrap().status(), 200);
    let check = serde_json::json!({"phone": "919812345678", "is_template": false});
    let reply = app
        .client
        .post(app.url("/v1/check-send"))
        .bearer_auth(API_KEY)
        .json(&check)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);

    let slow = trickle.await.unwrap();
    assert!(
        slow.iter().filter(|c| still_waiting(c)).count() == slow_count,
        "the trickling clients were still connected while the others were served"
    );
    assert_eq!(processed(&app).await, 1.0);
}
