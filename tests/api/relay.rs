//! The relay (CONTRACT §7): signed webhooks reach a bot standing behind the exporter,
//! durably and at least once. The bot here is a real HTTP server that checks signatures
//! as a bot would, and can be told to fail, hang or go away.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use messaging_exporter::clock::ManualClock;
use messaging_exporter::config::Config;
use messaging_exporter::providers::{meta, twilio};
use secrecy::SecretString;
use sqlx::{Connection, Row};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::helpers::{config_for, fixture, tempdir, Backend, Scrape, TestApp, TestDb, T0_MS};
use crate::process::Exporter;

const APP_SECRET: &str = "fixture-app-secret";
const AUTH_TOKEN: &str = "fixture-auth-token";

/// shared/fixtures/meta/inbound_text.json signed with [`APP_SECRET`].
const INBOUND_TEXT_SIG: &str =
    "sha256=8e7bbfa1f96bfeaf0ebb7406a54943d8a85935f3459112989b044bad2ac5dc43";
/// shared/fixtures/meta/unknown_field.json (no event the exporter counts), signed.
const UNKNOWN_FIELD_SIG: &str =
    "sha256=2be52c8ed7172d3c4a0ca9d36a85ce5f1f951d63a7e8f4518d864dc76f33c890";

const ANSWER: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// A request the bot accepted: its signature checked out as the bot would check it.
#[derive(Clone, Debug)]
struct Received {
    path_and_query: String,
    content_type: String,
    body: Vec<u8>,
}

/// The bot behind the exporter: `/meta` checks Meta's signature with the app secret,
/// `/sms…` Twilio's for the URL it was called on with the auth token.
#[derive(Clone)]
struct Bot {
    port: u16,
    mode: Arc<AtomicU8>,
    accepted: Arc<Mutex<Vec<Received>>>,
    server: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Bot {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bot = Self {
            port: listener.local_addr().unwrap().port(),
            mode: Arc::new(AtomicU8::new(ANSWER)),
            accepted: Arc::default(),
            server: Arc::default(),
        };
        bot.serve(listener);
        bot
    }

    fn serve(&self, listener: TcpListener) {
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(self.clone());
        let handle = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        *self.server.lock().unwrap() = Some(handle);
    }

    /// Stops listening: the exporter's connections are refused.
    fn go_away(&self) {
        if let Some(h) = self.server.lock().unwrap().take() {
            h.abort();
        }
    }

    /// Listens again on the same port.
    async fn come_back(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the bot's port stayed taken: {e}"),
            }
        };
        self.serve(listener);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn accepted(&self) -> Vec<Received> {
        self.accepted.lock().unwrap().clone()
    }

    /// Waits until the bot has accepted `n` requests.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the bot accepted {} of {n} webhooks: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    State(bot): State<Bot>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    match bot.mode.load(Ordering::SeqCst) {
        FAIL => return StatusCode::INTERNAL_SERVER_ERROR,
        HANG => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        _ => {}
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let path_and_query = uri.path_and_query().unwrap().as_str().to_owned();
    let signed = if path_and_query.starts_with("/meta") {
        meta::verify_signature(APP_SECRET.as_bytes(), &body, header("x-hub-signature-256"))
    } else {
        let params = twilio::parse_form(&body).unwrap();
        let url = bot.url(&path_and_query);
        twilio::verify_signature(
            AUTH_TOKEN.as_bytes(),
            &url,
            &params,
            header("x-twilio-signature"),
        )
    };
    if !signed {
        return StatusCode::UNAUTHORIZED;
    }
    bot.accepted.lock().unwrap().push(Received {
        path_and_query,
        content_type: header("content-type").unwrap_or_default().to_owned(),
        body: body.to_vec(),
    });
    StatusCode::OK
}

/// Signed webhooks in, relayed to `bot`.
fn relaying_config(db: &TestDb, bot: &Bot) -> Config {
    let mut c = config_for(&db.url);
    c.meta_app_secret = Some(SecretString::from(APP_SECRET));
    c.twilio_auth_token = Some(SecretString::from(AUTH_TOKEN));
    c.public_url = Some("https://hooks.example.com/twilio".into());
    c.relay_meta_url = Some(bot.url("/meta"));
    c.relay_twilio_url = Some(bot.url("/sms"));
    c.relay_timeout_ms = 500;
    c
}

