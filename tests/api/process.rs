//! The real binary as a process: SIGKILL mid-stream and restart, SIGTERM draining, and
//! what its logs may never contain.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    meta_inbound, meta_status, tempdir, template_hook, Backend, Scrape, TestDb, T0_MS,
};

/// The exporter binary running as a child process, its logs in a file.
pub(crate) struct Exporter {
    child: Child,
    port: u16,
    log: PathBuf,
    client: reqwest::Client,
}

impl Exporter {
    pub(crate) async fn start(db_url: &str, dir: &tempdir::Dir, extra: &[&str]) -> Self {
        Self::start_with_env(db_url, dir, extra, &[]).await
    }

    /// [`Exporter::start`] with these environment variables set as well.
    pub(crate) async fn start_with_env(
        db_url: &str,
        dir: &tempdir::Dir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path.join(format!("exporter-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_messaging-exporter"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                db_url,
            ])
            .args(extra)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let e = Self {
            child,
            port,
            log,
            client,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = e.client.get(e.url("/healthz")).send().await {
                if r.status() == 200 {
                    return e;
                }
            }
            assert!(
                Instant::now() < deadline,
                "exporter did not start: {}",
                e.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn logs(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    pub(crate) fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    pub(crate) async fn scrape(&self) -> Scrape {
        Scrape::fetch(&self.client, &self.url("/metrics")).await
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stream of (path, body) requests: per message a hook and three statuses.
fn stream(n: usize) -> Vec<(&'static str, Vec<u8>)> {
    let t = T0_MS / 1000;
    let mut out = Vec::new();
    for i in 0..n {
        let id = format!("wamid.k{i}");
        let phone = format!("9198{:08}", i % 50);
        out.push((
            "/v1/events/sent",
            serde_json::to_vec(&template_hook(
                &id,
                &phone,
                "promo",
                "utility",
                T0_MS + i as i64,
            ))
            .unwrap(),
        ));
        for (s, dt) in [("sent", 1), ("delivered", 2), ("read", 30)] {
            out.push(("/webhooks/meta", meta_status(&id, s, t + dt, &phone)));
        }
    }
    out
}

/// Sends every request until it is stored (2xx), as a provider retries.
async fn deliver(
    client: &reqwest::Client,
    base: &str,
    reqs: &[(&'static str, Vec<u8>)],
) -> Result<(), String> {
    for (path, body) in reqs {
        let resp = client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{path}: {}", resp.status()));
        }
    }
    Ok(())
}

/// Statuses the database says were counted for the stream's messages, per status name.
async fn counted_in_db(url: &str) -> [f64; 4] {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let rows =
        sqlx::query("SELECT counted_mask FROM outbound_messages WHERE message_id LIKE 'wamid.k%'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut out = [0.0; 4];
    for r in rows {
        let mask: i64 = r.get(0);
        for (i, slot) in out.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *slot += 1.0;
            }
        }
    }
    out
}

async fn wait_for_no_other_sessions(url: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the killed exporter's sessions did not go away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_counts_every_event_exactly_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempdir::Dir::new();
    let reqs = stream(150);
    let first = Exporter::start(&db.url, &dir, &[]).await;
    let (client, base) = (first.client.clone(), first.url(""));
    // State the bot relies on, taken before the kill: a window, a cooldown, a reservation.
    let now = chrono::Utc::now().timestamp_millis();
    deliver(
        &client,
        &base,
        &[
            (
                "/webhooks/meta",
                meta_inbound("wamid.state-in", "919800000001", now / 1000),
            ),
            (
                "/v1/events/sent",
                serde_json::to_vec(&template_hook(
                    "wamid.state-out",
                    "919800000002",
                    "promo",
                    "marketing",
                    now,
                ))
                .unwrap(),
            ),
        ],
    )
    .await
    .unwrap();
    let reserve = serde_json::json!({"phone": "919800000003", "is_template": true, "template_name": "promo",
        "template_category": "marketing", "reserve": true});
    let taken: serde_json::Value = client
        .post(format!("{base}/v1/check-send"))
        .json(&reserve)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(taken["can_send"], true, "{taken}");
    let (a, b) = reqs.split_at(reqs.len() / 2);
    let (a, b) = (a.to_vec(), b.to_vec());
    let senders = [a, b].map(|part| {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move { deliver(&client, &base, &part).await })
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.signal("-KILL");
    for s in senders {
        // Killed mid-stream: some requests were never answered.
        let _ = s.await.unwrap();
    }
    drop(first);
    // A COMMIT the killed process sent just before dying may still be finishing: read
    // what was counted only once its database sessions are gone.
    wait_for_no_other_sessions(&db.url).await;

    let before = counted_in_db(&db.url).await;
    assert!(
        before[0] > 0.0 && before[0] < reqs.len() as f64 / 4.0,
        "the kill landed mid-stream: {before:?}"
    );
    let second = Exporter::start(&db.url, &dir, &[]).await;
    let check = |phone: &str| {
        let body = serde_json::json!({"phone": phone, "is_template": true, "template_name": "promo", "template_category": "marketing"});
        let req = second
            .client
            .post(second.url("/v1/check-send"))
            .json(&body)
            .send();
        async move {
            req.await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        check("919800000001").await["session"]["is_active"],
        true,
        "the window survived"
    );
    assert_eq!(
        check("919800000002").await["blocked_reason"],
        "rate_limited",
        "the cooldown survived"
    );
    assert_eq!(
        check("919800000003").await["blocked_reason"],
        "rate_limited",
        "the reservation survived"
    );
    deliver(&second.client, &second.url(""), &reqs)
        .await
        .expect("every request stored after the restart");
    let s = second.scrape().await;
    let after = ["accepted", "sent", "delivered", "read"]
        .map(|st| s.sum("messaging_outbound_messages_total", &[("status", st)]));
    for i in 0..4 {
        // What the first process committed plus what the second counted is every event, once.
        assert_eq!(
            before[i] + after[i],
            150.0,
            "status #{i}: {before:?} + {after:?}"
        );
    }
    assert_eq!(counted_in_db(&db.url).await, [150.0; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_before_exit() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempdir::Dir::new();
    let mut e = Exporter::start(&db.url, &dir, &[]).await;
    let body = meta_status("wamid.drain", "sent", T0_MS / 1000, "919812345678");
    let head = format!(
        "POST /webhooks/meta HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut conn = TcpStream::connect(("127.0.0.1", e.port)).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    e.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        e.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    conn.write_all(&body[10..]).await.unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let status = e.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(e.logs().contains("draining"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_secrets_or_full_phone_numbers() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempdir::Dir::new();
    let secrets = [
        "api-key-0123456789-SECRET",
        "meta-app-secret-SECRET",
        "verify-token-SECRET",
        "twilio-token-SECRET",
    ];
    let e = Exporter::start(
        &db.url,
        &dir,
        &[
            "--api-key",
            secrets[0],
            "--meta-app-secret",
            secrets[1],
            "--meta-verify-token",
            secrets[2],
            "--twilio-auth-token",
            secrets[3],
            "--public-url",
            "https://hooks.example.com/twilio",
        ],
    )
    .await;
    let phone = "919812345678";
    let send = |path: &str, body: Vec<u8>, key: Option<&str>, sig: Option<String>| {
        let mut req = e
            .client
            .post(e.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(s) = sig {
            req = req.header("x-hub-signature-256", s);
        }
        req.send()
    };
    let hook = serde_json::to_vec(&template_hook(
        "wamid.log",
        phone,
        "promo",
        "marketing",
        T0_MS,
    ))
    .unwrap();
    send("/v1/events/sent", hook.clone(), Some(secrets[0]), None)
        .await
        .unwrap();
    send("/v1/events/sent", hook, Some("wrong-key-but-logged?"), None)
        .await
        .unwrap();
    for body in [
        meta_status("wamid.log", "failed", T0_MS / 1000, phone),
        meta_inbound("wamid.in", phone, T0_MS / 1000),
    ] {
        let sig = messaging_exporter::providers::meta::sign(secrets[1].as_bytes(), &body);
        send("/webhooks/meta", body.clone(), None, Some(sig))
            .await
            .unwrap();
        send("/webhooks/meta", body, None, Some("sha256=00".into()))
            .await
            .unwrap();
    }
    e.client
        .get(e.url(&format!(
            "/webhooks/meta?hub.mode=subscribe&hub.challenge=1&hub.verify_token={}",
            secrets[2]
        )))
        .send()
        .await
        .unwrap();
    let bad_phone = serde_json::json!({"message_id": "m", "phone": format!("{phone}x")});
    send(
        "/v1/events/sent",
        serde_json::to_vec(&bad_phone).unwrap(),
        Some(secrets[0]),
        None,
    )
    .await
    .unwrap();
    e.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = e.logs();
    assert!(logs.lines().count() > 20, "debug logging was on: {logs}");
    for s in secrets {
        assert!(!logs.contains(s), "secret {s} in the logs");
    }
    assert!(
        !logs.contains(phone) && !logs.contains("9812345678"),
        "a full phone number in the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_json_object_per_line() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempdir::Dir::new();
    let e = Exporter::start(&db.url, &dir, &["--log-format", "json"]).await;
    // A refused webhook is one of the events that log at warn.
    let resp = e
        .client
        .post(e.url("/webhooks/meta"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    e.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = e.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|err| panic!("not JSON ({err}): {l}")))
        .collect();
    let has = |level: &str, text: &str| {
        lines
            .iter()
            .any(|l| l["level"] == level && l["message"].as_str().is_some_and(|m| m.contains(text)))
    };
    assert!(has("INFO", "listening on"), "{logs}");
    assert!(has("WARN", "webhook rejected"), "{logs}");
}
