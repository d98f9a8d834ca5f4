//! A bot that sends no send hooks (CONTRACT §6.3): every status is counted as `unknown`
//! within the grace period plus 10 s, however many wait at once.

use crate::helpers::{meta_statuses, Backend, Scrape, TestApp, TestDb};
use crate::on_both_backends;

/// More than a sweep of fixed size settles in the 10 s the contract allows.
const MESSAGES: usize = 12_000;
const PER_WEBHOOK: usize = 500;

async fn a_backlog_of_unattributed_messages_is_counted_within_ten_seconds(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let t = app.now_ms() / 1000;
    let ids: Vec<(String, String)> = (0..MESSAGES)
        .map(|i| (format!("wamid.backlog{i}"), format!("9198{i:08}")))
        .collect();
    for chunk in ids.chunks(PER_WEBHOOK) {
        let statuses: Vec<(&str, &str, i64, &str)> = chunk
            .iter()
            .map(|(id, phone)| (id.as_str(), "sent", t, phone.as_str()))
            .collect();
        assert_eq!(app.post_meta(&meta_statuses(&statuses)).await.status(), 200);
    }
    let unknown = |s: &Scrape| {
        s.sum(
            "messaging_outbound_messages_total",
            &[("status", "sent"), ("template", "unknown")],
        )
    };
    assert_eq!(unknown(&app.scrape().await), 0.0, "within the grace period");

    app.clock.advance_ms(31_000);
    // `wait_for` gives up after 10 s: the contract's bound past the grace period.
    app.wait_for("every waiting message to be counted as unknown", |s| {
        unknown(s) == MESSAGES as f64
    })
    .await;
}

on_both_backends!(a_backlog_of_unattributed_messages_is_counted_within_ten_seconds);
