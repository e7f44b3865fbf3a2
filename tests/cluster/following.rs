//! Following the other nodes: a subscription changed through one node is no longer served from
//! another node's cache, and a watcher on one node sees what another node did.

use whd_e2e::{Backend, Receiver, TestDatabase, TestServer, eventually};
use whd_sdk::pbjson_types::FieldMask;
use whd_sdk::{
    AttemptOutcome, Client, Delivery, DeliveryEvent, DeliveryEventKind, DeliveryEventStream,
    DeliveryStatus, Error, IngestOptions, Subscription, UpdateSubscriptionRequest,
    WatchDeliveriesRequest,
};

use crate::{DEADLINE, cluster_turn, ingest, subscribe};

/// Two in-process nodes on one fresh schema.
async fn two_nodes() -> (TestDatabase, TestServer, TestServer) {
    let database = TestDatabase::create_on(Backend::Postgres).await;
    let node_a = TestServer::start_on(&database.url(), &["--node-id", "node-a"]).await;
    let node_b = TestServer::start_on(&database.url(), &["--node-id", "node-b"]).await;
    (database, node_a, node_b)
}

async fn finished(client: &Client, id: &str) -> Delivery {
    let what = format!("delivery {id} is DELIVERED");
    eventually(DEADLINE, &what, || async {
        client
            .get_delivery(id)
            .await
            .ok()
            .filter(|delivery| delivery.status() == DeliveryStatus::Delivered)
    })
    .await
}

/// Ingests a webhook through `node` and returns the URL it was delivered to.
async fn delivered_to(node: &TestServer, subscription: &Subscription, n: usize) -> String {
    let id = ingest(&node.client, subscription, format!(r#"{{"n": {n}}}"#)).await;
    let delivery = finished(&node.client, &id).await;
    assert_eq!(delivery.attempts.len(), 1, "{delivery:?}");
    delivery.attempts[0].target_url.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_changed_through_one_node_is_not_served_stale_by_another() {
    let Some(_turn) = cluster_turn().await else {
        return;
    };
    let (_database, node_a, node_b) = two_nodes().await;
    let first = Receiver::start(200).await;
    let second = Receiver::start(200).await;
    let subscription = subscribe(&node_a.client, &first.url).await;
    // Node B caches the subscription while delivering through it.
    assert_eq!(delivered_to(&node_b, &subscription, 0).await, first.url);

    node_a
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
        .expect("the subscription is updated");
    let mut ingested_before_the_change_showed = 0;
    eventually(DEADLINE, "node B delivers to the new target", || {
        ingested_before_the_change_showed += 1;
        let (node_b, subscription, target) = (&node_b, &subscription, &second.url);
        let n = ingested_before_the_change_showed;
        async move { (delivered_to(node_b, subscription, n).await == *target).then_some(()) }
    })
    .await;
    let first_count = first.count();
    for n in 0..5 {
        assert_eq!(
            delivered_to(&node_b, &subscription, 100 + n).await,
            second.url
        );
    }
    println!(
        "ingests through node B until the new target showed: {ingested_before_the_change_showed}; \
         first target received {first_count}, second {}",
        second.count()
    );
    assert_eq!(
        first.count(),
        first_count,
        "nothing more for the old target"
    );

    node_a
        .client
        .delete_subscription(&subscription.id)
        .await
        .expect("the subscription is deleted");
    eventually(DEADLINE, "node B refuses the deleted subscription", || {
        let (node_b, subscription_id) = (&node_b, &subscription.id);
        async move {
            let answer = node_b
                .client
                .ingest(subscription_id, "{}", IngestOptions::default())
                .await;
            matches!(answer, Err(Error::Ingest { status: 404, .. })).then_some(())
        }
    })
    .await;

    node_a.stop().await;
    node_b.stop().await;
}

/// Reads events from `stream` until `count` have come.
async fn next_events(stream: &mut DeliveryEventStream, count: usize) -> Vec<DeliveryEvent> {
    let mut events = Vec::new();
    while events.len() < count {
        let event = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("the next event comes")
            .expect("the stream is healthy")
            .expect("the stream stays open");
        events.push(event);
    }
    events
}

/// What identifies an event across nodes: cursor, kind, delivery, and the attempt's node.
fn summary(events: &[DeliveryEvent]) -> Vec<(u64, DeliveryEventKind, String, Option<String>)> {
    events
        .iter()
        .map(|event| {
            (
                event.cursor,
                event.kind(),
                event.delivery_id.clone(),
                event
                    .attempt
                    .as_ref()
                    .map(|attempt| attempt.node_id.clone()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_node_sees_what_another_node_queued_and_delivered() {
    let Some(_turn) = cluster_turn().await else {
        return;
    };
    let (_database, node_a, node_b) = two_nodes().await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&node_a.client, &receiver.url).await;
    let watch = |after_cursor| WatchDeliveriesRequest {
        subscription_id: subscription.id.clone(),
        after_cursor,
        ..Default::default()
    };
    let mut on_b = node_b
        .client
        .watch_deliveries(watch(None))
        .await
        .expect("node B streams");

    let id = ingest(&node_a.client, &subscription, r#"{"watched": true}"#.into()).await;
    let streamed = next_events(&mut on_b, 2).await;

    let expected_shape = [
        (DeliveryEventKind::Queued, id.clone(), None),
        (
            DeliveryEventKind::Attempt,
            id.clone(),
            Some("node-a".to_owned()),
        ),
    ];
    let shape: Vec<_> = summary(&streamed)
        .into_iter()
        .map(|(_, kind, delivery_id, node_id)| (kind, delivery_id, node_id))
        .collect();
    assert_eq!(shape, expected_shape);
    assert!(
        streamed[0].cursor > 0 && streamed[0].cursor < streamed[1].cursor,
        "cursors increase: {:?}",
        summary(&streamed)
    );
    let attempt = streamed[1]
        .attempt
        .as_ref()
        .expect("an attempt event has it");
    assert_eq!(attempt.outcome(), AttemptOutcome::Success);
    assert_eq!(streamed[1].status(), DeliveryStatus::Delivered);

    let mut on_a = node_a
        .client
        .watch_deliveries(watch(Some(streamed[0].cursor - 1)))
        .await
        .expect("node A replays");
    let replayed = next_events(&mut on_a, 2).await;
    println!(
        "streamed on node B: {:?}; replayed on node A: {:?}",
        summary(&streamed),
        summary(&replayed)
    );
    assert_eq!(summary(&replayed), summary(&streamed));

    drop((on_a, on_b));
    node_a.stop().await;
    node_b.stop().await;
}
