//! The operations of whd, shared by the gRPC API, the HTTP gateway and the dashboard's JSON API.
//! Each takes already-decoded input, applies the business rules and returns domain records; the
//! protocol layers only translate. Store errors become [`ServiceError`]s here, logged once.

mod deliveries;
mod inbound_signature;
mod ingest;
#[cfg(test)]
mod ingest_properties;
mod subscriptions;
mod test_webhook;
mod watch;

use std::sync::Arc;
use std::time::Duration;

pub use deliveries::{AttemptPage, DeliveryDetails};
pub use ingest::{IngestReceipt, IngestRequest};
pub use subscriptions::{
    CreatedSubscription, NewSubscription, SubscriptionPage, SubscriptionPatch,
};
pub use watch::WatchItem;

use crate::cache::SubscriptionCache;
use crate::commit::{CommitError, Committer};
use crate::delivery::ssrf::TargetPolicy;
use crate::delivery::worker::{HotQueue, Wakeup};
use crate::error::ServiceError;
use crate::events::EventHub;
use crate::store::{LeaseRequest, Store, StoreError};

/// Settings the operations need.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Largest accepted ingest body.
    pub max_body_size: u64,
    /// How long a replaced secret keeps signing after a rotation.
    pub secret_rotation_grace: Duration,
    /// The lease this node takes on tasks it attempts from memory.
    pub lease: LeaseRequest,
    /// Which addresses deliveries may reach; literal-IP targets are checked against it on write.
    pub target_policy: Arc<TargetPolicy>,
    /// Cancelled during shutdown to end every watch stream, which would otherwise keep their
    /// connections (and the server's drain) open forever.
    pub watch_stop: tokio_util::sync::CancellationToken,
}

/// The operations, cheap to clone.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    cache: SubscriptionCache,
    committer: Committer,
    hub: EventHub,
    hot: HotQueue,
    wakeup: Arc<Wakeup>,
    settings: ServiceSettings,
}

impl Service {
    /// Wires the operations to their dependencies.
    pub fn new(
        store: Arc<dyn Store>,
        cache: SubscriptionCache,
        committer: Committer,
        hub: EventHub,
        hot: HotQueue,
        wakeup: Arc<Wakeup>,
        settings: ServiceSettings,
    ) -> Self {
        Service {
            inner: Arc::new(Inner {
                store,
                cache,
                committer,
                hub,
                hot,
                wakeup,
                settings,
            }),
        }
    }

    /// The configured body limit.
    pub fn max_body_size(&self) -> u64 {
        self.inner.settings.max_body_size
    }

    /// Whether the database answers.
    pub async fn check_database(&self) -> Result<(), ServiceError> {
        self.inner.store.ping().await.map_err(store_error)
    }
}

/// Turns a store failure into what a client sees, logging the cause once.
pub(crate) fn store_error(error: StoreError) -> ServiceError {
    match &error {
        StoreError::Unavailable(cause) => {
            tracing::warn!(error = %error, cause = %cause, "database unavailable");
            ServiceError::unavailable()
        }
        _ => {
            tracing::error!(error = %error, cause = ?std::error::Error::source(&error), "store operation failed");
            ServiceError::internal()
        }
    }
}

fn commit_error(error: CommitError) -> ServiceError {
    match error {
        CommitError::Store(error) => store_error(error),
        CommitError::Closed => ServiceError::new(
            crate::error::ErrorCode::Unavailable,
            "the server is shutting down",
        ),
    }
}

/// Clamps a requested page size: zero or negative means `default`, anything above `max` is `max`.
pub(crate) fn page_size(requested: i32, default: u32, max: u32) -> u32 {
    match u32::try_from(requested) {
        Ok(0) | Err(_) => default,
        Ok(size) => size.min(max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_when_unset_and_clamp_when_large() {
        assert_eq!(page_size(0, 20, 1000), 20);
        assert_eq!(page_size(-5, 20, 1000), 20);
        assert_eq!(page_size(7, 20, 1000), 7);
        assert_eq!(page_size(1_000_000, 20, 1000), 1000);
    }
}
