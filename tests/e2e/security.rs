//! Security rules from the outside, one test per rule: outbound signatures checked by a verifier
//! written here from the Standard Webhooks specification (not the server's signer), secret rotation,
//! inbound `X-Hub-Signature-256`, event-type filtering, the request-forgery guard, the API token,
//! and secrets that never come back out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::process::Command;
use whd_e2e::{Received, Receiver, TestDatabase, TestServer, eventually};
use whd_sdk::pbjson_types::FieldMask;
use whd_sdk::{
    AttemptOutcome, Client, ClientConfig, Code, CreateSubscriptionRequest, Delivery,
    DeliveryStatus, IngestOptions, ListDeliveryAttemptsRequest, ListSubscriptionsRequest,
    Subscription, UpdateSubscriptionRequest,
};

/// How long a test waits for something the server does in well under a second.
const DEADLINE: Duration = Duration::from_secs(15);

/// The Standard Webhooks specification's test vector (see shared/signature-vectors.md).
const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const SPEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const SPEC_TIMESTAMP: &str = "1649367553";
const SPEC_BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;
const SPEC_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

/// A second valid secret (24 bytes), for rotations.
const OTHER_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const API_TOKEN: &str = "0123456789abcdef0123";

// ---------------------------------------------------------------------------------------------
// An independent Standard Webhooks verifier, written from the specification.

/// Receivers reject timestamps further than this from their clock, in either direction.
const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// The `v1` signatures of a `webhook-signature` header, still base64. Entries are separated by spaces
/// (several during a secret rotation); other versions are ignored, as the specification says.
fn v1_signatures(header: &str) -> Vec<&str> {
    header
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .collect()
}

/// The HMAC of `{id}.{timestamp}.{body}`, keyed with the base64-decoded part of `secret` after `whsec_`.
fn standard_webhooks_mac(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let key = BASE64
        .decode(
            secret
                .strip_prefix("whsec_")
                .expect("secrets start with whsec_"),
        )
        .expect("the part after whsec_ is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Whether one base64 `signature` is the one `secret` gives for the message (constant-time compare).
fn signature_matches(
    secret: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
    signature: &str,
) -> bool {
    let Ok(tag) = BASE64.decode(signature) else {
        return false;
    };
    standard_webhooks_mac(secret, id, timestamp, body)
        .verify_slice(&tag)
        .is_ok()
}

/// For each `v1` signature of a received webhook, whether `secret` made it. Panics when the request
/// lacks a header a verifier needs or its timestamp is outside the tolerance.
fn signatures_made_by(secret: &str, received: &Received) -> Vec<bool> {
    let id = received.header("webhook-id").expect("a webhook-id header");
    let timestamp = received
        .header("webhook-timestamp")
        .expect("a webhook-timestamp header");
    let header = received
        .header("webhook-signature")
        .expect("a webhook-signature header");
    let seconds: i64 = timestamp.parse().expect("the timestamp is in seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64;
    assert!(
        (now - seconds).abs() <= TIMESTAMP_TOLERANCE_SECS,
        "timestamp {seconds} is more than {TIMESTAMP_TOLERANCE_SECS}s from now ({now})"
    );
    v1_signatures(header)
        .into_iter()
        .map(|signature| signature_matches(secret, id, timestamp, &received.body, signature))
        .collect()
}

/// The GitHub-style inbound signature: `sha256=` and the lowercase hex HMAC-SHA256 of the raw body,
/// keyed with the secret string's bytes.
fn hub_signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("sha256={hex}")
}

// ---------------------------------------------------------------------------------------------
// Helpers.

async fn create(
    client: &Client,
    subscription: Subscription,
    generate_secret: bool,
) -> Result<Subscription, whd_sdk::Error> {
    client
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(subscription),
            generate_secret,
        })
        .await
}

/// A subscription to `url`, optionally with a generated secret (returned in the result).
async fn subscribe(client: &Client, url: &str, generate_secret: bool) -> Subscription {
    let subscription = Subscription {
        target_url: url.into(),
        ..Default::default()
    };
    create(client, subscription, generate_secret)
        .await
        .expect("the subscription is created")
}

/// Ingests `body` and returns the id of the delivery it created.
async fn ingest(
    client: &Client,
    subscription_id: &str,
    body: &str,
    options: IngestOptions,
) -> String {
    client
        .ingest(subscription_id, body.to_owned(), options)
        .await
        .expect("the webhook is accepted")
        .delivery_id
        .expect("an unfiltered webhook creates a delivery")
}

