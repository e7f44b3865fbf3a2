//! Subscriptions over gRPC: every RPC, its validation rules and its error codes.

use std::collections::HashSet;
use std::fmt::Debug;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use whd_e2e::{TestServer, eventually};
use whd_sdk::pbjson_types::{FieldMask, Timestamp};
use whd_sdk::{
    Code, CreateSubscriptionRequest, ListSubscriptionsRequest, Subscription,
    UpdateSubscriptionRequest,
};

/// A well-formed subscription id that no server has issued.
const UNKNOWN_ID: &str = "sub_00000000000000000000000000000000";

fn create_request(url: &str) -> CreateSubscriptionRequest {
    CreateSubscriptionRequest {
        subscription: Some(Subscription {
            target_url: url.into(),
            ..Default::default()
        }),
        generate_secret: false,
    }
}

async fn subscribe(server: &TestServer, url: &str) -> Subscription {
    server
        .client
        .create_subscription(create_request(url))
        .await
        .expect("the subscription is created")
}

/// The gRPC code and message of a failed call; panics when the call succeeded.
fn status_of<T: Debug>(result: Result<T, whd_sdk::Error>) -> (Code, String) {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(whd_sdk::Error::Status { code, message }) => (code, message),
        Err(other) => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn millis(timestamp: &Timestamp) -> i64 {
    timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000
}

/// Waits until the wall clock has moved past `timestamp`, so that the next write gets a later time.
async fn clock_passes(timestamp: &Timestamp) {
    let target = millis(timestamp);
    eventually(
        Duration::from_secs(10),
        "the clock moves past the timestamp",
        || async move {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is after 1970")
                .as_millis();
            (i64::try_from(now).expect("millis fit in i64") > target).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn create_assigns_a_sub_id_and_timestamps_and_has_no_secret_by_default() {
    let server = TestServer::start().await;

    let created = subscribe(&server, "http://127.0.0.1:9/hook").await;

    assert!(created.id.starts_with("sub_"), "{}", created.id);
    assert_eq!(created.target_url, "http://127.0.0.1:9/hook");
    assert!(created.create_time.is_some());
    assert_eq!(created.update_time, created.create_time);
    assert!(!created.has_secret);
    assert_eq!(created.secret, "");
    server.stop().await;
}

#[tokio::test]
async fn create_with_generate_secret_returns_a_whsec_secret_once_and_get_never_does() {
    let server = TestServer::start().await;

    let created = server
        .client
        .create_subscription(CreateSubscriptionRequest {
            generate_secret: true,
            ..create_request("http://127.0.0.1:9/hook")
        })
        .await
        .unwrap();

    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    assert!(created.has_secret);
    let fetched = server.client.get_subscription(&created.id).await.unwrap();
    assert_eq!(fetched.secret, "");
    assert!(fetched.has_secret);
    let secret = server
        .client
        .get_subscription_secret(&created.id)
        .await
        .unwrap();
    assert_eq!(secret.secret, created.secret);
    server.stop().await;
}

#[tokio::test]
async fn create_with_a_supplied_secret_keeps_it_and_only_get_subscription_secret_returns_it() {
    let server = TestServer::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    let created = server
        .client
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                target_url: "http://127.0.0.1:9/hook".into(),
                secret: secret.into(),
                ..Default::default()
            }),
            generate_secret: false,
        })
        .await
        .unwrap();

    assert_eq!(created.secret, "");
    assert!(created.has_secret);
    let stored = server
        .client
        .get_subscription_secret(&created.id)
        .await
        .unwrap();
    assert_eq!(stored.secret, secret);
    server.stop().await;
}

