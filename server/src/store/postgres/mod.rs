//! The PostgreSQL backend, for several `whd` nodes sharing one database as their queue.
//!
//! - Nodes claim due tasks with `FOR UPDATE SKIP LOCKED`, so concurrent claims never block on or
//!   return the same rows; a claim sets the lease expiry from the database's clock.
//! - Every transaction that appends to `delivery_log` first takes one transaction-level advisory lock.
//!   Cursors are therefore assigned and committed in the same order on every node, and a reader that
//!   has seen cursor N can never later find a committed entry below N: watch resume and the log
//!   follower rely on this. Group commit keeps the lock's cost to one acquisition per batch.
//! - Changes are announced with `NOTIFY` (delivered at commit): `whd_due` when unleased work is
//!   queued, `whd_log` when the log grows, `whd_subscription` with the id of a changed subscription.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};

use super::rows::{self, CLAIM_COLUMNS, EVENT_COLUMNS, impl_row_ext};
use super::{
    ClaimedTask, DeliveryRecord, EventFilter, LeaseRequest, LoggedEvent, Millis, Notification,
    OpenOptions, PurgeCounts, Store, StoreError, SubscriptionCursor, SubscriptionRecord,
    WriteBatch, WriteOutcome, duration_millis, encode_event_types,
};
use super::{batch, reads};
use crate::domain::{AttemptOutcome, DeliveryId, DeliveryStatus, EventKind, SubscriptionId};

impl_row_ext!(PgRow);

/// The database's clock in milliseconds since the epoch. `clock_timestamp()` rather than `now()`,
/// which would be the start of the transaction. It is volatile, so a comparison against it is not an
/// index condition: where it bounds an index scan, wrap it as `(SELECT NOW_MS)`, evaluated once.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Class of the advisory lock that orders appends to `delivery_log`; the lock's second key is the
/// schema's hash, so that separate schemas in one database (tests, tenants) do not serialise each other.
const LOG_LOCK_CLASS: i32 = 0x0077_6864;

/// Rows per multi-row statement (a power of two), well under PostgreSQL's 65,535 bind parameters.
const INSERT_CHUNK: usize = 512;

/// Tries of a group commit that PostgreSQL aborts over a conflict with another transaction.
const COMMIT_TRIES: u32 = 3;

/// How long a request waits for a free connection before the database counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest any statement may run; a stuck query must not hold a connection forever.
const STATEMENT_TIMEOUT: &str = "30s";

const CHANNEL_DUE: &str = "whd_due";
const CHANNEL_LOG: &str = "whd_log";
const CHANNEL_SUBSCRIPTION: &str = "whd_subscription";

/// A store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

async fn listen(pool: &PgPool) -> Result<PgListener, StoreError> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([CHANNEL_DUE, CHANNEL_LOG, CHANNEL_SUBSCRIPTION])
        .await?;
    Ok(listener)
}

