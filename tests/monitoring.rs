//! The monitoring that ships beside the exporter (issues 4 and 31), verified with the real
//! tools:
//!
//! - `generated`: rules, promtool tests, routes and dashboards are generated from
//!   monitoring/config.json, and another config reaches all of them.
//! - `rules`: promtool and amtool on the shipped files; every alert has a severity, a
//!   runbook section and promtool tests that fire it and nearly fire it.
//! - `dashboards`: well formed, datasources as variables, one environment selected.
//! - `compose`: docker-compose.yml mounts files that exist and publishes the ports the
//!   configs use.
//! - `exposition`: a scrape holding free-text label values, read by Prometheus's own
//!   OpenMetrics parser.
//! - `inhibition`: the shipped inhibitions on a live Alertmanager, fed alerts of this
//!   project, of another environment and of other teams.
//! - `live`: exporter + Postgres + Prometheus + Alertmanager on loopback, real traffic,
//!   the SLO page arriving at a test receiver, every rule and dashboard query answering,
//!   and the exporter-down inhibition.
//!
//! Needs Postgres on 127.0.0.1:5432, python3 and Debian's `prometheus` and
//! `prometheus-alertmanager` packages; a missing tool fails with how to install it.

#[path = "monitoring/alertmanager.rs"]
mod alertmanager;
#[path = "monitoring/billing_api.rs"]
mod billing_api;
#[path = "monitoring/compose.rs"]
mod compose;
#[path = "monitoring/config.rs"]
mod config;
#[path = "monitoring/dashboards.rs"]
mod dashboards;
#[path = "monitoring/exposition.rs"]
mod exposition;
#[path = "monitoring/generated.rs"]
mod generated;
#[path = "monitoring/inhibition.rs"]
mod inhibition;
#[path = "monitoring/live.rs"]
mod live;
#[path = "monitoring/live_queries.rs"]
mod live_queries;
#[path = "monitoring/promql.rs"]
mod promql;
#[path = "monitoring/queries.rs"]
mod queries;
#[path = "monitoring/receiver.rs"]
mod receiver;
#[path = "monitoring/rules.rs"]
mod rules;
#[path = "monitoring/support.rs"]
mod support;
#[path = "monitoring/traffic.rs"]
mod traffic;
#[path = "monitoring/yaml.rs"]
mod yaml;
