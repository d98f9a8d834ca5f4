//! CONTRACT §9: SMS has its own rate card, priced per segment in each direction, and
//! WhatsApp (through Meta or Twilio) keeps the WhatsApp card.

use serde_json::json;

use crate::helpers::{meta_status, template_hook, Backend, Scrape, TestApp, TestDb, T0_MS};
use crate::on_both_backends;
use crate::v1::{configure, field_of, get, put};

const INDIA: &str = "919876543210";
const US: &str = "14155550100";

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes()
}

async fn twilio(app: &TestApp, pairs: &[(&str, &str)]) {
    let resp = app.post_twilio("/webhooks/twilio", &form(pairs), &[]).await;
    assert_eq!(resp.status(), 200);
}

fn cost(s: &Scrape, labels: &[(&str, &str)]) -> f64 {
    s.sum("messaging_cost_total", labels)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

async fn an_sms_costs_its_segments_at_the_country_price_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    configure(
        &app,
        json!({"sms_country_rates": {"91": {"outbound": 0.0832}}}),
    )
    .await;
    let hook = json!({"message_id": "SM1b715192118381b23d1881c97f80b0d2", "phone": INDIA,
        "provider": "twilio", "channel": "sms", "segments": 3,
        "sent_at": messaging_exporter::clock::rfc3339(T0_MS)});
    assert_eq!(app.post_json("/v1/events/sent", &hook).await.status(), 202);
    let sent = [
        ("MessageSid", "SM1b715192118381b23d1881c97f80b0d2"),
        ("MessageStatus", "sent"),
        ("To", "+919876543210"),
        ("From", "+15550100142"),
    ];
    // Charged once sent, whatever comes after: redeliveries and the delivery add nothing.
    for _ in 0..3 {
        twilio(&app, &sent).await;
    }
    let s = app.scrape().await;
    let sms = [
        ("provider", "twilio"),
        ("channel", "sms"),
        ("category", "sms"),
    ];
    assert!(close(cost(&s, &sms), 3.0 * 0.0832), "{}", s.dump());
    assert_eq!(
        cost(
            &s,
            &[
                ("category", "sms"),
                ("currency", "USD"),
                ("template", "none")
            ]
        ),
        cost(&s, &sms),
        "counted in sms_currency under the free-form template"
    );
    let mut delivered = sent;
    delivered[1].1 = "delivered";
    twilio(&app, &delivered).await;
    assert!(close(cost(&app.scrape().await, &sms), 3.0 * 0.0832));
    // USD is not added to the WhatsApp card's INR totals; it has a line of its own.
    let (_, report) = get(&app, "/v1/costs?from=2025-09-23&to=2025-09-23").await;
    assert_eq!(
        (report["total_cost"].as_f64(), &report["by_category"]),
        (Some(0.0), &json!([]))
    );
    let line = &report["estimate"][0];
    assert_eq!(
        (&line["category"], &line["currency"], &line["messages"]),
        (&json!("sms"), &json!("USD"), &json!(1))
    );
    assert!(
        close(line["cost"].as_f64().unwrap(), 3.0 * 0.0832),
        "{report}"
    );
}

async fn twilios_num_segments_prices_an_inbound_sms(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    configure(&app, json!({"sms_rates": {"inbound": 0.01}})).await;
    let inbound = [
        ("MessageSid", "SM9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"),
        ("SmsStatus", "received"),
        ("From", "+14155550100"),
        ("To", "+15550100142"),
        ("Body", "a reply long enough to take two segments"),
        ("NumSegments", "2"),
    ];
    twilio(&app, &inbound).await;
    twilio(&app, &inbound).await;
    let s = app.scrape().await;
    let sms = [
        ("provider", "twilio"),
        ("channel", "sms"),
        ("category", "sms"),
        ("currency", "USD"),
    ];
    assert!(close(cost(&s, &sms), 2.0 * 0.01), "{}", s.dump());
    let (_, report) = get(&app, "/v1/costs?from=2025-09-23&to=2025-09-23").await;
    assert_eq!(
        report["estimate"],
        json!([{"day": "2025-09-23", "provider": "twilio", "category": "sms",
                "currency": "USD", "messages": 1, "cost": 0.02}])
    );
}

async fn whatsapp_keeps_the_whatsapp_card_through_either_provider(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    configure(
        &app,
        json!({"sms_rates": {"outbound": 5.0}, "sms_country_rates": {"1": {"outbound": 5.0}}}),
    )
    .await;
    let meta = template_hook("wamid.sms-card", INDIA, "promo", "marketing", T0_MS);
    assert_eq!(app.post_json("/v1/events/sent", &meta).await.status(), 202);
    app.post_meta(&meta_status(
        "wamid.sms-card",
        "delivered",
        T0_MS / 1000 + 4,
        INDIA,
    ))
    .await;
    let mut via_twilio = template_hook("SMwa1", US, "order_update", "utility", T0_MS);
    via_twilio["provider"] = json!("twilio");
    assert_eq!(
        app.post_json("/v1/events/sent", &via_twilio).await.status(),
        202
    );
    twilio(
        &app,
        &[
            ("MessageSid", "SMwa1"),
            ("MessageStatus", "delivered"),
            ("To", "whatsapp:+14155550100"),
            ("From", "whatsapp:+15550100142"),
        ],
    )
    .await;
    let s = app.scrape().await;
    let inr = |provider, category| {
        cost(
            &s,
            &[
                ("provider", provider),
                ("category", category),
                ("currency", "INR"),
            ],
        )
    };
    assert_eq!(inr("meta", "marketing"), 0.75, "{}", s.dump());
    assert_eq!(inr("twilio", "utility"), 0.35);
    assert_eq!(cost(&s, &[("category", "sms")]), 0.0);
}

async fn bad_segments_and_sms_prices_are_refused_naming_the_field(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    for bad in [json!(0), json!(-1), json!(2.5), json!("3"), json!(1001)] {
        let hook = json!({"message_id": "SMbad", "phone": US, "provider": "twilio",
            "channel": "sms", "segments": bad});
        let resp = app.post_json("/v1/events/sent", &hook).await;
        assert_eq!(resp.status(), 422, "segments {bad}");
        assert_eq!(field_of(&resp.json().await.unwrap()), "segments", "{bad}");
    }
    let s = app.scrape().await;
    assert_eq!(
        s.sum("messaging_outbound_messages_total", &[]),
        0.0,
        "nothing stored"
    );
    let (status, reply) = put(
        &app,
        "/v1/config",
        &json!({"sms_country_rates": {"91": {"outbound": -0.1}}}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(field_of(&reply), "sms_country_rates.91.outbound");
}

on_both_backends!(
    an_sms_costs_its_segments_at_the_country_price_once,
    twilios_num_segments_prices_an_inbound_sms,
    whatsapp_keeps_the_whatsapp_card_through_either_provider,
    bad_segments_and_sms_prices_are_refused_naming_the_field,
);