/// Ingests `body` for a subscription with `secret`, signed as the sender must, and returns the id of
/// the delivery it created.
async fn signed_ingest(client: &Client, subscription_id: &str, secret: &str, body: &str) -> String {
    let options = IngestOptions {
        signature: Some(hub_signature(secret, body)),
        ..Default::default()
    };
    ingest(client, subscription_id, body, options).await
}

/// Waits until the delivery reaches `status` and returns it.
async fn delivery_with_status(client: &Client, id: &str, status: DeliveryStatus) -> Delivery {
    let what = format!("delivery {id} is {}", status.as_str_name());
    eventually(DEADLINE, &what, || async move {
        client
            .get_delivery(id)
            .await
            .ok()
            .filter(|delivery| delivery.status() == status)
    })
    .await
}

/// The ids of the deliveries with attempts logged for a subscription.
async fn attempted_delivery_ids(client: &Client, subscription_id: &str) -> Vec<String> {
    client
        .list_delivery_attempts(ListDeliveryAttemptsRequest {
            subscription_id: subscription_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("the attempt log can be read")
        .attempts
        .into_iter()
        .map(|attempt| attempt.delivery_id)
        .collect()
}

/// An HTTP answer: status, `content-type` and body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        assert_eq!(self.content_type.as_deref(), Some("application/json"));
        serde_json::from_slice(&self.body).expect("the answer is JSON")
    }
}

/// Sends one request with a plain HTTP client, so that every header is the test's choice.
async fn http(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let client: HttpClient<_, Full<Bytes>> = HttpClient::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("the request is well formed");
    let response = client.request(request).await.expect("the gateway answers");
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
        .expect("the body arrives")
        .to_bytes();
    Answer {
        status,
        content_type,
        body,
    }
}

/// Posts `body` as JSON to the ingest endpoint of a subscription, with extra headers.
async fn post_ingest(
    server: &TestServer,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let url = format!("{}/ingest/{path_and_query}", server.http_url);
    http(Method::POST, &url, &all, body).await
}

/// Removes the harness's `--allow-target-cidr 127.0.0.0/8`: a later flag only adds to the list.
fn without_loopback_allowed(args: &mut Vec<String>) {
    let at = args
        .iter()
        .position(|arg| arg == "--allow-target-cidr")
        .expect("the harness allows loopback");
    args.drain(at..at + 2);
    assert!(!args.iter().any(|arg| arg == "--allow-target-cidr"));
}

/// A server that refuses every internal address, plus `extra` flags.
async fn start_guarded(extra: &[&str]) -> TestServer {
    TestServer::start_with_edited_args(|args| {
        without_loopback_allowed(args);
        args.extend(extra.iter().map(|arg| arg.to_string()));
    })
    .await
}

/// Points the server at `database` instead of the fresh one the harness made.
fn use_database(args: &mut [String], database: &TestDatabase) {
    let at = args
        .iter()
        .position(|arg| arg == "--database-url")
        .expect("the harness names a database");
    args[at + 1] = database.url();
}

/// A client of `server` that sends `token`.
async fn client_with_token(server: &TestServer, token: &str) -> Client {
    Client::connect(ClientConfig {
        server: server.grpc_url.clone(),
        ingest_url: server.http_url.clone(),
        api_token: Some(token.to_owned()),
    })
    .await
    .expect("the SDK connects")
}

/// Runs `grpcurl -plaintext ADDRESS args…` and returns its standard output; panics when it fails.
async fn grpcurl(server: &TestServer, args: &[&str]) -> String {
    let address = server
        .grpc_url
        .strip_prefix("http://")
        .expect("the gRPC URL is http");
    let output = Command::new("grpcurl")
        .arg("-plaintext")
        .arg(address)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("grpcurl runs (tests/run installs it)");
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("grpcurl prints UTF-8")
}

// ---------------------------------------------------------------------------------------------
// 1. Outbound signatures.

