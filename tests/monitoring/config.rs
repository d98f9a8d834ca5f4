//! monitoring/config.json as the tests read it: the selectors, group labels, `service`
//! label, runbook base and severity names every generated file takes from it.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::support::{repo, run_ok, tool};

pub struct Config {
    pub selector: String,
    pub group_labels: Vec<String>,
    /// The labels of the series the promtool tests use for the exporter.
    pub test_labels: Vec<(String, String)>,
    pub alertmanager_selector: String,
    /// The labels of a series of this project's Alertmanager.
    pub alertmanager_labels: Vec<(String, String)>,
    pub prometheus_selector: String,
    pub service: String,
    pub runbook_base: String,
    pub page: String,
    pub ticket: String,
    pub none: String,
}

fn text(v: &Value, what: &str) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("monitoring config: {what} is not a string"))
        .to_owned()
}

impl Config {
    pub fn shipped() -> Self {
        Self::read(&repo().join("monitoring/config.json"))
    }

    pub fn read(path: &Path) -> Self {
        let raw = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let v: Value = serde_json::from_str(&raw)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let selector = text(&v["exporter"]["selector"], "exporter.selector");
        Self {
            test_labels: test_labels(&v["exporter"]),
            alertmanager_labels: test_labels(&v["alertmanager"]),
            selector,
            group_labels: v["exporter"]["group_labels"]
                .as_array()
                .expect("exporter.group_labels")
                .iter()
                .map(|g| text(g, "a group label"))
                .collect(),
            alertmanager_selector: text(&v["alertmanager"]["selector"], "alertmanager.selector"),
            prometheus_selector: text(&v["prometheus"]["selector"], "prometheus.selector"),
            service: text(&v["service"], "service"),
            runbook_base: text(&v["runbook_base"], "runbook_base")
                .trim_end_matches('/')
                .to_owned(),
            page: text(&v["severity"]["page"], "severity.page"),
            ticket: text(&v["severity"]["ticket"], "severity.ticket"),
            none: text(&v["severity"]["none"], "severity.none"),
        }
    }

    /// `job=~"$job"` for each group label: what every dashboard query filters by.
    pub fn group_filters(&self) -> Vec<String> {
        self.group_labels
            .iter()
            .map(|g| format!("{g}=~\"${g}"))
            .collect()
    }
}

/// A target's `test_labels`: its selector's `=` matchers and the config's additions.
fn test_labels(target: &Value) -> Vec<(String, String)> {
    let mut labels = equality_matchers(&text(&target["selector"], "a selector"));
    for (k, val) in target["test_labels"].as_object().into_iter().flatten() {
        labels.retain(|(name, _)| name != k);
        labels.push((k.clone(), text(val, "a test label")));
    }
    labels
}

/// `a="x", b=~"y"` → [("a", "x")]: the labels a selector pins to one value.
fn equality_matchers(selector: &str) -> Vec<(String, String)> {
    selector
        .split(',')
        .filter_map(|m| {
            let (name, value) = m.split_once('=')?;
            let value = value.trim();
            if value.starts_with('~') || name.ends_with('!') {
                return None;
            }
            Some((name.trim().to_owned(), value.trim_matches('"').to_owned()))
        })
        .collect()
}

/// Runs monitoring/generate.py with `args`; panics with its output unless it exits 0.
pub fn generate(args: &[&std::ffi::OsStr]) -> String {
    run_ok(
        Command::new(tool("python3"))
            .arg(repo().join("monitoring/generate.py"))
            .args(args),
        "monitoring/generate.py",
    )
}
