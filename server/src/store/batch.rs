//! Group-commit writes. The pieces both backends share (padding of statement chunks, which result of a
//! batch may be recorded, the log entries a batch produces) and the PostgreSQL writer, which sends a
//! batch as a few multi-row statements whatever its size: one insert per table for queued webhooks,
//! for attempt results one log insert and one update, both guarded by the same fencing check, and one
//! update for postponed tasks. The SQLite writer is in [`super::sqlite`].
//!
//! The current time is a fixed SQL expression of the database's clock ([`NOW`]), so that statement
//! texts depend only on the number of rows, and the rows are padded with NULLs up to a power of two
//! ([`padded`]), so that a statement has one of ten texts per kind. Each connection keeps its
//! statements prepared (sqlx's cache of 100), and with a text per row count it kept missing: a group
//! commit's statements took 0.9–1.0 ms each against 0.5–0.7 ms with a cache large enough for them
//! all, and such a cache cost each PostgreSQL connection about 220 MiB of plans at `-c 256`. Padded,
//! the texts fit the default cache, the connection holds about 17 MiB, and the statements are as
//! quick; the connections plan each execution afresh (see the PostgreSQL store's `plan_cache_mode`).
//! Statements return only what the database decides (cursors and times); the rest of each log entry
//! is known already.

use std::collections::{HashMap, HashSet};

use futures::TryStreamExt;
use sqlx::query_builder::Separated;
use sqlx::{Postgres, QueryBuilder};

use super::{
    AttemptRecord, FirstAttempt, LoggedAttempt, LoggedEvent, Millis, NewDelivery, Postponement,
    StoreError, WriteBatch, WriteOutcome, duration_micros, duration_millis,
};
use crate::domain::{DeliveryStatus, EventKind, EventType};

/// The current time in milliseconds on the database's clock, shared by the nodes; where it bounds an
/// index scan it must be wrapped as `(SELECT …)`, which PostgreSQL evaluates once.
pub(crate) const NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// The rows of a chunk, followed by `None` padding up to the next power of two, so that a statement
/// built for it has one of few texts, which stay prepared.
pub(crate) fn padded<T>(chunk: &[T]) -> impl Iterator<Item = Option<&T>> {
    let len = chunk.len().next_power_of_two();
    chunk
        .iter()
        .map(Some)
        .chain(std::iter::repeat_n(None, len - chunk.len()))
}

/// Pushes "now + `offset`" (`offset` bound, NULL giving NULL) as the next item of a row.
fn push_now_plus(row: &mut Separated<'_, Postgres, &str>, offset: Option<i64>) {
    row.push(NOW)
        .push_unseparated(" + ")
        .push_bind_unseparated(offset);
}

/// What each log insert returns, so that rows from several statements read alike.
const LOGGED_RETURNING: &str = " RETURNING kind, cursor, delivery_id, logged_at, next_attempt_at";

/// One row of [`LOGGED_RETURNING`].
type Logged = (i64, i64, String, i64, Option<i64>);

/// Inserts queued webhooks; a leased one is due when its lease expires, an unleased one after its
/// delay. Padding rows are all NULL and filtered out.
fn push_insert_deliveries(query: &mut QueryBuilder<Postgres>, chunk: &[NewDelivery]) {
    query.push(
        "INSERT INTO deliveries (id, subscription_id, event_type, payload, status, next_attempt_at, \
         lease_owner, lease_token, created_at) SELECT * FROM (",
    );
    query.push_values(padded(chunk), |mut row, delivery| {
        let start = delivery.map(|delivery| match &delivery.start {
            FirstAttempt::Leased(lease) => (
                duration_millis(lease.duration),
                Some(lease.owner.to_string()),
                1i64,
            ),
            FirstAttempt::DueAfter(delay) => (duration_millis(*delay), None, 0),
        });
        let (offset_ms, owner, token) = match start {
            Some((offset_ms, owner, token)) => (Some(offset_ms), owner, Some(token)),
            None => (None, None, None),
        };
        row.push_bind(delivery.map(|delivery| delivery.id.as_str().to_owned()))
            .push_bind(delivery.map(|delivery| delivery.subscription_id.as_str().to_owned()))
            .push_bind(delivery.and_then(|delivery| event_type_text(delivery.event_type.as_ref())))
            .push_bind(delivery.map(|delivery| delivery.payload.to_vec()))
            .push_bind(delivery.map(|_| DeliveryStatus::Pending.as_i64()));
        push_now_plus(&mut row, offset_ms);
        row.push_bind(owner).push_bind(token);
        push_now_plus(&mut row, delivery.map(|_| 0));
    });
    query.push(") AS v WHERE v.column1 IS NOT NULL");
}

