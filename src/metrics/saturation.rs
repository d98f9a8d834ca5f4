//! How full the exporter's fixed-size resources are: places under
//! `--max-concurrent-requests` and database pool connections, each beside its cap so
//! that a dashboard or an alert can take the ratio.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolStateLabels {
    pub pool: &'static str,
    pub state: &'static str,
}

#[derive(Clone, Default)]
pub(super) struct Saturation {
    in_flight: Gauge,
    max_in_flight: Gauge,
    db_connections: Family<PoolStateLabels, Gauge>,
    db_max_connections: Family<PoolLabels, Gauge>,
}

impl Saturation {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "messaging_exporter_requests_in_flight",
            "Requests holding a place under --max-concurrent-requests (health, readiness and scrapes take none)",
            self.in_flight.clone(),
        );
        r.register(
            "messaging_exporter_max_concurrent_requests",
            "Places for requests handled at once (--max-concurrent-requests); past it requests get 503",
            self.max_in_flight.clone(),
        );
        r.register(
            "messaging_exporter_db_connections",
            "Open database connections by pool and state (in_use or idle), read at each scrape",
            self.db_connections.clone(),
        );
        r.register(
            "messaging_exporter_db_max_connections",
            "Connections each database pool may open",
            self.db_max_connections.clone(),
        );
    }
}

/// A database pool's connections at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    pub pool: &'static str,
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

/// The places of `--max-concurrent-requests` as the exposition shows them.
#[derive(Clone)]
pub struct RequestPlaces {
    in_flight: Gauge,
}

impl RequestPlaces {
    /// Counts a request as in flight until the returned guard is dropped.
    pub fn enter(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }
}

/// One request holding a place.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// The in-flight gauge for a cap of `max` places (which the exposition shows beside it).
    pub fn request_places(&self, max: usize) -> RequestPlaces {
        let saturation = &self.saturation;
        saturation
            .max_in_flight
            .set(i64::try_from(max).unwrap_or(i64::MAX));
        RequestPlaces {
            in_flight: saturation.in_flight.clone(),
        }
    }

    /// Records the pools' connections, read just before a scrape is encoded.
    pub fn set_db_pools(&self, pools: &[PoolUsage]) {
        let saturation = &self.saturation;
        for p in pools {
            for (state, n) in [("in_use", p.in_use), ("idle", p.idle)] {
                let labels = PoolStateLabels {
                    pool: p.pool,
                    state,
                };
                saturation
                    .db_connections
                    .get_or_create(&labels)
                    .set(i64::from(n));
            }
            saturation
                .db_max_connections
                .get_or_create(&PoolLabels { pool: p.pool })
                .set(i64::from(p.max));
        }
    }
}
