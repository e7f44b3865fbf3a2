//! Persistence: subscriptions, the delivery queue and the delivery log, behind one [`Store`] trait with
//! a SQLite and a PostgreSQL implementation.
//!
//! Invariants every backend keeps:
//! - A delivery is pending until an attempt succeeds or the last one fails; pending rows are never purged.
//! - `next_attempt_at` is when a pending delivery is due or, while a node holds it, when that node's
//!   lease expires. One index on it serves both claiming due work and recovering expired leases.
//! - `lease_token` increases on every claim. Recording an attempt requires the token and the attempt
//!   count the claimant saw (a fencing check), so a node whose lease expired cannot overwrite the work
//!   of the node that took over.
//! - Every change a watcher can see is a row in `delivery_log`, whose `cursor` increases in commit order.
//! - Timestamps are milliseconds since the Unix epoch, taken from the database's clock for leases.

mod batch;
pub mod postgres;
mod reads;
mod rows;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::domain::{
    AttemptOutcome, DeliveryId, DeliveryStatus, EventKind, EventType, SigningSecret,
    SubscriptionId, TargetUrl,
};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is shutting down; retrying later can succeed.
    #[error("database unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// Any other database failure.
    #[error("database error")]
    Database(#[source] Arc<sqlx::Error>),
    /// The schema could not be migrated.
    #[error("database migration failed")]
    Migrate(#[source] Arc<sqlx::migrate::MigrateError>),
    /// A stored value could not be read back.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let transient = match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_code(&code)),
            _ => false,
        };
        if transient {
            StoreError::Unavailable(Arc::new(error))
        } else {
            StoreError::Database(Arc::new(error))
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(error: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(Arc::new(error))
    }
}

/// SQLSTATEs of a transaction PostgreSQL aborted to resolve a conflict with another one (serialization
/// failure, deadlock): nothing of it was written, and running it again can succeed.
const CONFLICT_CODES: [&str; 2] = ["40001", "40P01"];

impl StoreError {
    /// Whether the database aborted the transaction over a conflict with another one
    /// ([`CONFLICT_CODES`]), so that running the same transaction again can succeed.
    pub fn is_conflict(&self) -> bool {
        match self {
            StoreError::Unavailable(error) | StoreError::Database(error) => matches!(
                &**error,
                sqlx::Error::Database(db)
                    if db.code().is_some_and(|code| CONFLICT_CODES.contains(&code.as_ref()))
            ),
            StoreError::Migrate(_) | StoreError::Corrupt(_) => false,
        }
    }
}

/// SQLSTATE classes and SQLite codes that mean "try again later": conflicts ([`CONFLICT_CODES`]),
/// connection exceptions (08),
/// operator intervention such as a server shutting down (57), insufficient resources (53), and SQLite's
/// BUSY/LOCKED should the busy timeout ever run out.
fn is_transient_code(code: &str) -> bool {
    CONFLICT_CODES.contains(&code)
        || code.starts_with("08")
        || code.starts_with("57")
        || code.starts_with("53")
        || code == "5"
        || code == "6"
}

/// A subscription as stored.
#[derive(Debug, Clone)]
pub struct SubscriptionRecord {
    /// Its id.
    pub id: SubscriptionId,
    /// Where deliveries go.
    pub target_url: TargetUrl,
    /// The current signing secret.
    pub secret: Option<SigningSecret>,
    /// The secret replaced by the last rotation, still signed with until `previous_secret_until`.
    pub previous_secret: Option<SigningSecret>,
    /// End of the previous secret's grace period.
    pub previous_secret_until: Option<Millis>,
    /// Event types received; empty means all.
    pub event_types: Vec<EventType>,
    /// Free text.
    pub description: String,
    /// Creation time.
    pub created_at: Millis,
    /// Last update time.
    pub updated_at: Millis,
}

/// Where a subscription listing continues: after this creation time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionCursor {
    /// Creation time of the last subscription returned.
    pub created_at: Millis,
    /// Its id.
    pub id: String,
}

