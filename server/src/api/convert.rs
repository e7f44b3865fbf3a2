//! Conversions between `whd.v1` messages and the service's inputs and records.

use std::time::Duration;

use pbjson_types::Timestamp;
use whd_proto::v1;

use crate::domain::{AttemptOutcome, DeliveryId, EventKind, EventType, SubscriptionId};
use crate::error::ServiceError;
use crate::service::{DeliveryDetails, NewSubscription, SubscriptionPatch, WatchItem};
use crate::store::{EventFilter, LoggedEvent, Millis, SubscriptionRecord};

/// A timestamp from milliseconds since the epoch.
pub fn timestamp(millis: Millis) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A subscription as clients see it: the secret is never included, only whether there is one.
pub fn subscription(record: &SubscriptionRecord) -> v1::Subscription {
    v1::Subscription {
        id: record.id.to_string(),
        target_url: record.target_url.as_str().to_owned(),
        secret: String::new(),
        event_types: record
            .event_types
            .iter()
            .map(|event_type| event_type.as_str().to_owned())
            .collect(),
        description: record.description.clone(),
        create_time: Some(timestamp(record.created_at)),
        update_time: Some(timestamp(record.updated_at)),
        has_secret: record.secret.is_some(),
    }
}

/// The input of a create.
pub fn new_subscription(
    request: v1::CreateSubscriptionRequest,
) -> Result<NewSubscription, ServiceError> {
    let subscription = request
        .subscription
        .ok_or_else(|| ServiceError::invalid_field("subscription", "is required"))?;
    Ok(NewSubscription {
        target_url: subscription.target_url,
        secret: subscription.secret,
        generate_secret: request.generate_secret,
        event_types: subscription.event_types,
        description: subscription.description,
    })
}

/// The id and patch of an update: each path of the field mask selects one field of `subscription`.
pub fn subscription_patch(
    request: v1::UpdateSubscriptionRequest,
) -> Result<(String, SubscriptionPatch), ServiceError> {
    let subscription = request
        .subscription
        .ok_or_else(|| ServiceError::invalid_field("subscription", "is required"))?;
    let paths = request
        .update_mask
        .map(|mask| mask.paths)
        .unwrap_or_default();
    if paths.is_empty() {
        return Err(ServiceError::invalid_field(
            "update_mask",
            "must name at least one field to update",
        ));
    }
    let mut patch = SubscriptionPatch::default();
    for path in paths {
        match path.as_str() {
            "target_url" => patch.target_url = Some(subscription.target_url.clone()),
            "secret" => patch.secret = Some(subscription.secret.clone()),
            "event_types" => patch.event_types = Some(subscription.event_types.clone()),
            "description" => patch.description = Some(subscription.description.clone()),
            other => {
                return Err(ServiceError::invalid_field(
                    "update_mask",
                    format!(
                        "unknown or read-only field {other:?}; updatable fields are target_url, secret, event_types, description"
                    ),
                ));
            }
        }
    }
    Ok((subscription.id, patch))
}

/// An attempt as clients see it; `None` for log entries that are not attempts.
pub fn attempt(event: &LoggedEvent) -> Option<v1::DeliveryAttempt> {
    let attempt = event.attempt.as_ref()?;
    let duration = Duration::from_micros(u64::try_from(attempt.duration_us).unwrap_or(0));
    Some(v1::DeliveryAttempt {
        delivery_id: event.delivery_id.to_string(),
        subscription_id: event.subscription_id.to_string(),
        target_url: attempt.target_url.clone(),
        attempt_time: Some(timestamp(event.logged_at)),
        attempt_number: attempt.attempt_number,
        outcome: attempt.outcome.to_proto() as i32,
        http_status: attempt.http_status.map(u32::from),
        error: attempt.error.clone().unwrap_or_default(),
        node_id: attempt.node_id.clone().unwrap_or_default(),
        duration: Some(pbjson_types::Duration {
            seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
            nanos: duration.subsec_nanos() as i32,
        }),
    })
}

