//! The attempt log (ListDeliveryAttempts, GetDelivery), how subscription changes reach delivery
//! through the cache, and the retention purge.

use std::collections::HashSet;
use std::fmt::Debug;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use whd_e2e::{Receiver, Reply, TestDatabase, TestServer, eventually, test_args};
use whd_sdk::pbjson_types::FieldMask;
use whd_sdk::{
    AttemptOutcome, Client, ClientConfig, Code, CreateSubscriptionRequest, Delivery,
    DeliveryAttempt, DeliveryStatus, IngestOptions, ListDeliveryAttemptsRequest, Subscription,
    UpdateSubscriptionRequest,
};

/// How long a test waits for something the server does in well under a second.
const DEADLINE: Duration = Duration::from_secs(10);

/// A server whose test flags are overridden rather than appended to, for flags that
/// [`TestServer::start_with`] cannot change: clap refuses a flag given twice, and [`test_args`]
/// already sets `--retry-schedule`.
#[derive(Debug)]
struct OverriddenServer {
    client: Client,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    _database: TestDatabase,
}

impl OverriddenServer {
    /// Starts a server with [`test_args`], each `(flag, value)` replacing the flag's test value or
    /// added when the test flags do not set it.
    async fn start(overrides: &[(&str, &str)]) -> OverriddenServer {
        whd_server::telemetry::init_for_tests();
        let database = TestDatabase::create().await;
        let mut args = test_args(database.url());
        for (flag, value) in overrides {
            match args.iter().position(|arg| arg == flag) {
                Some(index) => args[index + 1] = value.to_string(),
                None => args.extend([flag.to_string(), value.to_string()]),
            }
        }
        let config = whd_server::Config::from_args(args).expect("test flags parse");
        let app = whd_server::App::bind(config)
            .await
            .expect("the test server starts");
        let client = Client::connect_lazy(ClientConfig {
            server: format!("http://{}", app.grpc_addr()),
            ingest_url: format!("http://{}", app.http_addr()),
            api_token: None,
        })
        .expect("the client configuration is valid");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { app.run(token).await.expect("the test server runs") });
        OverriddenServer {
            client,
            shutdown,
            task,
            _database: database,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("the server task ends cleanly");
    }
}

async fn subscribe(client: &Client, url: &str) -> Subscription {
    client
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

/// Ingests `body` and returns the delivery id.
async fn ingest(client: &Client, subscription_id: &str, body: &str) -> String {
    client
        .ingest(subscription_id, body.to_owned(), IngestOptions::default())
        .await
        .expect("the webhook is accepted")
        .delivery_id
        .expect("the webhook is queued, not filtered")
}

/// Waits until the delivery satisfies `done`, and returns it.
async fn wait_for(
    client: &Client,
    delivery_id: &str,
    what: &str,
    done: impl Fn(&Delivery) -> bool,
) -> Delivery {
    eventually(DEADLINE, what, || {
        let client = client.clone();
        let id = delivery_id.to_owned();
        let done = &done;
        async move { client.get_delivery(id).await.ok().filter(|d| done(d)) }
    })
    .await
}

async fn delivered(client: &Client, delivery_id: &str) -> Delivery {
    wait_for(client, delivery_id, "the delivery is DELIVERED", |d| {
        d.status() == DeliveryStatus::Delivered
    })
    .await
}

async fn attempts_page(
    client: &Client,
    subscription_id: &str,
    page_size: i32,
    page_token: &str,
) -> (Vec<DeliveryAttempt>, String) {
    let response = client
        .list_delivery_attempts(ListDeliveryAttemptsRequest {
            subscription_id: subscription_id.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        })
        .await
        .expect("the attempts are listed");
    (response.attempts, response.next_page_token)
}

/// Every page of a subscription's attempts, `page_size` at a time, following the page tokens.
async fn all_pages(
    client: &Client,
    subscription_id: &str,
    page_size: i32,
) -> Vec<Vec<DeliveryAttempt>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let (attempts, next) = attempts_page(client, subscription_id, page_size, &token).await;
        pages.push(attempts);
        if next.is_empty() {
            return pages;
        }
        token = next;
        assert!(pages.len() < 100, "paging does not end");
    }
}

