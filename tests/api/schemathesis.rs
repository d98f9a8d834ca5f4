//! Schemathesis generates requests from `/openapi.json` against the real binary: whatever
//! it sends, the exporter never answers 5xx.

use std::process::Command;

use crate::helpers::{tempdir, Backend, TestDb};
use crate::process::Exporter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_generated_request_gets_a_server_error() {
    let st = Command::new("st").arg("--version").output();
    assert!(
        st.is_ok_and(|o| o.status.success()),
        "schemathesis is not installed: `pip install schemathesis` (scripts/test.sh does it)"
    );
    let db = TestDb::new(Backend::Postgres).await;
    let dir = tempdir::Dir::new();
    let key = "0123456789abcdef-schemathesis";
    let e = Exporter::start(&db.url, &dir, &["--api-key", key]).await;
    let (url, auth) = (
        e.url("/openapi.json"),
        format!("Authorization: Bearer {key}"),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("st")
            .args(["run", &url, "--checks", "not_a_server_error"])
            .args(["--max-examples", "40", "--workers", "2", "--header", &auth])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = report
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or("");
    println!("schemathesis: {summary}");
    assert!(
        summary.contains("passed") && !summary.contains("failed"),
        "{report}"
    );
}
