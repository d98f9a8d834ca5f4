//! Exactly once across replicas sharing one Postgres, and through a database outage.

use std::time::Duration;

use messaging_exporter::clock::ManualClock;
use serde_json::json;

use crate::helpers::{
    config_for, meta_inbound, meta_status, template_hook, two_replicas, Backend, PgProxy, Scrape,
    TestApp, TestDb, T0_MS,
};

const MESSAGES: usize = 60;

/// One request of a bot's traffic: a send hook or a Meta webhook.
#[derive(Clone)]
pub(crate) enum Req {
    Hook(serde_json::Value),
    Meta(Vec<u8>),
}

pub(crate) async fn send(app: &TestApp, req: &Req) -> u16 {
    match req {
        Req::Hook(v) => app.post_json("/v1/events/sent", v).await.status().as_u16(),
        Req::Meta(b) => app.post_meta(b).await.status().as_u16(),
    }
}

/// Per message: hook, sent, delivered, read (statuses sometimes ahead of the hook), and
/// an inbound message for every third.
fn traffic() -> Vec<Req> {
    traffic_of("rep")
}

/// [`traffic`] with message ids that start with `prefix`.
fn traffic_of(prefix: &str) -> Vec<Req> {
    let t = T0_MS / 1000;
    let mut reqs = Vec::new();
    for i in 0..MESSAGES {
        let id = format!("wamid.{prefix}{i}");
        let phone = format!("9198{:08}", i);
        let hook = Req::Hook(template_hook(
            &id,
            &phone,
            "promo",
            "marketing",
            T0_MS + i as i64 * 1000,
        ));
        let statuses = [("sent", 1), ("delivered", 3), ("read", 60)]
            .map(|(s, dt)| Req::Meta(meta_status(&id, s, t + i as i64 + dt, &phone)));
        if i % 2 == 0 {
            reqs.push(hook);
            reqs.extend(statuses);
        } else {
            reqs.extend(statuses);
            reqs.push(hook);
        }
        if i % 3 == 0 {
            reqs.push(Req::Meta(meta_inbound(
                &format!("wamid.{prefix}in{i}"),
                &phone,
                t + i as i64,
            )));
        }
    }
    reqs
}

/// Sends requests eight at a time, as a provider's concurrent deliveries would arrive.
async fn send_concurrently(app: &TestApp, reqs: Vec<Req>) -> Vec<u16> {
    send_timed(app, reqs, 8)
        .await
        .into_iter()
        .map(|(code, _)| code)
        .collect()
}

/// [`send_concurrently`], then each request answered 503 sent again (up to three times),
/// as Meta and a bot retry: a replica whose statement outlived the database timeout
/// behind the other replica's row locks (a slow commit on this VM's disk took 3.3 s once)
/// answers 503 having counted nothing. The final status of each request.
async fn send_concurrently_retrying_503(app: &TestApp, reqs: Vec<Req>) -> Vec<u16> {
    let mut codes = send_concurrently(app, reqs.clone()).await;
    for (code, req) in codes.iter_mut().zip(&reqs) {
        for _ in 0..3 {
            if *code != 503 {
                break;
            }
            *code = send(app, req).await;
        }
    }
    codes
}

/// Sends requests `width` at a time; each reply's status and how long it took.
pub(crate) async fn send_timed(
    app: &TestApp,
    reqs: Vec<Req>,
    width: usize,
) -> Vec<(u16, Duration)> {
    let mut out = Vec::new();
    for chunk in reqs.chunks(width) {
        let mut tasks = tokio::task::JoinSet::new();
        for r in chunk.iter().cloned() {
            let (client, base) = (app.client.clone(), app.url(""));
            tasks.spawn(async move {
                let started = std::time::Instant::now();
                let req = match r {
                    Req::Hook(v) => client.post(format!("{base}/v1/events/sent")).json(&v),
                    Req::Meta(b) => client
                        .post(format!("{base}/webhooks/meta"))
                        .header("content-type", "application/json")
                        .body(b),
                };
                (
                    req.send().await.unwrap().status().as_u16(),
                    started.elapsed(),
                )
            });
        }
        out.extend(tasks.join_all().await);
    }
    out
}