#[test]
fn the_independent_verifier_reproduces_the_specification_vector() {
    let signature = SPEC_SIGNATURE.strip_prefix("v1,").unwrap();

    assert!(signature_matches(
        SPEC_SECRET,
        SPEC_ID,
        SPEC_TIMESTAMP,
        SPEC_BODY.as_bytes(),
        signature
    ));
    assert!(!signature_matches(
        SPEC_SECRET,
        SPEC_ID,
        SPEC_TIMESTAMP,
        b"{}",
        signature
    ));
    assert!(!signature_matches(
        OTHER_SECRET,
        SPEC_ID,
        SPEC_TIMESTAMP,
        SPEC_BODY.as_bytes(),
        signature
    ));
    assert_eq!(v1_signatures("v2,abc v1,x v1,y"), ["x", "y"]);
}

#[tokio::test]
async fn a_delivery_with_a_generated_secret_carries_one_v1_signature_the_independent_verifier_accepts()
 {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server.client, &receiver.url, true).await;
    let secret = subscription.secret.clone();
    assert!(secret.starts_with("whsec_"), "{secret}");

    let id = signed_ingest(&server.client, &subscription.id, &secret, r#"{"order": 1}"#).await;
    delivery_with_status(&server.client, &id, DeliveryStatus::Delivered).await;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let header = received[0].header("webhook-signature").unwrap();
    let entries: Vec<&str> = header.split(' ').collect();
    assert_eq!(entries.len(), 1, "{header}");
    let tag = BASE64
        .decode(entries[0].strip_prefix("v1,").expect("a v1 signature"))
        .expect("base64 after v1,");
    assert_eq!(tag.len(), 32, "an HMAC-SHA256 tag");
    assert_eq!(signatures_made_by(&secret, &received[0]), [true]);
    assert_eq!(signatures_made_by(OTHER_SECRET, &received[0]), [false]);
    server.stop().await;
}

#[tokio::test]
async fn a_delivery_with_the_specification_secret_and_body_verifies_independently() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = create(
        &server.client,
        Subscription {
            target_url: receiver.url.clone(),
            secret: SPEC_SECRET.into(),
            ..Default::default()
        },
        false,
    )
    .await
    .unwrap();

    let id = signed_ingest(&server.client, &subscription.id, SPEC_SECRET, SPEC_BODY).await;
    delivery_with_status(&server.client, &id, DeliveryStatus::Delivered).await;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, SPEC_BODY.as_bytes());
    assert_eq!(received[0].header("webhook-id"), Some(id.as_str()));
    assert_eq!(signatures_made_by(SPEC_SECRET, &received[0]), [true]);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Rotation.

/// Creates a subscription with a generated secret, rotates it to [`OTHER_SECRET`], delivers one
/// webhook and returns the old secret and what the receiver got.
async fn deliver_after_rotation(server: &TestServer) -> (String, Received) {
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server.client, &receiver.url, true).await;
    let old_secret = subscription.secret.clone();

    let updated = server
        .client
        .update_subscription(UpdateSubscriptionRequest {
            subscription: Some(Subscription {
                id: subscription.id.clone(),
                secret: OTHER_SECRET.into(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["secret".into()],
            }),
        })
        .await
        .expect("the secret is rotated");
    assert!(updated.has_secret);
    assert_eq!(
        updated.secret, "",
        "the update response does not echo the secret"
    );
    let id = signed_ingest(
        &server.client,
        &subscription.id,
        OTHER_SECRET,
        r#"{"after":"rotation"}"#,
    )
    .await;
    delivery_with_status(&server.client, &id, DeliveryStatus::Delivered).await;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    (old_secret, received[0].clone())
}

#[tokio::test]
async fn after_a_rotation_deliveries_carry_one_signature_for_the_new_and_one_for_the_old_secret() {
    let server = TestServer::start().await;

    let (old_secret, received) = deliver_after_rotation(&server).await;

    let header = received.header("webhook-signature").unwrap();
    assert_eq!(v1_signatures(header).len(), 2, "{header}");
    let by_new = signatures_made_by(OTHER_SECRET, &received);
    let by_old = signatures_made_by(&old_secret, &received);
    assert_eq!(by_new.iter().filter(|made| **made).count(), 1, "{header}");
    assert_eq!(by_old.iter().filter(|made| **made).count(), 1, "{header}");
    assert_ne!(
        by_new, by_old,
        "each signature belongs to a different secret"
    );
    server.stop().await;
}