/// Listens again, retrying every second until the database answers.
async fn reconnect(pool: &PgPool) -> PgListener {
    loop {
        match listen(pool).await {
            Ok(listener) => return listener,
            Err(error) => {
                tracing::debug!(error = %error, "database still unreachable for notifications");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl PostgresStore {
    /// One try at a group commit: the log lock, the batch's statements and the notifications, in one
    /// transaction.
    async fn commit_once(&self, batch: &WriteBatch) -> Result<WriteOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        if batch.is_empty() {
            return Ok(WriteOutcome::default());
        }
        Self::lock_log(&mut tx).await?;
        let outcome = batch::write_postgres(&mut tx, batch, INSERT_CHUNK).await?;

        // Tasks due later are claimed when due by the node that queued them, whose dispatcher knows.
        let queued_due_now = batch
            .enqueue
            .iter()
            .any(|delivery| delivery.start.due_now());
        let retries = batch
            .attempts
            .iter()
            .any(|attempt| attempt.retry_after.is_some());
        if queued_due_now || retries {
            Self::notify(&mut tx, CHANNEL_DUE, "").await?;
        }
        Self::notify(&mut tx, CHANNEL_LOG, "").await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Connects and migrates.
    pub async fn open(database_url: &str, options: &OpenOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(database_url)?
            .options([
                ("statement_timeout", STATEMENT_TIMEOUT),
                // A node frozen mid-transaction (holding the log lock) must not stall the others.
                ("idle_in_transaction_session_timeout", STATEMENT_TIMEOUT),
                // A group commit's statements run again and again with other rows (see
                // `store::batch`). After five runs PostgreSQL may switch a prepared statement to one
                // generic plan, which for rows joined to `deliveries` was at times several times
                // slower (mean statement time twice the median); a plan made for each run's own values
                // costs less than that. Parsing is still saved.
                ("plan_cache_mode", "force_custom_plan"),
            ])
            .application_name("whd");
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("src/store/postgres/migrations")
            .run(&pool)
            .await?;
        Ok(PostgresStore { pool })
    }

    async fn notify(
        tx: &mut sqlx::Transaction<'static, Postgres>,
        channel: &'static str,
        payload: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn lock_log(tx: &mut sqlx::Transaction<'static, Postgres>) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
            .bind(LOG_LOCK_CLASS)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert_subscription(
        &self,
        subscription: &SubscriptionRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO subscriptions (id, target_url, secret, previous_secret, previous_secret_until, \
             event_types, description, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
        // Other nodes may have cached "no such subscription" for this id.
        Self::notify(&mut tx, CHANNEL_SUBSCRIPTION, subscription.id.as_str()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        reads::subscription(&self.pool, id).await
    }

    async fn list_subscriptions(
        &self,
        after: Option<&SubscriptionCursor>,
        limit: u32,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        reads::subscriptions(&self.pool, after, limit).await
    }

    async fn update_subscription(
        &self,
        subscription: &SubscriptionRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE subscriptions SET target_url = $1, secret = $2, previous_secret = $3, \
             previous_secret_until = $4, event_types = $5, description = $6, updated_at = $7 WHERE id = $8",
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
        Self::notify(&mut tx, CHANNEL_SUBSCRIPTION, subscription.id.as_str()).await?;
        tx.commit().await?;
        Ok(updated == 1)
    }

    async fn delete_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Vec<LoggedEvent>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        Self::lock_log(&mut tx).await?;
        let deleted: Option<String> =
            sqlx::query_scalar("DELETE FROM subscriptions WHERE id = $1 RETURNING target_url")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(target_url) = deleted else {
            return Ok(None);
        };
        let sql = format!(
            "INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at, \
             attempt_number, outcome, target_url, error, duration_us) \
             SELECT $1, id, subscription_id, event_type, $2, {NOW_MS}, attempt_count + 1, $3, $4, $5, 0 \
             FROM deliveries WHERE subscription_id = $6 AND status = 1 ORDER BY id RETURNING {EVENT_COLUMNS}"
        );
        let cancelled = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(EventKind::Attempt.as_i64())
            .bind(DeliveryStatus::Failed.as_i64())
            .bind(AttemptOutcome::Failure.as_i64())
            .bind(&target_url)
            .bind(super::SUBSCRIPTION_DELETED)
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await?;
        // Bumping the lease token fences off any attempt still in flight for these rows.
        let sql = format!(
            "UPDATE deliveries SET status = $1, attempt_count = attempt_count + 1, next_attempt_at = NULL, \
             lease_owner = NULL, lease_token = lease_token + 1, finished_at = {NOW_MS} \
             WHERE subscription_id = $2 AND status = 1"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(DeliveryStatus::Failed.as_i64())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        Self::notify(&mut tx, CHANNEL_SUBSCRIPTION, id.as_str()).await?;
        if !cancelled.is_empty() {
            Self::notify(&mut tx, CHANNEL_LOG, "").await?;
        }
        tx.commit().await?;
        let mut events = cancelled
            .iter()
            .map(rows::logged_event)
            .collect::<Result<Vec<_>, _>>()?;
        events.sort_by_key(|event| event.cursor);
        Ok(Some(events))
    }

    async fn commit(&self, batch: &WriteBatch) -> Result<WriteOutcome, StoreError> {
        // A batch's writes can deadlock with another transaction on the same rows (a subscription's
        // deletion ending its pending deliveries, another node's late result): PostgreSQL then aborts
        // one of them whole. Running the batch again is safe and usually succeeds at once; only a
        // conflict that persists reaches the callers, as "unavailable, retry".
        let mut tries = 1;
        loop {
            match self.commit_once(batch).await {
                Err(error) if error.is_conflict() && tries < COMMIT_TRIES => {
                    tracing::debug!(error = %error, tries, "group commit conflicted; running it again");
                    tries += 1;
                }
                result => return result,
            }
        }
    }

    async fn claim_due(
        &self,
        lease: &LeaseRequest,
        limit: u32,
    ) -> Result<Vec<ClaimedTask>, StoreError> {
        let sql = format!(
            "UPDATE deliveries SET lease_owner = $1, lease_token = lease_token + 1, \
             next_attempt_at = {NOW_MS} + $2 \
             WHERE id IN (SELECT id FROM deliveries WHERE status = 1 AND next_attempt_at <= (SELECT {NOW_MS}) \
             ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {CLAIM_COLUMNS}, payload"
        );
        let claimed = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease.owner.as_ref())
            .bind(duration_millis(lease.duration))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        claimed.iter().map(rows::claimed_task).collect()
    }

    async fn release_leases(&self, owner: Option<&str>) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE deliveries SET lease_owner = NULL, next_attempt_at = {NOW_MS} \
             WHERE status = 1 AND lease_owner IS NOT NULL AND ($1::text IS NULL OR lease_owner = $1)"
        );
        let released = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(released)
    }

    fn single_process(&self) -> bool {
        false
    }

    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError> {
        reads::delivery(&self.pool, id).await
    }

    async fn delivery_attempts(&self, id: &DeliveryId) -> Result<Vec<LoggedEvent>, StoreError> {
        reads::delivery_attempts(&self.pool, id).await
    }

    async fn subscription_attempts(
        &self,
        id: &SubscriptionId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        reads::subscription_attempts(&self.pool, id, before, limit).await
    }

    async fn events_after(
        &self,
        after: i64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        reads::events_after(&self.pool, after, filter, limit).await
    }

    async fn latest_cursor(&self) -> Result<i64, StoreError> {
        reads::latest_cursor(&self.pool).await
    }

    async fn purge(&self, before: Millis, limit: u32) -> Result<PurgeCounts, StoreError> {
        // SKIP LOCKED: nodes purging at the same time take different rows instead of waiting.
        // The oldest window of the log, by cursor, minus anything in it that is still recent: cursors
        // grow with time, so this finds old entries without an index on their age.
        let log_entries = sqlx::query(
            "DELETE FROM delivery_log WHERE logged_at < $1 AND cursor IN \
             (SELECT cursor FROM delivery_log ORDER BY cursor LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?
        .rows_affected();
        // Delivery ids begin with their creation time, so old rows are a primary-key range.
        let deliveries = sqlx::query(
            "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
             WHERE id < $1 AND status <> 1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(DeliveryId::first_at(before))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(PurgeCounts {
            log_entries,
            deliveries,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn notifications(&self) -> Result<Option<BoxStream<'static, Notification>>, StoreError> {
        let listener = listen(&self.pool).await?;
        let stream = futures::stream::unfold(
            (listener, self.pool.clone()),
            |(mut listener, pool)| async move {
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            let parsed = match notification.channel() {
                                CHANNEL_DUE => Notification::DueWork,
                                CHANNEL_LOG => Notification::LogAppended,
                                CHANNEL_SUBSCRIPTION => Notification::SubscriptionChanged(
                                    SubscriptionId::from_trusted(notification.payload().to_owned()),
                                ),
                                _ => continue,
                            };
                            return Some((parsed, (listener, pool)));
                        }
                        Ok(None) | Err(_) => {
                            tracing::warn!("lost the notification connection; reconnecting");
                            // Listen again before reporting, so that the catch-up the node does on
                            // `Reconnected` cannot miss anything announced after it.
                            listener = reconnect(&pool).await;
                            return Some((Notification::Reconnected, (listener, pool)));
                        }
                    }
                }
            },
        );
        Ok(Some(stream.boxed()))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
