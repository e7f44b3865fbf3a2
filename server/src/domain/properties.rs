//! Property tests of the edge parsers: whatever text arrives, parsing never panics, and what it
//! accepts keeps the invariants the rest of the server relies on (an http(s) target with a host and
//! no credentials; every spelling of an internal IPv4 address refused; event types from one alphabet).

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use url::Url;

use super::{EventType, MAX_EVENT_TYPE_LEN, TargetUrl};
use crate::delivery::ssrf::TargetPolicy;

/// Enough cases to find edge cases in text parsers while keeping `cargo test` quick.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // A failure prints its minimal input; it is not written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text assembled from URL parts, including the spellings parsers disagree on (`http:user@host` and
/// `http:\\host` are both full URLs to a WHATWG parser; `a@b@c` has two at-signs), so that many cases
/// get past the scheme and exercise credential, host and port handling.
fn url_like() -> impl Strategy<Value = String> {
    let scheme = proptest::sample::select(vec![
        "http",
        "https",
        "HTTP",
        "HtTpS",
        "ftp",
        "file",
        "ws",
        "javascript",
        "",
    ]);
    let separator = proptest::sample::select(vec!["://", ":/", ":", ":\\\\", ":/\\", "//"]);
    let userinfo = prop_oneof![
        proptest::sample::select(vec![
            "",
            "user@",
            "user:pw@",
            ":pw@",
            "@",
            ":@",
            "us%40er:p@ss@",
            "a@b@",
        ])
        .prop_map(str::to_owned),
        "[a-z:%@]{0,6}@",
    ];
    let host = prop_oneof![
        proptest::sample::select(vec![
            "example.com",
            "127.0.0.1",
            "[::1]",
            "",
            "x",
            "2130706433",
            "exa mple.com",
            "ex%41mple.com",
            "[::ffff:10.0.0.1]",
            "0x7f.1",
        ])
        .prop_map(str::to_owned),
        "[a-z0-9.-]{0,10}",
    ];
    let port = proptest::sample::select(vec!["", ":80", ":0", ":65535", ":65536", ":x", ":"]);
    let rest = "[/?#a-z@:\\\\]{0,8}";
    prop_oneof![
        (scheme, separator, userinfo, host, port, rest).prop_map(
            |(scheme, separator, userinfo, host, port, rest)| {
                format!("{scheme}{separator}{userinfo}{host}{port}{rest}")
            }
        ),
        "(http://)?[a-zA-Z0-9@:./\\\\\\[\\]%#?&=_~+ -]{0,40}",
    ]
}

/// The internal IPv4 ranges of the address policy, as (first address, prefix length).
const INTERNAL_V4_RANGES: [([u8; 4], u32); 14] = [
    ([0, 0, 0, 0], 8),
    ([10, 0, 0, 0], 8),
    ([100, 64, 0, 0], 10),
    ([127, 0, 0, 0], 8),
    ([169, 254, 0, 0], 16),
    ([172, 16, 0, 0], 12),
    ([192, 0, 0, 0], 24),
    ([192, 0, 2, 0], 24),
    ([192, 168, 0, 0], 16),
    ([198, 18, 0, 0], 15),
    ([198, 51, 100, 0], 24),
    ([203, 0, 113, 0], 24),
    ([224, 0, 0, 0], 4),
    ([240, 0, 0, 0], 4),
];

/// Any address inside one of [`INTERNAL_V4_RANGES`].
fn internal_v4() -> impl Strategy<Value = Ipv4Addr> {
    (0..INTERNAL_V4_RANGES.len(), any::<u32>()).prop_map(|(index, host_bits)| {
        let (first, prefix) = INTERNAL_V4_RANGES[index];
        let network = u32::from(Ipv4Addr::from(first));
        let host_mask = u32::MAX >> prefix;
        Ipv4Addr::from(network | (host_bits & host_mask))
    })
}

/// The ways a URL host can spell `ip` that URL parsers turn into the same address.
fn spellings(ip: Ipv4Addr) -> Vec<String> {
    let [a, b, c, d] = ip.octets();
    let number = u32::from(ip);
    vec![
        format!("{a}.{b}.{c}.{d}"),
        format!("{number}"),
        format!("0x{number:x}"),
        format!("0X{number:08X}"),
        format!("0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}"),
        format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
        // Fewer parts: the last one fills the remaining bytes.
        format!("{a}.{}", number & 0x00ff_ffff),
        format!("{a}.{b}.{}", number & 0x0000_ffff),
        format!("[::ffff:{a}.{b}.{c}.{d}]"),
        format!("[::ffff:{:x}:{:x}]", number >> 16, number & 0xffff),
    ]
}

