//! Statements that write a whole group-commit batch at once, shared by both backends. A batch costs a
//! handful of statements whatever its size: one multi-row insert per table for queued webhooks, one
//! fenced multi-row update and one multi-row insert for attempt results.
//!
//! The text of each statement must not change from batch to batch, or the database parses and plans
//! it again every time (in a profile, SQLite spent a quarter of its time in its parser): the current
//! time is bound or is a fixed SQL expression ([`Now`]), and a chunk's rows are padded with NULL rows
//! up to the next power of two, which the statements skip. Each statement then comes in a handful of
//! sizes, all of which stay prepared. Statements return only what the database decides (cursors, and
//! on PostgreSQL the log time); the rest of each log entry is known already.

use std::collections::{HashMap, HashSet};

use sqlx::query_builder::Separated;
use sqlx::{Database, Encode, QueryBuilder, Type};

use super::{
    AttemptRecord, LoggedAttempt, LoggedEvent, Millis, NewDelivery, StoreError, WriteBatch,
    WriteOutcome, duration_millis,
};
use crate::domain::{DeliveryStatus, EventKind};

/// The current time in milliseconds, as the statements of a batch see it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Now {
    /// Bound as a value: the node's clock is the database's (SQLite).
    Value(Millis),
    /// A fixed SQL expression of the database's clock (PostgreSQL, shared by several nodes).
    Expression(&'static str),
}

