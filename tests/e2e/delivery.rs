//! Delivery: exact bytes and headers, retries, exhaustion, timeouts, refused connections, redirects,
//! concurrency and event types.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use whd_e2e::{Receiver, Reply, TestServer, eventually};
use whd_sdk::{
    AttemptOutcome, Client, CreateSubscriptionRequest, Delivery, DeliveryStatus, IngestOptions,
    Subscription,
};

/// How long a test waits for something the server does in well under a second.
const DEADLINE: Duration = Duration::from_secs(15);

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

/// Ingests `count` webhooks `{"n": …}` with `concurrency` requests in flight; returns their delivery
/// ids in the order they were accepted.
async fn ingest_burst(
    server: &TestServer,
    subscription: &Subscription,
    count: usize,
    concurrency: usize,
) -> Vec<String> {
    futures::stream::iter(0..count)
        .map(|n| {
            let client = server.client.clone();
            let subscription = subscription.clone();
            async move { ingest(&client, &subscription, &format!(r#"{{"n": {n}}}"#)).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
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

/// Waits until the delivery has at least `count` attempts logged and returns it.
async fn delivery_with_attempts(client: &Client, id: &str, count: usize) -> Delivery {
    let what = format!("delivery {id} has {count} attempts logged");
    eventually(DEADLINE, &what, || async move {
        client
            .get_delivery(id)
            .await
            .ok()
            .filter(|delivery| delivery.attempts.len() >= count)
    })
    .await
}

fn outcomes(delivery: &Delivery) -> Vec<AttemptOutcome> {
    delivery
        .attempts
        .iter()
        .map(|attempt| attempt.outcome())
        .collect()
}

#[tokio::test]
async fn ingest_returns_202_then_delivers_the_exact_bytes_exactly_once() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;
    let body = r#"{"order": 42, "items": ["a", "b"],   "note": "spacing kept"}"#;

    let receipt = server
        .client
        .ingest(&subscription.id, body, IngestOptions::default())
        .await
        .unwrap();

    let delivery_id = receipt.delivery_id.expect("a delivery id");
    let delivery = eventually(Duration::from_secs(10), "the delivery is DELIVERED", || {
        let client = server.client.clone();
        let id = delivery_id.clone();
        async move {
            client
                .get_delivery(id)
                .await
                .ok()
                .filter(|d| d.status() == DeliveryStatus::Delivered)
        }
    })
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, body.as_bytes());
    assert_eq!(received[0].header("content-type"), Some("application/json"));
    assert_eq!(received[0].header("webhook-id"), Some(delivery_id.as_str()));
    assert!(
        received[0]
            .header("user-agent")
            .unwrap()
            .starts_with("whd/")
    );
    assert!(
        received[0]
            .header("webhook-timestamp")
            .unwrap()
            .parse::<i64>()
            .is_ok()
    );
    assert_eq!(delivery.attempts.len(), 1);
    assert_eq!(delivery.attempt_count, 1);
    server.stop().await;
}

#[tokio::test]
async fn failed_attempts_are_retried_with_the_same_id_and_body_until_the_target_accepts() {
    let server = TestServer::start().await;
    let receiver = Receiver::scripted(
        &[Reply::Status(500), Reply::Status(500)],
        Reply::Status(200),
    )
    .await;
    let subscription = subscribe(&server, &receiver.url).await;
    let body = r#"{"invoice": 7, "paid": true}"#;

    let delivery_id = ingest(&server.client, &subscription, body).await;

    let delivery =
        delivery_with_status(&server.client, &delivery_id, DeliveryStatus::Delivered).await;
    assert_eq!(
        outcomes(&delivery),
        [
            AttemptOutcome::FailedAttempt,
            AttemptOutcome::FailedAttempt,
            AttemptOutcome::Success
        ]
    );
    assert_eq!(delivery.attempt_count, 3);
    let statuses: Vec<_> = delivery.attempts.iter().map(|a| a.http_status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
    let numbers: Vec<_> = delivery.attempts.iter().map(|a| a.attempt_number).collect();
    assert_eq!(numbers, [1, 2, 3]);
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    for request in &received {
        assert_eq!(request.header("webhook-id"), Some(delivery_id.as_str()));
        assert_eq!(request.body, body.as_bytes());
    }
    server.stop().await;
}

#[tokio::test]
async fn a_target_that_always_fails_gets_exactly_three_attempts_then_the_delivery_fails() {
    let server = TestServer::start().await;
    let failing = Receiver::start(503).await;
    let healthy = Receiver::start(200).await;
    let failing_subscription = subscribe(&server, &failing.url).await;
    let control_subscription = subscribe(&server, &healthy.url).await;

    let delivery_id = ingest(&server.client, &failing_subscription, r#"{"n": 1}"#).await;

    let delivery = delivery_with_status(&server.client, &delivery_id, DeliveryStatus::Failed).await;
    assert_eq!(
        outcomes(&delivery),
        [
            AttemptOutcome::FailedAttempt,
            AttemptOutcome::FailedAttempt,
            AttemptOutcome::Failure
        ]
    );
    assert_eq!(delivery.attempt_count, 3);
    for attempt in &delivery.attempts {
        assert_eq!(attempt.http_status, Some(503));
        assert!(
            attempt.error.starts_with("HTTP 503"),
            "error of attempt {}: {:?}",
            attempt.attempt_number,
            attempt.error
        );
    }
    // A delivery made after the failure has gone through the dispatcher: had a fourth attempt been
    // scheduled, it would have had its chance by now.
    let control_id = ingest(&server.client, &control_subscription, r#"{"n": 2}"#).await;
    delivery_with_status(&server.client, &control_id, DeliveryStatus::Delivered).await;
    assert_eq!(failing.count(), 3);
    let after = server.client.get_delivery(&delivery_id).await.unwrap();
    assert_eq!(after.status(), DeliveryStatus::Failed);
    assert_eq!(after.attempts.len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_counts_as_a_failed_attempt() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(302).await;
    let subscription = subscribe(&server, &receiver.url).await;

    let delivery_id = ingest(&server.client, &subscription, r#"{"moved": true}"#).await;

    let delivery = delivery_with_attempts(&server.client, &delivery_id, 1).await;
    let first = &delivery.attempts[0];
    assert_eq!(first.outcome(), AttemptOutcome::FailedAttempt);
    assert_eq!(first.http_status, Some(302));
    assert!(first.error.starts_with("HTTP 302"), "{:?}", first.error);
    // The attempt's one request went to the target, and nothing else was requested on its behalf.
    assert_eq!(receiver.received()[0].path, "/hook");
    let failed = delivery_with_status(&server.client, &delivery_id, DeliveryStatus::Failed).await;
    assert!(
        failed.attempts.iter().all(|a| a.http_status == Some(302)),
        "{:?}",
        failed.attempts
    );
    assert_eq!(receiver.count(), failed.attempts.len());
    server.stop().await;
}

#[tokio::test]
async fn a_hanging_target_times_out_without_holding_up_other_subscriptions() {
    let server = TestServer::start().await;
    let hanging = Receiver::scripted(&[], Reply::Hang).await;
    let healthy = Receiver::start(200).await;
    let hanging_subscription = subscribe(&server, &hanging.url).await;
    let healthy_subscription = subscribe(&server, &healthy.url).await;

    let hanging_id = ingest(&server.client, &hanging_subscription, r#"{"to": "a"}"#).await;
    eventually(DEADLINE, "the hanging target got its request", || async {
        (hanging.count() == 1).then_some(())
    })
    .await;
    let mut healthy_ids = Vec::new();
    for n in 0..5 {
        let body = format!(r#"{{"to": "b", "n": {n}}}"#);
        healthy_ids.push(ingest(&server.client, &healthy_subscription, &body).await);
    }

    for id in &healthy_ids {
        delivery_with_status(&server.client, id, DeliveryStatus::Delivered).await;
    }
    assert_eq!(healthy.count(), 5);
    let still_hanging = server.client.get_delivery(&hanging_id).await.unwrap();
    assert_eq!(still_hanging.status(), DeliveryStatus::Pending);
    assert!(
        still_hanging.attempts.is_empty(),
        "the first attempt should still be waiting for an answer: {:?}",
        still_hanging.attempts
    );
    let timed_out = delivery_with_attempts(&server.client, &hanging_id, 1).await;
    let first = &timed_out.attempts[0];
    assert_eq!(first.outcome(), AttemptOutcome::FailedAttempt);
    assert_eq!(first.http_status, None);
    assert!(first.error.contains("timed out"), "{:?}", first.error);
    hanging.stop();
    server.stop().await;
}

#[tokio::test]
async fn a_hanging_target_gets_no_more_than_its_in_flight_cap_and_others_keep_the_remaining_slots()
{
    let server = TestServer::start_with(&[
        "--max-in-flight",
        "4",
        "--max-in-flight-per-subscription",
        "2",
        "--attempt-timeout",
        "5s",
        "--lease",
        "10s",
    ])
    .await;
    let hanging = Receiver::scripted(&[], Reply::Hang).await;
    let healthy = Receiver::start(200).await;
    let hanging_subscription = subscribe(&server, &hanging.url).await;
    let healthy_subscription = subscribe(&server, &healthy.url).await;

    let mut hanging_ids = Vec::new();
    for n in 0..6 {
        hanging_ids.push(
            ingest(
                &server.client,
                &hanging_subscription,
                &format!(r#"{{"n": {n}}}"#),
            )
            .await,
        );
    }
    eventually(
        DEADLINE,
        "the hanging target holds two requests",
        || async { (hanging.count() == 2).then_some(()) },
    )
    .await;
    let mut healthy_ids = Vec::new();
    for n in 0..5 {
        healthy_ids.push(
            ingest(
                &server.client,
                &healthy_subscription,
                &format!(r#"{{"n": {n}}}"#),
            )
            .await,
        );
    }

    for id in &healthy_ids {
        delivery_with_status(&server.client, id, DeliveryStatus::Delivered).await;
    }
    assert_eq!(
        hanging.count(),
        2,
        "the capped subscription never had more than two attempts out"
    );
    for id in &hanging_ids {
        let delivery = server.client.get_delivery(id).await.unwrap();
        assert!(
            delivery.attempts.is_empty(),
            "no hanging attempt has timed out yet: {:?}",
            delivery.attempts
        );
    }
    hanging.stop();
    server.stop().await;
}

#[tokio::test]
async fn tasks_beyond_a_busy_subscriptions_parking_space_are_delivered_without_waiting_for_their_leases()
 {
    // One slot per subscription, and room to park 128 rounds of it: a third of a burst of 200
    // cannot wait in memory. The first of those is postponed, which opens the subscription's line to
    // ingest, and ingest queues the next ones at its end, unleased. Leases last five minutes, far
    // beyond the deadline, so none is delivered by a lease running out.
    let server = TestServer::start_with(&[
        "--max-in-flight",
        "64",
        "--max-in-flight-per-subscription",
        "1",
        "--lease",
        "300s",
    ])
    .await;
    let receiver = Receiver::scripted(&[], Reply::After(Duration::from_millis(5), 200)).await;
    let subscription = subscribe(&server, &receiver.url).await;

    let delivery_ids = ingest_burst(&server, &subscription, 200, 20).await;

    for id in &delivery_ids {
        let delivery = delivery_with_status(&server.client, id, DeliveryStatus::Delivered).await;
        assert_eq!(
            outcomes(&delivery),
            [AttemptOutcome::Success],
            "postponing a task is not an attempt: {id}"
        );
    }
    assert_eq!(receiver.count(), 200, "each delivered exactly once");
    receiver.stop();
    server.stop().await;
}

#[tokio::test]
async fn a_refused_connection_is_a_failed_attempt_that_says_so() {
    let server = TestServer::start().await;
    let subscription = subscribe(&server, "http://127.0.0.1:1/").await;

    let delivery_id = ingest(&server.client, &subscription, r#"{"nobody": "home"}"#).await;

    let delivery = delivery_with_attempts(&server.client, &delivery_id, 1).await;
    let first = &delivery.attempts[0];
    assert_eq!(first.outcome(), AttemptOutcome::FailedAttempt);
    assert_eq!(first.http_status, None);
    let error = first.error.to_lowercase();
    assert!(
        error.contains("connect") && error.contains("refused"),
        "{:?}",
        first.error
    );
    server.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_webhooks_are_each_delivered_exactly_once() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;

    let delivery_ids = ingest_burst(&server, &subscription, 200, 50).await;

    eventually(DEADLINE, "the receiver got 200 requests", || async {
        (receiver.count() >= 200).then_some(())
    })
    .await;
    for id in &delivery_ids {
        let delivery = delivery_with_status(&server.client, id, DeliveryStatus::Delivered).await;
        assert_eq!(outcomes(&delivery), [AttemptOutcome::Success], "{id}");
    }
    let received = receiver.received();
    assert_eq!(received.len(), 200);
    let received_ids: HashSet<&str> = received
        .iter()
        .map(|request| {
            request
                .header("webhook-id")
                .expect("every request has an id")
        })
        .collect();
    let expected_ids: HashSet<&str> = delivery_ids.iter().map(String::as_str).collect();
    assert_eq!(expected_ids.len(), 200);
    assert_eq!(received_ids, expected_ids);
    server.stop().await;
}

#[tokio::test]
async fn the_event_type_is_sent_as_a_header_and_kept_on_the_delivery() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server, &receiver.url).await;

    let delivery_id = ingest_with(
        &server.client,
        &subscription,
        r#"{"order": 1}"#,
        IngestOptions {
            event_type: Some("order.created".into()),
            ..Default::default()
        },
    )
    .await;

    let delivery =
        delivery_with_status(&server.client, &delivery_id, DeliveryStatus::Delivered).await;
    assert_eq!(delivery.event_type, "order.created");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("webhook-event-type"),
        Some("order.created")
    );
    server.stop().await;
}