fn expect_totals(s: &Scrape) {
    expect_totals_of(s, 1);
}

/// The totals of `rounds` rounds of [`traffic_of`].
fn expect_totals_of(s: &Scrape, rounds: usize) {
    let messages = (MESSAGES * rounds) as f64;
    for status in ["accepted", "sent", "delivered", "read"] {
        assert_eq!(
            s.sum(
                "messaging_outbound_messages_total",
                &[("template", "promo"), ("status", status)]
            ),
            messages,
            "{status}"
        );
    }
    assert_eq!(
        s.sum(
            "messaging_outbound_messages_total",
            &[("template", "unknown")]
        ),
        0.0
    );
    assert!((s.sum("messaging_cost_total", &[]) - messages * 0.75).abs() < 1e-9);
    assert_eq!(
        s.sum("messaging_delivery_latency_seconds_count", &[]),
        messages
    );
    assert_eq!(s.sum("messaging_read_latency_seconds_count", &[]), messages);
    assert_eq!(
        s.sum("messaging_inbound_messages_total", &[]),
        (MESSAGES / 3 * rounds) as f64
    );
}

fn assert_all_stored(codes_a: &[u16], codes_b: &[u16]) {
    assert!(
        codes_a
            .iter()
            .chain(codes_b)
            .all(|c| *c == 200 || *c == 202),
        "all stored: {codes_a:?} {codes_b:?}"
    );
}

fn merged(a: &Scrape, b: &Scrape) -> Scrape {
    let mut out = a.clone();
    for (k, v) in &b.series {
        *out.series.entry(k.clone()).or_insert(0.0) += v;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_receiving_halves_and_duplicates_count_exactly_once() {
    let (_db, a, b) = two_replicas().await;
    let reqs = traffic();
    // Even requests to A, odd to B, every fifth to both: Meta retries reach any replica.
    let for_a: Vec<_> = reqs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0 || i % 5 == 0)
        .map(|(_, r)| r.clone())
        .collect();
    let for_b: Vec<_> = reqs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1 || i % 5 == 0)
        .map(|(_, r)| r.clone())
        .collect();
    let (codes_a, codes_b) =
        tokio::join!(send_concurrently(&a, for_a), send_concurrently(&b, for_b));
    assert_all_stored(&codes_a, &codes_b);
    let total = merged(&a.scrape().await, &b.scrape().await);
    expect_totals(&total);
    let wh = |o| total.sum("messaging_webhook_events_total", &[("outcome", o)]);
    let webhooks = reqs.iter().filter(|r| matches!(r, Req::Meta(_))).count() as f64;
    let dup_webhooks = reqs
        .iter()
        .enumerate()
        .filter(|(i, r)| i % 5 == 0 && matches!(r, Req::Meta(_)))
        .count() as f64;
    assert_eq!((wh("processed"), wh("duplicate")), (webhooks, dup_webhooks));
}

