//! One step of SQLite's per-subscription attempts index (`subscription_attempts`), kept behind the
//! log. A step's attempts are gathered without the writer, which every group commit waits for, and
//! the writer is held only to insert them.
//!
//! Most steps read nothing: the attempts this process logged since it opened the file are kept in
//! memory ([`RecentAttempts`]) until they are indexed. The log is read back, on a reader connection,
//! only for what that does not cover: attempts logged before the process started, and those after
//! anything that leaves the buffer in doubt (a write that failed or was abandoned). Reading the log
//! back cost a reader about 15 ms of CPU per step at half load, in one burst, on pages that only the
//! writer had in its cache.
//!
//! That read is two statements, and need not be one snapshot: every entry up to the newest cursor
//! the first one sees is committed (the only writer's cursors grow), log entries never change once
//! written, and only retention deletes them. A purge committed between a step's gathering and its
//! write makes the step start over from the log, so the index never gains an entry for a log entry
//! that is gone.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};

use sqlx::SqliteConnection;

use super::{SqliteStore, begin_write};
use crate::domain::{EventKind, SubscriptionId};
use crate::store::{LoggedEvent, StoreError};

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
    /// Read back from the log rather than taken from [`RecentAttempts`].
    from_log: bool,
}

/// Reads the next step from a reader; `None` when the index has caught up with the log.
pub(super) async fn read_step(store: &SqliteStore) -> Result<Option<Step>, StoreError> {
    let purges = store.log_purges.load(Ordering::Acquire);
    let indexed_through: i64 =
        sqlx::query_scalar("SELECT indexed_through FROM subscription_attempts_progress")
            .fetch_one(&store.reader)
            .await?;
    if let Some(step) = store.recent_attempts.step(purges, indexed_through) {
        return Ok((step.through > indexed_through).then_some(step));
    }
    let newest: i64 = sqlx::query_scalar("SELECT coalesce(max(cursor), 0) FROM delivery_log")
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
        from_log: true,
    }))
}