/// A lease taken by a node on the tasks it is about to attempt.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// The node's name.
    pub owner: Arc<str>,
    /// How long the lease lasts.
    pub duration: Duration,
}

/// A webhook accepted at ingest.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Its id.
    pub id: DeliveryId,
    /// Its subscription.
    pub subscription_id: SubscriptionId,
    /// Its event type, when one was given.
    pub event_type: Option<EventType>,
    /// The body, delivered byte for byte.
    pub payload: Bytes,
    /// How its first attempt is to be started.
    pub start: FirstAttempt,
}

/// How a queued webhook's first attempt is started.
#[derive(Debug, Clone)]
pub enum FirstAttempt {
    /// Inserted already leased to this node, which attempts it straight from memory.
    Leased(LeaseRequest),
    /// Inserted unleased, due after this delay for whichever node claims it: at once when this node's
    /// dispatcher has no room, or at the end of the line of a subscription far behind its in-flight
    /// cap.
    DueAfter(Duration),
}

impl FirstAttempt {
    /// Unleased and due at once: any node may claim it now.
    pub fn due_now(&self) -> bool {
        matches!(self, FirstAttempt::DueAfter(delay) if delay.is_zero())
    }
}

/// A task a node holds a lease on and may attempt.
#[derive(Debug, Clone)]
pub struct ClaimedTask {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Its subscription.
    pub subscription_id: SubscriptionId,
    /// Its event type.
    pub event_type: Option<EventType>,
    /// The body.
    pub payload: Bytes,
    /// Attempts made before this one.
    pub attempts_made: u32,
    /// The fencing token of this claim.
    pub lease_token: i64,
    /// When the lease expires, on the database's clock.
    pub lease_expires_at: Millis,
}

/// The result of one attempt, to be recorded if the lease is still held.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Its subscription.
    pub subscription_id: SubscriptionId,
    /// Its event type.
    pub event_type: Option<EventType>,
    /// The claim's fencing token.
    pub lease_token: i64,
    /// 1 for the initial attempt.
    pub attempt_number: u32,
    /// Where the request went.
    pub target_url: String,
    /// When the attempt started.
    pub attempt_time: Millis,
    /// What it came to.
    pub outcome: AttemptOutcome,
    /// The response status, when a response came.
    pub http_status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// How long it took.
    pub duration: Duration,
    /// The node that made it.
    pub node_id: std::sync::Arc<str>,
    /// For `FailedAttempt`: the delay before the next attempt.
    pub retry_after: Option<Duration>,
}

/// Attempt fields of a log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedAttempt {
    /// 1 for the initial attempt.
    pub attempt_number: u32,
    /// What it came to.
    pub outcome: AttemptOutcome,
    /// Where the request went.
    pub target_url: String,
    /// The response status, when a response came.
    pub http_status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// How long it took, in microseconds.
    pub duration_us: i64,
    /// The node that made it.
    pub node_id: Option<String>,
}

/// One entry of the delivery log: something a watcher can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Position in the log.
    pub cursor: i64,
    /// What happened.
    pub kind: EventKind,
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// Its subscription.
    pub subscription_id: SubscriptionId,
    /// Its event type.
    pub event_type: Option<EventType>,
    /// The delivery's status after this event.
    pub status: DeliveryStatus,
    /// When it happened (for attempts: when the attempt started).
    pub logged_at: Millis,
    /// Set on attempt entries.
    pub attempt: Option<LoggedAttempt>,
    /// When the next attempt is due, if one is scheduled.
    pub next_attempt_at: Option<Millis>,
}

/// A delivery's current state.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    /// Its id.
    pub id: DeliveryId,
    /// Its subscription.
    pub subscription_id: SubscriptionId,
    /// Its event type.
    pub event_type: Option<EventType>,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempt_count: u32,
    /// When pending: when it is due (or its lease expires).
    pub next_attempt_at: Option<Millis>,
    /// When it was accepted.
    pub created_at: Millis,
}