/// Every request reaches both replicas at the same moment, so their batches read the
/// same rows together and one write-back must lose and run again. Rounds go on until
/// that has happened (each round is checked), at most ten.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_racing_for_the_same_rows_count_exactly_once() {
    let (_db, a, b) = two_replicas().await;
    let retries = |s: &Scrape| s.sum("messaging_exporter_db_retries_total", &[]);
    let mut rounds = 0;
    let mut webhooks = 0.0;
    let total = loop {
        rounds += 1;
        let reqs = traffic_of(&format!("race{rounds}_"));
        webhooks += reqs.iter().filter(|r| matches!(r, Req::Meta(_))).count() as f64;
        let (codes_a, codes_b) = tokio::join!(
            send_concurrently_retrying_503(&a, reqs.clone()),
            send_concurrently_retrying_503(&b, reqs)
        );
        assert_all_stored(&codes_a, &codes_b);
        let total = merged(&a.scrape().await, &b.scrape().await);
        expect_totals_of(&total, rounds);
        if retries(&total) > 0.0 || rounds == 10 {
            break total;
        }
    };
    assert!(
        retries(&total) > 0.0,
        "no write-back lost a race in {rounds} rounds, so this test proved nothing"
    );
    let wh = |o| total.sum("messaging_webhook_events_total", &[("outcome", o)]);
    assert_eq!((wh("processed"), wh("duplicate")), (webhooks, webhooks));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_down_means_503_and_the_providers_retries_count_exactly_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let proxy = PgProxy::start().await;
    let app = TestApp::spawn_with(
        config_for(&db.url_via(&proxy)),
        ManualClock::new(T0_MS + 1_000_000),
    )
    .await;
    let reqs = traffic();
    let (first, rest) = reqs.split_at(reqs.len() / 2);
    for r in first {
        assert!(matches!(send(&app, r).await, 200 | 202));
    }

    proxy.down();
    let started = std::time::Instant::now();
    let mut refused = Vec::new();
    for r in rest.iter().take(12) {
        let code = send(&app, r).await;
        assert_eq!(code, 503, "never 200 for something not stored");
        refused.push(r.clone());
    }
    assert!(
        started.elapsed() < Duration::from_secs(12 * 3),
        "each 503 comes within the database timeout"
    );
    let resp = app.get("/readyz").await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = app
        .post_json(
            "/v1/events/sent",
            &json!({"message_id": "x", "phone": "919812345678"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"]["code"], "database_unavailable");
    let during = app.scrape().await;
    assert_eq!(
        during.sum("messaging_webhook_events_total", &[("outcome", "rejected")]),
        0.0,
        "a 503 counts nowhere"
    );

    proxy.up();
    // Service resumes within 5 s of the database coming back, without a restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.get("/readyz").await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "service did not resume after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The providers retry what got 503, then the stream goes on, some of it twice. A
    // pooled connection that died in the outage fails its first use once (503); a
    // provider retries that too. Past the pool's size, nothing is refused any more.
    let mut refused_after = 0;
    for r in refused.iter().chain(rest).chain(first.iter().take(10)) {
        loop {
            match send(&app, r).await {
                200 | 202 => break,
                503 if refused_after < 5 => refused_after += 1,
                other => {
                    panic!("{other} after the database came back ({refused_after} 503s so far)")
                }
            }
        }
    }
    expect_totals(&app.scrape().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_database_gives_503_within_the_timeout_and_the_pool_recovers() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = config_for(&db.url);
    config.db_timeout_ms = 1_000;
    let app = TestApp::spawn_with(config, ManualClock::new(T0_MS + 1_000_000)).await;
    let reqs = traffic();
    // A migration or a stuck transaction elsewhere holds the tables.
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::Executor::execute(
        &mut locker,
        "BEGIN; LOCK TABLE outbound_messages, inbound_messages, sessions IN ACCESS EXCLUSIVE MODE",
    )
    .await
    .unwrap();
    let results = send_timed(&app, reqs[..16].to_vec(), 16).await;
    assert!(results.iter().all(|(c, _)| *c == 503), "{results:?}");
    // Each request waits at most for a connection and a statement (1 s each here), twice
    // if its writer was already waiting on an earlier batch; never for the lock itself.
    let slowest = results.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        slowest < Duration::from_secs(6),
        "a request waited {slowest:?} instead of failing at the timeout"
    );
    sqlx::Executor::execute(&mut locker, "ROLLBACK")
        .await
        .unwrap();
    let codes = send_concurrently(&app, reqs.clone()).await;
    assert!(codes.iter().all(|c| *c == 200 || *c == 202), "{codes:?}");
    expect_totals(&app.scrape().await);
}

/// A webhook large enough to be cut into transactions by phone (`--db-writers`), one of
/// which the database refuses (a trigger stands in for a fault that hits one part): the request gets 503,
/// the part that committed is counted, and the provider's retry counts the rest, so every
/// status counts exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_stored_in_part_counts_its_stored_part_and_its_retry_the_rest() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Postgres).await;
    let app = TestApp::spawn(&db).await;
    const N: usize = 200;
    let id = |i: usize| format!("wamid.part{i}");
    let phone = |i: usize| format!("9198{:08}", i);
    let hooks: Vec<serde_json::Value> = (0..N)
        .map(|i| template_hook(&id(i), &phone(i), "promo", "marketing", T0_MS))
        .collect();
    assert_eq!(
        app.post_json("/v1/events/sent", &json!(hooks))
            .await
            .status(),
        202
    );

    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_part0() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.message_id = 'wamid.part0' AND NEW.seen_mask <> 0 THEN \
             RAISE EXCEPTION 'injected fault' USING ERRCODE = '58030'; END IF; \
           RETURN NEW; END $$; \
         CREATE TRIGGER refuse_part0 BEFORE UPDATE ON outbound_messages \
           FOR EACH ROW EXECUTE FUNCTION refuse_part0();",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let statuses: Vec<serde_json::Value> = (0..N)
        .map(|i| json!({"id": id(i), "status": "sent", "timestamp": (T0_MS / 1000 + 2).to_string(), "recipient_id": phone(i)}))
        .collect();
    let body = serde_json::to_vec(
        &json!({"entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"statuses": statuses}}]}]}),
    )
    .unwrap();

    assert_eq!(app.post_meta(&body).await.status(), 503);
    let s = app.scrape().await;
    let sent = s.sum("messaging_outbound_messages_total", &[("status", "sent")]);
    let processed = s.sum(
        "messaging_webhook_events_total",
        &[("outcome", "processed")],
    );
    assert!(
        sent > 0.0 && sent < N as f64,
        "the other part committed and counted: {sent}"
    );
    assert_eq!(processed, sent);

    sqlx::raw_sql("DROP TRIGGER refuse_part0 ON outbound_messages")
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(app.post_meta(&body).await.status(), 200);
    let s = app.scrape().await;
    assert_eq!(
        s.sum(
            "messaging_outbound_messages_total",
            &[("status", "sent"), ("template", "promo")]
        ),
        N as f64,
        "each status counted once, under its template"
    );
    let wh = |o| s.sum("messaging_webhook_events_total", &[("outcome", o)]);
    assert_eq!((wh("processed"), wh("duplicate")), (N as f64, sent));
}

/// A batch that loses a deadlock runs again and counts once, and the retry is counted
/// under `reason="deadlock"`. Another session holds the phone's session row and then
/// asks for the message row the batch has just written: Postgres ends the batch's
/// transaction (its deadlock check fires first), and the batch runs again with its rows
/// locked once the other session commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_loses_a_deadlock_runs_again_and_counts_once() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Postgres).await;
    let app = TestApp::spawn(&db).await;
    let (id, phone, t) = ("wamid.dead", "919812340000", T0_MS / 1000);
    let hook = template_hook(id, phone, "promo", "marketing", T0_MS);
    assert_eq!(app.post_json("/v1/events/sent", &hook).await.status(), 202);
    assert_eq!(
        app.post_meta(&meta_status(id, "sent", t + 1, phone))
            .await
            .status(),
        200
    );
    // One webhook that rewrites the message (a delivery), then the session (a reply).
    let body = serde_json::to_vec(&json!({"entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "statuses": [{"id": id, "status": "delivered", "timestamp": (t + 2).to_string(), "recipient_id": phone}],
        "messages": [{"from": phone, "id": "wamid.dead.in", "timestamp": (t + 3).to_string(), "type": "text", "text": {"body": "hi"}}]
    }}]}]}))
    .unwrap();

    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = other.begin().await.unwrap();
    // Its own deadlock check waits longer, so that the exporter's transaction is the one ended.
    sqlx::raw_sql("SET LOCAL deadlock_timeout = '10s'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT phone FROM sessions WHERE phone = $1 FOR UPDATE")
        .bind(phone)
        .fetch_one(&mut *tx)
        .await
        .expect("the session row exists");
    let url = app.url("/webhooks/meta");
    let client = app.client.clone();
    let post = tokio::spawn(async move {
        let resp = client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        resp.status().as_u16()
    });
    // Wait until the batch has written the message and waits for the session row.
    let mut probe = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut probe)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the batch never waited for the session row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("UPDATE outbound_messages SET updated_ms = updated_ms WHERE message_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("the exporter's transaction is the one ended");
    tx.commit().await.unwrap();

    assert_eq!(post.await.unwrap(), 200);
    let s = app.scrape().await;
    // At least once: on a loaded machine the rerun can take the message row before this
    // test's update has it, and lose the same deadlock again.
    let deadlocks = s.sum(
        "messaging_exporter_db_retries_total",
        &[("reason", "deadlock")],
    );
    assert!(deadlocks >= 1.0, "{deadlocks} deadlock retries");
    assert_eq!(
        s.sum(
            "messaging_outbound_messages_total",
            &[("status", "delivered"), ("template", "promo")]
        ),
        1.0
    );
    let inbound = s.sum("messaging_inbound_messages_total", &[]);
    assert_eq!(inbound, 1.0, "the reply counted once");
}

