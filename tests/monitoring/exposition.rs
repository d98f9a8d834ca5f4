//! The exposition as Prometheus reads it: free text in label values (a template or model
//! name with quotes, a backslash, a line feed) must come out escaped, or one such name
//! makes every scrape fail. Prometheus's own OpenMetrics parser (`promtool tsdb
//! create-blocks-from openmetrics`) reads a real scrape and `promtool tsdb dump` shows the
//! label values it stored.

use std::fs;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::support::{eventually, free_port, now_secs, run_ok, tool, Proc, TempDir};

const TEMPLATE: &str = "say \"hi\" \\ now\nplease";
const MODEL: &str = "gpt \"4o\"\\mini";
const INTENT: &str = "line\nfeed";

/// Every sample stamped with one time: the backfill wants a timestamp on each.
fn stamped(exposition: &str, unix_secs: i64) -> String {
    exposition
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("{l}\n")
            } else {
                format!("{l} {unix_secs}\n")
            }
        })
        .collect()
}

#[tokio::test]
async fn free_text_label_values_reach_prometheus_as_they_were_sent() {
    let promtool = tool("promtool");
    let tmp = TempDir::new("messaging-exposition");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _exporter = Proc::spawn(
        "exporter",
        Command::new(env!("CARGO_BIN_EXE_messaging-exporter"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--database-url"])
            .arg(format!("sqlite://{}", tmp.path("exporter.db").display()))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default()),
        tmp.path("exporter.log"),
    );
    let http = reqwest::Client::new();
    eventually(
        "the exporter to answer",
        Duration::from_secs(30),
        || async {
            let r = http.get(format!("{base}/readyz")).send().await;
            r.map_err(|e| e.to_string())?
                .error_for_status()
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await;

    let sent_at = messaging_exporter::clock::rfc3339((now_secs() * 1000.0) as i64);
    let posts = [
        (
            "/v1/events/sent",
            json!({"message_id": "wamid.escape-1", "phone": "+919812345678", "is_template": true,
                "template_name": TEMPLATE, "template_category": "utility", "sent_at": sent_at}),
        ),
        (
            "/v1/events/ai",
            json!({"operation": "classification", "model": MODEL, "latency_ms": 120.0,
                "outcome": "ok", "intent": INTENT, "input_tokens": 10}),
        ),
    ];
    for (path, body) in posts {
        let r = http
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{path}: {}", r.text().await.unwrap());
    }
    let scrape = http.get(format!("{base}/metrics")).send().await.unwrap();
    let exposition = scrape.text().await.unwrap();

    let file = tmp.path("scrape.om");
    fs::write(&file, stamped(&exposition, now_secs() as i64)).unwrap();
    let blocks = tmp.path("blocks");
    fs::create_dir_all(blocks.join("wal")).unwrap();
    run_ok(
        Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&file)
            .arg(&blocks),
        "Prometheus's OpenMetrics parser on a scrape",
    );
    let dump = run_ok(
        Command::new(&promtool).args(["tsdb", "dump"]).arg(&blocks),
        "promtool tsdb dump",
    );
    // Prometheus prints label values quoted as JSON would quote these.
    let label =
        |name: &str, value: &str| format!("{name}={}", serde_json::to_string(value).unwrap());
    for (series, name, value) in [
        ("messaging_outbound_messages_total", "template", TEMPLATE),
        ("messaging_ai_requests_total", "model", MODEL),
        ("messaging_ai_intents_total", "intent", INTENT),
    ] {
        let want = label(name, value);
        assert!(
            dump.lines()
                .any(|l| l.starts_with(&format!("{{__name__=\"{series}\"")) && l.contains(&want)),
            "no {series} with {want} in what Prometheus stored:\n{dump}"
        );
    }
}
