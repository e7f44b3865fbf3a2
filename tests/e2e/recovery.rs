//! Recovery: what a crash (SIGKILL) or a graceful stop (SIGTERM) with work in flight leaves behind,
//! and how the next run on the same database finishes it. Every test runs `whd` as a child process.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, Command};
use whd_e2e::{Receiver, Reply, eventually, start_server, test_args};
use whd_sdk::{
    AttemptOutcome, Client, ClientConfig, CreateSubscriptionRequest, Delivery, DeliveryStatus,
    IngestOptions, Subscription,
};

/// How long a test waits for something the server does in a few seconds at most.
const DEADLINE: Duration = Duration::from_secs(15);

const SERVER_BINARY: &str = env!("CARGO_BIN_EXE_whd-test-server");

/// A SQLite file in a directory of its own that outlives every process started on it.
fn temporary_database() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let database = dir.path().join("whd.db");
    (dir, database)
}

/// `whd` as a child process, with a client connected to it.
#[derive(Debug)]
struct ServerProcess {
    child: Child,
    client: Client,
}

impl ServerProcess {
    /// Starts `whd` on `database` with the test flags, then `overrides` (a flag given again wins), and
    /// waits until it serves.
    async fn start(database: &Path, overrides: &[&str]) -> ServerProcess {
        let mut args = test_args(database);
        args.remove(0);
        args.extend(overrides.iter().map(|arg| arg.to_string()));
        let (child, addresses) = start_server(SERVER_BINARY, &args).await;
        let client = Client::connect_lazy(ClientConfig {
            server: format!("http://{}", addresses.grpc),
            ingest_url: format!("http://{}", addresses.http),
            api_token: None,
        })
        .expect("the client configuration is valid");
        ServerProcess { child, client }
    }

    /// Kills the process with SIGKILL: no shutdown, no cleanup, like a crash.
    async fn kill(mut self) {
        self.child
            .kill()
            .await
            .expect("the server process can be killed");
    }

