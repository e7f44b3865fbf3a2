//! Keeps the per-subscription index of attempts up to date behind the log. SQLite indexes a
//! subscription's attempts in sorted bulk instead of on every commit (see its store), and listings
//! read what is not indexed yet from the log itself; this loop keeps that unindexed tail short. Each
//! step is bounded, so it holds the writer only briefly between group commits; steps follow each
//! other until the index has caught up, then the loop rests.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Rest between catch-ups: about this much of the log is read from the log itself by a listing.
const INTERVAL: Duration = Duration::from_millis(250);

/// Runs until `stop` is cancelled.
pub async fn run(store: Arc<dyn Store>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(INTERVAL) => {}
        }
        while !stop.is_cancelled() {
            let started = std::time::Instant::now();
            let more = store.index_attempts().await;
            tracing::trace!(
                elapsed_us = started.elapsed().as_micros() as u64,
                "attempts index step"
            );
            match more {
                // Let the group commits that waited for the writer go first.
                Ok(true) => tokio::task::yield_now().await,
                Ok(false) => break,
                Err(error) => {
                    tracing::warn!(error = %error, "indexing attempts failed; retrying at the next interval");
                    break;
                }
            }
        }
    }
}
