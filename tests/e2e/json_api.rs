//! The JSON API under `/v1/` from the outside: each route's answer in proto3 JSON, its errors as
//! `{"error": …}` with the right status, the Server-Sent Events stream with resumption, and the API
//! token. Requests go through a plain hyper client so that every header is the test's choice.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use whd_e2e::{Receiver, TestServer, eventually};

/// How long a test waits for something the server does in well under a second.
const DEADLINE: Duration = Duration::from_secs(15);

/// Well-formed ids that no server has issued.
const UNKNOWN_SUBSCRIPTION: &str = "sub_00000000000000000000000000000000";
const UNKNOWN_DELIVERY: &str = "msg_00000000000000000000000000000000";

const TOKEN: &str = "0123456789abcdef0123";

/// A JSON API client over plain HTTP, with an optional bearer token.
#[derive(Debug, Clone)]
pub(crate) struct JsonApi {
    client: HttpClient<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

impl JsonApi {
    pub(crate) fn new(server: &TestServer) -> JsonApi {
        JsonApi {
            client: HttpClient::builder(TokioExecutor::new()).build_http(),
            base: server.http_url.clone(),
            token: None,
        }
    }

    fn with_token(&self, token: &str) -> JsonApi {
        JsonApi {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> http::Response<Incoming> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = body
            .map(|body| Bytes::from(serde_json::to_vec(body).expect("JSON serialises")))
            .unwrap_or_default();
        self.client
            .request(
                request
                    .body(Full::new(body))
                    .expect("the request is well formed"),
            )
            .await
            .expect("the gateway answers")
    }

    /// Sends a request and returns the status and the JSON body.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let response = self.send(method, path, &[], body).await;
        let status = response.status();
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{path}"
        );
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("the body arrives")
            .to_bytes();
        let value = serde_json::from_slice(&bytes).expect("the body is JSON");
        (status, value)
    }

    /// Creates a subscription delivering to `url` and returns it.
    pub(crate) async fn subscribe(&self, url: &str, generate_secret: bool) -> Value {
        let (status, subscription) = self
            .call(
                Method::POST,
                "/v1/subscriptions",
                Some(&json!({"subscription": {"target_url": url}, "generate_secret": generate_secret})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{subscription}");
        subscription
    }

    /// Opens `/v1/events` with `query` and the given headers.
    async fn events(&self, query: &str, headers: &[(&str, &str)]) -> EventStream {
        let response = self
            .send(Method::GET, &format!("/v1/events{query}"), headers, None)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        EventStream {
            body: response.into_body(),
            buffer: String::new(),
        }
    }
}

/// One Server-Sent Event: its `id:` and its parsed `data:`.
#[derive(Debug)]
struct Event {
    id: Option<u64>,
    data: Value,
}

/// Reads Server-Sent Events off a response body.
struct EventStream {
    body: Incoming,
    buffer: String,
}

impl EventStream {
    /// The next event with data, skipping comments and the `retry:` preamble.
    async fn next(&mut self) -> Event {
        tokio::time::timeout(DEADLINE, self.next_unbounded())
            .await
            .expect("an event arrives in time")
    }

    async fn next_unbounded(&mut self) -> Event {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.parse().expect("ids are cursors"));
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(value).expect("data is JSON"));
                    }
                }
                if let Some(data) = data {
                    return Event { id, data };
                }
            }
            let frame = self
                .body
                .frame()
                .await
                .expect("the stream stays open")
                .expect("the stream reads");
            if let Ok(data) = frame.into_data() {
                self.buffer
                    .push_str(std::str::from_utf8(&data).expect("events are UTF-8"));
            }
        }
    }
}

fn id_of(value: &Value) -> String {
    value["id"]
        .as_str()
        .expect("the message has an id")
        .to_owned()
}

