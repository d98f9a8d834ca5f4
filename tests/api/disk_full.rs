//! A disk that fills up under the default SQLite database (CONTRACT §6.2), for real: the
//! database lives on a small tmpfs mounted by the test (CI runs as root), with a ballast
//! file to free once it is full. While full, writes and `/readyz` answer 503; once space
//! is back, writes are acknowledged again; nothing acknowledged is lost (not even by a
//! SIGKILL) and nothing is counted twice.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::{tempdir, template_hook, Scrape, T0_MS};
use crate::process::Exporter;

/// A tmpfs of `size`, unmounted on drop.
struct Tmpfs {
    dir: tempdir::Dir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempdir::Dir::new();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "this test mounts a {size} tmpfs to fill a disk for real, which needs root \
             (CI runs as root; run scripts/test.sh as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path.join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir.path).status();
    }
}

/// What a send hook got: acknowledged (202, new), a duplicate (202, stored before), or
/// refused (its status).
#[derive(Debug, PartialEq)]
enum Reply {
    Accepted,
    Duplicate,
    Refused(u16),
}

async fn hook(client: &reqwest::Client, e: &Exporter, id: &str) -> Reply {
    let body = template_hook(id, "919812345678", "promo", "utility", T0_MS);
    let resp = client
        .post(e.url("/v1/events/sent"))
        .json(&body)
        .send()
        .await
        .unwrap();
    match resp.status().as_u16() {
        202 => {
            let v: serde_json::Value = resp.json().await.unwrap();
            if v["accepted"] == 1 {
                Reply::Accepted
            } else {
                Reply::Duplicate
            }
        }
        code => Reply::Refused(code),
    }
}

/// Sends `id` until it is taken, as a bot retries a 503; panics past `within`.
async fn until_taken(client: &reqwest::Client, e: &Exporter, id: &str, within: Duration) -> Reply {
    let deadline = Instant::now() + within;
    loop {
        match hook(client, e, id).await {
            Reply::Refused(503) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Reply::Refused(code) => panic!(
                "{id} got {code} after the disk had room again\n{}",
                e.logs()
            ),
            taken => return taken,
        }
    }
}

fn accepted(s: &Scrape) -> f64 {
    s.sum(
        "messaging_outbound_messages_total",
        &[("status", "accepted")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_means_503_and_not_ready_and_nothing_acknowledged_is_lost() {
    let disk = Tmpfs::mount("6m");
    std::fs::write(disk.path("ballast"), vec![0u8; 2 * 1024 * 1024]).unwrap();
    let logs = tempdir::Dir::new();
    let db_url = format!("sqlite://{}", disk.path("exporter.db").display());
    let exporter = Exporter::start(&db_url, &logs, &["--db-timeout-ms", "2000"]).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    // Four senders write new messages until each has been refused twenty times running.
    let mut senders = tokio::task::JoinSet::new();
    let exporter = std::sync::Arc::new(exporter);
    for sender in 0..4 {
        let (client, e) = (client.clone(), exporter.clone());
        senders.spawn(async move {
            let mut sent = Vec::new();
            let mut refused_in_a_row = 0;
            for n in 0..100_000 {
                let id = format!("wamid.full{sender}x{n}");
                let reply = hook(&client, &e, &id).await;
                match reply {
                    Reply::Refused(503) => refused_in_a_row += 1,
                    Reply::Accepted => refused_in_a_row = 0,
                    other => panic!("{id}: {other:?}"),
                }
                sent.push(id);
                if refused_in_a_row == 20 {
                    return sent;
                }
            }
            panic!("the disk never filled up");
        });
    }
    let mut all_ids: Vec<String> = senders.join_all().await.into_iter().flatten().collect();
    let e = &*exporter;
    let while_full = accepted(&e.scrape().await);
    assert_eq!(
        client.get(e.url("/readyz")).send().await.unwrap().status(),
        503,
        "not ready while writes fail\n{}",
        e.logs()
    );
    let s = e.scrape().await;
    assert_eq!(s.sum("messaging_exporter_ready", &[]), 0.0);

    // Room again: new messages are taken (after a 503 or two at most, retried), and the
    // exporter is ready.
    std::fs::remove_file(disk.path("ballast")).unwrap();
    for n in 0..40 {
        let id = format!("wamid.after{n}");
        assert_eq!(
            until_taken(&client, e, &id, Duration::from_secs(10)).await,
            Reply::Accepted
        );
        all_ids.push(id);
    }
    assert_eq!(
        client.get(e.url("/readyz")).send().await.unwrap().status(),
        200
    );

    // Every message refused during the fault is retried: each is stored and counted once,
    // whatever its first answer was.
    for id in &all_ids {
        until_taken(&client, e, id, Duration::from_secs(10)).await;
    }
    assert_eq!(
        accepted(&e.scrape().await),
        all_ids.len() as f64,
        "each message counted once"
    );
    println!(
        "disk full: {} hooks sent until the disk was full, {while_full} acknowledged and counted, \
         the rest 503; 40 more after space was freed, all acknowledged; after retries {} stored \
         and counted once each",
        all_ids.len() - 40,
        all_ids.len()
    );

    // SIGKILL, restart on the same file: every message is still there (a duplicate now).
    e.signal("-KILL");
    drop(exporter);
    let restarted = Exporter::start(&db_url, &logs, &[]).await;
    for id in &all_ids {
        assert_eq!(
            hook(&client, &restarted, id).await,
            Reply::Duplicate,
            "{id} was lost"
        );
    }
    assert_eq!(accepted(&restarted.scrape().await), 0.0);
}
