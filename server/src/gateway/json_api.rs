//! The JSON API under `/v1/`: the operations of the gRPC API over plain HTTP, for the dashboard and
//! for clients without gRPC. Bodies are the `whd.v1` messages in their proto3 JSON form (pbjson), and
//! every handler goes through the same [`crate::api::convert`] functions and [`Service`] operations as
//! the gRPC handlers, so both interfaces answer alike.
//!
//! | method and path                          | request body                | response                       |
//! |------------------------------------------|-----------------------------|--------------------------------|
//! | `GET /v1/subscriptions`                  | (`?page_size=&page_token=`) | `ListSubscriptionsResponse`    |
//! | `POST /v1/subscriptions`                 | `CreateSubscriptionRequest` | `Subscription`                 |
//! | `GET /v1/subscriptions/{id}`             |                             | `Subscription`                 |
//! | `PATCH /v1/subscriptions/{id}`           | `UpdateSubscriptionRequest` | `Subscription`                 |
//! | `DELETE /v1/subscriptions/{id}`          |                             | `{}`                           |
//! | `GET /v1/subscriptions/{id}/attempts`    | (`?page_size=&page_token=`) | `ListDeliveryAttemptsResponse` |
//! | `POST /v1/subscriptions/{id}/test`       | (ignored)                   | `{"delivery_id": …}`, 202      |
//! | `GET /v1/deliveries/{id}`                |                             | `Delivery`                     |
//! | `GET /v1/events`                         | (see [`super::sse`])        | `text/event-stream`            |
//!
//! With an API token configured, every route requires `authorization: Bearer <token>`; `/v1/events`
//! also accepts `?access_token=`, because a browser's `EventSource` cannot set headers. POST bodies
//! must be declared `application/json`: a browser on another origin cannot send that media type
//! without a CORS preflight, which this API never grants, so pages elsewhere cannot drive it.

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use serde::de::DeserializeOwned;
use whd_proto::v1;

use super::routes::{
    Body, Gateway, error_response, json_response, method_not_allowed, read_body, receipt_json,
};
use super::sse;
use crate::api::convert;
use crate::error::{ErrorCode, ServiceError};

/// Largest request body of the API; its messages are small.
const MAX_BODY_BYTES: u64 = 64 * 1024;

/// Handles a request whose path starts with `/v1`. Never fails: every error becomes a response.
pub(super) async fn handle(gateway: &Gateway, request: Request<Incoming>) -> Response<Body> {
    match route(gateway, request).await {
        Ok(response) => response,
        Err(error) => error_response(error).map(BodyExt::boxed_unsync),
    }
}

async fn route(
    gateway: &Gateway,
    request: Request<Incoming>,
) -> Result<Response<Body>, ServiceError> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path
        .trim_start_matches("/v1")
        .trim_start_matches('/')
        .split('/')
        .collect();
    let query = Query::parse(request.uri().query());
    let is_event_stream = segments == ["events"];
    authorize(gateway, &request, is_event_stream.then_some(&query))?;

    let service = &gateway.service;
    let method = request.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["subscriptions"]) => {
            let page = service
                .list_subscriptions(query.page_size()?, query.get("page_token").unwrap_or(""))
                .await?;
            ok(&v1::ListSubscriptionsResponse {
                subscriptions: page
                    .subscriptions
                    .iter()
                    .map(convert::subscription)
                    .collect(),
                next_page_token: page.next_page_token,
            })
        }
        (&Method::POST, ["subscriptions"]) => {
            let body: v1::CreateSubscriptionRequest = read_json(request).await?;
            let created = service
                .create_subscription(convert::new_subscription(body)?)
                .await?;
            let mut subscription = convert::subscription(&created.subscription);
            // As in the gRPC API, the create response is the one place a generated secret is shown.
            if let Some(secret) = created.generated_secret {
                subscription.secret = secret.expose().to_owned();
            }
            message(StatusCode::CREATED, &subscription)
        }
        (&Method::GET, ["subscriptions", id]) => {
            ok(&convert::subscription(&service.get_subscription(id).await?))
        }
        (&Method::PATCH, ["subscriptions", id]) => {
            let id = (*id).to_owned();
            let mut body: v1::UpdateSubscriptionRequest = read_json(request).await?;
            // The path names the subscription; an id in the body is not needed and never wins.
            if let Some(subscription) = body.subscription.as_mut() {
                subscription.id = id;
            }
            let (id, patch) = convert::subscription_patch(body)?;
            ok(&convert::subscription(
                &service.update_subscription(&id, patch).await?,
            ))
        }
        (&Method::DELETE, ["subscriptions", id]) => {
            service.delete_subscription(id).await?;
            ok(&pbjson_types::Empty {})
        }
        (&Method::GET, ["subscriptions", id, "attempts"]) => {
            let page = service
                .list_delivery_attempts(
                    id,
                    query.page_size()?,
                    query.get("page_token").unwrap_or(""),
                )
                .await?;
            ok(&v1::ListDeliveryAttemptsResponse {
                attempts: page.attempts.iter().filter_map(convert::attempt).collect(),
                next_page_token: page.next_page_token,
            })
        }
        (&Method::POST, ["subscriptions", id, "test"]) => {
            require_json_media_type(&request)?;
            let receipt = service.send_test_webhook(id).await?;
            Ok(json_response(StatusCode::ACCEPTED, &receipt_json(&receipt))
                .map(BodyExt::boxed_unsync))
        }
        (&Method::GET, ["deliveries", id]) => {
            ok(&convert::delivery(&service.get_delivery(id).await?))
        }
        (&Method::GET, ["events"]) => {
            let last_event_id = request
                .headers()
                .get("last-event-id")
                .and_then(|value| value.to_str().ok());
            let watch = watch_request(&query, last_event_id)?;
            let (filter, after_cursor) = convert::watch_request(&watch)?;
            let items = service.watch(filter, after_cursor).await?;
            Ok(sse::event_stream(items, gateway.shutdown.clone()))
        }
        (_, ["subscriptions"]) => Err(method_not_allowed("GET or POST")),
        (_, ["subscriptions", _]) => Err(method_not_allowed("GET, PATCH or DELETE")),
        (_, ["subscriptions", _, "attempts"] | ["deliveries", _] | ["events"]) => {
            Err(method_not_allowed("GET"))
        }
        (_, ["subscriptions", _, "test"]) => Err(method_not_allowed("POST")),
        _ => Err(ServiceError::new(
            ErrorCode::NotFound,
            format!("no route for {path}"),
        )),
    }
}

