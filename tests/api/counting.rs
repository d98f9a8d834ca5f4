//! The counting rules of CONTRACT §4 over HTTP: exactly once, the funnel, attribution
//! with its grace period, latency, restarts.

use serde_json::json;

use crate::helpers::{meta_inbound, meta_status, template_hook, Backend, TestApp, TestDb, T0_MS};
use crate::on_both_backends;

const PHONE: &str = "919812345678";

fn out(s: &crate::helpers::Scrape, template: &str, status: &str) -> f64 {
    s.sum(
        "messaging_outbound_messages_total",
        &[("template", template), ("status", status)],
    )
}

async fn the_same_webhook_delivered_five_times_counts_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let hook = template_hook("wamid.5x", PHONE, "promo", "marketing", T0_MS);
    for _ in 0..5 {
        assert_eq!(app.post_json("/v1/events/sent", &hook).await.status(), 202);
        assert_eq!(
            app.post_meta(&meta_status(
                "wamid.5x",
                "delivered",
                T0_MS / 1000 + 4,
                PHONE
            ))
            .await
            .status(),
            200
        );
    }
    let s = app.scrape().await;
    assert_eq!(
        (
            out(&s, "promo", "accepted"),
            out(&s, "promo", "sent"),
            out(&s, "promo", "delivered")
        ),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(
        s.sum("messaging_cost_total", &[("template", "promo")]),
        0.75
    );
    assert_eq!(s.sum("messaging_delivery_latency_seconds_count", &[]), 1.0);
    assert_eq!(s.sum("messaging_delivery_latency_seconds_sum", &[]), 4.0);
    let wh = |o| {
        s.sum(
            "messaging_webhook_events_total",
            &[("provider", "meta"), ("outcome", o)],
        )
    };
    assert_eq!((wh("processed"), wh("duplicate")), (1.0, 4.0));
    let dup = app
        .post_json("/v1/events/sent", &hook)
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(dup, json!({"accepted": 0, "duplicates": 1}));
}

async fn statuses_in_reverse_order_count_the_same_as_in_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let t = T0_MS / 1000;
    for (id, order) in [
        ("wamid.fwd", ["sent", "delivered", "read"]),
        ("wamid.rev", ["read", "delivered", "sent"]),
    ] {
        let template = if id == "wamid.fwd" {
            "forward"
        } else {
            "reverse"
        };
        app.post_json(
            "/v1/events/sent",
            &template_hook(id, PHONE, template, "utility", T0_MS),
        )
        .await;
        for status in order {
            let ts = t + match status {
                "sent" => 1,
                "delivered" => 3,
                _ => 10,
            };
            assert_eq!(
                app.post_meta(&meta_status(id, status, ts, PHONE))
                    .await
                    .status(),
                200
            );
            let s = app.scrape().await;
            // The funnel holds after every single webhook, not just at the end.
            assert!(out(&s, template, "read") <= out(&s, template, "delivered"));
            assert!(out(&s, template, "delivered") <= out(&s, template, "sent"));
        }
    }
    let s = app.scrape().await;
    for status in ["accepted", "sent", "delivered", "read"] {
        assert_eq!(out(&s, "forward", status), 1.0, "forward {status}");
        assert_eq!(out(&s, "reverse", status), 1.0, "reverse {status}");
    }
    // Delivery latency is observed once the late `delivered` gives its time, read latency too.
    assert_eq!(s.sum("messaging_delivery_latency_seconds_count", &[]), 2.0);
    assert_eq!(s.sum("messaging_delivery_latency_seconds_sum", &[]), 6.0);
    assert_eq!(s.sum("messaging_read_latency_seconds_sum", &[]), 14.0);
    assert_eq!(
        s.sum("messaging_cost_total", &[("template", "reverse")]),
        s.sum("messaging_cost_total", &[("template", "forward")])
    );
}