/// The gRPC code and message of a failed call; panics when the call succeeded.
fn status_of<T: Debug>(result: Result<T, whd_sdk::Error>) -> (Code, String) {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(whd_sdk::Error::Status { code, message }) => (code, message),
        Err(other) => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[tokio::test]
async fn attempts_are_listed_newest_first_twenty_by_default_and_page_tokens_cover_all_once() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server.client, &receiver.url).await;
    // One after the other, so that the log order is the ingest order.
    let mut oldest_first = Vec::new();
    for n in 0..25 {
        let delivery_id = ingest(&server.client, &subscription.id, &format!("{{\"n\":{n}}}")).await;
        delivered(&server.client, &delivery_id).await;
        oldest_first.push(delivery_id);
    }
    let newest_first: Vec<String> = oldest_first.iter().rev().cloned().collect();

    let (default_page, default_token) =
        attempts_page(&server.client, &subscription.id, 0, "").await;
    let pages = all_pages(&server.client, &subscription.id, 7).await;
    let page_sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    let paged: Vec<DeliveryAttempt> = pages.into_iter().flatten().collect();

    let ids = |attempts: &[DeliveryAttempt]| -> Vec<String> {
        attempts.iter().map(|a| a.delivery_id.clone()).collect()
    };
    assert_eq!(ids(&default_page), newest_first[..20]);
    assert!(!default_token.is_empty());
    assert_eq!(page_sizes, [7, 7, 7, 4]);
    assert_eq!(ids(&paged), newest_first);
    let distinct: HashSet<String> = ids(&paged).into_iter().collect();
    assert_eq!(distinct.len(), 25);
    server.stop().await;
}

#[tokio::test]
async fn a_successful_attempt_carries_every_field() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server.client, &receiver.url).await;
    let delivery_id = ingest(&server.client, &subscription.id, "{}").await;
    delivered(&server.client, &delivery_id).await;

    let (attempts, next) = attempts_page(&server.client, &subscription.id, 0, "").await;

    assert_eq!(attempts.len(), 1);
    assert_eq!(next, "");
    let attempt = &attempts[0];
    assert_eq!(attempt.delivery_id, delivery_id);
    assert_eq!(attempt.subscription_id, subscription.id);
    assert_eq!(attempt.target_url, receiver.url);
    assert!(attempt.attempt_time.is_some());
    assert_eq!(attempt.attempt_number, 1);
    assert_eq!(attempt.outcome(), AttemptOutcome::Success);
    assert_eq!(attempt.http_status, Some(200));
    assert!(attempt.duration.is_some());
    assert_eq!(attempt.error, "");
    server.stop().await;
}

#[tokio::test]
async fn a_500_then_a_200_logs_a_failed_attempt_then_a_success() {
    let server = TestServer::start().await;
    let receiver = Receiver::scripted(&[Reply::Status(500)], Reply::Status(200)).await;
    let subscription = subscribe(&server.client, &receiver.url).await;

    let delivery_id = ingest(&server.client, &subscription.id, "{}").await;

    let delivery = delivered(&server.client, &delivery_id).await;
    assert_eq!(delivery.attempt_count, 2);
    let oldest_first: Vec<_> = delivery
        .attempts
        .iter()
        .map(|a| (a.attempt_number, a.outcome(), a.http_status))
        .collect();
    assert_eq!(
        oldest_first,
        [
            (1, AttemptOutcome::FailedAttempt, Some(500)),
            (2, AttemptOutcome::Success, Some(200)),
        ]
    );
    let failed = &delivery.attempts[0];
    assert!(failed.error.contains("500"), "{}", failed.error);
    assert_eq!(delivery.attempts[1].error, "");
    let (listed, _) = attempts_page(&server.client, &subscription.id, 0, "").await;
    let newest_first: Vec<u32> = listed.iter().map(|a| a.attempt_number).collect();
    assert_eq!(newest_first, [2, 1]);
    assert_eq!(receiver.count(), 2);
    server.stop().await;
}