/// Appends the `Queued` log entries of queued webhooks. Padding rows are all NULL and filtered out.
fn push_insert_queued_events(query: &mut QueryBuilder<Postgres>, chunk: &[NewDelivery]) {
    query.push(
        "INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at) \
         SELECT * FROM (",
    );
    query.push_values(padded(chunk), |mut row, delivery| {
        row.push_bind(delivery.map(|_| EventKind::Queued.as_i64()))
            .push_bind(delivery.map(|delivery| delivery.id.as_str().to_owned()))
            .push_bind(delivery.map(|delivery| delivery.subscription_id.as_str().to_owned()))
            .push_bind(delivery.and_then(|delivery| event_type_text(delivery.event_type.as_ref())))
            .push_bind(delivery.map(|_| DeliveryStatus::Pending.as_i64()));
        push_now_plus(&mut row, delivery.map(|_| 0));
    });
    query.push(") AS v WHERE v.column2 IS NOT NULL");
    query.push(LOGGED_RETURNING);
}

/// The fencing check, with `d` the delivery and `v` an attempt result (`column2` its delivery id,
/// `column7` its attempt number, `column15` its claim's lease token): the row is pending, its lease
/// token is the claim's and no other attempt was recorded since.
const FENCE: &str = "d.id = v.column2 AND d.status = 1 AND d.lease_token = v.column15 \
                     AND d.attempt_count = v.column7 - 1";

/// The attempt results of a chunk as VALUES rows: the log entry's columns, then the retry delay and the
/// lease token. Padding rows are all NULL and never pass the fencing check.
fn push_attempt_values(query: &mut QueryBuilder<Postgres>, chunk: &[&AttemptRecord]) {
    query.push("(");
    query.push_values(padded(chunk), |mut row, attempt| {
        let attempt = attempt.copied();
        row.push_bind(attempt.map(|_| EventKind::Attempt.as_i64()))
            .push_bind(attempt.map(|attempt| attempt.delivery_id.as_str().to_owned()))
            .push_bind(attempt.map(|attempt| attempt.subscription_id.as_str().to_owned()))
            .push_bind(attempt.and_then(|attempt| event_type_text(attempt.event_type.as_ref())))
            .push_bind(attempt.map(|attempt| attempt.outcome.resulting_status().as_i64()))
            .push_bind(attempt.map(|attempt| attempt.attempt_time))
            .push_bind(attempt.map(|attempt| i64::from(attempt.attempt_number)))
            .push_bind(attempt.map(|attempt| attempt.outcome.as_i64()))
            .push_bind(attempt.map(|attempt| attempt.target_url.clone()))
            .push_bind(attempt.and_then(|attempt| attempt.http_status.map(i64::from)))
            .push_bind(attempt.and_then(|attempt| attempt.error.clone()))
            .push_bind(attempt.map(|attempt| duration_micros(attempt.duration)))
            .push_bind(attempt.map(|attempt| attempt.node_id.to_string()))
            .push_bind(attempt.and_then(|attempt| attempt.retry_after.map(duration_millis)))
            .push_bind(attempt.map(|attempt| attempt.lease_token));
    });
    query.push(") AS v");
}

/// Appends the log entries of the attempt results that pass the fencing check. It runs before
/// [`push_fenced_update`], in the same transaction, so both see the same rows and agree.
fn push_insert_attempt_events(query: &mut QueryBuilder<Postgres>, chunk: &[&AttemptRecord]) {
    query.push(
        "INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at, \
         attempt_number, outcome, target_url, http_status, error, duration_us, node_id, next_attempt_at) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, \
         v.column9, v.column10, v.column11, v.column12, v.column13, ",
    );
    query.push(NOW);
    query.push(" + v.column14 FROM ");
    push_attempt_values(query, chunk);
    query.push(" JOIN deliveries AS d ON ").push(FENCE);
    query.push(LOGGED_RETURNING);
}

/// Applies the attempt results that pass the fencing check to their deliveries.
fn push_fenced_update(query: &mut QueryBuilder<Postgres>, chunk: &[&AttemptRecord]) {
    query.push("UPDATE deliveries AS d SET status = v.column5, attempt_count = v.column7, next_attempt_at = ");
    query.push(NOW);
    query.push(
        " + v.column14, lease_owner = NULL, finished_at = CASE WHEN v.column5 = 1 THEN NULL ELSE ",
    );
    query.push(NOW);
    query.push(" END FROM ");
    push_attempt_values(query, chunk);
    query.push(" WHERE ").push(FENCE);
}

/// Hands leased tasks back to the queue, due after their delays, where the lease is still the claim's.
fn push_postpone(query: &mut QueryBuilder<Postgres>, chunk: &[Postponement]) {
    query.push("UPDATE deliveries AS d SET lease_owner = NULL, next_attempt_at = ");
    query.push(NOW);
    query.push(" + v.column3 FROM (");
    query.push_values(chunk, |mut row, postponement| {
        row.push_bind(postponement.delivery_id.as_str().to_owned())
            .push_bind(postponement.lease_token)
            .push_bind(duration_millis(postponement.delay));
    });
    query.push(") AS v WHERE d.id = v.column1 AND d.status = 1 AND d.lease_token = v.column2");
}

