//! The relay's metrics (CONTRACT §7): deliveries by outcome, the lag from receipt to the
//! bot's 2xx, and the backlog the background refresh reads from the outbox.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::relay::Target;

/// Receipt → the bot's 2xx: well under a second while the bot answers, up to the
/// relay's maximum age (7 days by default) after an outage.
pub const LAG_BUCKETS: [f64; 15] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];

/// How a delivery attempt ended: `delivered` (the bot's 2xx), `retried` (anything else;
/// tried again later) or `expired` (dropped past `--relay-max-age-hours`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayOutcome {
    Delivered,
    Retried,
    Expired,
}

impl RelayOutcome {
    const ALL: [RelayOutcome; 3] = [Self::Delivered, Self::Retried, Self::Expired];

    fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    target: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: &'static str,
}

fn lag_histogram() -> Histogram {
    Histogram::new(LAG_BUCKETS)
}

#[derive(Clone)]
pub struct RelayMetrics {
    deliveries: Family<OutcomeLabels, Counter>,
    lag: Family<TargetLabel, Histogram, fn() -> Histogram>,
    backlog: Family<TargetLabel, Gauge>,
    oldest: Family<TargetLabel, Gauge<f64, AtomicU64>>,
}

impl RelayMetrics {
    /// Registers the families, every target and outcome starting at zero.
    pub fn register(r: &mut Registry) -> Self {
        let m = Self {
            deliveries: Family::default(),
            lag: Family::new_with_constructor(lag_histogram),
            backlog: Family::default(),
            oldest: Family::default(),
        };
        r.register(
            "messaging_relay_deliveries",
            "Webhook relay attempts to the bot by outcome: delivered, retried or expired",
            m.deliveries.clone(),
        );
        r.register_with_unit(
            "messaging_relay_lag",
            "Webhook receipt to the bot's 2xx, per relayed webhook",
            Unit::Seconds,
            m.lag.clone(),
        );
        r.register(
            "messaging_relay_backlog",
            "Webhooks waiting to be relayed to the bot",
            m.backlog.clone(),
        );
        r.register_with_unit(
            "messaging_relay_oldest",
            "Age of the oldest webhook waiting to be relayed (0 when none waits)",
            Unit::Seconds,
            m.oldest.clone(),
        );
        for t in Target::ALL {
            let target = t.as_str();
            for o in RelayOutcome::ALL {
                let outcome = o.as_str();
                let _ = m
                    .deliveries
                    .get_or_create(&OutcomeLabels { target, outcome });
            }
            let _ = m.lag.get_or_create(&TargetLabel { target });
            let _ = m.backlog.get_or_create(&TargetLabel { target });
            let _ = m.oldest.get_or_create(&TargetLabel { target });
        }
        m
    }

    pub fn count(&self, target: Target, outcome: RelayOutcome, n: u64) {
        let labels = OutcomeLabels {
            target: target.as_str(),
            outcome: outcome.as_str(),
        };
        self.deliveries.get_or_create(&labels).inc_by(n);
    }

    pub fn observe_lag(&self, target: Target, seconds: f64) {
        let labels = TargetLabel {
            target: target.as_str(),
        };
        self.lag.get_or_create(&labels).observe(seconds.max(0.0));
    }

    /// `waiting` webhooks, the oldest `oldest_seconds` old.
    pub fn set_backlog(&self, target: Target, waiting: i64, oldest_seconds: f64) {
        let labels = TargetLabel {
            target: target.as_str(),
        };
        self.backlog.get_or_create(&labels).set(waiting);
        self.oldest
            .get_or_create(&labels)
            .set(oldest_seconds.max(0.0));
    }
}
