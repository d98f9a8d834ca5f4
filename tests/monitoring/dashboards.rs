//! The dashboards, checked without a running stack: unique ids, non-overlapping grid,
//! datasources as dashboard variables (never a fixed uid), the group-label and instance
//! selectors on every board and in every query, units and descriptions on every panel,
//! phone numbers masked in SQL.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::config::Config;
use super::promql::{self, Selector};
use super::queries::{self, panels, Dashboard, POSTGRES, PROMETHEUS};
use super::rules::rules_in;
use super::support::repo;

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

/// Every datasource is `${variable}` of a datasource variable of the same plugin type, so
/// the board works in a Grafana whose datasources have other uids.
fn assert_datasources_are_variables(d: &Dashboard) {
    let f = &d.file;
    let ds_vars: Vec<(String, String)> = queries::variables(d)
        .into_iter()
        .filter(|v| v.kind == "datasource")
        .map(|v| (v.name, v.query))
        .collect();
    let mut refs = Vec::new();
    datasource_refs(&d.json, String::new(), &mut refs);
    assert!(!refs.is_empty(), "{f}: no datasource references");
    for (path, r) in refs {
        let uid = r["uid"].as_str().unwrap_or_default();
        let ty = r["type"].as_str().unwrap_or_default();
        assert!(r.get("id").is_none(), "{f}{path}: hard-coded datasource id");
        let var = uid
            .strip_prefix("${")
            .and_then(|u| u.strip_suffix('}'))
            .unwrap_or_else(|| {
                panic!("{f}{path}: datasource {r} is a fixed uid, not a ${{variable}}")
            });
        assert!(
            ds_vars
                .iter()
                .any(|(name, plugin)| name == var && plugin == ty),
            "{f}{path}: {uid} is not a datasource variable of type {ty} (variables: {ds_vars:?})"
        );
    }
}

/// Recording rules that read no series (constants such as the spend budget): they carry
/// no group labels to select on.
fn constant_recordings(base: &Path) -> BTreeSet<String> {
    rules_in(base)
        .into_iter()
        .filter_map(|(_, rule)| {
            let name = rule["record"].as_str()?;
            let reads = promql::metric_names(rule["expr"].as_str().unwrap_or_default());
            reads.is_empty().then(|| name.to_owned())
        })
        .collect()
}

