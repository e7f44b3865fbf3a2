//! A `whd` started as a child process, on ports it picks itself. `whctl bench` starts one this way,
//! and so do the end-to-end tests that crash and restart a server.
//!
//! A port found free beforehand (bind port 0, close it, pass the number on) can be taken meanwhile by
//! any socket on the machine, an outgoing connection's local port included, and the server then
//! fails to start. So the child is asked for port 0 and reports the ports it bound: `whd` names them
//! in its `whd is serving` log line, which is read here from its JSON log on stdout.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The message of the line in which `whd` names the addresses it serves on.
const SERVING: &str = "whd is serving";

/// Where a started `whd` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServingAddresses {
    /// The gRPC API.
    pub grpc: SocketAddr,
    /// The HTTP gateway (ingest, health, dashboard).
    pub http: SocketAddr,
}

/// Why a `whd` did not come up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The binary could not be run at all.
    #[error("cannot start it: {0}")]
    Spawn(#[source] std::io::Error),
    /// It exited before serving, usually with its reason on stderr.
    #[error("it exited before serving ({})", .0.map_or("exit status unknown".to_owned(), |status| status.to_string()))]
    Exited(Option<ExitStatus>),
    /// It neither served nor exited in time.
    #[error("it was not serving after {0:?}")]
    Timeout(Duration),
}

/// Spawns `command`, a `whd` with its flags (its `--grpc-addr` and `--http-addr` may ask for port 0),
/// and waits up to `timeout` until it serves. Its log is read as JSON from its stdout, with the
/// level of `RUST_LOG` if set, else warnings; with `echo_log` the lines are copied to this process's
/// stderr. The child is killed when the returned handle is dropped.
pub async fn start(
    mut command: Command,
    echo_log: bool,
    timeout: Duration,
) -> Result<(Child, ServingAddresses), StartError> {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    command
        .args(["--log-format", "json"])
        .env("RUST_LOG", format!("{level},whd_server::app=info"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(StartError::Spawn)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (serving, served) = oneshot::channel();
    // Reads to the end, so that the child never blocks on a full pipe.
    tokio::spawn(async move {
        let mut serving = Some(serving);
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if serving.is_some()
                && let Some(addresses) = serving_addresses(&line)
                && let Some(serving) = serving.take()
            {
                let _ = serving.send(addresses);
            }
            if echo_log {
                eprintln!("{line}");
            }
        }
    });
    match tokio::time::timeout(timeout, served).await {
        Ok(Ok(addresses)) => Ok((child, addresses)),
        // The log ended without the line: the process is gone or going.
        Ok(Err(_)) => {
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .ok()
                .and_then(Result::ok);
            Err(StartError::Exited(status))
        }
        Err(_) => Err(StartError::Timeout(timeout)),
    }
}

/// The addresses named by a `whd is serving` line of a JSON log, or `None` for any other line.
fn serving_addresses(line: &str) -> Option<ServingAddresses> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    if entry.get("message")?.as_str()? != SERVING {
        return None;
    }
    let address = |field: &str| entry.get(field)?.as_str()?.parse().ok();
    Some(ServingAddresses {
        grpc: address("grpc")?,
        http: address("http")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_serving_line_names_both_addresses_and_other_lines_none() {
        let line = r#"{"timestamp":"2026-12-05T18:00:00Z","level":"INFO","message":"whd is serving","grpc":"127.0.0.1:40001","http":"[::1]:40002","node":"n1","target":"whd_server::app"}"#;
        assert_eq!(
            serving_addresses(line),
            Some(ServingAddresses {
                grpc: "127.0.0.1:40001".parse().unwrap(),
                http: "[::1]:40002".parse().unwrap(),
            })
        );
        assert_eq!(
            serving_addresses(r#"{"level":"INFO","message":"shutting down"}"#),
            None
        );
        assert_eq!(serving_addresses("not json"), None);
    }
}
