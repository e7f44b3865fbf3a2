//! The HTTP ingest gateway from the outside: every response code, the JSON error bodies, and proof
//! that a refused webhook queues nothing. Requests go through a plain hyper client (or a raw TCP
//! socket for misbehaving clients), not the SDK, so that every header and byte is the test's choice.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use whd_e2e::{Receiver, TestServer, eventually};
use whd_sdk::{
    CreateSubscriptionRequest, DeliveryStatus, ListDeliveryAttemptsRequest, Subscription,
};

/// How long a test waits for something the server does in well under a second.
const DEADLINE: Duration = Duration::from_secs(10);

/// A well-formed subscription id that no server has issued.
const UNKNOWN_ID: &str = "sub_00000000000000000000000000000000";

/// The webhook sent after a refused one, to prove that only it reaches the receiver.
const CONTROL_BODY: &str = r#"{"control":true}"#;

type Body = BoxBody<Bytes, Infallible>;

/// An HTTP answer: status, `content-type` and body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: Bytes,
}

impl Answer {
    /// The body as JSON; panics when it is not.
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "the answer is not JSON ({error}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` field of a JSON error body; panics when there is none.
    fn error(&self) -> String {
        assert_eq!(self.content_type.as_deref(), Some("application/json"));
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"error\" string in {:?}", self.json()))
            .to_owned()
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

/// A body sent with `transfer-encoding: chunked`: it declares no length.
fn chunked(chunks: Vec<Bytes>) -> Body {
    let frames = chunks
        .into_iter()
        .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk)));
    StreamBody::new(futures::stream::iter(frames)).boxed()
}

/// Sends one request to the server's gateway.
async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Body,
) -> Answer {
    let client: HttpClient<HttpConnector, Body> =
        HttpClient::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{}{path}", server.http_url));
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = client
        .request(request.body(body).expect("the request is well-formed"))
        .await
        .expect("the gateway answers");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the answer's body can be read")
        .to_bytes();
    Answer {
        status,
        content_type,
        body,
    }
}

/// Posts `body` as `application/json` to `/ingest/{subscription_id}`.
async fn post_json(server: &TestServer, subscription_id: &str, body: impl Into<Bytes>) -> Answer {
    send(
        server,
        Method::POST,
        &format!("/ingest/{subscription_id}"),
        Some("application/json"),
        full(body),
    )
    .await
}

async fn subscribe(server: &TestServer, url: &str) -> Subscription {
    server
        .client
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                target_url: url.into(),
                ..Default::default()
            }),
            generate_secret: false,
        })
        .await
        .expect("the subscription is created")
}

/// Waits until `delivery_id` is DELIVERED.
async fn delivered(server: &TestServer, delivery_id: &str) {
    eventually(DEADLINE, "the delivery is DELIVERED", || {
        let client = server.client.clone();
        let id = delivery_id.to_owned();
        async move {
            client
                .get_delivery(id)
                .await
                .ok()
                .filter(|delivery| delivery.status() == DeliveryStatus::Delivered)
                .map(|_| ())
        }
    })
    .await;
}

