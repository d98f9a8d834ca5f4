//! The whole pipeline, live: the exporter on a fresh Postgres database, Prometheus with
//! the shipped rules, Alertmanager with the shipped routes, and a test receiver standing
//! in for the paging and ticket services. Real traffic goes in; one page (the SLO fast
//! burn) must come out, and every query of every rule and dashboard must answer.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};

use super::alertmanager::{muted_by, Alertmanager};
use super::billing_api;
use super::compose::command_flag;
use super::config::Config;
use super::live_queries::{check_dashboards, check_rules};
use super::queries::Prom;
use super::receiver::Receiver;
use super::support::{
    eventually, free_port, get_status, now_secs, random_tag, read, repo, run_ok, set_durations,
    tool, wait_ready, Proc, TempDir, TestDb, ADMIN_URL,
};
use super::traffic::Traffic;

/// The job of another team's Prometheus scrape of the same exporter.
const OTHER_JOB: &str = "other-team";

/// Replaces each `from` with `to`, insisting that every `from` occurs: if the shipped file
/// changes shape, this test must be updated rather than silently test something else.
fn replace_all(mut text: String, pairs: &[(&str, String)]) -> String {
    for (from, to) in pairs {
        assert!(text.contains(from), "the shipped prometheus.yml no longer contains {from:?}; update tests/monitoring/live.rs");
        text = text.replace(from, to);
    }
    text
}

/// Waits until Prometheus has scraped the exporter after `t` (unix seconds).
async fn scraped_after(prom: &Prom, t: f64) {
    eventually(
        "a scrape of the exporter",
        Duration::from_secs(20),
        || async move {
            let ts = prom
                .value(r#"timestamp(up{job="messaging-exporter"})"#)
                .await?;
            if ts > t {
                Ok(())
            } else {
                Err(format!("last scrape at {ts}, want after {t}"))
            }
        },
    )
    .await;
}

/// The value of one exposition line of the exporter's /metrics, found by substrings.
async fn exporter_value(base: &str, needles: &[&str]) -> Result<f64, String> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let line = text
        .lines()
        .find(|l| !l.starts_with('#') && needles.iter().all(|n| l.contains(n)))
        .ok_or_else(|| format!("no /metrics line with {needles:?}"))?;
    line.rsplit(' ')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| format!("bad line {line}"))
}

/// Template "unknown" is counted only after the grace period: wait for it.
async fn unknown_counted(base: &str, want: f64) {
    let needles = [
        "messaging_outbound_messages_total",
        "status=\"delivered\"",
        "template=\"unknown\"",
    ];
    eventually(
        "statuses without a send hook to be counted as template unknown",
        Duration::from_secs(20),
        || async move {
            let v = exporter_value(base, &needles).await?;
            if v >= want {
                Ok(())
            } else {
                Err(format!("{v} of {want}"))
            }
        },
    )
    .await;
}