/// How an event type is stored.
fn event_type_text(event_type: Option<&EventType>) -> Option<String> {
    event_type.map(|event_type| event_type.as_str().to_owned())
}

/// The `Queued` log entry of a webhook, given what the database assigned.
pub(crate) fn queued_event(delivery: &NewDelivery, cursor: i64, logged_at: Millis) -> LoggedEvent {
    LoggedEvent {
        cursor,
        kind: EventKind::Queued,
        delivery_id: delivery.id.clone(),
        subscription_id: delivery.subscription_id.clone(),
        event_type: delivery.event_type.clone(),
        status: DeliveryStatus::Pending,
        logged_at,
        attempt: None,
        next_attempt_at: None,
    }
}

/// The log entry of an accepted attempt, given what the database assigned.
pub(crate) fn attempt_event(
    attempt: &AttemptRecord,
    cursor: i64,
    next_attempt_at: Option<i64>,
) -> LoggedEvent {
    LoggedEvent {
        cursor,
        kind: EventKind::Attempt,
        delivery_id: attempt.delivery_id.clone(),
        subscription_id: attempt.subscription_id.clone(),
        event_type: attempt.event_type.clone(),
        status: attempt.outcome.resulting_status(),
        logged_at: attempt.attempt_time,
        attempt: Some(LoggedAttempt {
            attempt_number: attempt.attempt_number,
            outcome: attempt.outcome,
            target_url: attempt.target_url.clone(),
            http_status: attempt.http_status,
            error: attempt.error.clone(),
            duration_us: duration_micros(attempt.duration),
            node_id: Some(attempt.node_id.to_string()),
        }),
        next_attempt_at,
    }
}

/// The attempts of a batch that may be recorded: the first result for each delivery. A second result
/// for the same delivery in one batch can only be a stale one, and loses.
pub(crate) fn first_per_delivery(attempts: &[AttemptRecord]) -> Vec<&AttemptRecord> {
    let mut seen = HashSet::new();
    attempts
        .iter()
        .filter(|attempt| seen.insert(attempt.delivery_id.as_str()))
        .collect()
}

/// Writes a whole batch on PostgreSQL inside the caller's transaction: queued webhooks with their log
/// entries, then attempt results with theirs, one statement at a time (the protocol prepares one
/// statement per message). `chunk` bounds rows per statement under the limit on bound parameters.
pub(crate) async fn write_postgres(
    connection: &mut sqlx::PgConnection,
    batch: &WriteBatch,
    chunk: usize,
) -> Result<WriteOutcome, StoreError> {
    let recordable = first_per_delivery(&batch.attempts);
    let mut queued: HashMap<String, (i64, i64)> = HashMap::with_capacity(batch.enqueue.len());
    let mut recorded: HashMap<String, (i64, Option<i64>)> =
        HashMap::with_capacity(recordable.len());
    let mut statements: Vec<QueryBuilder<Postgres>> = Vec::new();
    for deliveries in batch.enqueue.chunks(chunk) {
        let mut insert = QueryBuilder::new("");
        push_insert_deliveries(&mut insert, deliveries);
        statements.push(insert);
        let mut log = QueryBuilder::new("");
        push_insert_queued_events(&mut log, deliveries);
        statements.push(log);
    }
    for attempts in recordable.chunks(chunk) {
        let mut log = QueryBuilder::new("");
        push_insert_attempt_events(&mut log, attempts);
        statements.push(log);
        let mut update = QueryBuilder::new("");
        push_fenced_update(&mut update, attempts);
        statements.push(update);
    }
    for postponed in batch.postponed.chunks(chunk) {
        let mut update = QueryBuilder::new("");
        push_postpone(&mut update, postponed);
        statements.push(update);
    }
    for mut statement in statements {
        let mut rows = statement.build_query_as::<Logged>().fetch(&mut *connection);
        while let Some((kind, cursor, delivery_id, logged_at, next_attempt_at)) =
            rows.try_next().await?
        {
            if kind == EventKind::Queued.as_i64() {
                queued.insert(delivery_id, (cursor, logged_at));
            } else {
                recorded.insert(delivery_id, (cursor, next_attempt_at));
            }
        }
    }

    let queued_events = batch
        .enqueue
        .iter()
        .map(|delivery| {
            let (cursor, logged_at) = queued.remove(delivery.id.as_str()).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "no log entry was written for {}",
                    delivery.id.as_str()
                ))
            })?;
            Ok(queued_event(delivery, cursor, logged_at))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let attempt_events = batch
        .attempts
        .iter()
        .map(|attempt| {
            recorded
                .remove(attempt.delivery_id.as_str())
                .map(|(cursor, next_attempt_at)| attempt_event(attempt, cursor, next_attempt_at))
        })
        .collect();
    Ok(WriteOutcome {
        queued: queued_events,
        attempts: attempt_events,
    })
}
