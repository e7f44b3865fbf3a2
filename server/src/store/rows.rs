//! Decoding of stored rows into domain records, shared by both backends through [`RowExt`], so that
//! each backend only says how to read a column of each primitive type.

use bytes::Bytes;

use super::{
    ClaimedTask, DeliveryRecord, EventFilter, LoggedAttempt, LoggedEvent, StoreError,
    SubscriptionRecord, decode_event_types, decode_target_url,
};
use crate::domain::{
    AttemptOutcome, DeliveryId, DeliveryStatus, EventKind, EventType, SigningSecret, SubscriptionId,
};

/// Typed column access, implemented by each backend's row type.
pub(crate) trait RowExt {
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn blob(&self, column: &str) -> Result<Vec<u8>, StoreError>;
}

macro_rules! impl_row_ext {
    ($row:ty) => {
        impl crate::store::rows::RowExt for $row {
            fn text(&self, column: &str) -> Result<String, crate::store::StoreError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>, crate::store::StoreError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn int(&self, column: &str) -> Result<i64, crate::store::StoreError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>, crate::store::StoreError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
            fn blob(&self, column: &str) -> Result<Vec<u8>, crate::store::StoreError> {
                Ok(sqlx::Row::try_get(self, column)?)
            }
        }
    };
}
pub(crate) use impl_row_ext;

/// Columns of `subscriptions`, in the order [`subscription`] reads them.
pub(crate) const SUBSCRIPTION_COLUMNS: &str = "id, target_url, secret, previous_secret, previous_secret_until, event_types, description, created_at, updated_at";

pub(crate) fn subscription(row: &impl RowExt) -> Result<SubscriptionRecord, StoreError> {
    Ok(SubscriptionRecord {
        id: SubscriptionId::from_trusted(row.text("id")?),
        target_url: decode_target_url(&row.text("target_url")?)?,
        secret: row.opt_text("secret")?.map(SigningSecret::from_trusted),
        previous_secret: row
            .opt_text("previous_secret")?
            .map(SigningSecret::from_trusted),
        previous_secret_until: row.opt_int("previous_secret_until")?,
        event_types: decode_event_types(&row.text("event_types")?)?,
        description: row.text("description")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

/// Columns of `delivery_log`, in the order [`logged_event`] reads them.
pub(crate) const EVENT_COLUMNS: &str = "cursor, kind, delivery_id, subscription_id, event_type, status, logged_at, \
     attempt_number, outcome, target_url, http_status, error, duration_us, node_id, next_attempt_at";

pub(crate) fn logged_event(row: &impl RowExt) -> Result<LoggedEvent, StoreError> {
    let kind = EventKind::from_i64(row.int("kind")?);
    let attempt = match kind {
        EventKind::Queued => None,
        EventKind::Attempt => Some(LoggedAttempt {
            attempt_number: u32::try_from(row.opt_int("attempt_number")?.unwrap_or(0)).unwrap_or(0),
            outcome: AttemptOutcome::from_i64(row.opt_int("outcome")?.unwrap_or(0)),
            target_url: row.opt_text("target_url")?.unwrap_or_default(),
            http_status: row
                .opt_int("http_status")?
                .and_then(|status| u16::try_from(status).ok()),
            error: row.opt_text("error")?,
            duration_us: row.opt_int("duration_us")?.unwrap_or(0),
            node_id: row.opt_text("node_id")?,
        }),
    };
    Ok(LoggedEvent {
        cursor: row.int("cursor")?,
        kind,
        delivery_id: DeliveryId::from_trusted(row.text("delivery_id")?),
        subscription_id: SubscriptionId::from_trusted(row.text("subscription_id")?),
        event_type: row.opt_text("event_type")?.map(EventType::from_trusted),
        status: DeliveryStatus::from_i64(row.int("status")?),
        logged_at: row.int("logged_at")?,
        attempt,
        next_attempt_at: row.opt_int("next_attempt_at")?,
    })
}

/// Appends `filter` to a query that ends in a WHERE condition, as ` AND …` clauses. Used by every
/// backend, so replayed events are filtered exactly like live ones ([`EventFilter::matches`]).
pub(crate) fn push_event_filter<DB>(query: &mut sqlx::QueryBuilder<DB>, filter: &EventFilter)
where
    DB: sqlx::Database,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    if let Some(id) = &filter.delivery_id {
        query
            .push(" AND delivery_id = ")
            .push_bind(id.as_str().to_owned());
    }
    if let Some(id) = &filter.subscription_id {
        query
            .push(" AND subscription_id = ")
            .push_bind(id.as_str().to_owned());
    }
    if !filter.event_types.is_empty() {
        query.push(" AND event_type IN (");
        let mut list = query.separated(", ");
        for event_type in &filter.event_types {
            list.push_bind(event_type.as_str().to_owned());
        }
        query.push(")");
    }
    if !filter.outcomes.is_empty() {
        query
            .push(" AND kind = ")
            .push_bind(EventKind::Attempt.as_i64())
            .push(" AND outcome IN (");
        let mut list = query.separated(", ");
        for outcome in &filter.outcomes {
            list.push_bind(outcome.as_i64());
        }
        query.push(")");
    }
}

/// Columns of `deliveries` that [`delivery`] reads.
pub(crate) const DELIVERY_COLUMNS: &str =
    "id, subscription_id, event_type, status, attempt_count, next_attempt_at, created_at";

pub(crate) fn delivery(row: &impl RowExt) -> Result<DeliveryRecord, StoreError> {
    let status = DeliveryStatus::from_i64(row.int("status")?);
    Ok(DeliveryRecord {
        id: DeliveryId::from_trusted(row.text("id")?),
        subscription_id: SubscriptionId::from_trusted(row.text("subscription_id")?),
        event_type: row.opt_text("event_type")?.map(EventType::from_trusted),
        status,
        attempt_count: u32::try_from(row.int("attempt_count")?).unwrap_or(u32::MAX),
        next_attempt_at: if status == DeliveryStatus::Pending {
            row.opt_int("next_attempt_at")?
        } else {
            None
        },
        created_at: row.int("created_at")?,
    })
}

/// Columns a claim of `deliveries` returns, but for the payload, which each backend adds as `payload`
/// (SQLite keeps it in the delivery's `Queued` log entry, PostgreSQL beside the row). [`claimed_task`]
/// reads them by name.
pub(crate) const CLAIM_COLUMNS: &str =
    "id, subscription_id, event_type, attempt_count, lease_token, next_attempt_at";

pub(crate) fn claimed_task(row: &impl RowExt) -> Result<ClaimedTask, StoreError> {
    Ok(ClaimedTask {
        delivery_id: DeliveryId::from_trusted(row.text("id")?),
        subscription_id: SubscriptionId::from_trusted(row.text("subscription_id")?),
        event_type: row.opt_text("event_type")?.map(EventType::from_trusted),
        payload: Bytes::from(row.blob("payload")?),
        attempts_made: u32::try_from(row.int("attempt_count")?).unwrap_or(u32::MAX),
        lease_token: row.int("lease_token")?,
        lease_expires_at: row.opt_int("next_attempt_at")?.unwrap_or(0),
    })
}
