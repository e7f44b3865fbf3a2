//! The embedded SQLite backend: one file, WAL mode, one writer connection and a pool of readers.
//!
//! SQLite allows one writer at a time. Every write goes through the single writer connection and
//! starts with `BEGIN IMMEDIATE`, which takes the write lock up front, so a transaction never
//! fails half-way with `SQLITE_BUSY`; readers never block the writer in WAL mode. One file is served by
//! one `whd` process, so this node's clock is the database's clock.

mod attempt_index;
mod batch;
mod checkpoint;
mod wal;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Sqlite};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::reads;
use super::rows::{self, CLAIM_COLUMNS, EVENT_COLUMNS, impl_row_ext};
use super::{
    ClaimedTask, DeliveryRecord, EventFilter, LeaseRequest, LoggedEvent, Millis, OpenOptions,
    PurgeCounts, Store, StoreError, SubscriptionCursor, SubscriptionRecord, WriteBatch,
    WriteOutcome, duration_millis, encode_event_types, now_millis,
};
use crate::domain::{AttemptOutcome, DeliveryId, DeliveryStatus, EventKind, SubscriptionId};

impl_row_ext!(SqliteRow);

/// A claimed delivery's payload, from its `Queued` log entry (kind 1), which retention keeps while the
/// delivery is pending ([`PURGEABLE_LOG_ENTRY`]).
const CLAIM_PAYLOAD: &str = "(SELECT q.payload FROM delivery_log AS q \
     WHERE q.delivery_id = deliveries.id AND q.kind = 1) AS payload";

/// Which log entries (`l`) retention may remove once they are old: all but the `Queued` entry of a
/// delivery still pending, which holds the payload its next attempt sends.
const PURGEABLE_LOG_ENTRY: &str = "NOT (l.kind = 1 AND EXISTS \
     (SELECT 1 FROM deliveries AS d WHERE d.id = l.delivery_id AND d.status = 1))";

/// Log pages not yet copied into the database at which the checkpointer copies them: a quarter of
/// SQLite's own threshold. Beside the writer, a checkpoint no longer stalls a commit, but its burst
/// of writes to the database file still delays the log's sync behind it; under load the checkpointer
/// now copies at each of its looks (see its `POLL`) instead of every other one. Measured with
/// `whctl bench` at half rate against 1,000 pages: about 40% fewer 100 ms windows with a p99 over 5 ms
/// (fewer in each of 17 pairs) for the same CPU per webhook; at full rate the same rate.
const CHECKPOINT_PAGES: u64 = 250;

/// The writer's own checkpoint comes at this many times the checkpointer's threshold (see
/// [`checkpoint`]): at 4,000 pages, as before the threshold came down.
const BACKSTOP_CHECKPOINTS: u64 = 16;

/// How long a statement waits for the write lock before giving up; generous because the only
/// contender is this process's own writer connection, and a checkpoint can take a moment.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The one writer connection, owned rather than pooled. A pool tests a connection given back to it
/// in a task of its own, with a call into the database's thread, before the next caller may have it;
/// the group commit gives the connection back hundreds of times a second, and under load each next
/// commit waited for that (measured: 0.25 ms at the median and 2 ms at the 90th percentile, a quarter
/// of the commit cycle). A lock hands it over at once. `None` once closed.
#[derive(Debug, Clone)]
struct Writer {
    connection: Arc<Mutex<Option<SqliteConnection>>>,
    /// A group commit is running, or was abandoned half-way. Its text opens its transaction itself,
    /// so, unlike a sqlx transaction, nothing queues a rollback when its caller goes away.
    batch_open: Arc<AtomicBool>,
}

impl Writer {
    fn new(connection: SqliteConnection) -> Self {
        Writer {
            connection: Arc::new(Mutex::new(Some(connection))),
            batch_open: Arc::default(),
        }
    }

    /// Waits for the writer connection. A sqlx transaction that was abandoned half-way (its caller
    /// went away) has already queued its rollback ahead of anything the next holder sends; an
    /// abandoned group commit is rolled back here.
    async fn lock(&self) -> Result<MappedMutexGuard<'_, SqliteConnection>, StoreError> {
        let guard = tokio::time::timeout(BUSY_TIMEOUT, self.connection.lock())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?;
        let mut connection = MutexGuard::try_map(guard, Option::as_mut)
            .map_err(|_| StoreError::from(sqlx::Error::PoolClosed))?;
        if self.batch_open.load(Ordering::Acquire) {
            // Fails harmlessly when the batch got as far as its COMMIT.
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *connection).await;
            self.batch_open.store(false, Ordering::Release);
        }
        Ok(connection)
    }

    async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.close().await;
        }
    }
}

