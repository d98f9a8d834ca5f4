//! Postgres over TLS (CONTRACT §6.11): a second local cluster that accepts TLS connections
//! only, with a CA and a server certificate made by the test, and the real binary
//! connecting to it with libpq's `sslmode` and `sslrootcert`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Connection, Row};

use crate::helpers::{tempdir, template_hook, T0_MS};
use crate::process::Exporter;

/// In every URL the tests give; it must never be printed.
const PASSWORD: &str = "tls-test-password";

/// A Postgres cluster of its own on a free port, with `ssl = on` and a `pg_hba.conf` that
/// lets in TLS connections from 127.0.0.1 only; stopped and dropped on drop, pass or fail.
struct TlsCluster {
    version: String,
    name: String,
    port: u16,
    conf: PathBuf,
    certs: tempdir::Dir,
}

impl TlsCluster {
    /// A cluster whose certificate holds the subject alternative names `san`.
    fn start(san: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let version = std::fs::read_dir("/etc/postgresql")
            .ok()
            .and_then(|mut versions| versions.next())
            .and_then(|v| v.ok())
            .map(|v| v.file_name().to_string_lossy().into_owned())
            .expect("no /etc/postgresql/<version>: apt-get install -y postgresql");
        let name = format!(
            "tls_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        run(
            "pg_createcluster",
            &[
                &version,
                &name,
                "-p",
                &port.to_string(),
                "--start-conf",
                "manual",
                "--",
                "--no-sync",
            ],
        );
        let cluster = Self {
            conf: Path::new("/etc/postgresql").join(&version).join(&name),
            version,
            name,
            port,
            certs: tempdir::Dir::new(),
        };
        make_ca(&cluster.certs.path, "ca");
        make_ca(&cluster.certs.path, "other-ca");
        make_server_certificate(&cluster.certs.path, "ca", san);
        for (file, mode) in [("server.pem", "0644"), ("server.key", "0600")] {
            let from = cluster.certs.path.join(file);
            let to = cluster.conf.join(file);
            run(
                "install",
                &[
                    "-o",
                    "postgres",
                    "-g",
                    "postgres",
                    "-m",
                    mode,
                    path(&from),
                    path(&to),
                ],
            );
        }
        cluster.configure(true);
        cluster.ctl("start");
        cluster
    }

    /// `ssl` on with `hostssl` lines only, or off with plain `host` lines.
    fn configure(&self, tls: bool) {
        let conf = format!(
            "ssl = {}\nssl_cert_file = '{}'\nssl_key_file = '{}'\nlisten_addresses = '127.0.0.1'\n",
            if tls { "on" } else { "off" },
            path(&self.conf.join("server.pem")),
            path(&self.conf.join("server.key")),
        );
        std::fs::write(self.conf.join("conf.d/tls.conf"), conf).unwrap();
        let hba = format!(
            "local all postgres peer\n{} all all 127.0.0.1/32 trust\n",
            if tls { "hostssl" } else { "host" }
        );
        std::fs::write(self.conf.join("pg_hba.conf"), hba).unwrap();
    }

    fn ctl(&self, action: &str) {
        let log = format!(
            "/var/log/postgresql/postgresql-{}-{}.log",
            self.version, self.name
        );
        let status = Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                &self.version,
                &self.name,
                action,
            ])
            .status()
            .expect("pg_ctlcluster: apt-get install -y postgresql");
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(status.success(), "pg_ctlcluster {action} failed: {log}");
    }

    fn ca(&self, name: &str) -> String {
        path(&self.certs.path.join(format!("{name}.pem"))).to_owned()
    }

    fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/postgres?{params}",
            self.port
        )
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", &self.version, &self.name])
            .status();
        // pg_dropcluster leaves the directory behind when it holds files of ours.
        let _ = std::fs::remove_dir_all(&self.conf);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs a tool the test needs, failing with how to get it when it is missing.
fn run(program: &str, args: &[&str]) {
    let package = if program == "openssl" {
        "openssl"
    } else {
        "postgresql"
    };
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}; install it with apt-get install -y {package}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA, `<name>.pem` and `<name>.key` in `dir`.
fn make_ca(dir: &Path, name: &str) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    let subject = format!("/CN=messaging-exporter test {name}");
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-keyout",
            path(&key),
            "-out",
            path(&cert),
        ],
    );
}

