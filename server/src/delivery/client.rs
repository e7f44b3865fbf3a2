//! The one HTTP client every attempt goes through: pooled keep-alive connections per target host,
//! rustls for https targets, HTTP/1.1 or HTTP/2 as the target offers over TLS.
//!
//! It never consults `HTTP_PROXY`-style variables (hyper-util's connector does not read them) and never
//! follows redirects (the legacy client returns a 3xx as it is), so a request goes exactly where the
//! subscription says.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ssrf::{GuardedResolver, TargetPolicy};

/// The pooled delivery client.
pub type DeliveryClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// How long an idle pooled connection is kept; a little under the 60 s many servers use, so that we
/// close first and never send on a connection the peer is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// Idle connections kept per host; enough for a busy target at full concurrency.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// Builds the client; `connect_timeout` bounds the TCP (and TLS) handshake, and every resolved
/// address must pass `policy`.
pub fn build(connect_timeout: Duration, policy: std::sync::Arc<TargetPolicy>) -> DeliveryClient {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(policy));
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(30)));

    let tls = rustls_client_config();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);

    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}

fn rustls_client_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth()
}
