//! The shipped Alertmanager, live: its config rendered as compose renders it, with the
//! receivers pointing at a test receiver and grouping waits cut to a second, and the
//! parts of its API the tests use (post alerts, read them back with their status).

use std::fs;
use std::process::Command;

use serde_json::Value;

use super::support::{free_port, repo, run_ok, set_durations, tool, wait_ready, Proc, TempDir};

pub struct Alertmanager {
    pub url: String,
    _proc: Proc,
}

impl Alertmanager {
    /// Starts one on a free loopback port; `receiver_url` gets `/page`, `/ticket` and
    /// `/heartbeat` notifications. `args` are added to its command line.
    pub async fn start(tmp: &TempDir, receiver_url: &str, args: &[String]) -> Self {
        let config = tmp.path("alertmanager.yml");
        run_ok(
            Command::new("sh")
                .arg(repo().join("prometheus/render-alertmanager-config.sh"))
                .arg(repo().join("prometheus/alertmanager.yml"))
                .arg(&config)
                .env("PAGE_WEBHOOK_URL", format!("{receiver_url}/page"))
                .env("TICKET_WEBHOOK_URL", format!("{receiver_url}/ticket"))
                .env("HEARTBEAT_WEBHOOK_URL", format!("{receiver_url}/heartbeat")),
            "render-alertmanager-config.sh",
        );
        let text = fs::read_to_string(&config).unwrap();
        let (text, hits) = set_durations(&text, &["group_wait", "group_interval"], "1s");
        assert!(
            hits > 0,
            "no group_wait/group_interval in prometheus/alertmanager.yml to shorten"
        );
        fs::write(&config, text).unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let mut proc = Proc::spawn(
            "alertmanager",
            Command::new(tool("prometheus-alertmanager"))
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", tmp.path("am").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .args(args),
            tmp.path("alertmanager.log"),
        );
        wait_ready("Alertmanager", format!("{url}/-/ready"), &mut proc).await;
        Self { url, _proc: proc }
    }

    /// Posts alerts (objects with `labels`) as Prometheus would, firing for an hour.
    pub async fn post(&self, alerts: &[Value]) {
        let body: Vec<Value> = alerts
            .iter()
            .map(|a| {
                let ends = chrono::Utc::now() + chrono::Duration::hours(1);
                serde_json::json!({"labels": a["labels"], "annotations": {},
                    "endsAt": ends.to_rfc3339()})
            })
            .collect();
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&body)
            .send()
            .await
            .expect("POST /api/v2/alerts");
        assert!(
            resp.status().is_success(),
            "Alertmanager refused the alerts: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }

    /// Every alert Alertmanager holds, with `status.state` and `status.inhibitedBy`.
    pub async fn alerts(&self) -> Result<Vec<Value>, String> {
        reqwest::get(format!("{}/api/v2/alerts", self.url))
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())
    }
}

/// Whether Alertmanager holds an alert with exactly these labels, and if so whether an
/// inhibition mutes it.
pub fn inhibited(alerts: &[Value], labels: &Value) -> Option<bool> {
    alerts.iter().find(|a| &a["labels"] == labels).map(|a| {
        a["status"]["state"] == "suppressed"
            && a["status"]["inhibitedBy"]
                .as_array()
                .is_some_and(|by| !by.is_empty())
    })
}

/// Ok when Alertmanager holds an alert named `target` muted by one named `source`.
pub fn muted_by(alerts: &[Value], target: &str, source: &str) -> Result<(), String> {
    let sources: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == source)
        .map(|a| &a["fingerprint"])
        .collect();
    let t = alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == target)
        .ok_or_else(|| format!("{target} is not in Alertmanager"))?;
    let by = t["status"]["inhibitedBy"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if t["status"]["state"] == "suppressed" && by.iter().any(|f| sources.contains(&f)) {
        Ok(())
    } else {
        Err(format!(
            "{target} has status {}, {source} fingerprints {sources:?}",
            t["status"]
        ))
    }
}
