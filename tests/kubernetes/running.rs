//! The real binary with the Deployment's environment: the files its `*_FILE` variables
//! name written as the secret volume would (under a temporary directory instead of the
//! mount path), the listen port moved to a free one. What the kubelet and Prometheus ask
//! for must then be served, and the secrets from the files must be the ones in force.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::deployment::{container, env, secrets_mount};
use super::support::{rendered, TempDir};

const API_KEY: &str = "k8s-test-api-key-0123456789abcdef";
const VERIFY_TOKEN: &str = "k8s-test-verify-token";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn the_exporter_runs_with_the_deployments_environment_and_secret_files() {
    let objects = rendered();
    let mount = secrets_mount(&objects);
    let env = env(container(&objects));
    let tmp = TempDir::new("messaging-k8s-run");
    let secrets = tmp.path("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let database = format!("sqlite://{}", tmp.path("exporter.db").display());
    for (name, path) in &env {
        let Some(file) = path.strip_prefix(&format!("{mount}/")) else {
            continue;
        };
        let value = match name.as_str() {
            "DATABASE_URL_FILE" => database.clone(),
            "API_KEY_FILE" => API_KEY.to_owned(),
            "META_VERIFY_TOKEN_FILE" => VERIFY_TOKEN.to_owned(),
            other => format!("k8s-test-{other}"),
        };
        // As `kubectl create secret generic --from-file` stores them: with a final newline.
        std::fs::write(secrets.join(file), format!("{value}\n")).unwrap();
    }
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_messaging-exporter"));
    cmd.env_clear();
    for (name, value) in env {
        let value = match value.strip_prefix(&mount) {
            Some(file) => format!("{}{file}", secrets.display()),
            None if name == "LISTEN_ADDR" => value.replace(":9469", &format!(":{port}")),
            None => value,
        };
        cmd.env(name, value);
    }
    let log = std::fs::File::create(tmp.path("exporter.log")).unwrap();
    let child = cmd
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let _exporter = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    // The startup probe's path, polled as the kubelet would.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get("/healthz").await.is_ok_and(|r| r.status() == 200) {
        let logs = std::fs::read_to_string(tmp.path("exporter.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "the exporter did not start:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in ["/readyz", "/metrics"] {
        assert_eq!(
            get(path).await.unwrap().status(),
            200,
            "{path} (probe or scrape)"
        );
    }
    // The API key and the verify token are the files' contents, trimmed.
    assert_eq!(get("/v1/sessions").await.unwrap().status(), 401);
    let authorised = http.get(format!("{base}/v1/sessions")).bearer_auth(API_KEY);
    assert_eq!(authorised.send().await.unwrap().status(), 200);
    let handshake = format!(
        "/webhooks/meta?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=42"
    );
    let reply = get(&handshake).await.unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.text().await.unwrap(), "42");
}