/// A leased task handed back to the queue unattempted, due again after `delay`: its node could not
/// start it soon enough. Applied only while the lease is still the claim's (same fencing token), so a
/// task another node has taken since is left alone.
#[derive(Debug, Clone)]
pub struct Postponement {
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// The claim's fencing token.
    pub lease_token: i64,
    /// How long from the commit until it is due.
    pub delay: Duration,
}

/// Writes committed together in one transaction (group commit).
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Webhooks to queue.
    pub enqueue: Vec<NewDelivery>,
    /// Attempt results to record.
    pub attempts: Vec<AttemptRecord>,
    /// Leased tasks to hand back unattempted.
    pub postponed: Vec<Postponement>,
}

impl WriteBatch {
    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.enqueue.is_empty() && self.attempts.is_empty() && self.postponed.is_empty()
    }
}

/// What a [`WriteBatch`] came to, in the batch's order.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    /// The `Queued` log entry of each queued webhook.
    pub queued: Vec<LoggedEvent>,
    /// The log entry of each recorded attempt; `None` where the fencing check rejected it.
    pub attempts: Vec<Option<LoggedEvent>>,
}

/// Which log entries a watcher or replay wants. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this subscription.
    pub subscription_id: Option<SubscriptionId>,
    /// Only this delivery.
    pub delivery_id: Option<DeliveryId>,
    /// Only deliveries of these event types.
    pub event_types: Vec<EventType>,
    /// Only attempts with these outcomes (queued entries are then excluded).
    pub outcomes: Vec<AttemptOutcome>,
}

impl EventFilter {
    /// Whether an entry passes the filter.
    pub fn matches(&self, event: &LoggedEvent) -> bool {
        if self
            .subscription_id
            .as_ref()
            .is_some_and(|id| *id != event.subscription_id)
        {
            return false;
        }
        if self
            .delivery_id
            .as_ref()
            .is_some_and(|id| *id != event.delivery_id)
        {
            return false;
        }
        if !self.event_types.is_empty()
            && !event
                .event_type
                .as_ref()
                .is_some_and(|event_type| self.event_types.contains(event_type))
        {
            return false;
        }
        if !self.outcomes.is_empty() {
            return event
                .attempt
                .as_ref()
                .is_some_and(|attempt| self.outcomes.contains(&attempt.outcome));
        }
        true
    }
}

/// Something another node announced through the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// Unleased work was queued, or a retry was scheduled.
    DueWork,
    /// Entries were appended to the delivery log.
    LogAppended,
    /// A subscription was created, updated or deleted.
    SubscriptionChanged(SubscriptionId),
    /// The notification connection was lost and re-established; anything may have changed meanwhile.
    Reconnected,
}

/// The error logged for pending deliveries of a deleted subscription.
pub(crate) const SUBSCRIPTION_DELETED: &str = "subscription was deleted; no further attempts";

/// Rows removed by one purge pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Delivery-log rows.
    pub log_entries: u64,
    /// Finished deliveries, with their payloads.
    pub deliveries: u64,
}

