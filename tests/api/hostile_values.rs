//! Hostile values over HTTP (CONTRACT §6.5–6.7): times far ahead or long past, a cooldown
//! stored far ahead by an earlier version, another phone's reservation, and prices or
//! nulls that would break the rate card. Each is refused or bounded, and changes nothing
//! else.

use messaging_exporter::clock::rfc3339;
use serde_json::{json, Value};

use crate::helpers::{meta_inbound, meta_status, template_hook, Backend, TestApp, TestDb};
use crate::on_both_backends;
use crate::v1::{
    check, configure, delete, field_of, free_form, get, hook, post, put, reserve, template,
};

const HOUR: i64 = 3_600_000;
const MINUTE: i64 = 60_000;
const A: &str = "919876543210";
const B: &str = "919812345678";
const C: &str = "14155550100";
/// 9999-12-31T23:59:59Z, the last time RFC 3339 can write.
const YEAR_9999_MS: i64 = 253_402_300_799_000;
/// 2100-01-01T00:00:00Z in unix seconds, as Meta writes timestamps.
const YEAR_2100_S: i64 = 4_102_444_800;

fn hook_naming(id: &str, phone: &str, reservation_id: &str, sent_at_ms: i64) -> Value {
    let mut h = template_hook(id, phone, "t", "utility", sent_at_ms);
    h["reservation_id"] = json!(reservation_id);
    h
}

/// `POST /v1/events/sent` expecting 422; the field its message names.
async fn refused_field(app: &TestApp, body: &Value) -> String {
    let (status, reply) = post(app, "/v1/events/sent", body).await;
    assert_eq!(status, 422, "{body}: {reply}");
    field_of(&reply)
}

async fn outbound_total(app: &TestApp) -> f64 {
    app.scrape()
        .await
        .sum("messaging_outbound_messages_total", &[])
}

async fn send_hook_times_far_ahead_or_before_2015_are_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let now = app.now_ms();
    let at = |id: &str, phone: &str, sent_at_ms: i64| {
        template_hook(id, phone, "t", "utility", sent_at_ms)
    };
    for (body, field) in [
        (at("wamid.t1", A, YEAR_9999_MS), "sent_at"),
        (at("wamid.t2", A, now + 5 * MINUTE + 1_000), "sent_at"),
        (at("wamid.t3", A, 1_420_070_399_000), "sent_at"), // 2014-12-31T23:59:59Z
        (
            json!([at("wamid.t4", B, now), at("wamid.t5", A, YEAR_9999_MS)]),
            "[1].sent_at",
        ),
    ] {
        assert_eq!(refused_field(&app, &body).await, field, "{body}");
    }
    // Nothing was stored or counted, and no phone is in cooldown.
    assert_eq!(outbound_total(&app).await, 0.0);
    for phone in [A, B] {
        assert_eq!(
            check(&app, template(phone, "utility")).await["rate_limit"],
            json!({"can_send": true, "cooldown_remaining_minutes": 0, "last_template_sent_at": null}),
            "{phone}"
        );
    }

    // Up to five minutes ahead is a bot's clock running a little fast: accepted, and its
    // cooldown runs from the receipt, not from the future.
    hook(&app, at("wamid.t6", A, now + 5 * MINUTE)).await;
    assert_eq!(
        check(&app, template(A, "utility")).await["rate_limit"],
        json!({"can_send": false, "cooldown_remaining_minutes": 720,
               "last_template_sent_at": rfc3339(now)})
    );
}

/// What an exporter without the §6.5 check stored for a send hook dated 9999-12-31.
async fn store_far_future_cooldown(db: &TestDb, phone: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let updated = sqlx::query("UPDATE cooldowns SET last_template_ms = $1 WHERE phone = $2")
        .bind(YEAR_9999_MS)
        .bind(phone)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 1);
}

