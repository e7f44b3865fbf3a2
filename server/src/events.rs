//! The in-process hub of delivery events. Every committed log entry is published here in cursor
//! order, by the one task that commits them ([`crate::commit`]) or, when several nodes share the
//! database, by the log follower ([`crate::notifications`]); watch streams subscribe.
//!
//! The hub is a broadcast ring buffer: publishing never waits for a watcher, and each watcher reads at
//! its own pace from a bounded window. A watcher that falls more than the window behind loses the
//! oldest events and is told how many (see `service::watch`), so a slow consumer can never slow
//! deliveries or other watchers.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::LoggedEvent;

/// Where the hub's events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This process is the only writer: whoever commits an entry publishes it.
    Committer,
    /// Several nodes write one database: only the log follower publishes, reading the shared log, so
    /// that every node's entries arrive in one cursor order ([`crate::notifications`]).
    SharedLog,
}

/// Publishes delivery events to any number of watchers.
#[derive(Debug, Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Arc<LoggedEvent>>,
    source: Source,
}

impl EventHub {
    /// A hub whose watchers may each fall up to `window` events behind.
    pub fn new(window: usize, source: Source) -> Self {
        let (sender, _) = broadcast::channel(window.max(1));
        EventHub { sender, source }
    }

    /// Publishes entries this node just committed, unless the shared log is the source.
    pub fn publish_committed(&self, events: impl IntoIterator<Item = LoggedEvent>) {
        if self.source == Source::Committer {
            self.publish(events);
        }
    }

    /// Publishes events; they must be in cursor order, after everything published before. Costs
    /// nothing when nobody watches.
    pub fn publish(&self, events: impl IntoIterator<Item = LoggedEvent>) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        for event in events {
            // An error only means that the last watcher just went away.
            let _ = self.sender.send(Arc::new(event));
        }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LoggedEvent>> {
        self.sender.subscribe()
    }
}
