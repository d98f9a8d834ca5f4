//! CONTRACT §6.4 "Bounded": each family keeps at most `--max-series` series beside the
//! per-label limit, and `currency` is three capital letters, bounded like `template`.

use std::collections::BTreeSet;

use messaging_exporter::clock::ManualClock;
use serde_json::{json, Value};

use crate::helpers::{config_for, template_hook, Backend, Scrape, TestApp, TestDb, T0_MS};
use crate::on_both_backends;
use crate::v1::{field_of, get, post, put};

on_both_backends!(
    ai_label_combinations_past_the_series_cap_are_counted_as_other,
    template_combinations_past_the_series_cap_are_counted_as_other,
    currency_is_three_capital_letters_and_bounded_like_template,
    made_up_http_methods_are_one_method_label,
);

const MAX_LABEL_VALUES: usize = 50;
const MAX_SERIES: usize = 100;

async fn capped_app(db: &TestDb) -> TestApp {
    let mut config = config_for(&db.url);
    config.max_label_values = MAX_LABEL_VALUES;
    config.max_series = MAX_SERIES;
    TestApp::spawn_with(config, ManualClock::new(T0_MS)).await
}

/// The label sets of one family (a histogram's by its `_count` line).
fn label_sets(s: &Scrape, sample: &str) -> Vec<String> {
    s.series
        .keys()
        .filter(|(n, _)| n == sample)
        .map(|(_, labels)| format!("{labels:?}"))
        .collect()
}

fn overflow(s: &Scrape, label: &str) -> f64 {
    s.sum("messaging_label_overflow_total", &[("label", label)])
}

fn ai_report(operation: &str, model: &str) -> Value {
    json!({"operation": operation, "model": model, "latency_ms": 100, "outcome": "ok"})
}

/// Each label alone stays within its limit (30 of 50), but 30 × 30 combinations do not.
async fn ai_label_combinations_past_the_series_cap_are_counted_as_other(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = capped_app(&db).await;
    let reports: Vec<Value> = (0..30)
        .flat_map(|op| (0..30).map(move |m| ai_report(&format!("op{op}"), &format!("m{m}"))))
        .collect();

    let (status, reply) = post(&app, "/v1/events/ai", &json!(reports)).await;
    assert_eq!(status, 202, "{reply}");
    // A series made before the cap was reached keeps counting under its own labels.
    let (status, _) = post(&app, "/v1/events/ai", &ai_report("op0", "m0")).await;
    assert_eq!(status, 202);

    let s = app.scrape().await;
    let latency = "messaging_ai_latency_seconds_count";
    assert_eq!(
        label_sets(&s, latency).len(),
        MAX_SERIES + 1,
        "the first 100 combinations and operation=other,model=other"
    );
    let other = [("operation", "other"), ("model", "other")];
    assert_eq!(s.sum(latency, &other), 800.0);
    assert_eq!(
        s.sum(latency, &[("operation", "op0"), ("model", "m0")]),
        2.0
    );
    assert_eq!(
        label_sets(&s, "messaging_ai_requests_total").len(),
        MAX_SERIES + 1
    );
    assert_eq!(s.sum("messaging_ai_requests_total", &other), 800.0);
    assert_eq!(
        s.sum("messaging_ai_requests_total", &[]),
        901.0,
        "nothing lost, only relabelled"
    );
    assert_eq!(
        overflow(&s, "series"),
        1600.0,
        "800 new combinations in each of the latency and request families"
    );
    assert_eq!(overflow(&s, "operation") + overflow(&s, "model"), 0.0);
}

