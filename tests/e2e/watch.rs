//! Watching deliveries: live order, filters, resuming after a cursor without gap or duplicate, a slow
//! watcher that lags and is refilled, disconnects; then `whctl watch` and `whctl listen` end to end, and
//! an independent Standard Webhooks verifier against a real signed delivery.

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::process::Child;
use whctl::server_process::ServingAddresses;
use whd_e2e::{Receiver, Reply, TestServer, eventually, free_port, start_server, test_args};
use whd_sdk::{
    AttemptOutcome, Client, ClientConfig, CreateSubscriptionRequest, DeliveryEvent,
    DeliveryEventKind, DeliveryEventStream, DeliveryStatus, IngestOptions, Subscription,
    WatchDeliveriesRequest,
};

/// How long a test waits for something the server does in well under a second.
const DEADLINE: Duration = Duration::from_secs(15);

async fn subscribe(client: &Client, url: &str) -> Subscription {
    subscribe_with(client, url, false).await
}

async fn subscribe_with(client: &Client, url: &str, generate_secret: bool) -> Subscription {
    client
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                target_url: url.into(),
                ..Default::default()
            }),
            generate_secret,
        })
        .await
        .expect("the subscription is created")
}

/// Ingests `body` for `subscription` and returns the id of the delivery it created.
async fn ingest(client: &Client, subscription: &Subscription, body: &str) -> String {
    ingest_with(client, subscription, body, IngestOptions::default()).await
}

async fn ingest_with(
    client: &Client,
    subscription: &Subscription,
    body: &str,
    options: IngestOptions,
) -> String {
    client
        .ingest(&subscription.id, body.to_owned(), options)
        .await
        .expect("the webhook is accepted")
        .delivery_id
        .expect("an unfiltered webhook creates a delivery")
}

/// `X-Hub-Signature-256` for `body`: a subscription with a secret only accepts signed ingests.
fn hub_signature(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length works");
    mac.update(body.as_bytes());
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// Waits until the delivery reaches `status`.
async fn wait_for_status(client: &Client, id: &str, status: DeliveryStatus) {
    let what = format!("delivery {id} is {}", status.as_str_name());
    eventually(DEADLINE, &what, || async move {
        client
            .get_delivery(id)
            .await
            .ok()
            .filter(|delivery| delivery.status() == status)
            .map(|_| ())
    })
    .await;
}

async fn watch(client: &Client, request: WatchDeliveriesRequest) -> DeliveryEventStream {
    client
        .watch_deliveries(request)
        .await
        .expect("the watch stream opens")
}

fn of_subscription(subscription: &Subscription) -> WatchDeliveriesRequest {
    WatchDeliveriesRequest {
        subscription_id: subscription.id.clone(),
        ..Default::default()
    }
}

/// Reads the next `count` events, failing the test if they do not come within [`DEADLINE`].
async fn next_events(stream: &mut DeliveryEventStream, count: usize) -> Vec<DeliveryEvent> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let event = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for event {} of {count}",
                    events.len() + 1
                )
            })
            .expect("the stream does not fail")
            .expect("the stream does not end");
        events.push(event);
    }
    events
}

fn cursors(events: &[DeliveryEvent]) -> Vec<u64> {
    events.iter().map(|event| event.cursor).collect()
}

fn assert_strictly_increasing(cursors: &[u64]) {
    assert!(
        cursors.windows(2).all(|pair| pair[0] < pair[1]),
        "cursors are not strictly increasing: {cursors:?}"
    );
}

fn outcome(event: &DeliveryEvent) -> Option<AttemptOutcome> {
    event.attempt.as_ref().map(|attempt| attempt.outcome())
}

