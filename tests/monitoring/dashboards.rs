//! The dashboards and Grafana provisioning, checked without a running stack: generated
//! JSON up to date, unique ids, non-overlapping grid, datasources by provisioned uid,
//! units and descriptions on every panel, phone numbers masked in SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use super::queries::{self, panels};
use super::support::{repo, run_ok, tool, yaml_file};

/// Datasource uid → type, as provisioned.
fn provisioned_datasources() -> BTreeMap<String, String> {
    let ds = yaml_file("grafana/provisioning/datasources/datasources.yml");
    ds["datasources"]
        .as_array()
        .expect("datasources")
        .iter()
        .map(|d| {
            (
                d["uid"]
                    .as_str()
                    .expect("every datasource has a fixed uid")
                    .to_owned(),
                d["type"].as_str().expect("type").to_owned(),
            )
        })
        .collect()
}

/// Every `datasource` value anywhere in a dashboard, with a path for messages.
fn datasource_refs<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, inner) in m {
                if k == "datasource" {
                    out.push((path.clone(), inner));
                }
                datasource_refs(inner, format!("{path}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, inner) in a.iter().enumerate() {
                datasource_refs(inner, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn dashboards_are_generated_and_well_formed() {
    run_ok(
        Command::new(tool("python3"))
            .arg(repo().join("grafana/generate.py"))
            .arg("--check"),
        "grafana/generate.py --check (the JSON must match its generator)",
    );
    let datasources = provisioned_datasources();
    assert_eq!(
        datasources.get("prometheus").map(String::as_str),
        Some("prometheus"),
        "a Prometheus datasource with uid prometheus"
    );
    assert!(
        datasources.contains_key("postgres"),
        "a PostgreSQL datasource with uid postgres"
    );

    let mut uids = BTreeSet::new();
    for d in queries::dashboards() {
        let f = &d.file;
        let uid = d.json["uid"].as_str().unwrap_or_default();
        assert!(
            !uid.is_empty() && uids.insert(uid.to_owned()),
            "{f}: missing or duplicate uid {uid:?}"
        );
        assert!(
            d.json["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{f}: no title"
        );

        let mut refs = Vec::new();
        datasource_refs(&d.json, String::new(), &mut refs);
        assert!(!refs.is_empty(), "{f}: no datasource references");
        for (path, r) in refs {
            let uid = r["uid"]
                .as_str()
                .unwrap_or_else(|| panic!("{f}{path}: datasource {r} is not referenced by uid"));
            let ty = datasources
                .get(uid)
                .unwrap_or_else(|| panic!("{f}{path}: datasource uid {uid:?} is not provisioned"));
            assert_eq!(
                r["type"].as_str(),
                Some(ty.as_str()),
                "{f}{path}: datasource type"
            );
            assert!(r.get("id").is_none(), "{f}{path}: hard-coded datasource id");
        }

        let all = panels(&d.json);
        let mut ids = BTreeSet::new();
        let mut boxes = Vec::new();
        for p in &all {
            let title = p["title"].as_str().unwrap_or_default();
            let id = p["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("{f}: panel {title:?} has no id"));
            assert!(ids.insert(id), "{f}: panel id {id} used twice");
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_i64().unwrap(),
                g["y"].as_i64().unwrap(),
                g["w"].as_i64().unwrap(),
                g["h"].as_i64().unwrap(),
            );
            assert!(
                w > 0 && h > 0 && x >= 0 && y >= 0 && x + w <= 24,
                "{f}: panel {title:?} has gridPos {g}"
            );
            for (other, (ox, oy, ow, oh)) in &boxes {
                let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
                assert!(!overlap, "{f}: panel {title:?} overlaps {other:?}");
            }
            boxes.push((title.to_owned(), (x, y, w, h)));

            let kind = p["type"].as_str().unwrap_or_default();
            if kind == "row" {
                continue;
            }
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{f}: panel {title:?} has no description"
            );
            let targets = p["targets"].as_array().map(Vec::len).unwrap_or(0);
            assert!(targets > 0, "{f}: panel {title:?} has no query");
            if matches!(
                kind,
                "timeseries" | "stat" | "bargauge" | "gauge" | "heatmap" | "graph"
            ) {
                let unit = p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .unwrap_or_default();
                assert!(!unit.is_empty(), "{f}: {kind} panel {title:?} has no unit");
            }
        }
        for q in queries::panel_queries(&d, "postgres") {
            if q.text.contains("phone") {
                assert!(
                    q.text.contains("right(phone, 4)") && q.text.contains("repeat('*'"),
                    "{}: selects phone numbers without masking all but the last 4 digits",
                    q.origin
                );
            }
        }
    }
    for uid in [
        "messaging-delivery",
        "messaging-cost",
        "messaging-ai",
        "messaging-exporter",
    ] {
        assert!(uids.contains(uid), "dashboard {uid} is missing");
    }
}
