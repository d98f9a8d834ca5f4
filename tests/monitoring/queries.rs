//! The queries that ship: every PromQL and SQL query of every dashboard panel and
//! template variable, with Grafana's variables and macros substituted the way Grafana
//! does, plus a small Prometheus HTTP API client to run them.

use std::collections::BTreeMap;
use std::fs;

use serde_json::Value;

use super::support::repo;

/// What Grafana's built-in variables become in the live test. The test Prometheus
/// scrapes every second, so a minute always holds enough samples for rate().
pub const BUILTINS: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__range", "10m"),
    ("__range_s", "600"),
    ("__range_ms", "600000"),
];

pub struct Dashboard {
    pub file: String,
    pub json: Value,
}

pub fn dashboards() -> Vec<Dashboard> {
    dashboards_in(&repo())
}

/// The dashboards under `base`/grafana/dashboards.
pub fn dashboards_in(base: &std::path::Path) -> Vec<Dashboard> {
    let dir = base.join("grafana/dashboards");
    let mut out: Vec<Dashboard> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = fs::read_to_string(&p).expect("reading a dashboard");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", p.display()));
            Dashboard {
                file: p.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            }
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    assert!(!out.is_empty(), "no dashboards in {}", dir.display());
    out
}

/// Every panel, including those nested in collapsed rows.
pub fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

/// A query with where it came from, for failure messages.
#[derive(Clone, Debug)]
pub struct Query {
    pub origin: String,
    pub text: String,
}

/// The datasource plugin type a target uses (its own, else its panel's).
fn plugin<'a>(target: &'a Value, panel: &'a Value) -> &'a str {
    target["datasource"]["type"]
        .as_str()
        .or_else(|| panel["datasource"]["type"].as_str())
        .unwrap_or("")
}

pub const PROMETHEUS: &str = "prometheus";
pub const POSTGRES: &str = "grafana-postgresql-datasource";

