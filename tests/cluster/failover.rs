//! Failover: the work of a node that dies or freezes while it holds leases is finished by the others
//! once the leases expire, and a frozen node that wakes up cannot overwrite what they recorded.

use std::collections::HashSet;

use tokio::process::Command;
use whd_e2e::{Backend, Receiver, Reply, TestDatabase, eventually};
use whd_sdk::{AttemptOutcome, Client, Delivery, DeliveryStatus};

use crate::{
    DEADLINE, arrivals, client_of, cluster_turn, connect, deliveries_with_status, healthy,
    http_client, ingest, start_process, subscribe,
};

/// Attempts give up after 2 s; leases last 7 s, the shortest the server accepts for that timeout.
const LEASE_FLAGS: [&str; 4] = ["--lease", "7s", "--attempt-timeout", "2s"];

const WEBHOOKS: usize = 50;

async fn delivered(client: &Client, id: &str) -> Delivery {
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

/// `(outcome, node_id)` of each attempt, oldest first.
fn attempts_by_node(delivery: &Delivery) -> Vec<(AttemptOutcome, String)> {
    delivery
        .attempts
        .iter()
        .map(|attempt| (attempt.outcome(), attempt.node_id.clone()))
        .collect()
}

async fn signal(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid} failed: {status}");
}

#[tokio::test]
async fn the_other_nodes_deliver_everything_a_node_killed_with_leases_held_had_taken() {
    let Some(_turn) = cluster_turn().await else {
        return;
    };
    let database = TestDatabase::create_on(Backend::Postgres).await;
    let receiver = Receiver::scripted(&[], Reply::Hang).await;
    let node_a = start_process(&database.url(), "node-a", &LEASE_FLAGS).await;
    let node_b = start_process(&database.url(), "node-b", &LEASE_FLAGS).await;
    let node_c = start_process(&database.url(), "node-c", &LEASE_FLAGS).await;
    let client_a = client_of(&node_a);
    let subscription = subscribe(&client_a, &receiver.url).await;
    let mut ingested = HashSet::new();
    for n in 0..WEBHOOKS {
        ingested.insert(ingest(&client_a, &subscription, format!(r#"{{"n": {n}}}"#)).await);
    }
    // Every attempt is in flight (and hangs) before the crash.
    eventually(DEADLINE, "every webhook reached the receiver", || async {
        (receiver.count() >= WEBHOOKS).then_some(())
    })
    .await;
    let db = connect(&database.url()).await;
    let leased_to_a: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE lease_owner = 'node-a'")
            .fetch_one(&db)
            .await
            .expect("the deliveries can be read");

    node_a.kill().await;
    receiver.set_reply(Reply::Status(200));

    eventually(
        DEADLINE,
        "every delivery is DELIVERED by the surviving nodes",
        || async { (deliveries_with_status(&db, 2).await? == WEBHOOKS as i64).then_some(()) },
    )
    .await;
    let arrived = arrivals(&receiver);
    let duplicates = arrived.values().filter(|&&count| count > 1).count();
    let attempts: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT delivery_id, outcome, node_id FROM delivery_log WHERE kind = 2 ORDER BY cursor",
    )
    .fetch_all(&db)
    .await
    .expect("the attempt log can be read");
    println!(
        "{WEBHOOKS} webhooks, {leased_to_a} leased to node-a when it was killed: {} requests received, \
         {} distinct, {duplicates} ids received more than once; {} attempts logged",
        receiver.count(),
        arrived.len(),
        attempts.len(),
    );
    let delivered_ids: HashSet<String> = arrived.keys().cloned().collect();
    assert_eq!(ingested.len(), WEBHOOKS);
    assert_eq!(delivered_ids, ingested, "nothing lost, nothing invented");
    // The killed node recorded nothing; each delivery has one successful attempt by a survivor.
    let logged: HashSet<&str> = attempts.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(attempts.len(), WEBHOOKS, "{attempts:?}");
    assert_eq!(logged.len(), WEBHOOKS);
    for (id, outcome, node_id) in &attempts {
        assert_eq!(*outcome, 1, "{id} by {node_id} is a SUCCESS");
        assert!(
            node_id == "node-b" || node_id == "node-c",
            "{id} by {node_id}"
        );
    }

    receiver.stop();
    node_b.kill().await;
    node_c.kill().await;
}

#[tokio::test]
async fn a_node_frozen_past_its_lease_cannot_overwrite_the_delivery_another_node_made() {
    let Some(_turn) = cluster_turn().await else {
        return;
    };
    let database = TestDatabase::create_on(Backend::Postgres).await;
    let receiver = Receiver::scripted(&[], Reply::Hang).await;
    let node_a = start_process(&database.url(), "node-a", &LEASE_FLAGS).await;
    let client_a = client_of(&node_a);
    let subscription = subscribe(&client_a, &receiver.url).await;
    let delivery_id = ingest(&client_a, &subscription, r#"{"frozen": true}"#.into()).await;
    eventually(
        DEADLINE,
        "node-a's attempt reached the receiver",
        || async { (receiver.count() >= 1).then_some(()) },
    )
    .await;

    // Frozen mid-attempt: the attempt can neither time out nor be recorded until SIGCONT.
    signal("-STOP", node_a.pid()).await;
    receiver.set_reply(Reply::Status(200));
    let node_b = start_process(&database.url(), "node-b", &LEASE_FLAGS).await;
    let client_b = client_of(&node_b);
    let taken_over = delivered(&client_b, &delivery_id).await;
    assert_eq!(
        attempts_by_node(&taken_over),
        [(AttemptOutcome::Success, "node-b".to_owned())]
    );

    signal("-CONT", node_a.pid()).await;
    // Once node-a answers again and has delivered a webhook ingested after it woke up, its timed-out
    // attempt has long been through its committer.
    let http = http_client();
    eventually(DEADLINE, "node-a answers /healthz again", || {
        let (http, url) = (&http, &node_a.http_url);
        async move { healthy(http, url).await.then_some(()) }
    })
    .await;
    let control_id = ingest(&client_a, &subscription, r#"{"control": true}"#.into()).await;
    let control = delivered(&client_a, &control_id).await;

    let after = client_b
        .get_delivery(&delivery_id)
        .await
        .expect("the delivery can be read");
    println!(
        "frozen delivery: status {:?}, attempt_count {}, attempts {:?}; requests received {}",
        after.status(),
        after.attempt_count,
        attempts_by_node(&after),
        receiver.count(),
    );
    assert_eq!(
        attempts_by_node(&control),
        [(AttemptOutcome::Success, "node-a".to_owned())]
    );
    assert_eq!(after.status(), DeliveryStatus::Delivered);
    assert_eq!(
        attempts_by_node(&after),
        [(AttemptOutcome::Success, "node-b".to_owned())],
        "node-a's late result was fenced off"
    );
    assert_eq!(after.attempt_count, 1);

    receiver.stop();
    node_a.kill().await;
    node_b.kill().await;
}
