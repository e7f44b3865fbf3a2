//! Async Rust client for whd, the webhook delivery service.
//!
//! [`Client`] wraps the gRPC API (subscriptions, deliveries and the live delivery event stream) and the
//! HTTP ingest endpoint behind one handle with one [`Error`] type. Request and response messages are
//! the generated `whd.v1` types, re-exported as [`proto`] and, for the common ones, at the crate root.
//!
//! ```no_run
//! use whd_sdk::{Client, ClientConfig, CreateSubscriptionRequest, IngestOptions, Subscription};
//!
//! # async fn example() -> Result<(), whd_sdk::Error> {
//! // WHD_SERVER, WHD_INGEST_URL and WHD_API_TOKEN, or the local defaults.
//! let client = Client::connect(ClientConfig::from_env()).await?;
//!
//! let subscription = client
//!     .create_subscription(CreateSubscriptionRequest {
//!         subscription: Some(Subscription {
//!             target_url: "https://example.com/webhooks".into(),
//!             ..Default::default()
//!         }),
//!         // With a secret, deliveries are signed and ingest must carry an X-Hub-Signature-256
//!         // (see `IngestOptions::signature`); this example keeps it simple.
//!         generate_secret: false,
//!     })
//!     .await?;
//!
//! let options = IngestOptions { event_type: Some("order.created".into()), ..Default::default() };
//! let receipt = client.ingest(&subscription.id, r#"{"order":42}"#, options).await?;
//! if let Some(delivery_id) = receipt.delivery_id {
//!     let delivery = client.get_delivery(delivery_id).await?;
//!     println!("{:?} after {} attempts", delivery.status(), delivery.attempt_count);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Every call returns [`Error::Status`] for gRPC errors (see [`Error::code`]), so callers can branch on
//! `NOT_FOUND`, `INVALID_ARGUMENT` and so on.

#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod ingest;

pub use client::{Client, DeliveryEventStream};
pub use config::{
    ClientConfig, DEFAULT_INGEST_URL, DEFAULT_SERVER, ENV_API_TOKEN, ENV_INGEST_URL, ENV_SERVER,
};
pub use error::Error;
pub use ingest::{IngestOptions, IngestReceipt};

/// The generated `whd.v1` API: every message and enum, and the raw tonic clients.
pub use whd_proto::v1 as proto;

pub use proto::{
    AttemptOutcome, CreateSubscriptionRequest, Delivery, DeliveryAttempt, DeliveryEvent,
    DeliveryEventKind, DeliveryStatus, ListDeliveryAttemptsRequest, ListDeliveryAttemptsResponse,
    ListSubscriptionsRequest, ListSubscriptionsResponse, Subscription, SubscriptionSecret,
    UpdateSubscriptionRequest, WatchDeliveriesRequest,
};

/// Protobuf well-known types used in messages (`Timestamp`, `Duration`, `FieldMask`), with proto3-JSON
/// serde impls.
pub use pbjson_types;

/// The gRPC status code carried by [`Error::Status`].
pub use tonic::Code;