#[tokio::test]
async fn with_no_rotation_grace_only_the_new_secret_signs() {
    let server = TestServer::start_with(&["--secret-rotation-grace", "0s"]).await;

    let (old_secret, received) = deliver_after_rotation(&server).await;

    assert_eq!(signatures_made_by(OTHER_SECRET, &received), [true]);
    assert_eq!(signatures_made_by(&old_secret, &received), [false]);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Inbound signatures.

#[tokio::test]
async fn ingest_for_a_subscription_with_a_secret_requires_the_exact_lowercase_hub_signature() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server.client, &receiver.url, true).await;
    let secret = subscription.secret.clone();
    let path = subscription.id.as_str();
    let body = r#"{"refused":true}"#;
    let correct = hub_signature(&secret, body);
    let wrong = hub_signature(OTHER_SECRET, body);
    let uppercase = format!("sha256={}", correct["sha256=".len()..].to_uppercase());
    let truncated = correct[..correct.len() - 1].to_owned();
    assert_ne!(
        uppercase, correct,
        "the tag has a hex letter to change case"
    );

    let missing = post_ingest(&server, path, &[], body).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{missing:?}");
    let message = missing.json()["error"].as_str().unwrap().to_owned();
    assert!(message.contains("X-Hub-Signature-256"), "{message}");
    for refused in [
        wrong.as_str(),
        "sha256=",
        truncated.as_str(),
        uppercase.as_str(),
    ] {
        let answer = post_ingest(&server, path, &[("x-hub-signature-256", refused)], body).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{refused}: {answer:?}"
        );
        let message = answer.json()["error"].as_str().unwrap().to_owned();
        assert!(
            message.contains("X-Hub-Signature-256"),
            "{refused}: {message}"
        );
    }

    let good_body = r#"{"signed":true}"#;
    let good_signature = hub_signature(&secret, good_body);
    let accepted = post_ingest(
        &server,
        path,
        &[("x-hub-signature-256", &good_signature)],
        good_body,
    )
    .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{accepted:?}");
    let id = accepted.json()["delivery_id"].as_str().unwrap().to_owned();
    delivery_with_status(&server.client, &id, DeliveryStatus::Delivered).await;

    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].body, good_body.as_bytes());
    assert_eq!(
        attempted_delivery_ids(&server.client, &subscription.id).await,
        [id]
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Event-type filtering.

#[tokio::test]
async fn a_subscription_with_event_types_gets_only_those_and_other_webhooks_are_answered_filtered()
{
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = create(
        &server.client,
        Subscription {
            target_url: receiver.url.clone(),
            event_types: vec!["order.created".into()],
            ..Default::default()
        },
        false,
    )
    .await
    .unwrap();
    let id = subscription.id.as_str();

    let other_type = post_ingest(
        &server,
        &format!("{id}?event_type=order.deleted"),
        &[],
        r#"{"n":1}"#,
    )
    .await;
    let no_type = post_ingest(&server, id, &[], r#"{"n":2}"#).await;
    let other_type_header = post_ingest(
        &server,
        id,
        &[("x-event-type", "order.deleted")],
        r#"{"n":3}"#,
    )
    .await;
    for answer in [other_type, no_type, other_type_header] {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
        assert_eq!(
            answer.json(),
            json!({"delivery_id": null, "status": "filtered"})
        );
    }

    let matching = ingest(
        &server.client,
        id,
        r#"{"n":4}"#,
        IngestOptions {
            event_type: Some("order.created".into()),
            ..Default::default()
        },
    )
    .await;
    delivery_with_status(&server.client, &matching, DeliveryStatus::Delivered).await;

    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].body, r#"{"n":4}"#.as_bytes());
    assert_eq!(
        received[0].header("webhook-event-type"),
        Some("order.created")
    );
    assert_eq!(attempted_delivery_ids(&server.client, id).await, [matching]);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Request forgery.

#[tokio::test]
async fn literal_internal_addresses_in_any_spelling_are_refused_at_create_naming_the_target_url() {
    let server = start_guarded(&[]).await;
    let receiver = Receiver::start(200).await;
    let port = receiver.addr.port();

    for target in [
        format!("http://127.0.0.1:{port}/"),
        "http://[::1]/".to_owned(),
        "http://[::ffff:127.0.0.1]/".to_owned(),
        "http://2130706433/".to_owned(),
        "http://0x7f.0.0.1/".to_owned(),
        "http://0177.0.0.1/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://0.0.0.0/".to_owned(),
        "http://[fd00::1]/".to_owned(),
        "http://[64:ff9b::a9fe:a9fe]/".to_owned(),
    ] {
        let subscription = Subscription {
            target_url: target.clone(),
            ..Default::default()
        };
        let error = create(&server.client, subscription, false)
            .await
            .expect_err(&target);

        assert_eq!(
            error.code(),
            Some(Code::InvalidArgument),
            "{target}: {error}"
        );
        assert!(
            error
                .to_string()
                .starts_with("INVALID_ARGUMENT: subscription.target_url: refused to connect to "),
            "{target}: {error}"
        );
    }
    let listed = server
        .client
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await
        .unwrap();
    assert!(listed.subscriptions.is_empty(), "{listed:?}");
    assert_eq!(receiver.count(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_accepted_but_its_delivery_fails_once_for_good() {
    let server = start_guarded(&[]).await;
    let receiver = Receiver::start(200).await;
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    let subscription = subscribe(&server.client, &url, false).await;

    let id = ingest(
        &server.client,
        &subscription.id,
        r#"{"to":"localhost"}"#,
        IngestOptions::default(),
    )
    .await;

    let delivery = delivery_with_status(&server.client, &id, DeliveryStatus::Failed).await;
    assert_eq!(delivery.attempts.len(), 1, "{delivery:?}");
    let attempt = &delivery.attempts[0];
    assert_eq!(attempt.outcome(), AttemptOutcome::Failure);
    assert!(
        attempt.error.contains("refused to connect"),
        "{}",
        attempt.error
    );
    assert_eq!(receiver.count(), 0);
    server.stop().await;
}

/// Delivers one webhook to `http://localhost:PORT/hook` through `server` and checks that it arrives.
async fn assert_localhost_is_delivered(server: &TestServer) {
    let receiver = Receiver::start(200).await;
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    let subscription = subscribe(&server.client, &url, false).await;

    let id = ingest(
        &server.client,
        &subscription.id,
        r#"{"to":"localhost"}"#,
        IngestOptions::default(),
    )
    .await;

    delivery_with_status(&server.client, &id, DeliveryStatus::Delivered).await;
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn allowing_the_loopback_range_lets_a_localhost_target_be_delivered() {
    let server = start_guarded(&["--allow-target-cidr", "127.0.0.0/8"]).await;

    assert_localhost_is_delivered(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn allowing_private_targets_lets_a_localhost_target_be_delivered() {
    let server = start_guarded(&["--allow-private-targets"]).await;

    assert_localhost_is_delivered(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn updating_a_target_to_a_literal_internal_address_is_refused_and_changes_nothing() {
    let server = start_guarded(&[]).await;
    let subscription = subscribe(&server.client, "http://localhost:9/hook", false).await;

    for target in ["http://169.254.169.254/", "http://[::ffff:10.0.0.1]/"] {
        let error = server
            .client
            .update_subscription(UpdateSubscriptionRequest {
                subscription: Some(Subscription {
                    id: subscription.id.clone(),
                    target_url: target.into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["target_url".into()],
                }),
            })
            .await
            .expect_err(target);

        assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("INVALID_ARGUMENT: subscription.target_url: refused to connect to "),
            "{target}: {error}"
        );
    }
    let fetched = server
        .client
        .get_subscription(&subscription.id)
        .await
        .unwrap();
    assert_eq!(fetched.target_url, "http://localhost:9/hook");
    server.stop().await;
}

#[tokio::test]
async fn a_literal_loopback_target_saved_while_allowed_is_refused_at_delivery_once_it_is_not() {
    let database = TestDatabase::create().await;
    let receiver = Receiver::start(200).await;
    let permissive = TestServer::start_with_edited_args(|args| use_database(args, &database)).await;
    let subscription = subscribe(&permissive.client, &receiver.url, false).await;
    permissive.stop().await;
    let guarded = TestServer::start_with_edited_args(|args| {
        use_database(args, &database);
        without_loopback_allowed(args);
    })
    .await;

    let id = ingest(
        &guarded.client,
        &subscription.id,
        r#"{"policy":"tightened"}"#,
        IngestOptions::default(),
    )
    .await;

    let delivery = delivery_with_status(&guarded.client, &id, DeliveryStatus::Failed).await;
    assert_eq!(delivery.attempts.len(), 1, "{delivery:?}");
    assert_eq!(delivery.attempts[0].outcome(), AttemptOutcome::Failure);
    assert!(
        delivery.attempts[0]
            .error
            .starts_with("refused to connect to 127.0.0.1: loopback"),
        "{}",
        delivery.attempts[0].error
    );
    assert_eq!(receiver.count(), 0);
    guarded.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. API token.

#[tokio::test]
async fn with_an_api_token_the_whd_services_require_it_and_health_reflection_and_ingest_stay_open()
{
    let server = TestServer::start_with(&["--api-token", API_TOKEN]).await;
    let with_token = client_with_token(&server, API_TOKEN).await;
    let with_wrong_token = client_with_token(&server, "0123456789abcdef0124").await;

    let missing = server
        .client
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await
        .unwrap_err();
    let wrong = with_wrong_token
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await
        .unwrap_err();
    let right = with_token
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await;

    assert_eq!(missing.code(), Some(Code::Unauthenticated), "{missing}");
    assert!(
        missing.to_string().contains("missing API token"),
        "{missing}"
    );
    assert_eq!(wrong.code(), Some(Code::Unauthenticated), "{wrong}");
    assert!(wrong.to_string().contains("invalid API token"), "{wrong}");
    assert!(right.is_ok(), "{right:?}");
    let unauthenticated_create = create(
        &server.client,
        Subscription {
            target_url: "http://127.0.0.1:9/hook".into(),
            ..Default::default()
        },
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(unauthenticated_create.code(), Some(Code::Unauthenticated));

    let health: Value =
        serde_json::from_str(&grpcurl(&server, &["grpc.health.v1.Health/Check"]).await)
            .expect("grpcurl prints JSON");
    assert_eq!(health["status"], "SERVING");
    let services = grpcurl(&server, &["list"]).await;
    assert!(
        services.contains("whd.v1.SubscriptionService"),
        "{services}"
    );

    // Ingest authenticates senders with signatures, not the API token.
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&with_token, &receiver.url, false).await;
    let id = ingest(
        &server.client,
        &subscription.id,
        r#"{"token":"none"}"#,
        IngestOptions::default(),
    )
    .await;
    delivery_with_status(&with_token, &id, DeliveryStatus::Delivered).await;
    assert_eq!(receiver.count(), 1);
    server.stop().await;
}

#[tokio::test]
async fn without_an_api_token_calls_need_none() {
    let server = TestServer::start().await;

    let created = subscribe(&server.client, "http://127.0.0.1:9/hook", false).await;
    let listed = server
        .client
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await
        .unwrap();

    assert_eq!(listed.subscriptions.len(), 1);
    assert_eq!(listed.subscriptions[0].id, created.id);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. Secrets stay in.

#[tokio::test]
async fn reading_a_subscription_never_returns_its_secret_over_grpc_or_the_json_api() {
    let server = TestServer::start().await;
    let generated = subscribe(&server.client, "http://127.0.0.1:9/hook", true).await;
    let supplied = create(
        &server.client,
        Subscription {
            target_url: "http://127.0.0.1:9/hook".into(),
            secret: OTHER_SECRET.into(),
            ..Default::default()
        },
        false,
    )
    .await
    .unwrap();
    assert!(
        generated.secret.starts_with("whsec_"),
        "shown once at create"
    );
    assert_eq!(supplied.secret, "", "a supplied secret is not echoed");

    for id in [&generated.id, &supplied.id] {
        let fetched = server.client.get_subscription(id).await.unwrap();
        assert_eq!(fetched.secret, "");
        assert!(fetched.has_secret);
    }
    let listed = server
        .client
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.subscriptions.len(), 2);
    for subscription in &listed.subscriptions {
        assert_eq!(subscription.secret, "");
        assert!(subscription.has_secret);
    }
    for path in [
        format!("/v1/subscriptions/{}", generated.id),
        format!("/v1/subscriptions/{}", supplied.id),
        "/v1/subscriptions".to_owned(),
    ] {
        let answer = http(Method::GET, &format!("{}{path}", server.http_url), &[], "").await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {answer:?}");
        let text = String::from_utf8_lossy(&answer.body);
        assert!(!text.contains("whsec_"), "{path}: {text}");
        let value = answer.json();
        let subscriptions = match value.get("subscriptions") {
            Some(listed) => listed.as_array().expect("a list").clone(),
            None => vec![value],
        };
        assert!(!subscriptions.is_empty(), "{path}: {text}");
        for subscription in subscriptions {
            assert_eq!(subscription["hasSecret"], true, "{path}: {text}");
        }
    }
    server.stop().await;
}
