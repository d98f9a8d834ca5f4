//! `loadgen`: runs the benchmark scenarios of issue 5 against the exporter binary and
//! prints each one's figures, its ratio to the ceilings measured in the same run, and
//! whether the exporter counted exactly what it was sent. Exits 1 when a count is wrong;
//! a missed timing target never fails it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use loadgen::{describe_machine, load_average, report, run_bench, Backend, BenchOpts};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Db {
    Postgres,
    Sqlite,
    Both,
}

/// Benchmark harness for messaging-exporter.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about)]
struct Cli {
    /// The exporter binary to start (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/messaging-exporter")]
    exporter_bin: PathBuf,
    /// Database(s) to run on.
    #[arg(long, value_enum, default_value_t = Db::Postgres)]
    db: Db,
    /// Scenarios to run, comma-separated: 1 single-status, 2 batched, 3 check-send,
    /// 4 mixed, 5 /metrics under load, 6 soak (needs 4 first, or --soak-rate).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5")]
    scenarios: Vec<u8>,
    /// Concurrent keep-alive connections (closed loop).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per timed scenario (and per ceiling).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Events per second pre-built per scenario: the most any scenario can send (scenario 2,
    /// batched statuses: three times this).
    #[arg(long, default_value_t = 40_000.0)]
    max_rate: f64,
    /// Smoke mode: this many items per scenario, sent whatever the time; checks counts.
    #[arg(long)]
    smoke: Option<usize>,
    /// Soak length in seconds (scenario 6).
    #[arg(long, default_value_t = 600)]
    soak_seconds: u64,
    /// Messages/s for the soak; default half of scenario 4's maximum in the same run.
    #[arg(long)]
    soak_rate: Option<f64>,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_admin_url: String,
    /// Exporter logs, SQLite files and the results Markdown go here.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The generator's threads (it shares the machine with the exporter).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Passed to the exporter as --db-max-connections.
    #[arg(long)]
    db_max_connections: Option<u32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let opts = BenchOpts {
        exporter_bin: cli.exporter_bin,
        backends: match cli.db {
            Db::Postgres => vec![Backend::Postgres],
            Db::Sqlite => vec![Backend::Sqlite],
            Db::Both => vec![Backend::Postgres, Backend::Sqlite],
        },
        scenarios: cli.scenarios,
        concurrency: cli.concurrency,
        duration: Duration::from_secs(cli.duration),
        max_rate: cli.max_rate,
        smoke_items: cli.smoke,
        seed: cli.seed,
        pg_admin_url: cli.pg_admin_url,
        work_dir: cli.out,
        soak: Duration::from_secs(cli.soak_seconds),
        soak_rate: cli.soak_rate,
        db_max_connections: cli.db_max_connections,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Before the header, which looks at the disk it is on.
    let _ = std::fs::create_dir_all(&opts.work_dir);
    let mut header = describe_machine(&opts);
    let result = rt.block_on(run_bench(&opts, |f| {
        eprintln!(
            "[{}] {} {} ({}): {:.0} req/s, {:.0} {}, p99 {:.2} ms, CPU {} µs/event, errors {}, counts {}",
            load_average(),
            f.id,
            f.name,
            f.backend,
            f.req_per_s(),
            f.events_per_s(),
            f.event_unit,
            f.lat.p99,
            f.cpu_us_per_event()
                .map_or("–".to_owned(), |c| format!("{c:.0}")),
            f.errors,
            if f.unavailable.is_some() {
                "n/a"
            } else if f.counts_ok() {
                "exact"
            } else {
                "MISMATCH"
            }
        );
    }));
    let all = match result {
        Ok(all) => all,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            return ExitCode::from(2);
        }
    };
    header.push(format!("load average at end: {}", load_average()));
    let figs: Vec<_> = all.into_iter().flat_map(|(_, f)| f).collect();
    let text = report::render("messaging-exporter benchmark", &header, &figs);
    println!("{text}");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let file = opts.work_dir.join(format!("results-{stamp}.md"));
    if std::fs::write(&file, &text).is_ok() {
        eprintln!("results written to {}", file.display());
    }
    if figs.iter().all(Figures::counts_ok) {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "loadgen: the exporter's counters differ from what was sent (see COUNT MISMATCH above)"
        );
        ExitCode::FAILURE
    }
}

use loadgen::Figures;
