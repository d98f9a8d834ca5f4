//! Once a replica's reads keep finding the rows it does not keep new, it takes such rows
//! for new without reading them. One that was stored after all (by another replica) must
//! still be counted exactly once: the write-back refuses it and the batch runs again.

use messaging_exporter::clock::ManualClock;

use crate::helpers::{
    config_for, meta_inbound, meta_status, meta_statuses, template_hook, two_replicas, Backend,
    Scrape, TestApp, TestDb, T0_MS,
};

/// Clean reads a replica needs before it first takes rows for new (`presumed_new.rs`).
const CLEAN_READS: usize = 8;

fn reads(s: &Scrape, source: &str) -> f64 {
    s.sum(
        "messaging_exporter_batch_reads_total",
        &[("source", source)],
    )
}

fn retries(s: &Scrape, reason: &str) -> f64 {
    s.sum("messaging_exporter_db_retries_total", &[("reason", reason)])
}

fn sent(s: &Scrape, template: &str) -> f64 {
    s.sum(
        "messaging_outbound_messages_total",
        &[("template", template), ("status", "sent")],
    )
}

/// Send hooks of `n` new messages, each to a new phone, one batch each.
async fn new_messages(app: &TestApp, prefix: &str, n: usize) {
    for i in 0..n {
        let id = format!("wamid.{prefix}{i}");
        let phone = format!("91981234{i:04}");
        let hook = template_hook(&id, &phone, "promo", "marketing", app.now_ms());
        assert_eq!(app.post_json("/v1/events/sent", &hook).await.status(), 202);
    }
}

async fn new_messages_are_read_until_reads_keep_finding_them_new(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    new_messages(&app, "warm", CLEAN_READS).await;
    let s = app.scrape().await;
    assert_eq!(reads(&s, "database"), CLEAN_READS as f64);
    assert_eq!(reads(&s, "presumed_new"), 0.0, "a new replica reads first");

    new_messages(&app, "new", 3).await;
    let t = app.now_ms() / 1000;
    let status = meta_status("wamid.new0", "sent", t, "919812340000");
    assert_eq!(app.post_meta(&status).await.status(), 200);
    let s = app.scrape().await;
    assert_eq!(
        reads(&s, "presumed_new"),
        3.0,
        "three hooks of new messages"
    );
    assert_eq!(reads(&s, "kept"), 1.0, "the status of one");
    assert_eq!(reads(&s, "database"), CLEAN_READS as f64);
    assert_eq!(retries(&s, "presumed_new") + retries(&s, "conflict"), 0.0);
    assert_eq!(
        s.sum(
            "messaging_outbound_messages_total",
            &[("template", "promo"), ("status", "accepted")]
        ),
        (CLEAN_READS + 3) as f64
    );
    assert_eq!(sent(&s, "promo"), 1.0);
}

/// Statuses that come after a message's row stopped being kept (a `read` hours later)
/// are of stored messages: their evidence is their own, so they are read while send hooks
/// of new messages are still taken for new, and no batch runs again.
async fn late_statuses_of_messages_no_longer_kept_are_read(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = config_for(&db.url);
    config.kept_rows = 4;
    let app = TestApp::spawn_with(config, ManualClock::new(T0_MS + 10_000_000)).await;
    new_messages(&app, "warm", CLEAN_READS).await;
    let t = app.now_ms() / 1000;
    for i in 0..4 {
        let phone = format!("91981234{i:04}");
        let delivered = meta_status(&format!("wamid.warm{i}"), "delivered", t + 1, &phone);
        assert_eq!(app.post_meta(&delivered).await.status(), 200);
    }
    new_messages(&app, "new", 1).await;
    let s = app.scrape().await;
    assert_eq!(
        reads(&s, "database"),
        (CLEAN_READS + 4) as f64,
        "the first four messages were no longer kept"
    );
    assert_eq!(reads(&s, "presumed_new"), 1.0, "the new message's hook");
    assert_eq!(retries(&s, "presumed_new") + retries(&s, "conflict"), 0.0);
    assert_eq!(
        s.sum(
            "messaging_outbound_messages_total",
            &[("template", "promo"), ("status", "delivered")]
        ),
        4.0
    );
}

/// A large batch (here 300 send hooks, then 300 statuses, each one request) keeps its
/// rows and takes them too: on Postgres its parts then skip the read that made up much of
/// the database's work for batched webhooks.
async fn a_large_batch_takes_the_rows_the_one_before_kept(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let n = 300;
    let phone = |i: usize| format!("9198{i:08}");
    let hooks: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            template_hook(
                &format!("wamid.big{i}"),
                &phone(i),
                "promo",
                "marketing",
                app.now_ms(),
            )
        })
        .collect();
    let hooks = serde_json::Value::Array(hooks);
    assert_eq!(app.post_json("/v1/events/sent", &hooks).await.status(), 202);
    let before = app.scrape().await;
    assert_eq!(reads(&before, "kept") + reads(&before, "presumed_new"), 0.0);

    let t = app.now_ms() / 1000;
    let statuses: Vec<(String, &str, i64, String)> = (0..n)
        .map(|i| (format!("wamid.big{i}"), "sent", t, phone(i)))
        .collect();
    let body = meta_statuses(&statuses);
    assert_eq!(app.post_meta(&body).await.status(), 200);
    let s = app.scrape().await;
    assert_eq!(
        reads(&s, "database"),
        reads(&before, "database"),
        "no part of the status batch read"
    );
    assert!(reads(&s, "kept") >= 1.0, "every part took kept rows");
    assert_eq!(sent(&s, "promo"), n as f64);
}