/// Whether `value` holds only characters an event type may contain.
fn in_event_type_alphabet(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'))
}

/// Every printable ASCII character an event type may not contain, plus controls and non-ASCII
/// characters that other alphabets count as letters or digits.
fn characters_outside_the_alphabet() -> Vec<char> {
    let mut outside: Vec<char> = (' '..='~')
        .filter(|c| !in_event_type_alphabet(&c.to_string()))
        .collect();
    // Controls, then `é`, the Kelvin sign (which lowercases to `k`), an Arabic-Indic digit, a
    // fullwidth `A` and an emoji.
    outside.extend([
        '\0',
        '\t',
        '\n',
        '\u{7f}',
        '\u{e9}',
        '\u{212a}',
        '\u{663}',
        '\u{ff21}',
        '\u{1f600}',
    ]);
    outside
}

/// Strings mostly from the allowed alphabet with occasional other characters, around the length limit.
fn event_type_like() -> impl Strategy<Value = String> {
    let character = prop_oneof![
        8 => proptest::char::ranges(
            vec!['a'..='z', 'A'..='Z', '0'..='9', '.'..='.', '_'..='_', '-'..='-', ':'..=':', '/'..='/']
                .into()
        ),
        1 => any::<char>(),
    ];
    proptest::collection::vec(character, 0..=MAX_EVENT_TYPE_LEN + 4)
        .prop_map(|characters| characters.into_iter().collect())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn target_url_parsing_never_panics_and_accepts_only_http_urls_with_a_host_and_no_credentials(
        value in prop_oneof![any::<String>(), url_like()]
    ) {
        if let Ok(target) = TargetUrl::parse("subscription.target_url", &value) {
            let url = Url::parse(target.as_str()).expect("an accepted target is a valid URL");
            prop_assert!(matches!(url.scheme(), "http" | "https"), "{value:?} -> {url}");
            prop_assert!(url.host().is_some(), "{value:?} -> {url}");
            prop_assert!(url.username().is_empty(), "{value:?} -> {url}");
            prop_assert!(url.password().is_none(), "{value:?} -> {url}");
            prop_assert_eq!(target.uri().scheme_str(), Some(url.scheme()));
        }
    }

    #[test]
    fn every_spelling_of_an_internal_ipv4_address_is_a_literal_ip_the_default_policy_refuses(
        ip in internal_v4()
    ) {
        for spelling in spellings(ip) {
            let value = format!("http://{spelling}:8080/hook");
            let target = TargetUrl::parse("subscription.target_url", &value)
                .unwrap_or_else(|error| panic!("{value}: {}", error.message));
            let literal = target.literal_ip();
            let embedded = match literal {
                Some(IpAddr::V4(v4)) => Some(v4),
                Some(IpAddr::V6(v6)) => v6.to_ipv4_mapped(),
                None => None,
            };
            prop_assert_eq!(embedded, Some(ip), "{} parsed as {:?}", value, literal);
            let address = literal.expect("checked just above");
            prop_assert!(
                TargetPolicy::default().check(address).is_err(),
                "{} ({}) passed the default policy", value, address
            );
        }
    }

    #[test]
    fn every_event_type_from_the_alphabet_is_accepted_and_one_other_character_spoils_it(
        valid in "[A-Za-z0-9._:/-]{1,64}",
        position in any::<usize>(),
        generated in any::<char>(),
    ) {
        prop_assert!(EventType::parse("event_type", &valid).is_ok(), "{:?}", valid);
        let mut outside = characters_outside_the_alphabet();
        if !in_event_type_alphabet(&generated.to_string()) {
            outside.push(generated);
        }
        let at = position % (valid.len() + 1);
        for character in outside {
            let mut spoiled = valid.clone();
            spoiled.insert(at, character);
            prop_assert!(EventType::parse("event_type", &spoiled).is_err(), "{:?}", spoiled);
        }
    }

    #[test]
    fn event_types_are_accepted_exactly_when_they_use_the_allowed_alphabet_and_length(
        value in prop_oneof![event_type_like(), any::<String>()]
    ) {
        let expected = !value.is_empty()
            && value.len() <= MAX_EVENT_TYPE_LEN
            && in_event_type_alphabet(&value);
        let parsed = EventType::parse("event_type", &value);
        prop_assert_eq!(parsed.is_ok(), expected, "{:?}", value);
        if let Ok(event_type) = parsed {
            prop_assert_eq!(event_type.as_str(), value.as_str());
        }
    }
}