/// Writes a step read by [`read_step`]; returns whether more is left to index (also when the step
/// has to start over).
pub(super) async fn write_step(store: &SqliteStore, step: Step) -> Result<bool, StoreError> {
    let mut writer = store.writer.lock().await?;
    // Purges commit while holding the writer, so none can slip in after this check. The buffer may
    // hold attempts whose log entries the purge took (only when indexing lags behind retention):
    // the log, read back, knows.
    if store.log_purges.load(Ordering::Acquire) != step.purges {
        if !step.from_log {
            store.recent_attempts.forget();
        }
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
    let entries = keyed_entries(&mut tx, &store.recent_attempts, step.attempts).await?;
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
    // Still holding the writer, so no write logs anything between this and the commit.
    let newest: Option<i64> = if store.recent_attempts.in_doubt() {
        // An empty log (all of it purged): new cursors come after any ever given, so 0 will do.
        sqlx::query_scalar("SELECT coalesce(max(cursor), 0) FROM delivery_log")
            .fetch_one(&mut *tx)
            .await?
    } else {
        None
    };
    tx.commit().await?;
    store.recent_attempts.indexed(step.through, newest);
    Ok(step.through < step.newest)
}

/// The index entries `(key, cursor)` of a step's attempts, sorted. Subscriptions seen for the first
/// time get their key here, so that creating one costs nothing extra; OR IGNORE: a subscription keeps
/// the key it has.
async fn keyed_entries(
    tx: &mut SqliteConnection,
    recent: &RecentAttempts,
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
        recent.keyed(&given);
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

/// Attempts logged by this process and not indexed yet, so that an index step takes them from memory
/// instead of reading the log back. Every write that logs entries holds the writer and reports them
/// here before it lets go, through [`RecentAttempts::logging`]; a write that fails or is abandoned
/// leaves the buffer in doubt, and steps read the log until one of them has caught up and set it
/// going again.
#[derive(Debug)]
pub(super) struct RecentAttempts(Mutex<Recent>);

#[derive(Debug, Default)]
struct Recent {
    /// Every attempt logged after this cursor is in `attempts`; `None` while in doubt.
    complete_after: Option<i64>,
    /// The newest log entry of any kind reported.
    newest: i64,
    /// `(cursor, subscription)` in cursor order.
    attempts: VecDeque<(i64, SubscriptionId)>,
    /// Each subscription's index key, once known; keys never change.
    keys: HashMap<SubscriptionId, i64>,
}

/// Attempts held at most; beyond this indexing has fallen far behind (it keeps failing), and the log
/// will have to be read back anyway.
const MOST_RECENT_ATTEMPTS: usize = 1 << 18;

impl RecentAttempts {
    /// A buffer complete from the log's newest entry `newest` on.
    pub(super) fn after(newest: i64) -> Self {
        RecentAttempts(Mutex::new(Recent {
            complete_after: Some(newest),
            newest,
            ..Recent::default()
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Recent> {
        // Nothing here can panic half-way through a change.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a write that may log entries; unless told what it logged, the buffer is in doubt.
    pub(super) fn logging(&self) -> Logging<'_> {
        Logging(Some(self))
    }

    /// Leaves the buffer in doubt.
    pub(super) fn forget(&self) {
        let mut recent = self.lock();
        recent.complete_after = None;
        recent.attempts = VecDeque::new();
    }

    pub(super) fn in_doubt(&self) -> bool {
        self.lock().complete_after.is_none()
    }

    /// The next step after `indexed_through`, when the buffer covers it.
    fn step(&self, purges: u64, indexed_through: i64) -> Option<Step> {
        let recent = self.lock();
        if recent.complete_after? > indexed_through {
            return None;
        }
        let through = recent.newest.min(indexed_through + STEP);
        let attempts = recent
            .attempts
            .iter()
            .skip_while(|(cursor, _)| *cursor <= indexed_through)
            .take_while(|(cursor, _)| *cursor <= through)
            .map(
                |(cursor, subscription)| match recent.keys.get(subscription) {
                    Some(key) => (*cursor, Some(*key), None),
                    None => (*cursor, None, Some(subscription.as_str().to_owned())),
                },
            )
            .collect();
        Some(Step {
            purges,
            indexed_through,
            through,
            newest: recent.newest,
            attempts,
            from_log: false,
        })
    }

    fn keyed(&self, given: &[(String, i64)]) {
        let mut recent = self.lock();
        for (subscription, key) in given {
            if let Ok(subscription) = SubscriptionId::parse(subscription) {
                recent.keys.insert(subscription, *key);
            }
        }
    }

    /// The index now covers the log up to `through`. `newest`, read while holding the writer, sets a
    /// buffer in doubt going again from there.
    fn indexed(&self, through: i64, newest: Option<i64>) {
        let mut recent = self.lock();
        while recent
            .attempts
            .front()
            .is_some_and(|(cursor, _)| *cursor <= through)
        {
            recent.attempts.pop_front();
        }
        if let (None, Some(newest)) = (recent.complete_after, newest) {
            recent.complete_after = Some(newest);
            recent.newest = newest;
        }
    }
}

/// A write in progress that may log entries (see [`RecentAttempts::logging`]).
#[must_use]
pub(super) struct Logging<'a>(Option<&'a RecentAttempts>);

impl Logging<'_> {
    /// The write committed these log entries, in cursor order.
    pub(super) fn logged<'e>(mut self, entries: impl IntoIterator<Item = &'e LoggedEvent>) {
        let Some(buffer) = self.0.take() else { return };
        let mut recent = buffer.lock();
        if recent.complete_after.is_none() {
            return;
        }
        // The only writer's cursors grow and a write reports its entries in cursor order, so each
        // attempt comes after everything held; anything else leaves the buffer in doubt.
        let mut in_order = true;
        for entry in entries {
            recent.newest = recent.newest.max(entry.cursor);
            if entry.kind == EventKind::Attempt {
                in_order &= recent
                    .attempts
                    .back()
                    .is_none_or(|(last, _)| *last < entry.cursor);
                recent
                    .attempts
                    .push_back((entry.cursor, entry.subscription_id.clone()));
            }
        }
        if !in_order || recent.attempts.len() > MOST_RECENT_ATTEMPTS {
            recent.complete_after = None;
            recent.attempts = VecDeque::new();
        }
    }
}

impl Drop for Logging<'_> {
    /// A write that failed or was abandoned may have logged entries or not.
    fn drop(&mut self) {
        if let Some(buffer) = self.0.take() {
            buffer.forget();
        }
    }
}
