//! A database that stops answering without closing anything (CONTRACT §6.1): requests get
//! 503 within the database timeout, and whatever the database committed meanwhile is
//! counted once its answer arrives, however long after the request was answered.

use std::time::{Duration, Instant};

use messaging_exporter::clock::ManualClock;
use serde_json::Value;

use crate::helpers::{
    config_for, meta_status, template_hook, Backend, PgProxy, Scrape, TestApp, TestDb, T0_MS,
};
use crate::replicas_and_faults::{send, send_timed, Req};

const MESSAGES: usize = 10;

/// Ten send hooks; `sent` for the first five messages and `delivered` for the rest.
fn traffic() -> Vec<Req> {
    let t = T0_MS / 1000;
    let mut reqs = Vec::new();
    for i in 0..MESSAGES {
        let id = format!("wamid.stall{i}");
        let phone = format!("9198{i:08}");
        reqs.push(Req::Hook(template_hook(
            &id, &phone, "promo", "utility", T0_MS,
        )));
        let status = if i < MESSAGES / 2 {
            "sent"
        } else {
            "delivered"
        };
        reqs.push(Req::Meta(meta_status(&id, status, t + 2, &phone)));
    }
    reqs
}

fn outbound(s: &Scrape, status: &str) -> f64 {
    s.sum("messaging_outbound_messages_total", &[("status", status)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_means_503_in_time_and_what_it_committed_is_counted() {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = PgProxy::start().await;
    let mut config = config_for(&db.url_via(&proxy));
    config.db_timeout_ms = 1_000;
    config.request_timeout_ms = 30_000;
    let app = TestApp::spawn_with(config, ManualClock::new(T0_MS + 1_000_000)).await;
    let warm_up = template_hook("wamid.warm", "919800000099", "promo", "utility", T0_MS);
    assert_eq!(
        app.post_json("/v1/events/sent", &warm_up).await.status(),
        202
    );

    // The database takes every statement (and commits it) but its answers go nowhere.
    proxy.stall_replies();
    let reqs = traffic();
    let started = Instant::now();
    let codes: Vec<u16> = send_timed(&app, reqs.clone(), reqs.len())
        .await
        .into_iter()
        .map(|(code, _)| code)
        .collect();
    let waited = started.elapsed();
    assert!(
        codes.iter().all(|c| *c == 503),
        "every request during the stall is refused, not acknowledged: {codes:?}"
    );
    assert!(
        waited < Duration::from_secs(15),
        "503s came after {waited:?}, not within the database timeout (the request timeout is 30 s)"
    );

    // The answers arrive: each batch that committed is counted now.
    proxy.resume();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_retries = app.scrape().await;
    println!(
        "stall: {} requests, all 503 within {waited:?}; counted once the replies came, before any retry: \
         accepted {} sent {} delivered {}",
        reqs.len(),
        outbound(&before_retries, "accepted"),
        outbound(&before_retries, "sent"),
        outbound(&before_retries, "delivered"),
    );
    // The providers retry every 503 until it is taken; all of them find their events stored
    // or store them now.
    for r in &reqs {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match send(&app, r).await {
                200 | 202 => break,
                503 if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                code => panic!("a retry after the stall got {code}"),
            }
        }
    }
    let expected = [
        ("accepted", MESSAGES + 1),
        ("sent", MESSAGES),
        ("delivered", MESSAGES / 2),
    ];
    let s = app
        .wait_for("every committed status to be counted", |s| {
            expected.iter().all(|(st, n)| outbound(s, st) == *n as f64)
        })
        .await;
    // Once more, as duplicates: nothing is counted twice.
    for r in &reqs {
        assert!(matches!(send(&app, r).await, 200 | 202));
    }
    let again = app.scrape().await;
    for (status, n) in expected {
        assert_eq!(outbound(&again, status), n as f64, "{status}\n{}", s.dump());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserving_check_answered_503_in_a_stall_holds_no_slot() {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = PgProxy::start().await;
    let mut config = config_for(&db.url_via(&proxy));
    config.db_timeout_ms = 1_000;
    let app = TestApp::spawn_with(config, ManualClock::new(T0_MS + 1_000_000)).await;
    let check = serde_json::json!({"phone": "919812345678", "is_template": true,
        "template_name": "promo", "template_category": "utility", "reserve": true});
    let other = serde_json::json!({"phone": "919800000001", "is_template": false});
    assert_eq!(app.post_json("/v1/check-send", &other).await.status(), 200);

    proxy.stall_replies();
    let refused = app.post_json("/v1/check-send", &check).await;
    assert_eq!(refused.status(), 503);
    proxy.resume();

    // Whatever the stalled batch did once the database answered, the bot that got 503 holds
    // nothing: its next check may reserve the phone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reply: Value = app
        .post_json("/v1/check-send", &check)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["can_send"], true, "{reply}");
    assert!(reply["reservation"]["id"].is_string(), "{reply}");
}
