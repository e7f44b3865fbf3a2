//! The SQLite group commit: a whole batch, `BEGIN IMMEDIATE` to `COMMIT`, in one call into the
//! database's thread, with no rows sent back.
//!
//! Each call into that thread waits for a turn on a busy runtime, and each row it sends back wakes the
//! caller once more, so the batch is one multi-statement text and the database answers only with what
//! every statement reports anyway: how many rows it changed and the last rowid it inserted. That is
//! enough because this process is the file's only writer (one writer connection): the rows one
//! statement inserts get consecutive rowids in the order the statement produces them. So
//! - the `Queued` log entries of a chunk are inserted in batch order, and their cursors are the last
//!   `n` up to the last rowid;
//! - the attempt entries are inserted in batch order (`ORDER BY` their position) for the results that
//!   pass the fencing check, and the update that follows applies exactly the entries just logged (the
//!   last `changes()` cursors), so the two cannot disagree. When every result passed, their cursors
//!   are consecutive too; when some did not, the entries that were written are read back by cursor
//!   range after the commit (rare: a lost lease or a deleted subscription).
//!
//! Statement texts must not change from batch to batch, or SQLite parses and plans them afresh each
//! time: the current time is a parameter, and a chunk's rows are padded with NULL rows up to the next
//! power of two, which the statements skip. Statements use `OR ROLLBACK`: any failure aborts the whole
//! batch anyway, and without an `ABORT` to honour, SQLite keeps no statement journal for these
//! multi-row writes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use futures::TryStreamExt;
use sqlx::sqlite::{SqliteArguments, SqliteConnection};
use sqlx::{Arguments, Either, Encode, Sqlite, Type};

use crate::domain::{DeliveryStatus, EventKind};
use crate::store::batch::{attempt_event, first_per_delivery, padded, queued_event};
use crate::store::{
    AttemptRecord, FirstAttempt, LoggedEvent, Millis, NewDelivery, Postponement, StoreError,
    WriteBatch, WriteOutcome, duration_micros, duration_millis,
};

/// Rows per multi-row statement (a power of two): the widest row binds 13 values, well under SQLite's
/// limit of 32,766 parameters.
const CHUNK: usize = 256;

/// What a statement of the combined text reports, in the order they run.
#[derive(Debug, Clone, Copy)]
enum Report {
    /// Not needed (transaction control, deliveries insert, update).
    Ignored,
    /// The `Queued` entries of the next `rows` queued webhooks (chunks run in batch order).
    Queued { rows: usize },
    /// The entries of `recordable[start..start + rows]` that passed the fencing check.
    Attempts { start: usize, rows: usize },
}

/// The combined text and its arguments, in placeholder order.
struct Combined {
    sql: String,
    arguments: SqliteArguments,
    reports: Vec<Report>,
}

impl Combined {
    fn new() -> Self {
        Combined {
            sql: String::with_capacity(16 * 1024),
            arguments: SqliteArguments::default(),
            reports: Vec::new(),
        }
    }

    /// Writes a placeholder and adds its argument.
    fn bind<T>(&mut self, value: T) -> Result<(), StoreError>
    where
        T: for<'q> Encode<'q, Sqlite> + Type<Sqlite> + Send + 'static,
    {
        self.sql.push('?');
        self.arguments
            .add(value)
            .map_err(|error| StoreError::Corrupt(format!("could not bind a value: {error}")))
    }

    /// Writes a literal part of the text.
    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Ends a statement, noting what its report is for.
    fn end(&mut self, report: Report) {
        self.sql.push_str(";\n");
        self.reports.push(report);
    }

    /// Writes one VALUES row, `(?, ?, …)`, preceded by a comma unless it is the first (`index` 0).
    fn values_row(
        &mut self,
        index: usize,
        values: impl FnOnce(&mut Row<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.push(if index == 0 { "(" } else { ",(" });
        values(&mut Row {
            combined: self,
            empty: true,
        })?;
        self.push(")");
        Ok(())
    }
}

/// The values of one VALUES row being written, separated by commas.
struct Row<'a> {
    combined: &'a mut Combined,
    empty: bool,
}

