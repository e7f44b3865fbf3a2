//! Test webhooks: a small, well-known event a person sends to a subscription to check that its target
//! receives and accepts deliveries. It goes through [`Service::ingest`] like any webhook, so it is
//! filtered, logged, retried and watched the same way. When the subscription has a secret, the server
//! signs the body with it, exactly as a sender would, so signed subscriptions can be tested too.

use std::time::SystemTime;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::SigningSecret;
use crate::error::ServiceError;

use super::{IngestReceipt, IngestRequest, Service};

/// The event type of test webhooks; a subscription filtering event types receives them only when it
/// lists this type.
const TEST_EVENT_TYPE: &str = "whd.test";

impl Service {
    /// Ingests `{"type":"whd.test","sent_at":"<RFC 3339>"}` for a subscription, signed with its
    /// current secret when it has one.
    pub async fn send_test_webhook(
        &self,
        subscription_id: &str,
    ) -> Result<IngestReceipt, ServiceError> {
        let subscription = self.get_subscription(subscription_id).await?;
        let body = test_body(SystemTime::now());
        let signature = subscription
            .secret
            .as_ref()
            .map(|secret| inbound_signature_header(secret, &body));
        self.ingest(IngestRequest {
            subscription_id: subscription.id.as_str(),
            content_type: Some("application/json"),
            event_type: Some(TEST_EVENT_TYPE),
            signature: signature.as_deref(),
            body,
        })
        .await
    }
}

fn test_body(sent_at: SystemTime) -> Bytes {
    let body = serde_json::json!({
        "type": TEST_EVENT_TYPE,
        "sent_at": humantime::format_rfc3339_millis(sent_at).to_string(),
    });
    Bytes::from(serde_json::to_vec(&body).expect("a JSON value serialises"))
}

/// `X-Hub-Signature-256` for `body`: `sha256=` and the lowercase hex HMAC-SHA256 keyed with the
/// secret string's bytes, the form ingest verifies.
fn inbound_signature_header(secret: &SigningSecret, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut header = String::with_capacity(7 + 64);
    header.push_str("sha256=");
    for byte in tag {
        header.push_str(&format!("{byte:02x}"));
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SubscriptionId, TargetUrl};
    use crate::store::SubscriptionRecord;

    #[test]
    fn the_signature_matches_the_documented_vector() {
        let secret = SigningSecret::from_trusted("It's a Secret to Everybody".to_owned());
        assert_eq!(
            inbound_signature_header(&secret, b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn ingest_accepts_the_signature_of_a_test_body() {
        let secret = SigningSecret::generate();
        let subscription = SubscriptionRecord {
            id: SubscriptionId::generate(),
            target_url: TargetUrl::parse("u", "https://example.com/").unwrap(),
            secret: Some(secret.clone()),
            previous_secret: None,
            previous_secret_until: None,
            event_types: vec![],
            description: String::new(),
            created_at: 0,
            updated_at: 0,
        };
        let body = test_body(SystemTime::UNIX_EPOCH);
        let header = inbound_signature_header(&secret, &body);
        super::super::inbound_signature::verify(&subscription, Some(&header), &body, 0).unwrap();
    }

    #[test]
    fn the_test_body_names_its_type_and_time() {
        let body: serde_json::Value =
            serde_json::from_slice(&test_body(SystemTime::UNIX_EPOCH)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "whd.test", "sent_at": "1970-01-01T00:00:00.000Z"})
        );
    }
}
