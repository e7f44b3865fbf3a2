//! Test harness for whd's end-to-end suite: a real server on ephemeral ports with its own SQLite file,
//! real HTTP receivers on loopback, and bounded waiting.
//!
//! - [`TestServer`]: `whd` in-process, with an SDK client and its HTTP base URL.
//! - [`ServerProcess`]: `whd` as a child process, for crash (`kill -9`) and restart tests.
//! - [`Receiver`]: a hyper server that records every request and answers as told.
//! - [`TestDatabase`]: a fresh SQLite file or PostgreSQL schema per test.
//! - [`eventually`]: polls a check until it holds or a deadline passes.

mod database;
mod process;
mod receiver;
mod server;

use std::future::Future;
use std::time::Duration;

pub use database::{Backend, TestDatabase, postgres_url};
pub use process::{ServerProcess, free_port, start_server};
pub use receiver::{Received, Receiver, Reply};
pub use server::{TestServer, test_args};

/// Polls `check` every 20 ms until it returns `Some`, and panics with `what` if `deadline` passes first.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
