//! whd: a webhook delivery service.
//!
//! Services hand whd a webhook over HTTP; whd acknowledges it once it is durably queued, then delivers
//! it to the subscription's target with retries, logging every attempt. Operators manage subscriptions
//! and read status over gRPC.
//!
//! # Layout
//! - [`app`]: binds ports, runs every component, drains them in order on shutdown.
//! - [`attempt_index`]: keeps the per-subscription index of attempts up to date behind the log.
//! - [`config`]: typed configuration from defaults, `WHD_*` variables and flags.
//! - [`telemetry`]: tracing setup.
//! - [`error`]: the error-code taxonomy and its mapping to gRPC and HTTP.
//! - [`domain`]: ids, URLs, secrets, event types and statuses, validated at the edge.
//! - [`service`]: the operations, shared by the gRPC API and the HTTP gateway.
//! - [`api`]: tonic handlers, health and reflection.
//! - [`gateway`]: the hyper ingest gateway.
//! - [`delivery`]: the dispatcher, attempts, retry policy, signatures and the pooled client.
//! - [`commit`]: group commit of ingests and attempt results.
//! - [`events`]: the broadcast hub behind watch streams.
//! - [`store`]: the `Store` trait and its SQLite and PostgreSQL backends.
//! - [`cache`]: the subscription cache.
//! - [`notifications`]: keeps a node in step with other nodes sharing a PostgreSQL database.
//! - [`retention`]: the purge loop.

pub mod api;
pub mod app;
pub mod attempt_index;
pub mod cache;
pub mod commit;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod events;
pub mod gateway;
pub mod notifications;
pub mod retention;
pub mod service;
pub mod store;
pub mod telemetry;

pub use app::{App, StartError};
pub use config::Config;

use tokio_util::sync::CancellationToken;

/// The `whd` command: parses flags and environment, serves until SIGINT or SIGTERM, then drains.
pub fn main_entry() -> std::process::ExitCode {
    use clap::Parser;
    let config = Config::parse();
    telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let app = App::bind(config).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        app.run(shutdown).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "whd stopped");
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler succeeds on Unix");
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    shutdown.cancel();
}