#[tokio::test]
async fn get_subscription_secret_is_empty_without_a_secret_and_not_found_for_an_unknown_id() {
    let server = TestServer::start().await;
    let created = subscribe(&server, "http://127.0.0.1:9/hook").await;

    let secret = server
        .client
        .get_subscription_secret(&created.id)
        .await
        .unwrap();
    let (code, message) = status_of(server.client.get_subscription_secret(UNKNOWN_ID).await);

    assert_eq!(secret.secret, "");
    assert_eq!(code, Code::NotFound);
    assert!(message.contains(UNKNOWN_ID), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn create_with_a_malformed_secret_is_invalid_argument_naming_the_secret() {
    let server = TestServer::start().await;

    let result = server
        .client
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                target_url: "http://127.0.0.1:9/hook".into(),
                secret: "not-a-secret".into(),
                ..Default::default()
            }),
            generate_secret: false,
        })
        .await;

    let (code, message) = status_of(result);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("subscription.secret"), "{message}");
    assert!(
        !message.contains("not-a-secret"),
        "echoes the secret: {message}"
    );
    let listed = server
        .client
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await
        .unwrap();
    assert!(listed.subscriptions.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn create_with_both_a_secret_and_generate_secret_is_invalid_argument() {
    let server = TestServer::start().await;

    let result = server
        .client
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                target_url: "http://127.0.0.1:9/hook".into(),
                secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
                ..Default::default()
            }),
            generate_secret: true,
        })
        .await;

    let (code, message) = status_of(result);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("generate_secret"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn create_rejects_relative_non_http_and_credential_bearing_target_urls() {
    let server = TestServer::start().await;

    for bad in [
        "/hook",
        "ftp://127.0.0.1/hook",
        "http://user:pw@127.0.0.1/hook",
        "",
    ] {
        let result = server.client.create_subscription(create_request(bad)).await;

        let (code, message) = status_of(result);
        assert_eq!(code, Code::InvalidArgument, "{bad:?}: {message}");
        assert!(
            message.starts_with("subscription.target_url: "),
            "{bad:?}: {message}"
        );
        assert!(!message.contains("pw@"), "echoes credentials: {message}");
    }
    let listed = server
        .client
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await
        .unwrap();
    assert!(listed.subscriptions.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn create_without_a_subscription_is_invalid_argument() {
    let server = TestServer::start().await;

    let result = server
        .client
        .create_subscription(CreateSubscriptionRequest::default())
        .await;

    let (code, message) = status_of(result);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.starts_with("subscription: "), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn get_returns_what_create_stored() {
    let server = TestServer::start().await;
    let created = server
        .client
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                target_url: "http://127.0.0.1:9/hook".into(),
                description: "orders".into(),
                event_types: vec!["order.created".into()],
                ..Default::default()
            }),
            generate_secret: false,
        })
        .await
        .unwrap();

    let fetched = server.client.get_subscription(&created.id).await.unwrap();

    assert_eq!(fetched, created);
    assert_eq!(fetched.description, "orders");
    assert_eq!(fetched.event_types, ["order.created"]);
    server.stop().await;
}

#[tokio::test]
async fn get_of_an_unknown_id_is_not_found_naming_the_id() {
    let server = TestServer::start().await;

    for id in [UNKNOWN_ID, "sub_nope"] {
        let (code, message) = status_of(server.client.get_subscription(id).await);

        assert_eq!(code, Code::NotFound, "{id}");
        assert!(message.contains(id), "{id}: {message}");
    }
    server.stop().await;
}