/// The persistence operations whd needs. Each method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Inserts a new subscription.
    async fn insert_subscription(
        &self,
        subscription: &SubscriptionRecord,
    ) -> Result<(), StoreError>;
    /// Reads one subscription.
    async fn get_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<SubscriptionRecord>, StoreError>;
    /// Lists subscriptions in creation order, after `after`.
    async fn list_subscriptions(
        &self,
        after: Option<&SubscriptionCursor>,
        limit: u32,
    ) -> Result<Vec<SubscriptionRecord>, StoreError>;
    /// Replaces a subscription's mutable fields; false when it does not exist.
    async fn update_subscription(
        &self,
        subscription: &SubscriptionRecord,
    ) -> Result<bool, StoreError>;
    /// Deletes a subscription and ends its pending deliveries as failed, returning their log entries;
    /// `None` when it does not exist.
    async fn delete_subscription(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Vec<LoggedEvent>>, StoreError>;
    /// Commits queued webhooks and attempt results in one transaction.
    async fn commit(&self, batch: &WriteBatch) -> Result<WriteOutcome, StoreError>;
    /// Leases up to `limit` due tasks, earliest first, skipping tasks other nodes hold.
    async fn claim_due(
        &self,
        lease: &LeaseRequest,
        limit: u32,
    ) -> Result<Vec<ClaimedTask>, StoreError>;
    /// Makes tasks leased by `owner` (by anyone, for `None`) due now: run at start-up, so that work a
    /// previous run of this node held is not stuck until its leases expire.
    async fn release_leases(&self, owner: Option<&str>) -> Result<u64, StoreError>;
    /// Whether only one process can use this database (SQLite), so that every lease in it is this
    /// process's own.
    fn single_process(&self) -> bool;
    /// Reads a delivery's state.
    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<DeliveryRecord>, StoreError>;
    /// A delivery's attempts, oldest first.
    async fn delivery_attempts(&self, id: &DeliveryId) -> Result<Vec<LoggedEvent>, StoreError>;
    /// A subscription's attempts, newest first, with cursors below `before` when given.
    async fn subscription_attempts(
        &self,
        id: &SubscriptionId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError>;
    /// Brings the per-subscription index of attempts up to date with the log by one bounded step;
    /// returns whether more is left to index. A backend whose index is kept by each commit has
    /// nothing to do.
    async fn index_attempts(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Log entries after `after` in cursor order that pass `filter`, at most `limit` of them; fewer
    /// than `limit` means there are no more.
    async fn events_after(
        &self,
        after: i64,
        filter: &EventFilter,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError>;
    /// The cursor of the newest log entry, 0 when the log is empty.
    async fn latest_cursor(&self) -> Result<i64, StoreError>;
    /// Deletes up to `limit` log entries logged before `before`, and up to `limit` finished deliveries
    /// created before it.
    async fn purge(&self, before: Millis, limit: u32) -> Result<PurgeCounts, StoreError>;
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Announcements from other nodes sharing the database; `None` when no other node can exist.
    async fn notifications(&self) -> Result<Option<BoxStream<'static, Notification>>, StoreError>;
    /// Closes every connection.
    async fn close(&self);
}

/// Opens the store a database URL names, creating and migrating it as needed.
pub async fn open(database_url: &str, options: &OpenOptions) -> Result<Arc<dyn Store>, StoreError> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PostgresStore::open(database_url, options).await?,
        ))
    } else {
        Ok(Arc::new(
            sqlite::SqliteStore::open(database_url, options).await?,
        ))
    }
}

/// Backend-independent connection settings.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// SQLite: fsync on every commit (true) or only at checkpoints.
    pub sqlite_full_sync: bool,
    /// Most connections to open.
    pub max_connections: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            sqlite_full_sync: true,
            max_connections: 8,
        }
    }
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_millis() -> Millis {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the system clock is after 1970");
    since_epoch.as_millis() as Millis
}

/// Milliseconds in a duration, saturating.
pub fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Microseconds in a duration, saturating: how attempt durations are stored.
pub fn duration_micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Event types as stored: a JSON array.
pub(crate) fn encode_event_types(event_types: &[EventType]) -> String {
    let names: Vec<&str> = event_types.iter().map(EventType::as_str).collect();
    serde_json::to_string(&names).expect("a list of strings serialises")
}

pub(crate) fn decode_event_types(stored: &str) -> Result<Vec<EventType>, StoreError> {
    let names: Vec<String> = serde_json::from_str(stored)
        .map_err(|error| StoreError::Corrupt(format!("event_types: {error}")))?;
    Ok(names.into_iter().map(EventType::from_trusted).collect())
}

pub(crate) fn decode_target_url(stored: &str) -> Result<TargetUrl, StoreError> {
    TargetUrl::parse("target_url", stored).map_err(|error| StoreError::Corrupt(error.message))
}
