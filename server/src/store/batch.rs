//! Statements that write a whole group-commit batch at once, shared by both backends. A batch costs
//! four statements whatever its size: one multi-row insert per table for queued webhooks, and for
//! attempt results one multi-row log insert and one multi-row update, both guarded by the same fencing
//! check. SQLite receives them, with the transaction around them, as one call into its worker thread
//! ([`Framing::Combined`]): under load every such call waits for a turn on a busy runtime, and six of
//! them made up most of a commit's time.
//!
//! The text of each statement must not change from batch to batch, or the database parses and plans
//! it again every time (in a profile, SQLite spent a quarter of its time in its parser): the current
//! time is bound or is a fixed SQL expression ([`Now`]), and on SQLite a chunk's rows are padded with
//! NULL rows up to the next power of two, which the statements skip ([`Padding`]). Each statement then
//! comes in a handful of sizes, all of which stay prepared. Statements return only what the database decides (cursors and
//! times); the rest of each log entry is known already.

use std::collections::{HashMap, HashSet};

use futures::TryStreamExt;

use sqlx::query_builder::Separated;
use sqlx::{Database, Encode, QueryBuilder, Type};

use super::{
    AttemptRecord, LoggedAttempt, LoggedEvent, Millis, NewDelivery, StoreError, WriteBatch,
    WriteOutcome, duration_millis,
};
use crate::domain::{DeliveryStatus, EventKind, EventType};

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

/// Whether a chunk's rows are padded to [`padded_len`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Padding {
    /// Padded: SQLite parses a statement whose text it has not cached, which cost it more than
    /// binding the padding does.
    PowerOfTwo,
    /// Exact: PostgreSQL pays for every bound parameter more than for planning a new text (measured:
    /// padding cost it a fifth of its rate).
    Exact,
}

/// The rows of a chunk, followed by `None` padding up to [`padded_len`] when `padding` asks for it.
fn padded<T>(chunk: &[T], padding: Padding) -> impl Iterator<Item = Option<&T>> {
    let len = match padding {
        Padding::PowerOfTwo => padded_len(chunk.len()),
        Padding::Exact => chunk.len(),
    };
    chunk
        .iter()
        .map(Some)
        .chain(std::iter::repeat_n(None, len - chunk.len()))
}

/// How a backend sends a batch's statements.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Framing {
    /// One statement at a time inside the caller's transaction (PostgreSQL, whose protocol prepares
    /// one statement per message).
    Separate,
    /// All statements in one call, opened with `begin` and committed there too (SQLite).
    Combined {
        /// The statement that opens the transaction.
        begin: &'static str,
    },
}

/// What each log insert returns, so that rows from several statements read alike.
const LOGGED_RETURNING: &str = " RETURNING kind, cursor, delivery_id, logged_at, next_attempt_at";

/// One row of [`LOGGED_RETURNING`].
type Logged = (i64, i64, String, i64, Option<i64>);

/// Inserts queued webhooks; a leased one is due when its lease expires, an unleased one at once.
fn push_insert_deliveries<DB>(
    query: &mut QueryBuilder<DB>,
    chunk: &[NewDelivery],
    now: Now,
    padding: Padding,
) where
    DB: Database,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<Vec<u8>>: Encode<'a, DB> + Type<DB>,
{
    query.push(
        "INSERT INTO deliveries (id, subscription_id, event_type, payload, status, next_attempt_at, \
         lease_owner, lease_token, created_at) SELECT * FROM (",
    );
    query.push_values(padded(chunk, padding), |mut row, delivery| {
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
            .push_bind(delivery.and_then(|delivery| event_type_text(delivery.event_type.as_ref())))
            .push_bind(delivery.map(|delivery| delivery.payload.to_vec()))
            .push_bind(delivery.map(|_| DeliveryStatus::Pending.as_i64()));
        now.push_plus(&mut row, delivery.map(|_| lease_ms));
        row.push_bind(owner).push_bind(delivery.map(|_| token));
        now.push_plus(&mut row, delivery.map(|_| 0));
    });
    query.push(") AS v WHERE column1 IS NOT NULL");
}

