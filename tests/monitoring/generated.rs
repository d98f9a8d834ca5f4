//! The rules, promtool tests, Alertmanager routes and dashboards are generated from
//! monitoring/config.json: the shipped files are what the generator makes of it, and a
//! different config (another job selector and group labels, runbook base, `service`
//! label and severity names) reaches every one of them and still passes promtool and
//! amtool.

use std::fs;

use super::config::{generate, Config};
use super::dashboards::assert_portable;
use super::rules::{assert_checkers_pass, assert_inhibitions_scoped, assert_rules_follow};
use super::support::TempDir;

#[test]
fn generated_files_are_what_the_generator_makes_of_the_config() {
    generate(&["--check".as_ref()]);
}

/// A staging and a production job of one team in a shared Prometheus, an Alertmanager
/// with other severity names, and runbooks published elsewhere.
const OTHER_CONFIG: &str = r#"{
  "exporter": {
    "selector": "job=~\"messaging-(staging|production)\", team=\"growth\"",
    "group_labels": ["team", "job"],
    "test_labels": {"job": "messaging-staging"}
  },
  "alertmanager": {"selector": "job=\"shared-alertmanager\""},
  "prometheus": {"selector": "job=\"shared-prometheus\""},
  "service": "whatsapp-metrics",
  "runbook_base": "https://runbooks.example.com/messaging/",
  "severity": {"page": "critical", "ticket": "warning", "none": "info"}
}"#;

#[test]
fn another_config_reaches_every_generated_file() {
    let tmp = TempDir::new("monitoring-config");
    let config = tmp.path("config.json");
    fs::write(&config, OTHER_CONFIG).unwrap();
    generate(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--out".as_ref(),
        tmp.0.as_os_str(),
    ]);
    let cfg = Config::read(&config);
    assert_checkers_pass(&tmp.0, &cfg);
    assert_rules_follow(&tmp.0, &cfg);
    assert_inhibitions_scoped(&tmp.0, &cfg);
    assert_portable(&tmp.0, &cfg);

    // Nothing of the shipped config is left in what the other one generated.
    let shipped = Config::shipped();
    let mut leftovers = vec![
        shipped.selector.clone(),
        shipped.runbook_base.clone(),
        format!("service: {}", shipped.service),
        format!("service=\"{}\"", shipped.service),
    ];
    for s in [&shipped.page, &shipped.ticket, &shipped.none] {
        leftovers.push(format!("severity: {s}\n"));
        leftovers.push(format!("severity=\"{s}\""));
    }
    for (k, v) in &shipped.test_labels {
        leftovers.push(format!("{k}: \"{v}\""));
        leftovers.push(format!("{k}=\"{v}\""));
    }
    let mut checked = 0;
    for dir in ["prometheus/rules", "prometheus/tests", "grafana/dashboards"] {
        for entry in fs::read_dir(tmp.path(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = fs::read_to_string(&path).unwrap();
            for l in &leftovers {
                assert!(
                    !text.contains(l.as_str()),
                    "{} still contains {l:?} from monitoring/config.json",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    let am = fs::read_to_string(tmp.path("prometheus/alertmanager.yml")).unwrap();
    for l in leftovers.iter().filter(|l| l.contains("severity=")) {
        assert!(
            !am.contains(l.as_str()),
            "alertmanager.yml still routes {l}"
        );
    }
    assert!(
        checked >= 7,
        "only {checked} generated files under {}",
        tmp.0.display()
    );
}
