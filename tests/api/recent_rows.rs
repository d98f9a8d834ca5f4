//! A replica keeps the rows it committed lately and takes them in place of a read. A
//! row changed since by someone else (another replica, the grace sweep) must still be
//! counted exactly once: the write-back refuses the stale row and the batch runs again.

use crate::helpers::{
    meta_inbound, meta_status, template_hook, two_replicas, two_replicas_configured, Backend,
    Scrape, TestApp, TestDb,
};

const PHONE: &str = "919812345678";

fn retries(s: &Scrape) -> f64 {
    s.sum("messaging_exporter_db_retries_total", &[])
}

fn reads(s: &Scrape, source: &str) -> f64 {
    s.sum(
        "messaging_exporter_batch_reads_total",
        &[("source", source)],
    )
}

fn out(s: &Scrape, template: &str, status: &str) -> f64 {
    s.sum(
        "messaging_outbound_messages_total",
        &[("template", template), ("status", status)],
    )
}

/// The hook and `delivered` reach `a`, `sent` reaches `b` in between, one after the other.
async fn hook_then_sent_elsewhere_then_delivered(a: &TestApp, b: &TestApp, id: &str) {
    let t = a.now_ms() / 1000;
    let hook = template_hook(id, PHONE, "promo", "marketing", a.now_ms());
    assert_eq!(a.post_json("/v1/events/sent", &hook).await.status(), 202);
    let sent = meta_status(id, "sent", t + 1, PHONE);
    assert_eq!(b.post_meta(&sent).await.status(), 200);
    let delivered = meta_status(id, "delivered", t + 3, PHONE);
    assert_eq!(a.post_meta(&delivered).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_another_replica_wrote_after_this_one_kept_it_runs_again_and_counts_once() {
    let (_db, a, b) = two_replicas().await;

    // A kept the message as its hook left it; B's write makes that copy stale.
    hook_then_sent_elsewhere_then_delivered(&a, &b, "wamid.kept1").await;
    assert_eq!(
        retries(&a.scrape().await),
        1.0,
        "A took its stale copy, lost the write and ran the batch again"
    );

    // After a lost race the copies stay off for a minute: A reads, and loses nothing.
    a.clock.advance_ms(30_000);
    hook_then_sent_elsewhere_then_delivered(&a, &b, "wamid.kept2").await;
    assert_eq!(retries(&a.scrape().await), 1.0);

    // Then A keeps rows again.
    a.clock.advance_ms(31_000);
    hook_then_sent_elsewhere_then_delivered(&a, &b, "wamid.kept3").await;
    assert_eq!(retries(&a.scrape().await), 2.0);
    assert_eq!(retries(&b.scrape().await), 0.0);

    let (sa, sb) = (a.scrape().await, b.scrape().await);
    for status in ["accepted", "sent", "delivered"] {
        assert_eq!(
            out(&sa, "promo", status) + out(&sb, "promo", status),
            3.0,
            "{status}"
        );
    }
    assert_eq!(
        sa.sum("messaging_delivery_latency_seconds_count", &[]),
        3.0,
        "each delivery counted once, by A"
    );
}

/// `--kept-rows 0` keeps nothing: replicas that share messages read every row, and no
/// batch runs again for a stale copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_kept_rows_replicas_sharing_messages_read_them_and_never_run_again() {
    let (_db, a, b) = two_replicas_configured(|c| c.kept_rows = 0).await;
    for id in ["wamid.read1", "wamid.read2"] {
        hook_then_sent_elsewhere_then_delivered(&a, &b, id).await;
    }
    let (sa, sb) = (a.scrape().await, b.scrape().await);
    assert_eq!(retries(&sa) + retries(&sb), 0.0);
    assert_eq!(reads(&sa, "kept") + reads(&sb, "kept"), 0.0);
    assert_eq!(
        reads(&sa, "database") + reads(&sb, "database"),
        6.0,
        "every batch read its rows"
    );
    for status in ["accepted", "sent", "delivered"] {
        assert_eq!(
            out(&sa, "promo", status) + out(&sb, "promo", status),
            2.0,
            "{status}"
        );
    }
}

/// Sessions are kept too: an inbound message through A, one through B, then one through A
/// again, whose kept session B's write made stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_another_replica_wrote_after_this_one_kept_it_counts_every_inbound_message() {
    let (_db, a, b) = two_replicas().await;
    let t = a.now_ms() / 1000;
    for (app, n) in [(&a, 1), (&b, 2), (&a, 3)] {
        let inbound = meta_inbound(&format!("wamid.in{n}"), PHONE, t - 10 + n);
        assert_eq!(app.post_meta(&inbound).await.status(), 200);
    }
    assert_eq!(
        retries(&a.scrape().await),
        1.0,
        "A's kept session was stale"
    );

    let resp = a.get(&format!("/v1/sessions/+{PHONE}")).await;
    assert_eq!(resp.status(), 200);
    let session: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(session["user_messages"], 3, "{session}");
    assert_eq!(session["is_active"], true, "{session}");
    let last = chrono::DateTime::from_timestamp(t - 7, 0).unwrap();
    assert_eq!(
        session["last_inbound_at"],
        last.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "{session}"
    );
}

