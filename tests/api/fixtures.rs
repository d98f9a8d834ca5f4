//! Every fixture of shared/fixtures, with the counters the contract says they give.

use crate::helpers::{fixture, template_hook, Backend, Scrape, TestApp, TestDb, T0_MS};
use crate::on_both_backends;

const UTILITY_ID: &str = "wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgUNzhCQjExMjY5RUZDMkU1RDJFMDMA";
const MARKETING_ID: &str = "wamid.HBgMOTE5ODEyMzQ1Njc4FQIAERgUOEE5NTlDMkY0OEM3Qzc1Q0M4QkEA";
const FAILED_ID: &str = "wamid.HBgMOTE5ODQ1MDAxMTIyFQIAERgUNDAxNTAzMzgxNkFEQkY5RENCREIA";

const META_FIXTURES: [&str; 9] = [
    "meta/inbound_text.json",
    "meta/inbound_interactive_button.json",
    "meta/status_sent_pmp_utility.json",
    "meta/status_delivered_pmp_marketing.json",
    "meta/status_read.json",
    "meta/status_failed_131047.json",
    "meta/batch_mixed.json",
    "meta/webhook_level_error.json",
    "meta/unknown_field.json",
];

const TWILIO_FIXTURES: [(&str, &str); 6] = [
    ("/webhooks/twilio/inbound", "twilio/inbound_whatsapp.txt"),
    ("/webhooks/twilio/inbound", "twilio/inbound_sms.txt"),
    ("/webhooks/twilio/status", "twilio/status_sent.txt"),
    ("/webhooks/twilio/status", "twilio/status_read_whatsapp.txt"),
    ("/webhooks/twilio/status", "twilio/status_delivered.txt"),
    (
        "/webhooks/twilio/status",
        "twilio/status_undelivered_30007.txt",
    ),
];

/// Send hooks for three of the fixture messages; the others never get one.
async fn post_hooks(app: &TestApp) {
    let hooks = serde_json::json!([
        template_hook(
            UTILITY_ID,
            "+919876543210",
            "order_update",
            "utility",
            T0_MS + 120_000
        ),
        template_hook(
            MARKETING_ID,
            "919812345678",
            "spring_sale",
            "marketing",
            T0_MS + 3_600_000
        ),
        template_hook(
            FAILED_ID,
            "whatsapp:+919845001122",
            "reminder",
            "utility",
            T0_MS + 7_190_000
        ),
    ]);
    let resp = app.post_json("/v1/events/sent", &hooks).await;
    assert_eq!(resp.status(), 202);
}

