//! Posting webhooks to the HTTP ingest endpoint (`POST {ingest_url}/ingest/{subscription_id}`).
//!
//! One pooled, keep-alive HTTP/1.1 client is shared by every clone of a [`Client`](crate::Client), so
//! repeated ingests reuse connections. Only plain `http://` is supported.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Header carrying the event type of an ingested webhook.
const EVENT_TYPE_HEADER: &str = "x-event-type";

/// Header carrying the sender's signature of an ingested webhook (`sha256=<hex>`).
const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Gives up dialling the ingest endpoint after this long, so a wrong address fails instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle pooled connections are closed after this long; well under common server idle timeouts, so a
/// reused connection is rarely one the server is about to close.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The ingest endpoint answers with a small JSON object; anything larger is not an answer we expect.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Optional parts of an ingest request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestOptions {
    /// Event type, sent as `X-Event-Type`. Subscriptions that list event types only receive matching ones.
    pub event_type: Option<String>,
    /// Signature of the body by the sender, sent as `X-Hub-Signature-256` (e.g. `sha256=<hex>`).
    pub signature: Option<String>,
}

/// What the ingest endpoint did with an accepted webhook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReceipt {
    /// Id of the delivery created for the webhook; `None` when it was filtered out.
    pub delivery_id: Option<String>,
    /// Whether the subscription's event-type filter dropped the webhook, so nothing will be delivered.
    pub filtered: bool,
}

/// The pooled HTTP client and the parsed ingest base URL.
#[derive(Clone, Debug)]
pub(crate) struct IngestClient {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    /// Base URL without a trailing slash.
    base_url: String,
    /// `Bearer <token>`, marked sensitive so that it is never printed by `Debug`.
    authorization: Option<HeaderValue>,
}

impl IngestClient {
    /// Checks `ingest_url` and builds the pooled client. Needs no I/O.
    pub(crate) fn new(ingest_url: &str, api_token: Option<&str>) -> Result<Self, Error> {
        let base_url = ingest_url.trim_end_matches('/').to_owned();
        let uri: Uri = base_url.parse().map_err(|error| {
            Error::InvalidConfig(format!(
                "ingest url {ingest_url:?} is not a valid url: {error}"
            ))
        })?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(Error::InvalidConfig(format!(
                "ingest url {ingest_url:?} must be an absolute http:// url"
            )));
        }

        let authorization = api_token.map(bearer_header).transpose()?;

        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);

        Ok(Self {
            http,
            base_url,
            authorization,
        })
    }

    /// Posts `body` as JSON for `subscription_id` and interprets the answer.
    pub(crate) async fn ingest(
        &self,
        subscription_id: &str,
        body: Bytes,
        options: IngestOptions,
    ) -> Result<IngestReceipt, Error> {
        let url = ingest_url_for(&self.base_url, subscription_id);
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(event_type) = &options.event_type {
            request = request.header(EVENT_TYPE_HEADER, header_value("event type", event_type)?);
        }
        if let Some(signature) = &options.signature {
            request = request.header(SIGNATURE_HEADER, header_value("signature", signature)?);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request.body(Full::new(body)).map_err(|error| {
            Error::InvalidArgument(format!("cannot build ingest request: {error}"))
        })?;

        let response = self
            .http
            .request(request)
            .await
            .map_err(|source| Error::Http {
                url: url.clone(),
                source: Box::new(source),
            })?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|source| Error::Http { url, source })?
            .to_bytes();

        parse_ingest_response(status, &body)
    }
}

/// Builds `Bearer <token>` as a sensitive header value.
pub(crate) fn bearer_header(token: &str) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
        Error::InvalidConfig("api token contains characters not allowed in a header".into())
    })?;
    // Keeps the token out of `Debug` output and out of HTTP/2 header compression tables.
    value.set_sensitive(true);
    Ok(value)
}

fn header_value(what: &str, value: &str) -> Result<HeaderValue, Error> {
    HeaderValue::try_from(value).map_err(|_| {
        Error::InvalidArgument(format!(
            "{what} {value:?} contains characters not allowed in a header"
        ))
    })
}