/// Twilio's prices are looked up in the background: wait until `want` is billed, so that
/// Prometheus sees the bill before the next round moves it (increase() needs two samples).
async fn twilio_billed(base: &str, want: f64) {
    let needles = ["messaging_billed_cost_total", "provider=\"twilio\""];
    eventually(
        "the Twilio stand-in's prices to be counted",
        Duration::from_secs(20),
        || async move {
            let v = exporter_value(base, &needles).await?;
            if v >= want - 1e-9 {
                Ok(())
            } else {
                Err(format!("{v} of {want}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stack_pages_on_failures_and_answers_every_dashboard_query() {
    let started = Instant::now();
    let prometheus = tool("prometheus");
    tool("prometheus-alertmanager");
    tool("psql");
    let tmp = TempDir::new("messaging-monitoring");
    let db = TestDb::create().await;

    // Grafana's read-only role, made by the script compose runs; SQL panels use it below.
    run_ok(
        Command::new("sh")
            .arg(repo().join("grafana/postgres/create-grafana-reader.sh"))
            .envs([
                ("PGHOST", "127.0.0.1"),
                ("PGPORT", "5432"),
                ("POSTGRES_USER", "postgres"),
            ])
            .env("POSTGRES_DB", &db.name)
            .env("GRAFANA_DB_USER", &db.reader)
            .env("GRAFANA_DB_PASSWORD", &db.reader_password),
        "grafana/postgres/create-grafana-reader.sh",
    );

    // --- the exporter: template labels overflow after 3 values, attribution after 1 s;
    // Twilio's prices read from a stand-in (signed Twilio webhooks, as in production).
    let twilio_api = billing_api::start().await;
    let exporter_port = free_port();
    let exporter_url = format!("http://127.0.0.1:{exporter_port}");
    let mut exporter = Proc::spawn(
        "exporter",
        Command::new(env!("CARGO_BIN_EXE_messaging-exporter"))
            .args([
                "--listen",
                &format!("127.0.0.1:{exporter_port}"),
                "--database-url",
                &db.url(),
            ])
            .args([
                "--attribution-grace-seconds",
                "1",
                "--max-label-values",
                "3",
                "--db-timeout-ms",
                "1000",
            ])
            .args([
                "--twilio-auth-token",
                billing_api::AUTH_TOKEN,
                "--public-url",
                billing_api::PUBLIC_URL,
                "--twilio-account-sid",
                billing_api::ACCOUNT_SID,
                "--twilio-api-url",
                &twilio_api,
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default()),
        tmp.path("exporter.log"),
    );
    wait_ready(
        "the exporter",
        format!("{exporter_url}/readyz"),
        &mut exporter,
    )
    .await;

    // --- Alertmanager: the shipped routes, rendered as compose does, notifying in 1 s.
    let receiver = Receiver::default();
    let receiver_url = receiver.start().await;
    // Both know where people reach them as compose tells them, for the notification links.
    let prom_external = command_flag("prometheus", "--web.external-url").expect("compose sets it");
    let am_external = command_flag("alertmanager", "--web.external-url").expect("compose sets it");
    let am = Alertmanager::start(
        &tmp,
        &receiver_url,
        &[
            format!("--web.external-url={am_external}"),
            "--web.route-prefix=/".to_owned(),
        ],
    )
    .await;
    let am_url = am.url.clone();

    // --- Prometheus: the shipped config on loopback ports, 1 s scrapes and evaluations,
    // and the shipped rules with `for:` shortened so alerts fire at once.
    let rules_dir = tmp.path("rules");
    fs::create_dir_all(&rules_dir).unwrap();
    let mut shortened = 0;
    for entry in fs::read_dir(repo().join("prometheus/rules")).unwrap() {
        let path = entry.unwrap().path();
        let (text, hits) = set_durations(&fs::read_to_string(&path).unwrap(), &["for"], "0s");
        shortened += hits;
        fs::write(rules_dir.join(path.file_name().unwrap()), text).unwrap();
    }
    assert!(
        shortened > 0,
        "no `for:` found in prometheus/rules to shorten"
    );
    let prom_port = free_port();
    let config = replace_all(
        read("prometheus/prometheus.yml"),
        &[
            ("exporter:9469", format!("127.0.0.1:{exporter_port}")),
            ("alertmanager:9093", am_url.trim_start_matches("http://").to_owned()),
            ("localhost:9090", format!("127.0.0.1:{prom_port}")),
            ("scrape_interval: 15s", "scrape_interval: 1s".into()),
            ("evaluation_interval: 15s", "evaluation_interval: 1s".into()),
            ("- rules/*.yml", format!("- {}/*.yml", rules_dir.display())),
            // Another team's job scraping the same exporter: the rules and boards must
            // neither show it nor merge it with ours.
            (
                "scrape_configs:\n",
                format!(
                    "scrape_configs:\n  - job_name: {OTHER_JOB}\n    static_configs:\n      - targets: [\"127.0.0.1:{exporter_port}\"]\n"
                ),
            ),
        ],
    );
    fs::write(tmp.path("prometheus.yml"), config).unwrap();
    let mut prom_proc = Proc::spawn(
        "prometheus",
        Command::new(prometheus)
            .arg(format!(
                "--config.file={}",
                tmp.path("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg(format!("--web.external-url={prom_external}"))
            .arg("--web.route-prefix=/")
            // Alerts fired before Prometheus knew Alertmanager (the Watchdog, at once) are
            // sent again within a second rather than a minute.
            .arg("--rules.alert.resend-delay=1s"),
        tmp.path("prometheus.log"),
    );
    let prom = Prom::new(format!("http://127.0.0.1:{prom_port}"));
    wait_ready(
        "Prometheus",
        format!("{}/-/ready", prom.base),
        &mut prom_proc,
    )
    .await;
    scraped_after(&prom, now_secs()).await;

    // --- traffic: a seed round creates every series, then a bigger round with a burst of
    // failures makes them move (rate() needs two samples of a series).
    let mut traffic = Traffic::new(exporter_url.clone(), random_tag());
    traffic.round(1, 0).await;
    unknown_counted(&exporter_url, 1.0).await;
    // Round 1 sends three SMS, each billed 0.0083 USD by the stand-in.
    twilio_billed(&exporter_url, 3.0 * 0.0083).await;
    scraped_after(&prom, now_secs() + 1.0).await;
    traffic.round(3, 12).await;

    // --- one page: Prometheus → Alertmanager → the page receiver. The failures fire the
    // SLO fast burn (a page) and the failure-ratio ticket, which the fast burn mutes.
    let page = eventually(
        "MessagingDeliverySloFastBurn to reach the page receiver through Alertmanager",
        Duration::from_secs(60),
        || async {
            receiver
                .firing("page", "MessagingDeliverySloFastBurn")
                .first()
                .cloned()
                .ok_or_else(|| receiver.summary())
        },
    )
    .await;
    assert_eq!(page["labels"]["severity"], "page", "{page}");
    assert_eq!(page["labels"]["provider"], "meta", "{page}");
    assert_eq!(page["labels"]["channel"], "whatsapp", "{page}");
    assert_eq!(page["labels"]["job"], "messaging-exporter", "{page}");
    let runbook = page["annotations"]["runbook_url"]
        .as_str()
        .unwrap_or_default();
    assert!(
        runbook.starts_with(&Config::shipped().runbook_base),
        "runbook_url {runbook}"
    );
    // The links of the notification lead to Prometheus's and Alertmanager's public URLs.
    let generator = page["generatorURL"].as_str().unwrap_or_default();
    assert!(
        generator.starts_with(&format!("{}/graph?", prom_external.trim_end_matches('/'))),
        "the page links to {generator:?}, not to Prometheus at {prom_external}"
    );
    let body = &receiver.bodies("page")[0];
    assert_eq!(
        body["externalURL"].as_str(),
        Some(am_external.trim_end_matches('/')),
        "the page's Alertmanager link: {body}"
    );
    eventually(
        "the fast burn to mute the failure-ratio ticket",
        Duration::from_secs(30),
        || async {
            let alerts = am.alerts().await?;
            muted_by(
                &alerts,
                "MessagingDeliveryFailureRatioHigh",
                "MessagingDeliverySloFastBurn",
            )
        },
    )
    .await;
    let ticket = eventually(
        "MessagingLabelOverflow to reach the ticket receiver",
        Duration::from_secs(30),
        || async {
            receiver
                .firing("ticket", "MessagingLabelOverflow")
                .first()
                .cloned()
                .ok_or_else(|| receiver.summary())
        },
    )
    .await;
    assert_eq!(ticket["labels"]["severity"], "ticket", "{ticket}");
    eventually(
        "the Watchdog to reach the heartbeat receiver",
        Duration::from_secs(30),
        || async {
            receiver
                .firing("heartbeat", "MessagingWatchdog")
                .first()
                .cloned()
                .ok_or_else(|| receiver.summary())
        },
    )
    .await;
    assert!(
        receiver
            .firing("ticket", "MessagingDeliverySloFastBurn")
            .is_empty()
            && receiver
                .firing("page", "MessagingDeliveryFailureRatioHigh")
                .is_empty(),
        "a second page, or a page at the ticket receiver: {}",
        receiver.summary()
    );

    // Everything of round 2 is counted and scraped twice before the queries run.
    unknown_counted(&exporter_url, 4.0).await;
    scraped_after(&prom, now_secs() + 1.0).await;

    let mut failures = Vec::new();
    let mut notes = Vec::new();
    let presend = traffic.presend_available == Some(true);
    let group = [("job".to_owned(), "messaging-exporter".to_owned())];
    let n_rules = check_rules(&prom, &group, presend, &mut failures, &mut notes).await;
    let (n_promql, n_sql) = check_dashboards(
        &prom,
        &db,
        &traffic.phones,
        presend,
        &mut failures,
        &mut notes,
    )
    .await;

    // --- inhibition: the exporter loses its database; MessagingExporterDown pages and
    // mutes this project's other alerts of the job.
    check_inhibition(&db, &exporter_url, &am, &receiver).await;

    for n in &notes {
        eprintln!("note: {n}");
    }
    eprintln!(
        "checked {n_rules} rules, {n_promql} dashboard PromQL and {n_sql} SQL queries live in {:.1?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn check_inhibition(db: &TestDb, exporter_url: &str, am: &Alertmanager, receiver: &Receiver) {
    let mut admin = sqlx::PgConnection::connect(ADMIN_URL)
        .await
        .expect("admin connection");
    admin
        .execute(format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", db.name).as_str())
        .await
        .expect("closing the test database to new connections");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&db.name)
        .execute(&mut admin)
        .await
        .expect("disconnecting the exporter");

    let url = format!("{exporter_url}/readyz");
    eventually(
        "the exporter to report its database unreachable",
        Duration::from_secs(20),
        || {
            let url = url.clone();
            async move {
                match get_status(&url).await? {
                    503 => Ok(()),
                    s => Err(format!("/readyz answered {s}")),
                }
            }
        },
    )
    .await;
    eventually(
        "MessagingExporterDown to reach the page receiver",
        Duration::from_secs(30),
        || async {
            if receiver.firing("page", "MessagingExporterDown").is_empty() {
                Err(receiver.summary())
            } else {
                Ok(())
            }
        },
    )
    .await;
    eventually(
        "MessagingExporterDown to mute the label-overflow ticket of its job",
        Duration::from_secs(30),
        || async {
            let alerts = am.alerts().await?;
            muted_by(&alerts, "MessagingLabelOverflow", "MessagingExporterDown")
        },
    )
    .await;
}