#[tokio::test]
async fn list_pages_oldest_first_and_the_last_page_has_an_empty_token() {
    let server = TestServer::start().await;
    let mut created = Vec::new();
    for n in 0..5 {
        let subscription = subscribe(&server, &format!("http://127.0.0.1:9/hook{n}")).await;
        // Distinct creation times make "oldest first" the creation order.
        clock_passes(subscription.create_time.as_ref().unwrap()).await;
        created.push(subscription.id);
    }

    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = server
            .client
            .list_subscriptions(ListSubscriptionsRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap();
        pages.push(
            page.subscriptions
                .into_iter()
                .map(|subscription| subscription.id)
                .collect::<Vec<_>>(),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(pages.len() < 10, "paging does not end");
    }

    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(pages.concat(), created);
    server.stop().await;
}

#[tokio::test]
async fn list_without_a_page_size_returns_everything_on_one_page() {
    let server = TestServer::start().await;
    for n in 0..3 {
        subscribe(&server, &format!("http://127.0.0.1:9/hook{n}")).await;
    }

    let page = server
        .client
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await
        .unwrap();

    assert_eq!(page.subscriptions.len(), 3);
    assert_eq!(page.next_page_token, "");
    let ids: HashSet<_> = page.subscriptions.iter().map(|s| &s.id).collect();
    assert_eq!(ids.len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn list_with_a_forged_page_token_is_invalid_argument() {
    let server = TestServer::start().await;

    let result = server
        .client
        .list_subscriptions(ListSubscriptionsRequest {
            page_size: 2,
            page_token: "garbage".into(),
        })
        .await;

    let (code, message) = status_of(result);
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("page_token"), "{message}");
    server.stop().await;
}

fn update_request(id: &str, change: Subscription, paths: &[&str]) -> UpdateSubscriptionRequest {
    UpdateSubscriptionRequest {
        subscription: Some(Subscription {
            id: id.into(),
            ..change
        }),
        update_mask: Some(FieldMask {
            paths: paths.iter().map(|path| path.to_string()).collect(),
        }),
    }
}

#[tokio::test]
async fn update_with_a_description_mask_changes_only_the_description_and_advances_update_time() {
    let server = TestServer::start().await;
    let created = subscribe(&server, "http://127.0.0.1:9/hook").await;
    clock_passes(created.create_time.as_ref().unwrap()).await;

    let change = Subscription {
        description: "billing".into(),
        target_url: "http://127.0.0.1:9/ignored".into(),
        ..Default::default()
    };
    let updated = server
        .client
        .update_subscription(update_request(&created.id, change, &["description"]))
        .await
        .unwrap();

    assert_eq!(updated.description, "billing");
    assert_eq!(updated.target_url, "http://127.0.0.1:9/hook");
    assert_eq!(updated.create_time, created.create_time);
    assert!(
        millis(updated.update_time.as_ref().unwrap())
            > millis(created.update_time.as_ref().unwrap()),
        "update_time {:?} did not advance past {:?}",
        updated.update_time,
        created.update_time
    );
    let fetched = server.client.get_subscription(&created.id).await.unwrap();
    assert_eq!(fetched, updated);
    server.stop().await;
}

#[tokio::test]
async fn update_with_a_target_url_mask_validates_and_stores_the_new_url() {
    let server = TestServer::start().await;
    let created = subscribe(&server, "http://127.0.0.1:9/hook").await;
    let to = |url: &str| Subscription {
        target_url: url.into(),
        ..Default::default()
    };

    let bad = server
        .client
        .update_subscription(update_request(
            &created.id,
            to("ftp://127.0.0.1/x"),
            &["target_url"],
        ))
        .await;
    let good = server
        .client
        .update_subscription(update_request(
            &created.id,
            to("http://127.0.0.1:9/new"),
            &["target_url"],
        ))
        .await
        .unwrap();

    let (code, message) = status_of(bad);
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.starts_with("subscription.target_url: "),
        "{message}"
    );
    assert_eq!(good.target_url, "http://127.0.0.1:9/new");
    server.stop().await;
}

#[tokio::test]
async fn update_with_an_unknown_or_read_only_mask_path_is_invalid_argument() {
    let server = TestServer::start().await;
    let created = subscribe(&server, "http://127.0.0.1:9/hook").await;

    for path in ["colour", "id", "create_time"] {
        let result = server
            .client
            .update_subscription(update_request(
                &created.id,
                Subscription::default(),
                &[path],
            ))
            .await;

        let (code, message) = status_of(result);
        assert_eq!(code, Code::InvalidArgument, "{path}");
        assert!(message.starts_with("update_mask: "), "{path}: {message}");
        assert!(message.contains(path), "{path}: {message}");
    }
    let fetched = server.client.get_subscription(&created.id).await.unwrap();
    assert_eq!(fetched, created);
    server.stop().await;
}

#[tokio::test]
async fn update_with_an_empty_or_missing_mask_is_invalid_argument() {
    let server = TestServer::start().await;
    let created = subscribe(&server, "http://127.0.0.1:9/hook").await;
    let empty_mask = update_request(&created.id, Subscription::default(), &[]);
    let no_mask = UpdateSubscriptionRequest {
        update_mask: None,
        ..empty_mask.clone()
    };

    for request in [empty_mask, no_mask] {
        let (code, message) = status_of(server.client.update_subscription(request).await);

        assert_eq!(code, Code::InvalidArgument);
        assert!(message.starts_with("update_mask: "), "{message}");
    }
    server.stop().await;
}

#[tokio::test]
async fn update_of_an_unknown_id_is_not_found_naming_the_id() {
    let server = TestServer::start().await;
    let change = Subscription {
        description: "x".into(),
        ..Default::default()
    };

    let result = server
        .client
        .update_subscription(update_request(UNKNOWN_ID, change, &["description"]))
        .await;

    let (code, message) = status_of(result);
    assert_eq!(code, Code::NotFound);
    assert!(message.contains(UNKNOWN_ID), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn delete_removes_the_subscription_and_a_second_delete_is_not_found() {
    let server = TestServer::start().await;
    let kept = subscribe(&server, "http://127.0.0.1:9/kept").await;
    let doomed = subscribe(&server, "http://127.0.0.1:9/doomed").await;

    server.client.delete_subscription(&doomed.id).await.unwrap();

    let (get_code, get_message) = status_of(server.client.get_subscription(&doomed.id).await);
    assert_eq!(get_code, Code::NotFound);
    assert!(get_message.contains(&doomed.id), "{get_message}");
    let (again_code, again_message) =
        status_of(server.client.delete_subscription(&doomed.id).await);
    assert_eq!(again_code, Code::NotFound);
    assert!(again_message.contains(&doomed.id), "{again_message}");
    let listed = server
        .client
        .list_subscriptions(ListSubscriptionsRequest::default())
        .await
        .unwrap();
    let ids: Vec<_> = listed.subscriptions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [kept.id.as_str()]);
    server.stop().await;
}