async fn a_status_before_its_send_hook_is_attributed_within_the_grace_period(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let t = T0_MS / 1000;
    app.post_meta(&meta_status("wamid.early", "delivered", t + 2, PHONE))
        .await;
    app.post_meta(&meta_status("wamid.late", "delivered", t + 2, PHONE))
        .await;
    let s = app.scrape().await;
    assert_eq!(
        s.sum("messaging_outbound_messages_total", &[]),
        0.0,
        "nothing counted while waiting for the hook"
    );

    // Within the grace period: the hook arrives and everything counts under its template.
    app.clock.advance_ms(29_000);
    app.post_json(
        "/v1/events/sent",
        &template_hook("wamid.early", PHONE, "welcome", "utility", T0_MS),
    )
    .await;
    let s = app.scrape().await;
    assert_eq!(
        (
            out(&s, "welcome", "accepted"),
            out(&s, "welcome", "sent"),
            out(&s, "welcome", "delivered")
        ),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(
        s.sum(
            "messaging_delivery_latency_seconds_sum",
            &[("category", "utility")]
        ),
        2.0
    );

    // After it: the other message counts as `unknown`, and a late hook does not move it.
    app.clock.advance_ms(2_000);
    app.wait_for("the sweep to count the unattributed message", |s| {
        out(s, "unknown", "delivered") == 1.0
    })
    .await;
    app.post_json(
        "/v1/events/sent",
        &template_hook("wamid.late", PHONE, "welcome", "utility", T0_MS),
    )
    .await;
    let s = app.scrape().await;
    assert_eq!(
        (
            out(&s, "unknown", "sent"),
            out(&s, "unknown", "delivered"),
            out(&s, "unknown", "accepted")
        ),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(out(&s, "welcome", "delivered"), 1.0);
    assert_eq!(out(&s, "welcome", "accepted"), 1.0);
}

async fn a_restart_keeps_sessions_and_dedupe_state(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let t = T0_MS / 1000;
    app.post_meta(&meta_inbound("wamid.in1", PHONE, t)).await;
    app.post_json(
        "/v1/events/sent",
        &template_hook("wamid.r1", PHONE, "promo", "marketing", T0_MS + 1_000),
    )
    .await;
    app.post_meta(&meta_status("wamid.r1", "delivered", t + 3, PHONE))
        .await;
    let clock = app.clock.clone();
    app.stop().await;

    let app = TestApp::spawn_with(crate::helpers::config_for(&db.url), clock).await;
    app.post_meta(&meta_inbound("wamid.in1", PHONE, t)).await;
    app.post_json(
        "/v1/events/sent",
        &template_hook("wamid.r1", PHONE, "promo", "marketing", T0_MS + 1_000),
    )
    .await;
    app.post_meta(&meta_status("wamid.r1", "delivered", t + 3, PHONE))
        .await;
    app.post_meta(&meta_status("wamid.r1", "read", t + 30, PHONE))
        .await;
    let s = app.scrape().await;
    // Counters restart at zero in a new process (as Prometheus expects); what was already
    // counted before the restart is not counted again, what is new is.
    assert_eq!(s.sum("messaging_inbound_messages_total", &[]), 0.0);
    assert_eq!(
        (
            out(&s, "promo", "accepted"),
            out(&s, "promo", "delivered"),
            out(&s, "promo", "read")
        ),
        (0.0, 0.0, 1.0)
    );
    assert_eq!(s.sum("messaging_read_latency_seconds_sum", &[]), 27.0);
    assert_eq!(
        s.sum(
            "messaging_webhook_events_total",
            &[("outcome", "duplicate")]
        ),
        2.0
    );
    // The session survived: the window opened by the first inbound message is still known.
    let row: (i64, i64, i64) = sqlx_row(&db.url, PHONE).await;
    assert_eq!(row, (T0_MS, 1, 1));
}

/// (last_inbound_ms, user_messages, business_messages) of a phone's session.
async fn sqlx_row(url: &str, phone: &str) -> (i64, i64, i64) {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let r = sqlx::query(
        "SELECT last_inbound_ms, user_messages, business_messages FROM sessions WHERE phone = $1",
    )
    .bind(phone)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

async fn response_latency_runs_from_the_question_to_the_next_answer(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let t = T0_MS / 1000;
    app.post_meta(&meta_inbound("wamid.q1", PHONE, t)).await;
    app.post_meta(&meta_inbound("wamid.q2", PHONE, t + 5)).await;
    let reply = json!({"message_id": "wamid.a1", "phone": PHONE, "sent_at": messaging_exporter::clock::rfc3339(T0_MS + 12_000)});
    assert_eq!(app.post_json("/v1/events/sent", &reply).await.status(), 202);
    let again = json!({"message_id": "wamid.a2", "phone": PHONE, "sent_at": messaging_exporter::clock::rfc3339(T0_MS + 20_000)});
    app.post_json("/v1/events/sent", &again).await;
    let s = app.scrape().await;
    assert_eq!(
        s.sum(
            "messaging_response_latency_seconds_count",
            &[("provider", "meta")]
        ),
        1.0
    );
    assert_eq!(s.sum("messaging_response_latency_seconds_sum", &[]), 12.0);
    // Free-form messages are labelled template="none", category="none".
    assert_eq!(
        s.sum(
            "messaging_outbound_messages_total",
            &[
                ("template", "none"),
                ("category", "none"),
                ("status", "accepted")
            ]
        ),
        2.0
    );
    // The phone's window is open (the question came ~3 h before the clock): one active session.
    app.wait_for("the active-session gauge to refresh", |s| {
        s.sum("messaging_sessions_active", &[]) == 1.0
    })
    .await;
}

async fn label_values_past_the_limit_become_other(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = crate::helpers::config_for(&db.url);
    config.max_label_values = 2;
    let app = TestApp::spawn_with(config, messaging_exporter::clock::ManualClock::new(T0_MS)).await;
    let hooks: Vec<_> = (0..4)
        .map(|i| {
            template_hook(
                &format!("wamid.l{i}"),
                PHONE,
                &format!("t{i}"),
                "utility",
                T0_MS,
            )
        })
        .collect();
    app.post_json("/v1/events/sent", &json!(hooks)).await;
    let s = app.scrape().await;
    assert_eq!(
        (
            out(&s, "t0", "accepted"),
            out(&s, "t1", "accepted"),
            out(&s, "other", "accepted")
        ),
        (1.0, 1.0, 2.0)
    );
    assert_eq!(
        s.sum("messaging_label_overflow_total", &[("label", "template")]),
        2.0
    );
}

async fn ai_reports_become_latency_tokens_cost_and_intents(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let reports = json!([
        {"operation": "classification", "model": "gpt-4o-mini", "latency_ms": 812.5, "outcome": "ok",
         "intent": "book_appointment", "confidence": 0.93, "input_tokens": 123, "output_tokens": 45, "cost": 0.0012, "currency": "USD"},
        {"operation": "classification", "model": "gpt-4o-mini", "latency_ms": 2000, "outcome": "error", "error_type": "timeout"}
    ]);
    let resp = app.post_json("/v1/events/ai", &reports).await;
    assert_eq!(resp.status(), 202);
    let s = app.scrape().await;
    assert_eq!(
        s.sum("messaging_ai_requests_total", &[("outcome", "ok")]),
        1.0
    );
    assert_eq!(
        s.sum("messaging_ai_requests_total", &[("outcome", "error")]),
        1.0
    );
    assert_eq!(
        s.sum(
            "messaging_ai_latency_seconds_sum",
            &[("operation", "classification")]
        ),
        2.8125
    );
    assert_eq!(
        s.sum("messaging_ai_tokens_total", &[("direction", "input")]),
        123.0
    );
    assert_eq!(
        s.sum("messaging_ai_tokens_total", &[("direction", "output")]),
        45.0
    );
    assert_eq!(
        s.sum("messaging_ai_cost_total", &[("currency", "USD")]),
        0.0012
    );
    assert_eq!(
        s.sum(
            "messaging_ai_intents_total",
            &[("intent", "book_appointment")]
        ),
        1.0
    );
}

async fn retention_purges_only_rows_past_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let t = T0_MS / 1000;
    app.post_meta(&meta_inbound("wamid.old", PHONE, t)).await;
    app.post_meta(&meta_status("wamid.old-out", "sent", t, PHONE))
        .await;
    app.clock.advance_ms(91 * 86_400_000);
    app.post_meta(&meta_inbound(
        "wamid.new",
        "919876543210",
        app.now_ms() / 1000,
    ))
    .await;
    let deleted = messaging_exporter::background::purge(&app.state)
        .await
        .unwrap();
    assert_eq!(deleted, 3, "the old inbound, outbound and session rows");
    // The live window survives the purge.
    let (last_inbound, users, _) = sqlx_row(&db.url, "919876543210").await;
    assert_eq!((last_inbound / 1000, users), (app.now_ms() / 1000, 1));
    let check = serde_json::json!({"phone": "919876543210", "is_template": false});
    let reply: serde_json::Value = app
        .post_json("/v1/check-send", &check)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["session"]["is_active"], true, "{reply}");
    // The purged inbound message is outside Meta's 7-day redelivery window; the new one stays deduped.
    app.post_meta(&meta_inbound(
        "wamid.new",
        "919876543210",
        app.now_ms() / 1000,
    ))
    .await;
    let s = app.scrape().await;
    assert_eq!(
        s.sum(
            "messaging_webhook_events_total",
            &[("outcome", "duplicate")]
        ),
        1.0
    );
}

/// A request of 300 send hooks and a webhook of 600 statuses are batches large enough to
/// be cut by phone into transactions that run at once (on Postgres): every status is
/// still counted once under its own template, and the hook reply counts every hook.
async fn large_batches_cut_in_parts_count_every_message_under_its_template(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let t = T0_MS / 1000;
    let phone = |i: usize| format!("9198{:08}", i % 97);
    let template = |i: usize| if i.is_multiple_of(3) { "promo" } else { "otp" };
    let hooks: Vec<serde_json::Value> = (0..300)
        .map(|i| {
            template_hook(
                &format!("wamid.big{i}"),
                &phone(i),
                template(i),
                "marketing",
                T0_MS,
            )
        })
        .collect();
    let reply = app.post_json("/v1/events/sent", &json!(hooks)).await;
    assert_eq!(reply.status(), 202);
    let reply: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(
        (reply["accepted"].as_u64(), reply["duplicates"].as_u64()),
        (Some(300), Some(0))
    );
    let statuses: Vec<serde_json::Value> = (0..300)
        .flat_map(|i| {
            ["sent", "delivered"].map(|st| {
                json!({"id": format!("wamid.big{i}"), "status": st,
                "timestamp": (t + 5).to_string(), "recipient_id": phone(i)})
            })
        })
        .collect();
    let body = serde_json::to_vec(
        &json!({"entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"statuses": statuses}}]}]}),
    )
    .unwrap();
    for _ in 0..2 {
        assert_eq!(app.post_meta(&body).await.status(), 200);
    }
    let s = app.scrape().await;
    for (tpl, n) in [("promo", 100.0), ("otp", 200.0)] {
        assert_eq!(out(&s, tpl, "sent"), n, "{tpl} sent");
        assert_eq!(out(&s, tpl, "delivered"), n, "{tpl} delivered");
    }
    let wh = |o| s.sum("messaging_webhook_events_total", &[("outcome", o)]);
    assert_eq!((wh("processed"), wh("duplicate")), (600.0, 600.0));
}

on_both_backends!(
    the_same_webhook_delivered_five_times_counts_once,
    statuses_in_reverse_order_count_the_same_as_in_order,
    a_status_before_its_send_hook_is_attributed_within_the_grace_period,
    a_restart_keeps_sessions_and_dedupe_state,
    response_latency_runs_from_the_question_to_the_next_answer,
    label_values_past_the_limit_become_other,
    ai_reports_become_latency_tokens_cost_and_intents,
    retention_purges_only_rows_past_it,
    large_batches_cut_in_parts_count_every_message_under_its_template,
);
