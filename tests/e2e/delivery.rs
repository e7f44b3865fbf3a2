//! Delivery: exact bytes and headers, retries, exhaustion, timeouts.

use std::time::Duration;

use whd_e2e::{Receiver, TestServer, eventually};
use whd_sdk::{CreateSubscriptionRequest, DeliveryStatus, IngestOptions, Subscription};

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