/// A message B stored reaches A, which takes it for new: the write is refused, the batch
/// runs again with the stored row, and the status is counted once, under the template B's
/// hook named. A's kept rows stay on (a stale kept row turns them off for a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_another_replica_stored_taken_for_new_runs_again_and_counts_once() {
    let (_db, a, b) = two_replicas().await;
    new_messages(&a, "warm", CLEAN_READS).await;
    let phone = "919800000001";
    let hook = template_hook("wamid.b", phone, "welcome", "utility", b.now_ms());
    assert_eq!(b.post_json("/v1/events/sent", &hook).await.status(), 202);

    let t = a.now_ms() / 1000;
    let status = meta_status("wamid.b", "sent", t, phone);
    assert_eq!(a.post_meta(&status).await.status(), 200);
    let s = a.scrape().await;
    assert_eq!(retries(&s, "presumed_new"), 1.0);
    assert_eq!(retries(&s, "conflict"), 0.0);
    assert_eq!(
        sent(&s, "welcome"),
        1.0,
        "counted with the stored hook's template"
    );
    assert_eq!(sent(&s, "unknown"), 0.0);
    let repeat = a.post_meta(&status).await;
    assert_eq!(repeat.status(), 200);
    assert_eq!(
        sent(&a.scrape().await, "welcome"),
        1.0,
        "a repeat is a repeat"
    );

    // A reads again for a while, and still takes the rows it keeps.
    let database = reads(&a.scrape().await, "database");
    new_messages(&a, "after", 1).await;
    let status = meta_status("wamid.after0", "sent", t + 1, "919812340000");
    assert_eq!(a.post_meta(&status).await.status(), 200);
    let s = a.scrape().await;
    assert_eq!(
        reads(&s, "database"),
        database + 1.0,
        "the new hook was read"
    );
    assert_eq!(reads(&s, "kept"), 2.0, "the repeat and the last status");
    assert_eq!(sent(&s, "promo"), 1.0);
}

/// A session B stored (an inbound message) is taken for new by A's first message to that
/// phone: A's batch runs again with the stored session, so the reply is measured and the
/// user's message is not forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_another_replica_stored_taken_for_new_keeps_its_inbound_messages() {
    let (_db, a, b) = two_replicas().await;
    new_messages(&a, "warm", CLEAN_READS).await;
    let phone = "919800000002";
    let t = a.now_ms() / 1000;
    let inbound = meta_inbound("wamid.in", phone, t - 30);
    assert_eq!(b.post_meta(&inbound).await.status(), 200);

    let hook = template_hook("wamid.reply", phone, "promo", "marketing", a.now_ms());
    assert_eq!(a.post_json("/v1/events/sent", &hook).await.status(), 202);
    let s = a.scrape().await;
    assert_eq!(retries(&s, "presumed_new"), 1.0);
    assert_eq!(
        s.sum("messaging_response_latency_seconds_count", &[]),
        1.0,
        "the reply answered the stored inbound message"
    );
    let resp = a.get(&format!("/v1/sessions/+{phone}")).await;
    assert_eq!(resp.status(), 200);
    let session: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(session["user_messages"], 1, "{session}");
    assert_eq!(session["business_messages"], 1, "{session}");
    assert_eq!(session["is_active"], true, "{session}");
}

/// The same with a status instead of a send hook: its batch writes a new message and a
/// new session in one statement that commits on its own (plain inserts on Postgres), and
/// the session B stored makes it fail on the session's key. The batch runs again with the
/// stored session, which keeps B's inbound message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_another_replica_stored_taken_for_new_by_a_status_keeps_its_inbound_messages() {
    let (_db, a, b) = two_replicas().await;
    new_messages(&a, "warm", CLEAN_READS).await;
    let phone = "919800000003";
    let t = a.now_ms() / 1000;
    let inbound = meta_inbound("wamid.in3", phone, t - 30);
    assert_eq!(b.post_meta(&inbound).await.status(), 200);

    let status = meta_status("wamid.out3", "sent", t, phone);
    assert_eq!(a.post_meta(&status).await.status(), 200);
    let s = a.scrape().await;
    assert_eq!(retries(&s, "presumed_new"), 1.0);
    assert_eq!(retries(&s, "conflict"), 0.0);
    let resp = a.get(&format!("/v1/sessions/+{phone}")).await;
    assert_eq!(resp.status(), 200);
    let session: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(session["user_messages"], 1, "{session}");
    assert_eq!(session["is_active"], true, "{session}");
}

crate::on_both_backends!(
    new_messages_are_read_until_reads_keep_finding_them_new,
    late_statuses_of_messages_no_longer_kept_are_read,
    a_large_batch_takes_the_rows_the_one_before_kept,
);