async fn post_all(app: &TestApp) {
    for f in META_FIXTURES {
        let resp = app.post_meta(&fixture(f)).await;
        assert_eq!(resp.status(), 200, "{f}");
    }
    for (path, f) in TWILIO_FIXTURES {
        let resp = app.post_twilio(path, &fixture(f), &[]).await;
        assert_eq!(resp.status(), 200, "{f}");
        assert_eq!(
            resp.text().await.unwrap(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
        );
    }
}

/// Moves past the grace period and waits for the sweep to count unattributed statuses.
async fn settle(app: &TestApp) -> Scrape {
    app.clock.advance_ms(31_000);
    app.wait_for("unattributed statuses to be counted", |s| {
        s.sum(
            "messaging_outbound_messages_total",
            &[("template", "unknown"), ("status", "sent")],
        ) >= 4.0
    })
    .await
}

fn out(s: &Scrape, template: &str, status: &str) -> f64 {
    s.sum(
        "messaging_outbound_messages_total",
        &[("template", template), ("status", status)],
    )
}

async fn every_fixture_gives_the_contracts_counters(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    post_hooks(&app).await;
    post_all(&app).await;
    let s = settle(&app).await;

    // Utility template: sent (free_customer_service) then delivered without pricing.
    assert_eq!(
        (
            out(&s, "order_update", "accepted"),
            out(&s, "order_update", "sent"),
            out(&s, "order_update", "delivered")
        ),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(out(&s, "order_update", "read"), 0.0);
    assert_eq!(
        s.sum(
            "messaging_cost_total",
            &[("template", "order_update"), ("category", "utility")]
        ),
        0.0
    );
    // Marketing: delivered (regular, billable) and read, the read delivered twice.
    for status in ["accepted", "sent", "delivered", "read"] {
        assert_eq!(out(&s, "spring_sale", status), 1.0, "spring_sale {status}");
    }
    assert_eq!(
        s.sum(
            "messaging_cost_total",
            &[
                ("template", "spring_sale"),
                ("category", "marketing"),
                ("currency", "INR")
            ]
        ),
        0.75
    );
    // Failed with 131047: no cost, one error.
    assert_eq!(
        (
            out(&s, "reminder", "accepted"),
            out(&s, "reminder", "failed")
        ),
        (1.0, 1.0)
    );
    assert_eq!(
        s.sum("messaging_message_errors_total", &[("code", "131047")]),
        1.0
    );
    assert_eq!(
        s.sum("messaging_cost_total", &[("template", "reminder")]),
        0.0
    );
    // Webhook-level error.
    assert_eq!(
        s.sum(
            "messaging_message_errors_total",
            &[("provider", "meta"), ("code", "130429")]
        ),
        1.0
    );

    // No send hook: the read-only Meta message (sent+delivered+read filled in), the second
    // number's utility `sent`, Twilio's WhatsApp sent+read and its two SMS statuses.
    let meta_unknown = |status| {
        s.sum(
            "messaging_outbound_messages_total",
            &[
                ("provider", "meta"),
                ("template", "unknown"),
                ("status", status),
            ],
        )
    };
    assert_eq!(
        (
            meta_unknown("sent"),
            meta_unknown("delivered"),
            meta_unknown("read")
        ),
        (2.0, 1.0, 1.0)
    );
    assert_eq!(
        s.sum(
            "messaging_outbound_messages_total",
            &[
                ("template", "unknown"),
                ("category", "utility"),
                ("status", "sent")
            ]
        ),
        1.0
    );
    let tw = |channel, status| {
        s.sum(
            "messaging_outbound_messages_total",
            &[
                ("provider", "twilio"),
                ("channel", channel),
                ("status", status),
            ],
        )
    };
    assert_eq!(
        (
            tw("whatsapp", "sent"),
            tw("whatsapp", "delivered"),
            tw("whatsapp", "read")
        ),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(
        (
            tw("sms", "sent"),
            tw("sms", "delivered"),
            tw("sms", "failed")
        ),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(
        s.sum(
            "messaging_message_errors_total",
            &[
                ("provider", "twilio"),
                ("channel", "sms"),
                ("code", "30007")
            ]
        ),
        1.0
    );

    // Inbound: Meta text ×2 (fixture + batch), interactive ×1; Twilio WhatsApp and SMS.
    let inbound = |p, c, t| {
        s.sum(
            "messaging_inbound_messages_total",
            &[("provider", p), ("channel", c), ("type", t)],
        )
    };
    assert_eq!(inbound("meta", "whatsapp", "text"), 2.0);
    assert_eq!(inbound("meta", "whatsapp", "interactive"), 1.0);
    assert_eq!(inbound("twilio", "whatsapp", "text"), 1.0);
    assert_eq!(inbound("twilio", "sms", "text"), 1.0);

    // Latency from provider timestamps: sent_at → delivered and delivered → read.
    let hist = |name: &str, template_cat: &str, part: &str| {
        s.sum(
            &format!("{name}_{part}"),
            &[("provider", "meta"), ("category", template_cat)],
        )
    };
    assert_eq!(
        hist("messaging_delivery_latency_seconds", "marketing", "sum"),
        5.0
    );
    assert_eq!(
        hist("messaging_delivery_latency_seconds", "utility", "sum"),
        5.0
    );
    assert_eq!(
        hist("messaging_read_latency_seconds", "marketing", "sum"),
        605.0
    );
    assert_eq!(
        hist("messaging_read_latency_seconds", "marketing", "count"),
        1.0
    );

    // Webhook outcomes: the unknown field is ignored, batch_mixed's repeated read a duplicate.
    let wh = |p, o| {
        s.sum(
            "messaging_webhook_events_total",
            &[("provider", p), ("outcome", o)],
        )
    };
    assert_eq!(
        (
            wh("meta", "processed"),
            wh("meta", "duplicate"),
            wh("meta", "ignored"),
            wh("meta", "rejected")
        ),
        (11.0, 1.0, 1.0, 0.0)
    );
    assert_eq!(
        (wh("twilio", "processed"), wh("twilio", "duplicate")),
        (6.0, 0.0)
    );
}

/// The funnel holds for every label set: read ≤ delivered ≤ sent.
fn assert_funnel(s: &Scrape) {
    let mut sets = std::collections::BTreeMap::<Vec<(String, String)>, [f64; 3]>::new();
    for ((name, labels), v) in &s.series {
        if name != "messaging_outbound_messages_total" {
            continue;
        }
        let key: Vec<_> = labels
            .iter()
            .filter(|(k, _)| *k != "status")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let slot = match labels["status"].as_str() {
            "sent" => 0,
            "delivered" => 1,
            "read" => 2,
            _ => continue,
        };
        sets.entry(key).or_default()[slot] += v;
    }
    for (labels, [sent, delivered, read]) in sets {
        assert!(
            read <= delivered && delivered <= sent,
            "funnel broken for {labels:?}: {sent} {delivered} {read}"
        );
    }
}

async fn fixtures_in_any_order_any_number_of_times_give_the_same_counters(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    post_hooks(&app).await;
    post_all(&app).await;
    let once = settle(&app).await;
    assert_funnel(&once);

    let db2 = TestDb::new(backend).await;
    let app2 = TestApp::spawn(&db2).await;
    for round in 0..3 {
        let mut meta: Vec<&str> = META_FIXTURES.to_vec();
        meta.reverse();
        meta.rotate_left(round);
        for f in meta {
            assert_eq!(app2.post_meta(&fixture(f)).await.status(), 200);
        }
        for (path, f) in TWILIO_FIXTURES.iter().rev() {
            assert_eq!(app2.post_twilio(path, &fixture(f), &[]).await.status(), 200);
        }
        if round == 1 {
            post_hooks(&app2).await; // hooks late, but within the grace period
        }
    }
    let thrice = settle(&app2).await;
    assert_funnel(&thrice);
    // Response latency depends on whether a question or its answer arrived first, so it
    // legitimately differs between orders; everything else must not.
    let without_response = |s: &Scrape| {
        let mut c = s.counted();
        c.retain(|(name, _), _| !name.starts_with("messaging_response_latency"));
        c
    };
    assert_same(&without_response(&once), &without_response(&thrice));
}

fn assert_same(a: &crate::helpers::Series, b: &crate::helpers::Series) {
    let diff: Vec<_> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k:?}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect();
    assert!(diff.is_empty(), "counters differ:\n{}", diff.join("\n"));
}

on_both_backends!(
    every_fixture_gives_the_contracts_counters,
    fixtures_in_any_order_any_number_of_times_give_the_same_counters,
);