/// Another replica's retention purge deletes a message (and its session) this one kept:
/// written back from the copy, the purged row would come back, counted as if nothing had
/// happened. The write-back finds the row gone and the batch runs again from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_another_replica_purged_after_this_one_kept_it_is_not_brought_back() {
    let (_db, a, b) = two_replicas().await;
    let hook = template_hook("wamid.old", PHONE, "promo", "marketing", a.now_ms());
    assert_eq!(a.post_json("/v1/events/sent", &hook).await.status(), 202);
    a.clock.advance_ms(91 * 86_400_000);
    let deleted = messaging_exporter::background::purge(&b.state)
        .await
        .unwrap();
    assert_eq!(
        deleted, 3,
        "the message, its session and its template cooldown, past retention"
    );

    let delivered = meta_status("wamid.old", "delivered", a.now_ms() / 1000, PHONE);
    assert_eq!(a.post_meta(&delivered).await.status(), 200);
    let s = a.scrape().await;
    assert_eq!(
        retries(&s),
        1.0,
        "A took its copy of the purged row, lost the write and ran the batch again"
    );
    assert_eq!(
        out(&s, "promo", "delivered"),
        0.0,
        "a message the database no longer holds: its status waits for a hook"
    );
}

async fn a_status_after_its_send_hook_takes_the_kept_row(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let hook = template_hook("wamid.hooked", PHONE, "promo", "marketing", app.now_ms());
    assert_eq!(app.post_json("/v1/events/sent", &hook).await.status(), 202);
    let s = app.scrape().await;
    assert_eq!(
        reads(&s, "database"),
        1.0,
        "a message seen for the first time"
    );
    assert_eq!(reads(&s, "kept"), 0.0);

    let sent = meta_status("wamid.hooked", "sent", app.now_ms() / 1000, PHONE);
    assert_eq!(app.post_meta(&sent).await.status(), 200);
    let s = app.scrape().await;
    assert_eq!(reads(&s, "kept"), 1.0, "the row the hook's batch committed");
    assert_eq!(reads(&s, "database"), 1.0);
    assert_eq!(out(&s, "promo", "sent"), 1.0);
}

async fn a_message_the_grace_sweep_settled_is_read_again(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let t = app.now_ms() / 1000;
    let delivered = meta_status("wamid.swept", "delivered", t + 2, PHONE);
    assert_eq!(app.post_meta(&delivered).await.status(), 200);
    app.clock.advance_ms(31_000);
    app.wait_for("the sweep to count the unattributed message", |s| {
        out(s, "unknown", "delivered") == 1.0
    })
    .await;

    let read = meta_status("wamid.swept", "read", t + 40, PHONE);
    assert_eq!(app.post_meta(&read).await.status(), 200);
    let s = app.scrape().await;
    assert_eq!(out(&s, "unknown", "read"), 1.0);
    assert_eq!(
        retries(&s),
        0.0,
        "the sweep's write dropped the kept copy, so the read was not of a stale row"
    );
}

async fn a_purged_message_is_not_written_back_from_a_kept_copy(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let t = app.now_ms() / 1000;
    let sent = meta_status("wamid.purged", "sent", t, PHONE);
    assert_eq!(app.post_meta(&sent).await.status(), 200);
    app.clock.advance_ms(91 * 86_400_000);
    app.wait_for("the sweep to count the unattributed message", |s| {
        out(s, "unknown", "sent") == 1.0
    })
    .await;
    // Written (and kept) once more, then deleted as past retention.
    let t = app.now_ms() / 1000;
    let delivered = meta_status("wamid.purged", "delivered", t, PHONE);
    assert_eq!(app.post_meta(&delivered).await.status(), 200);
    assert_eq!(out(&app.scrape().await, "unknown", "delivered"), 1.0);
    let deleted = messaging_exporter::background::purge(&app.state)
        .await
        .unwrap();
    assert_eq!(deleted, 2, "the message and its session");

    // A new message as far as the exporter knows: it waits for its hook again.
    let read = meta_status("wamid.purged", "read", t + 5, PHONE);
    assert_eq!(app.post_meta(&read).await.status(), 200);
    let s = app.scrape().await;
    assert_eq!(
        out(&s, "unknown", "read"),
        0.0,
        "not counted at once as the kept copy would be"
    );
    assert_eq!(retries(&s), 0.0);
}

crate::on_both_backends!(
    a_status_after_its_send_hook_takes_the_kept_row,
    a_message_the_grace_sweep_settled_is_read_again,
    a_purged_message_is_not_written_back_from_a_kept_copy,
);
