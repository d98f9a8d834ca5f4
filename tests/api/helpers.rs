//! Test harness: a real server on loopback, a fresh database per test (Postgres or
//! SQLite), a manual clock, and a parsed `/metrics` scrape.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use messaging_exporter::clock::{Clock, ManualClock};
use messaging_exporter::{App, Config};
use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

/// The keys every `POST /v1/check-send` reply has (CONTRACT §3).
pub const CHECK_SEND_KEYS: [&str; 7] = [
    "phone",
    "can_send",
    "blocked_reason",
    "session",
    "rate_limit",
    "cost",
    "reservation",
];

/// Fixture time origin: 2025-09-23T10:00:00Z (see shared/fixtures/README.md).
pub const T0_MS: i64 = 1_758_621_600_000;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A fresh, empty database; Postgres ones are dropped when the test passes.
pub struct TestDb {
    pub backend: Backend,
    pub name: String,
    pub url: String,
    _dir: Option<tempdir::Dir>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        nanos
    )
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                let name = unique_name("me_test");
                let mut admin = sqlx::PgConnection::connect(PG_ADMIN_URL).await.unwrap_or_else(|e| {
                    panic!(
                        "cannot reach Postgres at {PG_ADMIN_URL} ({e}). Start it with \
                         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                         or run the suite through scripts/test.sh, which does that"
                    )
                });
                sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
                Self {
                    backend,
                    name,
                    url,
                    _dir: None,
                }
            }
            Backend::Sqlite => {
                let dir = tempdir::Dir::new();
                let path = dir.path.join("exporter.db");
                let url = format!("sqlite://{}", path.display());
                Self {
                    backend,
                    name: path.display().to_string(),
                    url,
                    _dir: Some(dir),
                }
            }
        }
    }

    /// The same database reached through a proxy that can be cut (Postgres only).
    pub fn url_via(&self, proxy: &PgProxy) -> String {
        assert_eq!(self.backend, Backend::Postgres);
        format!("postgres://postgres@{}/{}", proxy.addr, self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.backend != Backend::Postgres || std::thread::panicking() {
            return; // a failed test keeps its database for inspection
        }
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(PG_ADMIN_URL).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::Executor::execute(&mut admin, sql.as_str()).await;
                }
            });
        })
        .join();
    }
}

/// A minimal temporary directory (removed on drop).
pub mod tempdir {
    use std::path::PathBuf;

    pub struct Dir {
        pub path: PathBuf,
    }

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir().join(super::unique_name("me_test"));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A running exporter on 127.0.0.1, with the manual clock it reads.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub state: messaging_exporter::http::AppState,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Two exporters on one fresh Postgres database, sharing one clock (`a.clock`).
pub async fn two_replicas() -> (TestDb, TestApp, TestApp) {
    two_replicas_configured(|_| {}).await
}

/// [`two_replicas`], each configured by `configure`.
pub async fn two_replicas_configured(configure: fn(&mut Config)) -> (TestDb, TestApp, TestApp) {
    let db = TestDb::new(Backend::Postgres).await;
    let clock = ManualClock::new(T0_MS + 1_000_000);
    let config = || {
        let mut c = config_for(&db.url);
        configure(&mut c);
        c
    };
    let a = TestApp::spawn_with(config(), clock.clone()).await;
    let b = TestApp::spawn_with(config(), clock).await;
    (db, a, b)
}

/// Sends the exporter's warnings and errors (a 503's cause, say) to the running test's
/// captured output: a failing test prints them, a passing one stays quiet.
fn capture_warnings() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        tracing_subscriber::fmt()
            .with_test_writer()
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .init();
    });
}

pub fn config_for(url: &str) -> Config {
    let mut c = Config::for_database(url);
    c.db_max_connections = 5;
    c.db_timeout_ms = 2_000;
    c
}

impl TestApp {
    pub async fn spawn(db: &TestDb) -> Self {
        Self::spawn_with(config_for(&db.url), ManualClock::new(T0_MS + 10_000_000)).await
    }

