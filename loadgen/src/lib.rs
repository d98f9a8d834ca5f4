//! Load generator and benchmark harness for messaging-exporter (issue 5).
//!
//! `run_bench` starts the exporter binary on a fresh database per scenario, measures the
//! ceilings (`/healthz` through the same client; pgbench running the exporter's SQL),
//! runs the scenarios, and checks after each that the exporter counted exactly what it
//! was sent. The binary (`src/main.rs`) is a thin CLI over it; the smoke test calls it
//! with a handful of items per scenario.

pub mod disk;
pub mod exporter;
pub mod payloads;
pub mod report;
pub mod rng;
pub mod runner;
pub mod scenarios;
pub mod scrape;

use std::path::PathBuf;
use std::time::Duration;

pub use exporter::Backend;
use exporter::ExporterOpts;
pub use report::Figures;
use scenarios::Ctx;

#[derive(Clone, Debug)]
pub struct BenchOpts {
    pub exporter_bin: PathBuf,
    pub backends: Vec<Backend>,
    /// Scenario numbers 1–6.
    pub scenarios: Vec<u8>,
    pub concurrency: usize,
    pub duration: Duration,
    pub max_rate: f64,
    /// Smoke mode: this many items per scenario, all sent, no timing targets.
    pub smoke_items: Option<usize>,
    pub seed: u64,
    pub pg_admin_url: String,
    pub work_dir: PathBuf,
    pub soak: Duration,
    pub soak_rate: Option<f64>,
    /// Passed to the exporter as `--db-max-connections` when set.
    pub db_max_connections: Option<u32>,
}

/// Runs every requested scenario on every backend; `progress` sees each result as it
/// comes. Returns them grouped by backend.
pub async fn run_bench(
    o: &BenchOpts,
    mut progress: impl FnMut(&Figures),
) -> anyhow::Result<Vec<(Backend, Vec<Figures>)>> {
    let mut all = Vec::new();
    for &backend in &o.backends {
        let mut extra_args = Vec::new();
        if let Some(n) = o.db_max_connections {
            extra_args.extend(["--db-max-connections".to_owned(), n.to_string()]);
        }
        let exporter = ExporterOpts {
            bin: o.exporter_bin.clone(),
            backend,
            pg_admin_url: o.pg_admin_url.clone(),
            // Ingest-only scenarios send the hooks after the statuses; a long grace
            // keeps those statuses waiting for them instead of counting as `unknown`.
            grace_seconds: 3600,
            max_label_values: 200,
            // The exporter's default.
            max_series: 10_000,
            extra_args,
            work_dir: o.work_dir.clone(),
        };
        let mut ctx = Ctx::new(
            exporter,
            o.concurrency,
            o.duration,
            o.max_rate,
            o.smoke_items,
            o.seed,
        );
        ctx.soak = o.soak;
        ctx.soak_rate = o.soak_rate;
        let mut figs = Vec::new();
        let smoke = o.smoke_items.is_some();
        let mut push = |mut f: Figures, figs: &mut Vec<Figures>| {
            if smoke {
                // A few hundred events say nothing about speed: counts only.
                f.targets.clear();
                f.exhausted = false;
            }
            progress(&f);
            figs.push(f);
        };
        push(scenarios::http_ceiling(&mut ctx).await?, &mut figs);
        for &s in &o.scenarios {
            match s {
                1 => {
                    push(scenarios::ingest(&mut ctx, false, 1).await?, &mut figs);
                    push(scenarios::ingest(&mut ctx, true, 1).await?, &mut figs);
                }
                2 => push(scenarios::ingest(&mut ctx, false, 50).await?, &mut figs),
                3 => {
                    push(scenarios::checks(&mut ctx, false).await?, &mut figs);
                    push(scenarios::checks(&mut ctx, true).await?, &mut figs);
                }
                4 => push(scenarios::mixed(&mut ctx, false).await?, &mut figs),
                5 => {
                    let targets: &[usize] = if o.smoke_items.is_some() {
                        &[1_000]
                    } else {
                        &[10_000, 100_000]
                    };
                    for f in scenarios::scrapes(&mut ctx, targets).await? {
                        push(f, &mut figs);
                    }
                }
                6 => push(scenarios::mixed(&mut ctx, true).await?, &mut figs),
                other => anyhow::bail!("no scenario {other} (1–6)"),
            }
        }
        all.push((backend, figs));
    }
    Ok(all)
}

/// The machine and run facts printed above the figures.
pub fn describe_machine(o: &BenchOpts) -> Vec<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1_048_576.0);
    let mut lines = vec![
        format!("machine: {cores} cores ({cpu}), {mem:.0} GiB; load generator, exporter and database on the same machine"),
        format!("load average at start: {}", load_average()),
        format!(
            "concurrency {} connections, {} s per scenario{}, exporter {}",
            o.concurrency,
            o.duration.as_secs(),
            o.smoke_items.map_or(String::new(), |n| format!(" (smoke: {n} items each)")),
            o.exporter_bin.display()
        ),
    ];
    if o.backends.contains(&Backend::Postgres) {
        let q = |s: &str| {
            exporter::psql(&o.pg_admin_url, &format!("SHOW {s}")).unwrap_or_else(|_| "?".into())
        };
        let version = exporter::psql(&o.pg_admin_url, "SHOW server_version").unwrap_or_default();
        lines.push(format!(
            "PostgreSQL {version}: fsync={}, synchronous_commit={}, shared_buffers={} (durable commits)",
            q("fsync"),
            q("synchronous_commit"),
            q("shared_buffers")
        ));
        // `pg_wal` may be a link to a disk of its own; the device check follows it.
        let wal = std::path::Path::new(&q("data_directory")).join("pg_wal");
        lines.push(format!(
            "the fsync probe writes in {} ({} as PostgreSQL's WAL)",
            o.work_dir.display(),
            match disk::same_device(&o.work_dir, &wal) {
                Some(true) => "the same disk",
                Some(false) => "**not** the same disk",
                None => "unknown whether on the same disk",
            }
        ));
    }
    lines
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
