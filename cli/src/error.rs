//! The CLI's error type. Commands return it; [`crate::run`] turns it into the one `error: …` line.

use std::io;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// A call to the server failed; its message already names the cause.
    #[error(transparent)]
    Sdk(#[from] whd_sdk::Error),
    /// The arguments make no sense together (beyond what clap checks).
    #[error("{0}")]
    Usage(String),
    /// An input (a body file, standard input) could not be read.
    #[error("cannot read {what}")]
    Read {
        /// What was being read, e.g. `file "body.json"`.
        what: String,
        #[source]
        source: io::Error,
    },
    /// Standard output could not be written (e.g. a closed pipe).
    #[error("cannot write output")]
    Output(#[source] io::Error),
    /// `whctl watch` lost its stream and could not restore it in time.
    #[error("watch stream lost and not restored within {within}: {last_cause}")]
    StreamLost {
        /// The `--reconnect-for` limit, formatted.
        within: String,
        /// Why the last attempt failed.
        last_cause: String,
    },
    /// `whctl listen` could not bind its address.
    #[error("cannot listen on {address}")]
    Listen {
        /// The address asked for.
        address: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    /// `whctl bench` could not set up or complete its run.
    #[error("{0}")]
    Bench(String),
    /// A response could not be encoded as JSON.
    #[error("cannot encode output as JSON")]
    Json(#[from] serde_json::Error),
}
