//! Standard Webhooks signatures: `v1,` followed by the base64 of
//! HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"). During a secret rotation a request
//! carries one signature per valid secret, separated by spaces, as the specification allows.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::SigningSecret;

/// The `webhook-signature` value for one message signed with every given secret.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a SigningSecret>,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let timestamp = timestamp.to_string();
    let mut header = String::new();
    for secret in secrets {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.key()).expect("HMAC accepts keys of any length");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        if !header.is_empty() {
            header.push(' ');
        }
        header.push_str("v1,");
        header.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's reference vector.
    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        let secret =
            SigningSecret::parse("secret", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let header = signature_header(
            [&secret],
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            br#"{"email":"test@example.com","username":"test_user"}"#,
        );
        assert_eq!(header, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn rotation_carries_one_signature_per_secret_separated_by_a_space() {
        let current = SigningSecret::generate();
        let previous =
            SigningSecret::parse("secret", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let header = signature_header(
            [&current, &previous],
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            body,
        );
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        assert!(parts[0].starts_with("v1,") && parts[0] != parts[1]);
    }
}