/// Every series a board reads is this project's and the chosen environment's: raw
/// exporter series by the configured selector, the group labels and the instances;
/// recorded series (which keep the group labels) and ALERTS by the group labels.
fn assert_selected(origin: &str, s: &Selector, cfg: &Config, constants: &BTreeSet<String>) {
    let groups = cfg.group_filters();
    let missing: Vec<&String> = groups.iter().filter(|g| !s.has(g)).collect();
    if s.metric.contains(':') && constants.contains(&s.metric) {
        return;
    }
    assert!(
        missing.is_empty(),
        "{origin}: {}{{{}}} does not select {missing:?}",
        s.metric,
        s.matchers
    );
    if s.metric.contains(':') || s.metric == "ALERTS" {
        return;
    }
    assert!(
        s.has(&cfg.selector) && s.has(r#"instance=~"$instance""#),
        "{origin}: {}{{{}}} lacks the exporter selector {} or instance=~\"$instance\"",
        s.metric,
        s.matchers,
        cfg.selector
    );
}

fn assert_group_and_instance_variables(d: &Dashboard, cfg: &Config) {
    let vars = queries::variables(d);
    for name in cfg
        .group_labels
        .iter()
        .chain(std::iter::once(&"instance".to_owned()))
    {
        let v = vars
            .iter()
            .find(|v| &v.name == name)
            .unwrap_or_else(|| panic!("{}: no ${name} variable", d.file));
        assert!(
            v.query.contains(&format!("up{{{}", cfg.selector)),
            "{}: ${name} is not chosen among the exporter's targets: {}",
            d.file,
            v.query
        );
    }
}

/// The dashboards under `base` work in any Grafana and read only the targets and the
/// environment `cfg` selects.
pub fn assert_portable(base: &Path, cfg: &Config) {
    let constants = constant_recordings(base);
    for d in queries::dashboards_in(base) {
        assert_datasources_are_variables(&d);
        assert_group_and_instance_variables(&d, cfg);
        let mut n = 0;
        for q in queries::panel_queries(&d, PROMETHEUS) {
            for s in promql::selectors(&q.text) {
                assert_selected(&q.origin, &s, cfg, &constants);
                n += 1;
            }
        }
        assert!(n > 0, "{}: no PromQL selectors", d.file);
        for v in queries::variables(&d).iter().filter(|v| v.kind == "query") {
            let selector = queries::parse_label_values(&v.query)
                .and_then(|(selector, _)| selector)
                .unwrap_or_default();
            let sel = promql::selectors(&selector);
            assert!(
                sel.len() == 1 && sel[0].has(&cfg.selector),
                "{}: ${} offers values from outside the exporter's targets: {}",
                d.file,
                v.name,
                v.query
            );
        }
    }
}

#[test]
fn dashboards_are_portable_and_select_one_environment() {
    assert_portable(&repo(), &Config::shipped());
}

/// Every board marks this project's firing alerts of the chosen environment.
fn assert_alert_annotations(d: &Dashboard, cfg: &Config) {
    let service = format!("service=\"{}\"", cfg.service);
    let ok = d.json["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| {
            let expr = a["expr"].as_str().unwrap_or_default();
            a["enable"] == true
                && a["datasource"]["type"] == PROMETHEUS
                && promql::selectors(expr).iter().any(|s| {
                    s.metric == "ALERTS" && s.has(r#"alertstate="firing""#) && s.has(&service)
                })
        });
    assert!(
        ok,
        "{}: no annotation of this project's firing alerts (ALERTS{{alertstate=\"firing\", {service}}})",
        d.file
    );
}

#[test]
fn boards_show_the_slo_categories_presend_sessions_and_firing_alerts() {
    let cfg = Config::shipped();
    let boards = queries::dashboards();
    for d in &boards {
        assert_alert_annotations(d, &cfg);
    }
    let delivery = boards
        .iter()
        .find(|d| d.json["uid"] == "messaging-delivery")
        .expect("the delivery board");
    let queries: Vec<(String, String)> = panels(&delivery.json)
        .iter()
        .flat_map(|p| {
            let kind = p["type"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((kind.clone(), t["expr"].as_str()?.to_owned())))
        })
        .collect();
    let shows = |what: &str, needles: &[&str]| {
        assert!(
            queries
                .iter()
                .any(|(_, q)| needles.iter().all(|n| q.contains(n))),
            "the delivery board shows no {what} (a query with {needles:?})"
        );
    };
    for w in ["5m", "30m", "1h", "2h", "6h", "1d", "3d"] {
        let ratio = format!("provider_channel:messaging_outbound_failure:ratio_rate{w}{{");
        shows(&format!("burn rate over {w}"), &[&ratio, "/ 0.01"]);
    }
    shows(
        "30-day error budget left",
        &["1 - (", "sum_over_time(", "[30d]", "/ 0.01"],
    );
    shows(
        "delivery ratio per category",
        &["by (category)", r#"status="delivered""#, r#"status="sent""#],
    );
    shows(
        "delivery latency per category",
        &[
            "histogram_quantile(0.95",
            "by (category, le)",
            "messaging_delivery_latency_seconds_bucket",
        ],
    );
    shows(
        "share of pre-send checks blocked by reason",
        &[
            r#"messaging_presend_checks_total{decision="blocked""#,
            "by (reason)",
            "group_left",
        ],
    );
    shows(
        "check-send p95 latency",
        &["histogram_quantile(0.95", r#"route="/v1/check-send""#],
    );
    assert!(
        queries
            .iter()
            .any(|(kind, q)| kind == "timeseries" && q.contains("messaging_sessions_active")),
        "the delivery board shows no sessions over time"
    );
}

#[test]
fn dashboards_are_well_formed() {
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
        for q in queries::panel_queries(&d, POSTGRES) {
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
