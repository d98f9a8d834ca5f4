//! What a scenario measured, the exactly-once check, and printing both as a table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::runner::{Kind, RunResult};

/// One expected counter delta and what the exporter showed.
#[derive(Clone, Debug)]
pub struct CountCheck {
    pub what: String,
    pub expected: f64,
    pub got: f64,
}

impl CountCheck {
    pub fn ok(&self) -> bool {
        (self.expected - self.got).abs() < 1e-6
    }
}

/// Latency summary in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lat {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Lat {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.50) as f64 / 1000.0,
            p99: h.value_at_quantile(0.99) as f64 / 1000.0,
            max: h.max() as f64 / 1000.0,
        }
    }
}

impl std::fmt::Display for Lat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}/{:.2}/{:.1}", self.p50, self.p99, self.max)
    }
}

/// One scenario's figures.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub id: String,
    pub name: String,
    pub backend: String,
    /// Set when the scenario could not run on this build (e.g. a route answering 404).
    pub unavailable: Option<String>,
    pub seconds: f64,
    pub requests: u64,
    pub events: u64,
    /// What "events" are: status events, checks, messages…
    pub event_unit: String,
    pub lat: Lat,
    pub lat_by_kind: Vec<(String, Lat)>,
    pub errors: u64,
    pub error_detail: BTreeMap<String, u64>,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
    /// Exporter CPU over the timed phase, in percent of one core.
    pub cpu_pct: f64,
    /// The load generator's own CPU, in percent of one core.
    pub gen_cpu_pct: f64,
    /// Every `postgres` process's CPU, in percent of one core (Postgres runs only).
    pub db_cpu_pct: Option<f64>,
    /// The disk's `fdatasync` of one page, timed beside the run ([`crate::disk`]).
    pub fsync: Option<Lat>,
    pub http_ratio: Option<f64>,
    pub db_ratio: Option<f64>,
    pub checks: Vec<CountCheck>,
    /// Target lines: (text, met?).
    pub targets: Vec<(String, bool)>,
    pub notes: Vec<String>,
    pub exhausted: bool,
}

impl Figures {
    pub fn req_per_s(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }

    /// Exporter plus database CPU per event, in microseconds: steadier than a rate on
    /// a machine whose speed varies, so it is what before/after comparisons use.
    pub fn cpu_us_per_event(&self) -> Option<f64> {
        let eps = self.events_per_s();
        (eps > 0.0).then(|| (self.cpu_pct + self.db_cpu_pct.unwrap_or(0.0)) * 1e4 / eps)
    }

    pub fn counts_ok(&self) -> bool {
        self.checks.iter().all(CountCheck::ok)
    }

    pub fn fill_from(&mut self, r: &RunResult) {
        self.seconds = r.elapsed.as_secs_f64();
        self.requests = r.requests;
        self.lat = Lat::of(&r.all);
        self.lat_by_kind = r
            .by_kind
            .iter()
            .map(|(k, h): (&Kind, _)| (k.as_str().to_owned(), Lat::of(h)))
            .collect();
        self.errors = r.error_count();
        self.error_detail = r.errors.clone();
        self.exhausted = r.exhausted;
    }

    /// A target line. A run with failed requests meets no target: its rate counts the
    /// failures (a database that answers 503 at once is fast).
    pub fn target(&mut self, text: impl Into<String>, met: bool) {
        let mut text = text.into();
        if self.errors > 0 {
            text.push_str(&format!(" — not judged: {} requests failed", self.errors));
        }
        self.targets.push((text, met && self.errors == 0));
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("–".into(), |r| format!("{:.0}%", r * 100.0))
}

/// The figures as a Markdown table plus, per scenario, latency by kind, targets, notes
/// and the exactly-once check.
pub fn render(title: &str, header_lines: &[String], all: &[Figures]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## {title}\n");
    for l in header_lines {
        let _ = writeln!(s, "- {l}");
    }
    let _ = writeln!(
        s,
        "\n| scenario | db | req/s | events/s | p50/p99/max ms | errors | RSS before→after MiB | exporter CPU | Postgres CPU | loadgen CPU | CPU µs/event | ÷ HTTP ceiling | ÷ DB ceiling | counts |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---|"
    );
    for f in all {
        if let Some(why) = &f.unavailable {
            let _ = writeln!(
                s,
                "| {} {} | {} | – | – | – | – | – | – | – | – | – | – | – | not available on this build: {why} |",
                f.id, f.name, f.backend
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} {} | {} | {:.0} | {:.0} {} | {} | {} | {:.1}→{:.1} | {:.0}% | {} | {:.0}% | {} | {} | {} | {} |",
            f.id,
            f.name,
            f.backend,
            f.req_per_s(),
            f.events_per_s(),
            f.event_unit,
            f.lat,
            f.errors,
            f.rss_before_mib,
            f.rss_after_mib,
            f.cpu_pct,
            f.db_cpu_pct.map_or("–".into(), |c| format!("{c:.0}%")),
            f.gen_cpu_pct,
            f.cpu_us_per_event().map_or("–".into(), |c| format!("{c:.0}")),
            ratio(f.http_ratio),
            ratio(f.db_ratio),
            if f.checks.is_empty() {
                "–".to_owned()
            } else if f.counts_ok() {
                format!("exact ({} checks)", f.checks.len())
            } else {
                "**MISMATCH**".to_owned()
            }
        );
    }
    let _ = writeln!(s);
    for f in all.iter().filter(|f| f.unavailable.is_none()) {
        let _ = writeln!(s, "**{} {} ({})**", f.id, f.name, f.backend);
        let kinds: Vec<String> = f
            .lat_by_kind
            .iter()
            .map(|(k, l)| format!("{k} {l}"))
            .collect();
        if !kinds.is_empty() {
            let _ = writeln!(
                s,
                "- latency by request (p50/p99/max ms): {}",
                kinds.join("; ")
            );
        }
        if let Some(fsync) = &f.fsync {
            let _ = writeln!(
                s,
                "- the disk meanwhile (one 8 kB write and fdatasync every {} ms, p50/p99/max ms): {fsync}",
                crate::disk::EVERY.as_millis()
            );
        }
        for (t, met) in &f.targets {
            let _ = writeln!(
                s,
                "- target {t}: {}",
                if *met { "met" } else { "**missed**" }
            );
        }
        if !f.error_detail.is_empty() {
            let _ = writeln!(s, "- errors: {:?}", f.error_detail);
        }
        if f.exhausted {
            let _ = writeln!(
                s,
                "- the pre-built requests ran out before the time did: raise --max-rate"
            );
        }
        for n in &f.notes {
            let _ = writeln!(s, "- {n}");
        }
        for c in f.checks.iter().filter(|c| !c.ok()) {
            let _ = writeln!(
                s,
                "- COUNT MISMATCH {}: sent {}, exporter counted {}",
                c.what, c.expected, c.got
            );
        }
        let _ = writeln!(s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_with_failed_requests_meets_no_target() {
        let mut clean = Figures::default();
        clean.target("≥ 1 webhooks/s", true);
        assert_eq!(clean.targets, vec![("≥ 1 webhooks/s".to_owned(), true)]);

        let mut failed = Figures {
            errors: 3,
            ..Figures::default()
        };
        failed.target("≥ 1 webhooks/s", true);
        let (text, met) = &failed.targets[0];
        assert!(!met, "{text}");
        assert!(text.ends_with("not judged: 3 requests failed"), "{text}");
    }
}