/// `server.pem` and `server.key` in `dir`, for the names `san`, signed by `ca`.
fn make_server_certificate(dir: &Path, ca: &str, san: &str) {
    let p = |file: &str| dir.join(file).to_str().unwrap().to_owned();
    std::fs::write(
        dir.join("server.ext"),
        format!("subjectAltName = {san}\nextendedKeyUsage = serverAuth\n"),
    )
    .unwrap();
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p("server.key"),
            "-out",
            &p("server.csr"),
        ],
    );
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &p("server.csr"),
            "-CA",
            &p(&format!("{ca}.pem")),
            "-CAkey",
            &p(&format!("{ca}.key")),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("server.ext"),
            "-out",
            &p("server.pem"),
        ],
    );
}

/// Runs the exporter against `url`, asserts that it refused to start, and returns what it
/// printed.
fn start_up_refusal(url: &str) -> String {
    let dir = tempdir::Dir::new();
    let log = dir.path.join("exporter.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_messaging-exporter"))
        .args(["--listen", "127.0.0.1:0", "--database-url", url])
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the exporter still runs: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "the exporter started: {printed}");
    assert!(
        !printed.contains(PASSWORD),
        "the password was printed: {printed}"
    );
    printed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_verify_full_and_system_roots_connect_and_store_a_send_hook() {
    let cluster = TlsCluster::start("DNS:localhost, IP:127.0.0.1");
    let ca = cluster.ca("ca");
    let verify_full = format!("sslmode=verify-full&sslrootcert={ca}");
    let connections = [
        (cluster.url("127.0.0.1", "sslmode=require"), None),
        (cluster.url("localhost", &verify_full), None),
        // libpq 16's form; the test's CA stands in for the system's bundle.
        (
            cluster.url("localhost", "sslrootcert=system"),
            Some(("SSL_CERT_FILE", &*ca)),
        ),
    ];
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut db = sqlx::PgConnection::connect(&cluster.url("localhost", &verify_full))
        .await
        .unwrap();
    for (i, (url, env)) in connections.iter().enumerate() {
        let dir = tempdir::Dir::new();
        let env: Vec<(&str, &str)> = env.iter().copied().collect();
        let exporter = Exporter::start_with_env(url, &dir, &[], &env).await;
        let id = format!("wamid.tls-{i}");
        let hook = template_hook(&id, "919800000001", "promo", "utility", T0_MS);
        let reply = client
            .post(exporter.url("/v1/events/sent"))
            .json(&hook)
            .send()
            .await
            .unwrap();
        assert!(reply.status().is_success(), "{url}: {}", reply.status());
        let stored: i64 = sqlx::query(
            "SELECT count(*) FROM outbound_messages WHERE message_id = $1 AND hook_seen = 1",
        )
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get(0);
        assert_eq!(stored, 1, "{url}");
        assert!(!exporter.logs().contains(PASSWORD), "{}", exporter.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_libpq_would_refuse_fail_start_up_naming_the_tls_problem() {
    // Not 127.0.0.1: verify-full by that address must fail on the name.
    let cluster = TlsCluster::start("DNS:localhost");

    let printed = start_up_refusal(&cluster.url("127.0.0.1", "sslmode=disable"));
    assert!(
        printed.contains("the server accepts only TLS connections"),
        "{printed}"
    );

    let other_ca = cluster.ca("other-ca");
    for params in [
        format!("sslmode=verify-full&sslrootcert={other_ca}"),
        // libpq: `require` with a root certificate verifies the chain, as `verify-ca`.
        format!("sslmode=require&sslrootcert={other_ca}"),
    ] {
        let printed = start_up_refusal(&cluster.url("localhost", &params));
        assert!(
            printed.contains("the server's certificate was refused"),
            "{params}: {printed}"
        );
        assert!(printed.contains("UnknownIssuer"), "{params}: {printed}");
    }

    let ca = cluster.ca("ca");
    let printed = start_up_refusal(&cluster.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ));
    assert!(
        printed.contains("the server's certificate does not name the host of DATABASE_URL"),
        "{printed}"
    );

    cluster.configure(false);
    cluster.ctl("restart");
    let printed = start_up_refusal(&cluster.url("127.0.0.1", "sslmode=require"));
    assert!(
        printed.contains("the server does not offer TLS, which sslmode=require insists on"),
        "{printed}"
    );
}
