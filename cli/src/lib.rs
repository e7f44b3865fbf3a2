//! whctl, the command-line client for whd.
//!
//! [`Cli`] is the clap definition; [`run`] executes a parsed command line and [`main_entry`] wraps it
//! for the binary (runtime, `error: …` line, exit code). Commands print aligned tables by default and
//! the proto3 JSON of the response with `-o json`.
//!
//! # Layout
//! - `subscriptions`: `whctl subscriptions create|get|list|update|delete|secret`
//! - `ingest`: `whctl ingest`, posting one webhook over HTTP
//! - `deliveries`: `whctl deliveries get` and `whctl attempts`
//! - `watch`: `whctl watch`, following delivery events live and resuming after a broken stream
//! - `listen`: `whctl listen`, a local webhook receiver that prints what it gets
//! - `bench`: `whctl bench`, the load generator with its own receiver and ceiling measurement
//! - `server_process`: a `whd` started as a child process, on ports it picks itself (for `bench`)
//! - `cpu_time`: CPU time of the benchmark, its server and the machine's steal, read from `/proc`
//! - `verify`: Standard Webhooks signature checks for `listen`
//! - `output`: tables, key/value blocks, JSON and value formatting shared by every command
//! - `error`: the error type commands return
//!
//! A new command adds a variant to [`Command`], a module with its arguments and a `run` function, and
//! one line in [`run_with_output`].

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use whd_sdk::{Client, ClientConfig, DEFAULT_INGEST_URL, DEFAULT_SERVER};

pub mod bench;
mod cpu_time;
pub mod deliveries;
mod error;
pub mod ingest;
pub mod listen;
mod output;
pub mod server_process;
pub mod subscriptions;
mod verify;
pub mod watch;

pub use output::OutputFormat;

use crate::error::CliError;

/// Command-line client for whd, the webhook delivery service.
#[derive(Debug, Parser)]
#[command(name = "whctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Connection and output settings, accepted before or after the subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every command.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// URL of the whd gRPC API.
    #[arg(long, global = true, env = "WHD_SERVER", value_name = "URL", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Base URL of the whd HTTP ingest endpoint (webhooks go to {URL}/ingest/{subscription}).
    #[arg(long, global = true, env = "WHD_INGEST_URL", value_name = "URL", default_value = DEFAULT_INGEST_URL)]
    pub ingest_url: String,
    /// API token, sent as `authorization: Bearer <token>`. Default: none.
    #[arg(
        long,
        global = true,
        env = "WHD_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// Output format: `table` for people, `json` for the proto3 JSON of the response.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage subscriptions: where webhooks go and how they are signed.
    #[command(subcommand, visible_alias = "subs")]
    Subscriptions(subscriptions::SubscriptionsCommand),
    /// Post one webhook to a subscription through the HTTP ingest endpoint.
    Ingest(ingest::IngestArgs),
    /// Inspect deliveries.
    #[command(subcommand)]
    Deliveries(deliveries::DeliveriesCommand),
    /// List a subscription's delivery attempts, newest first.
    Attempts(deliveries::AttemptsArgs),
    /// Print delivery events live, one line each; reconnects and resumes if the stream breaks.
    Watch(watch::WatchArgs),
    /// Run a local webhook receiver that prints every request and checks signatures.
    Listen(listen::ListenArgs),
    /// Measure ingest and delivery throughput and latency against a ceiling, with its own receiver.
    Bench(bench::BenchArgs),
}

/// What every command needs: how to reach the server and how to print.
#[derive(Debug)]
pub(crate) struct Context {
    config: ClientConfig,
    /// Format for everything printed on standard output.
    pub(crate) output: OutputFormat,
    /// Whether output may contain ANSI colours (standard output is a terminal and `NO_COLOR` is unset).
    pub(crate) color: bool,
}

impl Context {
    fn new(global: GlobalArgs, color: bool) -> Self {
        // `WHD_API_TOKEN=` (exported but empty) means no token, as in the SDK.
        let api_token = global.api_token.filter(|token| !token.trim().is_empty());
        let config = ClientConfig {
            server: global.server,
            ingest_url: global.ingest_url,
            api_token,
        };
        Self {
            config,
            output: global.output,
            color,
        }
    }

    /// Connects to the gRPC API now, so an unreachable server is reported with its address.
    pub(crate) async fn client(&self) -> Result<Client, CliError> {
        Ok(Client::connect(self.config.clone()).await?)
    }

    /// Builds a client for HTTP ingest only; the gRPC connection is not opened.
    pub(crate) fn ingest_client(&self) -> Result<Client, CliError> {
        Ok(Client::connect_lazy(self.config.clone())?)
    }
}

/// Runs a parsed command line, printing results on standard output.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout();
    // https://no-color.org: any non-empty NO_COLOR turns colours off.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let color = stdout.is_terminal() && !no_color;
    execute(cli, &mut stdout, color).await
}

/// Runs a parsed command line, writing results to `out` (tests pass a buffer) without colours.
pub async fn run_with_output(cli: Cli, out: &mut (dyn Write + Send)) -> anyhow::Result<()> {
    execute(cli, out, false).await
}

async fn execute(cli: Cli, out: &mut (dyn Write + Send), color: bool) -> anyhow::Result<()> {
    let context = Context::new(cli.global, color);
    match cli.command {
        Command::Subscriptions(command) => subscriptions::run(&context, command, out).await?,
        Command::Ingest(args) => ingest::run(&context, args, out).await?,
        Command::Deliveries(command) => deliveries::run(&context, command, out).await?,
        Command::Attempts(args) => deliveries::run_attempts(&context, args, out).await?,
        Command::Watch(args) => watch::run(&context, args, out).await?,
        Command::Listen(args) => listen::run(&context, args, out).await?,
        Command::Bench(args) => bench::run(&context, args, out).await?,
    }
    Ok(())
}

/// Runs a parsed command line on a fresh runtime and turns the outcome into an exit code: 0 on
/// success, 1 after printing `error: <message>` on standard error.
pub fn main_entry(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that stops early (`whctl … | head`) is not a failure of the command.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_message(&error));
            ExitCode::FAILURE
        }
    }
}

/// Joins an error and its causes with `: ` on one line, e.g.
/// `cannot connect to whd at http://127.0.0.1:50051: transport error: connection refused`.
///
/// Some layers repeat their source's message as their own; a cause that reads exactly like the one
/// before it is skipped so the line says everything once.
pub fn error_message(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "whctl",
            "subscriptions",
            "list",
            "-o",
            "json",
            "--server",
            "http://h:1",
        ])
        .unwrap();

        assert_eq!(cli.global.output, OutputFormat::Json);
        assert_eq!(cli.global.server, "http://h:1");
    }

    #[test]
    fn update_without_any_change_is_rejected_by_the_parser() {
        let error = Cli::try_parse_from(["whctl", "subscriptions", "update", "sub_1"]).unwrap_err();

        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn attempts_limit_defaults_to_twenty() {
        let cli = Cli::try_parse_from(["whctl", "attempts", "sub_1"]).unwrap();

        let Command::Attempts(args) = cli.command else {
            panic!("parsed {:?}", cli.command)
        };
        assert_eq!(args.limit, 20);
    }

    #[test]
    fn error_message_joins_causes_and_skips_repeats() {
        let root = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error = anyhow::Error::new(root)
            .context("tcp connect error")
            .context("tcp connect error")
            .context("cannot connect");

        assert_eq!(
            error_message(&error),
            "cannot connect: tcp connect error: connection refused"
        );
    }
}
