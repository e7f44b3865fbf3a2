//! Sharing the work: webhooks ingested through every node are delivered once each, and every node
//! delivers a share.

use std::time::Duration;

use futures::StreamExt;
use whd_e2e::{Backend, Receiver, TestDatabase, TestServer, eventually};
use whd_sdk::IngestOptions;

use crate::{arrivals, cluster_turn, connect, deliveries_with_status, subscribe};

const WEBHOOKS: usize = 10_000;

/// Ingest requests in flight at once, spread over the nodes.
const CONCURRENCY: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_ten_thousand_webhooks_with_no_duplicates() {
    let Some(_turn) = cluster_turn().await else {
        return;
    };
    let database = TestDatabase::create_on(Backend::Postgres).await;
    let node_ids = ["node-a", "node-b", "node-c"];
    let mut nodes = Vec::new();
    for node_id in node_ids {
        nodes.push(TestServer::start_on(&database.url(), &["--node-id", node_id]).await);
    }
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&nodes[0].client, &receiver.url).await;

    // Round-robin over the nodes' gateways, at most CONCURRENCY requests at once.
    let answers: Vec<_> = futures::stream::iter(0..WEBHOOKS)
        .map(|n| {
            let client = nodes[n % nodes.len()].client.clone();
            let subscription_id = subscription.id.clone();
            async move {
                client
                    .ingest(
                        &subscription_id,
                        format!(r#"{{"n": {n}}}"#),
                        IngestOptions::default(),
                    )
                    .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let rejected: Vec<_> = answers.iter().filter(|answer| answer.is_err()).collect();
    assert!(rejected.is_empty(), "rejected ingests: {rejected:?}");

    let db = connect(&database.url()).await;
    eventually(
        Duration::from_secs(300),
        "every delivery is DELIVERED",
        || async { (deliveries_with_status(&db, 2).await? == WEBHOOKS as i64).then_some(()) },
    )
    .await;

    let arrived = arrivals(&receiver);
    let duplicates = arrived.values().filter(|&&count| count > 1).count();
    let shares: Vec<(String, i64)> = sqlx::query_as(
        "SELECT node_id, count(*) FROM delivery_log WHERE kind = 2 GROUP BY node_id ORDER BY node_id",
    )
    .fetch_all(&db)
    .await
    .expect("the attempt log can be read");
    let attempts: i64 = shares.iter().map(|(_, count)| count).sum();
    println!(
        "{WEBHOOKS} webhooks over {} nodes: {} requests received, {} distinct, {duplicates} duplicates; attempts per node: {shares:?}",
        nodes.len(),
        receiver.count(),
        arrived.len(),
    );
    assert_eq!(arrived.len(), WEBHOOKS);
    assert_eq!(duplicates, 0);
    assert_eq!(receiver.count(), WEBHOOKS);
    assert_eq!(attempts, WEBHOOKS as i64, "one attempt per delivery");
    let nodes_with_a_share: Vec<&str> = shares
        .iter()
        .filter(|(_, count)| *count > 0)
        .map(|(node_id, _)| node_id.as_str())
        .collect();
    assert_eq!(nodes_with_a_share, node_ids);

    for node in nodes {
        node.stop().await;
    }
}