/// Sends a test webhook through the API and returns its delivery id.
async fn send_test_webhook(api: &JsonApi, subscription_id: &str) -> String {
    let (status, receipt) = api
        .call(
            Method::POST,
            &format!("/v1/subscriptions/{subscription_id}/test"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{receipt}");
    receipt["delivery_id"]
        .as_str()
        .expect("a test webhook creates a delivery")
        .to_owned()
}

async fn delivered(api: &JsonApi, delivery_id: &str) -> Value {
    let path = format!("/v1/deliveries/{delivery_id}");
    eventually(DEADLINE, "the delivery is delivered", || {
        let path = path.clone();
        async move {
            let (status, delivery) = api.call(Method::GET, &path, None).await;
            (status == StatusCode::OK && delivery["status"] == "DELIVERY_STATUS_DELIVERED")
                .then_some(delivery)
        }
    })
    .await
}

#[tokio::test]
async fn subscriptions_are_created_read_listed_updated_and_deleted_as_proto_json() {
    let server = TestServer::start().await;
    let api = JsonApi::new(&server);

    let created = api.subscribe("https://example.com/hooks", true).await;
    let id = id_of(&created);
    assert!(id.starts_with("sub_"), "{created}");
    assert_eq!(created["targetUrl"], "https://example.com/hooks");
    assert_eq!(created["hasSecret"], true);
    assert!(
        created["secret"].as_str().unwrap().starts_with("whsec_"),
        "the generated secret is shown once: {created}"
    );

    let (status, read) = api
        .call(Method::GET, &format!("/v1/subscriptions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["id"], id.as_str());
    assert!(
        read.get("secret").is_none(),
        "reads never show the secret: {read}"
    );

    let (status, list) = api
        .call(Method::GET, "/v1/subscriptions?page_size=10", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(list["subscriptions"][0]["id"], id.as_str());

    let (status, updated) = api
        .call(
            Method::PATCH,
            &format!("/v1/subscriptions/{id}"),
            Some(&json!({
                "subscription": {"description": "orders", "event_types": ["order.paid"]},
                "update_mask": {"paths": ["description", "event_types"]}
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["description"], "orders");
    assert_eq!(updated["eventTypes"], json!(["order.paid"]));
    assert_eq!(updated["targetUrl"], "https://example.com/hooks");

    let (status, empty) = api
        .call(Method::DELETE, &format!("/v1/subscriptions/{id}"), None)
        .await;
    assert_eq!((status, empty), (StatusCode::OK, json!({})));

    let (status, error) = api
        .call(Method::GET, &format!("/v1/subscriptions/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"], format!("subscription {id} not found"));
    server.stop().await;
}

#[tokio::test]
async fn an_invalid_target_url_is_refused_with_a_message_naming_the_field() {
    let server = TestServer::start().await;
    let api = JsonApi::new(&server);

    let (status, error) = api
        .call(
            Method::POST,
            "/v1/subscriptions",
            Some(&json!({"subscription": {"target_url": "not a url"}})),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = error["error"].as_str().unwrap();
    assert!(
        message.starts_with("subscription.target_url: "),
        "{message}"
    );
    let (_, list) = api.call(Method::GET, "/v1/subscriptions", None).await;
    assert_eq!(list, json!({}), "nothing was created");
    server.stop().await;
}

#[tokio::test]
async fn unknown_ids_malformed_bodies_and_wrong_methods_get_json_errors() {
    let server = TestServer::start().await;
    let api = JsonApi::new(&server);

    for path in [
        format!("/v1/subscriptions/{UNKNOWN_SUBSCRIPTION}"),
        format!("/v1/subscriptions/{UNKNOWN_SUBSCRIPTION}/attempts"),
        format!("/v1/deliveries/{UNKNOWN_DELIVERY}"),
        "/v1/subscriptions/sub_nope".to_owned(),
        "/v1/nothing-here".to_owned(),
    ] {
        let (status, error) = api.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {error}");
        assert!(error["error"].is_string(), "{path}: {error}");
    }
    for (method, path) in [
        (
            Method::PATCH,
            format!("/v1/subscriptions/{UNKNOWN_SUBSCRIPTION}"),
        ),
        (
            Method::DELETE,
            format!("/v1/subscriptions/{UNKNOWN_SUBSCRIPTION}"),
        ),
        (
            Method::POST,
            format!("/v1/subscriptions/{UNKNOWN_SUBSCRIPTION}/test"),
        ),
    ] {
        let body = json!({"subscription": {"description": "x"}, "update_mask": {"paths": ["description"]}});
        let (status, error) = api.call(method.clone(), &path, Some(&body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {error}");
    }

    let (status, error) = api
        .call(Method::GET, "/v1/subscriptions?page_size=many", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"], "page_size: must be an integer");

    let (status, error) = api
        .call(
            Method::POST,
            "/v1/subscriptions",
            Some(&json!({"subscription": {"target_url": 5}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .starts_with("body: is not a valid request"),
        "{error}"
    );

    let response = api
        .send(
            Method::POST,
            "/v1/subscriptions",
            &[("content-type", "text/plain")],
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let (status, _) = api.call(Method::PUT, "/v1/subscriptions", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await;
}

#[tokio::test]
async fn a_test_webhook_is_delivered_and_shows_in_the_attempts_and_the_delivery() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let api = JsonApi::new(&server);
    let subscription = api.subscribe(&receiver.url, false).await;
    let subscription_id = id_of(&subscription);

    let delivery_id = send_test_webhook(&api, &subscription_id).await;
    let delivery = delivered(&api, &delivery_id).await;

    assert_eq!(delivery["id"], delivery_id.as_str());
    assert_eq!(delivery["eventType"], "whd.test");
    assert_eq!(delivery["attemptCount"], 1);
    assert_eq!(
        delivery["attempts"][0]["outcome"],
        "ATTEMPT_OUTCOME_SUCCESS"
    );
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let body: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["type"], "whd.test");
    assert!(body["sent_at"].as_str().unwrap().ends_with('Z'), "{body}");

    let (status, page) = api
        .call(
            Method::GET,
            &format!("/v1/subscriptions/{subscription_id}/attempts?page_size=5"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let attempts = page["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["deliveryId"], delivery_id.as_str());
    assert_eq!(attempts[0]["httpStatus"], 200);
    server.stop().await;
}

#[tokio::test]
async fn a_test_webhook_to_a_signed_subscription_is_signed_with_its_own_secret() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let api = JsonApi::new(&server);
    let subscription = api.subscribe(&receiver.url, true).await;

    // Ingest refuses unsigned webhooks for a subscription with a secret, so acceptance proves the
    // server signed the test body with the right key.
    let delivery_id = send_test_webhook(&api, &id_of(&subscription)).await;

    delivered(&api, &delivery_id).await;
    assert_eq!(receiver.received().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn events_stream_queued_and_attempt_events_and_resume_after_the_last_event_id() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let api = JsonApi::new(&server);
    let subscription_id = id_of(&api.subscribe(&receiver.url, false).await);
    let query = format!("?subscription_id={subscription_id}");
    let mut stream = api.events(&query, &[]).await;

    let first = send_test_webhook(&api, &subscription_id).await;
    let queued = stream.next().await;
    let attempt = stream.next().await;

    assert_eq!(queued.data["kind"], "DELIVERY_EVENT_KIND_QUEUED");
    assert_eq!(queued.data["deliveryId"], first.as_str());
    assert_eq!(attempt.data["kind"], "DELIVERY_EVENT_KIND_ATTEMPT");
    assert_eq!(
        attempt.data["attempt"]["outcome"],
        "ATTEMPT_OUTCOME_SUCCESS"
    );
    let (queued_id, attempt_id) = (queued.id.unwrap(), attempt.id.unwrap());
    assert_eq!(queued.data["cursor"], queued_id.to_string());
    assert!(attempt_id > queued_id);
    drop(stream);

    // A reconnecting EventSource sends the last id it saw; Last-Event-ID wins over the query cursor.
    let mut resumed = api
        .events(
            &format!("{query}&after_cursor=0"),
            &[("last-event-id", &queued_id.to_string())],
        )
        .await;
    let replayed = resumed.next().await;
    assert_eq!(
        replayed.id,
        Some(attempt_id),
        "the next event, not a repeat"
    );
    assert_eq!(replayed.data["kind"], "DELIVERY_EVENT_KIND_ATTEMPT");

    let second = send_test_webhook(&api, &subscription_id).await;
    let live = resumed.next().await;
    assert_eq!(live.data["deliveryId"], second.as_str());
    assert_eq!(live.data["kind"], "DELIVERY_EVENT_KIND_QUEUED");
    assert!(live.id.unwrap() > attempt_id);
    server.stop().await;
}

#[tokio::test]
async fn with_an_api_token_every_v1_route_requires_it_and_ingest_health_and_dashboard_stay_open() {
    let server = TestServer::start_with(&["--api-token", TOKEN]).await;
    let anonymous = JsonApi::new(&server);
    let api = anonymous.with_token(TOKEN);

    for (method, path) in [
        (Method::GET, "/v1/subscriptions".to_owned()),
        (Method::POST, "/v1/subscriptions".to_owned()),
        (Method::GET, format!("/v1/deliveries/{UNKNOWN_DELIVERY}")),
        (Method::GET, "/v1/events".to_owned()),
        (Method::GET, format!("/v1/events?access_token={TOKEN}x")),
    ] {
        let (status, error) = anonymous
            .call(method.clone(), &path, Some(&json!({})))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(
            error["error"].as_str().unwrap().contains("API token"),
            "{error}"
        );
    }
    let (status, _) = anonymous
        .with_token("not-the-token")
        .call(Method::GET, "/v1/subscriptions", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let subscription = api.subscribe("https://example.com/hooks", false).await;
    let (status, _) = api.call(Method::GET, "/v1/subscriptions", None).await;
    assert_eq!(status, StatusCode::OK);
    // EventSource cannot send headers, so the stream also takes the token in its URL.
    anonymous
        .events(&format!("?access_token={TOKEN}"), &[])
        .await;

    let ingest = anonymous
        .send(
            Method::POST,
            &format!("/ingest/{}", id_of(&subscription)),
            &[("content-type", "application/json")],
            None,
        )
        .await;
    assert_ne!(ingest.status(), StatusCode::UNAUTHORIZED);
    for path in ["/healthz", "/", "/assets/app.js"] {
        let response = anonymous.send(Method::GET, path, &[], None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    server.stop().await;
}
