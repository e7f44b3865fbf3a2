//! One step of SQLite's per-subscription attempts index (`subscription_attempts`), kept behind the
//! log. A step is read on a reader connection and written on the writer, so that the writer, which
//! every group commit waits for, is held only for the inserts: scanning a step's range of the log
//! (payloads and all) and sorting it was most of a step's time.
//!
//! The read is two statements, and need not be one snapshot: every entry up to the newest cursor the
//! first one sees is committed (the only writer's cursors grow), log entries never change once
//! written, and only retention deletes them. A purge committed between a step's read and its write
//! makes the step start over, so the index never gains an entry for a log entry that is gone.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use sqlx::SqliteConnection;

use super::{SqliteStore, begin_write};
use crate::store::StoreError;

/// Most log cursors one step covers; bounds how long a step holds the writer.
const STEP: i64 = 4096;

/// The attempts of a range of the log, read on a reader, to be indexed in one transaction.
#[derive(Debug)]
pub(super) struct Step {
    /// Log deletions the store had seen before the read.
    purges: u64,
    /// The index covers the log up to here.
    indexed_through: i64,
    /// This step covers the log up to here.
    through: i64,
    /// The newest log entry when read.
    newest: i64,
    /// `(cursor, key, subscription id)`; the id only for a subscription that has no key yet.
    attempts: Vec<(i64, Option<i64>, Option<String>)>,
}

/// Reads the next step from a reader; `None` when the index has caught up with the log.
pub(super) async fn read_step(store: &SqliteStore) -> Result<Option<Step>, StoreError> {
    let purges = store.log_purges.load(Ordering::Acquire);
    let (indexed_through, newest): (i64, i64) = sqlx::query_as(
        "SELECT indexed_through, coalesce((SELECT max(cursor) FROM delivery_log), 0) \
         FROM subscription_attempts_progress",
    )
    .fetch_one(&store.reader)
    .await?;
    let through = newest.min(indexed_through + STEP);
    if through <= indexed_through {
        return Ok(None);
    }
    // LEFT JOIN keeps the log's cursor range as the outer loop.
    let attempts = sqlx::query_as(
        "SELECT l.cursor, k.key, CASE WHEN k.key IS NULL THEN l.subscription_id END \
         FROM delivery_log AS l LEFT JOIN subscription_keys AS k USING (subscription_id) \
         WHERE l.cursor > ?1 AND l.cursor <= ?2 AND l.kind = 2",
    )
    .bind(indexed_through)
    .bind(through)
    .fetch_all(&store.reader)
    .await?;
    Ok(Some(Step {
        purges,
        indexed_through,
        through,
        newest,
        attempts,
    }))
}

/// Writes a step read by [`read_step`]; returns whether more is left to index (also when the step
/// has to start over).
pub(super) async fn write_step(store: &SqliteStore, step: Step) -> Result<bool, StoreError> {
    let mut writer = store.writer.lock().await?;
    // Purges commit while holding the writer, so none can slip in after this check.
    if store.log_purges.load(Ordering::Acquire) != step.purges {
        return Ok(true);
    }
    let mut tx = begin_write(&mut writer).await?;
    let progress: i64 =
        sqlx::query_scalar("SELECT indexed_through FROM subscription_attempts_progress")
            .fetch_one(&mut *tx)
            .await?;
    if progress != step.indexed_through {
        return Ok(true);
    }
    let entries = keyed_entries(&mut tx, step.attempts).await?;
    // In (key, cursor) order, so each page of the index is visited once per step, however many of the
    // step's attempts land on it. OR IGNORE: a step repeated after a crash finds its rows there.
    sqlx::query(
        "INSERT OR IGNORE INTO subscription_attempts (subscription_key, cursor) \
         SELECT value ->> 0, value ->> 1 FROM json_each(?1)",
    )
    .bind(serde_json::to_string(&entries).expect("pairs of numbers always serialize"))
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE subscription_attempts_progress SET indexed_through = ?")
        .bind(step.through)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(step.through < step.newest)
}

/// The index entries `(key, cursor)` of a step's attempts, sorted. Subscriptions seen for the first
/// time get their key here, so that creating one costs nothing extra; OR IGNORE: a subscription keeps
/// the key it has.
async fn keyed_entries(
    tx: &mut SqliteConnection,
    attempts: Vec<(i64, Option<i64>, Option<String>)>,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut unkeyed: Vec<&str> = attempts
        .iter()
        .filter_map(|(_, _, subscription)| subscription.as_deref())
        .collect();
    let mut keys = HashMap::new();
    if !unkeyed.is_empty() {
        unkeyed.sort_unstable();
        unkeyed.dedup();
        let unkeyed = serde_json::to_string(&unkeyed).expect("strings always serialize");
        sqlx::query(
            "INSERT OR IGNORE INTO subscription_keys (subscription_id) SELECT value FROM json_each(?1)",
        )
        .bind(&unkeyed)
        .execute(&mut *tx)
        .await?;
        let given: Vec<(String, i64)> = sqlx::query_as(
            "SELECT subscription_id, key FROM subscription_keys \
             WHERE subscription_id IN (SELECT value FROM json_each(?1))",
        )
        .bind(&unkeyed)
        .fetch_all(&mut *tx)
        .await?;
        keys.extend(given);
    }
    let mut entries = Vec::with_capacity(attempts.len());
    for (cursor, key, subscription) in attempts {
        let key = match key {
            Some(key) => key,
            None => subscription
                .and_then(|subscription| keys.get(&subscription).copied())
                .ok_or_else(|| {
                    StoreError::Corrupt("an attempt's subscription has no key".into())
                })?,
        };
        entries.push((key, cursor));
    }
    entries.sort_unstable();
    Ok(entries)
}