impl Row<'_> {
    /// Binds the row's next value.
    fn bind<T>(&mut self, value: T) -> Result<&mut Self, StoreError>
    where
        T: for<'q> Encode<'q, Sqlite> + Type<Sqlite> + Send + 'static,
    {
        if !self.empty {
            self.combined.push(",");
        }
        self.empty = false;
        self.combined.bind(value)?;
        Ok(self)
    }
}

/// Writes `batch` in one transaction; `now` is this node's clock, which is the database's.
pub(super) async fn write(
    connection: &mut SqliteConnection,
    batch: &WriteBatch,
    now: Millis,
) -> Result<WriteOutcome, StoreError> {
    let recordable = first_per_delivery(&batch.attempts);
    let combined = statements(batch, &recordable, now)?;
    let Combined {
        sql,
        arguments,
        reports,
        ..
    } = combined;

    let mut queued_cursors: Vec<i64> = Vec::with_capacity(batch.enqueue.len());
    let mut attempt_cursors: HashMap<usize, i64> = HashMap::with_capacity(recordable.len());
    let mut fenced_ranges: Vec<(i64, i64)> = Vec::new();
    let results = {
        let query = sqlx::query_with(sqlx::AssertSqlSafe(sql), arguments).persistent(true);
        let mut stream = sqlx::Executor::fetch_many(&mut *connection, query);
        let mut results = Vec::with_capacity(reports.len());
        loop {
            match stream.try_next().await {
                Ok(Some(Either::Left(result))) => {
                    results.push((result.rows_affected(), result.last_insert_rowid()))
                }
                Ok(Some(Either::Right(_))) => {}
                Ok(None) => break Ok(results),
                Err(error) => break Err(error),
            }
        }
    };
    let results = match results {
        Ok(results) => results,
        Err(error) => {
            // The statements stopped at the failing one; `OR ROLLBACK` has usually ended the
            // transaction already, and otherwise this does.
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *connection).await;
            return Err(error.into());
        }
    };
    if results.len() != reports.len() {
        return Err(StoreError::Corrupt(format!(
            "a batch of {} statements reported {}",
            reports.len(),
            results.len()
        )));
    }

    for (report, (changes, last_rowid)) in reports.iter().zip(results) {
        let changes = i64::try_from(changes).unwrap_or(i64::MAX);
        match *report {
            Report::Ignored => {}
            Report::Queued { rows, .. } => {
                if changes != rows as i64 {
                    return Err(StoreError::Corrupt(format!(
                        "{changes} log entries were written for {rows} queued webhooks"
                    )));
                }
                queued_cursors.extend(last_rowid - changes + 1..=last_rowid);
            }
            Report::Attempts { start, rows } => {
                if changes == rows as i64 {
                    for (offset, cursor) in (last_rowid - changes + 1..=last_rowid).enumerate() {
                        attempt_cursors.insert(start + offset, cursor);
                    }
                } else if changes > 0 {
                    fenced_ranges.push((last_rowid - changes, last_rowid));
                }
            }
        }
    }
    if !fenced_ranges.is_empty() {
        // Some results lost their lease: find out which entries were written. The batch is committed
        // and nothing else writes, so the cursor ranges hold exactly this batch's entries.
        let positions: HashMap<&str, usize> = recordable
            .iter()
            .enumerate()
            .map(|(index, attempt)| (attempt.delivery_id.as_str(), index))
            .collect();
        for (after, last) in fenced_ranges {
            let written: Vec<(i64, String)> = sqlx::query_as(
                "SELECT cursor, delivery_id FROM delivery_log WHERE cursor > ? AND cursor <= ?",
            )
            .bind(after)
            .bind(last)
            .fetch_all(&mut *connection)
            .await?;
            for (cursor, delivery_id) in written {
                if let Some(&index) = positions.get(delivery_id.as_str()) {
                    attempt_cursors.insert(index, cursor);
                }
            }
        }
    }

    let queued = batch
        .enqueue
        .iter()
        .zip(queued_cursors)
        .map(|(delivery, cursor)| queued_event(delivery, cursor, now))
        .collect();
    let mut recorded: HashMap<&str, LoggedEvent> = HashMap::with_capacity(attempt_cursors.len());
    for (index, cursor) in attempt_cursors {
        let attempt = recordable[index];
        let next_attempt_at = attempt
            .retry_after
            .map(|delay| now + duration_millis(delay));
        recorded.insert(
            attempt.delivery_id.as_str(),
            attempt_event(attempt, cursor, next_attempt_at),
        );
    }
    // A second result for a delivery in one batch is not recordable and gets `None` here.
    let mut seen = std::collections::HashSet::new();
    let attempts = batch
        .attempts
        .iter()
        .map(|attempt| {
            let first = seen.insert(attempt.delivery_id.as_str());
            first
                .then(|| recorded.remove(attempt.delivery_id.as_str()))
                .flatten()
        })
        .collect();
    Ok(WriteOutcome { queued, attempts })
}

