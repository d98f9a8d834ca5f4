//! `POST /v1/check-send` and `DELETE /v1/reservations/{id}` over HTTP: cost, window,
//! cooldown, reservations (including a race across two replicas on one Postgres).

use std::collections::BTreeSet;

use messaging_exporter::clock::rfc3339;
use serde_json::{json, Value};

use crate::helpers::{config_for, Backend, TestApp, TestDb};
use crate::on_both_backends;
use crate::v1::{
    approx, check, check_all, configure, delete, field_of, free_form, hook, inbound_now, post,
    reserve, template,
};

const HOUR: i64 = 3_600_000;
const OPEN: &str = "919876543210";
const CLOSED: &str = "919812345678";
const US: &str = "14155550100";

fn cost(reply: &Value) -> (f64, String) {
    (
        reply["cost"]["amount"].as_f64().unwrap(),
        reply["cost"]["reason"].as_str().unwrap().to_owned(),
    )
}

async fn cost_matrix(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    inbound_now(&app, "wamid.in1", OPEN).await;
    // (category, price) with the default rate card; lite and international fall back.
    let prices = [
        ("marketing", 0.75),
        ("marketing_lite", 0.75),
        ("utility", 0.35),
        ("authentication", 0.30),
        ("authentication_international", 0.30),
        ("service", 0.0),
    ];
    for (category, price) in prices {
        let open = check(&app, template(OPEN, category)).await;
        let expected = if category == "service" {
            (0.0, "within_session".to_owned())
        } else {
            (price, "category_always_charged".to_owned())
        };
        assert_eq!(cost(&open), expected, "{category} in the window");
        assert_eq!(open["cost"]["currency"], "INR");
        let closed = check(&app, template(CLOSED, category)).await;
        assert_eq!(
            cost(&closed),
            (price, "template_outside_session".to_owned()),
            "{category} outside the window"
        );
    }
    for phone in [OPEN, CLOSED] {
        let reply = check(&app, free_form(phone)).await;
        assert_eq!(cost(&reply), (0.0, "service_message".to_owned()), "{phone}");
        assert_eq!(reply["can_send"], true);
    }

    // Older Meta terms: utility free inside the window, still charged outside it.
    configure(
        &app,
        json!({"free_in_window_categories": ["service", "utility"]}),
    )
    .await;
    let open = check(&app, template(OPEN, "utility")).await;
    assert_eq!(cost(&open), (0.0, "within_session".to_owned()));
    let closed = check(&app, template(CLOSED, "utility")).await;
    assert_eq!(cost(&closed), (0.35, "template_outside_session".to_owned()));

    // A country override: the longest prefix wins, a missing price falls back.
    configure(
        &app,
        json!({"country_rates": {"1": {"marketing": 0.025, "utility": 0.004},
                                  "1415": {"marketing": 0.03}}}),
    )
    .await;
    let us = |c: &'static str| check(&app, template(US, c));
    assert_eq!(cost(&us("marketing").await).0, 0.03);
    assert_eq!(cost(&us("marketing_lite").await).0, 0.03);
    assert_eq!(
        cost(&us("utility").await).0,
        0.35,
        "1415 has no utility price"
    );
    assert_eq!(cost(&us("authentication").await).0, 0.30);
    let other_us = check(&app, template("12125550100", "utility")).await;
    assert_eq!(cost(&other_us).0, 0.004);

    // Cost tracking off: every quote is 0 with its own reason.
    configure(&app, json!({"cost_tracking_enabled": false})).await;
    for (category, _) in prices {
        for phone in [OPEN, CLOSED, US] {
            let reply = check(&app, template(phone, category)).await;
            assert_eq!(
                cost(&reply),
                (0.0, "cost_tracking_disabled".to_owned()),
                "{category} {phone}"
            );
        }
    }
    let reply = check(&app, free_form(OPEN)).await;
    assert_eq!(cost(&reply), (0.0, "cost_tracking_disabled".to_owned()));
}

