//! A real HTTP receiver on loopback that records what it gets and answers as scripted.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answer at once with this status.
    Status(u16),
    /// Answer with this status after this long (sooner if the receiver stops).
    After(Duration, u16),
    /// Never answer (until the receiver stops): the request is recorded, the response never comes.
    Hang,
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path and query.
    pub path: String,
    /// Headers as sent.
    pub headers: HeaderMap,
    /// Body bytes as sent.
    pub body: Bytes,
}

impl Received {
    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

#[derive(Debug)]
struct Script {
    /// Replies for the next requests, in order.
    upcoming: VecDeque<Reply>,
    /// Reply once the script runs out.
    otherwise: Reply,
}

/// A recording receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// The URL to subscribe, e.g. `http://127.0.0.1:40000/hook`.
    pub url: String,
    /// The bound address.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    stop: CancellationToken,
}

impl Receiver {
    /// A receiver that always answers `status`.
    pub async fn start(status: u16) -> Receiver {
        Receiver::scripted(&[], Reply::Status(status)).await
    }

    /// A receiver that answers `upcoming` in order, then `otherwise`.
    pub async fn scripted(upcoming: &[Reply], otherwise: Reply) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the receiver binds a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let receiver = Receiver {
            url: format!("http://{addr}/hook"),
            addr,
            received: Arc::default(),
            script: Arc::new(Mutex::new(Script {
                upcoming: upcoming.iter().copied().collect(),
                otherwise,
            })),
            stop: CancellationToken::new(),
        };
        tokio::spawn(receiver.clone().accept_loop(listener));
        receiver
    }

    /// Changes how later requests are answered.
    pub fn set_reply(&self, reply: Reply) {
        let mut script = self.script.lock().unwrap();
        script.upcoming.clear();
        script.otherwise = reply;
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Stops accepting and ends hanging requests.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            let stream = tokio::select! {
                () = self.stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            let receiver = self.clone();
            tokio::spawn(async move {
                let handler = service_fn(move |request| receiver.clone().handle(request));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), handler)
                    .await;
            });
        }
    }

    async fn handle(self, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        let path = parts
            .uri
            .path_and_query()
            .map(|path| path.to_string())
            .unwrap_or_default();
        self.received.lock().unwrap().push(Received {
            path,
            headers: parts.headers,
            body,
        });
        let reply = {
            let mut script = self.script.lock().unwrap();
            script.upcoming.pop_front().unwrap_or(script.otherwise)
        };
        let status = match reply {
            Reply::Status(status) => status,
            Reply::After(delay, status) => {
                tokio::select! {
                    () = self.stop.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                }
                status
            }
            // Until the receiver stops, and at most an hour, so nothing hangs forever.
            Reply::Hang => {
                tokio::select! {
                    () = self.stop.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                }
                503
            }
        };
        let mut response = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
        *response.status_mut() = StatusCode::from_u16(status).expect("scripted statuses are valid");
        Ok(response)
    }
}
