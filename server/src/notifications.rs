//! Keeping a node in step with the others that share its database (PostgreSQL): wakes the dispatcher
//! when another node queues due work, drops cached subscriptions that another node changed, and
//! follows the shared delivery log so that watchers on this node see every node's deliveries.
//!
//! The log follower publishes entries to the local hub in cursor order, reading the log after the last
//! cursor it published; the store guarantees cursors become visible in order, so nothing is skipped.
//! After a lost notification connection everything is caught up: due work is claimed, the whole cache
//! is dropped and the log is read from where the follower stopped.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use crate::cache::SubscriptionCache;
use crate::delivery::worker::Wakeup;
use crate::events::EventHub;
use crate::store::{EventFilter, Notification, Store, StoreError};

/// Log entries read per follower query.
const FOLLOW_PAGE: u32 = 1000;

/// What the notifications act on.
#[derive(Debug)]
pub struct Follower {
    /// The shared store.
    pub store: Arc<dyn Store>,
    /// This node's cache.
    pub cache: SubscriptionCache,
    /// This node's dispatcher wake-up.
    pub wakeup: Arc<Wakeup>,
    /// This node's event hub.
    pub hub: EventHub,
}

impl Follower {
    /// Handles notifications until `stop` is cancelled or the stream ends.
    pub async fn run(
        self,
        mut notifications: BoxStream<'static, Notification>,
        stop: CancellationToken,
    ) {
        let mut published = match self.store.latest_cursor().await {
            Ok(cursor) => cursor,
            Err(error) => {
                tracing::warn!(error = %error, "could not read the log position; following from the start");
                0
            }
        };
        loop {
            let notification = tokio::select! {
                () = stop.cancelled() => break,
                notification = notifications.next() => match notification {
                    Some(notification) => notification,
                    None => break,
                },
            };
            match notification {
                Notification::DueWork => self.wakeup.now(),
                Notification::SubscriptionChanged(id) => self.cache.invalidate(&id).await,
                Notification::LogAppended => published = self.publish_after(published).await,
                Notification::Reconnected => {
                    self.wakeup.now();
                    self.cache.invalidate_all();
                    published = self.publish_after(published).await;
                }
            }
        }
    }

    /// Publishes every log entry after `cursor`; returns the last cursor published.
    async fn publish_after(&self, mut cursor: i64) -> i64 {
        loop {
            match self.read_page(cursor).await {
                Ok(page) => {
                    let full = page.len() == FOLLOW_PAGE as usize;
                    if let Some(last) = page.last() {
                        cursor = last.cursor;
                    }
                    self.hub.publish(page);
                    if !full {
                        return cursor;
                    }
                }
                Err(error) => {
                    // The next notification (or reconnection) tries again from the same cursor.
                    tracing::warn!(error = %error, "could not read the delivery log");
                    return cursor;
                }
            }
        }
    }

    async fn read_page(&self, after: i64) -> Result<Vec<crate::store::LoggedEvent>, StoreError> {
        self.store
            .events_after(after, &EventFilter::default(), FOLLOW_PAGE)
            .await
    }
}