async fn window_opens_extends_and_expires(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    configure(&app, json!({"block_out_of_session_messages": true})).await;

    let before = check(&app, free_form(OPEN)).await;
    assert_eq!(before["can_send"], false);
    assert_eq!(before["blocked_reason"], "outside_session_window");
    assert_eq!(
        before["session"],
        json!({"is_active": false, "expires_at": null, "remaining_minutes": 0})
    );
    assert_eq!(
        before["reservation"],
        Value::Null,
        "every key is present: {before}"
    );
    assert_eq!(
        before["rate_limit"],
        Value::Null,
        "no cooldown for free-form"
    );
    let keys: BTreeSet<&str> = before
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, BTreeSet::from(crate::helpers::CHECK_SEND_KEYS));
    // Templates are never blocked by the window.
    assert_eq!(
        check(&app, template(OPEN, "marketing")).await["can_send"],
        true
    );

    let opened_at = app.now_ms();
    inbound_now(&app, "wamid.w1", &format!("+{OPEN}")).await;
    let open = check(&app, free_form(&format!("whatsapp:+{OPEN}"))).await;
    assert_eq!(open["phone"], OPEN, "phones come back as digits");
    assert_eq!(open["can_send"], true);
    assert_eq!(open["blocked_reason"], Value::Null);
    assert_eq!(
        open["session"],
        json!({"is_active": true, "expires_at": rfc3339(opened_at + 24 * HOUR), "remaining_minutes": 1440})
    );

    // A later message rolls the window forward.
    app.clock.advance_ms(10 * HOUR);
    let extended_at = app.now_ms();
    inbound_now(&app, "wamid.w2", OPEN).await;
    let s = check(&app, free_form(OPEN)).await["session"].clone();
    assert_eq!(s["expires_at"], rfc3339(extended_at + 24 * HOUR));
    assert_eq!(s["remaining_minutes"], 1440);

    // One second before expiry: open, one minute left (rounded up). At expiry: closed.
    app.clock.advance_ms(24 * HOUR - 1_000);
    let last = check(&app, free_form(OPEN)).await;
    assert_eq!(last["session"]["remaining_minutes"], 1);
    assert_eq!(last["can_send"], true);
    app.clock.advance_ms(1_000);
    let expired = check(&app, free_form(OPEN)).await;
    assert_eq!(expired["session"]["is_active"], false);
    assert_eq!(expired["blocked_reason"], "outside_session_window");

    // Session tracking off: the window is unknown, so nothing is blocked for it.
    configure(&app, json!({"session_tracking_enabled": false})).await;
    let untracked = check(&app, free_form(OPEN)).await;
    assert_eq!(untracked["session"], Value::Null);
    assert_eq!(untracked["can_send"], true);
}

