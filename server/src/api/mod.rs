//! The gRPC API: thin tonic handlers over [`crate::service`], plus health and reflection.
//!
//! - [`subscriptions`]: the `whd.v1.SubscriptionService` handlers.
//! - [`deliveries`]: `whd.v1.DeliveryService`, including `WatchDeliveries`.
//! - [`auth`]: the API token check.
//! - [`convert`]: proto messages ↔ service inputs and domain records.

pub mod auth;
pub mod convert;
pub mod deliveries;
pub mod subscriptions;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use whd_proto::v1::delivery_service_server::DeliveryServiceServer;
use whd_proto::v1::subscription_service_server::SubscriptionServiceServer;

use crate::service::Service;

/// Largest gRPC message accepted or sent. Requests are small; this only stops abuse.
pub const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Serves the gRPC API on `listener` until `shutdown` is cancelled, then finishes open calls.
pub async fn serve<H: tonic_health::pb::health_server::Health>(
    listener: TcpListener,
    service: Service,
    health: tonic_health::pb::health_server::HealthServer<H>,
    auth: auth::RequireToken,
    cors_allow_origins: Vec<String>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(whd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(whd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor set is valid");

    let subscriptions =
        SubscriptionServiceServer::new(subscriptions::SubscriptionsApi::new(service.clone()))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let deliveries = DeliveryServiceServer::new(deliveries::DeliveriesApi::new(service))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    // The token check wraps the whd services only; health and reflection stay open.
    let subscriptions = InterceptedService::new(subscriptions, auth.clone());
    let deliveries = InterceptedService::new(deliveries, auth);

    // Browsers speak gRPC-Web over HTTP/1.1; the CORS layer sits outside the translation so that
    // preflight requests are answered before they reach it.
    tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(cors_layer(&cors_allow_origins))
        .layer(tonic_web::GrpcWebLayer::new())
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(subscriptions)
        .add_service(deliveries)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
        .await
}

/// CORS for gRPC-Web callers: only the configured origins (`*` for any); none by default.
fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use http::header::{HeaderName, HeaderValue};
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};

    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([http::Method::POST])
        .allow_headers(Any)
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
        ])
        .max_age(std::time::Duration::from_secs(24 * 3600))
}
