//! Statements that write a whole group-commit batch at once, shared by both backends. A batch costs a
//! handful of statements whatever its size: one multi-row insert per table for queued webhooks, one
//! fenced multi-row update and one multi-row insert for attempt results. Each takes `now`, the SQL
//! expression of the database's current time in milliseconds.

use std::collections::{HashMap, HashSet};

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::rows::{EVENT_COLUMNS, RowExt, logged_event};
use super::{
    AttemptRecord, LoggedEvent, NewDelivery, StoreError, WriteBatch, WriteOutcome, duration_millis,
};
use crate::domain::{DeliveryStatus, EventKind};

/// Inserts queued webhooks; a leased one is due when its lease expires, an unleased one at once.
pub(crate) fn insert_deliveries<DB>(chunk: &[NewDelivery], now: &str) -> QueryBuilder<DB>
where
    DB: Database,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Vec<u8>: Encode<'a, DB> + Type<DB>,
    DB::Arguments: Default,
{
    let mut insert = QueryBuilder::<DB>::new(
        "INSERT INTO deliveries (id, subscription_id, event_type, payload, status, next_attempt_at, \
         lease_owner, lease_token, created_at) ",
    );
    insert.push_values(chunk, |mut row, delivery| {
        let (lease_ms, owner, token) = match &delivery.lease {
            Some(lease) => (
                duration_millis(lease.duration),
                Some(lease.owner.to_string()),
                1i64,
            ),
            None => (0, None, 0),
        };
        row.push_bind(delivery.id.as_str().to_owned())
            .push_bind(delivery.subscription_id.as_str().to_owned())
            .push_bind(
                delivery
                    .event_type
                    .as_ref()
                    .map(|event_type| event_type.as_str().to_owned()),
            )
            .push_bind(delivery.payload.to_vec())
            .push_bind(DeliveryStatus::Pending.as_i64())
            .push(now)
            .push_unseparated(" + ")
            .push_bind_unseparated(lease_ms)
            .push_bind(owner)
            .push_bind(token)
            .push(now);
    });
    insert
}

/// Appends the `Queued` log entries of queued webhooks, returning them.
pub(crate) fn insert_queued_events<DB>(chunk: &[NewDelivery], now: &str) -> QueryBuilder<DB>
where
    DB: Database,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    DB::Arguments: Default,
{
    let mut log = QueryBuilder::<DB>::new(
        "INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at) ",
    );
    log.push_values(chunk, |mut row, delivery| {
        row.push_bind(EventKind::Queued.as_i64())
            .push_bind(delivery.id.as_str().to_owned())
            .push_bind(delivery.subscription_id.as_str().to_owned())
            .push_bind(
                delivery
                    .event_type
                    .as_ref()
                    .map(|event_type| event_type.as_str().to_owned()),
            )
            .push_bind(DeliveryStatus::Pending.as_i64())
            .push(now);
    });
    log.push(format_args!(" RETURNING {EVENT_COLUMNS}"));
    log
}

/// Applies attempt results to their deliveries where the claim still holds: the row is pending, its
/// lease token is the claim's and no other attempt was recorded since (the fencing check). Returns
/// `id, next_attempt_at` of every row it changed.
pub(crate) fn fenced_update<DB>(chunk: &[AttemptRecord], now: &str) -> QueryBuilder<DB>
where
    DB: Database,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    DB::Arguments: Default,
{
    let mut update =
        QueryBuilder::<DB>::new("WITH v (id, status, attempt_count, delay_ms, lease_token) AS (");
    update.push_values(chunk, |mut row, attempt| {
        row.push_bind(attempt.delivery_id.as_str().to_owned())
            .push_bind(attempt.outcome.resulting_status().as_i64())
            .push_bind(i64::from(attempt.attempt_number))
            .push_bind(attempt.retry_after.map(duration_millis))
            .push_bind(attempt.lease_token);
    });
    update.push(format_args!(
        ") UPDATE deliveries SET status = v.status, attempt_count = v.attempt_count, \
         next_attempt_at = {now} + v.delay_ms, lease_owner = NULL, \
         finished_at = CASE WHEN v.status = 1 THEN NULL ELSE {now} END \
         FROM v WHERE deliveries.id = v.id AND deliveries.status = 1 \
         AND deliveries.lease_token = v.lease_token AND deliveries.attempt_count = v.attempt_count - 1 \
         RETURNING deliveries.id, deliveries.next_attempt_at"
    ));
    update
}

