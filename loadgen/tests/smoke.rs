//! The harness's smoke mode inside the test suite: every scenario but the soak, a few
//! hundred events each, on Postgres and on SQLite, against the exporter binary built
//! from this workspace. It checks counts only (the exporter must count exactly what it
//! acknowledged); timings are printed, never asserted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use loadgen::{report, run_bench, Backend, BenchOpts};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadgen sits in the workspace root")
        .to_path_buf()
}

/// Builds the exporter and returns the path of its binary. `--workspace --all-targets`
/// resolves features exactly as `cargo test --workspace` does, so under
/// `scripts/test.sh` this is a no-op; building the exporter alone (`-p`) would unify
/// features differently and compile the whole dependency tree a second time.
fn exporter_binary() -> PathBuf {
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "--workspace",
            "--all-targets",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("running cargo build");
    assert!(
        out.status.success(),
        "building the exporter failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        // The bin target is also built as a unit-test harness: take the real one.
        .filter(|v| {
            v["target"]["name"] == "messaging-exporter"
                && v["target"]["kind"][0] == "bin"
                && v["profile"]["test"] == false
        })
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the exporter's executable")
}

#[test]
fn smoke_every_scenario_counts_exactly_what_was_sent() {
    let bin = exporter_binary();
    let work_dir = std::env::temp_dir().join(format!("loadgen_smoke_{}", std::process::id()));
    let opts = BenchOpts {
        exporter_bin: bin,
        backends: vec![Backend::Postgres, Backend::Sqlite],
        scenarios: vec![1, 2, 3, 4, 5],
        concurrency: 8,
        duration: Duration::from_secs(1),
        max_rate: 1_000.0,
        smoke_items: Some(150),
        seed: 5,
        pg_admin_url: std::env::var("BENCH_PG_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        work_dir: work_dir.clone(),
        soak: Duration::from_secs(600),
        soak_rate: None,
        db_max_connections: Some(4),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let all = rt
        .block_on(run_bench(&opts, |_| {}))
        .expect("the harness runs");
    let figs: Vec<_> = all.into_iter().flat_map(|(_, f)| f).collect();
    let text = report::render("smoke", &[], &figs);
    println!("{text}");
    let _ = std::fs::remove_dir_all(&work_dir);

    for backend in ["postgres", "sqlite"] {
        let ran: Vec<&str> = figs
            .iter()
            .filter(|f| f.backend == backend)
            .map(|f| f.id.as_str())
            .collect();
        assert_eq!(
            ran,
            ["C1", "1a", "1b", "2", "3a", "3b", "4", "5"],
            "{backend}"
        );
    }
    for f in &figs {
        if let Some(why) = &f.unavailable {
            // Only check-send may be missing from a build, and it must say so.
            assert!(
                f.id.starts_with('3') && why.contains("check-send"),
                "{}: {why}",
                f.id
            );
            continue;
        }
        assert!(f.requests > 0, "{} {} sent nothing", f.id, f.backend);
        assert_eq!(f.errors, 0, "{} {}: {:?}", f.id, f.backend, f.error_detail);
        if f.id != "C1" {
            assert!(
                !f.checks.is_empty(),
                "{} {} checked no counter",
                f.id,
                f.backend
            );
        }
        for c in &f.checks {
            assert!(
                c.ok(),
                "{} ({}): {} — sent {}, exporter counted {}\n{text}",
                f.id,
                f.backend,
                c.what,
                c.expected,
                c.got
            );
        }
    }
}
