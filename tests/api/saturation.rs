//! Saturation and process metrics: how full the request cap and the database pools are,
//! and the standard `process_*` families, as a scrape shows them.

use std::time::{SystemTime, UNIX_EPOCH};

use messaging_exporter::clock::ManualClock;
use sqlx::Connection;

use crate::helpers::{config_for, meta_status, tempdir, Backend, Scrape, TestApp, TestDb, T0_MS};
use crate::process::Exporter;

const IN_FLIGHT: &str = "messaging_exporter_requests_in_flight";
const CONNECTIONS: &str = "messaging_exporter_db_connections";
const MAX_CONNECTIONS: &str = "messaging_exporter_db_max_connections";

fn connections(s: &Scrape, pool: &str, state: &str) -> f64 {
    s.sum(CONNECTIONS, &[("pool", pool), ("state", state)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_on_a_held_write_lock_show_in_flight_with_their_connection() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = config_for(&db.url);
    config.max_concurrent_requests = 4;
    // Long enough that the waiting requests are still waiting whenever the scrape comes.
    config.db_timeout_ms = 20_000;
    config.request_timeout_ms = 30_000;
    let app = TestApp::spawn_with(config, ManualClock::new(T0_MS)).await;
    let idle = app.scrape().await;
    assert_eq!(
        idle.sum("messaging_exporter_max_concurrent_requests", &[]),
        4.0
    );
    assert_eq!(idle.sum(IN_FLIGHT, &[]), 0.0);
    assert_eq!(idle.sum(MAX_CONNECTIONS, &[("pool", "main")]), 5.0);

    // Another process holds SQLite's write lock: two webhooks wait on it.
    let mut holder = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::Executor::execute(&mut holder, "BEGIN IMMEDIATE")
        .await
        .unwrap();
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let (client, url) = (app.client.clone(), app.url("/webhooks/meta"));
            let body = meta_status(&format!("wamid.w{i}"), "sent", T0_MS / 1000, "919812345678");
            tokio::spawn(async move {
                let req = client.post(url).header("content-type", "application/json");
                req.body(body).send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    // Exactly two: the scrapes themselves take no place.
    app.wait_for("two requests in flight, one holding a connection", |s| {
        s.sum(IN_FLIGHT, &[]) == 2.0 && connections(s, "main", "in_use") >= 1.0
    })
    .await;

    sqlx::Executor::execute(&mut holder, "ROLLBACK")
        .await
        .unwrap();
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    let done = app
        .wait_for("no request in flight and no connection in use", |s| {
            s.sum(IN_FLIGHT, &[]) == 0.0 && connections(s, "main", "in_use") == 0.0
        })
        .await;
    assert!(connections(&done, "main", "idle") >= 1.0);
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn the_exporter_process_reports_its_memory_cpu_descriptors_start_and_pools() {
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempdir::Dir::new();
    let spawned = now_secs();
    let flags = [
        "--db-max-connections",
        "7",
        "--max-concurrent-requests",
        "77",
    ];
    let exporter = Exporter::start(&db.url, &dir, &flags).await;
    let s = exporter.scrape().await;
    let one = |name: &str| {
        let v = s.sum(name, &[]);
        assert!(v > 0.0, "{name} is {v}; scrape:\n{}", s.dump());
        v
    };

    let started = one("process_start_time_seconds");
    // Whole seconds, counted from a boot time Linux gives in whole seconds.
    assert!(
        started >= spawned.floor() - 2.0 && started <= now_secs(),
        "process_start_time_seconds {started}, spawned at {spawned}"
    );
    let resident = one("process_resident_memory_bytes");
    assert!(resident >= 1_048_576.0, "resident memory {resident} bytes");
    assert!(resident <= one("process_virtual_memory_bytes"));
    let open = one("process_open_fds");
    assert!(
        open >= 3.0 && open < one("process_max_fds"),
        "{open} open fds"
    );
    assert!(one("process_threads") >= 2.0);
    let cpu = s.sum("process_cpu_seconds_total", &[]);
    assert!(s
        .series
        .keys()
        .any(|(n, _)| n == "process_cpu_seconds_total"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let most = (now_secs() - spawned + 1.0) * cores;
    assert!(
        cpu >= 0.0 && cpu <= most,
        "{cpu} s of CPU, at most {most} possible"
    );

    assert_eq!(
        s.sum("messaging_exporter_max_concurrent_requests", &[]),
        77.0
    );
    assert_eq!(s.sum(IN_FLIGHT, &[]), 0.0);
    for pool in ["main", "keyed"] {
        assert_eq!(s.sum(MAX_CONNECTIONS, &[("pool", pool)]), 7.0, "{pool}");
        // Each pool opened a connection when it was created, and keeps it.
        let open = connections(&s, pool, "in_use") + connections(&s, pool, "idle");
        assert!((1.0..=7.0).contains(&open), "{pool}: {open} connections");
    }
}