async fn cooldown_boundary(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let fresh = check(&app, template(OPEN, "utility")).await;
    assert_eq!(
        fresh["rate_limit"],
        json!({"can_send": true, "cooldown_remaining_minutes": 0, "last_template_sent_at": null})
    );

    let sent_at = app.now_ms();
    hook(
        &app,
        crate::helpers::template_hook("wamid.c1", OPEN, "order_update", "utility", sent_at),
    )
    .await;
    // Any other template to the same phone is inside the cooldown.
    let blocked = check(&app, template(OPEN, "marketing")).await;
    assert_eq!(blocked["can_send"], false);
    assert_eq!(blocked["blocked_reason"], "rate_limited");
    assert_eq!(
        blocked["rate_limit"],
        json!({"can_send": false, "cooldown_remaining_minutes": 720,
               "last_template_sent_at": rfc3339(sent_at)})
    );
    // A late hook for an older template does not move the cooldown back.
    hook(
        &app,
        crate::helpers::template_hook("wamid.c0", OPEN, "older", "utility", sent_at - HOUR),
    )
    .await;
    let still = check(&app, template(OPEN, "utility")).await;
    assert_eq!(
        still["rate_limit"]["last_template_sent_at"],
        rfc3339(sent_at)
    );
    // Free-form messages and other phones are not.
    assert_eq!(check(&app, free_form(OPEN)).await["can_send"], true);
    assert_eq!(
        check(&app, template(CLOSED, "utility")).await["can_send"],
        true
    );

    app.clock.advance_ms(12 * HOUR - 1_000);
    let last_second = check(&app, template(OPEN, "utility")).await;
    assert_eq!(last_second["blocked_reason"], "rate_limited");
    assert_eq!(last_second["rate_limit"]["cooldown_remaining_minutes"], 1);
    app.clock.advance_ms(1_000);
    let free = check(&app, template(OPEN, "utility")).await;
    assert_eq!(free["can_send"], true);
    assert_eq!(free["blocked_reason"], Value::Null);
    assert_eq!(free["rate_limit"]["cooldown_remaining_minutes"], 0);
    assert_eq!(
        free["rate_limit"]["last_template_sent_at"],
        rfc3339(sent_at)
    );

    // A shorter cooldown applies at once to the replica that took the PUT.
    hook(
        &app,
        crate::helpers::template_hook("wamid.c2", OPEN, "x", "marketing", app.now_ms()),
    )
    .await;
    assert_eq!(
        check(&app, template(OPEN, "utility")).await["can_send"],
        false
    );
    configure(&app, json!({"template_cooldown_hours": 0})).await;
    assert_eq!(
        check(&app, template(OPEN, "utility")).await["can_send"],
        true
    );
    configure(
        &app,
        json!({"template_cooldown_hours": 12, "rate_limiting_enabled": false}),
    )
    .await;
    let off = check(&app, template(OPEN, "utility")).await;
    assert_eq!(off["can_send"], true);
    assert_eq!(off["rate_limit"], Value::Null);
    let no_slot = check(&app, reserve(OPEN)).await;
    assert_eq!(no_slot["can_send"], true);
    assert_eq!(
        no_slot["reservation"],
        Value::Null,
        "no cooldown, nothing to take"
    );

    // While rate limiting is off, template hooks start no cooldown.
    app.clock.advance_ms(13 * HOUR);
    hook(
        &app,
        crate::helpers::template_hook("wamid.c3", CLOSED, "x", "utility", app.now_ms()),
    )
    .await;
    configure(&app, json!({"rate_limiting_enabled": true})).await;
    assert_eq!(
        check(&app, template(CLOSED, "utility")).await["can_send"],
        true
    );

    let s = app.scrape().await;
    let checks = |d: &str, r: &str| {
        s.sum(
            "messaging_presend_checks_total",
            &[("decision", d), ("reason", r)],
        )
    };
    assert_eq!(checks("blocked", "rate_limited"), 4.0);
    assert_eq!(checks("allowed", "template_outside_session"), 7.0);
    assert_eq!(checks("allowed", "service_message"), 1.0);
}

