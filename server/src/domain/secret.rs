//! Standard Webhooks signing secrets: `whsec_` followed by the base64 of the HMAC key.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

use crate::error::ServiceError;

const PREFIX: &str = "whsec_";
/// Fewest key bytes accepted; 24 bytes (192 bits) is the specification's minimum.
const MIN_KEY_LEN: usize = 24;
/// Most key bytes accepted.
const MAX_KEY_LEN: usize = 64;
/// Key length of generated secrets.
const GENERATED_KEY_LEN: usize = 32;

/// A signing secret. Its `Debug` output is redacted so that it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    text: String,
    key: Vec<u8>,
}

impl SigningSecret {
    /// Parses `whsec_<base64 key>`; `field` names the input in errors.
    pub fn parse(field: &str, value: &str) -> Result<Self, ServiceError> {
        let rule = format!(
            "must be whsec_ followed by the base64 of {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes"
        );
        let encoded = value
            .strip_prefix(PREFIX)
            .ok_or_else(|| ServiceError::invalid_field(field, rule.clone()))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| ServiceError::invalid_field(field, rule.clone()))?;
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            return Err(ServiceError::invalid_field(field, rule));
        }
        Ok(SigningSecret {
            text: value.to_owned(),
            key,
        })
    }

    /// A new secret with a random 32-byte key.
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_KEY_LEN];
        // The thread-local generator is a CSPRNG seeded from the operating system.
        rand::rng().fill_bytes(&mut key);
        SigningSecret {
            text: format!("{PREFIX}{}", STANDARD.encode(&key)),
            key,
        }
    }

    /// The HMAC key for outbound Standard Webhooks signatures.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The secret as the subscriber sees it (`whsec_…`). Its bytes are also the key for inbound
    /// `X-Hub-Signature-256` checks.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// Wraps a value read back from the database, where it was validated on the way in.
    pub(crate) fn from_trusted(text: String) -> Self {
        let key = text
            .strip_prefix(PREFIX)
            .and_then(|encoded| STANDARD.decode(encoded).ok())
            .unwrap_or_default();
        SigningSecret { text, key }
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_specification_example_secret() {
        let secret = SigningSecret::parse("s", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(secret.key().len(), 24);
    }

    #[test]
    fn rejects_secrets_without_prefix_bad_base64_or_short_keys() {
        for bad in [
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_!!!",
            "whsec_c2hvcnQ=",
            "",
        ] {
            assert!(SigningSecret::parse("s", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_secrets_round_trip_and_never_print() {
        let secret = SigningSecret::generate();
        assert_eq!(SigningSecret::parse("s", secret.expose()).unwrap(), secret);
        assert_eq!(format!("{secret:?}"), "SigningSecret(redacted)");
    }
}