/// The combined text of a batch: `BEGIN IMMEDIATE`, per chunk of webhooks the deliveries and their
/// `Queued` entries, per chunk of results their entries and the update, per chunk of postponed tasks
/// their update, `COMMIT`.
fn statements(
    batch: &WriteBatch,
    recordable: &[&AttemptRecord],
    now: Millis,
) -> Result<Combined, StoreError> {
    let mut combined = Combined::new();
    combined.push("BEGIN IMMEDIATE");
    combined.end(Report::Ignored);
    for chunk in batch.enqueue.chunks(CHUNK) {
        push_insert_deliveries(&mut combined, chunk, now)?;
        push_insert_queued_events(&mut combined, chunk, now)?;
    }
    for (index, chunk) in recordable.chunks(CHUNK).enumerate() {
        push_insert_attempt_events(&mut combined, chunk, now)?;
        combined.end(Report::Attempts {
            start: index * CHUNK,
            rows: chunk.len(),
        });
        push_logged_attempts_update(&mut combined, now)?;
    }
    for chunk in batch.postponed.chunks(CHUNK) {
        push_postpone(&mut combined, chunk, now)?;
    }
    combined.push("COMMIT");
    combined.end(Report::Ignored);
    Ok(combined)
}

/// Hands a chunk of leased tasks back to the queue, due after their delays, where the lease is still
/// the claim's. Row values: delivery id, lease token, delay (ms).
fn push_postpone(
    combined: &mut Combined,
    chunk: &[Postponement],
    now: Millis,
) -> Result<(), StoreError> {
    combined.push("UPDATE OR ROLLBACK deliveries AS d SET lease_owner = NULL, next_attempt_at = ");
    combined.bind(now)?;
    combined.push(" + v.column3 FROM (VALUES ");
    for (index, postponement) in padded(chunk).enumerate() {
        combined.values_row(index, |row| {
            row.bind(postponement.map(|postponement| postponement.delivery_id.shared()))?
                .bind(postponement.map(|postponement| postponement.lease_token))?
                .bind(postponement.map(|postponement| duration_millis(postponement.delay)))?;
            Ok(())
        })?;
    }
    combined.push(") AS v WHERE d.id = v.column1 AND d.status = 1 AND d.lease_token = v.column2");
    combined.end(Report::Ignored);
    Ok(())
}