async fn reserve_release_and_confirm(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let now = app.now_ms();

    // A reserve on free-form takes nothing.
    let ff = check(&app, json!({"phone": OPEN, "reserve": true})).await;
    assert_eq!(ff["reservation"], Value::Null);

    let first = check(&app, reserve(OPEN)).await;
    assert_eq!(first["can_send"], true);
    let id = first["reservation"]["id"].as_str().unwrap().to_owned();
    assert_eq!(first["reservation"]["expires_at"], rfc3339(now + 12 * HOUR));
    // As docs/presend.md gives it: `rsv_`, the time of the check in 12 hex digits of unix
    // ms (so that ids sort by time), then 128 random bits.
    let random = id
        .strip_prefix(&format!("rsv_{now:012x}"))
        .unwrap_or_else(|| panic!("{id} does not start with the check's time"));
    assert!(
        random.len() == 32 && random.bytes().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );

    let second = check(&app, reserve(OPEN)).await;
    assert_eq!(second["blocked_reason"], "rate_limited");
    assert_eq!(
        second["reservation"],
        Value::Null,
        "a blocked reserve takes nothing"
    );
    let plain = check(&app, template(OPEN, "marketing")).await;
    assert_eq!(plain["blocked_reason"], "rate_limited");
    assert_eq!(plain["rate_limit"]["cooldown_remaining_minutes"], 720);
    assert_eq!(plain["rate_limit"]["last_template_sent_at"], Value::Null);

    // Release gives the slot back; releasing again answers the same.
    let (status, released) = delete(&app, &format!("/v1/reservations/{id}")).await;
    assert_eq!(status, 200, "{released}");
    assert_eq!(released["status"], "released");
    assert_eq!(released["phone"], OPEN);
    let (status, again) = delete(&app, &format!("/v1/reservations/{id}")).await;
    assert_eq!((status, again), (200, released));
    let (status, unknown) = delete(&app, "/v1/reservations/rsv_nope").await;
    assert_eq!(status, 404);
    assert_eq!(unknown["error"]["code"], "not_found");

    // Re-reserve, then confirm with the send hook: the cooldown runs from its sent_at.
    let third = check(&app, reserve(OPEN)).await;
    let id3 = third["reservation"]["id"].as_str().unwrap().to_owned();
    assert_ne!(id3, id);
    app.clock.advance_ms(60_000);
    let sent_at = app.now_ms();
    let mut h = crate::helpers::template_hook("wamid.r1", OPEN, "t", "utility", sent_at);
    h["reservation_id"] = json!(id3);
    hook(&app, h).await;
    let (_, confirmed) = delete(&app, &format!("/v1/reservations/{id3}")).await;
    assert_eq!(
        confirmed["status"], "confirmed",
        "a confirmed send cannot be undone"
    );
    assert_eq!(confirmed["message_id"], "wamid.r1");
    let after = check(&app, template(OPEN, "utility")).await;
    assert_eq!(
        after["rate_limit"]["last_template_sent_at"],
        rfc3339(sent_at)
    );
    assert_eq!(after["rate_limit"]["cooldown_remaining_minutes"], 720);

    // A reservation never confirmed nor released frees the slot at its expires_at.
    let other = check(&app, reserve(CLOSED)).await;
    let expires = other["reservation"]["expires_at"].clone();
    app.clock.advance_ms(12 * HOUR - 1_000);
    assert_eq!(check(&app, reserve(CLOSED)).await["can_send"], false);
    app.clock.advance_ms(1_000);
    assert_eq!(rfc3339(app.now_ms()), expires);
    assert_eq!(check(&app, reserve(CLOSED)).await["can_send"], true);

    // A send hook reporting a failed send releases its reservation.
    app.clock.advance_ms(13 * HOUR);
    let r = check(&app, reserve(US)).await;
    let rid = r["reservation"]["id"].as_str().unwrap().to_owned();
    let mut failed = crate::helpers::template_hook("wamid.r2", US, "t", "utility", app.now_ms());
    failed["reservation_id"] = json!(rid);
    failed["error"] = json!({"code": 131047, "title": "Re-engagement message"});
    hook(&app, failed).await;
    assert_eq!(check(&app, reserve(US)).await["can_send"], true);
    let (_, state) = delete(&app, &format!("/v1/reservations/{rid}")).await;
    assert_eq!(state["status"], "released");
}

