//! `GET|PUT /v1/config`: defaults, validation, persistence across a restart, and a second
//! replica seeing a change within 5 seconds.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{config_for, Backend, TestApp, TestDb};
use crate::on_both_backends;
use crate::v1::{configure, field_of, get, put};

async fn defaults_are_the_contracts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let (status, doc) = get(&app, "/v1/config").await;
    assert_eq!(status, 200);
    assert_eq!(
        doc,
        json!({"template_cooldown_hours": 12, "rate_limiting_enabled": true,
               "session_tracking_enabled": true, "cost_tracking_enabled": true,
               "block_out_of_session_messages": false, "currency": "INR",
               "rates": {"marketing": 0.75, "utility": 0.35, "authentication": 0.30, "service": 0.0},
               "country_rates": {}, "free_in_window_categories": ["service"],
               "sms_currency": "USD", "sms_rates": {"outbound": 0.0079, "inbound": 0.0079},
               "sms_country_rates": {}, "updated_at": null})
    );
}

async fn bad_values_are_422_naming_the_field_and_change_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let (_, before) = get(&app, "/v1/config").await;
    for (patch, field) in [
        (
            json!({"template_cooldown_hours": 169}),
            "template_cooldown_hours",
        ),
        (
            json!({"template_cooldown_hours": -1}),
            "template_cooldown_hours",
        ),
        (
            json!({"template_cooldown_hours": 1.5}),
            "template_cooldown_hours",
        ),
        (json!({"rates": {"marketing": -0.01}}), "rates.marketing"),
        (json!({"rates": {"marketing": "cheap"}}), "rates.marketing"),
        (json!({"rates": {"promo": 0.1}}), "rates.promo"),
        (
            json!({"rates": {"authentication-international": 0.1}}),
            "rates.authentication-international",
        ),
        (
            json!({"country_rates": {"1": {"utility": -1}}}),
            "country_rates.1.utility",
        ),
        (
            json!({"country_rates": {"x1": {"utility": 1}}}),
            "country_rates.x1",
        ),
        (
            json!({"free_in_window_categories": ["free"]}),
            "free_in_window_categories[0]",
        ),
        (json!({"currency": "rupees"}), "currency"),
        (json!({"currency": null}), "currency"),
        (json!({"rate_limiting_enabled": 1}), "rate_limiting_enabled"),
        // A valid change beside an unknown key: the whole PUT is refused.
        (
            json!({"template_cooldown_hours": 1, "cooldown": 2}),
            "cooldown",
        ),
        (json!([]), "body"),
    ] {
        let (status, reply) = put(&app, "/v1/config", &patch).await;
        assert_eq!(status, 422, "{patch}: {reply}");
        assert_eq!(field_of(&reply), field, "{patch}");
    }
    let (_, after) = get(&app, "/v1/config").await;
    assert_eq!(after, before);
}

async fn a_partial_put_merges_and_survives_a_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let now = app.now_ms();
    let doc = configure(
        &app,
        json!({"template_cooldown_hours": 24, "rates": {"marketing": 0.8},
               "country_rates": {"1": {"marketing": 0.025}}, "currency": "USD"}),
    )
    .await;
    assert_eq!(doc["template_cooldown_hours"], 24);
    assert_eq!(
        doc["rates"],
        json!({"marketing": 0.8, "utility": 0.35, "authentication": 0.30, "service": 0.0})
    );
    assert_eq!(doc["currency"], "USD");
    let stamp = chrono::DateTime::parse_from_rfc3339(doc["updated_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert_eq!(stamp, now);
    let (_, read_back) = get(&app, "/v1/config").await;
    assert_eq!(read_back, doc);

    // A PUT that changes nothing keeps updated_at; null removes a prefix.
    app.clock.advance_ms(60_000);
    assert_eq!(configure(&app, json!({"currency": "USD"})).await, doc);
    let dropped = configure(&app, json!({"country_rates": {"1": null}})).await;
    assert_eq!(dropped["country_rates"], json!({}));
    assert_ne!(dropped["updated_at"], doc["updated_at"]);

    app.stop().await;
    let restarted = TestApp::spawn(&db).await;
    let (_, after) = get(&restarted, "/v1/config").await;
    assert_eq!(after, dropped);
}

async fn a_second_replica_sees_a_put_within_five_seconds(backend: Backend) {
    let db = TestDb::new(backend).await;
    let a = TestApp::spawn(&db).await;
    let b = TestApp::spawn(&db).await;
    configure(&a, json!({"template_cooldown_hours": 3})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, doc) = get(&b, "/v1/config").await;
        if doc["template_cooldown_hours"] == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica b still has {doc}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And b decides by it: a template 3 h after the last is allowed, before it not.
    let sent = b.now_ms();
    crate::v1::hook(
        &b,
        crate::helpers::template_hook("wamid.cfg", "919876543210", "t", "utility", sent),
    )
    .await;
    let reply = crate::v1::check(&b, crate::v1::template("919876543210", "utility")).await;
    assert_eq!(reply["rate_limit"]["cooldown_remaining_minutes"], 180);
}

on_both_backends!(
    defaults_are_the_contracts,
    bad_values_are_422_naming_the_field_and_change_nothing,
    a_partial_put_merges_and_survives_a_restart,
    a_second_replica_sees_a_put_within_five_seconds,
);

/// Every `/v1` route the router serves answers 401 without the key, and with a wrong
/// one, and lets the right one through (either header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_route_needs_the_api_key() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = config_for(&db.url);
    config.api_key = Some("s3cret".to_owned().into());
    let app = TestApp::spawn_with(
        config,
        messaging_exporter::clock::ManualClock::new(crate::helpers::T0_MS),
    )
    .await;
    let doc = messaging_exporter::http::routes().doc;
    let mut checked = 0;
    for (path, item) in &doc.paths.paths {
        if !path.starts_with("/v1/") {
            continue;
        }
        let concrete = path
            .replace("{phone}", "919876543210")
            .replace("{id}", "rsv_unknown");
        for method in methods(item) {
            for auth in [
                None,
                Some(("authorization", "Bearer wrong")),
                Some(("x-api-key", "nope")),
            ] {
                let mut req = app
                    .client
                    .request(method.clone(), app.url(&concrete))
                    .header("content-type", "application/json")
                    .body("{}");
                if let Some((k, v)) = auth {
                    req = req.header(k, v);
                }
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), 401, "{method} {path} with {auth:?}");
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unauthorized");
            }
            for (k, v) in [("authorization", "Bearer s3cret"), ("x-api-key", "s3cret")] {
                let resp = app
                    .client
                    .request(method.clone(), app.url(&concrete))
                    .header(k, v)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                assert_ne!(resp.status(), 401, "{method} {path} with {k}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 12, "the contract's /v1 routes");
}

pub fn methods(item: &utoipa::openapi::PathItem) -> Vec<reqwest::Method> {
    let mut out = Vec::new();
    if item.get.is_some() {
        out.push(reqwest::Method::GET);
    }
    if item.put.is_some() {
        out.push(reqwest::Method::PUT);
    }
    if item.post.is_some() {
        out.push(reqwest::Method::POST);
    }
    if item.delete.is_some() {
        out.push(reqwest::Method::DELETE);
    }
    if item.patch.is_some() {
        out.push(reqwest::Method::PATCH);
    }
    out
}