/// Inserts a chunk of queued webhooks; a leased one is due when its lease expires, an unleased one
/// after its delay. Row values: id, subscription, event type, lease duration or delay (ms), owner
/// (NULL: unleased).
fn push_insert_deliveries(
    combined: &mut Combined,
    chunk: &[NewDelivery],
    now: Millis,
) -> Result<(), StoreError> {
    let pending = DeliveryStatus::Pending.as_i64();
    let _ = write!(
        combined.sql,
        "INSERT OR ROLLBACK INTO deliveries (id, subscription_id, event_type, status, next_attempt_at, \
         lease_owner, lease_token, created_at) SELECT column1, column2, column3, {pending}, "
    );
    combined.bind(now)?;
    combined.push(" + column4, column5, CASE WHEN column5 IS NULL THEN 0 ELSE 1 END, ");
    combined.bind(now)?;
    combined.push(" FROM (VALUES ");
    for (index, delivery) in padded(chunk).enumerate() {
        let (offset, owner) = match delivery.map(|delivery| &delivery.start) {
            Some(FirstAttempt::Leased(lease)) => (
                Some(duration_millis(lease.duration)),
                Some(Arc::clone(&lease.owner)),
            ),
            Some(FirstAttempt::DueAfter(delay)) => (Some(duration_millis(*delay)), None),
            None => (None, None),
        };
        combined.values_row(index, |row| {
            row.bind(delivery.map(|delivery| delivery.id.shared()))?
                .bind(delivery.map(|delivery| delivery.subscription_id.shared()))?
                .bind(event_type(delivery))?
                .bind(offset)?
                .bind(owner)?;
            Ok(())
        })?;
    }
    combined.push(") WHERE column1 IS NOT NULL");
    combined.end(Report::Ignored);
    Ok(())
}

/// Appends the `Queued` entries of a chunk of queued webhooks, in batch order, with their payloads.
/// Row values: id, subscription, event type, payload.
fn push_insert_queued_events(
    combined: &mut Combined,
    chunk: &[NewDelivery],
    now: Millis,
) -> Result<(), StoreError> {
    let queued = EventKind::Queued.as_i64();
    let pending = DeliveryStatus::Pending.as_i64();
    let _ = write!(
        combined.sql,
        "INSERT OR ROLLBACK INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, \
         logged_at, payload) SELECT {queued}, column1, column2, column3, {pending}, "
    );
    combined.bind(now)?;
    combined.push(", column4 FROM (VALUES ");
    for (index, delivery) in padded(chunk).enumerate() {
        combined.values_row(index, |row| {
            row.bind(delivery.map(|delivery| delivery.id.shared()))?
                .bind(delivery.map(|delivery| delivery.subscription_id.shared()))?
                .bind(event_type(delivery))?
                .bind(delivery.map(|delivery| delivery.payload.to_vec()))?;
            Ok(())
        })?;
    }
    combined.push(") WHERE column1 IS NOT NULL");
    combined.end(Report::Queued { rows: chunk.len() });
    Ok(())
}

/// A queued webhook's event type as bound.
fn event_type(delivery: Option<&NewDelivery>) -> Option<Arc<str>> {
    delivery
        .and_then(|delivery| delivery.event_type.as_ref())
        .map(|event_type| event_type.shared())
}

/// The fencing check, with `d` the delivery and `v` an attempt result: the row is pending, its lease
/// token is the claim's and no other attempt was recorded since. Padding rows match nothing.
const FENCE: &str = "d.id = v.column2 AND d.status = 1 AND d.lease_token = v.column12 \
                     AND d.attempt_count = v.column4 - 1";

