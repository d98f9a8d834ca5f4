//! messaging-exporter: provider webhooks and bot send hooks in, exactly-once Prometheus
//! metrics and a pre-send API out. Start reading at [`app::App`], then [`http`] for the
//! routes, [`providers`] for the payloads, [`ledger`] for what counts and why.

pub mod app;
pub mod background;
pub mod billing;
pub mod clock;
pub mod config;
pub mod domain;
pub mod events;
pub mod group_commit;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod openapi;
pub mod presend;
pub mod providers;
pub mod relay;
pub mod settings_cache;
pub mod store;
pub mod telemetry;

pub use app::App;
pub use config::Config;