/// Appends the `Queued` log entries of queued webhooks.
fn push_insert_queued_events<DB>(
    query: &mut QueryBuilder<DB>,
    chunk: &[NewDelivery],
    now: Now,
    padding: Padding,
) where
    DB: Database,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
{
    query.push(
        "INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at) \
         SELECT * FROM (",
    );
    query.push_values(padded(chunk, padding), |mut row, delivery| {
        row.push_bind(delivery.map(|_| EventKind::Queued.as_i64()))
            .push_bind(delivery.map(|delivery| delivery.id.as_str().to_owned()))
            .push_bind(delivery.map(|delivery| delivery.subscription_id.as_str().to_owned()))
            .push_bind(delivery.and_then(|delivery| event_type_text(delivery.event_type.as_ref())))
            .push_bind(delivery.map(|_| DeliveryStatus::Pending.as_i64()));
        now.push_plus(&mut row, delivery.map(|_| 0));
    });
    query.push(") AS v WHERE column1 IS NOT NULL");
    query.push(LOGGED_RETURNING);
}

/// The fencing check, with `d` the delivery and `v` an attempt result (`column2` its delivery id,
/// `column7` its attempt number, `column15` its claim's lease token): the row is pending, its lease
/// token is the claim's and no other attempt was recorded since. Padding rows have a NULL id and match
/// nothing.
const FENCE: &str = "d.id = v.column2 AND d.status = 1 AND d.lease_token = v.column15 \
                     AND d.attempt_count = v.column7 - 1";

/// The attempt results of a chunk as VALUES rows: the log entry's columns, then the retry delay and the
/// lease token.
fn push_attempt_values<DB>(query: &mut QueryBuilder<DB>, chunk: &[&AttemptRecord], padding: Padding)
where
    DB: Database,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
{
    query.push("(");
    query.push_values(padded(chunk, padding), |mut row, attempt| {
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
            .push_bind(
                attempt
                    .map(|attempt| i64::try_from(attempt.duration.as_micros()).unwrap_or(i64::MAX)),
            )
            .push_bind(attempt.map(|attempt| attempt.node_id.to_string()))
            .push_bind(attempt.and_then(|attempt| attempt.retry_after.map(duration_millis)))
            .push_bind(attempt.map(|attempt| attempt.lease_token));
    });
    query.push(") AS v");
}

/// Appends the log entries of the attempt results that pass the fencing check. It runs before
/// [`push_fenced_update`], in the same transaction, so both see the same rows and agree.
fn push_insert_attempt_events<DB>(
    query: &mut QueryBuilder<DB>,
    chunk: &[&AttemptRecord],
    now: Now,
    padding: Padding,
) where
    DB: Database,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
{
    query.push(
        "INSERT INTO delivery_log (kind, delivery_id, subscription_id, event_type, status, logged_at, \
         attempt_number, outcome, target_url, http_status, error, duration_us, node_id, next_attempt_at) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, \
         v.column9, v.column10, v.column11, v.column12, v.column13, ",
    );
    now.push(query);
    query.push(" + v.column14 FROM ");
    push_attempt_values(query, chunk, padding);
    query.push(" JOIN deliveries AS d ON ").push(FENCE);
    query.push(LOGGED_RETURNING);
}

/// Applies the attempt results that pass the fencing check to their deliveries.
fn push_fenced_update<DB>(
    query: &mut QueryBuilder<DB>,
    chunk: &[&AttemptRecord],
    now: Now,
    padding: Padding,
) where
    DB: Database,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
{
    query.push("UPDATE deliveries AS d SET status = v.column5, attempt_count = v.column7, next_attempt_at = ");
    now.push(query);
    query.push(
        " + v.column14, lease_owner = NULL, finished_at = CASE WHEN v.column5 = 1 THEN NULL ELSE ",
    );
    now.push(query);
    query.push(" END FROM ");
    push_attempt_values(query, chunk, padding);
    query.push(" WHERE ").push(FENCE);
}

/// The statements of one round trip or several, as the framing wants.
struct Statements<DB: Database> {
    framing: Framing,
    list: Vec<QueryBuilder<DB>>,
}

impl<DB: Database> Statements<DB>
where
    DB::Arguments: Default,
{
    fn new(framing: Framing) -> Self {
        Statements {
            framing,
            list: Vec::new(),
        }
    }

    /// Where the next statement goes: after the previous one in the same text when combined, else a
    /// text of its own.
    fn next(&mut self) -> &mut QueryBuilder<DB> {
        let combine = matches!(self.framing, Framing::Combined { .. }) && !self.list.is_empty();
        if combine {
            let query = self.list.last_mut().expect("a statement was pushed");
            query.push("; ");
            query
        } else {
            self.list.push(QueryBuilder::new(""));
            self.list.last_mut().expect("a statement was just pushed")
        }
    }
}

