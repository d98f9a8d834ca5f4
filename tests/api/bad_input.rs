//! Bad input gets a clear error and changes nothing but the `rejected` counter.

use serde_json::{json, Value};

use crate::helpers::{fixture, meta_status, template_hook, Backend, TestApp, TestDb, T0_MS};

async fn error_of(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap().to_owned(),
        body["error"]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn bad_webhooks_are_refused_and_change_nothing_but_the_rejected_counter() {
    let db = TestDb::new(Backend::Postgres).await;
    let app = TestApp::spawn(&db).await;
    let before = app.scrape().await;
    let url = app.url("/webhooks/meta");
    let big = vec![b' '; 1024 * 1024 + 1];
    let bad_ts = br#"{"entry":[{"changes":[{"field":"messages","value":{"statuses":[{"id":"w","status":"sent","timestamp":"later"}]}}]}]}"#;
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str, &str)> = vec![
        (
            "malformed JSON",
            app.client
                .post(&url)
                .header("content-type", "application/json")
                .body("{\"entry\": ["),
            400,
            "malformed_body",
            "malformed JSON",
        ),
        (
            "wrong content type",
            app.client
                .post(&url)
                .header("content-type", "text/plain")
                .body(fixture("meta/status_read.json")),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "no content type",
            app.client.post(&url).body(fixture("meta/status_read.json")),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "over 1 MiB",
            app.client
                .post(&url)
                .header("content-type", "application/json")
                .body(big),
            413,
            "payload_too_large",
            "limit",
        ),
        (
            "invalid field",
            app.client
                .post(&url)
                .header("content-type", "application/json")
                .body(bad_ts.to_vec()),
            422,
            "invalid_field",
            "entry[0].changes[0].value.statuses[0].timestamp",
        ),
        (
            "missing entry",
            app.client
                .post(&url)
                .header("content-type", "application/json")
                .body("{}"),
            422,
            "invalid_field",
            "entry",
        ),
        (
            "invalid UTF-8 form",
            app.client
                .post(app.url("/webhooks/twilio"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(vec![b'A', b'=', 0xff, 0xfe]),
            400,
            "malformed_body",
            "UTF-8",
        ),
        (
            "twilio without sid",
            app.client
                .post(app.url("/webhooks/twilio"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("MessageStatus=sent"),
            422,
            "invalid_field",
            "MessageSid",
        ),
        (
            "twilio as JSON",
            app.client
                .post(app.url("/webhooks/twilio"))
                .header("content-type", "application/json")
                .body("{}"),
            415,
            "unsupported_media_type",
            "x-www-form-urlencoded",
        ),
    ];
    for (what, req, status, code, mentions) in cases {
        let (got_status, got_code, message) = error_of(req.send().await.unwrap()).await;
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{what}: {message}"
        );
        assert!(
            message.contains(mentions),
            "{what}: {message:?} should mention {mentions:?}"
        );
    }
    let after = app.scrape().await;
    assert_eq!(before.counted(), after.counted(), "no counter moved");
    assert_eq!(
        after.sum(
            "messaging_webhook_events_total",
            &[("outcome", "rejected"), ("provider", "meta")]
        ),
        6.0
    );
    assert_eq!(
        after.sum(
            "messaging_webhook_events_total",
            &[("outcome", "rejected"), ("provider", "twilio")]
        ),
        3.0
    );
    assert_eq!(
        after.sum(
            "messaging_webhook_events_total",
            &[("outcome", "processed")]
        ),
        0.0
    );
    // A valid webhook after all that still works: nothing was left half-stored.
    assert_eq!(
        app.post_meta(&meta_status("w", "sent", T0_MS / 1000, "919812345678"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn bad_send_hooks_and_ai_reports_name_the_field_and_store_nothing() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(&db).await;
    let good = template_hook("wamid.ok", "919812345678", "promo", "marketing", T0_MS);
    let cases = [
        (json!({"message_id": "m", "phone": "not-a-phone"}), "phone"),
        (
            json!({"message_id": "m", "phone": "919812345678", "is_template": true, "template_name": "x"}),
            "template_category",
        ),
        (
            json!({"message_id": "m", "phone": "919812345678", "is_template": true, "template_name": "x", "template_category": "promo"}),
            "template_category",
        ),
        (
            json!({"message_id": "m", "phone": "919812345678", "is_template": true, "template_category": "utility"}),
            "template_name",
        ),
        (
            json!({"message_id": "m", "phone": "919812345678", "sent_at": "yesterday"}),
            "sent_at",
        ),
        (
            json!({"message_id": "m", "phone": "919812345678", "provider": "telegram"}),
            "provider",
        ),
        (
            json!({"message_id": "", "phone": "919812345678"}),
            "message_id",
        ),
        (json!({"phone": "919812345678"}), "message_id"),
        (
            json!({"message_id": 5, "phone": "919812345678"}),
            "message_id",
        ),
        // One bad item in a batch refuses the whole batch, naming the item.
        (
            json!([good.clone(), {"message_id": "m2", "phone": "12"}]),
            "[1].phone",
        ),
    ];
    for (body, field) in cases {
        let (status, code, message) = error_of(app.post_json("/v1/events/sent", &body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (422, "invalid_field"),
            "{body}: {message}"
        );
        assert!(
            message.starts_with(field),
            "{message:?} should name {field:?}"
        );
    }
    let ai_cases = [
        (
            json!({"operation": "x", "model": "m", "latency_ms": -1, "outcome": "ok"}),
            "latency_ms",
        ),
        (
            json!({"operation": "x", "model": "m", "latency_ms": 1, "outcome": "maybe"}),
            "outcome",
        ),
        (
            json!({"operation": "x", "model": "", "latency_ms": 1, "outcome": "ok"}),
            "model",
        ),
        (
            json!({"operation": "x", "model": "m", "latency_ms": 1, "outcome": "ok", "cost": 1, "currency": "dollars"}),
            "currency",
        ),
        (
            json!({"model": "m", "latency_ms": 1, "outcome": "ok"}),
            "operation",
        ),
    ];
    for (body, field) in ai_cases {
        let (status, _, message) = error_of(app.post_json("/v1/events/ai", &body).await).await;
        assert_eq!(status, 422, "{body}");
        assert!(
            message.starts_with(field),
            "{message:?} should name {field:?}"
        );
    }
    let s = app.scrape().await;
    assert_eq!(s.sum("messaging_outbound_messages_total", &[]), 0.0);
    assert_eq!(s.sum("messaging_ai_requests_total", &[]), 0.0);
    // The batch's good item was not stored either: sending it now counts it for the first time.
    let reply: Value = app
        .post_json("/v1/events/sent", &good)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply, json!({"accepted": 1, "duplicates": 0}));
}

async fn hostile_payloads_get_a_clear_4xx_and_never_a_crash(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    // Half a million levels, just under the body limit, where nothing reads it.
    let deep_inside = format!(
        r#"{{"entry": [], "extra": {}{}}}"#,
        "[".repeat(500_000),
        "]".repeat(500_000)
    );
    let nul = br#"{"entry":[{"changes":[{"field":"messages","value":{"statuses":[{"id":"a\u0000b","status":"sent","timestamp":"1758621600"}]}}]}]}"#;
    // Postgres refuses NUL in text: it is stripped from free text, refused in ids.
    let nul_text = String::from_utf8(meta_status("wamid.nul", "failed", T0_MS / 1000, "919812345678")).unwrap().replace(
        r#""recipient_id""#,
        r#""errors": [{"code": 131000, "title": "bad\u0000title", "error_data": {"details": "x\u0000y"}}], "recipient_id""#,
    );
    let long_id = json!({"entry":[{"changes":[{"field":"messages","value":{"statuses":[{"id": "w".repeat(10_000),"status":"sent","timestamp":"1758621600"}]}}]}]});
    for (what, body, expected) in [
        ("deeply nested, wrong type", deep.into_bytes(), 422),
        (
            "deeply nested inside an unknown field",
            deep_inside.into_bytes(),
            200,
        ),
        ("NUL in an id", nul.to_vec(), 422),
        ("NUL in error text", nul_text.into_bytes(), 200),
        ("10 kB id", serde_json::to_vec(&long_id).unwrap(), 422),
        ("not an object", b"[1,2,3]".to_vec(), 422),
    ] {
        assert_eq!(app.post_meta(&body).await.status(), expected, "{what}");
    }
    let emoji = template_hook(
        "wamid.emoji",
        "919812345678",
        "🎉 promo",
        "marketing",
        T0_MS,
    );
    assert_eq!(app.post_json("/v1/events/sent", &emoji).await.status(), 202);
    let s = app.scrape().await;
    assert_eq!(
        s.sum(
            "messaging_outbound_messages_total",
            &[("template", "🎉 promo")]
        ),
        1.0
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}

async fn thousands_of_statuses_in_one_post_are_each_counted_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let statuses: Vec<Value> = (0..4_000)
        .map(|i| json!({"id": format!("wamid.bulk{i}"), "status": "read", "timestamp": "1758621600", "recipient_id": format!("9198{:08}", i % 700)}))
        .collect();
    let body = json!({"entry": [{"id": "1", "changes": [{"field": "messages", "value": {"statuses": statuses}}]}]});
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(bytes.len() < 1024 * 1024, "the payload fits the body limit");
    for _ in 0..2 {
        assert_eq!(app.post_meta(&bytes).await.status(), 200);
    }
    app.clock.advance_ms(31_000);
    let s = app
        .wait_for("all 4000 to be counted", |s| {
            s.sum("messaging_outbound_messages_total", &[("status", "read")]) == 4_000.0
        })
        .await;
    assert_eq!(
        s.sum("messaging_outbound_messages_total", &[("status", "sent")]),
        4_000.0
    );
    let wh = |o| s.sum("messaging_webhook_events_total", &[("outcome", o)]);
    assert_eq!((wh("processed"), wh("duplicate")), (4_000.0, 4_000.0));
}

crate::on_both_backends!(
    hostile_payloads_get_a_clear_4xx_and_never_a_crash,
    thousands_of_statuses_in_one_post_are_each_counted_once,
);
