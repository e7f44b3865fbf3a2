//! whctl against a running server: every command a user runs day to day, in table and JSON output,
//! and the one-line errors it reports.

use std::time::Duration;

use clap::Parser;
use whd_e2e::{Receiver, TestServer, eventually};

/// How long a test waits for something the server does in well under a second.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs whctl and panics with its error when it fails; returns its standard output.
async fn whctl_ok(server: &TestServer, args: &[&str]) -> String {
    let (result, out) = server.whctl(args).await;
    if let Err(error) = result {
        panic!("whctl {args:?} failed: {error}\n{out}");
    }
    out
}

/// Runs whctl with exactly `args` (no server flags added), like a user at a shell.
async fn whctl_raw(args: &[&str]) -> (Result<(), String>, String) {
    let cli = match whctl::Cli::try_parse_from(std::iter::once("whctl").chain(args.iter().copied()))
    {
        Ok(cli) => cli,
        Err(error) => return (Err(error.to_string()), String::new()),
    };
    let mut out = Vec::new();
    let result = whctl::run_with_output(cli, &mut out)
        .await
        .map_err(|error| whctl::error_message(&error));
    (result, String::from_utf8(out).expect("whctl prints UTF-8"))
}

/// The value of a `Key  value` line of whctl's table output.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(key)?;
            rest.starts_with(' ').then(|| rest.trim())
        })
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{out}"))
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|error| panic!("not JSON ({error}):\n{out}"))
}

