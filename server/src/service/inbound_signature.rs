//! Inbound webhook authentication: when a subscription has a secret, ingest requires
//! `X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256 of the raw body>`, keyed with the secret
//! string's bytes. The header must hold exactly 64 hex digits: an empty or truncated signature is a
//! wrong signature, never a prefix match. During a rotation's grace period the previous secret is
//! accepted too.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::SigningSecret;
use crate::error::{ErrorCode, ServiceError};
use crate::store::{Millis, SubscriptionRecord};

/// Checks the signature of a body sent to `subscription`.
pub(super) fn verify(
    subscription: &SubscriptionRecord,
    header: Option<&str>,
    body: &[u8],
    now: Millis,
) -> Result<(), ServiceError> {
    let Some(secret) = &subscription.secret else {
        return Ok(());
    };
    let header = header.ok_or_else(|| {
        ServiceError::new(
            ErrorCode::Unauthenticated,
            "this subscription requires an X-Hub-Signature-256 header",
        )
    })?;
    let wrong = || {
        ServiceError::new(
            ErrorCode::Unauthenticated,
            "X-Hub-Signature-256 does not match the body",
        )
    };
    let tag = parse_header(header).ok_or_else(wrong)?;
    let previous = subscription.previous_secret.as_ref().filter(|_| {
        subscription
            .previous_secret_until
            .is_some_and(|until| now < until)
    });
    if std::iter::once(secret)
        .chain(previous)
        .any(|secret| matches(secret, body, &tag))
    {
        Ok(())
    } else {
        Err(wrong())
    }
}

/// `sha256=` followed by exactly 64 lowercase hex digits.
fn parse_header(header: &str) -> Option<[u8; 32]> {
    let hex = header.strip_prefix("sha256=")?;
    if hex.len() != 64 {
        return None;
    }
    let mut tag = [0u8; 32];
    for (byte, pair) in tag.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(tag)
}

fn matches(secret: &SigningSecret, body: &[u8], tag: &[u8; 32]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    // Constant-time comparison of the full tag.
    mac.verify_slice(tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SubscriptionId, TargetUrl};

    const DOCS_HEADER: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn keyed(secret_text: &str) -> SubscriptionRecord {
        SubscriptionRecord {
            id: SubscriptionId::generate(),
            target_url: TargetUrl::parse("u", "https://example.com/").unwrap(),
            secret: Some(SigningSecret::from_trusted(secret_text.to_owned())),
            previous_secret: None,
            previous_secret_until: None,
            event_types: vec![],
            description: String::new(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn accepts_the_documented_vector() {
        let subscription = keyed("It's a Secret to Everybody");
        verify(&subscription, Some(DOCS_HEADER), b"Hello, World!", 0).unwrap();
    }

    #[test]
    fn rejects_missing_empty_truncated_uppercase_and_wrong_signatures() {
        let subscription = keyed("It's a Secret to Everybody");
        let upper = format!("sha256={}", DOCS_HEADER[7..].to_uppercase());
        let truncated = &DOCS_HEADER[..DOCS_HEADER.len() - 2];
        for header in [
            None,
            Some(""),
            Some("sha256="),
            Some(truncated),
            Some(upper.as_str()),
            Some("sha1=abc"),
        ] {
            let error = verify(&subscription, header, b"Hello, World!", 0).unwrap_err();
            assert_eq!(error.code, ErrorCode::Unauthenticated, "{header:?}");
        }
        assert!(verify(&subscription, Some(DOCS_HEADER), b"Hello, World?", 0).is_err());
    }

    #[test]
    fn the_previous_secret_is_accepted_only_during_its_grace_period() {
        let mut subscription = keyed("a new secret");
        subscription.previous_secret = Some(SigningSecret::from_trusted(
            "It's a Secret to Everybody".into(),
        ));
        subscription.previous_secret_until = Some(1_000);
        assert!(verify(&subscription, Some(DOCS_HEADER), b"Hello, World!", 999).is_ok());
        assert!(verify(&subscription, Some(DOCS_HEADER), b"Hello, World!", 1_000).is_err());
    }

    #[test]
    fn subscriptions_without_a_secret_need_no_signature() {
        let mut subscription = keyed("x");
        subscription.secret = None;
        assert!(verify(&subscription, None, b"{}", 0).is_ok());
    }
}