/// Joins the base URL and the percent-encoded subscription id into the ingest URL.
fn ingest_url_for(base_url: &str, subscription_id: &str) -> String {
    format!("{base_url}/ingest/{}", encode_path_segment(subscription_id))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so that any id stays one path segment.
fn encode_path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The JSON body of a 2xx answer.
#[derive(Deserialize)]
struct AcceptedBody {
    delivery_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// The JSON body of an error answer.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// Turns the ingest endpoint's answer into a receipt or an [`Error::Ingest`].
fn parse_ingest_response(status: u16, body: &[u8]) -> Result<IngestReceipt, Error> {
    if !(200..300).contains(&status) {
        let message = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => error,
            Err(_) => fallback_message(status, body),
        };
        return Err(Error::Ingest { status, message });
    }

    let accepted: AcceptedBody = serde_json::from_slice(body).map_err(|error| {
        Error::InvalidResponse(format!(
            "HTTP {status} with a body that is not the expected JSON: {error}"
        ))
    })?;
    let filtered = accepted.status.as_deref() == Some("filtered") || accepted.delivery_id.is_none();
    Ok(IngestReceipt {
        delivery_id: accepted.delivery_id,
        filtered,
    })
}

/// Describes an error answer that did not carry the JSON `error` field (e.g. from a proxy).
fn fallback_message(status: u16, body: &[u8]) -> String {
    const MAX_CHARS: usize = 200;
    let text = String::from_utf8_lossy(body);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|code| code.canonical_reason());
        return reason.unwrap_or("no error message").to_lowercase();
    }
    if text.chars().count() > MAX_CHARS {
        let truncated: String = text.chars().take(MAX_CHARS).collect();
        return format!("{truncated}…");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_answer_yields_the_delivery_id() {
        let receipt = parse_ingest_response(202, br#"{"delivery_id":"dlv_123"}"#).unwrap();

        assert_eq!(
            receipt,
            IngestReceipt {
                delivery_id: Some("dlv_123".into()),
                filtered: false
            }
        );
    }

    #[test]
    fn filtered_answer_yields_no_delivery() {
        let receipt =
            parse_ingest_response(202, br#"{"delivery_id":null,"status":"filtered"}"#).unwrap();

        assert_eq!(
            receipt,
            IngestReceipt {
                delivery_id: None,
                filtered: true
            }
        );
    }

    #[test]
    fn error_answer_carries_the_json_error_field() {
        let error =
            parse_ingest_response(404, br#"{"error":"subscription not found"}"#).unwrap_err();

        assert!(
            matches!(&error, Error::Ingest { status: 404, message } if message == "subscription not found"),
            "{error:?}"
        );
    }

    #[test]
    fn error_answer_without_json_uses_the_body_or_the_reason_phrase() {
        let with_text = parse_ingest_response(502, b"<html>bad gateway</html>\n").unwrap_err();
        let empty = parse_ingest_response(503, b"").unwrap_err();

        assert_eq!(
            with_text.to_string(),
            "ingest rejected with HTTP 502: <html>bad gateway</html>"
        );
        assert_eq!(
            empty.to_string(),
            "ingest rejected with HTTP 503: service unavailable"
        );
    }

    #[test]
    fn accepted_answer_that_is_not_json_is_an_invalid_response() {
        let error = parse_ingest_response(202, b"ok").unwrap_err();

        assert!(matches!(error, Error::InvalidResponse(_)), "{error:?}");
    }

    #[test]
    fn subscription_id_is_one_percent_encoded_path_segment() {
        assert_eq!(
            ingest_url_for("http://h:1", "sub_01ABC"),
            "http://h:1/ingest/sub_01ABC"
        );
        assert_eq!(
            ingest_url_for("http://h:1/base", "a/b c"),
            "http://h:1/base/ingest/a%2Fb%20c"
        );
    }

    #[test]
    fn ingest_url_must_be_plain_http() {
        assert!(IngestClient::new("http://127.0.0.1:8080/", None).is_ok());
        for bad in [
            "https://example.com",
            "127.0.0.1:8080",
            "not a url",
            "/relative",
        ] {
            let error = IngestClient::new(bad, None).unwrap_err();
            assert!(matches!(error, Error::InvalidConfig(_)), "{bad}: {error:?}");
        }
    }

    #[test]
    fn bearer_header_is_sensitive() {
        let value = bearer_header("t0ken").unwrap();

        assert_eq!(value.to_str().unwrap(), "Bearer t0ken");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("t0ken"));
    }
}
