//! `whctl ingest SUBSCRIPTION_ID <JSON | @file | ->`: post one webhook to the ingest endpoint.
//!
//! The body is sent as given; the server validates it, so its messages are the ones users see.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use tokio::io::AsyncReadExt;
use whd_sdk::IngestOptions;

use crate::Context;
use crate::error::CliError;
use crate::output::{self, OutputFormat};

/// Arguments of `whctl ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Subscription to deliver the webhook to (`sub_…`).
    pub subscription_id: String,
    /// The JSON body: the JSON itself, `@PATH` to read a file, or `-` to read standard input.
    #[arg(value_name = "JSON|@FILE|-")]
    pub body: String,
    /// Event type, sent as `X-Event-Type`. Default: none.
    #[arg(long, value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Sender's signature of the body, sent as `X-Hub-Signature-256`. Default: none.
    #[arg(long, value_name = "sha256=HEX")]
    pub signature: Option<String>,
}

/// Where the body of a webhook comes from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BodySource {
    /// `-`: everything on standard input.
    Stdin,
    /// `@path`: the contents of a file.
    File(PathBuf),
    /// Anything else: the argument itself.
    Literal(String),
}

impl BodySource {
    /// Reads the body argument: `-`, `@path` or literal JSON.
    pub(crate) fn parse(argument: &str) -> Result<Self, CliError> {
        if argument == "-" {
            return Ok(Self::Stdin);
        }
        match argument.strip_prefix('@') {
            Some("") => Err(CliError::Usage(
                "body \"@\" names no file: use @PATH, - for standard input, or the JSON itself"
                    .into(),
            )),
            Some(path) => Ok(Self::File(PathBuf::from(path))),
            None => Ok(Self::Literal(argument.to_owned())),
        }
    }

    /// Returns the body bytes.
    pub(crate) async fn read(self) -> Result<Vec<u8>, CliError> {
        match self {
            Self::Literal(text) => Ok(text.into_bytes()),
            Self::File(path) => tokio::fs::read(&path)
                .await
                .map_err(|source| CliError::Read {
                    what: format!("file {}", path.display()),
                    source,
                }),
            Self::Stdin => {
                let mut body = Vec::new();
                tokio::io::stdin()
                    .read_to_end(&mut body)
                    .await
                    .map_err(|source| CliError::Read {
                        what: "standard input".into(),
                        source,
                    })?;
                Ok(body)
            }
        }
    }
}

/// Posts the webhook and prints the delivery id (or the receipt as JSON).
pub(crate) async fn run(
    context: &Context,
    args: IngestArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let body = BodySource::parse(&args.body)?.read().await?;
    let options = IngestOptions {
        event_type: args.event_type,
        signature: args.signature,
    };
    let receipt = context
        .ingest_client()?
        .ingest(&args.subscription_id, body, options)
        .await?;

    let text = match (context.output, &receipt.delivery_id) {
        (OutputFormat::Json, _) => output::json(&receipt)?,
        (OutputFormat::Table, Some(delivery_id)) => format!("{delivery_id}\n"),
        (OutputFormat::Table, None) => {
            "filtered: the subscription does not receive this event type\n".to_owned()
        }
    };
    output::emit(out, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_means_standard_input() {
        assert_eq!(BodySource::parse("-").unwrap(), BodySource::Stdin);
    }

    #[test]
    fn at_sign_names_a_file() {
        assert_eq!(
            BodySource::parse("@events/order.json").unwrap(),
            BodySource::File("events/order.json".into())
        );
    }

    #[test]
    fn anything_else_is_the_json_itself() {
        assert_eq!(
            BodySource::parse(r#"{"a":1}"#).unwrap(),
            BodySource::Literal(r#"{"a":1}"#.into())
        );
    }

    #[test]
    fn bare_at_sign_is_a_usage_error() {
        assert!(matches!(BodySource::parse("@"), Err(CliError::Usage(_))));
    }

    #[tokio::test]
    async fn file_body_is_read_verbatim() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"{\"order\": 42}\n").unwrap();
        let argument = format!("@{}", file.path().display());

        let body = BodySource::parse(&argument).unwrap().read().await.unwrap();

        assert_eq!(body, b"{\"order\": 42}\n");
    }

    #[tokio::test]
    async fn missing_file_names_the_path() {
        let error = BodySource::parse("@/nonexistent/body.json")
            .unwrap()
            .read()
            .await
            .unwrap_err();

        assert_eq!(error.to_string(), "cannot read file /nonexistent/body.json");
    }
}
