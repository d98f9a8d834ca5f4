//! The shipped inhibitions on a live Alertmanager: alerts are posted to its API as
//! Prometheus posts them and read back with the inhibitions it applied. In an
//! Alertmanager shared with other teams, this project's inhibitions mute only this
//! project's alerts (its `service` label) of the same group (job), only for a
//! fleet-wide cause; a single replica down mutes nothing.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::alertmanager::{inhibited, Alertmanager};
use super::config::Config;
use super::receiver::Receiver;
use super::support::{eventually, TempDir};

/// Labels of one of this project's alerts: its name, severity, `service` and group
/// labels (the test series' values, or `group_suffix` appended to them: another
/// environment), plus `extra`.
fn ours(
    cfg: &Config,
    name: &str,
    severity: &str,
    group_suffix: &str,
    extra: &[(&str, &str)],
) -> Value {
    let mut m = Map::new();
    m.insert("alertname".into(), name.into());
    m.insert("severity".into(), severity.into());
    m.insert("service".into(), cfg.service.clone().into());
    for g in &cfg.group_labels {
        let (_, v) = cfg
            .test_labels
            .iter()
            .find(|(k, _)| k == g)
            .expect("test labels hold every group label");
        m.insert(g.clone(), format!("{v}{group_suffix}").into());
    }
    for (k, v) in extra {
        m.insert((*k).into(), (*v).into());
    }
    Value::Object(m)
}

fn alert(labels: &Value) -> Value {
    json!({ "labels": labels })
}

/// Waits until Alertmanager mutes `sentinel` (so it has taken in every alert posted
/// before it), then checks which of `cases` (what, labels, muted?) it mutes.
async fn assert_muted(am: &Alertmanager, sentinel: &Value, cases: &[(&str, &Value, bool)]) {
    let wrong = eventually(
        "Alertmanager to apply the inhibitions",
        Duration::from_secs(20),
        || async {
            let alerts = am.alerts().await?;
            if inhibited(&alerts, sentinel) != Some(true) {
                return Err(format!("{sentinel} is not muted yet"));
            }
            let mut wrong = Vec::new();
            for (what, labels, want) in cases {
                let got =
                    inhibited(&alerts, labels).ok_or_else(|| format!("{labels} is missing"))?;
                if got != *want {
                    wrong.push(format!(
                        "{what} is {}muted: {labels}",
                        if got { "" } else { "not " }
                    ));
                }
            }
            Ok(wrong)
        },
    )
    .await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inhibitions_mute_only_this_projects_alerts_of_the_same_job() {
    let cfg = Config::shipped();
    let tmp = TempDir::new("am-inhibition");
    let receiver = Receiver::default();
    let am = Alertmanager::start(&tmp, &receiver.start().await, &[]).await;
    let (page, ticket) = (cfg.page.as_str(), cfg.ticket.as_str());
    let whatsapp = [("provider", "meta"), ("channel", "whatsapp")];
    let slo = [
        ("slo", "delivery-success"),
        ("provider", "twilio"),
        ("channel", "sms"),
    ];

    let replica_down = ours(
        &cfg,
        "MessagingExporterReplicaDown",
        ticket,
        "",
        &[("instance", "exporter-a:9469")],
    );
    let failures = ours(&cfg, "MessagingWebhooksStalled", page, "", &whatsapp[..1]);
    let staging_failures = ours(
        &cfg,
        "MessagingWebhooksStalled",
        page,
        "-staging",
        &whatsapp[..1],
    );
    // Another team's page, and another team's alert about our target (no service label).
    let other_team =
        json!({"alertname": "CheckoutErrorsHigh", "severity": "page", "job": "checkout"});
    let other_on_our_job = {
        let mut l = ours(&cfg, "TargetDown", "warning", "", &[]);
        l.as_object_mut().unwrap().remove("service");
        l
    };
    // A known inhibition, posted last: once it applies, Alertmanager has seen the rest.
    let fast_burn = ours(&cfg, "MessagingDeliverySloFastBurn", page, "", &slo);
    let slow_burn = ours(&cfg, "MessagingDeliverySloSlowBurn", ticket, "", &slo);
    // The failure-ratio tickets of the fast burn's provider and channel, and of another.
    let ratio = ours(
        &cfg,
        "MessagingDeliveryFailureRatioHigh",
        ticket,
        "",
        &slo[1..],
    );
    let other_ratio = ours(
        &cfg,
        "MessagingDeliveryFailureRatioHigh",
        ticket,
        "",
        &whatsapp,
    );

    // One replica down (what the rules fire for it: a ticket) mutes nothing; the fast burn
    // mutes the tickets of its own job, provider and channel only: one page.
    let posted = [
        &replica_down,
        &failures,
        &staging_failures,
        &other_team,
        &other_on_our_job,
        &other_ratio,
        &ratio,
        &fast_burn,
        &slow_burn,
    ];
    am.post(&posted.map(alert)).await;
    assert_muted(
        &am,
        &slow_burn,
        &[
            ("one replica down", &replica_down, false),
            ("our page while a replica is down", &failures, false),
            ("our staging page", &staging_failures, false),
            ("another team's page", &other_team, false),
            ("another team's alert on our job", &other_on_our_job, false),
            (
                "a failure-ratio ticket of another channel",
                &other_ratio,
                false,
            ),
            (
                "the failure-ratio ticket of the burning channel",
                &ratio,
                true,
            ),
        ],
    )
    .await;

    // The whole fleet of the job down: only this project's alerts of that job are muted,
    // not its heartbeat nor its alerts about Alertmanager and Prometheus.
    let fleet_down = ours(&cfg, "MessagingExporterDown", page, "", &[]);
    let watchdog =
        json!({"alertname": "MessagingWatchdog", "severity": cfg.none, "service": cfg.service});
    let mut am_failing = json!({"alertname": "MessagingAlertmanagerNotificationsFailing",
        "severity": ticket, "service": cfg.service, "instance": "alertmanager:9093", "integration": "webhook"});
    for (k, v) in &cfg.alertmanager_labels {
        am_failing[k] = v.as_str().into();
    }
    am.post(&[&watchdog, &am_failing, &fleet_down].map(alert))
        .await;
    assert_muted(
        &am,
        &failures,
        &[
            ("the fleet-wide page itself", &fleet_down, false),
            ("a replica of the job", &replica_down, true),
            ("our staging page", &staging_failures, false),
            ("another team's page", &other_team, false),
            ("another team's alert on our job", &other_on_our_job, false),
            ("the Watchdog", &watchdog, false),
            ("our alert about Alertmanager", &am_failing, false),
        ],
    )
    .await;
}
