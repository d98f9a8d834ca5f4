mod malloc;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use messaging_exporter::clock::SystemClock;
use messaging_exporter::{app, telemetry, App, Config};

fn main() -> ExitCode {
    malloc::tune();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the Tokio runtime starts");
    runtime.block_on(start())
}

async fn start() -> ExitCode {
    let config = Config::parse();
    telemetry::init(config.log_format);
    if let Err(msg) = config.check() {
        tracing::error!("{msg}");
        eprintln!("messaging-exporter: {msg}");
        return ExitCode::from(2);
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = ?e, "messaging-exporter failed");
            eprintln!("messaging-exporter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let app = App::new(config, Arc::new(SystemClock)).await?;
    app.serve(listener, app::shutdown_signal()).await
}