/// Proves that nothing refused earlier was queued: a control webhook ingested now is delivered, and it
/// is the only request the receiver ever got and the only attempt logged for the subscription.
async fn assert_only_the_control_webhook_arrives(
    server: &TestServer,
    receiver: &Receiver,
    subscription_id: &str,
) {
    let answer = post_json(server, subscription_id, CONTROL_BODY).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let delivery_id = answer.json()["delivery_id"]
        .as_str()
        .expect("a delivery id")
        .to_owned();
    delivered(server, &delivery_id).await;

    let received = receiver.received();
    assert_eq!(received.len(), 1, "the receiver got {received:?}");
    assert_eq!(received[0].body, CONTROL_BODY.as_bytes());
    let attempts = server
        .client
        .list_delivery_attempts(ListDeliveryAttemptsRequest {
            subscription_id: subscription_id.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .attempts;
    let delivery_ids: Vec<_> = attempts.iter().map(|a| a.delivery_id.as_str()).collect();
    assert_eq!(delivery_ids, [delivery_id.as_str()]);
}

#[tokio::test]
async fn valid_json_is_answered_202_with_a_msg_delivery_id_and_delivered() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;

    let answer = post_json(&server, &subscription.id, r#"{"order":1}"#).await;

    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    let json = answer.json();
    let delivery_id = json["delivery_id"].as_str().expect("a delivery id");
    assert!(delivery_id.starts_with("msg_"), "{json}");
    delivered(&server, delivery_id).await;
    assert_eq!(receiver.count(), 1);
    assert_eq!(receiver.received()[0].body, r#"{"order":1}"#.as_bytes());
    server.stop().await;
}

#[tokio::test]
async fn json_media_types_with_parameters_or_a_json_suffix_are_accepted() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;
    let path = format!("/ingest/{}", subscription.id);

    for content_type in [
        "application/json; charset=utf-8",
        "application/cloudevents+json",
    ] {
        let answer = send(&server, Method::POST, &path, Some(content_type), full("{}")).await;

        assert_eq!(
            answer.status,
            StatusCode::ACCEPTED,
            "{content_type}: {answer:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_subscription_is_404_naming_it() {
    let server = TestServer::start().await;

    let answer = post_json(&server, UNKNOWN_ID, "{}").await;

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let error = answer.error();
    assert!(error.contains(UNKNOWN_ID), "{error}");
    assert!(error.contains("subscription"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_subscription_id_is_404_naming_it() {
    let server = TestServer::start().await;

    let answer = post_json(&server, "sub_nope", "{}").await;

    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let error = answer.error();
    assert!(error.contains("sub_nope"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn invalid_json_is_400_and_queues_nothing() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;

    for bad in ["{not json", "", "{} {}", "[1,2"] {
        let answer = post_json(&server, &subscription.id, bad).await;

        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad:?}");
        let error = answer.error();
        assert!(
            error.starts_with("body is not valid JSON"),
            "{bad:?}: {error}"
        );
    }
    assert_only_the_control_webhook_arrives(&server, &receiver, &subscription.id).await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_is_400_and_queues_nothing() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;

    let answer = post_json(&server, &subscription.id, &b"{\"name\":\"\xff\xfe\"}"[..]).await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let error = answer.error();
    assert!(error.starts_with("body is not valid UTF-8"), "{error}");
    assert_only_the_control_webhook_arrives(&server, &receiver, &subscription.id).await;
    server.stop().await;
}

#[tokio::test]
async fn a_nesting_bomb_is_400_and_queues_nothing() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;
    let bomb = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));

    let answer = post_json(&server, &subscription.id, bomb).await;

    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let error = answer.error();
    assert!(
        error.starts_with("body nests arrays or objects deeper than"),
        "{error}"
    );
    assert_only_the_control_webhook_arrives(&server, &receiver, &subscription.id).await;
    server.stop().await;
}

#[tokio::test]
async fn a_body_exactly_at_the_size_limit_is_accepted() {
    let server = TestServer::start_with(&["--max-body-size", "1KiB"]).await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;
    let body = json_of_size(1024);

    let answer = post_json(&server, &subscription.id, body).await;

    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    server.stop().await;
}

/// A JSON string of exactly `size` bytes.
fn json_of_size(size: usize) -> String {
    format!("\"{}\"", "x".repeat(size - 2))
}

#[tokio::test]
async fn a_body_over_the_size_limit_with_content_length_is_413_and_queues_nothing() {
    let server = TestServer::start_with(&["--max-body-size", "1KiB"]).await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;

    let answer = post_json(&server, &subscription.id, json_of_size(1025)).await;

    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let error = answer.error();
    assert!(error.contains("1024 bytes"), "{error}");
    assert_only_the_control_webhook_arrives(&server, &receiver, &subscription.id).await;
    server.stop().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_size_limit_is_413_and_queues_nothing() {
    let server = TestServer::start_with(&["--max-body-size", "1KiB"]).await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;
    let body = json_of_size(3000).into_bytes();
    let chunks = body
        .chunks(500)
        .map(Bytes::copy_from_slice)
        .collect::<Vec<_>>();

    let answer = send(
        &server,
        Method::POST,
        &format!("/ingest/{}", subscription.id),
        Some("application/json"),
        chunked(chunks),
    )
    .await;

    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    let error = answer.error();
    assert!(error.contains("1024 bytes"), "{error}");
    assert_only_the_control_webhook_arrives(&server, &receiver, &subscription.id).await;
    server.stop().await;
}

#[tokio::test]
async fn a_chunked_body_within_the_size_limit_is_accepted() {
    let server = TestServer::start_with(&["--max-body-size", "1KiB"]).await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;
    let chunks = vec![Bytes::from_static(b"{\"a\":"), Bytes::from_static(b"1}")];

    let answer = send(
        &server,
        Method::POST,
        &format!("/ingest/{}", subscription.id),
        Some("application/json"),
        chunked(chunks),
    )
    .await;

    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let delivery_id = answer.json()["delivery_id"].as_str().unwrap().to_owned();
    delivered(&server, &delivery_id).await;
    assert_eq!(receiver.received()[0].body, b"{\"a\":1}".as_slice());
    server.stop().await;
}

#[tokio::test]
async fn text_plain_and_a_missing_content_type_are_415_and_queue_nothing() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;
    let path = format!("/ingest/{}", subscription.id);

    for content_type in [Some("text/plain"), None] {
        let answer = send(&server, Method::POST, &path, content_type, full("{}")).await;

        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        let error = answer.error();
        assert!(error.contains("application/json"), "{error}");
    }
    assert_only_the_control_webhook_arrives(&server, &receiver, &subscription.id).await;
    server.stop().await;
}

#[tokio::test]
async fn get_on_an_ingest_path_is_405_and_queues_nothing() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;

    let answer = send(
        &server,
        Method::GET,
        &format!("/ingest/{}", subscription.id),
        None,
        full(""),
    )
    .await;

    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let error = answer.error();
    assert!(error.contains("POST"), "{error}");
    assert_only_the_control_webhook_arrives(&server, &receiver, &subscription.id).await;
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404_naming_the_path() {
    let server = TestServer::start().await;

    for (method, path) in [
        (Method::GET, "/nope"),
        (Method::POST, "/ingest/"),
        (Method::POST, "/ingest/sub_a/extra"),
    ] {
        let answer = send(
            &server,
            method.clone(),
            path,
            Some("application/json"),
            full("{}"),
        )
        .await;

        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
        let error = answer.error();
        assert!(error.contains(path), "{method} {path}: {error}");
    }
    server.stop().await;
}

#[tokio::test]
async fn healthz_is_200_with_status_ok() {
    let server = TestServer::start().await;

    let answer = send(&server, Method::GET, "/healthz", None, full("")).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({"status": "ok"}));
    server.stop().await;
}

/// The address of the gateway, for raw TCP clients.
fn gateway_addr(server: &TestServer) -> String {
    server
        .http_url
        .strip_prefix("http://")
        .expect("the gateway URL is http")
        .to_owned()
}

/// Reads until the server closes the connection (EOF or reset); panics if that takes longer than
/// `DEADLINE`, which is a bound on a hang, not a measure of speed. Returns what arrived before.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the server closes the connection");
    received
}

#[tokio::test]
async fn a_client_that_stops_halfway_through_its_headers_is_disconnected() {
    let server = TestServer::start_with(&["--header-read-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(gateway_addr(&server)).await.unwrap();

    stream
        .write_all(b"POST /ingest/sub_x HTTP/1.1\r\nHost: whd\r\nContent-Ty")
        .await
        .unwrap();
    let received = read_until_closed(&mut stream).await;

    // Closing silently and answering 408 before closing are both fine; accepting is not.
    let text = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let server = TestServer::start_with(&["--header-read-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(gateway_addr(&server)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: whd\r\n\r\n")
        .await
        .unwrap();

    let received = read_until_closed(&mut stream).await;

    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_disconnected() {
    let server = TestServer::start_with(&["--header-read-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(gateway_addr(&server)).await.unwrap();

    let received = read_until_closed(&mut stream).await;

    let text = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    server.stop().await;
}