async fn bad_input_is_422_and_changes_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    for (body, field) in [
        (json!({"phone": "abc", "is_template": false}), "phone"),
        (json!({"is_template": false}), "phone"),
        (
            json!({"phone": OPEN, "is_template": true, "reserve": true}),
            "template_category",
        ),
        (
            json!({"phone": OPEN, "is_template": true, "template_category": "promo", "reserve": true}),
            "template_category",
        ),
        (json!({"phone": OPEN, "reserve": "yes"}), "reserve"),
    ] {
        let (status, reply) = post(&app, "/v1/check-send", &body).await;
        assert_eq!(status, 422, "{body}: {reply}");
        assert_eq!(field_of(&reply), field, "{body}");
    }
    // None of them was counted, and every decision's series is there from the start.
    let s = app.scrape().await;
    let series: Vec<_> = s
        .series
        .iter()
        .filter(|((n, _), _)| n == "messaging_presend_checks_total")
        .collect();
    assert_eq!(series.len(), 7, "{series:?}");
    assert!(series.iter().all(|(_, v)| **v == 0.0), "{series:?}");
    // None of them took the slot.
    assert_eq!(check(&app, reserve(OPEN)).await["can_send"], true);
    let resp = app
        .client
        .post(app.url("/v1/check-send"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

async fn one_request_of_hooks_sets_each_phones_cooldown(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let now = app.now_ms();
    let held = check(&app, reserve(OPEN)).await;
    let id = held["reservation"]["id"].as_str().unwrap().to_owned();
    let mut confirming =
        crate::helpers::template_hook("wamid.b2", OPEN, "t", "utility", now + 5_000);
    confirming["reservation_id"] = json!(id);
    hook(
        &app,
        json!([
            crate::helpers::template_hook("wamid.b1", CLOSED, "t", "marketing", now - 60_000),
            confirming,
            crate::helpers::template_hook("wamid.b3", CLOSED, "t", "marketing", now - 120_000),
            {"message_id": "wamid.b4", "phone": US, "is_template": false},
        ]),
    )
    .await;
    // A sent_at ahead of the receipt (the bot's clock running fast) counts from the receipt.
    let open = check(&app, template(OPEN, "utility")).await;
    assert_eq!(open["rate_limit"]["last_template_sent_at"], rfc3339(now));
    assert_eq!(open["rate_limit"]["cooldown_remaining_minutes"], 720);
    let closed = check(&app, template(CLOSED, "utility")).await;
    assert_eq!(
        closed["rate_limit"]["last_template_sent_at"],
        rfc3339(now - 60_000)
    );
    assert_eq!(closed["rate_limit"]["cooldown_remaining_minutes"], 719);
    let us = check(&app, template(US, "utility")).await;
    assert_eq!(
        us["can_send"], true,
        "a free-form message starts no cooldown"
    );
    let (_, r) = delete(&app, &format!("/v1/reservations/{id}")).await;
    assert_eq!(r["status"], "confirmed");
}

/// Two hooks of one request naming one reservation: the first decides it (here a failed
/// send, so it is released), and the later successful one still starts the cooldown.
async fn the_first_hook_naming_a_reservation_decides_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let now = app.now_ms();
    let held = check(&app, reserve(OPEN)).await;
    let id = held["reservation"]["id"].as_str().unwrap().to_owned();
    let mut failed = crate::helpers::template_hook("wamid.f1", OPEN, "t", "utility", now - 1_000);
    failed["reservation_id"] = json!(id);
    failed["error"] = json!({"code": 131047, "title": "Re-engagement message"});
    let mut sent = crate::helpers::template_hook("wamid.f2", OPEN, "t", "utility", now);
    sent["reservation_id"] = json!(id);
    hook(&app, json!([failed, sent])).await;
    let (_, r) = delete(&app, &format!("/v1/reservations/{id}")).await;
    assert_eq!(r["status"], "released", "{r}");
    let after = check(&app, template(OPEN, "utility")).await;
    assert_eq!(after["rate_limit"]["last_template_sent_at"], rfc3339(now));
    assert_eq!(after["blocked_reason"], "rate_limited");
}

/// Concurrent checks share reads and reservation transactions: each still gets its own
/// phone's answer, and of the checks reserving one phone exactly one wins.
async fn concurrent_checks_each_get_their_own_phones_answer(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let phones: Vec<String> = (0..30).map(|i| format!("9198765{i:05}")).collect();
    for (i, phone) in phones.iter().enumerate() {
        match i % 3 {
            0 => assert_eq!(check(&app, reserve(phone)).await["can_send"], true),
            1 => inbound_now(&app, &format!("wamid.in{i}"), phone).await,
            _ => {}
        }
    }
    let checks = phones.iter().map(|p| template(p, "utility")).collect();
    for (i, reply) in check_all(&app, checks).await.into_iter().enumerate() {
        assert_eq!(reply["phone"], phones[i].as_str());
        assert_eq!(reply["can_send"], i % 3 != 0, "{}: {reply}", phones[i]);
        assert_eq!(
            reply["session"]["is_active"],
            i % 3 == 1,
            "{}: {reply}",
            phones[i]
        );
    }
    // Three reserving checks per free phone, all at once.
    let free: Vec<&String> = phones.iter().skip(1).step_by(3).collect();
    let reserves = free
        .iter()
        .flat_map(|p| [reserve(p), reserve(p), reserve(p)])
        .collect();
    let mut won = BTreeSet::new();
    for reply in check_all(&app, reserves).await {
        let phone = reply["phone"].as_str().unwrap().to_owned();
        if reply["can_send"] == true {
            assert!(reply["reservation"]["id"].is_string(), "{reply}");
            assert!(won.insert(phone.clone()), "{phone} reserved twice");
        } else {
            assert_eq!(reply["blocked_reason"], "rate_limited", "{reply}");
        }
    }
    assert_eq!(
        won.len(),
        free.len(),
        "every free phone reserved once: {won:?}"
    );
}

on_both_backends!(
    the_first_hook_naming_a_reservation_decides_it,
    concurrent_checks_each_get_their_own_phones_answer,
    one_request_of_hooks_sets_each_phones_cooldown,
    cost_matrix,
    window_opens_extends_and_expires,
    cooldown_boundary,
    reserve_release_and_confirm,
    bad_input_is_422_and_changes_nothing,
);

/// 50 concurrent reserving calls for one phone, split over two replicas sharing one
/// Postgres: exactly one is allowed. (SQLite is one process's file, so no replicas.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_reserves_over_two_replicas_allow_exactly_one() {
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = config_for(&db.url);
    config.db_max_connections = 20;
    let clock = messaging_exporter::clock::ManualClock::new(crate::helpers::T0_MS);
    let a = TestApp::spawn_with(config.clone(), clock.clone()).await;
    let b = TestApp::spawn_with(config, clock).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let app = if i % 2 == 0 { &a } else { &b };
        let (client, url) = (app.client.clone(), app.url("/v1/check-send"));
        calls.spawn(async move {
            let resp = client.post(url).json(&reserve(OPEN)).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        });
    }
    let replies = calls.join_all().await;
    let allowed: Vec<&Value> = replies.iter().filter(|r| r["can_send"] == true).collect();
    assert_eq!(allowed.len(), 1, "allowed: {allowed:?}");
    assert!(allowed[0]["reservation"]["id"].is_string());
    for r in replies.iter().filter(|r| r["can_send"] == false) {
        assert_eq!(r["blocked_reason"], "rate_limited");
        assert_eq!(r["reservation"], Value::Null);
    }
    let checks = a.scrape().await.sum(
        "messaging_presend_checks_total",
        &[("decision", "blocked"), ("reason", "rate_limited")],
    ) + b.scrape().await.sum(
        "messaging_presend_checks_total",
        &[("decision", "blocked"), ("reason", "rate_limited")],
    );
    assert_eq!(checks, 49.0);
    assert!(approx(&allowed[0]["cost"]["amount"], 0.35));
}

