//! `whd` running inside the test process.

use crate::TestDatabase;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use whd_sdk::{Client, ClientConfig};
use whd_server::{App, Config};

/// Flags every test server gets: ephemeral ports, fast retries without jitter, short timeouts, a
/// quick poll, so that tests finish in seconds, and loopback opened to deliveries because the test
/// receivers live there. Tests add or override flags as they need.
pub fn test_args(database: impl AsRef<std::ffi::OsStr>) -> Vec<String> {
    [
        "whd",
        "--database-url",
        database
            .as_ref()
            .to_str()
            .expect("database URLs and temporary paths are UTF-8"),
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--retry-schedule",
        "100ms,200ms",
        "--retry-jitter",
        "0",
        "--attempt-timeout",
        "2s",
        "--lease",
        "7s",
        "--poll-interval",
        "50ms",
        "--shutdown-grace",
        "2s",
        "--allow-target-cidr",
        "127.0.0.0/8",
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect()
}

/// A running server with a database of its own (see [`TestDatabase`]).
#[derive(Debug)]
pub struct TestServer {
    /// SDK client connected to this server.
    pub client: Client,
    /// Base URL of the HTTP gateway, e.g. `http://127.0.0.1:41234`.
    pub http_url: String,
    /// URL of the gRPC API.
    pub grpc_url: String,
    /// The database.
    pub database: TestDatabase,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with [`test_args`].
    pub async fn start() -> TestServer {
        TestServer::start_with(&[]).await
    }

    /// Starts a server with [`test_args`] followed by `extra` flags (later flags win; repeatable flags
    /// such as `--allow-target-cidr` add to the list instead).
    pub async fn start_with(extra: &[&str]) -> TestServer {
        TestServer::start_with_edited_args(|args| {
            args.extend(extra.iter().map(|arg| arg.to_string()));
        })
        .await
    }

    /// Starts a server with [`test_args`] as changed by `edit`, for tests that must remove one of them
    /// (e.g. the loopback allow-list, which a later flag cannot take back).
    pub async fn start_with_edited_args(edit: impl FnOnce(&mut Vec<String>)) -> TestServer {
        whd_server::telemetry::init_for_tests();
        let database = TestDatabase::create().await;
        let mut args = test_args(database.url());
        edit(&mut args);
        let config = Config::from_args(args).expect("test flags parse");
        let app = App::bind(config).await.expect("the test server starts");
        let grpc_url = format!("http://{}", app.grpc_addr());
        let http_url = format!("http://{}", app.http_addr());
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { app.run(token).await.expect("the test server runs") });
        let client = Client::connect(ClientConfig {
            server: grpc_url.clone(),
            ingest_url: http_url.clone(),
            api_token: None,
        })
        .await
        .expect("the SDK connects to the test server");
        TestServer {
            client,
            http_url,
            grpc_url,
            database,
            shutdown,
            task,
        }
    }

    /// Shuts down gracefully and waits until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("the server task ends cleanly");
    }

    /// Arguments for `whctl` against this server, followed by `args`.
    pub fn whctl_args(&self, args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = vec![
            "whctl".into(),
            "--server".into(),
            self.grpc_url.clone(),
            "--ingest-url".into(),
            self.http_url.clone(),
        ];
        all.extend(args.iter().map(|arg| arg.to_string()));
        all
    }

    /// Runs `whctl` in-process against this server; returns its exit status and standard output.
    pub async fn whctl(&self, args: &[&str]) -> (Result<(), String>, String) {
        use clap::Parser;
        let cli =
            whctl::Cli::try_parse_from(self.whctl_args(args)).map_err(|error| error.to_string());
        let cli = match cli {
            Ok(cli) => cli,
            Err(error) => return (Err(error), String::new()),
        };
        let mut out = Vec::new();
        let result = whctl::run_with_output(cli, &mut out)
            .await
            .map_err(|error| whctl::error_message(&error));
        (result, String::from_utf8(out).expect("whctl prints UTF-8"))
    }
}

impl TestServer {
    /// Starts a server with [`test_args`] and `extra` flags on the database at `url`, which it does not
    /// own: several servers given one PostgreSQL schema share its queue, as the nodes of a cluster do.
    pub async fn start_on(url: &str, extra: &[&str]) -> TestServer {
        whd_server::telemetry::init_for_tests();
        let database = TestDatabase::External {
            url: url.to_owned(),
        };
        let mut args = test_args(database.url());
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let config = Config::from_args(args).expect("test flags parse");
        let app = App::bind(config).await.expect("the node starts");
        let grpc_url = format!("http://{}", app.grpc_addr());
        let http_url = format!("http://{}", app.http_addr());
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move { app.run(token).await.expect("the node runs") });
        let client = Client::connect(ClientConfig {
            server: grpc_url.clone(),
            ingest_url: http_url.clone(),
            api_token: None,
        })
        .await
        .expect("the SDK connects to the node");
        TestServer {
            client,
            http_url,
            grpc_url,
            database,
            shutdown,
            task,
        }
    }
}
