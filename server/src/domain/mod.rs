//! Domain types parsed once at the edge (gRPC, HTTP, config) so that the rest of the server works with
//! values that are valid by construction.

mod ids;
#[cfg(test)]
mod properties;
mod secret;
mod status;
mod target_url;

pub use ids::{DeliveryId, SubscriptionId};
pub use secret::SigningSecret;
pub use status::{AttemptOutcome, DeliveryStatus, EventKind};
pub use target_url::{MAX_TARGET_URL_LEN, TargetUrl};

use crate::error::ServiceError;

/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 128;
/// Most event types one subscription may filter on.
pub const MAX_EVENT_TYPES: usize = 64;
/// Longest accepted subscription description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

/// A webhook's type, e.g. `invoice.paid`: 1 to 128 characters from `A-Z a-z 0-9 . _ - : /`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType(std::sync::Arc<str>);

impl EventType {
    /// Parses an event type; `field` names the input in the error.
    pub fn parse(field: &str, value: &str) -> Result<Self, ServiceError> {
        if value.is_empty() || value.len() > MAX_EVENT_TYPE_LEN {
            return Err(ServiceError::invalid_field(
                field,
                format!("event type must be 1 to {MAX_EVENT_TYPE_LEN} characters"),
            ));
        }
        let allowed =
            |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/');
        if !value.chars().all(allowed) {
            return Err(ServiceError::invalid_field(
                field,
                "event type may contain only letters, digits and . _ - : /",
            ));
        }
        Ok(EventType(std::sync::Arc::from(value)))
    }

    /// Parses a subscription's filter list: at most [`MAX_EVENT_TYPES`], duplicates removed, sorted.
    pub fn parse_list(field: &str, values: &[String]) -> Result<Vec<EventType>, ServiceError> {
        if values.len() > MAX_EVENT_TYPES {
            return Err(ServiceError::invalid_field(
                field,
                format!("at most {MAX_EVENT_TYPES} event types are allowed"),
            ));
        }
        let mut parsed = values
            .iter()
            .map(|value| EventType::parse(field, value))
            .collect::<Result<Vec<_>, _>>()?;
        parsed.sort();
        parsed.dedup();
        Ok(parsed)
    }

    /// The event type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The event type as shared text, for binding it to a statement without copying it.
    pub(crate) fn shared(&self) -> std::sync::Arc<str> {
        self.0.clone()
    }

    /// Wraps a value read back from the database, where it was validated on the way in.
    pub(crate) fn from_trusted(value: String) -> Self {
        EventType(std::sync::Arc::from(value))
    }
}

/// Checks a description's length.
pub fn validate_description(field: &str, description: &str) -> Result<(), ServiceError> {
    if description.len() > MAX_DESCRIPTION_LEN {
        return Err(ServiceError::invalid_field(
            field,
            format!("must be at most {MAX_DESCRIPTION_LEN} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_accept_dotted_names_and_reject_spaces_and_overlong_values() {
        assert!(EventType::parse("e", "invoice.paid").is_ok());
        assert!(EventType::parse("e", "repo/push:v2").is_ok());
        assert!(EventType::parse("e", "").is_err());
        assert!(EventType::parse("e", "has space").is_err());
        assert!(EventType::parse("e", &"x".repeat(MAX_EVENT_TYPE_LEN + 1)).is_err());
    }

    #[test]
    fn an_event_type_list_is_sorted_deduplicated_and_capped() {
        let list = EventType::parse_list("e", &["b".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(
            list.iter().map(EventType::as_str).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let too_many: Vec<String> = (0..=MAX_EVENT_TYPES).map(|i| format!("t{i}")).collect();
        assert!(EventType::parse_list("e", &too_many).is_err());
    }
}