impl Now {
    /// Pushes "now + `offset`" (`offset` bound, NULL giving NULL) as the next item of a row.
    fn push_plus<DB>(self, row: &mut Separated<'_, DB, &str>, offset: Option<i64>)
    where
        DB: Database,
        for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    {
        match self {
            Now::Value(now) => {
                row.push_bind(offset.map(|offset| now + offset));
            }
            Now::Expression(sql) => {
                row.push(sql)
                    .push_unseparated(" + ")
                    .push_bind_unseparated(offset);
            }
        }
    }

    /// Pushes "now" into the statement text.
    fn push<DB>(self, query: &mut QueryBuilder<DB>)
    where
        DB: Database,
        for<'a> i64: Encode<'a, DB> + Type<DB>,
    {
        match self {
            Now::Value(now) => {
                query.push_bind(now);
            }
            Now::Expression(sql) => {
                query.push(sql);
            }
        }
    }
}

/// Rows a statement is built for: the next power of two, so that few distinct texts exist.
fn padded_len(rows: usize) -> usize {
    rows.next_power_of_two()
}

/// The rows of a chunk followed by `None` padding up to [`padded_len`].
fn padded<T>(chunk: &[T]) -> impl Iterator<Item = Option<&T>> {
    chunk
        .iter()
        .map(Some)
        .chain(std::iter::repeat_n(None, padded_len(chunk.len()) - chunk.len()))
}

/// Inserts queued webhooks; a leased one is due when its lease expires, an unleased one at once.
pub(crate) fn insert_deliveries<DB>(chunk: &[NewDelivery], now: Now) -> QueryBuilder<DB>
where
    DB: Database,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<Vec<u8>>: Encode<'a, DB> + Type<DB>,
    DB::Arguments: Default,
{
    let mut insert = QueryBuilder::<DB>::new(
        "INSERT INTO deliveries (id, subscription_id, event_type, payload, status, next_attempt_at, \
         lease_owner, lease_token, created_at) SELECT * FROM (",
    );
    insert.push_values(padded(chunk), |mut row, delivery| {
        let lease = delivery.and_then(|delivery| delivery.lease.as_ref());
        let (lease_ms, owner, token) = match lease {
            Some(lease) => (
                duration_millis(lease.duration),
                Some(lease.owner.to_string()),
                1i64,
            ),
            None => (0, None, 0),
        };
        row.push_bind(delivery.map(|delivery| delivery.id.as_str().to_owned()))
            .push_bind(delivery.map(|delivery| delivery.subscription_id.as_str().to_owned()))
            .push_bind(delivery.and_then(|delivery| {
                delivery
                    .event_type
                    .as_ref()
                    .map(|event_type| event_type.as_str().to_owned())
            }))
            .push_bind(delivery.map(|delivery| delivery.payload.to_vec()))
            .push_bind(delivery.map(|_| DeliveryStatus::Pending.as_i64()));
        now.push_plus(&mut row, delivery.map(|_| lease_ms));
        row.push_bind(owner)
            .push_bind(delivery.map(|_| token));
        now.push_plus(&mut row, delivery.map(|_| 0));
    });
    insert.push(") AS v WHERE column1 IS NOT NULL");
    insert
}

/// Appends the `Queued` log entries of queued webhooks, returning `cursor, logged_at` of each.
pub(crate) fn insert_queued_events<DB>(chunk: &[NewDelivery], now: Now) -> QueryBuilder<DB>
where
    DB: Database,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    DB::Arguments: Default,
{
    let mut log = QueryBuilder::<DB>::new(
        "INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at) \
         SELECT * FROM (",
    );
    log.push_values(padded(chunk), |mut row, delivery| {
        row.push_bind(delivery.map(|_| EventKind::Queued.as_i64()))
            .push_bind(delivery.map(|delivery| delivery.id.as_str().to_owned()))
            .push_bind(delivery.map(|delivery| delivery.subscription_id.as_str().to_owned()))
            .push_bind(delivery.and_then(|delivery| {
                delivery
                    .event_type
                    .as_ref()
                    .map(|event_type| event_type.as_str().to_owned())
            }))
            .push_bind(delivery.map(|_| DeliveryStatus::Pending.as_i64()));
        now.push_plus(&mut row, delivery.map(|_| 0));
    });
    log.push(") AS v WHERE column1 IS NOT NULL RETURNING cursor, logged_at");
    log
}

/// Applies attempt results to their deliveries where the claim still holds: the row is pending, its
/// lease token is the claim's and no other attempt was recorded since (the fencing check). Returns
/// `id, next_attempt_at` of every row it changed.
pub(crate) fn fenced_update<DB>(chunk: &[AttemptRecord], now: Now) -> QueryBuilder<DB>
where
    DB: Database,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    DB::Arguments: Default,
{
    // Padding rows have a NULL id and match no delivery.
    let mut update =
        QueryBuilder::<DB>::new("WITH v (id, status, attempt_count, delay_ms, lease_token) AS (");
    update.push_values(padded(chunk), |mut row, attempt| {
        row.push_bind(attempt.map(|attempt| attempt.delivery_id.as_str().to_owned()))
            .push_bind(attempt.map(|attempt| attempt.outcome.resulting_status().as_i64()))
            .push_bind(attempt.map(|attempt| i64::from(attempt.attempt_number)))
            .push_bind(attempt.and_then(|attempt| attempt.retry_after.map(duration_millis)))
            .push_bind(attempt.map(|attempt| attempt.lease_token));
    });
    update.push(
        ") UPDATE deliveries SET status = v.status, attempt_count = v.attempt_count, next_attempt_at = ",
    );
    now.push(&mut update);
    update.push(
        " + v.delay_ms, lease_owner = NULL, finished_at = CASE WHEN v.status = 1 THEN NULL ELSE ",
    );
    now.push(&mut update);
    update.push(
        " END FROM v WHERE deliveries.id = v.id AND deliveries.status = 1 \
         AND deliveries.lease_token = v.lease_token AND deliveries.attempt_count = v.attempt_count - 1 \
         RETURNING deliveries.id, deliveries.next_attempt_at",
    );
    update
}

/// Appends the log entries of attempts that passed the fencing check, returning the cursor of each.
/// `accepted` pairs each attempt with the delivery's next due time.
pub(crate) fn insert_attempt_events<DB>(
    accepted: &[(&AttemptRecord, Option<i64>)],
) -> QueryBuilder<DB>
where
    DB: Database,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    DB::Arguments: Default,
{
    let mut log = QueryBuilder::<DB>::new(
        "INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at, \
         attempt_number, outcome, target_url, http_status, error, duration_us, node_id, next_attempt_at) \
         SELECT * FROM (",
    );
    log.push_values(padded(accepted), |mut row, entry| {
        let attempt = entry.map(|(attempt, _)| *attempt);
        row.push_bind(attempt.map(|_| EventKind::Attempt.as_i64()))
            .push_bind(attempt.map(|attempt| attempt.delivery_id.as_str().to_owned()))
            .push_bind(attempt.map(|attempt| attempt.subscription_id.as_str().to_owned()))
            .push_bind(attempt.and_then(|attempt| {
                attempt
                    .event_type
                    .as_ref()
                    .map(|event_type| event_type.as_str().to_owned())
            }))
            .push_bind(attempt.map(|attempt| attempt.outcome.resulting_status().as_i64()))
            .push_bind(attempt.map(|attempt| attempt.attempt_time))
            .push_bind(attempt.map(|attempt| i64::from(attempt.attempt_number)))
            .push_bind(attempt.map(|attempt| attempt.outcome.as_i64()))
            .push_bind(attempt.map(|attempt| attempt.target_url.clone()))
            .push_bind(attempt.and_then(|attempt| attempt.http_status.map(i64::from)))
            .push_bind(attempt.and_then(|attempt| attempt.error.clone()))
            .push_bind(attempt.map(|attempt| {
                i64::try_from(attempt.duration.as_micros()).unwrap_or(i64::MAX)
            }))
            .push_bind(attempt.map(|attempt| attempt.node_id.to_string()))
            .push_bind(entry.and_then(|(_, next_attempt_at)| *next_attempt_at));
    });
    log.push(") AS v WHERE column1 IS NOT NULL RETURNING cursor");
    log
}

/// The `Queued` log entry of a webhook, given what the database assigned.
fn queued_event(delivery: &NewDelivery, cursor: i64, logged_at: Millis) -> LoggedEvent {
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

/// The log entry of an accepted attempt, given its cursor.
fn attempt_event(attempt: &AttemptRecord, next_attempt_at: Option<i64>, cursor: i64) -> LoggedEvent {
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
            duration_us: i64::try_from(attempt.duration.as_micros()).unwrap_or(i64::MAX),
            node_id: Some(attempt.node_id.to_string()),
        }),
        next_attempt_at,
    }
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
/// attempt results with theirs. `insert_chunk` (a power of two) bounds rows per statement under the
/// backend's limit on bound parameters.
pub(crate) async fn write<DB>(
    connection: &mut DB::Connection,
    batch: &WriteBatch,
    now: Now,
    insert_chunk: usize,
) -> Result<WriteOutcome, StoreError>
where
    DB: Database,
    DB::Arguments: Default + sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> (String, Option<i64>): sqlx::FromRow<'r, DB::Row>,
    for<'r> (i64, i64): sqlx::FromRow<'r, DB::Row>,
    for<'r> (i64,): sqlx::FromRow<'r, DB::Row>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<Vec<u8>>: Encode<'a, DB> + Type<DB>,
{
    debug_assert!(insert_chunk.is_power_of_two());
    let mut outcome = WriteOutcome::default();
    for chunk in batch.enqueue.chunks(insert_chunk) {
        insert_deliveries::<DB>(chunk, now)
            .build()
            .execute(&mut *connection)
            .await?;
        let mut assigned: Vec<(i64, i64)> = insert_queued_events::<DB>(chunk, now)
            .build_query_as()
            .fetch_all(&mut *connection)
            .await?;
        // RETURNING promises no order; cursors were assigned in insertion order.
        assigned.sort_unstable();
        check_count(assigned.len(), chunk.len())?;
        outcome.queued.extend(
            chunk
                .iter()
                .zip(assigned)
                .map(|(delivery, (cursor, logged_at))| queued_event(delivery, cursor, logged_at)),
        );
    }
    for chunk in batch.attempts.chunks(insert_chunk) {
        let updated: Vec<(String, Option<i64>)> = fenced_update::<DB>(chunk, now)
            .build_query_as()
            .fetch_all(&mut *connection)
            .await?;
        let accepted = accepted_attempts(chunk, &updated);
        let to_log: Vec<(&AttemptRecord, Option<i64>)> =
            accepted.iter().flatten().copied().collect();
        let mut cursors: Vec<(i64,)> = Vec::new();
        if !to_log.is_empty() {
            cursors = insert_attempt_events::<DB>(&to_log)
                .build_query_as()
                .fetch_all(&mut *connection)
                .await?;
            cursors.sort_unstable();
            check_count(cursors.len(), to_log.len())?;
        }
        let mut cursors = cursors.into_iter();
        outcome.attempts.extend(accepted.iter().map(|entry| {
            entry.and_then(|(attempt, next_attempt_at)| {
                let (cursor,) = cursors.next()?;
                Some(attempt_event(attempt, next_attempt_at, cursor))
            })
        }));
    }
    Ok(outcome)
}

/// A multi-row insert returns one row per row inserted; anything else would misnumber the log.
fn check_count(returned: usize, inserted: usize) -> Result<(), StoreError> {
    if returned == inserted {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "an insert of {inserted} log entries returned {returned} cursors"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_padded_to_a_power_of_two_so_few_statement_texts_exist() {
        let sizes: HashSet<usize> = (1..=256).map(padded_len).collect();
        assert_eq!(sizes.len(), 9, "{sizes:?}");
        let rows = [1, 2, 3];
        let padded: Vec<_> = padded(&rows).collect();
        assert_eq!(padded, vec![Some(&1), Some(&2), Some(&3), None]);
    }
}