/// How an event type is stored.
fn event_type_text(event_type: Option<&EventType>) -> Option<String> {
    event_type.map(|event_type| event_type.as_str().to_owned())
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

/// The log entry of an accepted attempt, given what the database assigned.
fn attempt_event(
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
            duration_us: i64::try_from(attempt.duration.as_micros()).unwrap_or(i64::MAX),
            node_id: Some(attempt.node_id.to_string()),
        }),
        next_attempt_at,
    }
}

/// The attempts of a batch that may be recorded: the first result for each delivery. A second result
/// for the same delivery in one batch can only be a stale one, and loses.
fn first_per_delivery(attempts: &[AttemptRecord]) -> Vec<&AttemptRecord> {
    let mut seen = HashSet::new();
    attempts
        .iter()
        .filter(|attempt| seen.insert(attempt.delivery_id.as_str()))
        .collect()
}

/// Writes a whole batch: queued webhooks with their log entries, then attempt results with theirs.
/// With [`Framing::Separate`] it runs inside the caller's transaction; with [`Framing::Combined`] it
/// opens and commits its own. `insert_chunk` (a power of two) bounds rows per statement under the
/// backend's limit on bound parameters.
pub(crate) async fn write<DB>(
    connection: &mut DB::Connection,
    batch: &WriteBatch,
    now: Now,
    insert_chunk: usize,
    framing: Framing,
    padding: Padding,
) -> Result<WriteOutcome, StoreError>
where
    DB: Database,
    DB::Arguments: Default + sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> Logged: sqlx::FromRow<'r, DB::Row>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    for<'a> Option<Vec<u8>>: Encode<'a, DB> + Type<DB>,
{
    debug_assert!(insert_chunk.is_power_of_two());
    let recordable = first_per_delivery(&batch.attempts);
    let enqueue_chunks: Vec<&[NewDelivery]> = batch.enqueue.chunks(insert_chunk).collect();
    let attempt_chunks: Vec<&[&AttemptRecord]> = recordable.chunks(insert_chunk).collect();
    let rounds = enqueue_chunks.len().max(attempt_chunks.len()).max(1);

    let mut queued: HashMap<String, (i64, i64)> = HashMap::with_capacity(batch.enqueue.len());
    let mut recorded: HashMap<String, (i64, Option<i64>)> =
        HashMap::with_capacity(recordable.len());
    for round in 0..rounds {
        let mut statements = Statements::new(framing);
        if let Framing::Combined { begin } = framing
            && round == 0
        {
            statements.next().push(begin);
        }
        if let Some(chunk) = enqueue_chunks.get(round) {
            push_insert_deliveries(statements.next(), chunk, now, padding);
            push_insert_queued_events(statements.next(), chunk, now, padding);
        }
        if let Some(chunk) = attempt_chunks.get(round) {
            push_insert_attempt_events(statements.next(), chunk, now, padding);
            push_fenced_update(statements.next(), chunk, now, padding);
        }
        if matches!(framing, Framing::Combined { .. }) && round + 1 == rounds {
            statements.next().push("COMMIT");
        }
        for mut statement in statements.list {
            let mut rows = statement.build_query_as::<Logged>().fetch(&mut *connection);
            let result: Result<(), sqlx::Error> = async {
                while let Some((kind, cursor, delivery_id, logged_at, next_attempt_at)) =
                    rows.try_next().await?
                {
                    if kind == EventKind::Queued.as_i64() {
                        queued.insert(delivery_id, (cursor, logged_at));
                    } else {
                        recorded.insert(delivery_id, (cursor, next_attempt_at));
                    }
                }
                Ok(())
            }
            .await;
            drop(rows);
            if let Err(error) = result {
                if matches!(framing, Framing::Combined { .. }) {
                    // The statements stopped at the failing one, inside the transaction they opened.
                    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *connection).await;
                }
                return Err(error.into());
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::domain::{AttemptOutcome, DeliveryId, SubscriptionId};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{LeaseRequest, OpenOptions, Store};

    #[test]
    fn chunks_are_padded_to_a_power_of_two_so_few_statement_texts_exist() {
        let sizes: HashSet<usize> = (1..=256).map(padded_len).collect();
        assert_eq!(sizes.len(), 9, "{sizes:?}");
        let rows = [1, 2, 3];
        let padded_rows: Vec<_> = padded(&rows, Padding::PowerOfTwo).collect();
        assert_eq!(padded_rows, vec![Some(&1), Some(&2), Some(&3), None]);
        assert_eq!(padded(&rows, Padding::Exact).count(), 3);
    }

    fn leased_webhook(subscription_id: &SubscriptionId) -> NewDelivery {
        NewDelivery {
            id: DeliveryId::generate(),
            subscription_id: subscription_id.clone(),
            event_type: None,
            payload: Bytes::from_static(br#"{"n":1}"#),
            lease: Some(LeaseRequest {
                owner: Arc::from("node-a"),
                duration: Duration::from_secs(60),
            }),
        }
    }

    fn success(delivery: &NewDelivery, lease_token: i64) -> AttemptRecord {
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

    #[tokio::test]
    async fn a_batch_larger_than_one_statement_commits_whole_in_order_and_fences_stale_results() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whd.db");
        let store = SqliteStore::open(path.to_str().unwrap(), &OpenOptions::default())
            .await
            .unwrap();
        let subscription_id = SubscriptionId::generate();

        // 600 webhooks: three chunks of at most 256 rows, one transaction.
        let webhooks: Vec<NewDelivery> =
            (0..600).map(|_| leased_webhook(&subscription_id)).collect();
        let queued = store
            .commit(&WriteBatch {
                enqueue: webhooks.clone(),
                attempts: Vec::new(),
            })
            .await
            .unwrap()
            .queued;
        assert_eq!(queued.len(), 600);
        for (event, webhook) in queued.iter().zip(&webhooks) {
            assert_eq!(
                event.delivery_id, webhook.id,
                "entries come back in batch order"
            );
        }
        assert!(
            queued
                .windows(2)
                .all(|pair| pair[0].cursor < pair[1].cursor),
            "cursors grow in batch order"
        );

        // 300 current results, a second result for the first delivery, and one with a stale token.
        let mut attempts: Vec<AttemptRecord> = webhooks[..300]
            .iter()
            .map(|webhook| success(webhook, 1))
            .collect();
        attempts.push(success(&webhooks[0], 1));
        attempts.push(success(&webhooks[300], 7));
        let recorded = store
            .commit(&WriteBatch {
                enqueue: Vec::new(),
                attempts,
            })
            .await
            .unwrap()
            .attempts;
        assert_eq!(recorded.len(), 302);
        assert!(recorded[..300].iter().all(Option::is_some));
        assert!(
            recorded[300].is_none(),
            "a second result in one batch loses"
        );
        assert!(recorded[301].is_none(), "a stale lease token is fenced off");

        let delivered = store.get_delivery(&webhooks[0].id).await.unwrap().unwrap();
        assert_eq!(delivered.status, DeliveryStatus::Delivered);
        let history = store.delivery_attempts(&webhooks[0].id).await.unwrap();
        assert_eq!(
            history.len(),
            1,
            "one attempt, the duplicate not logged: {history:?}"
        );
        let untouched = store
            .get_delivery(&webhooks[300].id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(untouched.status, DeliveryStatus::Pending);
        store.close().await;
    }

    #[tokio::test]
    async fn a_failing_batch_leaves_nothing_behind_and_the_next_one_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whd.db");
        let store = SqliteStore::open(path.to_str().unwrap(), &OpenOptions::default())
            .await
            .unwrap();
        let subscription_id = SubscriptionId::generate();
        let first = leased_webhook(&subscription_id);
        // The same id twice violates the primary key half-way through the transaction.
        let failing = WriteBatch {
            enqueue: vec![
                first.clone(),
                leased_webhook(&subscription_id),
                first.clone(),
            ],
            attempts: Vec::new(),
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
                attempts: Vec::new(),
            })
            .await
            .expect("the connection is usable again")
            .queued;
        assert_eq!(queued[0].delivery_id, next.id);
        assert!(store.get_delivery(&next.id).await.unwrap().is_some());
        store.close().await;
    }
}
