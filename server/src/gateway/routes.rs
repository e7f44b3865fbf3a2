//! Routing and handlers of the gateway. Every error is a JSON body `{"error": "..."}` with the status
//! code from [`crate::error::ErrorCode`]. The JSON API (`/v1/`) and the dashboard have modules of
//! their own; this one only dispatches to them.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;

use super::{dashboard, json_api};
use crate::api::auth::RequireToken;
use crate::error::{ErrorCode, ServiceError};
use crate::service::{IngestReceipt, IngestRequest, Service};

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECONDS: &str = "5";

/// A response body: whole (JSON, assets) or streamed (Server-Sent Events).
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What every handler may need, cheap to clone per connection.
#[derive(Debug, Clone)]
pub(crate) struct Gateway {
    pub(crate) service: Service,
    /// The JSON API's token check.
    pub(crate) auth: RequireToken,
    /// The gateway's shutdown signal; long-lived responses end when it fires.
    pub(crate) shutdown: CancellationToken,
}

/// Handles one request. Never fails: every error becomes a response.
pub(crate) async fn handle(
    gateway: Gateway,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    if path == "/v1" || path.starts_with("/v1/") {
        return Ok(json_api::handle(&gateway, request).await);
    }
    if let Some(response) = dashboard::serve(request.method(), &path) {
        return Ok(response);
    }
    let service = &gateway.service;
    let response = match (request.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/healthz") => healthz(service).await,
        (&Method::POST, path) if path.starts_with("/ingest/") => ingest(service, request).await,
        (_, "/healthz") => Err(method_not_allowed("GET")),
        (_, path) if path.starts_with("/ingest/") => Err(method_not_allowed("POST")),
        _ => Err(ServiceError::new(
            ErrorCode::NotFound,
            format!("no route for {path}"),
        )),
    };
    Ok(response
        .unwrap_or_else(error_response)
        .map(BodyExt::boxed_unsync))
}

async fn healthz(service: &Service) -> Result<Response<Full<Bytes>>, ServiceError> {
    service.check_database().await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"status": "ok"}),
    ))
}

async fn ingest(
    service: &Service,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ServiceError> {
    let (parts, body) = request.into_parts();
    let subscription_id = parts.uri.path().trim_start_matches("/ingest/");
    if subscription_id.is_empty() || subscription_id.contains('/') {
        return Err(ServiceError::new(
            ErrorCode::NotFound,
            format!("no route for {}", parts.uri.path()),
        ));
    }
    let limit = service.max_body_size();
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(body_too_large(limit));
    }
    let body = read_body(body, limit).await?;

    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let query_event_type = parts.uri.query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "event_type")
            .map(|(_, value)| value.into_owned())
    });
    let event_type = header("x-event-type")
        .map(str::to_owned)
        .or(query_event_type);
    let receipt = service
        .ingest(IngestRequest {
            subscription_id,
            content_type: header(CONTENT_TYPE.as_str()),
            event_type: event_type.as_deref(),
            signature: header("x-hub-signature-256"),
            body,
        })
        .await?;
    Ok(json_response(StatusCode::ACCEPTED, &receipt_json(&receipt)))
}

/// What a client is told about an accepted webhook.
pub(crate) fn receipt_json(receipt: &IngestReceipt) -> serde_json::Value {
    match receipt {
        IngestReceipt::Queued(id) => serde_json::json!({"delivery_id": id.as_str()}),
        IngestReceipt::Filtered => serde_json::json!({"delivery_id": null, "status": "filtered"}),
    }
}

/// Reads the body, refusing it as soon as it grows past `limit` (a chunked body declares no length).
pub(crate) async fn read_body(body: Incoming, limit: u64) -> Result<Bytes, ServiceError> {
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(body_too_large(limit)),
        Err(error) => Err(ServiceError::new(
            ErrorCode::InvalidArgument,
            format!("could not read the body: {error}"),
        )),
    }
}

fn body_too_large(limit: u64) -> ServiceError {
    ServiceError::new(
        ErrorCode::ResourceExhausted,
        format!("body is larger than the limit of {limit} bytes"),
    )
}

pub(crate) fn method_not_allowed(allowed: &'static str) -> ServiceError {
    ServiceError::new(
        ErrorCode::MethodNotAllowed,
        format!("method not allowed; use {allowed}"),
    )
}

pub(crate) fn error_response(error: ServiceError) -> Response<Full<Bytes>> {
    let mut response = json_response(
        error.code.http_status(),
        &serde_json::json!({"error": error.message}),
    );
    if error.code == ErrorCode::Unavailable {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    response
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).expect("a JSON value serialises");
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