    pub async fn spawn_with(config: Config, clock: Arc<ManualClock>) -> Self {
        capture_warnings();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = App::new(config, clock.clone())
            .await
            .expect("the exporter starts");
        let state = app.state.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.serve(listener, async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Self {
            addr,
            client,
            clock,
            state,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Graceful shutdown, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn post_meta(&self, body: &[u8]) -> reqwest::Response {
        self.post_meta_with(body, &[]).await
    }

    pub async fn post_meta_with(&self, body: &[u8], headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url("/webhooks/meta"))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(body.to_vec()).send().await.unwrap()
    }

    pub async fn post_twilio(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .client
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(body.to_vec()).send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn scrape(&self) -> Scrape {
        Scrape::fetch(&self.client, &self.url("/metrics")).await
    }

    /// Polls `/metrics` until `pred` holds (background work such as the grace sweep).
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.scrape().await;
            if pred(&s) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last scrape:\n{}",
                s.dump()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// (metric name, labels) → value.
pub type Series = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// One parsed exposition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    pub series: Series,
}

impl Scrape {
    /// Scrapes a `/metrics` URL.
    pub async fn fetch(client: &reqwest::Client, url: &str) -> Self {
        Self::parse(&client.get(url).send().await.unwrap().text().await.unwrap())
    }

    pub fn parse(text: &str) -> Self {
        let mut series = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (name_labels, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (name_labels, BTreeMap::new()),
            };
            series.insert((name.to_owned(), labels), value.parse::<f64>().unwrap());
        }
        Self { series }
    }

    /// Sum of every series of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|((n, l), _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// The series of the counters and histograms we care about, minus the exporter's own
    /// (HTTP timings, saturation) and the process's, for comparing two scrapes.
    pub fn business(&self) -> Series {
        self.series
            .iter()
            .filter(|((n, _), _)| {
                !n.starts_with("messaging_exporter_")
                    && !n.starts_with("process_")
                    && n != "messaging_sessions_active"
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Everything but webhook outcome counters and exporter internals.
    pub fn counted(&self) -> Series {
        self.business()
            .into_iter()
            .filter(|((n, _), _)| n != "messaging_webhook_events_total")
            .collect()
    }

    pub fn dump(&self) -> String {
        self.series
            .iter()
            .filter(|((n, _), v)| {
                **v != 0.0 && !n.starts_with("messaging_exporter_http") && !n.ends_with("_bucket")
            })
            .map(|((n, l), v)| format!("{n}{l:?} {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    out
}

pub fn fixture(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "reading fixture {}: {e} (shared/ must sit beside the checkout)",
            p.display()
        )
    })
}

/// A Meta status webhook for one message.
pub fn meta_status(id: &str, status: &str, ts_secs: i64, phone: &str) -> Vec<u8> {
    meta_statuses(&[(id, status, ts_secs, phone)])
}

/// A Meta status webhook with one status per `(id, status, timestamp, phone)`.
pub fn meta_statuses<S: AsRef<str>>(statuses: &[(S, &str, i64, S)]) -> Vec<u8> {
    let statuses: Vec<serde_json::Value> = statuses
        .iter()
        .map(|(id, status, ts_secs, phone)| {
            serde_json::json!({"id": id.as_ref(), "status": status, "timestamp": ts_secs.to_string(), "recipient_id": phone.as_ref()})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "104455667788990", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100123", "phone_number_id": "110200340050060"},
            "statuses": statuses
        }}]}]
    }))
    .unwrap()
}

/// A Meta inbound text message.
pub fn meta_inbound(id: &str, from: &str, ts_secs: i64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "104455667788990", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100123", "phone_number_id": "110200340050060"},
            "messages": [{"from": from, "id": id, "timestamp": ts_secs.to_string(), "type": "text", "text": {"body": "hi"}}]
        }}]}]
    }))
    .unwrap()
}

/// A send hook for a template message.
pub fn template_hook(
    id: &str,
    phone: &str,
    template: &str,
    category: &str,
    sent_at_ms: i64,
) -> serde_json::Value {
    serde_json::json!({
        "message_id": id, "phone": phone, "is_template": true, "template_name": template,
        "template_category": category, "sent_at": messaging_exporter::clock::rfc3339(sent_at_ms)
    })
}

/// A TCP proxy in front of Postgres that can be cut: `down()` drops every connection and
/// refuses new ones, like a database that went away; `up()` lets them through again.
/// `stall_replies()` stops forwarding what the database sends, without closing anything
/// (a network that black-holes packets): statements still reach it and commit, but their
/// answers wait until `resume()`.
pub struct PgProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl PgProxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (up2, stalled2, conns2) = (up.clone(), stalled.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let stalled = stalled2.clone();
                let task = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect("127.0.0.1:5432").await {
                        let (client_rx, client_tx) = client.into_split();
                        let (server_rx, server_tx) = server.into_split();
                        let never = Arc::new(AtomicBool::new(false));
                        tokio::join!(
                            forward(client_rx, server_tx, never),
                            forward(server_rx, client_tx, stalled),
                        );
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Self {
            addr,
            up,
            stalled,
            conns,
            accept,
        }
    }

    pub fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    pub fn stall_replies(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    pub fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, holding what it read while `stalled` is set.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.down();
    }
}

/// Runs each named `async fn(Backend)` as two tests, on Postgres and on SQLite.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
    };
}
