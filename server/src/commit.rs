//! Group commit of queue writes. Ingests, attempt results and postponed tasks from every task are funnelled through one
//! committer, which writes whatever has queued up meanwhile in one transaction (up to the configured
//! batch size) and answers each caller only after that commit. One fsync then serves a whole batch,
//! and SQLite's single writer is never contended.
//!
//! The committer also publishes the committed log entries to the [`EventHub`]. Because it is the only
//! writer of log entries on this node (deletions go through the store but publish after their own
//! commit), watchers see events in cursor order.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::EventHub;
use crate::store::{
    AttemptRecord, LoggedEvent, NewDelivery, Postponement, Store, StoreError, WriteBatch,
};

/// Writes waiting for a commit; beyond this, callers wait (backpressure on ingest).
const QUEUE_CAPACITY: usize = 16_384;

enum Write {
    Enqueue(
        NewDelivery,
        oneshot::Sender<Result<LoggedEvent, StoreError>>,
    ),
    Record(
        AttemptRecord,
        oneshot::Sender<Result<Option<LoggedEvent>, StoreError>>,
    ),
    Postpone(Postponement, oneshot::Sender<Result<(), StoreError>>),
}

/// Handle to the committer task.
#[derive(Debug, Clone)]
pub struct Committer {
    sender: mpsc::Sender<Write>,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::Enqueue(delivery, _) => f.debug_tuple("Enqueue").field(&delivery.id).finish(),
            Write::Record(attempt, _) => {
                f.debug_tuple("Record").field(&attempt.delivery_id).finish()
            }
            Write::Postpone(postponement, _) => f
                .debug_tuple("Postpone")
                .field(&postponement.delivery_id)
                .finish(),
        }
    }
}

/// Why a write was not committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The store failed; nothing in the batch was committed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The committer has stopped (shutdown).
    #[error("the server is shutting down")]
    Closed,
}

impl Committer {
    /// Starts the committer on `tracker`. It stops once `stop` is cancelled and every write already
    /// queued has been committed.
    pub fn spawn(
        store: std::sync::Arc<dyn Store>,
        hub: EventHub,
        max_batch: usize,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        tracker.spawn(run(receiver, store, hub, max_batch.max(1), stop));
        Committer { sender }
    }

    /// Queues a webhook; returns its `Queued` log entry once committed.
    pub async fn enqueue(&self, delivery: NewDelivery) -> Result<LoggedEvent, CommitError> {
        self.write(|reply| Write::Enqueue(delivery, reply)).await
    }

    /// Records an attempt; returns its log entry once committed, or `None` when the lease was lost.
    pub async fn record(&self, attempt: AttemptRecord) -> Result<Option<LoggedEvent>, CommitError> {
        self.write(|reply| Write::Record(attempt, reply)).await
    }

    /// Hands a leased task back to the queue unattempted; returns once committed. A task whose lease
    /// was lost meanwhile is left as it is.
    pub async fn postpone(&self, postponement: Postponement) -> Result<(), CommitError> {
        self.write(|reply| Write::Postpone(postponement, reply))
            .await
    }

    /// Queues the write `make` builds around its reply channel and waits for its commit.
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<T, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(make(reply))
            .await
            .map_err(|_| CommitError::Closed)?;
        Ok(answer.await.map_err(|_| CommitError::Closed)??)
    }
}

async fn run(
    mut receiver: mpsc::Receiver<Write>,
    store: std::sync::Arc<dyn Store>,
    hub: EventHub,
    max_batch: usize,
    stop: CancellationToken,
) {
    let mut pending = Vec::with_capacity(max_batch);
    loop {
        let first = tokio::select! {
            write = receiver.recv() => write,
            // Refuse new writes but keep going until the queue is empty.
            () = stop.cancelled(), if !receiver.is_closed() => { receiver.close(); continue; }
        };
        let Some(first) = first else { break };
        pending.push(first);
        // The first write woke this task, often while other requests' handlers were already
        // runnable on this thread with writes of their own. Letting them run first puts those writes
        // in this batch rather than the next: at partial load that is fewer, larger commits, each
        // paying one sync and one round trip to SQLite's thread (measured at half rate with
        // `whctl bench`: 5 µs less CPU per webhook and fewer slow 100 ms windows, for about 0.15 ms
        // more at the median).
        tokio::task::yield_now().await;
        while pending.len() < max_batch {
            match receiver.try_recv() {
                Ok(write) => pending.push(write),
                Err(_) => break,
            }
        }
        commit_batch(&*store, &hub, &mut pending).await;
    }
    tracing::debug!("committer stopped");
}

async fn commit_batch(store: &dyn Store, hub: &EventHub, pending: &mut Vec<Write>) {
    let mut batch = WriteBatch::default();
    let mut enqueue_replies = Vec::new();
    let mut record_replies = Vec::new();
    let mut postpone_replies = Vec::new();
    for write in pending.drain(..) {
        match write {
            Write::Enqueue(delivery, reply) => {
                batch.enqueue.push(delivery);
                enqueue_replies.push(reply);
            }
            Write::Record(attempt, reply) => {
                batch.attempts.push(attempt);
                record_replies.push(reply);
            }
            Write::Postpone(postponement, reply) => {
                batch.postponed.push(postponement);
                postpone_replies.push(reply);
            }
        }
    }

    let started = std::time::Instant::now();
    let result = store.commit(&batch).await;
    tracing::trace!(
        queued = batch.enqueue.len(),
        attempts = batch.attempts.len(),
        postponed = batch.postponed.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "batch committed"
    );
    match result {
        Ok(outcome) => {
            let mut committed: Vec<LoggedEvent> = outcome
                .queued
                .iter()
                .cloned()
                .chain(outcome.attempts.iter().flatten().cloned())
                .collect();
            committed.sort_by_key(|event| event.cursor);
            hub.publish_committed(committed);
            for (reply, event) in enqueue_replies.into_iter().zip(outcome.queued) {
                let _ = reply.send(Ok(event));
            }
            for (reply, event) in record_replies.into_iter().zip(outcome.attempts) {
                let _ = reply.send(Ok(event));
            }
            for reply in postpone_replies {
                let _ = reply.send(Ok(()));
            }
        }
        Err(error) => {
            tracing::error!(error = %error, cause = ?std::error::Error::source(&error), writes = batch.enqueue.len() + batch.attempts.len() + batch.postponed.len(), "commit failed");
            for reply in enqueue_replies {
                let _ = reply.send(Err(error.clone()));
            }
            for reply in record_replies {
                let _ = reply.send(Err(error.clone()));
            }
            for reply in postpone_replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}