/// Appends the log entries of attempts that passed the fencing check, returning them. `accepted`
/// pairs each attempt with the delivery's next due time.
pub(crate) fn insert_attempt_events<DB>(
    accepted: &[(&AttemptRecord, Option<i64>)],
) -> QueryBuilder<DB>
where
    DB: Database,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    DB::Arguments: Default,
{
    let mut log = QueryBuilder::<DB>::new(
        "INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at, \
         attempt_number, outcome, target_url, http_status, error, duration_us, node_id, next_attempt_at) ",
    );
    log.push_values(accepted, |mut row, (attempt, next_attempt_at)| {
        row.push_bind(EventKind::Attempt.as_i64())
            .push_bind(attempt.delivery_id.as_str().to_owned())
            .push_bind(attempt.subscription_id.as_str().to_owned())
            .push_bind(
                attempt
                    .event_type
                    .as_ref()
                    .map(|event_type| event_type.as_str().to_owned()),
            )
            .push_bind(attempt.outcome.resulting_status().as_i64())
            .push_bind(attempt.attempt_time)
            .push_bind(i64::from(attempt.attempt_number))
            .push_bind(attempt.outcome.as_i64())
            .push_bind(attempt.target_url.clone())
            .push_bind(attempt.http_status.map(i64::from))
            .push_bind(attempt.error.clone())
            .push_bind(i64::try_from(attempt.duration.as_micros()).unwrap_or(i64::MAX))
            .push_bind(Some(attempt.node_id.to_string()))
            .push_bind(*next_attempt_at);
    });
    log.push(format_args!(" RETURNING {EVENT_COLUMNS}"));
    log
}

/// Pairs each attempt of a chunk with the next due time of its delivery when the fenced update
/// changed it. A delivery appears at most once: a second result for it in the same batch can only be
/// a stale one, and loses.
pub(crate) fn accepted_attempts<'a>(
    chunk: &'a [AttemptRecord],
    updated: &[(String, Option<i64>)],
) -> Vec<Option<(&'a AttemptRecord, Option<i64>)>> {
    let mut remaining: HashMap<&str, Option<i64>> = updated
        .iter()
        .map(|(id, next)| (id.as_str(), *next))
        .collect();
    let mut seen = HashSet::new();
    chunk
        .iter()
        .map(|attempt| {
            let id = attempt.delivery_id.as_str();
            if !seen.insert(id) {
                return None;
            }
            remaining.remove(id).map(|next| (attempt, next))
        })
        .collect()
}

/// Writes a whole batch inside the caller's transaction: queued webhooks with their log entries, then
/// attempt results with theirs. `insert_chunk` bounds rows per statement under the backend's limit on
/// bound parameters.
pub(crate) async fn write<DB>(
    connection: &mut DB::Connection,
    batch: &WriteBatch,
    now: &str,
    insert_chunk: usize,
) -> Result<WriteOutcome, StoreError>
where
    DB: Database,
    DB::Row: RowExt,
    DB::Arguments: Default + sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> (String, Option<i64>): sqlx::FromRow<'r, DB::Row>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> Vec<u8>: Encode<'a, DB> + Type<DB>,
{
    let mut outcome = WriteOutcome::default();
    for chunk in batch.enqueue.chunks(insert_chunk) {
        insert_deliveries::<DB>(chunk, now)
            .build()
            .execute(&mut *connection)
            .await?;
        let rows = insert_queued_events::<DB>(chunk, now)
            .build()
            .fetch_all(&mut *connection)
            .await?;
        let mut logged = rows
            .iter()
            .map(logged_event)
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING promises no order; cursors were assigned in insertion order.
        logged.sort_by_key(|event| event.cursor);
        outcome.queued.extend(logged);
    }
    for chunk in batch.attempts.chunks(insert_chunk) {
        let updated: Vec<(String, Option<i64>)> = fenced_update::<DB>(chunk, now)
            .build_query_as()
            .fetch_all(&mut *connection)
            .await?;
        let accepted = accepted_attempts(chunk, &updated);
        let to_log: Vec<(&AttemptRecord, Option<i64>)> =
            accepted.iter().flatten().copied().collect();
        let mut logged: HashMap<String, LoggedEvent> = HashMap::new();
        if !to_log.is_empty() {
            let rows = insert_attempt_events::<DB>(&to_log)
                .build()
                .fetch_all(&mut *connection)
                .await?;
            for row in &rows {
                let event = logged_event(row)?;
                logged.insert(event.delivery_id.as_str().to_owned(), event);
            }
        }
        outcome.attempts.extend(accepted.iter().map(|entry| {
            entry.and_then(|(attempt, _)| logged.remove(attempt.delivery_id.as_str()))
        }));
    }
    Ok(outcome)
}