/// With the database gone, a check answers 503 and takes nothing; so does a release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_is_503_and_takes_nothing() {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = crate::helpers::PgProxy::start().await;
    let app = TestApp::spawn_with(
        config_for(&db.url_via(&proxy)),
        messaging_exporter::clock::ManualClock::new(crate::helpers::T0_MS),
    )
    .await;
    let held = check(&app, reserve(CLOSED)).await;
    let id = held["reservation"]["id"].as_str().unwrap().to_owned();

    proxy.down();
    let (status, reply) = post(&app, "/v1/check-send", &reserve(OPEN)).await;
    assert_eq!(status, 503, "{reply}");
    assert_eq!(reply["error"]["code"], "database_unavailable");
    let (status, _) = delete(&app, &format!("/v1/reservations/{id}")).await;
    assert_eq!(status, 503);
    let s = app.scrape().await;
    assert_eq!(
        s.sum("messaging_presend_checks_total", &[("decision", "allowed")]),
        1.0,
        "only the check that was answered counts"
    );

    proxy.up();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let after = loop {
        let (status, reply) = post(&app, "/v1/check-send", &reserve(OPEN)).await;
        if status == 200 {
            break reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {status}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(after["can_send"], true, "the failed reserve took nothing");
    assert_eq!(
        check(&app, reserve(CLOSED)).await["blocked_reason"],
        "rate_limited"
    );
}
