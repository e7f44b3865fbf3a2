//! `whd` as a child process, for tests that kill it.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use whctl::server_process::ServingAddresses;

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
    /// [`crate::test_args`] for `database`, on ports it picks itself, plus `extra` flags, and waits until
    /// it serves.
    pub async fn start(
        binary: &str,
        database: impl AsRef<std::ffi::OsStr>,
        extra: &[&str],
    ) -> ServerProcess {
        let mut args = crate::test_args(database);
        args.remove(0);
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let (child, addresses) = start_server(binary, &args).await;
        ServerProcess {
            child,
            http_url: format!("http://{}", addresses.http),
            grpc_url: format!("http://{}", addresses.grpc),
        }
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

/// Starts the server `binary` with `args` and waits until it serves, on the addresses returned (ports
/// it picked itself where `args` ask for port 0). Its log goes to stderr when `RUST_LOG` is set.
pub async fn start_server(binary: &str, args: &[String]) -> (Child, ServingAddresses) {
    let mut command = Command::new(binary);
    command.args(args);
    if std::env::var_os("RUST_LOG").is_none() {
        command.stderr(Stdio::null());
    }
    whctl::server_process::start(
        command,
        std::env::var_os("RUST_LOG").is_some(),
        Duration::from_secs(20),
    )
    .await
    .unwrap_or_else(|error| panic!("the server process serves: {error}"))
}

/// A port that was free a moment ago, for a program that cannot pick and report its own (the server
/// can: see [`start_server`]). It may be taken meanwhile by any socket on the machine, so use it
/// only where a failure to bind is reported plainly.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding port 0 succeeds");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}