async fn post_signed_meta(app: &TestApp, name: &str, sig: &str) {
    let r = app
        .post_meta_with(&fixture(name), &[("x-hub-signature-256", sig)])
        .await;
    assert_eq!(r.status(), 200, "{name}");
}

fn relay(s: &Scrape, target: &str, outcome: &str) -> f64 {
    s.sum(
        "messaging_relay_deliveries_total",
        &[("target", target), ("outcome", outcome)],
    )
}

async fn outbox_rows(url: &str) -> Result<i64, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    sqlx::query("SELECT COUNT(*) FROM relay_outbox")
        .fetch_one(&mut conn)
        .await?
        .try_get(0)
}

#[tokio::test]
async fn signed_webhooks_reach_the_bot_once_and_pass_its_signature_checks() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::new(backend).await;
        let bot = Bot::start().await;
        let app = TestApp::spawn_with(
            relaying_config(&db, &bot),
            ManualClock::new(T0_MS + 3_600_000),
        )
        .await;

        post_signed_meta(&app, "meta/inbound_text.json", INBOUND_TEXT_SIG).await;
        let sms = fixture("twilio/inbound_whatsapp.txt");
        let path = "/webhooks/twilio/inbound?src=wa";
        let signed_url = "https://hooks.example.com/twilio/inbound?src=wa";
        let params = twilio::parse_form(&sms).unwrap();
        let sig = twilio::sign(AUTH_TOKEN.as_bytes(), signed_url, &params);
        let r = app
            .post_twilio(path, &sms, &[("x-twilio-signature", &sig)])
            .await;
        assert_eq!(r.status(), 200);
        let got = bot.wait_for(2).await;

        let meta_got = got.iter().find(|r| r.path_and_query == "/meta").unwrap();
        assert_eq!(
            meta_got.body,
            fixture("meta/inbound_text.json"),
            "{backend:?}"
        );
        assert_eq!(meta_got.content_type, "application/json");
        let sms_got = got.iter().find(|r| r.path_and_query != "/meta").unwrap();
        assert_eq!(
            sms_got.path_and_query, "/sms/inbound?src=wa",
            "the sub-path and query follow"
        );
        assert_eq!(sms_got.body, sms);
        assert_eq!(sms_got.content_type, "application/x-www-form-urlencoded");

        // A byte-identical redelivery is acknowledged but not relayed; a webhook with no
        // event the exporter counts is relayed all the same. Once the latter arrived, the
        // former (stored before it, if at all) would have too.
        post_signed_meta(&app, "meta/inbound_text.json", INBOUND_TEXT_SIG).await;
        post_signed_meta(&app, "meta/unknown_field.json", UNKNOWN_FIELD_SIG).await;
        let got = bot.wait_for(3).await;
        assert_eq!(
            got[2].body,
            fixture("meta/unknown_field.json"),
            "{backend:?}"
        );
        let s = app
            .wait_for("the deliveries counted", |s| {
                relay(s, "meta", "delivered") == 2.0 && relay(s, "twilio", "delivered") == 1.0
            })
            .await;
        assert_eq!(relay(&s, "meta", "retried"), 0.0);
        assert_eq!(bot.accepted().len(), 3, "{:?}", bot.accepted());
        app.stop().await;
    }
}

