//! Checking Standard Webhooks signatures, for `whctl listen --secret`.
//!
//! A signed webhook carries `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`:
//! one or more space-separated `v1,<base64>` entries, each the HMAC-SHA256 of
//! `"{webhook-id}.{webhook-timestamp}.{body}"` keyed with the base64-decoded part of the secret after
//! `whsec_`. A message is valid when any `v1` entry matches (a sender rotating its secret signs with
//! both); entries of other versions are ignored. Timestamps more than [`TOLERANCE_SECS`] away from now,
//! in either direction, are rejected so that a captured request cannot be replayed later.
//!
//! Tags are compared in constant time ([`Mac::verify_slice`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a `webhook-timestamp` may be from now, in seconds: five minutes, as the specification's
/// reference verifiers allow.
pub(crate) const TOLERANCE_SECS: i64 = 300;

/// Prefix of a Standard Webhooks secret.
const SECRET_PREFIX: &str = "whsec_";

/// The HMAC key of a Standard Webhooks secret.
#[derive(Clone)]
pub(crate) struct Secret {
    key: Vec<u8>,
}

// Written by hand so that the key never ends up in output.
impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>`; the bare base64 is accepted too, as the reference libraries do.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "must be whsec_ followed by base64".to_owned())?;
        if key.is_empty() {
            return Err("must be whsec_ followed by base64 of at least one byte".into());
        }
        Ok(Self { key })
    }
}

/// The signature headers of one request, as received (absent headers are `None`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SignatureHeaders<'a> {
    /// `webhook-id`.
    pub(crate) id: Option<&'a str>,
    /// `webhook-timestamp`, Unix seconds.
    pub(crate) timestamp: Option<&'a str>,
    /// `webhook-signature`.
    pub(crate) signature: Option<&'a str>,
}

/// Why a request's signature was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Invalid {
    /// A required header is absent.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not an integer.
    #[error("webhook-timestamp is not a number of seconds")]
    MalformedTimestamp,
    /// `webhook-timestamp` is too far from now.
    #[error("timestamp is {age_secs}s from now, more than the {TOLERANCE_SECS}s allowed")]
    StaleTimestamp {
        /// Distance from now in seconds; positive when the timestamp is in the past.
        age_secs: i64,
    },
    /// `webhook-signature` holds no `v1` entry.
    #[error("webhook-signature holds no v1 signature")]
    NoV1Signature,
    /// No `v1` entry matches the body and headers.
    #[error("no signature matches")]
    Mismatch,
}

/// Checks the signature of `body` received with `headers`, at `now` (Unix seconds).
pub(crate) fn verify(
    secret: &Secret,
    headers: SignatureHeaders<'_>,
    body: &[u8],
    now: i64,
) -> Result<(), Invalid> {
    let id = headers.id.ok_or(Invalid::MissingHeader("webhook-id"))?;
    let timestamp = headers
        .timestamp
        .ok_or(Invalid::MissingHeader("webhook-timestamp"))?;
    let signatures = headers
        .signature
        .ok_or(Invalid::MissingHeader("webhook-signature"))?;

    let seconds: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Invalid::MalformedTimestamp)?;
    let age_secs = now.saturating_sub(seconds);
    if age_secs.saturating_abs() > TOLERANCE_SECS {
        return Err(Invalid::StaleTimestamp { age_secs });
    }

    let mut mac =
        Hmac::<Sha256>::new_from_slice(&secret.key).expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);

    let mut saw_v1 = false;
    for entry in signatures.split(' ').filter(|entry| !entry.is_empty()) {
        let Some(("v1", encoded)) = entry.split_once(',') else {
            continue;
        };
        saw_v1 = true;
        // An entry that is not base64 cannot match; the others may still.
        let Ok(tag) = STANDARD.decode(encoded) else {
            continue;
        };
        if mac.clone().verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    if saw_v1 {
        Err(Invalid::Mismatch)
    } else {
        Err(Invalid::NoV1Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The specification's reference vector (see shared signature-vectors.md).
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: &str = "1649367553";
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
    const SIGNED_AT: i64 = 1_649_367_553;

    fn headers(signature: &str) -> SignatureHeaders<'_> {
        SignatureHeaders {
            id: Some(ID),
            timestamp: Some(TIMESTAMP),
            signature: Some(signature),
        }
    }

    fn secret() -> Secret {
        Secret::parse(SECRET).unwrap()
    }

    #[test]
    fn reference_vector_is_valid() {
        assert_eq!(
            verify(&secret(), headers(SIGNATURE), BODY, SIGNED_AT),
            Ok(())
        );
    }

    #[test]
    fn secret_without_prefix_is_accepted() {
        let bare = Secret::parse(SECRET.trim_start_matches("whsec_")).unwrap();

        assert_eq!(verify(&bare, headers(SIGNATURE), BODY, SIGNED_AT), Ok(()));
    }

    #[test]
    fn wrong_secret_does_not_match() {
        let wrong = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();

        assert_eq!(
            verify(&wrong, headers(SIGNATURE), BODY, SIGNED_AT),
            Err(Invalid::Mismatch)
        );
    }

    #[test]
    fn tampered_body_does_not_match() {
        let tampered = br#"{"email":"test@example.com","username":"test_user2"}"#;

        assert_eq!(
            verify(&secret(), headers(SIGNATURE), tampered, SIGNED_AT),
            Err(Invalid::Mismatch)
        );
    }

    #[test]
    fn tampered_id_does_not_match() {
        let headers = SignatureHeaders {
            id: Some("msg_other"),
            ..headers(SIGNATURE)
        };

        assert_eq!(
            verify(&secret(), headers, BODY, SIGNED_AT),
            Err(Invalid::Mismatch)
        );
    }

    #[test]
    fn timestamp_older_than_five_minutes_is_rejected() {
        let now = SIGNED_AT + TOLERANCE_SECS + 1;

        assert_eq!(
            verify(&secret(), headers(SIGNATURE), BODY, now),
            Err(Invalid::StaleTimestamp { age_secs: 301 })
        );
    }

    #[test]
    fn timestamp_more_than_five_minutes_ahead_is_rejected() {
        let now = SIGNED_AT - TOLERANCE_SECS - 1;

        assert_eq!(
            verify(&secret(), headers(SIGNATURE), BODY, now),
            Err(Invalid::StaleTimestamp { age_secs: -301 })
        );
    }

    #[test]
    fn timestamp_exactly_five_minutes_old_is_still_accepted() {
        let now = SIGNED_AT + TOLERANCE_SECS;

        assert_eq!(verify(&secret(), headers(SIGNATURE), BODY, now), Ok(()));
    }

    #[test]
    fn any_matching_signature_among_several_is_enough() {
        let rotated = format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,ignored {SIGNATURE} v1,not-base64!"
        );

        assert_eq!(
            verify(&secret(), headers(&rotated), BODY, SIGNED_AT),
            Ok(())
        );
    }

    #[test]
    fn several_signatures_none_matching_is_a_mismatch() {
        let others = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,AAAA";

        assert_eq!(
            verify(&secret(), headers(others), BODY, SIGNED_AT),
            Err(Invalid::Mismatch)
        );
    }

    #[test]
    fn only_other_versions_means_no_v1_signature() {
        let tag = SIGNATURE.trim_start_matches("v1,");
        let header = format!("v2,{tag} v1a,{tag}");

        assert_eq!(
            verify(&secret(), headers(&header), BODY, SIGNED_AT),
            Err(Invalid::NoV1Signature)
        );
    }

    #[test]
    fn missing_headers_are_named() {
        let without_id = SignatureHeaders {
            id: None,
            ..headers(SIGNATURE)
        };
        let without_signature = SignatureHeaders {
            signature: None,
            ..headers(SIGNATURE)
        };

        assert_eq!(
            verify(&secret(), without_id, BODY, SIGNED_AT),
            Err(Invalid::MissingHeader("webhook-id"))
        );
        assert_eq!(
            verify(&secret(), without_signature, BODY, SIGNED_AT)
                .unwrap_err()
                .to_string(),
            "missing webhook-signature header"
        );
    }

    #[test]
    fn malformed_timestamp_is_rejected() {
        let headers = SignatureHeaders {
            timestamp: Some("yesterday"),
            ..headers(SIGNATURE)
        };

        assert_eq!(
            verify(&secret(), headers, BODY, SIGNED_AT),
            Err(Invalid::MalformedTimestamp)
        );
    }

    #[test]
    fn secret_that_is_not_base64_is_refused() {
        assert!(Secret::parse("whsec_not base64!").is_err());
        assert!(Secret::parse("whsec_").is_err());
        assert!(!format!("{:?}", secret()).contains("C2FV"));
    }
}
