//! gRPC-Web on the gRPC port, for browsers: plain HTTP/1.1 requests in the gRPC-Web framing, and CORS
//! preflights answered for configured origins only.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use whd_e2e::TestServer;

/// An HTTP/1.1-only client, as a browser's gRPC-Web library would use.
fn http1_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test]
async fn a_grpc_web_call_over_http1_lists_subscriptions() {
    let server = TestServer::start().await;
    // An empty ListSubscriptionsRequest in gRPC-Web framing: flag 0, length 0.
    let frame = Bytes::from_static(&[0, 0, 0, 0, 0]);
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "{}/whd.v1.SubscriptionService/ListSubscriptions",
            server.grpc_url
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(frame))
        .unwrap();

    let response = http1_client()
        .request(request)
        .await
        .expect("the gRPC port answers HTTP/1.1");

    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web+proto"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("grpc-status:0"),
        "the trailer frame reports success: {text:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn cors_preflights_are_answered_for_configured_origins_only() {
    let server = TestServer::start_with(&["--cors-allow-origin", "https://ops.example.com"]).await;
    let preflight = |origin: &'static str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!(
                "{}/whd.v1.SubscriptionService/ListSubscriptions",
                server.grpc_url
            ))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    let allowed = http1_client()
        .request(preflight("https://ops.example.com"))
        .await
        .unwrap();
    let refused = http1_client()
        .request(preflight("https://elsewhere.example"))
        .await
        .unwrap();

    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://ops.example.com"
    );
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    server.stop().await;
}