/// The bot is unavailable in `fail`'s way for ten minutes, then answers: the webhook waits
/// in the outbox (backlog 1, its age shown), is counted `retried`, and arrives once the
/// backoff (driven by the exporter's clock) has passed.
async fn recovers_after(backend: Backend, fail: fn(&Bot), recover: fn(&Bot)) {
    let db = TestDb::new(backend).await;
    let bot = Bot::start().await;
    fail(&bot);
    let app = TestApp::spawn_with(
        relaying_config(&db, &bot),
        ManualClock::new(T0_MS + 3_600_000),
    )
    .await;

    post_signed_meta(&app, "meta/inbound_text.json", INBOUND_TEXT_SIG).await;
    app.wait_for("a failed attempt and a backlog of one", |s| {
        relay(s, "meta", "retried") >= 1.0
            && s.sum("messaging_relay_backlog", &[("target", "meta")]) == 1.0
    })
    .await;
    // Ten minutes of outage on the exporter's clock: the retries come due and fail.
    app.clock.advance_ms(10 * 60_000);
    app.wait_for("the oldest waiting webhook's age", |s| {
        s.sum("messaging_relay_oldest_seconds", &[("target", "meta")]) >= 600.0
    })
    .await;
    recover(&bot);
    app.clock.advance_ms(5 * 60_000);

    let got = bot.wait_for(1).await;
    assert_eq!(got[0].body, fixture("meta/inbound_text.json"));
    let s = app
        .wait_for("the delivery and an empty backlog", |s| {
            relay(s, "meta", "delivered") == 1.0
                && s.sum("messaging_relay_backlog", &[("target", "meta")]) == 0.0
        })
        .await;
    assert_eq!(
        s.sum("messaging_relay_lag_seconds_count", &[("target", "meta")]),
        1.0
    );
    assert_eq!(bot.accepted().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_bot_answering_500_gets_the_webhook_after_backoff() {
    recovers_after(Backend::Postgres, |b| b.set(FAIL), |b| b.set(ANSWER)).await;
    recovers_after(Backend::Sqlite, |b| b.set(FAIL), |b| b.set(ANSWER)).await;
}

#[tokio::test]
async fn a_bot_hanging_past_the_timeout_gets_the_webhook_after_backoff() {
    recovers_after(Backend::Sqlite, |b| b.set(HANG), |b| b.set(ANSWER)).await;
}

#[tokio::test]
async fn a_bot_that_went_away_gets_the_webhook_when_it_comes_back() {
    let db = TestDb::new(Backend::Postgres).await;
    let bot = Bot::start().await;
    bot.go_away();
    let app = TestApp::spawn_with(
        relaying_config(&db, &bot),
        ManualClock::new(T0_MS + 3_600_000),
    )
    .await;
    post_signed_meta(&app, "meta/inbound_text.json", INBOUND_TEXT_SIG).await;
    app.wait_for("a failed attempt", |s| relay(s, "meta", "retried") >= 1.0)
        .await;
    bot.come_back().await;
    app.clock.advance_ms(10 * 60_000);
    let got = bot.wait_for(1).await;
    assert_eq!(got[0].body, fixture("meta/inbound_text.json"));
    app.stop().await;
}

#[tokio::test]
async fn without_a_relay_url_nothing_is_written_to_the_outbox() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = TestDb::new(backend).await;
        let mut config = config_for(&db.url);
        config.meta_app_secret = Some(SecretString::from(APP_SECRET));
        let app = TestApp::spawn_with(config, ManualClock::new(T0_MS + 3_600_000)).await;
        post_signed_meta(&app, "meta/inbound_text.json", INBOUND_TEXT_SIG).await;
        post_signed_meta(&app, "meta/unknown_field.json", UNKNOWN_FIELD_SIG).await;
        assert_eq!(outbox_rows(&db.url).await.unwrap(), 0, "{backend:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn an_acknowledged_webhook_reaches_the_bot_after_sigkill_and_restart() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let dir = tempdir::Dir::new();
        let bot = Bot::start().await;
        bot.go_away();
        let relay_url = bot.url("/meta");
        let env = [
            ("META_APP_SECRET", APP_SECRET),
            ("RELAY_META_URL", relay_url.as_str()),
            ("RELAY_TIMEOUT_MS", "1000"),
        ];
        let exporter = Exporter::start_with_env(&db.url, &dir, &[], &env).await;
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(exporter.url("/webhooks/meta"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", INBOUND_TEXT_SIG)
            .body(fixture("meta/inbound_text.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Acknowledged, and the bot could not have had it: kill the exporter now.
        exporter.signal("-KILL");
        drop(exporter);

        bot.come_back().await;
        let restarted = Exporter::start_with_env(&db.url, &dir, &[], &env).await;
        let got = bot.wait_for(1).await;
        assert_eq!(
            got[0].body,
            fixture("meta/inbound_text.json"),
            "{backend:?}"
        );
        drop(restarted);
    }
}
