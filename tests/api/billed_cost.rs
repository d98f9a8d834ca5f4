//! CONTRACT §9: the providers' own figures. A real HTTP server in the test stands in for
//! Twilio's Messages API and Meta's Graph API, answering with the shapes in
//! `fixtures/billing/`; the exporter's manual clock drives the worker's retries.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use messaging_exporter::config::Config;
use messaging_exporter::providers::twilio;
use serde_json::{json, Value};

use messaging_exporter::clock::ManualClock;

use crate::helpers::{config_for, fixture, Backend, Scrape, TestApp, TestDb, T0_MS};
use crate::on_both_backends;
use crate::v1::get as api_get;

const ACCOUNT: &str = "AC703f069b4f94388bc65eefc880b85f64";
const TOKEN: &str = "twilio-test-auth-token";
const PUBLIC_URL: &str = "https://hooks.example.com";
const WABA: &str = "104455667788990";
const META_TOKEN: &str = "meta-system-user-token";

/// One canned answer: status, `Retry-After`, body.
#[derive(Clone)]
struct Answer(u16, Option<&'static str>, Value);

/// The stand-in's script and what it was asked. Each key answers its queue in turn and
/// repeats the last answer once one is left.
#[derive(Default)]
struct Script {
    answers: HashMap<String, VecDeque<Answer>>,
    asked: HashMap<String, usize>,
    auth: Vec<String>,
    queries: Vec<String>,
}

type Shared = Arc<Mutex<Script>>;

fn answer(script: &Shared, key: &str, headers: &HeaderMap, query: String) -> Response {
    let mut s = script.lock().unwrap();
    *s.asked.entry(key.to_owned()).or_default() += 1;
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    s.auth.push(auth.to_owned());
    s.queries.push(query);
    let queue = s.answers.entry(key.to_owned()).or_default();
    let Some(Answer(status, retry_after, body)) = (if queue.len() > 1 {
        queue.pop_front()
    } else {
        queue.front().cloned()
    }) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut resp = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    if let Some(after) = retry_after {
        resp.headers_mut()
            .insert("retry-after", after.parse().unwrap());
    }
    resp
}

async fn twilio_message(
    State(script): State<Shared>,
    Path((_account, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let sid = file.trim_end_matches(".json");
    answer(&script, sid, &headers, String::new())
}

async fn meta_waba(
    State(script): State<Shared>,
    Path((version, waba)): Path<(String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let query = format!("{version}/{waba}?{}", uri.query().unwrap_or(""));
    answer(&script, "meta", &headers, query)
}

/// Serves the script on loopback; returns its base URL.
async fn stand_in(script: Shared) -> String {
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages/{file}",
            get(twilio_message),
        )
        .route("/{version}/{waba}", get(meta_waba))
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn asked(script: &Shared, key: &str) -> usize {
    script.lock().unwrap().asked.get(key).copied().unwrap_or(0)
}

/// Polls until `pred` holds; the worker runs in the background on real time.
async fn until(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !pred() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn billed_until(app: &TestApp, labels: &[(&str, &str)], want: f64) -> Scrape {
    app.wait_for(&format!("billed {labels:?} = {want}"), |s| {
        (s.sum("messaging_billed_cost_total", labels) - want).abs() < 1e-6
    })
    .await
}

fn priced(sid: &str, price: Option<&str>) -> Value {
    let mut m: Value =
        serde_json::from_slice(&fixture("billing/twilio_message_sms_priced.json")).unwrap();
    m["sid"] = json!(sid);
    m["price"] = json!(price);
    m
}

fn twilio_config(db: &TestDb, api: &str) -> Config {
    let mut c = config_for(&db.url);
    c.twilio_auth_token = Some(TOKEN.to_owned().into());
    c.public_url = Some(PUBLIC_URL.into());
    c.twilio_account_sid = Some(ACCOUNT.into());
    c.twilio_api_url = api.to_owned();
    c
}

/// A signed Twilio status callback for an SMS.
async fn sms_status(app: &TestApp, sid: &str, status: &str) {
    let params = [
        ("MessageSid", sid),
        ("MessageStatus", status),
        ("AccountSid", ACCOUNT),
        ("To", "+15550100166"),
        ("From", "+15550100142"),
    ];
    post_signed(app, &params).await;
}

/// A signed incoming SMS.
async fn sms_inbound(app: &TestApp, sid: &str) {
    let params = [
        ("MessageSid", sid),
        ("SmsStatus", "received"),
        ("AccountSid", ACCOUNT),
        ("From", "+15550100166"),
        ("To", "+15550100142"),
        ("Body", "C"),
    ];
    post_signed(app, &params).await;
}

async fn post_signed(app: &TestApp, params: &[(&str, &str)]) {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let signature = twilio::sign(
        TOKEN.as_bytes(),
        &format!("{PUBLIC_URL}/webhooks/twilio"),
        &params,
    );
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&params)
        .finish();
    let resp = app
        .post_twilio(
            "/webhooks/twilio",
            body.as_bytes(),
            &[("x-twilio-signature", &signature)],
        )
        .await;
    assert_eq!(resp.status(), 200);
}

const SMS: [(&str, &str); 4] = [
    ("provider", "twilio"),
    ("channel", "sms"),
    ("category", "sms"),
    ("currency", "USD"),
];

async fn twilio_prices_are_counted_once_after_retries_and_restarts(backend: Backend) {
    let script = Shared::default();
    let api = stand_in(script.clone()).await;
    {
        let mut s = script.lock().unwrap();
        s.answers.insert(
            "SMa".into(),
            [
                Answer(200, None, priced("SMa", None)),
                Answer(200, None, priced("SMa", Some("-0.01580"))),
            ]
            .into(),
        );
        let limited = json!({"code": 20429, "message": "Too Many Requests", "status": 429});
        s.answers.insert(
            "SMb".into(),
            [
                Answer(429, Some("120"), limited),
                Answer(200, None, priced("SMb", Some("-0.00790"))),
            ]
            .into(),
        );
        s.answers.insert(
            "SMc".into(),
            [
                Answer(200, None, priced("SMc", None)),
                Answer(200, None, priced("SMc", Some("-0.02370"))),
            ]
            .into(),
        );
    }
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn_with(
        twilio_config(&db, &api),
        ManualClock::new(T0_MS + 10_000_000),
    )
    .await;
    sms_status(&app, "SMa", "delivered").await;
    sms_status(&app, "SMb", "undelivered").await;
    sms_status(&app, "SMa", "delivered").await;
    until("both looked up once", || {
        asked(&script, "SMa") == 1 && asked(&script, "SMb") == 1
    })
    .await;
    // Nothing else is looked up: a message without a final status waits for one.
    assert_eq!(script.lock().unwrap().asked.len(), 2);
    assert_eq!(
        app.scrape().await.sum("messaging_billed_cost_total", &[]),
        0.0,
        "a null price and a 429 count nothing"
    );
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{ACCOUNT}:{TOKEN}")
        )
    );
    assert!(script.lock().unwrap().auth.iter().all(|a| *a == basic));

    // Past the pending price's backoff (30 s ± 20%) but within the 429's Retry-After,
    // the account is left alone: a 429 is Twilio's account-wide limit.
    app.clock.advance_ms(60_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        (asked(&script, "SMa"), asked(&script, "SMb")),
        (1, 1),
        "Retry-After is respected"
    );
    app.clock.advance_ms(120_000);
    billed_until(&app, &SMS, 0.0158 + 0.0079).await;
    let (_, report) = api_get(&app, "/v1/costs?from=2025-09-23&to=2025-09-23").await;
    let line = |provider: &str, messages: i64| {
        json!({"day": "2025-09-23", "provider": provider, "category": "sms",
               "currency": "USD", "messages": messages})
    };
    let billed = &report["billed"][0];
    assert!(
        (billed["cost"].as_f64().unwrap() - 0.0237).abs() < 1e-9,
        "{report}"
    );
    assert_eq!(without_cost(billed), line("twilio", 2), "{report}");
    assert_eq!(without_cost(&report["estimate"][0]), line("twilio", 1));

    // An inbound SMS is billed too.
    script.lock().unwrap().answers.insert(
        "SMin".into(),
        [Answer(200, None, priced("SMin", Some("-0.00790")))].into(),
    );
    sms_inbound(&app, "SMin").await;
    billed_until(&app, &SMS, 0.0158 + 0.0079 + 0.0079).await;

    // A lookup pending when the exporter stops is finished by the next one; what was
    // counted is not counted again.
    sms_status(&app, "SMc", "delivered").await;
    until("SMc looked up", || asked(&script, "SMc") == 1).await;
    let clock = app.clock.clone();
    app.stop().await;
    let app = TestApp::spawn_with(twilio_config(&db, &api), clock).await;
    app.clock.advance_ms(120_000);
    let s = billed_until(&app, &SMS, 0.0237).await;
    assert_eq!(
        s.sum("messaging_billed_cost_total", &[]),
        s.sum("messaging_billed_cost_total", &SMS)
    );
    assert_eq!(
        (
            asked(&script, "SMa"),
            asked(&script, "SMb"),
            asked(&script, "SMc")
        ),
        (2, 2, 2),
        "each message asked for until priced, then never again"
    );
}

fn meta_answer(grow_marketing_by: f64) -> Answer {
    let mut body: Value =
        serde_json::from_slice(&fixture("billing/meta_pricing_analytics_daily.json")).unwrap();
    let first = &mut body["pricing_analytics"]["data"][0]["data_points"][0];
    first["cost"] = json!(first["cost"].as_f64().unwrap() + grow_marketing_by);
    Answer(200, None, body)
}

fn meta_config(db: &TestDb, graph: &str) -> Config {
    let mut c = config_for(&db.url);
    c.meta_access_token = Some(META_TOKEN.to_owned().into());
    c.meta_waba_id = Some(WABA.into());
    c.meta_graph_url = graph.to_owned();
    c
}

const FIXTURE_TOTAL: f64 =
    1029.3952 + 343.505 + 201.02 + 69.2208 + 972.904 + 357.075 + 187.91 + 74.8144;

async fn meta_days_add_only_what_they_grew_by(backend: Backend) {
    let script = Shared::default();
    let graph = stand_in(script.clone()).await;
    let refused = json!({"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}});
    script.lock().unwrap().answers.insert(
        "meta".into(),
        [
            meta_answer(0.0),
            meta_answer(10.5),
            Answer(401, None, refused),
            meta_answer(12.75),
            meta_answer(15.0),
        ]
        .into(),
    );
    let db = TestDb::new(backend).await;
    let clock = ManualClock::new(T0_MS + 10_000_000);
    let app = TestApp::spawn_with(meta_config(&db, &graph), clock).await;
    let meta = [
        ("provider", "meta"),
        ("channel", "whatsapp"),
        ("currency", "INR"),
    ];
    let s = billed_until(&app, &meta, FIXTURE_TOTAL).await;
    let marketing = s.sum("messaging_billed_cost_total", &[("category", "marketing")]);
    assert!((marketing - (1029.3952 + 201.02 + 972.904 + 187.91)).abs() < 1e-6);
    {
        let s = script.lock().unwrap();
        assert_eq!(s.auth[0], format!("Bearer {META_TOKEN}"));
        let q = &s.queries[0];
        assert!(
            q.starts_with(&format!("v23.0/{WABA}?fields=pricing_analytics")),
            "{q}"
        );
        assert!(q.contains("granularity%28DAILY%29"), "{q}");
    }

    // An hour later a day's figure has grown: only the growth is added.
    app.clock.advance_ms(3_600_000);
    billed_until(&app, &meta, FIXTURE_TOTAL + 10.5).await;
    // The next hour the token is refused: nothing counted, read again later.
    app.clock.advance_ms(3_600_000);
    until("the refused read", || asked(&script, "meta") == 3).await;
    assert!(
        (app.scrape().await.sum("messaging_billed_cost_total", &meta) - (FIXTURE_TOTAL + 10.5))
            .abs()
            < 1e-6
    );
    // Past the failure's backoff (30 s ± 20%), the read is made again.
    app.clock.advance_ms(60_000);
    billed_until(&app, &meta, FIXTURE_TOTAL + 12.75).await;
    // A restarted exporter reads at once, and adds only what grew since the last figures
    // stored, not the days again.
    let clock = app.clock.clone();
    app.stop().await;
    let app = TestApp::spawn_with(meta_config(&db, &graph), clock).await;
    billed_until(&app, &meta, 15.0 - 12.75).await;
    let (_, report) = api_get(&app, "/v1/costs?from=2025-09-23&to=2025-09-24").await;
    let days: Vec<(String, String, Value, f64)> = report["billed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let key = |k: &str| l[k].as_str().unwrap().to_owned();
            (
                key("day"),
                key("category"),
                l["messages"].clone(),
                l["cost"].as_f64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("2025-09-23", "marketing", 972.904 + 187.91),
        ("2025-09-23", "utility", 357.075 + 74.8144),
        ("2025-09-24", "marketing", 1029.3952 + 201.02 + 15.0),
        ("2025-09-24", "utility", 343.505 + 69.2208),
    ];
    assert_eq!(days.len(), want.len(), "{report}");
    for ((day, category, messages, cost), (d, c, want)) in days.iter().zip(want) {
        assert_eq!(
            (day.as_str(), category.as_str(), messages),
            (d, c, &Value::Null)
        );
        assert!(
            (cost - want).abs() < 1e-6,
            "{day} {category}: {cost} ≠ {want}"
        );
    }
}

fn without_cost(line: &Value) -> Value {
    let mut l = line.clone();
    l.as_object_mut().unwrap().remove("cost");
    l
}

on_both_backends!(
    twilio_prices_are_counted_once_after_retries_and_restarts,
    meta_days_add_only_what_they_grew_by,
);
