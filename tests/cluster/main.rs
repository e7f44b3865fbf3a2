//! Multi-node scenarios: several `whd` nodes sharing one PostgreSQL schema as their queue.
//!
//! Every test needs PostgreSQL (`WHD_TEST_POSTGRES_URL`) and says "skipped" without it. Tests take
//! [`CLUSTER`] first and so run one at a time: one of them restarts the PostgreSQL server, and the
//! others load it heavily enough that parallel runs would only slow each other down.

mod backlog;
mod conflicts;
mod database_restart;
mod failover;
mod following;
mod sharing;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::{Mutex, MutexGuard};
use whd_e2e::{Receiver, ServerProcess, postgres_url};
use whd_sdk::{Client, ClientConfig, CreateSubscriptionRequest, IngestOptions, Subscription};

/// How long a test waits for something the nodes do in a few seconds at most; generous, because
/// two cores run every node, the receiver and PostgreSQL.
const DEADLINE: Duration = Duration::from_secs(60);

const SERVER_BINARY: &str = env!("CARGO_BIN_EXE_whd-test-server");

/// Held by every test for its whole run, so that the tests of this binary run one at a time.
static CLUSTER: Mutex<()> = Mutex::const_new(());

/// Takes [`CLUSTER`] when PostgreSQL is configured; `None` (after saying so) when it is not.
async fn cluster_turn() -> Option<MutexGuard<'static, ()>> {
    if postgres_url().is_none() {
        println!("skipped: set WHD_TEST_POSTGRES_URL to run the multi-node tests");
        return None;
    }
    whd_server::telemetry::init_for_tests();
    Some(CLUSTER.lock().await)
}

/// A client for a node running as a child process.
fn client_of(node: &ServerProcess) -> Client {
    Client::connect_lazy(ClientConfig {
        server: node.grpc_url.clone(),
        ingest_url: node.http_url.clone(),
        api_token: None,
    })
    .expect("the client configuration is valid")
}

/// Starts a node as a child process named `node_id` on `database_url`, with `extra` flags.
async fn start_process(database_url: &str, node_id: &str, extra: &[&str]) -> ServerProcess {
    let mut flags = vec!["--node-id", node_id];
    flags.extend_from_slice(extra);
    ServerProcess::start(SERVER_BINARY, database_url, &flags).await
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
async fn ingest(client: &Client, subscription: &Subscription, body: String) -> String {
    client
        .ingest(&subscription.id, body, IngestOptions::default())
        .await
        .expect("the webhook is accepted")
        .delivery_id
        .expect("an unfiltered webhook creates a delivery")
}

/// The `webhook-id` of every request the receiver got, in arrival order.
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

/// How many times each webhook id arrived.
fn arrivals(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for id in webhook_ids(receiver) {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Connections to the test schema behind `database_url`, for reading what the nodes recorded.
async fn connect(database_url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await
        .expect("the test schema is reachable")
}

/// How many deliveries have `status` (1 pending, 2 delivered, 3 failed); `None` if the query fails.
async fn deliveries_with_status(db: &PgPool, status: i64) -> Option<i64> {
    sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE status = $1")
        .bind(status)
        .fetch_one(db)
        .await
        .ok()
}

/// A plain HTTP/1 client, for requests whose status and headers the test inspects itself.
fn http_client() -> HttpClient<HttpConnector, Full<Bytes>> {
    HttpClient::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Whether `GET {base_url}/healthz` answers 200.
async fn healthy(http: &HttpClient<HttpConnector, Full<Bytes>>, base_url: &str) -> bool {
    let request = http::Request::get(format!("{base_url}/healthz"))
        .body(Full::new(Bytes::new()))
        .expect("the health request is valid");
    match tokio::time::timeout(Duration::from_secs(2), http.request(request)).await {
        Ok(Ok(response)) => {
            let ok = response.status() == http::StatusCode::OK;
            let _ = response.into_body().collect().await;
            ok
        }
        _ => false,
    }
}