/// On one replica nothing races, so no write-back may be refused: each batch must have
/// read every stored session it writes (on Postgres, found by the database from the
/// messages it reads in the same statement). A session it missed would be written as new,
/// refused, and the batch run again, which the retry counter shows.
async fn one_replica_reads_every_session_its_batches_write(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let t = T0_MS / 1000;
    let mut reqs = Vec::new();
    for i in 0..24i64 {
        let phone = format!("9197{i:08}");
        let inbound = |n: i64| {
            Req::Meta(meta_inbound(
                &format!("wamid.q{n}_{i}"),
                &phone,
                t + i + n * 100,
            ))
        };
        let status = |id: &str, s: &str, dt: i64| Req::Meta(meta_status(id, s, t + i + dt, &phone));
        let hook = |id: &str, dt: i64| {
            Req::Hook(template_hook(
                id,
                &phone,
                "promo",
                "marketing",
                (t + i + dt) * 1000,
            ))
        };
        let (a, b) = (format!("wamid.a{i}"), format!("wamid.b{i}"));
        // A's statuses come before its hook, B's after: the session is linked from an event's
        // phone or from the phone stored with the message.
        reqs.extend([
            inbound(0),
            status(&a, "sent", 10),
            status(&a, "delivered", 11),
            hook(&a, 10),
            status(&a, "read", 12),
            inbound(1),
            hook(&b, 110),
            status(&b, "sent", 110),
            status(&b, "read", 111),
        ]);
    }
    let codes: Vec<u16> = send_timed(&app, reqs, 16)
        .await
        .into_iter()
        .map(|(code, _)| code)
        .collect();
    assert_all_stored(&codes, &[]);
    let s = app.scrape().await;
    assert_eq!(
        s.sum("messaging_outbound_messages_total", &[("status", "read")]),
        48.0
    );
    assert_eq!(s.sum("messaging_inbound_messages_total", &[]), 48.0);
    assert_eq!(
        s.sum("messaging_exporter_db_retries_total", &[]),
        0.0,
        "a batch ran again on a replica alone"
    );
}

crate::on_both_backends!(one_replica_reads_every_session_its_batches_write);
