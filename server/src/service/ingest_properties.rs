//! Property tests of what ingest checks before it queues anything: the JSON validation of the body and
//! the `X-Hub-Signature-256` format. Both see bytes from anyone on the network, so they must never
//! panic, must accept every well-formed input, and must not be talked into a prefix or case match.

use hmac::{Hmac, Mac};
use proptest::prelude::*;
use serde_json::Value;
use sha2::Sha256;

use super::inbound_signature;
use super::ingest::{MAX_JSON_DEPTH, validate_json};
use crate::domain::{SigningSecret, SubscriptionId, TargetUrl};
use crate::error::ErrorCode;
use crate::store::SubscriptionRecord;

/// Enough cases to find edge cases in byte-level parsers while keeping `cargo test` quick.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // A failure prints its minimal input; it is not written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings that stress the bracket counter: quotes, backslashes, brackets and non-ASCII text.
fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\[\\]{}\"\\\\/a\u{e9}\u{1F600}\\x00-\\x1f]{0,12}",
    ]
}

/// Arbitrary JSON values up to a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // serde_json turns non-finite floats into null, which is still valid JSON.
        any::<f64>().prop_map(Value::from),
        tricky_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((tricky_string(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Nesting depth as the validator counts it: each array or object is one level.
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(entries) => 1 + entries.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// `value` wrapped in `levels` arrays and objects, alternating.
fn wrapped(mut value: Value, levels: usize) -> Value {
    for level in 0..levels {
        value = if level % 2 == 0 {
            Value::Array(vec![value])
        } else {
            Value::Object([("k".to_owned(), value)].into_iter().collect())
        };
    }
    value
}

/// A JSON value of any depth up to a little beyond the limit, often exactly at it or one past it.
fn deep_json_value() -> impl Strategy<Value = Value> {
    let target_depth = prop_oneof![
        2 => 0..=MAX_JSON_DEPTH + 4,
        1 => Just(MAX_JSON_DEPTH),
        1 => Just(MAX_JSON_DEPTH + 1),
    ];
    (json_value(), target_depth).prop_map(|(value, target_depth)| {
        let levels = target_depth.saturating_sub(depth(&value));
        wrapped(value, levels)
    })
}

/// Byte sequences that are never valid UTF-8 wherever they are inserted between characters.
const INVALID_UTF8: [&[u8]; 6] = [
    b"\xff",
    b"\x80",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
];

fn subscription_with_secret(secret: &str) -> SubscriptionRecord {
    SubscriptionRecord {
        id: SubscriptionId::generate(),
        target_url: TargetUrl::parse("target_url", "https://example.com/hook")
            .expect("a valid literal URL"),
        secret: Some(SigningSecret::from_trusted(secret.to_owned())),
        previous_secret: None,
        previous_secret_until: None,
        event_types: vec![],
        description: String::new(),
        created_at: 0,
        updated_at: 0,
    }
}

/// The correct header, computed here with the documented rule: lowercase hex of HMAC-SHA256 of the
/// body, keyed with the secret string's bytes.
fn correct_header(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Headers that differ from `correct` only in form: each is not `sha256=` followed by exactly 64
/// lowercase hex digits, yet most still contain the right digits.
fn malformed_variants(correct: &str, cut: usize, extra: char, position: usize) -> Vec<String> {
    let hex = &correct["sha256=".len()..];
    let mut variants = vec![
        format!("SHA256={hex}"),
        format!("sha-256={hex}"),
        format!("sha1={hex}"),
        hex.to_owned(),
        format!(" {correct}"),
        format!("{correct} "),
        format!("sha256= {hex}"),
        format!("sha256={hex}{extra}"),
        format!("sha256={hex}{hex}"),
        correct[..cut.min(correct.len() - 1)].to_owned(),
        "sha256=".to_owned(),
    ];
    // All digits in uppercase; unless, against odds of about 1 in 10^13, the tag has no letter.
    if hex.bytes().any(|digit| digit.is_ascii_alphabetic()) {
        variants.push(format!("sha256={}", hex.to_uppercase()));
    }
    // One digit replaced by its uppercase form or by a non-hex character.
    let index = position % hex.len();
    let digit = hex.as_bytes()[index] as char;
    for replacement in [digit.to_ascii_uppercase(), 'g', 'x', ' ', '\u{e9}'] {
        if replacement != digit {
            variants.push(format!(
                "sha256={}{replacement}{}",
                &hex[..index],
                &hex[index + 1..]
            ));
        }
    }
    variants
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn json_validation_never_panics_on_arbitrary_bytes(
        body in prop_oneof![
            any::<Vec<u8>>(),
            "[\\[\\]{}\",:0-9a-z\\\\ ]{0,80}".prop_map(String::into_bytes),
        ]
    ) {
        let _ = validate_json(&body);
    }

    #[test]
    fn every_serialised_json_value_within_the_depth_limit_is_accepted(
        value in deep_json_value(),
        pretty in any::<bool>(),
    ) {
        let body = if pretty {
            serde_json::to_vec_pretty(&value)
        } else {
            serde_json::to_vec(&value)
        }
        .expect("a Value always serialises");
        let result = validate_json(&body);
        if depth(&value) <= MAX_JSON_DEPTH {
            prop_assert!(
                result.is_ok(),
                "depth {}: {}: {}",
                depth(&value),
                result.unwrap_err().message,
                String::from_utf8_lossy(&body)
            );
        } else {
            let error = result.expect_err("deeper than the limit");
            prop_assert_eq!(error.code, ErrorCode::InvalidArgument);
        }
    }

    #[test]
    fn a_body_that_is_not_valid_utf8_is_rejected_as_such(
        value in json_value(),
        position in any::<usize>(),
        invalid in proptest::sample::select(INVALID_UTF8.to_vec()),
    ) {
        let text = serde_json::to_string(&value).expect("a Value always serialises");
        // Insert between characters, so the inserted bytes cannot complete a character.
        let boundaries: Vec<usize> = text
            .char_indices()
            .map(|(index, _)| index)
            .chain([text.len()])
            .collect();
        let at = boundaries[position % boundaries.len()];
        let mut body = text.as_bytes()[..at].to_vec();
        body.extend_from_slice(invalid);
        body.extend_from_slice(&text.as_bytes()[at..]);
        prop_assume!(std::str::from_utf8(&body).is_err());

        let error = validate_json(&body).expect_err("invalid UTF-8 is refused");
        prop_assert_eq!(error.code, ErrorCode::InvalidArgument);
        prop_assert!(error.message.contains("UTF-8"), "{}", error.message);
    }

    #[test]
    fn the_signature_header_is_accepted_only_as_sha256_and_64_lowercase_hex_digits(
        secret in "[ -~]{1,40}",
        body in any::<Vec<u8>>(),
        cut in any::<usize>(),
        extra in any::<char>(),
        position in any::<usize>(),
    ) {
        let subscription = subscription_with_secret(&secret);
        let correct = correct_header(&secret, &body);
        prop_assert!(
            inbound_signature::verify(&subscription, Some(&correct), &body, 0).is_ok(),
            "{correct}"
        );
        for header in malformed_variants(&correct, cut, extra, position) {
            prop_assert_ne!(&header, &correct);
            let error = inbound_signature::verify(&subscription, Some(&header), &body, 0)
                .expect_err("a malformed signature is refused");
            prop_assert_eq!(error.code, ErrorCode::Unauthenticated, "{:?}", header);
        }
    }

    #[test]
    fn arbitrary_signature_headers_never_panic_and_never_pass(
        header in prop_oneof![any::<String>(), "sha256=[0-9a-fA-F]{0,70}"],
        body in any::<Vec<u8>>(),
    ) {
        let subscription = subscription_with_secret("It's a Secret to Everybody");
        prop_assume!(header != correct_header("It's a Secret to Everybody", &body));
        let error = inbound_signature::verify(&subscription, Some(&header), &body, 0)
            .expect_err("a header that is not the body's signature is refused");
        prop_assert_eq!(error.code, ErrorCode::Unauthenticated);
    }
}