    /// Sends SIGTERM, as a service manager does to stop a process, and waits for it to exit.
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().expect("the process is running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed: {status}");
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the server process exits after SIGTERM")
            .expect("the exit status can be read")
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

/// Ingests `body` and returns the id of the delivery the 202 promised.
async fn ingest(client: &Client, subscription: &Subscription, body: &str) -> String {
    client
        .ingest(&subscription.id, body.to_owned(), IngestOptions::default())
        .await
        .expect("the webhook is accepted")
        .delivery_id
        .expect("an unfiltered webhook creates a delivery")
}

/// Waits until the delivery matches `check` and returns it.
async fn delivery_where(
    client: &Client,
    id: &str,
    what: &str,
    check: impl Fn(&Delivery) -> bool,
) -> Delivery {
    let what = format!("delivery {id}: {what}");
    eventually(DEADLINE, &what, || {
        let check = &check;
        async move {
            client
                .get_delivery(id)
                .await
                .ok()
                .filter(|delivery| check(delivery))
        }
    })
    .await
}

async fn delivered(client: &Client, id: &str) -> Delivery {
    delivery_where(client, id, "is DELIVERED", |delivery| {
        delivery.status() == DeliveryStatus::Delivered
    })
    .await
}

async fn requests_received(receiver: &Receiver, count: usize) {
    let what = format!("the receiver got {count} requests");
    eventually(DEADLINE, &what, || async {
        (receiver.count() >= count).then_some(())
    })
    .await;
}

fn outcomes(delivery: &Delivery) -> Vec<AttemptOutcome> {
    delivery
        .attempts
        .iter()
        .map(|attempt| attempt.outcome())
        .collect()
}

fn webhook_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|request| {
            request
                .header("webhook-id")
                .expect("every request has a webhook-id")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_delivery_in_flight_when_the_process_is_killed_is_attempted_again_after_restart() {
    let (_dir, database) = temporary_database();
    let receiver = Receiver::scripted(&[Reply::Hang], Reply::Status(200)).await;
    let first_run = ServerProcess::start(&database, &[]).await;
    let client = first_run.client.clone();
    let subscription = subscribe(&client, &receiver.url).await;
    let delivery_id = ingest(&client, &subscription, r#"{"crash": "mid-attempt"}"#).await;
    requests_received(&receiver, 1).await;

    first_run.kill().await;
    let second_run = ServerProcess::start(&database, &[]).await;
    let client = second_run.client.clone();

    let delivery = delivered(&client, &delivery_id).await;
    assert_eq!(
        webhook_ids(&receiver),
        [delivery_id.as_str(), delivery_id.as_str()]
    );
    // The killed attempt never got to record anything: the log holds only the one that finished.
    assert_eq!(outcomes(&delivery), [AttemptOutcome::Success]);
    assert_eq!(delivery.attempts[0].attempt_number, 1);
    assert_eq!(delivery.attempts[0].http_status, Some(200));
    second_run.kill().await;
}

#[tokio::test]
async fn a_restarted_server_resumes_the_retry_schedule_and_stops_after_the_last_attempt() {
    let (_dir, database) = temporary_database();
    let receiver = Receiver::start(500).await;
    let slow_retries = ["--retry-schedule", "2s,2s"];
    let first_run = ServerProcess::start(&database, &slow_retries).await;
    let client = first_run.client.clone();
    let subscription = subscribe(&client, &receiver.url).await;
    let delivery_id = ingest(&client, &subscription, r#"{"retry": "across restarts"}"#).await;
    delivery_where(&client, &delivery_id, "has its first attempt logged", |d| {
        !d.attempts.is_empty()
    })
    .await;

    first_run.kill().await;
    let second_run = ServerProcess::start(&database, &slow_retries).await;
    let client = second_run.client.clone();

    let delivery = delivery_where(&client, &delivery_id, "is FAILED", |d| {
        d.status() == DeliveryStatus::Failed
    })
    .await;
    assert_eq!(
        outcomes(&delivery),
        [
            AttemptOutcome::FailedAttempt,
            AttemptOutcome::FailedAttempt,
            AttemptOutcome::Failure
        ]
    );
    let numbers: Vec<_> = delivery.attempts.iter().map(|a| a.attempt_number).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert!(
        delivery.attempts.iter().all(|a| a.http_status == Some(500)),
        "{:?}",
        delivery.attempts
    );
    assert_eq!(delivery.attempt_count, 3);
    assert_eq!(receiver.count(), 3);
    second_run.kill().await;
}

#[tokio::test]
async fn every_webhook_acknowledged_with_202_is_delivered_after_a_crash() {
    let (_dir, database) = temporary_database();
    let receiver = Receiver::scripted(&[], Reply::Hang).await;
    let first_run = ServerProcess::start(&database, &[]).await;
    let client = first_run.client.clone();
    let subscription = subscribe(&client, &receiver.url).await;
    let mut delivery_ids = Vec::new();
    for n in 0..20 {
        let body = format!(r#"{{"n": {n}}}"#);
        delivery_ids.push(ingest(&client, &subscription, &body).await);
    }

    first_run.kill().await;
    receiver.set_reply(Reply::Status(200));
    let second_run = ServerProcess::start(&database, &[]).await;
    let client = second_run.client.clone();

    for id in &delivery_ids {
        let delivery = delivered(&client, id).await;
        assert_eq!(outcomes(&delivery), [AttemptOutcome::Success], "{id}");
    }
    let received: HashSet<String> = webhook_ids(&receiver).into_iter().collect();
    let acknowledged: HashSet<String> = delivery_ids.iter().cloned().collect();
    assert_eq!(acknowledged.len(), 20);
    assert_eq!(received, acknowledged);
    second_run.kill().await;
}

#[tokio::test]
async fn sigterm_abandons_an_attempt_that_outlasts_the_grace_period_and_the_next_run_delivers_it() {
    let (_dir, database) = temporary_database();
    let receiver = Receiver::scripted(&[Reply::Hang], Reply::Status(200)).await;
    // The attempt would wait 30 s for an answer; the 2 s grace period of the test flags ends first.
    let patient_attempts = ["--attempt-timeout", "30s", "--lease", "40s"];
    let first_run = ServerProcess::start(&database, &patient_attempts).await;
    let client = first_run.client.clone();
    let subscription = subscribe(&client, &receiver.url).await;
    let delivery_id = ingest(&client, &subscription, r#"{"stop": "gracefully"}"#).await;
    requests_received(&receiver, 1).await;

    let exit = first_run.terminate().await;
    let second_run = ServerProcess::start(&database, &[]).await;
    let client = second_run.client.clone();

    assert!(
        exit.success(),
        "the server stops cleanly on SIGTERM: {exit}"
    );
    let delivery = delivered(&client, &delivery_id).await;
    // The abandoned attempt was not recorded; the next run's attempt is the first in the log.
    assert_eq!(outcomes(&delivery), [AttemptOutcome::Success]);
    assert_eq!(
        webhook_ids(&receiver),
        [delivery_id.as_str(), delivery_id.as_str()]
    );
    second_run.kill().await;
}

#[tokio::test]
async fn sigterm_lets_an_attempt_in_flight_finish_and_records_it_before_exiting() {
    let (_dir, database) = temporary_database();
    let receiver = Receiver::scripted(&[Reply::Hang], Reply::Status(200)).await;
    // The attempt gives up after the 2 s attempt timeout of the test flags, well within the grace
    // period, so shutdown waits for it and records its result.
    let long_grace = ["--shutdown-grace", "10s"];
    let first_run = ServerProcess::start(&database, &long_grace).await;
    let client = first_run.client.clone();
    let subscription = subscribe(&client, &receiver.url).await;
    let delivery_id = ingest(&client, &subscription, r#"{"stop": "after the attempt"}"#).await;
    requests_received(&receiver, 1).await;

    let exit = first_run.terminate().await;
    let second_run = ServerProcess::start(&database, &[]).await;
    let client = second_run.client.clone();

    assert!(
        exit.success(),
        "the server stops cleanly on SIGTERM: {exit}"
    );
    let delivery = delivered(&client, &delivery_id).await;
    assert_eq!(
        outcomes(&delivery),
        [AttemptOutcome::FailedAttempt, AttemptOutcome::Success]
    );
    let first = &delivery.attempts[0];
    assert!(first.error.contains("timed out"), "{:?}", first.error);
    assert_eq!(
        webhook_ids(&receiver),
        [delivery_id.as_str(), delivery_id.as_str()]
    );
    second_run.kill().await;
}