/// The template-labelled families keep their series as pre-rendered text: the cap holds
/// there too, and `provider`, `channel`, `status` and `category` keep their values.
async fn template_combinations_past_the_series_cap_are_counted_as_other(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = capped_app(&db).await;
    let categories = [
        "marketing",
        "marketing_lite",
        "utility",
        "authentication",
        "authentication_international",
        "service",
    ];
    let hooks: Vec<Value> = (0..30)
        .flat_map(|t| {
            categories.map(|c| {
                let id = format!("wamid.card-{t}-{c}");
                template_hook(&id, "+919876543210", &format!("tpl{t}"), c, T0_MS)
            })
        })
        .collect();

    let (status, reply) = post(&app, "/v1/events/sent", &json!(hooks)).await;
    assert_eq!((status, reply["accepted"].as_u64()), (202, Some(180)));

    let s = app.scrape().await;
    let outbound = "messaging_outbound_messages_total";
    let series = label_sets(&s, outbound).len();
    assert!(
        series <= MAX_SERIES + categories.len(),
        "{series} series: at most 100 and one other per category"
    );
    assert_eq!(s.sum(outbound, &[("template", "other")]), 80.0);
    for c in categories {
        assert_eq!(
            s.sum(outbound, &[("category", c)]),
            30.0,
            "{c} kept its value"
        );
    }
    assert_eq!(
        s.sum(outbound, &[("status", "accepted"), ("provider", "meta")]),
        180.0,
        "nothing lost, only relabelled"
    );
    assert_eq!(overflow(&s, "series"), 80.0);
    assert_eq!(overflow(&s, "template"), 0.0);
}

fn ai_cost(currency: &str) -> Value {
    json!({"operation": "o", "model": "m", "latency_ms": 5, "outcome": "ok",
           "cost": 0.5, "currency": currency})
}

/// `AAX`, `ABX`, … : distinct valid codes.
fn code(i: u8) -> String {
    String::from_utf8(vec![b'A' + i / 26, b'A' + i % 26, b'X']).unwrap()
}

async fn currency_is_three_capital_letters_and_bounded_like_template(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = capped_app(&db).await;
    for bad in ["usd", "US", "ABCD", "U$D", "ÜSD"] {
        let batch = json!([ai_cost("USD"), ai_cost(bad)]);
        let (status, reply) = post(&app, "/v1/events/ai", &batch).await;
        assert_eq!(status, 422, "{bad}: {reply}");
        assert_eq!(field_of(&reply), "[1].currency", "{bad}");
        let (status, reply) = put(&app, "/v1/config", &json!({ "currency": bad })).await;
        assert_eq!(status, 422, "PUT /v1/config {bad}: {reply}");
        assert_eq!(field_of(&reply), "currency", "{bad}");
    }
    let s = app.scrape().await;
    assert_eq!(
        s.sum("messaging_ai_requests_total", &[]),
        0.0,
        "nothing counted"
    );
    assert_eq!(get(&app, "/v1/config").await.1["currency"], "INR");

    let past_the_limit = 10;
    let reports: Vec<Value> = (0..MAX_LABEL_VALUES as u8 + past_the_limit)
        .map(|i| ai_cost(&code(i)))
        .collect();
    let (status, reply) = post(&app, "/v1/events/ai", &json!(reports)).await;
    assert_eq!(status, 202, "{reply}");

    let s = app.scrape().await;
    let currencies: BTreeSet<String> = s
        .series
        .keys()
        .filter(|(n, _)| n == "messaging_ai_cost_total")
        .map(|(_, labels)| labels["currency"].clone())
        .collect();
    assert_eq!(currencies.len(), MAX_LABEL_VALUES + 1);
    assert!(currencies.contains("other"));
    assert_eq!(
        s.sum("messaging_ai_cost_total", &[("currency", "other")]),
        0.5 * f64::from(past_the_limit)
    );
    assert_eq!(overflow(&s, "currency"), f64::from(past_the_limit));
}

/// Any client can send any method token: it must not become a series of its own.
async fn made_up_http_methods_are_one_method_label(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = capped_app(&db).await;
    for method in ["FOO1", "FOO2", "BAR3"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = app
            .client
            .request(method, app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405);
    }
    assert_eq!(app.get("/healthz").await.status(), 200);

    let s = app.scrape().await;
    let seen: Vec<_> = s
        .series
        .iter()
        .filter(|((n, l), _)| {
            n == "messaging_exporter_http_request_duration_seconds_count"
                && l["route"] == "/healthz"
        })
        .map(|((_, l), v)| (l["method"].as_str(), l["status"].as_str(), *v))
        .collect();
    assert_eq!(seen, [("GET", "200", 1.0), ("other", "405", 3.0)]);
}