/// Appends, in batch order, the entries of the results in `chunk` that pass the fencing check. Row
/// values: position, delivery id, resulting status, attempt number, outcome, attempt time, target URL,
/// HTTP status, error, duration (µs), node, lease token, retry delay (ms).
fn push_insert_attempt_events(
    combined: &mut Combined,
    chunk: &[&AttemptRecord],
    now: Millis,
) -> Result<(), StoreError> {
    let attempt_kind = EventKind::Attempt.as_i64();
    let _ = write!(
        combined.sql,
        "INSERT OR ROLLBACK INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, \
         attempt_number, outcome, logged_at, target_url, http_status, error, duration_us, node_id, \
         next_attempt_at) SELECT {attempt_kind}, d.id, d.subscription_id, d.event_type, v.column3, \
         v.column4, v.column5, v.column6, v.column7, v.column8, v.column9, v.column10, v.column11, "
    );
    combined.bind(now)?;
    combined.push(" + v.column13 FROM (VALUES ");
    for (position, attempt) in padded(chunk).enumerate() {
        let attempt = attempt.copied();
        combined.values_row(position, |row| {
            row.bind(attempt.map(|_| position as i64))?
                .bind(attempt.map(|attempt| attempt.delivery_id.shared()))?
                .bind(attempt.map(|attempt| attempt.outcome.resulting_status().as_i64()))?
                .bind(attempt.map(|attempt| i64::from(attempt.attempt_number)))?
                .bind(attempt.map(|attempt| attempt.outcome.as_i64()))?
                .bind(attempt.map(|attempt| attempt.attempt_time))?
                .bind(attempt.map(|attempt| attempt.target_url.clone()))?
                .bind(attempt.and_then(|attempt| attempt.http_status.map(i64::from)))?
                .bind(attempt.and_then(|attempt| attempt.error.clone()))?
                .bind(attempt.map(|attempt| duration_micros(attempt.duration)))?
                .bind(attempt.map(|attempt| Arc::clone(&attempt.node_id)))?
                .bind(attempt.map(|attempt| attempt.lease_token))?
                .bind(attempt.and_then(|attempt| attempt.retry_after.map(duration_millis)))?;
            Ok(())
        })?;
    }
    let _ = write!(
        combined.sql,
        ") AS v JOIN deliveries AS d ON {FENCE} ORDER BY v.column1"
    );
    Ok(())
}