async fn a_cooldown_stored_far_ahead_blocks_no_longer_than_the_cooldown(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let sent_at = app.now_ms();
    for (id, phone) in [("wamid.p1", A), ("wamid.p2", B)] {
        hook(&app, template_hook(id, phone, "t", "utility", sent_at)).await;
        store_far_future_cooldown(&db, phone).await;
    }
    // The stored time counts from when the row was written.
    assert_eq!(
        check(&app, template(A, "utility")).await["rate_limit"],
        json!({"can_send": false, "cooldown_remaining_minutes": 720,
               "last_template_sent_at": rfc3339(sent_at)})
    );
    app.clock.advance_ms(12 * HOUR);
    assert_eq!(check(&app, template(A, "utility")).await["can_send"], true);

    // The slot can be taken, and giving it back does not start the cooldown anew.
    let taken = check(&app, reserve(A)).await;
    let id = taken["reservation"]["id"].as_str().expect("a reservation");
    app.clock.advance_ms(MINUTE);
    let (status, released) = delete(&app, &format!("/v1/reservations/{id}")).await;
    assert_eq!((status, &released["status"]), (200, &json!("released")));
    assert_eq!(check(&app, template(A, "utility")).await["can_send"], true);

    // A later, correct hook takes effect: the cooldown runs from its sent_at.
    let later = app.now_ms() - HOUR;
    hook(&app, template_hook("wamid.p3", B, "t", "utility", later)).await;
    assert_eq!(
        check(&app, template(B, "utility")).await["rate_limit"],
        json!({"can_send": false, "cooldown_remaining_minutes": 660,
               "last_template_sent_at": rfc3339(later)})
    );
}

async fn provider_times_far_ahead_are_taken_as_the_receipt_time(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let now = app.now_ms();
    for (id, phone) in [("wamid.d1", A), ("wamid.d2", B)] {
        hook(&app, template_hook(id, phone, "t", "utility", now - 10_000)).await;
    }
    for body in [
        // Delivered "in 2100": counted, at the receipt.
        meta_status("wamid.d1", "delivered", YEAR_2100_S, A),
        // Four minutes ahead is within a provider's clock error: taken as given.
        meta_status("wamid.d2", "delivered", now / 1000 + 240, B),
        // A user message "from 2100" opens a window of 24 hours from the receipt.
        meta_inbound("wamid.in1", C, YEAR_2100_S),
    ] {
        assert_eq!(app.post_meta(&body).await.status(), 200);
    }
    let s = app.scrape().await;
    let delivered = [("status", "delivered")];
    assert_eq!(s.sum("messaging_outbound_messages_total", &delivered), 2.0);
    assert_eq!(s.sum("messaging_delivery_latency_seconds_count", &[]), 2.0);
    assert_eq!(
        s.sum("messaging_delivery_latency_seconds_sum", &[]),
        10.0 + 250.0
    );
    assert_eq!(s.sum("messaging_inbound_messages_total", &[]), 1.0);
    assert_eq!(
        check(&app, free_form(C)).await["session"],
        json!({"is_active": true, "expires_at": rfc3339(now + 24 * HOUR),
               "remaining_minutes": 1440})
    );
}

async fn a_hook_naming_another_phones_reservation_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let now = app.now_ms();
    let held = check(&app, reserve(A)).await;
    let id = held["reservation"]["id"].as_str().unwrap().to_owned();

    let foreign = hook_naming("wamid.x1", B, &id, now);
    assert_eq!(refused_field(&app, &foreign).await, "reservation_id");
    // In an array the whole request is refused, its valid hooks too.
    let mixed = json!([template_hook("wamid.x2", C, "t", "utility", now), foreign]);
    assert_eq!(refused_field(&app, &mixed).await, "[1].reservation_id");

    // A's reservation still holds its slot; B and C are in no cooldown; nothing counted.
    assert_eq!(
        check(&app, template(A, "utility")).await["rate_limit"],
        json!({"can_send": false, "cooldown_remaining_minutes": 720,
               "last_template_sent_at": null})
    );
    for phone in [B, C] {
        let reply = check(&app, template(phone, "utility")).await;
        assert_eq!(reply["can_send"], true, "{phone}: {reply}");
    }
    assert_eq!(outbound_total(&app).await, 0.0);

    // A's own hook confirms it; an unknown id is accepted and settles nothing, as before.
    let own = hook_naming("wamid.x3", A, &id, now);
    hook(
        &app,
        json!([own, hook_naming("wamid.x4", B, "rsv_unknown", now)]),
    )
    .await;
    let (_, state) = delete(&app, &format!("/v1/reservations/{id}")).await;
    assert_eq!(
        (&state["status"], &state["message_id"]),
        (&json!("confirmed"), &json!("wamid.x3"))
    );
    assert_eq!(
        check(&app, template(B, "utility")).await["blocked_reason"],
        "rate_limited"
    );
}

