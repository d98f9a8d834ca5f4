//! The exporter under test as a child process on a fresh database, with its RSS and CPU
//! read from `/proc`. Dropping it stops the process and drops the database.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::runner::{once, Kind, Req};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// The webhook secret the exporter is started with and the generator signs with.
pub const APP_SECRET: &str = "bench-app-secret-0123456789";

#[derive(Clone, Debug)]
pub struct ExporterOpts {
    pub bin: PathBuf,
    pub backend: Backend,
    /// `postgres://user@host:port/postgres`: where `CREATE DATABASE bench_…` runs.
    pub pg_admin_url: String,
    pub grace_seconds: u64,
    pub max_label_values: usize,
    /// `--max-series`: series per metric family.
    pub max_series: usize,
    pub extra_args: Vec<String>,
    /// Where the exporter's log and the SQLite file go.
    pub work_dir: PathBuf,
}

pub struct Exporter {
    child: Child,
    pub addr: SocketAddr,
    pub database_url: String,
    pub backend: Backend,
    db_name: Option<String>,
    pg_admin_url: String,
    sqlite_file: Option<PathBuf>,
    pub log: PathBuf,
    /// Where its log and SQLite file are: the disk the harness probes.
    pub work_dir: PathBuf,
}

/// A snapshot of the process's memory and CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStat {
    pub rss_kib: u64,
    /// utime + stime, in clock ticks (USER_HZ, 100 on Linux).
    pub cpu_ticks: u64,
}

pub fn proc_stat(pid: u32) -> ProcStat {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state (field 3);
    // utime and stime are fields 14 and 15.
    let cpu_ticks = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .unwrap_or(0);
    ProcStat { rss_kib, cpu_ticks }
}

/// CPU ticks used so far by every process named `postgres` (the server and its
/// backends): the database's share of the machine, read the same way as the exporter's.
/// Backends that exit between two readings take their ticks with them, so read it
/// around phases whose connections stay open.
pub fn postgres_cpu_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|pid| proc_stat(pid).cpu_ticks)
        .sum()
}

/// Runs SQL as the Postgres admin through `psql`.
pub fn psql(admin_url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([admin_url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !out.status.success() {
        bail!(
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// Replaces the database name of a `postgres://…/name?options` URL, keeping the options.
pub fn with_database(admin_url: &str, name: &str) -> String {
    let (url, query) = admin_url
        .split_once('?')
        .map_or((admin_url, ""), |(u, q)| (u, q));
    let (base, _) = url
        .rsplit_once('/')
        .filter(|(b, _)| b.contains("//") && b.len() > "postgres://".len() - 1)
        .unwrap_or((url, ""));
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

impl Exporter {
    pub async fn start(opts: &ExporterOpts) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&opts.work_dir)?;
        let suffix = unique_suffix();
        let (database_url, db_name, sqlite_file) = match opts.backend {
            Backend::Postgres => {
                let name = format!("bench_{suffix}");
                psql(&opts.pg_admin_url, &format!("CREATE DATABASE {name}"))?;
                (with_database(&opts.pg_admin_url, &name), Some(name), None)
            }
            Backend::Sqlite => {
                let file = opts.work_dir.join(format!("bench_{suffix}.db"));
                (format!("sqlite://{}", file.display()), None, Some(file))
            }
        };
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = opts.work_dir.join(format!("exporter_{suffix}.log"));
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(&opts.bin)
            .args([
                "--listen",
                &addr.to_string(),
                "--database-url",
                &database_url,
            ])
            .args(["--meta-app-secret", APP_SECRET])
            .args([
                "--attribution-grace-seconds",
                &opts.grace_seconds.to_string(),
            ])
            .args(["--max-label-values", &opts.max_label_values.to_string()])
            .args(["--max-series", &opts.max_series.to_string()])
            .args(&opts.extra_args)
            .env("RUST_LOG", "warn")
            .env_remove("API_KEY")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", opts.bin.display()))?;
        let mut exporter = Self {
            child,
            addr,
            database_url,
            backend: opts.backend,
            db_name,
            pg_admin_url: opts.pg_admin_url.clone(),
            sqlite_file,
            log,
            work_dir: opts.work_dir.clone(),
        };
        exporter.wait_healthy(Duration::from_secs(30)).await?;
        Ok(exporter)
    }

    async fn wait_healthy(&mut self, limit: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + limit;
        let probe = Req::get(Kind::Health, "/readyz");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the exporter exited ({status}) before answering; its log {}:\n{}",
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok((s, _)) = once(self.addr, &probe).await {
                if s.is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > until {
                bail!("the exporter did not become ready within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stat(&self) -> ProcStat {
        proc_stat(self.pid())
    }

    pub fn sqlite_file(&self) -> Option<&Path> {
        self.sqlite_file.as_deref()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // SIGTERM drains, as in production; SIGKILL if it takes too long.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(name) = &self.db_name {
            let _ = psql(
                &self.pg_admin_url,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
        if let Some(f) = &self.sqlite_file {
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", f.display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_in_the_admin_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "bench_1"),
            "postgres://postgres@127.0.0.1:5432/bench_1"
        );
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
                "bench_1"
            ),
            "postgres://postgres@127.0.0.1:5432/bench_1?sslmode=disable"
        );
    }

    #[test]
    fn own_process_stat_is_readable() {
        let s = proc_stat(std::process::id());
        assert!(s.rss_kib > 0);
    }
}
