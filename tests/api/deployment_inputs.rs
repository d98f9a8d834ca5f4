//! What a deployment feeds the exporter: `PUBLIC_URL` in either form Twilio may have signed
//! (CONTRACT §6.8), secrets mounted as files (§6.9), and requests with the wrong method
//! (§6.10's 405).

use messaging_exporter::clock::ManualClock;
use messaging_exporter::providers::twilio;
use secrecy::SecretString;

use crate::helpers::{config_for, fixture, tempdir, Backend, TestApp, TestDb, T0_MS};
use crate::process::Exporter;

const TWILIO_TOKEN: &str = "deployment-auth-token";
const API_KEY: &str = "deployment-api-key-0123";

async fn twilio_app(db: &TestDb, public_url: &str) -> TestApp {
    let mut config = config_for(&db.url);
    config.twilio_auth_token = Some(SecretString::from(TWILIO_TOKEN));
    config.public_url = Some(public_url.into());
    TestApp::spawn_with(config, ManualClock::new(T0_MS + 3_600_000)).await
}

/// A Twilio status callback posted to `path`, signed as Twilio signs it for `signed_url`.
fn signed_callback(signed_url: &str, token: &str) -> (Vec<u8>, String) {
    let body = fixture("twilio/status_sent.txt");
    let params = twilio::parse_form(&body).unwrap();
    let signature = twilio::sign(token.as_bytes(), signed_url, &params);
    (body, signature)
}

async fn post_signed(app: &TestApp, path: &str, signed_url: &str) -> reqwest::Response {
    let (body, signature) = signed_callback(signed_url, TWILIO_TOKEN);
    app.post_twilio(path, &body, &[("x-twilio-signature", &signature)])
        .await
}

/// URLs Twilio never signs for a request to `/webhooks/twilio/status?x=1` at
/// `PUBLIC_URL=https://hooks.example.com` or `https://hooks.example.com/twilio`.
const WRONG_URLS: [&str; 4] = [
    "https://other.example.com/webhooks/twilio/status?x=1",
    "https://hooks.example.com/webhooks/twilio/status",
    "https://hooks.example.com/api/status?x=1",
    "http://hooks.example.com/webhooks/twilio/status?x=1",
];

#[tokio::test]
async fn twilio_signatures_for_the_base_url_or_a_rewritten_path_are_accepted_and_no_other() {
    let path = "/webhooks/twilio/status?x=1";
    for (public_url, signed_url) in [
        // PUBLIC_URL is the service's base URL: the request's path and query follow it.
        (
            "https://hooks.example.com",
            "https://hooks.example.com/webhooks/twilio/status?x=1",
        ),
        (
            "https://hooks.example.com/",
            "https://hooks.example.com/webhooks/twilio/status?x=1",
        ),
        // A proxy maps https://hooks.example.com/twilio/… onto /webhooks/twilio/….
        (
            "https://hooks.example.com/twilio",
            "https://hooks.example.com/twilio/status?x=1",
        ),
        (
            "https://hooks.example.com/twilio/",
            "https://hooks.example.com/twilio/status?x=1",
        ),
    ] {
        let db = TestDb::new(Backend::Sqlite).await;
        let app = twilio_app(&db, public_url).await;
        let resp = post_signed(&app, path, signed_url).await;
        assert_eq!(
            resp.status(),
            200,
            "PUBLIC_URL={public_url}, signed for {signed_url}"
        );
        for wrong in WRONG_URLS {
            let resp = post_signed(&app, path, wrong).await;
            assert_eq!(
                resp.status(),
                401,
                "PUBLIC_URL={public_url}, signed for {wrong}"
            );
            let err: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(err["error"]["code"], "unauthorized");
        }
        let s = app.scrape().await;
        for (outcome, n) in [("processed", 1), ("rejected", WRONG_URLS.len())] {
            assert_eq!(
                s.sum(
                    "messaging_webhook_events_total",
                    &[("provider", "twilio"), ("outcome", outcome)]
                ),
                n as f64,
                "PUBLIC_URL={public_url}: {outcome}"
            );
        }
    }
}

#[tokio::test]
async fn method_not_allowed_replies_carry_the_envelope_and_the_allowed_methods() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = config_for(&db.url);
    config.api_key = Some(SecretString::from(API_KEY));
    let app = TestApp::spawn_with(config, ManualClock::new(T0_MS)).await;
    let put_metrics = app.client.put(app.url("/metrics")).send().await.unwrap();
    let get_check_send = app
        .client
        .get(app.url("/v1/check-send"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    for (what, resp, allowed) in [
        ("PUT /metrics", put_metrics, "GET"),
        ("GET /v1/check-send", get_check_send, "POST"),
    ] {
        assert_eq!(resp.status(), 405, "{what}");
        let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
        assert!(allow.split(',').any(|m| m == allowed), "{what}: {allow}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "method_not_allowed", "{what}");
        let method = what.split(' ').next().unwrap();
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(method), "{what}: {message}");
    }
}

/// Writes `contents` to `name` in `dir` and returns its path.
fn secret_file(dir: &tempdir::Dir, name: &str, contents: &str) -> String {
    let path = dir.path.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_file_with_a_final_newline_holds_the_key() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempdir::Dir::new();
    let key_file = secret_file(&dir, "api_key", &format!("{API_KEY}\n"));
    let e = Exporter::start_with_env(&db.url, &dir, &[], &[("API_KEY_FILE", &key_file)]).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let with_key = |key: &str| client.get(e.url("/v1/config")).bearer_auth(key).send();
    assert_eq!(with_key(API_KEY).await.unwrap().status(), 200);
    assert_eq!(
        with_key("another-key-0123456789").await.unwrap().status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twilio_urls_are_logged_at_start_and_on_a_refused_signature_without_secrets() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempdir::Dir::new();
    let token_file = secret_file(&dir, "twilio_token", &format!("{TWILIO_TOKEN}\n"));
    let e = Exporter::start_with_env(
        &db.url,
        &dir,
        &["--public-url", "https://hooks.example.com/"],
        &[("TWILIO_AUTH_TOKEN_FILE", &token_file)],
    )
    .await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |path: &str, signature: &str| {
        client
            .post(e.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", signature)
            .body(fixture("twilio/status_sent.txt"))
            .send()
    };
    let (_, good) = signed_callback(
        "https://hooks.example.com/webhooks/twilio/status",
        TWILIO_TOKEN,
    );
    assert_eq!(
        post("/webhooks/twilio/status", &good)
            .await
            .unwrap()
            .status(),
        200,
        "the token file's final newline is not part of the token"
    );
    let (_, bad) = signed_callback("https://proxy.internal/status", TWILIO_TOKEN);
    assert_eq!(
        post("/webhooks/twilio/status", &bad)
            .await
            .unwrap()
            .status(),
        401
    );
    let logs = e.logs();
    assert!(
        logs.contains(
            "Twilio signatures are checked against https://hooks.example.com/webhooks/twilio[/…]"
        ),
        "{logs}"
    );
    for tried in [
        "https://hooks.example.com/webhooks/twilio/status",
        "https://hooks.example.com/status",
    ] {
        assert!(logs.contains(tried), "{tried} not logged: {logs}");
    }
    for secret in [TWILIO_TOKEN, &good, &bad] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}
