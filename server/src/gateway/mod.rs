//! The HTTP gateway, on hyper: `POST /ingest/{subscription_id}`, `GET /healthz`, the JSON API under
//! `/v1/` (with the Server-Sent Events stream `/v1/events`) and the web dashboard at `/`.
//!
//! Connections are served by hyper-util's auto builder (HTTP/1.1 with keep-alive, or HTTP/2 prior
//! knowledge). The header-read timeout runs on hyper's timer, which is installed here: without a timer
//! hyper would silently not enforce it. It also bounds how long an idle keep-alive connection may wait
//! for its next request, so neither slow nor idle clients hold connections.

mod dashboard;
mod json_api;
mod routes;
mod sse;

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::auth::RequireToken;
use crate::service::Service;

/// Most connections served at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 10_000;
/// Most request headers accepted, and the read buffer that bounds their total size.
const MAX_HEADERS: usize = 64;
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Time allowed for a request's headers, and for an idle connection's next request.
    pub header_read_timeout: Duration,
    /// Token the JSON API requires as `authorization: Bearer <token>`; `None` leaves it open.
    pub api_token: Option<String>,
}

/// Serves the gateway on `listener` until `shutdown` is cancelled; then stops accepting, lets open
/// requests finish, and closes keep-alive connections. Event streams end when `shutdown` fires, so
/// they do not hold the drain up. Connection tasks run on `connections`.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    settings: GatewaySettings,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let builder = Arc::new(builder);
    let gateway = routes::Gateway {
        service,
        auth: RequireToken::new(settings.api_token.as_deref()),
        shutdown: shutdown.clone(),
    };

    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = limit.clone().acquire_owned() => permit.expect("the connection semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off briefly instead of spinning.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let first_byte_timeout = settings.header_read_timeout;
        connections.spawn(async move {
            let _permit = permit;
            // The auto builder reads the first bytes to tell HTTP/1 from HTTP/2 before hyper's own
            // header timer exists, so a client that connects and sends nothing is cut off here.
            let mut first_byte = [0u8; 1];
            if tokio::time::timeout(first_byte_timeout, stream.peek(&mut first_byte))
                .await
                .is_err()
            {
                tracing::debug!(peer = %peer, "closed a connection that sent nothing");
                return;
            }
            let handler = service_fn(move |request| routes::handle(gateway.clone(), request));
            let connection = builder.serve_connection(TokioIo::new(stream), handler);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(peer = %peer, error = %error, "connection ended with an error");
            }
        });
    }
    tracing::debug!("gateway stopped accepting");
}
