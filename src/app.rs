//! Wiring: connect, migrate, load settings, build the router, serve until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::background;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::http::{self, AppState, Shared};
use crate::ledger::Ledger;
use crate::metrics::{Metrics, Recorder};
use crate::presend::{Reserver, StateReader};
use crate::providers::twilio_url;
use crate::settings_cache::SettingsCache;
use crate::store::{self, Backend, Db, DbOptions};

pub struct App {
    pub state: AppState,
}

impl App {
    /// Connects to the database, runs migrations and loads settings.
    pub async fn new(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        let opts = DbOptions {
            max_connections: config.db_max_connections,
            timeout: Duration::from_millis(config.db_timeout_ms),
        };
        let db = Db::connect(&config.database_url, &opts).await?;
        db.migrate().await?;
        let settings = store::settings::load_or_init(&db, clock.now_ms())
            .await
            .context("loading settings")?;
        let settings = Arc::new(SettingsCache::new(settings));
        let grace_ms = i64::try_from(config.grace().as_millis()).unwrap_or(i64::MAX);
        let batch_parts = match db.backend() {
            // SQLite allows one writer at a time: more would only queue on its lock.
            Backend::Sqlite => 1,
            Backend::Postgres => config.db_writers,
        };
        let metrics = Arc::new(Metrics::new(config.max_label_values, config.max_series));
        let recorder = Recorder::start(metrics.clone());
        let ledger = Ledger::new(
            db.clone(),
            settings.clone(),
            clock.clone(),
            grace_ms,
            batch_parts,
            config.kept_rows as usize,
            metrics.ledger_counters(),
            recorder.clone(),
            i64::from(config.relay_max_age_hours) * 3_600_000,
        );
        metrics.set_ready(true);
        let presend_reads = StateReader::new(db.clone());
        let reserver = Reserver::new(db.clone(), settings.clone(), clock.clone());
        let state = AppState::new(Shared {
            config: Arc::new(config),
            db,
            ledger,
            recorder,
            metrics,
            presend_reads,
            reserver,
            settings,
            clock,
        });
        Ok(Self { state })
    }

    /// The routes with the request timeout and concurrency cap around them.
    pub fn router(&self) -> Router {
        let limits = self.state.config.limits();
        let places = self
            .state
            .metrics
            .request_places(limits.max_concurrent_requests);
        http::serve::with_limits(http::router(self.state.clone()), &limits, places)
    }

    /// Serves on `listener` with the background tasks until `shutdown` resolves, then
    /// drains in-flight requests and closes the pool.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        let mut tasks = background::spawn(&self.state);
        let config = &self.state.config;
        for missing in config.missing_secrets() {
            warn!("{missing} is not set");
        }
        if let (Some(_), Some(url)) = (&config.twilio_auth_token, &config.public_url) {
            let expected = twilio_url::expected_urls(url);
            info!("Twilio signatures are checked against {expected}");
        }
        info!(%addr, backend = ?self.state.db.backend(), "messaging-exporter listening on http://{addr}");
        let limits = self.state.config.limits();
        http::serve::serve(listener, self.router(), &limits, shutdown).await;
        tasks.abort_all();
        self.state.db.close().await;
        info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled: a SIGTERM that comes as soon as `/healthz` answers
/// must drain, not kill the process with the signal's default action.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        (term.ok(), int.ok())
    };
    async move {
        #[cfg(unix)]
        {
            let (mut term, mut int) = signals;
            let term = async {
                match term.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = term => {},
                () = int => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        info!("shutdown signal received; draining in-flight requests");
    }
}
