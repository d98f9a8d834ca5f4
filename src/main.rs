use std::process::ExitCode;
use std::sync::Arc;

use messaging_exporter::clock::SystemClock;
use messaging_exporter::{app, telemetry, App, Config};

fn main() -> ExitCode {
    limit_malloc_arenas();
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the Tokio runtime starts");
    runtime.block_on(start())
}

/// Malloc arenas glibc may create, unless `MALLOC_ARENA_MAX` says otherwise. By default a
/// thread that finds the arenas busy takes one of its own, up to eight per core, and
/// memory freed into one is not reused by the others: in the soak (`BENCHMARKS.md`) RSS
/// kept rising after its first minutes (with two arenas too), and levelled off with one,
/// at no measurable cost in throughput: the exporter waits on its database far more than
/// on malloc's lock.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 1;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` sets one of glibc's malloc tunables; it is called before the
        // runtime starts any other thread.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// Each client holds a file descriptor, and the usual soft limit (1,024) is what a thousand
/// slow clients would exhaust, refusing everyone else's connections: the soft limit is
/// raised to the hard one, as servers do.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a struct owned here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn raise_open_files_limit() {}

async fn start() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(refusal) => {
            telemetry::init(refusal.log_format);
            tracing::error!("{}", refusal.message);
            eprintln!("messaging-exporter: {}", refusal.message);
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = ?e, "messaging-exporter failed");
            eprintln!("messaging-exporter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = app::shutdown_signal();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let app = App::new(config, Arc::new(SystemClock)).await?;
    app.serve(listener, shutdown).await
}