#[tokio::test]
async fn live_events_of_a_retried_delivery_arrive_in_order_with_increasing_cursors() {
    let server = TestServer::start().await;
    let receiver = Receiver::scripted(&[Reply::Status(500)], Reply::Status(200)).await;
    let subscription = subscribe(&server.client, &receiver.url).await;
    let mut stream = watch(&server.client, of_subscription(&subscription)).await;

    let delivery_id = ingest(&server.client, &subscription, r#"{"n":1}"#).await;
    let events = next_events(&mut stream, 3).await;

    let kinds: Vec<DeliveryEventKind> = events.iter().map(DeliveryEvent::kind).collect();
    assert_eq!(
        kinds,
        [
            DeliveryEventKind::Queued,
            DeliveryEventKind::Attempt,
            DeliveryEventKind::Attempt
        ]
    );
    assert_eq!(
        events.iter().map(outcome).collect::<Vec<_>>(),
        [
            None,
            Some(AttemptOutcome::FailedAttempt),
            Some(AttemptOutcome::Success)
        ]
    );
    assert_eq!(
        events.iter().map(DeliveryEvent::status).collect::<Vec<_>>(),
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered
        ]
    );
    assert!(
        events[1].next_attempt_time.is_some(),
        "a failed attempt announces its retry: {:?}",
        events[1]
    );
    assert!(events[2].next_attempt_time.is_none(), "{:?}", events[2]);
    let failed = events[1].attempt.as_ref().unwrap();
    assert_eq!((failed.attempt_number, failed.http_status), (1, Some(500)));
    let succeeded = events[2].attempt.as_ref().unwrap();
    assert_eq!(
        (succeeded.attempt_number, succeeded.http_status),
        (2, Some(200))
    );
    for event in &events {
        assert_eq!(event.delivery_id, delivery_id);
        assert_eq!(event.subscription_id, subscription.id);
    }
    assert_strictly_increasing(&cursors(&events));
    // An open watch stream holds up the server's graceful shutdown, so it is closed first.
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn filters_show_only_the_subscription_outcomes_delivery_and_event_types_asked_for() {
    let server = TestServer::start().await;
    let accepting = Receiver::start(200).await;
    let refusing = Receiver::start(500).await;
    let a = subscribe(&server.client, &accepting.url).await;
    let b = subscribe(&server.client, &refusing.url).await;
    let mut only_a = watch(&server.client, of_subscription(&a)).await;
    let only_failures = WatchDeliveriesRequest {
        outcomes: vec![AttemptOutcome::Failure as i32],
        ..Default::default()
    };
    let mut only_failures = watch(&server.client, only_failures).await;

    // Each filtered-out event is logged before the ones a watch should show, so a filter that let it
    // through would show it first.
    let b1 = ingest(&server.client, &b, r#"{"step":"b1"}"#).await;
    wait_for_status(&server.client, &b1, DeliveryStatus::Failed).await;
    let a1 = ingest(&server.client, &a, r#"{"step":"a1"}"#).await;
    wait_for_status(&server.client, &a1, DeliveryStatus::Delivered).await;
    let b2 = ingest(&server.client, &b, r#"{"step":"b2"}"#).await;
    wait_for_status(&server.client, &b2, DeliveryStatus::Failed).await;
    let sentinel_options = IngestOptions {
        event_type: Some("sentinel.ping".into()),
        ..Default::default()
    };
    let sentinel = ingest_with(&server.client, &a, r#"{"step":"end"}"#, sentinel_options).await;

    let events = next_events(&mut only_a, 3).await;
    assert_eq!(
        events
            .iter()
            .map(|event| (event.delivery_id.as_str(), event.kind()))
            .collect::<Vec<_>>(),
        [
            (a1.as_str(), DeliveryEventKind::Queued),
            (a1.as_str(), DeliveryEventKind::Attempt),
            (sentinel.as_str(), DeliveryEventKind::Queued),
        ]
    );
    assert!(events.iter().all(|event| event.subscription_id == a.id));

    let events = next_events(&mut only_failures, 2).await;
    assert_eq!(
        events
            .iter()
            .map(|event| (event.delivery_id.as_str(), outcome(event)))
            .collect::<Vec<_>>(),
        [
            (b1.as_str(), Some(AttemptOutcome::Failure)),
            (b2.as_str(), Some(AttemptOutcome::Failure)),
        ]
    );

    let only_b2 = WatchDeliveriesRequest {
        delivery_id: b2.clone(),
        after_cursor: Some(0),
        ..Default::default()
    };
    let events = next_events(&mut watch(&server.client, only_b2).await, 4).await;
    assert!(
        events.iter().all(|event| event.delivery_id == b2),
        "{events:?}"
    );
    assert_eq!(
        events.iter().map(outcome).collect::<Vec<_>>(),
        [
            None,
            Some(AttemptOutcome::FailedAttempt),
            Some(AttemptOutcome::FailedAttempt),
            Some(AttemptOutcome::Failure),
        ]
    );

    let only_sentinels = WatchDeliveriesRequest {
        event_types: vec!["sentinel.ping".into()],
        after_cursor: Some(0),
        ..Default::default()
    };
    let events = next_events(&mut watch(&server.client, only_sentinels).await, 1).await;
    assert_eq!(events[0].delivery_id, sentinel);
    assert_eq!(events[0].event_type, "sentinel.ping");
    // Open watch streams hold up the server's graceful shutdown, so they are closed first.
    drop(only_a);
    drop(only_failures);
    server.stop().await;
}

#[tokio::test]
async fn reconnecting_after_the_last_cursor_seen_misses_and_repeats_nothing() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server.client, &receiver.url).await;
    let mut first = watch(&server.client, of_subscription(&subscription)).await;
    for n in 0..3 {
        ingest(
            &server.client,
            &subscription,
            &format!(r#"{{"before":{n}}}"#),
        )
        .await;
    }
    // Two of the six events stay unread when the watcher goes away.
    let seen_before = next_events(&mut first, 4).await;
    drop(first);

    let mut away = Vec::new();
    for n in 0..3 {
        away.push(ingest(&server.client, &subscription, &format!(r#"{{"away":{n}}}"#)).await);
    }
    for id in &away {
        wait_for_status(&server.client, id, DeliveryStatus::Delivered).await;
    }
    let resume = WatchDeliveriesRequest {
        after_cursor: Some(seen_before.last().unwrap().cursor),
        ..of_subscription(&subscription)
    };
    // Webhooks keep arriving while the watcher reconnects, so the seam between the replayed log and
    // live events is crossed under load.
    let client = server.client.clone();
    let sender = subscription.clone();
    let during = tokio::spawn(async move {
        for n in 0..20 {
            ingest(&client, &sender, &format!(r#"{{"during":{n}}}"#)).await;
        }
    });
    let mut resumed = watch(&server.client, resume).await;
    during.await.expect("the ingest task does not panic");
    // Every webhook makes a QUEUED and a SUCCESS event: 2 unread + 2 × (3 away + 20 during).
    let seen_after = next_events(&mut resumed, 2 + 2 * (3 + 20)).await;

    let mut seen: Vec<u64> = cursors(&seen_before);
    seen.extend(cursors(&seen_after));
    let full_log = WatchDeliveriesRequest {
        after_cursor: Some(0),
        ..of_subscription(&subscription)
    };
    let logged = next_events(&mut watch(&server.client, full_log).await, seen.len()).await;
    assert_strictly_increasing(&seen);
    assert_eq!(seen, cursors(&logged));
    // An open watch stream holds up the server's graceful shutdown, so it is closed first.
    drop(resumed);
    server.stop().await;
}

#[tokio::test]
async fn a_watcher_that_does_not_read_lags_without_slowing_deliveries_and_is_refilled() {
    // The hub keeps 4096 events per watcher. Long target URLs make events large, so that the transport
    // buffers of the unread stream fill quickly and the watcher falls behind the hub.
    const WEBHOOKS: usize = 6000;
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let padded_url = format!("{}?padding={}", receiver.url, "p".repeat(1500));
    let subscription = subscribe(&server.client, &padded_url).await;
    let mut slow = watch(&server.client, of_subscription(&subscription)).await;

    let client = server.client.clone();
    let ingested: Vec<String> = futures::stream::iter(0..WEBHOOKS)
        .map(|n| {
            let client = client.clone();
            let subscription = subscription.clone();
            async move { ingest(&client, &subscription, &format!(r#"{{"n":{n}}}"#)).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    eventually(
        Duration::from_secs(120),
        "every webhook reaches the receiver",
        || async { (receiver.count() >= WEBHOOKS).then_some(()) },
    )
    .await;

    let mut lagged = 0;
    let mut delivered: HashSet<String> = HashSet::new();
    let mut seen_cursors = Vec::new();
    let expected: HashSet<String> = ingested.into_iter().collect();
    while delivered.len() < expected.len() {
        let event = next_events(&mut slow, 1).await.remove(0);
        if event.kind() == DeliveryEventKind::Lagged {
            lagged += event.lagged_count;
            continue;
        }
        seen_cursors.push(event.cursor);
        if outcome(&event) == Some(AttemptOutcome::Success) {
            delivered.insert(event.delivery_id);
        }
    }
    assert_eq!(receiver.count(), WEBHOOKS);
    assert!(lagged > 0, "the unread watcher never lagged");
    assert_eq!(delivered, expected);
    assert_eq!(seen_cursors.len(), 2 * WEBHOOKS);
    assert_strictly_increasing(&seen_cursors);
    // An open watch stream holds up the server's graceful shutdown, so it is closed first.
    drop(slow);
    server.stop().await;
}

#[tokio::test]
async fn dropping_many_watch_streams_leaves_the_server_delivering_and_watchable() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server.client, &receiver.url).await;
    let mut streams = Vec::new();
    for _ in 0..200 {
        streams.push(watch(&server.client, of_subscription(&subscription)).await);
    }
    let first = ingest(&server.client, &subscription, r#"{"n":1}"#).await;
    for stream in &mut streams {
        assert_eq!(next_events(stream, 1).await[0].delivery_id, first);
    }

    drop(streams);
    // The first webhook's attempt must be logged before the fresh watch starts, or it would be live
    // for the fresh watch too.
    wait_for_status(&server.client, &first, DeliveryStatus::Delivered).await;

    let mut fresh = watch(&server.client, of_subscription(&subscription)).await;
    let second = ingest(&server.client, &subscription, r#"{"n":2}"#).await;
    let events = next_events(&mut fresh, 2).await;
    assert!(events.iter().all(|event| event.delivery_id == second));
    assert_eq!(outcome(&events[1]), Some(AttemptOutcome::Success));
    wait_for_status(&server.client, &second, DeliveryStatus::Delivered).await;
    assert_eq!(receiver.count(), 2);
    server.stop().await;
}

#[tokio::test]
async fn whctl_watch_prints_one_json_event_per_line_and_stops_after_count() {
    let server = TestServer::start().await;
    let receiver = Receiver::scripted(&[Reply::Status(500)], Reply::Status(200)).await;
    let subscription = subscribe(&server.client, &receiver.url).await;

    // `--after-cursor 0` makes the output independent of whether the watch or the ingest goes first.
    let watch_args = [
        "watch",
        "-o",
        "json",
        "--count",
        "3",
        "--after-cursor",
        "0",
        "--subscription",
        &subscription.id,
    ];
    let watch = server.whctl(&watch_args);
    let send = ingest(&server.client, &subscription, r#"{"watched":true}"#);
    let ((result, stdout), delivery_id) = tokio::join!(watch, send);

    assert_eq!(result, Ok(()), "{stdout}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let cursors: Vec<u64> = lines
        .iter()
        .map(|line| {
            // proto3 JSON writes 64-bit integers as strings.
            line["cursor"]
                .as_str()
                .and_then(|cursor| cursor.parse().ok())
                .expect("every event has a cursor")
        })
        .collect();
    assert_strictly_increasing(&cursors);
    assert!(
        lines
            .iter()
            .all(|line| line["deliveryId"] == delivery_id.as_str())
    );
    assert_eq!(lines[0]["kind"], "DELIVERY_EVENT_KIND_QUEUED");
    assert_eq!(
        lines[1]["attempt"]["outcome"],
        "ATTEMPT_OUTCOME_FAILED_ATTEMPT"
    );
    assert_eq!(lines[2]["attempt"]["outcome"], "ATTEMPT_OUTCOME_SUCCESS");
    server.stop().await;
}

/// Standard output shared between a running `whctl` and the test that watches what it printed.
#[derive(Clone, Debug, Default)]
struct SharedOutput(Arc<Mutex<Vec<u8>>>);

impl SharedOutput {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .expect("whctl prints UTF-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Write for SharedOutput {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts the server binary with its database at `database` on these addresses (port 0: ports it picks
/// itself), and waits until it serves; returns it with the addresses it serves on.
async fn start_server_process(
    database: &std::path::Path,
    addresses: ServingAddresses,
) -> (Child, ServingAddresses) {
    let mut args = test_args(database);
    args.remove(0);
    args.extend([
        "--grpc-addr".into(),
        addresses.grpc.to_string(),
        "--http-addr".into(),
        addresses.http.to_string(),
    ]);
    start_server(env!("CARGO_BIN_EXE_whd-test-server"), &args).await
}

/// Kills the server with SIGKILL, like a crash: open streams break without an end.
async fn kill(mut server: Child) {
    server
        .kill()
        .await
        .expect("the server process can be killed");
}

#[tokio::test]
async fn whctl_watch_resumes_after_a_server_crash_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("whd.db");
    let any_port = "127.0.0.1:0".parse().unwrap();
    let (server, addresses) = start_server_process(
        &database,
        ServingAddresses {
            grpc: any_port,
            http: any_port,
        },
    )
    .await;
    let config = ClientConfig {
        server: format!("http://{}", addresses.grpc),
        ingest_url: format!("http://{}", addresses.http),
        api_token: None,
    };
    let client = Client::connect(config.clone()).await.unwrap();
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&client, &receiver.url).await;
    let output = SharedOutput::default();
    let cli = <whctl::Cli as clap::Parser>::try_parse_from([
        "whctl",
        "--server",
        &config.server,
        "watch",
        "-o",
        "json",
        "--after-cursor",
        "0",
        "--count",
        "8",
        "--reconnect-for",
        "30s",
        "--subscription",
        &subscription.id,
    ])
    .unwrap();
    let mut whctl_output = output.clone();
    let whctl = tokio::spawn(async move {
        whctl::run_with_output(cli, &mut whctl_output)
            .await
            .map_err(|error| whctl::error_message(&error))
    });
    for n in 0..2 {
        ingest(
            &client,
            &subscription,
            &format!(r#"{{"before_crash":{n}}}"#),
        )
        .await;
    }
    eventually(DEADLINE, "whctl printed the first four events", || async {
        (output.lines().len() >= 4).then_some(())
    })
    .await;

    kill(server).await;
    // On the same ports, so that the restarted server is where whctl reconnects to.
    let (server, _) = start_server_process(&database, addresses).await;
    let client = Client::connect(config).await.unwrap();
    for n in 0..2 {
        ingest(
            &client,
            &subscription,
            &format!(r#"{{"after_restart":{n}}}"#),
        )
        .await;
    }
    let result = tokio::time::timeout(Duration::from_secs(60), whctl)
        .await
        .expect("whctl reconnects and prints eight events")
        .expect("the whctl task does not panic");

    assert_eq!(result, Ok(()));
    let printed: Vec<u64> = output
        .lines()
        .iter()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            event["cursor"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    let full_log = WatchDeliveriesRequest {
        after_cursor: Some(0),
        ..of_subscription(&subscription)
    };
    let logged = next_events(&mut watch(&client, full_log).await, 8).await;
    assert_eq!(printed, cursors(&logged));
    kill(server).await;
}

#[tokio::test]
async fn whctl_listen_prints_a_signed_delivery_with_a_valid_signature() {
    let server = TestServer::start().await;
    let port = free_port().to_string();
    // `listen` needs the secret, so the subscription (which generates it) comes first.
    let url = format!("http://127.0.0.1:{port}/hook");
    let subscription = subscribe_with(&server.client, &url, true).await;
    assert!(subscription.secret.starts_with("whsec_"));
    let listen_args = [
        "listen",
        "--port",
        &port,
        "--path",
        "/hook",
        "--secret",
        &subscription.secret,
        "--count",
        "1",
        "-o",
        "json",
    ];
    let listen = server.whctl(&listen_args);
    let body = r#"{"order":42,"items":["a","b"]}"#;
    let send = async {
        let address = format!("127.0.0.1:{port}");
        eventually(DEADLINE, "whctl listen accepts connections", || async {
            tokio::net::TcpStream::connect(&address)
                .await
                .ok()
                .map(drop)
        })
        .await;
        let options = IngestOptions {
            signature: Some(hub_signature(&subscription.secret, body)),
            ..Default::default()
        };
        ingest_with(&server.client, &subscription, body, options).await
    };
    let ((result, stdout), delivery_id) = tokio::join!(listen, send);

    assert_eq!(result, Ok(()), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let printed: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(printed["signature"], "valid", "{printed}");
    assert_eq!(
        printed["body"],
        serde_json::from_str::<serde_json::Value>(body).unwrap()
    );
    assert_eq!(printed["headers"]["webhook-id"], delivery_id.as_str());
    assert_eq!(printed["path"], "/hook");
    wait_for_status(&server.client, &delivery_id, DeliveryStatus::Delivered).await;
    server.stop().await;
}

/// Verifies with the Standard Webhooks reference library for Python, which shares no code with whd.
const PYTHON_VERIFIER: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, headers = sys.argv[1], json.loads(sys.argv[2])
Webhook(secret).verify(sys.stdin.buffer.read(), headers)
"#;

#[tokio::test]
async fn a_real_signed_delivery_passes_the_independent_python_verifier() {
    let installed = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    assert!(
        installed,
        "the Python package standardwebhooks is missing: run tests/run, or \
         `python3 -m pip install standardwebhooks`"
    );
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe_with(&server.client, &receiver.url, true).await;
    let body = r#"{"email":"test@example.com","username":"test_user"}"#;
    let options = IngestOptions {
        signature: Some(hub_signature(&subscription.secret, body)),
        ..Default::default()
    };
    ingest_with(&server.client, &subscription, body, options).await;
    eventually(DEADLINE, "the receiver gets the webhook", || async {
        (receiver.count() == 1).then_some(())
    })
    .await;
    let received = receiver.received().remove(0);
    let headers: serde_json::Map<String, serde_json::Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .into_iter()
            .map(|name| {
                let value = received
                    .header(name)
                    .expect("signed deliveries carry the header");
                (name.to_owned(), value.into())
            })
            .collect();

    let mut verifier = tokio::process::Command::new("python3")
        .args(["-c", PYTHON_VERIFIER, &subscription.secret])
        .arg(serde_json::Value::Object(headers).to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdin = verifier.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &received.body)
        .await
        .unwrap();
    drop(stdin);
    let outcome = verifier.wait_with_output().await.unwrap();

    assert!(
        outcome.status.success(),
        "the Python verifier rejected the delivery: {}",
        String::from_utf8_lossy(&outcome.stderr)
    );
    server.stop().await;
}