/// Applies the attempt entries the previous statement logged (the last `changes()` of the log) to
/// their deliveries. Nothing else writes in between, and an update changes neither `changes()` nor the
/// log while it runs.
fn push_logged_attempts_update(combined: &mut Combined, now: Millis) -> Result<(), StoreError> {
    let pending = DeliveryStatus::Pending.as_i64();
    let _ = write!(
        combined.sql,
        "UPDATE OR ROLLBACK deliveries AS d SET status = l.status, attempt_count = l.attempt_number, \
         next_attempt_at = l.next_attempt_at, lease_owner = NULL, \
         finished_at = CASE WHEN l.status = {pending} THEN NULL ELSE "
    );
    combined.bind(now)?;
    combined.push(
        " END FROM (SELECT delivery_id, status, attempt_number, next_attempt_at FROM delivery_log \
         WHERE cursor > (SELECT max(cursor) FROM delivery_log) - changes()) AS l \
         WHERE d.id = l.delivery_id",
    );
    combined.end(Report::Ignored);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SubscriptionId;
    use crate::store::sqlite::fixtures::{leased_webhook, queue, record, success};
    use crate::store::sqlite::{SqliteStore, temporary_store};
    use crate::store::{EventFilter, Store};

    #[test]
    fn chunks_are_padded_to_a_power_of_two_so_few_statement_texts_exist() {
        let sizes: std::collections::HashSet<usize> = (1..=CHUNK)
            .map(|rows| padded(&vec![0; rows]).count())
            .collect();
        assert_eq!(sizes.len(), 9, "{sizes:?}");
        let rows = [1, 2, 3];
        let padded_rows: Vec<_> = padded(&rows).collect();
        assert_eq!(padded_rows, vec![Some(&1), Some(&2), Some(&3), None]);
    }

    /// Every log entry in the store, by cursor.
    async fn stored_log(store: &SqliteStore) -> HashMap<i64, LoggedEvent> {
        let entries = store
            .events_after(0, &EventFilter::default(), 100_000)
            .await
            .unwrap();
        entries
            .into_iter()
            .map(|entry| (entry.cursor, entry))
            .collect()
    }

    #[tokio::test]
    async fn a_batch_over_several_statements_returns_exactly_the_entries_it_stored() {
        let (_dir, store) = temporary_store().await;
        let subscription_id = SubscriptionId::generate();

        // 600 webhooks: three chunks of at most 256 rows, one transaction.
        let webhooks: Vec<NewDelivery> =
            (0..600).map(|_| leased_webhook(&subscription_id)).collect();
        let queued = queue(&store, webhooks.clone()).await;
        assert_eq!(queued.len(), 600);
        assert!(
            queued
                .windows(2)
                .all(|pair| pair[0].cursor < pair[1].cursor),
            "cursors grow in batch order"
        );
        let log = stored_log(&store).await;
        for (event, webhook) in queued.iter().zip(&webhooks) {
            assert_eq!(event.delivery_id, webhook.id);
            assert_eq!(Some(event), log.get(&event.cursor), "the entry as stored");
        }

        // 300 results that all pass the fence: two chunks, consecutive cursors.
        let attempts: Vec<AttemptRecord> = webhooks[..300]
            .iter()
            .map(|webhook| success(webhook, 1))
            .collect();
        let recorded = record(&store, attempts).await;
        let log = stored_log(&store).await;
        for (event, webhook) in recorded.iter().zip(&webhooks) {
            let event = event.as_ref().expect("a current result is recorded");
            assert_eq!(event.delivery_id, webhook.id);
            assert_eq!(Some(event), log.get(&event.cursor), "the entry as stored");
        }

        // Results for the next 100 with every tenth on a stale lease, and a second result for one of
        // them: the fenced-off and duplicate ones get no entry, the others exactly theirs.
        let mut attempts: Vec<AttemptRecord> = webhooks[300..400]
            .iter()
            .enumerate()
            .map(|(index, webhook)| success(webhook, if index % 10 == 3 { 7 } else { 1 }))
            .collect();
        attempts.push(success(&webhooks[301], 1));
        let recorded = record(&store, attempts).await;
        assert_eq!(recorded.len(), 101);
        assert!(
            recorded[100].is_none(),
            "a second result in one batch loses"
        );
        let log = stored_log(&store).await;
        for (index, webhook) in webhooks[300..400].iter().enumerate() {
            let state = store.get_delivery(&webhook.id).await.unwrap().unwrap();
            if index % 10 == 3 {
                assert!(
                    recorded[index].is_none(),
                    "a stale lease token is fenced off"
                );
                assert_eq!(state.status, DeliveryStatus::Pending);
            } else {
                let event = recorded[index].as_ref().expect("recorded");
                assert_eq!(event.delivery_id, webhook.id);
                assert_eq!(Some(event), log.get(&event.cursor), "the entry as stored");
                assert_eq!(state.status, DeliveryStatus::Delivered);
                assert_eq!(state.attempt_count, 1);
            }
        }
        let history = store.delivery_attempts(&webhooks[301].id).await.unwrap();
        assert_eq!(
            history.len(),
            1,
            "the duplicate was not logged: {history:?}"
        );
        assert_eq!(
            log.len(),
            600 + 300 + 90,
            "one entry per webhook and per recorded result"
        );
        store.close().await;
    }

    /// Claims whatever is due for a node other than the one the fixtures lease to.
    async fn claim_as_another_node(store: &SqliteStore) -> Vec<crate::store::ClaimedTask> {
        let lease = crate::store::LeaseRequest {
            owner: Arc::from("node-b"),
            duration: std::time::Duration::from_secs(60),
        };
        store.claim_due(&lease, 10).await.unwrap()
    }

    /// Asserts that `webhook` is pending and due an hour after `before`, give or take a minute.
    async fn assert_due_an_hour_after(store: &SqliteStore, webhook: &NewDelivery, before: Millis) {
        let due = store
            .get_delivery(&webhook.id)
            .await
            .unwrap()
            .unwrap()
            .next_attempt_at
            .expect("a pending delivery has a due time");
        assert!(
            (before + 3_600_000..before + 3_660_000).contains(&due),
            "due an hour after the commit: {due} vs {before}"
        );
    }

    #[tokio::test]
    async fn a_webhook_queued_unleased_is_due_after_its_delay() {
        let (_dir, store) = temporary_store().await;
        let subscription_id = SubscriptionId::generate();
        let unleased = |delay| NewDelivery {
            start: FirstAttempt::DueAfter(delay),
            ..leased_webhook(&subscription_id)
        };
        let (now, later) = (
            unleased(std::time::Duration::ZERO),
            unleased(std::time::Duration::from_secs(3600)),
        );
        let before = crate::store::now_millis();
        queue(&store, vec![now.clone(), later.clone()]).await;

        let claimed = claim_as_another_node(&store).await;
        let claimed_ids: Vec<_> = claimed.iter().map(|task| &task.delivery_id).collect();
        assert_eq!(
            claimed_ids,
            [&now.id],
            "only the one due at once is claimed"
        );
        assert_eq!(
            claimed[0].lease_token, 1,
            "an unleased webhook's first claim is its first lease"
        );
        assert_due_an_hour_after(&store, &later, before).await;
        store.close().await;
    }

    #[tokio::test]
    async fn a_postponed_task_is_unleased_and_due_after_its_delay_unless_the_lease_was_lost() {
        let (_dir, store) = temporary_store().await;
        let subscription_id = SubscriptionId::generate();
        let (soon, later, stale) = (
            leased_webhook(&subscription_id),
            leased_webhook(&subscription_id),
            leased_webhook(&subscription_id),
        );
        queue(&store, vec![soon.clone(), later.clone(), stale.clone()]).await;
        let postpone = |webhook: &NewDelivery, lease_token, delay| Postponement {
            delivery_id: webhook.id.clone(),
            lease_token,
            delay,
        };
        let before = crate::store::now_millis();
        store
            .commit(&WriteBatch {
                postponed: vec![
                    postpone(&soon, 1, std::time::Duration::ZERO),
                    postpone(&later, 1, std::time::Duration::from_secs(3600)),
                    // A claim newer than the one this node holds took the task over.
                    postpone(&stale, 7, std::time::Duration::ZERO),
                ],
                ..WriteBatch::default()
            })
            .await
            .expect("the batch commits");

        let claimed = claim_as_another_node(&store).await;
        let claimed_ids: Vec<_> = claimed.iter().map(|task| &task.delivery_id).collect();
        assert_eq!(
            claimed_ids,
            [&soon.id],
            "only the task postponed by nothing is due; the stale one is still leased"
        );
        assert_eq!(claimed[0].attempts_made, 0, "postponing is not an attempt");
        assert_due_an_hour_after(&store, &later, before).await;
        store.close().await;
    }

    #[tokio::test]
    async fn a_failing_batch_leaves_nothing_behind_and_the_next_one_commits() {
        let (_dir, store) = temporary_store().await;
        let subscription_id = SubscriptionId::generate();
        let first = leased_webhook(&subscription_id);
        // The same id twice violates the primary key half-way through the transaction.
        let failing = WriteBatch {
            enqueue: vec![
                first.clone(),
                leased_webhook(&subscription_id),
                first.clone(),
            ],
            ..WriteBatch::default()
        };
        assert!(store.commit(&failing).await.is_err());
        assert!(
            store.get_delivery(&first.id).await.unwrap().is_none(),
            "the rows before the failure were rolled back"
        );

        let next = leased_webhook(&subscription_id);
        let queued = store
            .commit(&WriteBatch {
                enqueue: vec![next.clone()],
                ..WriteBatch::default()
            })
            .await
            .expect("the connection is usable again")
            .queued;
        assert_eq!(queued[0].delivery_id, next.id);
        assert!(store.get_delivery(&next.id).await.unwrap().is_some());
        store.close().await;
    }
}