#[tokio::test]
async fn subscriptions_create_prints_the_id_and_get_in_json_returns_it() {
    let server = TestServer::start().await;

    let created = whctl_ok(
        &server,
        &[
            "subscriptions",
            "create",
            "--url",
            "http://127.0.0.1:9/hook",
            "--description",
            "orders",
        ],
    )
    .await;
    let id = field(&created, "ID").to_owned();
    let fetched = whctl_ok(&server, &["-o", "json", "subscriptions", "get", &id]).await;

    assert!(id.starts_with("sub_"), "{created}");
    assert_eq!(field(&created, "Target URL"), "http://127.0.0.1:9/hook");
    assert_eq!(field(&created, "Signed"), "no");
    let fetched = json(&fetched);
    assert_eq!(fetched["id"], id.as_str());
    assert_eq!(fetched["description"], "orders");
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_create_with_generate_secret_shows_it_once_and_secret_shows_it_again() {
    let server = TestServer::start().await;

    let created = whctl_ok(
        &server,
        &[
            "subscriptions",
            "create",
            "--url",
            "http://127.0.0.1:9/hook",
            "--generate-secret",
        ],
    )
    .await;
    let id = field(&created, "ID").to_owned();
    let fetched = whctl_ok(&server, &["subscriptions", "get", &id]).await;
    let secret = whctl_ok(&server, &["subscriptions", "secret", &id]).await;

    let generated = field(&created, "Secret");
    assert!(generated.starts_with("whsec_"), "{created}");
    assert_eq!(field(&created, "Signed"), "yes");
    assert!(!fetched.contains("whsec_"), "{fetched}");
    assert_eq!(secret.trim(), generated);
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_list_shows_every_subscription_in_table_and_json() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let url = format!("http://127.0.0.1:9/hook{n}");
        let created = whctl_ok(&server, &["subscriptions", "create", "--url", &url]).await;
        ids.push(field(&created, "ID").to_owned());
    }

    let table = whctl_ok(&server, &["subscriptions", "list"]).await;
    let listed = json(&whctl_ok(&server, &["-o", "json", "subscriptions", "list"]).await);

    assert!(table.starts_with("ID "), "{table}");
    for id in &ids {
        assert!(table.contains(id.as_str()), "{id} missing from:\n{table}");
    }
    let mut listed_ids: Vec<&str> = listed["subscriptions"]
        .as_array()
        .expect("a subscriptions array")
        .iter()
        .map(|subscription| subscription["id"].as_str().expect("an id"))
        .collect();
    listed_ids.sort_unstable();
    ids.sort_unstable();
    assert_eq!(listed_ids, ids);
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_list_with_a_limit_prints_how_to_get_the_next_page() {
    let server = TestServer::start().await;
    for n in 0..3 {
        let url = format!("http://127.0.0.1:9/hook{n}");
        whctl_ok(&server, &["subscriptions", "create", "--url", &url]).await;
    }

    let first = whctl_ok(&server, &["subscriptions", "list", "--limit", "2"]).await;

    let hint = first
        .lines()
        .find(|line| line.starts_with("more: whctl subscriptions list --page-token "))
        .unwrap_or_else(|| panic!("no next-page hint in:\n{first}"));
    let token = hint.rsplit(' ').next().unwrap();
    let second = whctl_ok(&server, &["subscriptions", "list", "--page-token", token]).await;
    let rows = |out: &str| out.lines().filter(|line| line.starts_with("sub_")).count();
    assert_eq!(rows(&first), 2, "{first}");
    assert_eq!(rows(&second), 1, "{second}");
    assert!(!second.contains("more:"), "{second}");
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_update_changes_only_the_given_field() {
    let server = TestServer::start().await;
    let created = whctl_ok(
        &server,
        &[
            "subscriptions",
            "create",
            "--url",
            "http://127.0.0.1:9/hook",
        ],
    )
    .await;
    let id = field(&created, "ID").to_owned();

    let updated = whctl_ok(
        &server,
        &["subscriptions", "update", &id, "--description", "x"],
    )
    .await;

    assert_eq!(field(&updated, "Description"), "x");
    assert_eq!(field(&updated, "Target URL"), "http://127.0.0.1:9/hook");
    let stored = server.client.get_subscription(&id).await.unwrap();
    assert_eq!(stored.description, "x");
    assert_eq!(stored.target_url, "http://127.0.0.1:9/hook");
    server.stop().await;
}

#[tokio::test]
async fn ingest_prints_the_delivery_id_and_deliveries_get_and_attempts_show_the_success() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let created = whctl_ok(
        &server,
        &["subscriptions", "create", "--url", &receiver.url],
    )
    .await;
    let subscription_id = field(&created, "ID").to_owned();

    let ingested = whctl_ok(&server, &["ingest", &subscription_id, r#"{"a":1}"#]).await;

    let delivery_id = ingested.trim().to_owned();
    assert!(delivery_id.starts_with("msg_"), "{ingested}");
    let running = &server;
    let shown = eventually(DEADLINE, "whctl shows the delivery DELIVERED", || {
        let id = delivery_id.clone();
        async move {
            let out = whctl_ok(running, &["deliveries", "get", &id]).await;
            (field(&out, "Status") == "DELIVERED").then_some(out)
        }
    })
    .await;
    assert_eq!(field(&shown, "ID"), delivery_id);
    assert_eq!(field(&shown, "Subscription"), subscription_id);
    assert_eq!(field(&shown, "Attempts"), "1");
    assert!(shown.contains("SUCCESS"), "{shown}");
    let attempts = whctl_ok(&server, &["attempts", &subscription_id, "--limit", "5"]).await;
    let rows: Vec<&str> = attempts.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{attempts}");
    assert!(rows[0].contains(&delivery_id), "{attempts}");
    assert!(rows[0].contains("SUCCESS"), "{attempts}");
    assert!(rows[0].contains("200"), "{attempts}");
    assert_eq!(receiver.received()[0].body, r#"{"a":1}"#.as_bytes());
    server.stop().await;
}

#[tokio::test]
async fn attempts_in_json_lists_the_attempt_log() {
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let created = whctl_ok(
        &server,
        &["subscriptions", "create", "--url", &receiver.url],
    )
    .await;
    let subscription_id = field(&created, "ID").to_owned();
    let delivery_id = whctl_ok(&server, &["ingest", &subscription_id, "{}"])
        .await
        .trim()
        .to_owned();

    let running = &server;
    let listed = eventually(DEADLINE, "the attempt is logged", || {
        let subscription_id = subscription_id.clone();
        async move {
            let out = whctl_ok(running, &["-o", "json", "attempts", &subscription_id]).await;
            let listed = json(&out);
            (listed["attempts"].as_array().map(Vec::len) == Some(1)).then_some(listed)
        }
    })
    .await;

    let attempt = &listed["attempts"][0];
    assert_eq!(attempt["deliveryId"], delivery_id.as_str(), "{listed}");
    assert_eq!(attempt["subscriptionId"], subscription_id.as_str());
    assert_eq!(attempt["httpStatus"], 200);
    assert_eq!(attempt["outcome"], "ATTEMPT_OUTCOME_SUCCESS");
    assert_eq!(receiver.count(), 1);
    server.stop().await;
}

#[tokio::test]
async fn subscriptions_delete_confirms_and_the_subscription_is_gone() {
    let server = TestServer::start().await;
    let created = whctl_ok(
        &server,
        &[
            "subscriptions",
            "create",
            "--url",
            "http://127.0.0.1:9/hook",
        ],
    )
    .await;
    let id = field(&created, "ID").to_owned();

    let deleted = whctl_ok(&server, &["subscriptions", "delete", &id]).await;
    let (again, _) = server.whctl(&["subscriptions", "get", &id]).await;

    assert_eq!(deleted, format!("deleted subscription {id}\n"));
    let error = again.unwrap_err();
    assert!(error.contains("NOT_FOUND"), "{error}");
    assert!(error.contains(&id), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn getting_an_unknown_subscription_fails_with_not_found_and_prints_nothing() {
    let server = TestServer::start().await;

    let (result, out) = server.whctl(&["subscriptions", "get", "sub_nope"]).await;

    let error = result.unwrap_err();
    assert!(error.contains("NOT_FOUND"), "{error}");
    assert!(error.contains("sub_nope"), "{error}");
    assert_eq!(out, "");
    server.stop().await;
}

#[tokio::test]
async fn ingest_errors_carry_the_http_status_and_the_servers_message() {
    let server = TestServer::start().await;
    let created = whctl_ok(
        &server,
        &[
            "subscriptions",
            "create",
            "--url",
            "http://127.0.0.1:9/hook",
        ],
    )
    .await;
    let id = field(&created, "ID").to_owned();

    let (unknown, _) = server.whctl(&["ingest", "sub_nope", "{}"]).await;
    let (invalid, _) = server.whctl(&["ingest", &id, "{not json"]).await;

    let unknown = unknown.unwrap_err();
    assert!(unknown.contains("HTTP 404"), "{unknown}");
    assert!(unknown.contains("sub_nope"), "{unknown}");
    let invalid = invalid.unwrap_err();
    assert!(invalid.contains("HTTP 400"), "{invalid}");
    assert!(invalid.contains("not valid JSON"), "{invalid}");
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_with_a_message_naming_its_address() {
    let (result, out) =
        whctl_raw(&["--server", "http://127.0.0.1:1", "subscriptions", "list"]).await;

    let error = result.unwrap_err();
    assert!(error.contains("http://127.0.0.1:1"), "{error}");
    assert!(error.starts_with("cannot connect to whd at"), "{error}");
    assert_eq!(out, "");
}
