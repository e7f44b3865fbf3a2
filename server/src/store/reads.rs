//! Read queries, the same on both backends. Built with `QueryBuilder`, which writes each backend's
//! placeholders, and run on the caller's pool (SQLite: the readers, never the writer).

use sqlx::{Database, Encode, Executor, IntoArguments, QueryBuilder, Type};

use super::rows::{self, DELIVERY_COLUMNS, EVENT_COLUMNS, RowExt, SUBSCRIPTION_COLUMNS};
use super::{
    DeliveryRecord, EventFilter, LoggedEvent, StoreError, SubscriptionCursor, SubscriptionRecord,
};
use crate::domain::{DeliveryId, SubscriptionId};

/// One subscription.
pub(crate) async fn subscription<'c, DB, E>(
    executor: E,
    id: &SubscriptionId,
) -> Result<Option<SubscriptionRecord>, StoreError>
where
    DB: Database,
    DB::Row: RowExt,
    DB::Arguments: Default + IntoArguments<DB>,
    E: Executor<'c, Database = DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = "
    ));
    query.push_bind(id.as_str().to_owned());
    let row = query.build().fetch_optional(executor).await?;
    row.as_ref().map(rows::subscription).transpose()
}

/// Subscriptions in creation order after `after`.
pub(crate) async fn subscriptions<'c, DB, E>(
    executor: E,
    after: Option<&SubscriptionCursor>,
    limit: u32,
) -> Result<Vec<SubscriptionRecord>, StoreError>
where
    DB: Database,
    DB::Row: RowExt,
    DB::Arguments: Default + IntoArguments<DB>,
    E: Executor<'c, Database = DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    let (created_at, id) = after.map_or((i64::MIN, String::new()), |cursor| {
        (cursor.created_at, cursor.id.clone())
    });
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE (created_at, id) > ("
    ));
    query
        .push_bind(created_at)
        .push(", ")
        .push_bind(id)
        .push(") ORDER BY created_at, id LIMIT ");
    query.push_bind(i64::from(limit));
    let found = query.build().fetch_all(executor).await?;
    found.iter().map(rows::subscription).collect()
}

/// One delivery's state.
pub(crate) async fn delivery<'c, DB, E>(
    executor: E,
    id: &DeliveryId,
) -> Result<Option<DeliveryRecord>, StoreError>
where
    DB: Database,
    DB::Row: RowExt,
    DB::Arguments: Default + IntoArguments<DB>,
    E: Executor<'c, Database = DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = "
    ));
    query.push_bind(id.as_str().to_owned());
    let row = query.build().fetch_optional(executor).await?;
    row.as_ref().map(rows::delivery).transpose()
}

/// A delivery's attempts, oldest first.
pub(crate) async fn delivery_attempts<'c, DB, E>(
    executor: E,
    id: &DeliveryId,
) -> Result<Vec<LoggedEvent>, StoreError>
where
    DB: Database,
    DB::Row: RowExt,
    DB::Arguments: Default + IntoArguments<DB>,
    E: Executor<'c, Database = DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {EVENT_COLUMNS} FROM delivery_log WHERE delivery_id = "
    ));
    query
        .push_bind(id.as_str().to_owned())
        .push(" AND kind = 2 ORDER BY cursor");
    let found = query.build().fetch_all(executor).await?;
    found.iter().map(rows::logged_event).collect()
}

/// A subscription's attempts, newest first, below `before`.
pub(crate) async fn subscription_attempts<'c, DB, E>(
    executor: E,
    id: &SubscriptionId,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<LoggedEvent>, StoreError>
where
    DB: Database,
    DB::Row: RowExt,
    DB::Arguments: Default + IntoArguments<DB>,
    E: Executor<'c, Database = DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {EVENT_COLUMNS} FROM delivery_log WHERE subscription_id = "
    ));
    query
        .push_bind(id.as_str().to_owned())
        .push(" AND kind = 2 AND cursor < ");
    query
        .push_bind(before.unwrap_or(i64::MAX))
        .push(" ORDER BY cursor DESC LIMIT ");
    query.push_bind(i64::from(limit));
    let found = query.build().fetch_all(executor).await?;
    found.iter().map(rows::logged_event).collect()
}

/// Log entries after `after` that pass `filter`, in cursor order.
pub(crate) async fn events_after<'c, DB, E>(
    executor: E,
    after: i64,
    filter: &EventFilter,
    limit: u32,
) -> Result<Vec<LoggedEvent>, StoreError>
where
    DB: Database,
    DB::Row: RowExt,
    DB::Arguments: Default + IntoArguments<DB>,
    E: Executor<'c, Database = DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(format!(
        "SELECT {EVENT_COLUMNS} FROM delivery_log WHERE cursor > "
    ));
    query.push_bind(after);
    rows::push_event_filter(&mut query, filter);
    query
        .push(" ORDER BY cursor LIMIT ")
        .push_bind(i64::from(limit));
    let found = query.build().fetch_all(executor).await?;
    found.iter().map(rows::logged_event).collect()
}

/// The newest cursor in the log, 0 when it is empty.
pub(crate) async fn latest_cursor<'c, DB, E>(executor: E) -> Result<i64, StoreError>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
    for<'a> DB::Arguments: IntoArguments<DB>,
    for<'r> (Option<i64>,): sqlx::FromRow<'r, DB::Row>,
{
    let (latest,): (Option<i64>,) = sqlx::query_as("SELECT MAX(cursor) FROM delivery_log")
        .fetch_one(executor)
        .await?;
    Ok(latest.unwrap_or(0))
}
