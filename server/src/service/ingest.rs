//! Ingest: validate, filter by event type, commit, and hand the task to a worker. A webhook is only
//! acknowledged after its commit, so an acknowledged webhook is never lost.

use bytes::Bytes;

use crate::domain::{DeliveryId, EventType, SubscriptionId};
use crate::error::{ErrorCode, ServiceError};
use crate::store::{ClaimedTask, FirstAttempt, NewDelivery, duration_millis, now_millis};

use super::{Service, commit_error, inbound_signature, store_error};

/// A webhook as received.
#[derive(Debug, Clone)]
pub struct IngestRequest<'a> {
    /// The subscription in the path.
    pub subscription_id: &'a str,
    /// The `content-type` header.
    pub content_type: Option<&'a str>,
    /// The event type (`X-Event-Type` or `?event_type=`).
    pub event_type: Option<&'a str>,
    /// The `X-Hub-Signature-256` header.
    pub signature: Option<&'a str>,
    /// The body, already read within the size limit.
    pub body: Bytes,
}

/// What ingest did with a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestReceipt {
    /// Committed for delivery.
    Queued(DeliveryId),
    /// The subscription does not want this event type; nothing was queued.
    Filtered,
}

impl Service {
    /// Accepts one webhook.
    pub async fn ingest(&self, request: IngestRequest<'_>) -> Result<IngestReceipt, ServiceError> {
        let subscription_id = SubscriptionId::parse(request.subscription_id)?;
        let subscription = self
            .inner
            .cache
            .get(&subscription_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ServiceError::not_found("subscription", subscription_id.as_str()))?;
        // Authenticate before looking at the body, so that unauthenticated senders learn nothing more.
        inbound_signature::verify(
            &subscription,
            request.signature,
            &request.body,
            now_millis(),
        )?;
        if !is_json_media_type(request.content_type) {
            return Err(ServiceError::new(
                ErrorCode::UnsupportedMediaType,
                "content-type must be application/json",
            ));
        }
        let event_type = request
            .event_type
            .map(|value| EventType::parse("event_type", value))
            .transpose()?;
        validate_json(&request.body)?;
        if !subscription.event_types.is_empty()
            && !event_type
                .as_ref()
                .is_some_and(|event_type| subscription.event_types.contains(event_type))
        {
            return Ok(IngestReceipt::Filtered);
        }

        // With room in this node's hand-off, the task is inserted already leased to this node and goes
        // to a worker straight from memory; otherwise it is queued due-now for any node to claim. A
        // subscription far behind its in-flight cap gets it at the end of its line in the database.
        let hot = &self.inner.hot;
        let line_delay = hot.line_delay(&subscription_id);
        let hand_off = line_delay.is_none().then(|| hot.try_reserve()).flatten();
        let start = if hand_off.is_some() {
            FirstAttempt::Leased(self.inner.settings.lease.clone())
        } else {
            FirstAttempt::DueAfter(line_delay.unwrap_or_default())
        };
        let delivery = NewDelivery {
            id: DeliveryId::generate(),
            subscription_id,
            event_type,
            payload: request.body,
            start,
        };
        let task_parts = hand_off.as_ref().map(|_| {
            (
                delivery.subscription_id.clone(),
                delivery.event_type.clone(),
                delivery.payload.clone(),
            )
        });
        let queued = self
            .inner
            .committer
            .enqueue(delivery)
            .await
            .map_err(commit_error)?;
        match (hand_off, task_parts) {
            (Some(permit), Some((subscription_id, event_type, payload))) => {
                permit.send(ClaimedTask {
                    delivery_id: queued.delivery_id.clone(),
                    subscription_id,
                    event_type,
                    payload,
                    attempts_made: 0,
                    lease_token: 1,
                    lease_expires_at: queued.logged_at
                        + duration_millis(self.inner.settings.lease.duration),
                })
            }
            _ => self.inner.wakeup.due_in(line_delay.unwrap_or_default()),
        }
        Ok(IngestReceipt::Queued(queued.delivery_id))
    }
}

/// `application/json` or any `application/*+json`, with or without parameters.
fn is_json_media_type(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    // Compared in place, case-insensitively: this runs on every ingest request.
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .as_bytes();
    let (prefix, suffix): (&[u8], &[u8]) = (b"application/", b"+json");
    essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() >= prefix.len() + suffix.len()
            && essence[..prefix.len()].eq_ignore_ascii_case(prefix)
            && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix))
}

/// Deepest nesting of arrays and objects accepted in a webhook body.
pub(crate) const MAX_JSON_DEPTH: usize = 64;

/// Checks that the body is UTF-8 holding one well-formed JSON value, without building it in memory.
/// UTF-8 and nesting depth are checked separately because skipping a value checks neither: a string
/// is skipped without decoding it, and skipping is iterative, so it accepts any depth.
pub(super) fn validate_json(body: &[u8]) -> Result<(), ServiceError> {
    let invalid = |reason: String| ServiceError::new(ErrorCode::InvalidArgument, reason);
    let text = std::str::from_utf8(body)
        .map_err(|error| invalid(format!("body is not valid UTF-8: {error}")))?;
    if nesting_depth_exceeds(body, MAX_JSON_DEPTH) {
        return Err(invalid(format!(
            "body nests arrays or objects deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|error| invalid(format!("body is not valid JSON: {error}")))
}

/// Whether brackets outside strings nest deeper than `limit`. One pass, no allocation; the inside of
/// each string is skipped with a vectorised search for its closing quote or next escape, so a body
/// made mostly of string data costs little more than reading it.
fn nesting_depth_exceeds(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = body.get(at) {
        at += 1;
        match byte {
            b'"' => loop {
                let rest = body.get(at..).unwrap_or_default();
                let Some(offset) = memchr::memchr2(b'"', b'\\', rest) else {
                    // An unterminated string: the parser reports it.
                    return false;
                };
                at += offset + 1;
                if body[at - 1] == b'"' {
                    break;
                }
                // A backslash escapes the byte after it.
                at += 1;
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types_are_recognised_with_parameters_and_suffixes() {
        assert!(is_json_media_type(Some("application/json")));
        assert!(is_json_media_type(Some("Application/JSON; charset=utf-8")));
        assert!(is_json_media_type(Some("application/cloudevents+json")));
        assert!(is_json_media_type(Some(" APPLICATION/Problem+JSON ")));
        assert!(!is_json_media_type(Some("text/plain")));
        assert!(!is_json_media_type(Some("text/+json")));
        assert!(!is_json_media_type(Some("application/json5")));
        assert!(!is_json_media_type(Some("application/jsön")));
        assert!(!is_json_media_type(Some(
            "application/x-www-form-urlencoded"
        )));
        assert!(!is_json_media_type(None));
    }

    #[test]
    fn json_validation_rejects_garbage_invalid_utf8_and_deep_nesting() {
        assert!(validate_json(br#"{"a":[1,2,{"b":null}]}"#).is_ok());
        assert!(validate_json(b"{not json").is_err());
        assert!(validate_json(b"\"\xff\"").is_err());
        assert!(validate_json(b"{} {}").is_err());
        let bomb = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(validate_json(bomb.as_bytes()).is_err());
        let deep_but_allowed = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(validate_json(deep_but_allowed.as_bytes()).is_ok());
        assert!(
            validate_json(br#"{"s": "[[[[\"[[[["}"#).is_ok(),
            "brackets inside strings do not count"
        );
    }
}
