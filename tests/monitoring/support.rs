//! Processes, temporary directories, ports, databases and the external tools, each
//! cleaned up by a guard's `Drop` so that a failing test leaves nothing running.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The repository root (the worktree the test was built from).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn yaml_file(rel: &str) -> serde_json::Value {
    yaml_path(&repo().join(rel))
}

pub fn yaml_path(path: &Path) -> serde_json::Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    super::yaml::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The files of a repository directory ending in `ext`, as repository-relative paths.
pub fn files(dir: &str, ext: &str) -> Vec<String> {
    files_in(&repo(), dir, ext)
}

/// The files of `base`/`dir` ending in `ext`, as paths relative to `base`.
pub fn files_in(base: &Path, dir: &str, ext: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(base.join(dir))
        .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(ext))
        .map(|f| format!("{dir}/{f}"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no {ext} files in {dir}");
    out
}

pub fn read(rel: &str) -> String {
    let path = repo().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A short random hex string (no rand crate: the std hasher is randomly seeded).
pub fn random_tag() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A port that was free a moment ago. Racy in principle; fine on a test machine.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// The Debian packages that carry each tool, for the failure message.
const TOOLS: &[(&str, &str)] = &[
    ("promtool", "prometheus"),
    ("prometheus", "prometheus"),
    ("amtool", "prometheus-alertmanager"),
    ("prometheus-alertmanager", "prometheus-alertmanager"),
    ("psql", "postgresql-client"),
    ("python3", "python3"),
];

/// The path of a required tool; fails (never skips) with how to install it.
pub fn tool(name: &str) -> PathBuf {
    let candidates: &[&str] = match name {
        // Debian names the binary prometheus-alertmanager; upstream tarballs alertmanager.
        "prometheus-alertmanager" => &["prometheus-alertmanager", "alertmanager"],
        _ => std::slice::from_ref(&name),
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for c in candidates {
            let p = dir.join(c);
            if p.is_file() {
                return p;
            }
        }
    }
    let package = TOOLS
        .iter()
        .find(|(t, _)| *t == name)
        .map_or(name, |(_, p)| p);
    panic!(
        "`{name}` is not on PATH; the monitoring tests need it. Install it with \
         `apt-get install -y {package}` (scripts/test.sh does this on a fresh machine)."
    );
}

/// Runs a command to completion; panics with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not start {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout + &stderr
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), random_tag()));
        fs::create_dir_all(&p).expect("creating a temp dir");
        Self(p)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop. Output goes to a log file whose tail is printed if
/// the test is failing, which is usually the quickest way to see why.
pub struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Self {
        let file = fs::File::create(&log).expect("creating a log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("cloning a file handle"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {name} ({cmd:?}): {e}"));
        Self { name, child, log }
    }

    /// Panics with the log tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}):\n{}",
                self.name,
                tail(&self.log, 4000)
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} ({})\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 3000)
            );
        }
    }
}

fn tail(path: &Path, bytes: u64) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s
}

/// Rewrites the value of every `key: value` line whose key is one of `keys`; returns the
/// new text and how many lines changed.
pub fn set_durations(text: &str, keys: &[&str], value: &str) -> (String, usize) {
    let mut hits = 0;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            for key in keys {
                if let Some(rest) = trimmed.strip_prefix(&format!("{key}:")) {
                    if !rest.trim().is_empty() {
                        hits += 1;
                        return format!("{indent}{key}: {value}");
                    }
                }
            }
            line.to_owned()
        })
        .collect();
    (out.join("\n") + "\n", hits)
}

pub async fn get_status(url: &str) -> Result<u16, String> {
    reqwest::get(url)
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

pub async fn wait_ready(what: &str, url: String, proc: &mut Proc) {
    eventually(what, Duration::from_secs(30), || {
        proc.assert_running();
        let url = url.clone();
        async move {
            match get_status(&url).await? {
                200 => Ok(()),
                s => Err(format!("{url} answered {s}")),
            }
        }
    })
    .await;
}

/// Polls `f` until it returns `Some`, or panics after `deadline` saying what it waited for.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::from("never checked");
    while start.elapsed() < deadline {
        match f().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out after {deadline:?} waiting for {what}; last: {last}");
}

pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh Postgres database (and a read-only role like Grafana's), dropped on drop.
pub struct TestDb {
    pub name: String,
    pub reader: String,
    pub reader_password: String,
}

impl TestDb {
    pub async fn create() -> Self {
        use sqlx::{Connection, Executor};
        let tag = random_tag();
        let db = Self {
            name: format!("mon_{tag}"),
            reader: format!("mon_reader_{tag}"),
            reader_password: format!("pw_{tag}"),
        };
        let mut admin = sqlx::PgConnection::connect(ADMIN_URL)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to Postgres at {ADMIN_URL}: {e}. Start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                 (scripts/test.sh does)"
                )
            });
        admin
            .execute(format!("CREATE DATABASE {}", db.name).as_str())
            .await
            .expect("CREATE DATABASE");
        db
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    pub fn reader_url(&self) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:5432/{}",
            self.reader, self.reader_password, self.name
        )
    }

    async fn drop_all(name: String, reader: String) {
        use sqlx::{Connection, Executor};
        let Ok(mut admin) = sqlx::PgConnection::connect(ADMIN_URL).await else {
            return;
        };
        let _ = admin
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
        let _ = admin
            .execute(format!("DROP ROLE IF EXISTS {reader}").as_str())
            .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, reader) = (self.name.clone(), self.reader.clone());
        // Drop may run inside the test's runtime, which cannot be blocked on: use a
        // thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup")
                .block_on(Self::drop_all(name, reader));
        })
        .join();
    }
}
