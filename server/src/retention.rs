//! The retention purge: periodically deletes log entries and finished deliveries older than the
//! retention period, in bounded batches so that the writer is never held for long. Deletes are
//! idempotent, so several nodes purging one database cannot conflict. Pending deliveries are never
//! touched.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{PurgeCounts, Store, StoreError, duration_millis, now_millis};

/// Most batches in one run, so that a huge backlog is worked off over several runs instead of one
/// long burst.
const MAX_BATCHES_PER_RUN: u32 = 100;

/// Settings of the purge.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Age beyond which entries go.
    pub retention: Duration,
    /// Time between runs.
    pub interval: Duration,
    /// Rows per delete.
    pub batch: u32,
}

/// Runs the purge every `interval` until `stop` is cancelled.
pub async fn run(store: Arc<dyn Store>, settings: RetentionSettings, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(settings.interval) => {}
        }
        match purge_once(&*store, &settings).await {
            Ok(counts) if counts != PurgeCounts::default() => {
                tracing::info!(
                    log_entries = counts.log_entries,
                    deliveries = counts.deliveries,
                    "retention purge"
                )
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = %error, "retention purge failed; retrying at the next interval")
            }
        }
    }
}

/// One run: batches until nothing older than the retention is left, or the run's cap.
pub async fn purge_once(
    store: &dyn Store,
    settings: &RetentionSettings,
) -> Result<PurgeCounts, StoreError> {
    let before = now_millis() - duration_millis(settings.retention);
    let mut total = PurgeCounts::default();
    for _ in 0..MAX_BATCHES_PER_RUN {
        let counts = store.purge(before, settings.batch).await?;
        total.log_entries += counts.log_entries;
        total.deliveries += counts.deliveries;
        if counts.log_entries < u64::from(settings.batch)
            && counts.deliveries < u64::from(settings.batch)
        {
            break;
        }
    }
    Ok(total)
}
