//! A subscription's target: an absolute http(s) URL without credentials, parsed with the WHATWG URL
//! rules, which also normalise every spelling of an IP address (decimal `2130706433`, octal `0177.0.0.1`,
//! hex `0x7f.1`, bracketed IPv6) to its canonical form — the form the SSRF policy then inspects.

use std::net::IpAddr;

use url::{Host, Url};

use crate::error::ServiceError;

/// Longest accepted target URL, in bytes.
pub const MAX_TARGET_URL_LEN: usize = 2048;

/// A validated target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    url: Url,
    uri: http::Uri,
    host_header: http::HeaderValue,
}

impl TargetUrl {
    /// Parses and validates a target URL; `field` names the input in errors.
    pub fn parse(field: &str, value: &str) -> Result<Self, ServiceError> {
        if value.is_empty() {
            return Err(ServiceError::invalid_field(field, "is required"));
        }
        if value.len() > MAX_TARGET_URL_LEN {
            return Err(ServiceError::invalid_field(
                field,
                format!("must be at most {MAX_TARGET_URL_LEN} bytes"),
            ));
        }
        let url = Url::parse(value).map_err(|error| {
            ServiceError::invalid_field(
                field,
                format!("must be an absolute http or https URL ({error})"),
            )
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ServiceError::invalid_field(
                field,
                "must be an absolute http or https URL",
            ));
        }
        if url.host().is_none() {
            return Err(ServiceError::invalid_field(field, "must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ServiceError::invalid_field(
                field,
                "must not contain credentials (user:password@)",
            ));
        }
        if url.fragment().is_some() {
            return Err(ServiceError::invalid_field(
                field,
                "must not contain a fragment (#...)",
            ));
        }
        let uri = url.as_str().parse::<http::Uri>().map_err(|error| {
            ServiceError::invalid_field(field, format!("is not a valid request URI ({error})"))
        })?;
        // The authority as sent in `host`: the host, and the port unless it is the scheme's default
        // (which the URL parser has already dropped).
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let host_header = http::HeaderValue::from_str(&authority).map_err(|error| {
            ServiceError::invalid_field(field, format!("has an invalid host ({error})"))
        })?;
        Ok(TargetUrl {
            url,
            uri,
            host_header,
        })
    }

    /// The canonical URL text.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The URL as a request URI, parsed once here rather than on every attempt.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// The `host` header of a request to this URL, built once here rather than on every attempt.
    pub fn host_header(&self) -> &http::HeaderValue {
        &self.host_header
    }

    /// The host's IP address when the URL names one literally.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        match self.url.host()? {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_http_and_https_urls() {
        assert_eq!(
            TargetUrl::parse("u", "https://example.com/hook?x=1")
                .unwrap()
                .as_str(),
            "https://example.com/hook?x=1"
        );
        assert_eq!(
            TargetUrl::parse("u", "http://127.0.0.1:8080")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8080/"
        );
    }

    #[test]
    fn the_host_header_carries_the_port_only_when_it_is_not_the_default() {
        let host = |url: &str| {
            TargetUrl::parse("u", url)
                .unwrap()
                .host_header()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(host("https://example.com/hook"), "example.com");
        assert_eq!(host("https://example.com:443/hook"), "example.com");
        assert_eq!(host("http://127.0.0.1:8080/"), "127.0.0.1:8080");
        assert_eq!(host("http://[::1]:9000/"), "[::1]:9000");
    }

    #[test]
    fn rejects_relative_urls_other_schemes_and_credentials() {
        for bad in [
            "",
            "/hook",
            "example.com",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "file:///etc/passwd",
        ] {
            let error = TargetUrl::parse("subscription.target_url", bad).unwrap_err();
            assert!(
                error.message.starts_with("subscription.target_url: "),
                "{bad}: {}",
                error.message
            );
        }
    }

    #[test]
    fn every_spelling_of_an_ip_address_is_normalised() {
        for spelling in [
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://127.1/",
        ] {
            let url = TargetUrl::parse("u", spelling).unwrap();
            assert_eq!(
                url.literal_ip(),
                Some("127.0.0.1".parse().unwrap()),
                "{spelling}"
            );
        }
        let mapped = TargetUrl::parse("u", "http://[::ffff:127.0.0.1]/").unwrap();
        assert_eq!(
            mapped.literal_ip(),
            Some("::ffff:127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn overlong_urls_are_rejected() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_TARGET_URL_LEN));
        assert!(TargetUrl::parse("u", &long).is_err());
    }
}