/// Hooks that arrive together are committed in one batch: a refused one fails only itself.
async fn a_refused_hook_fails_no_hook_sent_beside_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let now = app.now_ms();
    let held = check(&app, reserve(A)).await;
    let id = held["reservation"]["id"].as_str().unwrap().to_owned();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let phone = format!("9198000000{i:02}");
        let body = if i % 2 == 0 {
            hook_naming(&format!("wamid.n{i}"), &phone, &id, now)
        } else {
            template_hook(&format!("wamid.n{i}"), &phone, "t", "utility", now)
        };
        let (client, url) = (app.client.clone(), app.url("/v1/events/sent"));
        tasks.spawn(async move {
            let status = client.post(url).json(&body).send().await.unwrap().status();
            (i, status.as_u16())
        });
    }
    for (i, status) in tasks.join_all().await {
        assert_eq!(status, if i % 2 == 0 { 422 } else { 202 }, "hook {i}");
    }
    let s = app.scrape().await;
    assert_eq!(
        s.sum(
            "messaging_outbound_messages_total",
            &[("status", "accepted")]
        ),
        10.0
    );
}

async fn hostile_prices_nulls_and_repeats_in_the_config(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let (_, before) = get(&app, "/v1/config").await;
    for (patch, field) in [
        (json!({"rates": {"marketing": f64::MAX}}), "rates.marketing"),
        (json!({"rates": {"utility": 1_000_000.5}}), "rates.utility"),
        (
            json!({"country_rates": {"1": {"utility": 1e7}}}),
            "country_rates.1.utility",
        ),
        // Removing a base price would make its category silently free.
        (json!({"rates": {"marketing": null}}), "rates.marketing"),
    ] {
        let (status, reply) = put(&app, "/v1/config", &patch).await;
        assert_eq!(status, 422, "{patch}: {reply}");
        assert_eq!(field_of(&reply), field, "{patch}");
    }
    let (_, after) = get(&app, "/v1/config").await;
    assert_eq!(after, before);
    assert_eq!(
        check(&app, template(A, "marketing")).await["cost"]["amount"],
        0.75
    );

    // Null removes one country price or a whole prefix; a list keeps each value once.
    let doc = configure(
        &app,
        json!({"country_rates": {"1": {"marketing": 0.025, "utility": 0.004}},
               "free_in_window_categories": ["utility", "service", "utility"]}),
    )
    .await;
    assert_eq!(
        doc["free_in_window_categories"],
        json!(["utility", "service"])
    );
    let doc = configure(&app, json!({"country_rates": {"1": {"utility": null}}})).await;
    assert_eq!(doc["country_rates"], json!({"1": {"marketing": 0.025}}));
    assert_eq!(
        check(&app, template(C, "utility")).await["cost"]["amount"],
        0.35,
        "utility falls back to the base price"
    );
    let doc = configure(&app, json!({"country_rates": {"1": null}})).await;
    assert_eq!(doc["country_rates"], json!({}));

    // The highest price there is, counted twice, is still a number.
    configure(&app, json!({"rates": {"marketing": 1_000_000}})).await;
    let now = app.now_ms();
    for id in ["wamid.c1", "wamid.c2"] {
        hook(&app, template_hook(id, B, "t", "marketing", now)).await;
        let delivered = meta_status(id, "delivered", now / 1000, B);
        assert_eq!(app.post_meta(&delivered).await.status(), 200);
    }
    let s = app.scrape().await;
    assert_eq!(s.sum("messaging_cost_total", &[]), 2_000_000.0);
    app.clock.advance_ms(MINUTE); // `/v1/costs` runs up to now, excluded
    let (status, costs) = get(&app, "/v1/costs").await;
    assert_eq!((status, &costs["total_cost"]), (200, &json!(2_000_000.0)));
}

async fn an_ai_cost_past_the_price_bound_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let report = |cost: f64| {
        json!({"operation": "classification", "model": "m", "latency_ms": 10.0,
               "outcome": "ok", "cost": cost, "currency": "USD"})
    };
    for _ in 0..2 {
        let (status, reply) = post(
            &app,
            "/v1/events/ai",
            &json!([report(1.0), report(f64::MAX)]),
        )
        .await;
        assert_eq!(status, 422, "{reply}");
        assert_eq!(field_of(&reply), "[1].cost");
    }
    let (status, _) = post(&app, "/v1/events/ai", &report(1_000_000.0)).await;
    assert_eq!(status, 202);
    let s = app.scrape().await;
    assert_eq!(
        s.sum("messaging_ai_cost_total", &[]),
        1_000_000.0,
        "finite, and only what was taken"
    );
}

on_both_backends!(
    an_ai_cost_past_the_price_bound_is_refused,
    send_hook_times_far_ahead_or_before_2015_are_refused,
    a_cooldown_stored_far_ahead_blocks_no_longer_than_the_cooldown,
    provider_times_far_ahead_are_taken_as_the_receipt_time,
    a_hook_naming_another_phones_reservation_is_refused,
    a_refused_hook_fails_no_hook_sent_beside_it,
    hostile_prices_nulls_and_repeats_in_the_config,
);
