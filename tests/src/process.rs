//! `whd` as a child process, for tests that kill it.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A server process on a given database and ports.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Base URL of the HTTP gateway.
    pub http_url: String,
    /// URL of the gRPC API.
    pub grpc_url: String,
}

impl ServerProcess {
    /// Starts the server `binary` (in tests: `env!("CARGO_BIN_EXE_whd-test-server")`) with
    /// [`crate::test_args`] for `database`, on free ports, plus `extra` flags, and waits until it accepts
    /// connections.
    pub async fn start(
        binary: &str,
        database: impl AsRef<std::ffi::OsStr>,
        extra: &[&str],
    ) -> ServerProcess {
        let grpc_port = free_port();
        let http_port = free_port();
        let mut args = crate::test_args(database);
        args.remove(0);
        args.extend([
            "--grpc-addr".into(),
            format!("127.0.0.1:{grpc_port}"),
            "--http-addr".into(),
            format!("127.0.0.1:{http_port}"),
        ]);
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let child = Command::new(binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("RUST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .expect("the server binary starts");
        let process = ServerProcess {
            child,
            http_url: format!("http://127.0.0.1:{http_port}"),
            grpc_url: format!("http://127.0.0.1:{grpc_port}"),
        };
        let health = format!("127.0.0.1:{http_port}");
        crate::eventually(
            Duration::from_secs(20),
            "the server process answers /healthz",
            || {
                let health = health.clone();
                async move {
                    tokio::net::TcpStream::connect(&health)
                        .await
                        .ok()
                        .map(|_| ())
                }
            },
        )
        .await;
        process
    }

    /// Kills the process with SIGKILL: no shutdown, no cleanup, like a crash.
    pub async fn kill(mut self) {
        self.child
            .kill()
            .await
            .expect("the server process can be killed");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the process is running")
    }
}

/// A port that was free a moment ago. The OS hands out ephemeral ports in sequence, so a reuse race
/// with another test is unlikely; the server fails loudly if it happens.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0 succeeds");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}