/// A delivery with its attempts.
pub fn delivery(details: &DeliveryDetails) -> v1::Delivery {
    let record = &details.delivery;
    v1::Delivery {
        id: record.id.to_string(),
        subscription_id: record.subscription_id.to_string(),
        event_type: record
            .event_type
            .as_ref()
            .map(|event_type| event_type.as_str().to_owned())
            .unwrap_or_default(),
        status: record.status.to_proto() as i32,
        attempts: details.attempts.iter().filter_map(attempt).collect(),
        create_time: Some(timestamp(record.created_at)),
        next_attempt_time: record.next_attempt_at.map(timestamp),
        attempt_count: record.attempt_count,
    }
}

/// A log entry as a watch event.
pub fn delivery_event(event: &LoggedEvent) -> v1::DeliveryEvent {
    let kind = match event.kind {
        EventKind::Queued => v1::DeliveryEventKind::Queued,
        EventKind::Attempt => v1::DeliveryEventKind::Attempt,
    };
    v1::DeliveryEvent {
        cursor: u64::try_from(event.cursor).unwrap_or(0),
        kind: kind as i32,
        delivery_id: event.delivery_id.to_string(),
        subscription_id: event.subscription_id.to_string(),
        event_type: event
            .event_type
            .as_ref()
            .map(|event_type| event_type.as_str().to_owned())
            .unwrap_or_default(),
        status: event.status.to_proto() as i32,
        attempt: attempt(event),
        next_attempt_time: event.next_attempt_at.map(timestamp),
        event_time: Some(timestamp(event.logged_at)),
        lagged_count: 0,
    }
}

/// The filter and starting cursor of a watch.
pub fn watch_request(
    request: &v1::WatchDeliveriesRequest,
) -> Result<(EventFilter, Option<i64>), ServiceError> {
    let subscription_id = (!request.subscription_id.is_empty())
        .then(|| SubscriptionId::parse(&request.subscription_id))
        .transpose()?;
    let delivery_id = (!request.delivery_id.is_empty())
        .then(|| DeliveryId::parse(&request.delivery_id))
        .transpose()?;
    let event_types = EventType::parse_list("event_types", &request.event_types)?;
    let outcomes = request
        .outcomes
        .iter()
        .map(|&outcome| {
            AttemptOutcome::from_proto(outcome).ok_or_else(|| {
                ServiceError::invalid_field("outcomes", format!("{outcome} is not a known outcome"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let after_cursor = request
        .after_cursor
        .map(|cursor| {
            i64::try_from(cursor).map_err(|_| {
                ServiceError::invalid_field("after_cursor", "is larger than any cursor")
            })
        })
        .transpose()?;
    Ok((
        EventFilter {
            subscription_id,
            delivery_id,
            event_types,
            outcomes,
        },
        after_cursor,
    ))
}

/// A watch stream item as a message.
pub fn watch_item(item: &WatchItem) -> v1::DeliveryEvent {
    match item {
        WatchItem::Event(event) => delivery_event(event),
        WatchItem::Lagged(missed) => v1::DeliveryEvent {
            kind: v1::DeliveryEventKind::Lagged as i32,
            lagged_count: *missed,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn timestamps_split_milliseconds_into_seconds_and_nanos() {
        assert_eq!(
            timestamp(1_649_367_553_250),
            Timestamp {
                seconds: 1_649_367_553,
                nanos: 250_000_000
            }
        );
        assert_eq!(
            timestamp(-1),
            Timestamp {
                seconds: -1,
                nanos: 999_000_000
            }
        );
    }

    #[test]
    fn an_update_mask_selects_fields_and_rejects_unknown_paths() {
        let request = |paths: &[&str]| v1::UpdateSubscriptionRequest {
            subscription: Some(v1::Subscription {
                id: "sub_x".into(),
                description: "new".into(),
                target_url: "https://example.com/".into(),
                ..Default::default()
            }),
            update_mask: Some(pbjson_types::FieldMask {
                paths: paths.iter().map(|path| path.to_string()).collect(),
            }),
        };
        let (id, patch) = subscription_patch(request(&["description"])).unwrap();
        assert_eq!(id, "sub_x");
        assert_eq!(patch.description.as_deref(), Some("new"));
        assert!(patch.target_url.is_none());

        let error = subscription_patch(request(&["id"])).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(
            error.message.contains("unknown or read-only field \"id\""),
            "{}",
            error.message
        );
        assert_eq!(
            subscription_patch(request(&[])).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }
}
