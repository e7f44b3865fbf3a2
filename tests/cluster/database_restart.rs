//! A PostgreSQL restart under load: every webhook answered with 202 is delivered, and the refusals in
//! between say when to come back.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::process::Command;
use tokio::time::Instant;
use whd_e2e::{Backend, Receiver, TestDatabase, eventually};

use whd_sdk::IngestOptions;

use crate::{DEADLINE, client_of, cluster_turn, http_client, start_process, subscribe};

/// The load stops after this many requests, or after [`LOAD_LIMIT`], whichever comes first.
const MOST_REQUESTS: usize = 2_000;
const LOAD_LIMIT: Duration = Duration::from_secs(30);

/// Answers received before the restart begins, so that it lands in the middle of the load.
const ANSWERS_BEFORE_RESTART: usize = 200;

const RESTART: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | head -n1) main restart";

/// What one ingest request came to.
#[derive(Debug)]
enum Answer {
    /// 202, with the id of the delivery.
    Accepted(String),
    /// 503; whether it said when to retry.
    Unavailable { retry_after: bool },
    /// Anything else: another status or a failed connection.
    Other(String),
}

#[tokio::test]
async fn every_webhook_accepted_while_the_database_restarts_is_delivered() {
    let Some(_turn) = cluster_turn().await else {
        return;
    };
    let restart_available = Command::new("sh")
        .args(["-c", "command -v pg_ctlcluster && ls /etc/postgresql"])
        .output()
        .await
        .is_ok_and(|output| output.status.success());
    if !restart_available {
        println!("skipped: pg_ctlcluster is needed to restart PostgreSQL");
        return;
    }
    let database = TestDatabase::create_on(Backend::Postgres).await;
    let receiver = Receiver::start(200).await;
    let node = start_process(&database.url(), "node-a", &[]).await;
    let client = client_of(&node);
    let subscription = subscribe(&client, &receiver.url).await;

    let answered = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(ingest_until_done(
        format!("{}/ingest/{}", node.http_url, subscription.id),
        answered.clone(),
    ));
    eventually(DEADLINE, "the load is under way", || async {
        (answered.load(Ordering::Relaxed) >= ANSWERS_BEFORE_RESTART).then_some(())
    })
    .await;
    let answered_before_restart = answered.load(Ordering::Relaxed);
    let restart = Command::new("sh")
        .args(["-c", RESTART])
        .output()
        .await
        .expect("sh runs");
    assert!(
        restart.status.success(),
        "restarting PostgreSQL failed: {}",
        String::from_utf8_lossy(&restart.stderr)
    );
    let answered_during_restart = answered.load(Ordering::Relaxed) - answered_before_restart;
    let answers = load.await.expect("the load task ends");

    let accepted: HashSet<&str> = answers
        .iter()
        .filter_map(|answer| match answer {
            Answer::Accepted(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let unavailable: Vec<bool> = answers
        .iter()
        .filter_map(|answer| match answer {
            Answer::Unavailable { retry_after } => Some(*retry_after),
            _ => None,
        })
        .collect();
    let other: Vec<&String> = answers
        .iter()
        .filter_map(|answer| match answer {
            Answer::Other(what) => Some(what),
            _ => None,
        })
        .collect();
    println!(
        "{} requests across the restart ({answered_before_restart} answered before it began, \
         {answered_during_restart} while it ran): {} answered 202, {} answered 503, {} other {:?}",
        answers.len(),
        accepted.len(),
        unavailable.len(),
        other.len(),
        other.iter().take(5).collect::<Vec<_>>(),
    );
    assert!(!accepted.is_empty(), "some webhooks were accepted");
    assert!(
        unavailable.iter().all(|&retry_after| retry_after),
        "every 503 carries Retry-After"
    );
    eventually(
        Duration::from_secs(120),
        "every accepted webhook reached the receiver",
        || async {
            let received: HashSet<String> = crate::webhook_ids(&receiver).into_iter().collect();
            accepted
                .iter()
                .all(|id| received.contains(*id))
                .then_some(())
        },
    )
    .await;
    let received = crate::arrivals(&receiver);
    let unacknowledged = received
        .keys()
        .filter(|id| !accepted.contains(id.as_str()))
        .count();
    let duplicates = received.values().filter(|&&count| count > 1).count();
    println!(
        "delivered: {} distinct ids ({unacknowledged} of them not acknowledged with 202), {duplicates} received more than once",
        received.len()
    );

    // Still serving after the restart: a fresh webhook is accepted and delivered.
    let fresh = eventually(DEADLINE, "a webhook is accepted after the restart", || {
        let (client, subscription_id) = (&client, &subscription.id);
        async move {
            let body = r#"{"after": "restart"}"#;
            let receipt = client.ingest(subscription_id, body, IngestOptions::default());
            receipt.await.ok()?.delivery_id
        }
    })
    .await;
    eventually(
        DEADLINE,
        "the webhook ingested after the restart arrives",
        || {
            let fresh = fresh.clone();
            let receiver = &receiver;
            async move { crate::webhook_ids(receiver).contains(&fresh).then_some(()) }
        },
    )
    .await;
    node.kill().await;
}

/// Posts webhooks one after another until [`MOST_REQUESTS`] or [`LOAD_LIMIT`]; counts answers in
/// `answered` as they come.
async fn ingest_until_done(url: String, answered: Arc<AtomicUsize>) -> Vec<Answer> {
    let http = http_client();
    let stop_at = Instant::now() + LOAD_LIMIT;
    let mut answers = Vec::new();
    for n in 0..MOST_REQUESTS {
        if Instant::now() >= stop_at {
            break;
        }
        let request = http::Request::post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(format!(r#"{{"n": {n}}}"#))))
            .expect("the ingest request is valid");
        let answer = match tokio::time::timeout(Duration::from_secs(20), http.request(request))
            .await
        {
            Err(_) => Answer::Other("no answer within 20s".into()),
            Ok(Err(error)) => Answer::Other(format!("request failed: {error}")),
            Ok(Ok(response)) => {
                let status = response.status();
                let retry_after = response.headers().contains_key(http::header::RETRY_AFTER);
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|body| body.to_bytes())
                    .unwrap_or_default();
                match status.as_u16() {
                    202 => match delivery_id(&body) {
                        Some(id) => Answer::Accepted(id),
                        None => Answer::Other(format!(
                            "202 without a delivery id: {}",
                            String::from_utf8_lossy(&body)
                        )),
                    },
                    503 => Answer::Unavailable { retry_after },
                    other => {
                        Answer::Other(format!("HTTP {other}: {}", String::from_utf8_lossy(&body)))
                    }
                }
            }
        };
        answers.push(answer);
        answered.fetch_add(1, Ordering::Relaxed);
    }
    answers
}

fn delivery_id(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    json.get("delivery_id")?.as_str().map(str::to_owned)
}