#[tokio::test]
async fn listing_attempts_of_an_unknown_subscription_is_not_found_and_a_forged_token_is_invalid() {
    let server = TestServer::start().await;
    let subscription = subscribe(&server.client, "http://127.0.0.1:9/hook").await;
    let unknown = "sub_00000000000000000000000000000000";

    let (empty, token) = attempts_page(&server.client, &subscription.id, 0, "").await;
    let unknown_result = server
        .client
        .list_delivery_attempts(ListDeliveryAttemptsRequest {
            subscription_id: unknown.into(),
            ..Default::default()
        })
        .await;
    let forged_result = server
        .client
        .list_delivery_attempts(ListDeliveryAttemptsRequest {
            subscription_id: subscription.id.clone(),
            page_size: 5,
            page_token: "not-a-token".into(),
        })
        .await;

    assert!(empty.is_empty());
    assert_eq!(token, "");
    let (code, message) = status_of(unknown_result);
    assert_eq!(code, Code::NotFound);
    assert!(message.contains(unknown), "{message}");
    let (code, message) = status_of(forged_result);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("page_token"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn get_delivery_of_an_unknown_id_is_not_found_naming_it() {
    let server = TestServer::start().await;
    let unknown = "msg_00000000000000000000000000000000";

    let (code, message) = status_of(server.client.get_delivery(unknown).await);

    assert_eq!(code, Code::NotFound);
    assert!(message.contains(unknown), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn after_the_target_url_is_updated_the_next_delivery_goes_to_the_new_target() {
    let server = TestServer::start().await;
    let first = Receiver::start(200).await;
    let second = Receiver::start(200).await;
    let subscription = subscribe(&server.client, &first.url).await;
    let before = ingest(&server.client, &subscription.id, r#"{"to":"first"}"#).await;
    delivered(&server.client, &before).await;

    server
        .client
        .update_subscription(UpdateSubscriptionRequest {
            subscription: Some(Subscription {
                id: subscription.id.clone(),
                target_url: second.url.clone(),
                ..Default::default()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["target_url".into()],
            }),
        })
        .await
        .unwrap();
    let after = ingest(&server.client, &subscription.id, r#"{"to":"second"}"#).await;

    let delivery = delivered(&server.client, &after).await;
    assert_eq!(first.count(), 1);
    assert_eq!(second.count(), 1);
    assert_eq!(second.received()[0].body, r#"{"to":"second"}"#.as_bytes());
    assert_eq!(delivery.attempts[0].target_url, second.url);
    server.stop().await;
}

#[tokio::test]
async fn after_a_subscription_is_deleted_ingest_is_404() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&server.client, &receiver.url).await;
    let before = ingest(&server.client, &subscription.id, "{}").await;
    delivered(&server.client, &before).await;

    server
        .client
        .delete_subscription(&subscription.id)
        .await
        .unwrap();
    let result = server
        .client
        .ingest(&subscription.id, "{}", IngestOptions::default())
        .await;

    match result {
        Err(whd_sdk::Error::Ingest { status, message }) => {
            assert_eq!(status, 404);
            assert!(message.contains(&subscription.id), "{message}");
        }
        other => panic!("expected a 404, got {other:?}"),
    }
    assert_eq!(receiver.count(), 1);
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_subscription_fails_its_delivery_that_waits_for_a_retry() {
    let server = OverriddenServer::start(&[("--retry-schedule", "30s")]).await;
    let receiver = Receiver::start(500).await;
    let subscription = subscribe(&server.client, &receiver.url).await;
    let delivery_id = ingest(&server.client, &subscription.id, "{}").await;
    wait_for(
        &server.client,
        &delivery_id,
        "the first attempt failed and a retry is pending",
        |d| d.status() == DeliveryStatus::Pending && d.attempt_count == 1,
    )
    .await;

    server
        .client
        .delete_subscription(&subscription.id)
        .await
        .unwrap();

    let delivery = server.client.get_delivery(&delivery_id).await.unwrap();
    assert_eq!(delivery.status(), DeliveryStatus::Failed);
    assert_eq!(delivery.next_attempt_time, None);
    let last = delivery.attempts.last().expect("the attempts are kept");
    assert_eq!(last.outcome(), AttemptOutcome::Failure);
    assert!(last.error.contains("deleted"), "{}", last.error);
    assert_eq!(receiver.count(), 1);
    server.stop().await;
}

#[tokio::test]
async fn retention_purges_finished_deliveries_but_never_pending_ones() {
    let server = OverriddenServer::start(&[
        ("--retention", "1s"),
        ("--purge-interval", "200ms"),
        // Long enough for retention to pass over the pending delivery before its retry.
        ("--retry-schedule", "4s"),
    ])
    .await;
    let failing = Receiver::start(500).await;
    let succeeding = Receiver::start(200).await;
    let pending_subscription = subscribe(&server.client, &failing.url).await;
    let finished_subscription = subscribe(&server.client, &succeeding.url).await;
    // The pending delivery is the older one, so any purge that reaches the finished one by age
    // would reach it too.
    let pending = ingest(&server.client, &pending_subscription.id, r#"{"order": 42}"#).await;
    wait_for(&server.client, &pending, "the first attempt failed", |d| {
        d.attempt_count == 1
    })
    .await;
    let finished = ingest(&server.client, &finished_subscription.id, "{}").await;
    delivered(&server.client, &finished).await;

    eventually(DEADLINE, "the finished delivery is purged", || {
        let client = server.client.clone();
        let id = finished.clone();
        async move {
            match client.get_delivery(id).await {
                Err(error) if error.code() == Some(Code::NotFound) => Some(()),
                _ => None,
            }
        }
    })
    .await;

    let still_there = server.client.get_delivery(&pending).await.unwrap();
    assert_eq!(still_there.status(), DeliveryStatus::Pending);
    assert_eq!(still_there.attempt_count, 1);
    let (finished_attempts, _) =
        attempts_page(&server.client, &finished_subscription.id, 0, "").await;
    assert!(finished_attempts.is_empty(), "{finished_attempts:?}");

    // The retry, after retention has passed over the pending delivery, still sends its payload.
    eventually(DEADLINE, "the pending delivery is retried", || {
        let count = failing.count();
        async move { (count >= 2).then_some(()) }
    })
    .await;
    let bodies: Vec<Vec<u8>> = failing
        .received()
        .iter()
        .map(|request| request.body.to_vec())
        .collect();
    assert_eq!(bodies, vec![br#"{"order": 42}"#.to_vec(); 2]);
    server.stop().await;
}

#[tokio::test]
async fn a_subscriptions_attempts_list_the_same_before_and_after_the_server_indexes_them() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let mine = subscribe(&server.client, &receiver.url).await;
    let other = subscribe(&server.client, &receiver.url).await;
    let mut my_deliveries = Vec::new();
    for n in 0..10 {
        for subscription in [&mine, &other] {
            let delivery_id =
                ingest(&server.client, &subscription.id, &format!("{{\"n\":{n}}}")).await;
            delivered(&server.client, &delivery_id).await;
            if subscription.id == mine.id {
                my_deliveries.push(delivery_id);
            }
        }
    }
    my_deliveries.reverse();
    let listed = |attempts: Vec<DeliveryAttempt>| -> Vec<String> {
        attempts.into_iter().map(|a| a.delivery_id).collect()
    };
    let right_after = listed(attempts_page(&server.client, &mine.id, 100, "").await.0);
    assert_eq!(right_after, my_deliveries);

    // On SQLite the per-subscription index is kept behind the log by the server itself: wait until
    // it holds all twenty attempts, then the listing comes from it and must not change.
    if let TestDatabase::Sqlite { path, .. } = &server.database {
        let file = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .read_only(true);
        let database = sqlx::SqlitePool::connect_with(file)
            .await
            .expect("the server's database opens read-only");
        eventually(DEADLINE, "the server indexes every attempt", || {
            let database = database.clone();
            async move {
                let indexed: i64 = sqlx::query_scalar("SELECT count(*) FROM subscription_attempts")
                    .fetch_one(&database)
                    .await
                    .ok()?;
                (indexed == 20).then_some(())
            }
        })
        .await;
    }
    let indexed = listed(attempts_page(&server.client, &mine.id, 100, "").await.0);
    assert_eq!(indexed, right_after);
    let paged = listed(all_pages(&server.client, &mine.id, 3).await.concat());
    assert_eq!(paged, right_after, "pages of three give the same list");
    server.stop().await;
}
