//! Identifiers. Both are random enough to be unguessable: knowing one id tells nothing about another.
//!
//! An id is shared text: every task, log entry and batch statement that carries it clones a pointer,
//! not the characters.

use std::fmt;
use std::sync::Arc;

use crate::error::ServiceError;

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// Parses an id given by a client. An id that is malformed cannot exist, so it is reported
            /// as not found rather than as invalid: the client asked for something that is not there.
            pub fn parse(value: &str) -> Result<Self, ServiceError> {
                let well_formed = value
                    .strip_prefix($prefix)
                    .is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()));
                if well_formed {
                    Ok($name(Arc::from(value)))
                } else if value.is_empty() {
                    Err(ServiceError::invalid_field("id", concat!("a ", $kind, " id is required")))
                } else {
                    Err(ServiceError::not_found($kind, value))
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as shared text, for binding it to a statement without copying it.
            pub(crate) fn shared(&self) -> Arc<str> {
                self.0.clone()
            }

            /// Wraps a value read back from the database.
            pub(crate) fn from_trusted(value: String) -> Self {
                $name(Arc::from(value))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// A subscription's id: `sub_` and 32 hex digits of a random (v4) UUID.
    SubscriptionId,
    "sub_",
    "subscription"
);

prefixed_id!(
    /// A delivery's id, also sent as `webhook-id`: `msg_` and 32 hex digits of a v7 UUID, whose time
    /// prefix keeps new rows at the end of the primary-key index while 74 random bits keep it unguessable.
    DeliveryId,
    "msg_",
    "delivery"
);

impl SubscriptionId {
    /// A fresh random id.
    pub fn generate() -> Self {
        SubscriptionId(Arc::from(format!("sub_{}", uuid::Uuid::new_v4().simple())))
    }
}

impl DeliveryId {
    /// A fresh id, ordered by creation time (to the millisecond; random within one).
    pub fn generate() -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        // One call per webhook: the thread's generator and a stack buffer, no lock and no formatter.
        let uuid = uuid::Builder::from_unix_timestamp_millis(millis, &rand::random()).into_uuid();
        let mut text = [0u8; 4 + uuid::fmt::Simple::LENGTH];
        text[..4].copy_from_slice(b"msg_");
        uuid.simple().encode_lower(&mut text[4..]);
        let text = std::str::from_utf8(&text).expect("a prefix and hex digits are ASCII");
        DeliveryId(Arc::from(text))
    }

    /// The smallest id a delivery created at `millis` (since the epoch) can have: ids sort by their
    /// leading 48-bit timestamp, so every delivery created earlier sorts below it.
    pub fn first_at(millis: i64) -> String {
        let timestamp = u64::try_from(millis).unwrap_or(0) & 0xffff_ffff_ffff;
        format!("msg_{timestamp:012x}{}", "0".repeat(20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn generated_ids_parse_back_and_differ() {
        let a = SubscriptionId::generate();
        let b = SubscriptionId::generate();
        assert_ne!(a, b);
        assert_eq!(SubscriptionId::parse(a.as_str()).unwrap(), a);
        let d = DeliveryId::generate();
        assert_eq!(DeliveryId::parse(d.as_str()).unwrap(), d);
    }

    #[test]
    fn a_delivery_id_is_a_version_7_uuid_of_the_current_time() {
        let before = crate::store::now_millis();
        let id = DeliveryId::generate();
        let after = crate::store::now_millis();
        let uuid = uuid::Uuid::parse_str(id.as_str().strip_prefix("msg_").unwrap()).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        let (seconds, nanos) = uuid.get_timestamp().unwrap().to_unix();
        let millis = (seconds * 1000 + u64::from(nanos) / 1_000_000) as i64;
        assert!(
            (before..=after).contains(&millis),
            "{before} <= {millis} <= {after}"
        );
    }

    #[test]
    fn ids_created_before_an_instant_sort_below_its_first_id() {
        let before = DeliveryId::generate();
        let boundary = DeliveryId::first_at(crate::store::now_millis() + 1);
        assert!(before.as_str() < boundary.as_str(), "{before} < {boundary}");
        assert!(boundary.as_str() < DeliveryId::first_at(crate::store::now_millis() + 10).as_str());
        assert_eq!(boundary.len(), before.as_str().len());
    }

    #[test]
    fn a_malformed_id_is_not_found_and_an_empty_one_is_invalid() {
        assert_eq!(
            SubscriptionId::parse("sub_nope").unwrap_err().code,
            ErrorCode::NotFound
        );
        assert_eq!(
            SubscriptionId::parse(DeliveryId::generate().as_str())
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
        assert_eq!(
            SubscriptionId::parse("").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }
}
