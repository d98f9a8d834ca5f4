//! The live run's query checks: every rule expression and every dashboard query (PromQL
//! with Grafana's variables filled in, SQL with its macros expanded, run as Grafana's
//! read-only role) must answer with data.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{Connection, Executor, Row};

use super::promql;
use super::queries::{self, Flavor, Prom, Query, POSTGRES, PROMETHEUS};
use super::support::{eventually, now_secs, TestDb};

pub fn is_presend(q: &str) -> bool {
    promql::metric_names(q)
        .iter()
        .any(|m| m == "messaging_presend_checks_total")
}

/// Whether a query reads an amount of money (message or AI cost, or a spend budget).
fn is_money(q: &str) -> bool {
    promql::metric_names(q)
        .iter()
        .any(|m| m.contains("messaging_cost") || m.contains("messaging_ai_cost"))
}

/// Every rule's expression runs without error; recording rules return data, each series
/// with the `group` labels of this project's targets (another job scraping the same
/// exporter must neither appear nor be merged in); alert expressions (empty whenever they
/// do not fire) read only series that exist.
pub async fn check_rules(
    prom: &Prom,
    group: &[(String, String)],
    presend: bool,
    failures: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> usize {
    let rules = eventually(
        "every rule to be evaluated",
        Duration::from_secs(20),
        || async {
            let rules = prom.rules().await?;
            let pending: Vec<String> = rules
                .iter()
                .filter(|r| r["health"] != "ok")
                .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
                .collect();
            if rules.is_empty() || !pending.is_empty() {
                Err(format!("{pending:?}"))
            } else {
                Ok(rules)
            }
        },
    )
    .await;
    for r in &rules {
        let (name, q) = (
            r["name"].as_str().unwrap_or_default(),
            r["query"].as_str().unwrap_or_default(),
        );
        match prom.query(q).await {
            Err(e) => failures.push(format!("rule {name}: {e}\n  {q}")),
            Ok(res) if res.is_empty() && r["type"] == "recording" => {
                failures.push(format!("recording rule {name} is empty\n  {q}"))
            }
            Ok(res) if r["type"] == "recording" && !promql::metric_names(q).is_empty() => {
                for s in res.iter().filter(|s| {
                    group
                        .iter()
                        .any(|(k, v)| s["metric"][k].as_str() != Some(v.as_str()))
                }) {
                    failures.push(format!(
                        "recording rule {name} gives {} without the group labels {group:?}",
                        s["metric"]
                    ));
                }
            }
            Ok(_) => {}
        }
        if r["type"] == "alerting" {
            for m in promql::metric_names(q) {
                let sel = format!("count({{__name__=\"{m}\"}})");
                if prom.query(&sel).await.map(|r| r.is_empty()).unwrap_or(true) {
                    if m == "messaging_presend_checks_total" && !presend {
                        notes.push(format!(
                            "alert {name} reads {m}, empty until the pre-send API exists"
                        ));
                    } else {
                        failures.push(format!("alert {name} reads {m}, which has no series"));
                    }
                }
            }
        }
    }
    rules.len()
}

/// Every dashboard: variables resolve to values, every PromQL query answers with data,
/// every SQL query runs as Grafana's read-only role and shows no phone number in full.
pub async fn check_dashboards(
    prom: &Prom,
    db: &TestDb,
    phones: &[String],
    presend: bool,
    failures: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> (usize, usize) {
    let mut reader = sqlx::PgConnection::connect(&db.reader_url())
        .await
        .expect("connecting as Grafana's reader role");
    let (mut n_promql, mut n_sql) = (0, 0);
    let builtins: BTreeMap<String, String> = queries::BUILTINS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for d in queries::dashboards() {
        let mut promql_vars = builtins.clone();
        let mut sql_vars = builtins.clone();
        for v in queries::variables(&d)
            .into_iter()
            .filter(|v| v.kind == "query")
        {
            let origin = format!("{} variable ${}", d.file, v.name);
            let values = match resolve_variable(prom, &v.query, &promql_vars).await {
                Ok(values) if !values.is_empty() => values,
                Ok(_) => {
                    failures.push(format!("{origin}: no values for {}", v.query));
                    vec!["none".to_owned()]
                }
                Err(e) => {
                    failures.push(format!("{origin}: {e}"));
                    vec!["none".to_owned()]
                }
            };
            promql_vars.insert(
                v.name.clone(),
                queries::format_values(&values, v.multi, Flavor::Prometheus),
            );
            sql_vars.insert(
                v.name.clone(),
                queries::format_values(&values, v.multi, Flavor::Sql),
            );
        }
        for Query { origin, text } in queries::panel_queries(&d, PROMETHEUS) {
            n_promql += 1;
            let q = match queries::substitute(&text, &promql_vars) {
                Ok(q) => q,
                Err(e) => {
                    failures.push(format!("{origin}: {e}"));
                    continue;
                }
            };
            match prom.query(&q).await {
                Ok(r) if is_money(&q) && r.iter().any(|s| s["metric"]["currency"].is_null()) => {
                    failures.push(format!(
                        "{origin} adds up amounts of different currencies (a series without \
                         its currency label)\n  {q}"
                    ))
                }
                Err(e) => failures.push(format!("{origin}: {e}\n  {q}")),
                Ok(r) if r.is_empty() && is_presend(&q) && !presend => notes.push(format!(
                    "{origin} is empty: POST /v1/check-send is not in this build yet (404), so \
                     messaging_presend_checks_total has no series"
                )),
                Ok(r) if r.is_empty() => failures.push(format!("{origin}: empty result\n  {q}")),
                Ok(_) => {}
            }
        }
        let now = now_secs() as i64;
        for Query { origin, text } in queries::panel_queries(&d, POSTGRES) {
            n_sql += 1;
            let sql = queries::expand_sql_macros(&text, now - 3600, now + 60)
                .and_then(|s| queries::substitute(&s, &sql_vars));
            let sql = match sql {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{origin}: {e}"));
                    continue;
                }
            };
            let wrapped = format!("SELECT row_to_json(panel)::text FROM ({sql}) AS panel");
            match reader.fetch_all(wrapped.as_str()).await {
                Err(e) => failures.push(format!("{origin}: {e}\n  {sql}")),
                Ok(rows) if rows.is_empty() => failures.push(format!("{origin}: no rows\n  {sql}")),
                Ok(rows) => {
                    for row in rows {
                        let json: String = row.get(0);
                        if let Some(p) = phones.iter().find(|p| json.contains(p.as_str())) {
                            failures
                                .push(format!("{origin} shows the full phone number {p}: {json}"));
                        }
                    }
                }
            }
        }
    }
    (n_promql, n_sql)
}

async fn resolve_variable(
    prom: &Prom,
    query: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    let q = queries::substitute(query, vars)?;
    let (selector, label) = queries::parse_label_values(&q)
        .ok_or_else(|| format!("not a label_values() query: {q}"))?;
    prom.label_values(selector.as_deref(), &label).await
}