/// Starts a write transaction on the writer connection, taking the write lock up front (see the
/// module's comment).
async fn begin_write(
    writer: &mut SqliteConnection,
) -> Result<sqlx::Transaction<'_, Sqlite>, StoreError> {
    Ok(writer.begin_with("BEGIN IMMEDIATE").await?)
}

/// A store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    /// Retention purges that deleted log entries so far: the attempts index reads the log outside
    /// the writer and starts a step over when a purge came in between.
    log_purges: Arc<AtomicU64>,
    /// Attempts logged since the file was opened and not indexed yet.
    recent_attempts: Arc<attempt_index::RecentAttempts>,
    checkpointer: checkpoint::Checkpointer,
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the file named by `database_url`: a path, or
    /// `sqlite://path`, `sqlite:path`.
    pub async fn open(database_url: &str, options: &OpenOptions) -> Result<Self, StoreError> {
        let base = if database_url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(database_url)?
        } else {
            SqliteConnectOptions::new().filename(database_url)
        };
        let synchronous = if options.sqlite_full_sync {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        };
        let base = base
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(BUSY_TIMEOUT)
            // 32 MiB of page cache per connection (the default is 2 MiB): the hot part of the
            // queue and its indexes stay in memory.
            .pragma("cache_size", "-32768")
            .pragma(
                "wal_autocheckpoint",
                (BACKSTOP_CHECKPOINTS * CHECKPOINT_PAGES).to_string(),
            )
            .foreign_keys(false);

        // Group commits come in about a hundred shapes (rows queued × attempts recorded, each padded
        // to a power of two); all of them stay prepared.
        let mut writer = base
            .clone()
            .create_if_missing(true)
            .statement_cache_capacity(512)
            .connect()
            .await?;
        sqlx::migrate!("src/store/sqlite/migrations")
            .run(&mut writer)
            .await?;
        wal::preallocate(&mut writer, base.get_filename()).await?;
        let newest_logged: i64 =
            sqlx::query_scalar("SELECT coalesce(max(cursor), 0) FROM delivery_log")
                .fetch_one(&mut writer)
                .await?;
        let writer = Writer::new(writer);
        // The readers live in this process and cannot go stale: checking one before each use would cost
        // a call into its worker thread every time.
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(BUSY_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(base.clone().read_only(true))
            .await?;
        let checkpointer =
            checkpoint::Checkpointer::spawn(base.connect().await?, base.get_filename());
        Ok(SqliteStore {
            writer,
            reader,
            log_purges: Arc::default(),
            recent_attempts: Arc::new(attempt_index::RecentAttempts::after(newest_logged)),
            checkpointer,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_subscription(
        &self,
        subscription: &SubscriptionRecord,
    ) -> Result<(), StoreError> {
        let mut writer = self.writer.lock().await?;
        let mut tx = begin_write(&mut writer).await?;
        sqlx::query(
            "INSERT INTO subscriptions (id, target_url, secret, previous_secret, previous_secret_until, event_types, \
             description, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(subscription.id.as_str())
        .bind(subscription.target_url.as_str())
        .bind(subscription.secret.as_ref().map(|secret| secret.expose()))
        .bind(subscription.previous_secret.as_ref().map(|secret| secret.expose()))
        .bind(subscription.previous_secret_until)
        .bind(encode_event_types(&subscription.event_types))
        .bind(&subscription.description)
        .bind(subscription.created_at)
        .bind(subscription.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        reads::subscription(&self.reader, id).await
    }

    async fn list_subscriptions(
        &self,
        after: Option<&SubscriptionCursor>,
        limit: u32,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        reads::subscriptions(&self.reader, after, limit).await
    }

    async fn update_subscription(
        &self,
        subscription: &SubscriptionRecord,
    ) -> Result<bool, StoreError> {
        let mut writer = self.writer.lock().await?;
        let mut tx = begin_write(&mut writer).await?;
        let updated = sqlx::query(
            "UPDATE subscriptions SET target_url = ?, secret = ?, previous_secret = ?, previous_secret_until = ?, \
             event_types = ?, description = ?, updated_at = ? WHERE id = ?",
        )
        .bind(subscription.target_url.as_str())
        .bind(subscription.secret.as_ref().map(|secret| secret.expose()))
        .bind(subscription.previous_secret.as_ref().map(|secret| secret.expose()))
        .bind(subscription.previous_secret_until)
        .bind(encode_event_types(&subscription.event_types))
        .bind(&subscription.description)
        .bind(subscription.updated_at)
        .bind(subscription.id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated == 1)
    }

    async fn delete_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Vec<LoggedEvent>>, StoreError> {
        let now = now_millis();
        let mut writer = self.writer.lock().await?;
        let logging = self.recent_attempts.logging();
        let mut tx = begin_write(&mut writer).await?;
        let deleted: Option<String> =
            sqlx::query_scalar("DELETE FROM subscriptions WHERE id = ? RETURNING target_url")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(target_url) = deleted else {
            logging.logged([]);
            return Ok(None);
        };
        let sql = format!(
            "INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at, \
             attempt_number, outcome, target_url, error, duration_us) \
             SELECT ?, id, subscription_id, event_type, ?, ?, attempt_count + 1, ?, ?, ?, 0 \
             FROM deliveries WHERE subscription_id = ? AND status = 1 ORDER BY id RETURNING {EVENT_COLUMNS}"
        );
        let cancelled = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(EventKind::Attempt.as_i64())
            .bind(DeliveryStatus::Failed.as_i64())
            .bind(now)
            .bind(AttemptOutcome::Failure.as_i64())
            .bind(&target_url)
            .bind(super::SUBSCRIPTION_DELETED)
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await?;
        // Bumping the lease token fences off any attempt still in flight for these rows.
        sqlx::query(
            "UPDATE deliveries SET status = ?, attempt_count = attempt_count + 1, next_attempt_at = NULL, \
             lease_owner = NULL, lease_token = lease_token + 1, finished_at = ? WHERE subscription_id = ? AND status = 1",
        )
        .bind(DeliveryStatus::Failed.as_i64())
        .bind(now)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut events = cancelled
            .iter()
            .map(rows::logged_event)
            .collect::<Result<Vec<_>, _>>()?;
        events.sort_by_key(|event| event.cursor);
        logging.logged(&events);
        Ok(Some(events))
    }

    async fn commit(&self, batch: &WriteBatch) -> Result<WriteOutcome, StoreError> {
        let mut writer = self.writer.lock().await?;
        let logging = self.recent_attempts.logging();
        self.writer.batch_open.store(true, Ordering::Release);
        // One process owns the file, so this node's clock is the database's clock.
        let outcome = batch::write(&mut writer, batch, now_millis()).await;
        // Ended either way: committed, or rolled back by its failure.
        self.writer.batch_open.store(false, Ordering::Release);
        let outcome = outcome?;
        logging.logged(
            outcome
                .queued
                .iter()
                .chain(outcome.attempts.iter().flatten()),
        );
        Ok(outcome)
    }

    async fn claim_due(
        &self,
        lease: &LeaseRequest,
        limit: u32,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        let now = now_millis();
        let mut writer = self.writer.lock().await?;
        let mut tx = begin_write(&mut writer).await?;
        let sql = format!(
            "UPDATE deliveries SET lease_owner = ?, lease_token = lease_token + 1, next_attempt_at = ? \
             WHERE id IN (SELECT id FROM deliveries WHERE status = 1 AND next_attempt_at <= ? \
             ORDER BY next_attempt_at LIMIT ?) RETURNING {CLAIM_COLUMNS}, {CLAIM_PAYLOAD}"
        );
        let claimed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease.owner.as_ref())
            .bind(now + duration_millis(lease.duration))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        claimed.iter().map(rows::claimed_task).collect()
    }

    async fn release_leases(&self, owner: Option<&str>) -> Result<u64, StoreError> {
        let mut writer = self.writer.lock().await?;
        let mut tx = begin_write(&mut writer).await?;
        let released = sqlx::query(
            "UPDATE deliveries SET lease_owner = NULL, next_attempt_at = ?1 \
             WHERE status = 1 AND lease_owner IS NOT NULL AND (?2 IS NULL OR lease_owner = ?2)",
        )
        .bind(now_millis())
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(released)
    }

    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        reads::delivery(&self.reader, id).await
    }

    async fn delivery_attempts(&self, id: &DeliveryId) -> Result<Vec<LoggedEvent>, StoreError> {
        reads::delivery_attempts(&self.reader, id).await
    }

    async fn subscription_attempts(
        &self,
        id: &SubscriptionId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        // The newest attempts may not be indexed yet: those after the index's progress come from the
        // log itself (a short range of cursors), the rest through the index. One statement, so both
        // parts see the same snapshot.
        let sql = format!(
            "WITH progress AS (SELECT indexed_through FROM subscription_attempts_progress), \
             tail AS (SELECT cursor FROM delivery_log WHERE cursor > (SELECT indexed_through FROM progress) \
               AND cursor < ?2 AND kind = 2 AND subscription_id = ?1 ORDER BY cursor DESC LIMIT ?3), \
             indexed AS (SELECT cursor FROM subscription_attempts WHERE subscription_key = \
               (SELECT key FROM subscription_keys WHERE subscription_id = ?1) \
               AND cursor <= (SELECT indexed_through FROM progress) AND cursor < ?2 \
               ORDER BY cursor DESC LIMIT ?3) \
             SELECT {EVENT_COLUMNS} FROM delivery_log WHERE cursor IN \
               (SELECT cursor FROM tail UNION ALL SELECT cursor FROM indexed) \
             ORDER BY cursor DESC LIMIT ?3"
        );
        let found = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        found.iter().map(rows::logged_event).collect()
    }

    async fn index_attempts(&self) -> Result<bool, StoreError> {
        match attempt_index::read_step(self).await? {
            Some(step) => attempt_index::write_step(self, step).await,
            None => Ok(false),
        }
    }

    async fn events_after(
        &self,
        after: i64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        reads::events_after(&self.reader, after, filter, limit).await
    }

    async fn latest_cursor(&self) -> Result<i64, StoreError> {
        reads::latest_cursor(&self.reader).await
    }

    async fn purge(&self, before: Millis, limit: u32) -> Result<PurgeCounts, StoreError> {
        let mut writer = self.writer.lock().await?;
        let mut tx = begin_write(&mut writer).await?;
        // The oldest window of the log, by cursor, minus anything in it that is still recent: cursors
        // grow with time, so this finds old entries without an index on their age. Entries that must
        // stay are skipped, so that they never fill the window. The attempts among them leave the
        // per-subscription index first, in the same transaction.
        let purged = format!(
            "logged_at < ?1 AND cursor IN \
             (SELECT cursor FROM delivery_log AS l WHERE {PURGEABLE_LOG_ENTRY} ORDER BY cursor LIMIT ?2)"
        );
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM subscription_attempts WHERE (subscription_key, cursor) IN \
             (SELECT key, cursor FROM delivery_log CROSS JOIN subscription_keys USING (subscription_id) \
              WHERE kind = 2 AND {purged})"
        )))
        .bind(before)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?;
        let log_entries = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM delivery_log WHERE {purged}"
        )))
        .bind(before)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Delivery ids begin with their creation time, so old rows are a primary-key range.
        let deliveries = sqlx::query(
            "DELETE FROM deliveries WHERE id IN \
             (SELECT id FROM deliveries WHERE id < ? AND status <> 1 ORDER BY id LIMIT ?)",
        )
        .bind(DeliveryId::first_at(before))
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        // Still holding the writer, so an index step that read the log before this commit sees the
        // count change before it can write.
        if log_entries > 0 {
            self.log_purges.fetch_add(1, Ordering::Release);
        }
        Ok(PurgeCounts {
            log_entries,
            deliveries,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    fn single_process(&self) -> bool {
        true
    }

    async fn notifications(
        &self,
    ) -> Result<Option<futures::stream::BoxStream<'static, super::Notification>>, StoreError> {
        Ok(None)
    }

    async fn close(&self) {
        self.checkpointer.close().await;
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// A store in a fresh file of a temporary folder, which lives as long as the returned guard.
#[cfg(test)]
pub(crate) async fn temporary_store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("a temporary folder can be created");
    let path = dir.path().join("whd.db");
    let store = SqliteStore::open(
        path.to_str().expect("temporary paths are UTF-8"),
        &OpenOptions::default(),
    )
    .await
    .expect("a fresh file opens");
    (dir, store)
}

/// Webhooks and attempt results for the store's tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::SqliteStore;
    use crate::domain::{AttemptOutcome, DeliveryId, SubscriptionId};
    use crate::store::{
        AttemptRecord, FirstAttempt, LeaseRequest, LoggedEvent, NewDelivery, Store, WriteBatch,
    };

    /// A webhook queued already leased to `node-a`.
    pub(crate) fn leased_webhook(subscription_id: &SubscriptionId) -> NewDelivery {
        NewDelivery {
            id: DeliveryId::generate(),
            subscription_id: subscription_id.clone(),
            event_type: None,
            payload: Bytes::from_static(br#"{"n":1}"#),
            start: FirstAttempt::Leased(LeaseRequest {
                owner: Arc::from("node-a"),
                duration: Duration::from_secs(60),
            }),
        }
    }

    /// Commits a batch of webhooks; returns their `Queued` log entries.
    pub(crate) async fn queue(store: &SqliteStore, webhooks: Vec<NewDelivery>) -> Vec<LoggedEvent> {
        let batch = WriteBatch {
            enqueue: webhooks,
            ..WriteBatch::default()
        };
        store.commit(&batch).await.unwrap().queued
    }

    /// Commits a batch of attempt results; returns what each came to.
    pub(crate) async fn record(
        store: &SqliteStore,
        attempts: Vec<AttemptRecord>,
    ) -> Vec<Option<LoggedEvent>> {
        let batch = WriteBatch {
            attempts,
            ..WriteBatch::default()
        };
        store.commit(&batch).await.unwrap().attempts
    }

    /// A successful first attempt of `delivery` under the claim's `lease_token`.
    pub(crate) fn success(delivery: &NewDelivery, lease_token: i64) -> AttemptRecord {
        AttemptRecord {
            delivery_id: delivery.id.clone(),
            subscription_id: delivery.subscription_id.clone(),
            event_type: None,
            lease_token,
            attempt_number: 1,
            target_url: "http://127.0.0.1:9/hook".into(),
            attempt_time: crate::store::now_millis(),
            outcome: AttemptOutcome::Success,
            http_status: Some(200),
            error: None,
            duration: Duration::from_millis(3),
            node_id: Arc::from("node-a"),
            retry_after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A new database at `path`, migrated up to schema `version` only.
    async fn database_at_schema(path: &str, version: i64) -> SqlitePool {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        sqlx::migrate!("src/store/sqlite/migrations")
            .run_to(version, &pool)
            .await
            .unwrap();
        pool
    }

    /// A database written by the first schema: payloads in `deliveries`.
    async fn database_of_the_first_schema(path: &str) {
        let pool = database_at_schema(path, 1).await;
        sqlx::raw_sql(
            "INSERT INTO deliveries (id, subscription_id, payload, status, attempt_count, next_attempt_at, created_at, finished_at) VALUES
               ('msg_00000000000000000000000000000001', 'sub_a', CAST('{\"n\":1}' AS BLOB), 1, 1, 0, 1000, NULL),
               ('msg_00000000000000000000000000000002', 'sub_a', CAST('{\"n\":2}' AS BLOB), 1, 1, 0, 2000, NULL),
               ('msg_00000000000000000000000000000003', 'sub_a', CAST('{\"n\":3}' AS BLOB), 2, 1, NULL, 3000, 3100);
             -- The first and third still have their queued entries; retention took the second's.
             INSERT INTO delivery_log (kind, delivery_id, subscription_id, status, logged_at) VALUES
               (1, 'msg_00000000000000000000000000000001', 'sub_a', 1, 1000),
               (1, 'msg_00000000000000000000000000000003', 'sub_a', 1, 3000),
               (2, 'msg_00000000000000000000000000000003', 'sub_a', 2, 3100);",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }

    #[tokio::test]
    async fn moving_payloads_into_the_log_keeps_every_pending_delivery_deliverable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whd.db");
        let path = path.to_str().unwrap();
        database_of_the_first_schema(path).await;

        let store = SqliteStore::open(path, &OpenOptions::default())
            .await
            .unwrap();
        let lease = LeaseRequest {
            owner: Arc::from("node-a"),
            duration: Duration::from_secs(60),
        };
        let mut claimed = store.claim_due(&lease, 10).await.unwrap();
        claimed.sort_by(|a, b| a.delivery_id.as_str().cmp(b.delivery_id.as_str()));
        let payloads: Vec<&[u8]> = claimed.iter().map(|task| &task.payload[..]).collect();
        assert_eq!(
            payloads,
            [&br#"{"n":1}"#[..], &br#"{"n":2}"#[..]],
            "both pending deliveries are claimed with their payloads"
        );
        let log = store
            .events_after(0, &EventFilter::default(), 100)
            .await
            .unwrap();
        let queued: Vec<&str> = log
            .iter()
            .filter(|entry| entry.kind == EventKind::Queued)
            .map(|entry| entry.delivery_id.as_str())
            .collect();
        assert_eq!(
            queued.len(),
            3,
            "the second delivery got its queued entry back: {queued:?}"
        );
        let finished = store
            .get_delivery(&DeliveryId::parse("msg_00000000000000000000000000000003").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(finished.status, DeliveryStatus::Delivered);
        let indexed: Vec<(String, i64)> = sqlx::query_as(
            "SELECT subscription_id, cursor FROM subscription_attempts \
             JOIN subscription_keys ON key = subscription_key",
        )
        .fetch_all(&store.reader)
        .await
        .unwrap();
        assert_eq!(
            indexed,
            [("sub_a".to_owned(), 3)],
            "the attempt was indexed"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn keying_the_attempts_index_by_number_keeps_each_subscriptions_listing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whd.db");
        let path = path.to_str().unwrap();
        let (first, second) = (SubscriptionId::generate(), SubscriptionId::generate());
        // A database of the third schema, its attempts indexed by subscription id: the first
        // subscription has attempts at cursors 1 and 3, the second at 2.
        let pool = database_at_schema(path, 3).await;
        for subscription in [&first, &second, &first] {
            sqlx::query(
                "INSERT INTO delivery_log (kind, delivery_id, subscription_id, status, logged_at) \
                 VALUES (2, ?, ?, 2, 1000)",
            )
            .bind(DeliveryId::generate().as_str())
            .bind(subscription.as_str())
            .execute(&pool)
            .await
            .unwrap();
        }
        sqlx::raw_sql(
            "INSERT INTO subscription_attempts (subscription_id, cursor) \
             SELECT subscription_id, cursor FROM delivery_log;
             UPDATE subscription_attempts_progress SET indexed_through = 3;",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = SqliteStore::open(path, &OpenOptions::default())
            .await
            .unwrap();
        let cursors = |events: Vec<LoggedEvent>| -> Vec<i64> {
            events.iter().map(|event| event.cursor).collect()
        };
        let listed = store.subscription_attempts(&first, None, 10).await.unwrap();
        assert_eq!(cursors(listed), [3, 1], "the first subscription's attempts");
        let listed = store
            .subscription_attempts(&second, None, 10)
            .await
            .unwrap();
        assert_eq!(cursors(listed), [2], "the second subscription's attempt");
        assert!(
            !store.index_attempts().await.unwrap(),
            "the migrated index is caught up"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn retention_keeps_the_queued_entry_of_a_pending_delivery_and_purges_the_rest() {
        let (_dir, store) = temporary_store().await;
        let subscription_id = SubscriptionId::generate();
        let webhook = || crate::store::NewDelivery {
            id: DeliveryId::generate(),
            subscription_id: subscription_id.clone(),
            event_type: None,
            payload: bytes::Bytes::from_static(br#"{"kept":true}"#),
            start: crate::store::FirstAttempt::DueAfter(Duration::ZERO),
        };
        // Many old pending deliveries ahead of a finished one: the purge must get past them.
        let pending: Vec<_> = (0..5).map(|_| webhook()).collect();
        store
            .commit(&WriteBatch {
                enqueue: pending.clone(),
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        let finished = webhook();
        store
            .commit(&WriteBatch {
                enqueue: vec![finished.clone()],
                ..WriteBatch::default()
            })
            .await
            .unwrap();
        sqlx::query("UPDATE deliveries SET status = 2, finished_at = 0 WHERE id = ?")
            .bind(finished.id.as_str())
            .execute(&mut *store.writer.lock().await.unwrap())
            .await
            .unwrap();

        // Purge everything logged up to now, two rows at a time.
        let cutoff = now_millis() + 1;
        let mut purged = 0;
        for _ in 0..10 {
            purged += store.purge(cutoff, 2).await.unwrap().log_entries;
        }
        assert_eq!(purged, 1, "only the finished delivery's entry goes");
        let lease = LeaseRequest {
            owner: Arc::from("node-a"),
            duration: Duration::from_secs(60),
        };
        let claimed = store.claim_due(&lease, 10).await.unwrap();
        assert_eq!(claimed.len(), 5);
        assert!(
            claimed
                .iter()
                .all(|task| &task.payload[..] == br#"{"kept":true}"#)
        );
        store.close().await;
    }

    /// Queues one webhook per subscription in `subscriptions` and records a successful attempt for each.
    /// A new subscription with three attempts logged, one per group commit; returns its id.
    async fn attempted_three_times(store: &SqliteStore) -> SubscriptionId {
        let subscription = SubscriptionId::generate();
        for _ in 0..3 {
            attempted_once(store, &[&subscription]).await;
        }
        subscription
    }

    async fn attempted_once(store: &SqliteStore, subscriptions: &[&SubscriptionId]) {
        let webhooks: Vec<_> = subscriptions
            .iter()
            .map(|subscription| fixtures::leased_webhook(subscription))
            .collect();
        fixtures::queue(store, webhooks.clone()).await;
        let attempts = webhooks
            .iter()
            .map(|webhook| fixtures::success(webhook, 1))
            .collect();
        fixtures::record(store, attempts).await;
    }

    /// All of a subscription's attempts, paged `page` at a time, newest first.
    async fn every_attempt(
        store: &SqliteStore,
        subscription: &SubscriptionId,
        page: u32,
    ) -> Vec<i64> {
        let mut cursors = Vec::new();
        let mut before = None;
        loop {
            let found = store
                .subscription_attempts(subscription, before, page)
                .await
                .unwrap();
            assert!(
                found
                    .iter()
                    .all(|entry| entry.subscription_id == *subscription)
            );
            cursors.extend(found.iter().map(|entry| entry.cursor));
            match found.last() {
                Some(last) if found.len() == page as usize => before = Some(last.cursor),
                _ => return cursors,
            }
        }
    }

    #[tokio::test]
    async fn a_subscriptions_attempts_are_listed_whole_and_in_order_whether_indexed_yet_or_not() {
        let (_dir, store) = temporary_store().await;
        let (mine, other) = (SubscriptionId::generate(), SubscriptionId::generate());
        for _ in 0..5 {
            attempted_once(&store, &[&mine, &other, &mine]).await;
        }
        assert!(
            every_attempt(&store, &mine, 3).await.len() == 10,
            "nothing indexed yet: all from the log"
        );

        // Index part of the log, then add more: the listing spans index and unindexed tail.
        while store.index_attempts().await.unwrap() {}
        for _ in 0..4 {
            attempted_once(&store, &[&other, &mine]).await;
        }
        let listed = every_attempt(&store, &mine, 3).await;
        assert_eq!(listed.len(), 14, "{listed:?}");
        assert!(
            listed.windows(2).all(|pair| pair[0] > pair[1]),
            "newest first, no duplicates: {listed:?}"
        );
        let all_at_once = every_attempt(&store, &mine, 100).await;
        assert_eq!(listed, all_at_once, "paging does not change the answer");

        while store.index_attempts().await.unwrap() {}
        assert!(!store.index_attempts().await.unwrap(), "caught up");
        assert_eq!(
            every_attempt(&store, &mine, 3).await,
            all_at_once,
            "all indexed now"
        );
        let indexed = index_entries(&store).await;
        assert_eq!(indexed, 14 + 9, "one index entry per attempt");

        // Retention takes index entries with their log entries.
        let mut purged = 0;
        for _ in 0..20 {
            purged += store.purge(now_millis() + 1, 50).await.unwrap().log_entries;
        }
        assert_eq!(purged, 2 * (14 + 9));
        assert!(every_attempt(&store, &mine, 3).await.is_empty());
        let left = index_entries(&store).await;
        assert_eq!(left, 0);
        store.close().await;
    }

    #[tokio::test]
    async fn an_index_step_read_before_a_purge_starts_over_and_indexes_nothing_that_is_gone() {
        let (_dir, store) = temporary_store().await;
        let subscription = attempted_three_times(&store).await;
        let step = attempt_index::read_step(&store)
            .await
            .unwrap()
            .expect("three attempts to index");

        // Retention takes the whole log (every delivery has finished) before the step is written.
        let mut purged = 0;
        for _ in 0..3 {
            purged += store.purge(now_millis() + 1, 50).await.unwrap().log_entries;
        }
        assert_eq!(purged, 6, "three queued entries and three attempts");
        assert!(
            attempt_index::write_step(&store, step).await.unwrap(),
            "the step starts over"
        );
        while store.index_attempts().await.unwrap() {}
        let indexed = index_entries(&store).await;
        assert_eq!(indexed, 0, "no index entry for a log entry that is gone");

        // The next attempt is indexed as usual.
        attempted_once(&store, &[&subscription]).await;
        while store.index_attempts().await.unwrap() {}
        let indexed = index_entries(&store).await;
        assert_eq!(indexed, 1);
        assert_eq!(every_attempt(&store, &subscription, 10).await.len(), 1);
        store.close().await;
    }

    #[tokio::test]
    async fn the_log_is_copied_into_the_database_beside_the_writer_long_before_its_own_checkpoint()
    {
        let (dir, store) = temporary_store().await;
        let subscription_id = SubscriptionId::generate();
        // 8 KiB payloads: about two pages each, so six batches of a hundred write some 1,200 pages
        // of log, past the checkpointer's threshold and short of the writer's.
        let payload = bytes::Bytes::from(format!("\"{}\"", "x".repeat(8 * 1024)));
        for _ in 0..6 {
            let webhooks = (0..100)
                .map(|_| crate::store::NewDelivery {
                    payload: payload.clone(),
                    ..fixtures::leased_webhook(&subscription_id)
                })
                .collect();
            fixtures::queue(&store, webhooks).await;
        }

        let shm = std::fs::File::open(dir.path().join("whd.db-shm")).unwrap();
        let mut progress = checkpoint::log_progress(&shm).unwrap();
        for _ in 0..200 {
            if progress.1 > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            progress = checkpoint::log_progress(&shm).unwrap();
        }
        let (frames, copied) = progress;
        assert!(
            u64::from(frames) > CHECKPOINT_PAGES,
            "the log holds {frames} frames"
        );
        assert!(
            u64::from(frames) < BACKSTOP_CHECKPOINTS * CHECKPOINT_PAGES,
            "the writer has not checkpointed: the log holds {frames} frames"
        );
        assert!(
            u64::from(copied) >= CHECKPOINT_PAGES,
            "the checkpointer copied {copied} of {frames} frames"
        );
        let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!(queued, 600);
        store.close().await;
    }

    async fn index_entries(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM subscription_attempts")
            .fetch_one(&store.reader)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn attempts_this_process_logged_are_indexed_from_memory_without_reading_the_log_back() {
        let (_dir, store) = temporary_store().await;
        attempted_three_times(&store).await;
        // Behind the store's back, so that only the buffer still knows the attempts.
        let mut writer = store.writer.lock().await.unwrap();
        sqlx::query("DELETE FROM delivery_log")
            .execute(&mut *writer)
            .await
            .unwrap();
        drop(writer);

        while store.index_attempts().await.unwrap() {}
        assert_eq!(index_entries(&store).await, 3, "indexed from memory");
        store.close().await;
    }

    #[tokio::test]
    async fn attempts_logged_before_the_file_was_opened_are_read_back_from_the_log() {
        let (dir, store) = temporary_store().await;
        let subscription = attempted_three_times(&store).await;
        store.close().await;

        let store = SqliteStore::open(
            dir.path().join("whd.db").to_str().unwrap(),
            &OpenOptions::default(),
        )
        .await
        .unwrap();
        attempted_once(&store, &[&subscription]).await;
        while store.index_attempts().await.unwrap() {}
        assert_eq!(
            index_entries(&store).await,
            4,
            "three from the log, one from memory"
        );
        assert_eq!(every_attempt(&store, &subscription, 2).await.len(), 4);
        store.close().await;
    }

    #[tokio::test]
    async fn after_an_abandoned_write_the_log_is_read_back_until_indexing_catches_up() {
        let (_dir, store) = temporary_store().await;
        let subscription = SubscriptionId::generate();
        attempted_once(&store, &[&subscription]).await;

        // A commit abandoned while the database works on it may or may not have logged its entries.
        let batch = WriteBatch {
            enqueue: vec![fixtures::leased_webhook(&subscription)],
            ..WriteBatch::default()
        };
        assert!(futures::FutureExt::now_or_never(store.commit(&batch)).is_none());
        assert!(store.recent_attempts.in_doubt());

        attempted_once(&store, &[&subscription]).await;
        while store.index_attempts().await.unwrap() {}
        assert!(
            !store.recent_attempts.in_doubt(),
            "caught up, the buffer goes again"
        );
        attempted_once(&store, &[&subscription]).await;
        while store.index_attempts().await.unwrap() {}
        assert_eq!(index_entries(&store).await, 3);
        assert_eq!(every_attempt(&store, &subscription, 10).await.len(), 3);
        store.close().await;
    }
}