/// Checks the API token. `query` is given only where a token in the URL is accepted.
fn authorize(
    gateway: &Gateway,
    request: &Request<Incoming>,
    query: Option<&Query>,
) -> Result<(), ServiceError> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let from_query = query
        .and_then(|query| query.get("access_token"))
        .map(|token| format!("Bearer {token}"));
    gateway
        .auth
        .check(header.or(from_query).as_deref())
        .map_err(|status| ServiceError::new(ErrorCode::Unauthenticated, status.message()))
}

/// The watch a `/v1/events` request asks for. `Last-Event-ID` (sent by a reconnecting `EventSource`)
/// wins over `?after_cursor=`, so a reconnect resumes where the stream broke off, not where it began.
fn watch_request(
    query: &Query,
    last_event_id: Option<&str>,
) -> Result<v1::WatchDeliveriesRequest, ServiceError> {
    let cursor = |field: &str, value: &str| {
        value.parse::<u64>().map_err(|_| {
            ServiceError::invalid_field(field, "must be a cursor (a non-negative integer)")
        })
    };
    let after_cursor = match (last_event_id, query.get("after_cursor")) {
        (Some(value), _) if !value.is_empty() => Some(cursor("Last-Event-ID", value)?),
        (_, Some(value)) if !value.is_empty() => Some(cursor("after_cursor", value)?),
        _ => None,
    };
    Ok(v1::WatchDeliveriesRequest {
        subscription_id: query.get("subscription_id").unwrap_or("").to_owned(),
        delivery_id: query.get("delivery_id").unwrap_or("").to_owned(),
        event_types: query.all("event_type"),
        outcomes: Vec::new(),
        after_cursor,
    })
}

/// Reads and decodes a JSON request body.
async fn read_json<T: DeserializeOwned>(request: Request<Incoming>) -> Result<T, ServiceError> {
    require_json_media_type(&request)?;
    let body = read_body(request.into_body(), MAX_BODY_BYTES).await?;
    let body = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    serde_json::from_slice(&body).map_err(|error| {
        ServiceError::new(
            ErrorCode::InvalidArgument,
            format!("body: is not a valid request: {error}"),
        )
    })
}

fn require_json_media_type(request: &Request<Incoming>) -> Result<(), ServiceError> {
    let media_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    if media_type.as_deref() == Some("application/json") {
        Ok(())
    } else {
        Err(ServiceError::new(
            ErrorCode::UnsupportedMediaType,
            "content-type must be application/json",
        ))
    }
}

fn ok<T: Serialize>(message: &T) -> Result<Response<Body>, ServiceError> {
    self::message(StatusCode::OK, message)
}

fn message<T: Serialize>(status: StatusCode, message: &T) -> Result<Response<Body>, ServiceError> {
    let value = serde_json::to_value(message).map_err(|error| {
        tracing::error!(error = %error, "a response message did not serialise");
        ServiceError::internal()
    })?;
    Ok(json_response(status, &value).map(BodyExt::boxed_unsync))
}

/// The decoded query string.
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The first value of `key`.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Every non-empty value of a repeated `key`.
    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(name, value)| name == key && !value.is_empty())
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// `page_size`, zero when absent (the service's default).
    fn page_size(&self) -> Result<i32, ServiceError> {
        match self.get("page_size") {
            None | Some("") => Ok(0),
            Some(value) => value
                .parse()
                .map_err(|_| ServiceError::invalid_field("page_size", "must be an integer")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_wins_over_the_query_cursor() {
        let query = Query::parse(Some(
            "after_cursor=5&subscription_id=sub_x&event_type=a&event_type=b",
        ));
        let request = watch_request(&query, Some("9")).unwrap();
        assert_eq!(request.after_cursor, Some(9));
        assert_eq!(request.subscription_id, "sub_x");
        assert_eq!(request.event_types, ["a", "b"]);
        assert_eq!(watch_request(&query, None).unwrap().after_cursor, Some(5));
        assert_eq!(
            watch_request(&Query::default(), None).unwrap().after_cursor,
            None
        );
    }

    #[test]
    fn malformed_cursors_and_page_sizes_name_their_field() {
        let error = watch_request(&Query::default(), Some("x")).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        assert!(
            error.message.starts_with("Last-Event-ID:"),
            "{}",
            error.message
        );
        let error = Query::parse(Some("page_size=ten")).page_size().unwrap_err();
        assert_eq!(error.message, "page_size: must be an integer");
    }
}