/// Every query of the panels whose datasource is of type `plugin`, and for Prometheus the
/// annotation queries too.
pub fn panel_queries(d: &Dashboard, plugin_type: &str) -> Vec<Query> {
    let mut out = Vec::new();
    for a in d.json["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if a["datasource"]["type"] == plugin_type {
            out.push(Query {
                origin: format!(
                    "{} annotation {:?}",
                    d.file,
                    a["name"].as_str().unwrap_or("?")
                ),
                text: a["expr"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    for p in panels(&d.json) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if plugin(t, p) != plugin_type {
                continue;
            }
            let text = t["expr"]
                .as_str()
                .or_else(|| t["rawSql"].as_str())
                .unwrap_or("");
            out.push(Query {
                origin: format!(
                    "{} panel {:?} ({})",
                    d.file,
                    p["title"].as_str().unwrap_or("?"),
                    t["refId"].as_str().unwrap_or("?")
                ),
                text: text.to_owned(),
            });
        }
    }
    out
}

/// A template variable's name, type (`query`, `datasource`), query and whether it takes
/// several values at once.
pub struct Variable {
    pub name: String,
    pub kind: String,
    pub query: String,
    pub multi: bool,
}

pub fn variables(d: &Dashboard) -> Vec<Variable> {
    d.json["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| Variable {
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            kind: v["type"].as_str().unwrap_or_default().to_owned(),
            query: v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .unwrap_or_default()
                .to_owned(),
            multi: v["multi"] == true || v["includeAll"] == true,
        })
        .collect()
}

/// `label_values(selector, label)` or `label_values(label)`.
pub fn parse_label_values(q: &str) -> Option<(Option<String>, String)> {
    let inner = q.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    match inner.rsplit_once(',') {
        Some((sel, label)) => Some((Some(sel.trim().to_owned()), label.trim().to_owned())),
        None => Some((None, inner.trim().to_owned())),
    }
}

/// How a variable's values are written into a query.
#[derive(Clone, Copy)]
pub enum Flavor {
    /// PromQL: several values become a regex alternation, as Grafana writes them.
    Prometheus,
    /// SQL: values are quoted and comma-separated, for `IN (...)`.
    Sql,
}

pub fn format_values(values: &[String], multi: bool, flavor: Flavor) -> String {
    let chosen: Vec<&String> = if multi {
        values.iter().collect()
    } else {
        values.iter().take(1).collect()
    };
    match flavor {
        Flavor::Prometheus if chosen.len() == 1 => chosen[0].clone(),
        Flavor::Prometheus => {
            let escaped: Vec<String> = chosen.iter().map(|v| regex_escape(v)).collect();
            format!("({})", escaped.join("|"))
        }
        Flavor::Sql => chosen
            .iter()
            .map(|v| format!("'{}'", v.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn regex_escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Replaces `$var`, `${var}`, `${var:format}` and `[[var]]` with `values[var]`. Fails on a
/// variable it does not know, so a typo in a dashboard cannot slip through.
pub fn substitute(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(['$', '[']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let (name, consumed) = if let Some(t) = tail.strip_prefix("${") {
            let end = t
                .find('}')
                .ok_or_else(|| format!("unterminated ${{ in {text:?}"))?;
            let name = t[..end].split(':').next().unwrap_or_default();
            (name, 2 + end + 1)
        } else if let Some(t) = tail.strip_prefix("[[") {
            let end = t
                .find("]]")
                .ok_or_else(|| format!("unterminated [[ in {text:?}"))?;
            let name = t[..end].split(':').next().unwrap_or_default();
            (name, 2 + end + 2)
        } else if let Some(t) = tail.strip_prefix('$') {
            let len = t
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(t.len());
            if len == 0 {
                out.push('$');
                rest = &tail[1..];
                continue;
            }
            (&t[..len], 1 + len)
        } else {
            out.push('[');
            rest = &tail[1..];
            continue;
        };
        let value = values
            .get(name)
            .ok_or_else(|| format!("unknown variable `{name}` in {text:?}"))?;
        out.push_str(value);
        rest = &tail[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Grafana's SQL macros for a time range `[from, to]` (unix seconds).
pub fn expand_sql_macros(sql: &str, from: i64, to: i64) -> Result<String, String> {
    let iso = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .format("'%Y-%m-%dT%H:%M:%SZ'")
            .to_string()
    };
    let mut out = String::new();
    let mut rest = sql;
    while let Some(pos) = rest.find("$__") {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos + 3..];
        let name_len = tail
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(tail.len());
        let name = &tail[..name_len];
        let after = &tail[name_len..];
        let (args, consumed) = if after.starts_with('(') {
            let (args, len) =
                call_args(after).ok_or_else(|| format!("unbalanced $__{name}( in {sql:?}"))?;
            (args, len)
        } else {
            (Vec::new(), 0)
        };
        let arg = |i: usize| {
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("$__{name} needs an argument"))
        };
        let expanded = match name {
            "timeFilter" => format!("{} BETWEEN {} AND {}", arg(0)?, iso(from), iso(to)),
            "timeFrom" => iso(from),
            "timeTo" => iso(to),
            "unixEpochFilter" => format!("{0} >= {from} AND {0} <= {to}", arg(0)?),
            "unixEpochFrom" => from.to_string(),
            "unixEpochTo" => to.to_string(),
            "timeGroup" | "timeGroupAlias" => {
                let secs = interval_secs(arg(1)?.trim_matches('\''))?;
                let group = format!("floor(extract(epoch from {})/{secs})*{secs}", arg(0)?);
                if name == "timeGroupAlias" {
                    format!("{group} AS \"time\"")
                } else {
                    group
                }
            }
            other => {
                return Err(format!(
                    "the test does not know the macro $__{other} (in {sql:?})"
                ))
            }
        };
        out.push_str(&expanded);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The comma-separated arguments of `(a, f(b, c))` and the length consumed.
fn call_args(s: &str) -> Option<(Vec<String>, usize)> {
    let mut depth = 0;
    let mut args = Vec::new();
    let mut cur = String::new();
    for (i, c) in s.char_indices() {
        match c {
            '(' => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            ')' => {
                depth -= 1;
                if depth == 0 {
                    if !cur.trim().is_empty() {
                        args.push(cur.trim().to_owned());
                    }
                    return Some((args, i + 1));
                }
            }
            ',' if depth == 1 => {
                args.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    None
}

fn interval_secs(s: &str) -> Result<u64, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("bad interval {s:?}"))?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("bad interval {s:?}")),
    };
    Ok(n * mult)
}

/// Prometheus's HTTP API.
pub struct Prom {
    pub base: String,
    http: reqwest::Client,
}

impl Prom {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn api(&self, path: &str, form: &[(&str, &str)]) -> Result<Value, String> {
        // GET: /api/v1/label/<name>/values takes no POST.
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = self
            .http
            .get(format!("{}{path}?{query}", self.base))
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let body: Value = resp.json().await.map_err(|e| format!("{path}: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        Ok(body["data"].clone())
    }

    /// An instant query's result vector (or scalar, as a one-element list).
    pub async fn query(&self, q: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", q)]).await?;
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar" | "string") => Ok(vec![data["result"].clone()]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    pub async fn label_values(
        &self,
        selector: Option<&str>,
        label: &str,
    ) -> Result<Vec<String>, String> {
        let path = format!("/api/v1/label/{label}/values");
        let data = match selector {
            Some(s) => self.api(&path, &[("match[]", s)]).await?,
            None => self.api(&path, &[]).await?,
        };
        Ok(data
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect())
    }

    pub async fn rules(&self) -> Result<Vec<Value>, String> {
        let resp = self
            .http
            .get(format!("{}/api/v1/rules", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = resp.json().await.map_err(|e| e.to_string())?;
        Ok(body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// The single value of a query that returns one series, as a number.
    pub async fn value(&self, q: &str) -> Result<f64, String> {
        let r = self.query(q).await?;
        let v = r.first().ok_or_else(|| format!("{q}: empty result"))?;
        let s = v["value"][1]
            .as_str()
            .or_else(|| v[1].as_str())
            .unwrap_or("NaN");
        s.parse().map_err(|_| format!("{q}: not a number: {v}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_every_variable_form_and_rejects_unknown_ones() {
        let vals: BTreeMap<String, String> =
            [("provider", "(meta|twilio)"), ("__rate_interval", "1m")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        let q = r#"rate(x{p=~"$provider", q=~"${provider}", r=~"[[provider]]", s=~"${provider:regex}"}[$__rate_interval]) > $ 1"#;
        assert_eq!(
            substitute(q, &vals).unwrap(),
            r#"rate(x{p=~"(meta|twilio)", q=~"(meta|twilio)", r=~"(meta|twilio)", s=~"(meta|twilio)"}[1m]) > $ 1"#
        );
        assert!(substitute("x{a=~\"$nope\"}", &vals).is_err());
    }

    #[test]
    fn expands_sql_macros_with_nested_calls() {
        let sql = "WHERE $__timeFilter(to_timestamp(a / 1000.0)) AND b BETWEEN $__unixEpochFrom() AND $__unixEpochTo() GROUP BY $__timeGroupAlias(t, '1d')";
        let got = expand_sql_macros(sql, 0, 60).unwrap();
        assert_eq!(
            got,
            "WHERE to_timestamp(a / 1000.0) BETWEEN '1970-01-01T00:00:00Z' AND '1970-01-01T00:01:00Z' \
             AND b BETWEEN 0 AND 60 GROUP BY floor(extract(epoch from t)/86400)*86400 AS \"time\""
        );
        assert!(expand_sql_macros("$__nope(x)", 0, 1).is_err());
    }

    #[test]
    fn formats_values_like_grafana() {
        let v = vec!["a.b".to_owned(), "c".to_owned()];
        assert_eq!(format_values(&v, true, Flavor::Prometheus), "(a\\.b|c)");
        assert_eq!(format_values(&v, false, Flavor::Prometheus), "a.b");
        assert_eq!(format_values(&v, true, Flavor::Sql), "'a.b','c'");
    }
}
