//! whd: a webhook delivery service.
//!
//! Services hand whd a webhook over HTTP; whd acknowledges it once it is durably queued, then delivers
//! it to the subscription's target with retries, logging every attempt. Operators manage subscriptions
//! and read status over gRPC.
//!
//! # Layout
//! - [`app`]: binds ports, runs every component, drains them in order on shutdown.
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
//! - [`store`]: the `Store` trait and its SQLite backend.
//! - [`cache`]: the subscription cache.
//! - [`retention`]: the purge loop.

pub mod api;
pub mod app;
pub mod cache;
pub mod commit;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod events;
pub mod gateway;
pub mod retention;
pub mod service;
pub mod store;
pub mod telemetry;

pub use app::{App, StartError};
pub use config::Config;
