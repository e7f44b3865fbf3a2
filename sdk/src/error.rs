//! The SDK's error type: gRPC statuses, unreachable servers, rejected ingests and bad configuration.
//!
//! Every message is one lowercase line; the underlying cause, when there is one, is available through
//! [`std::error::Error::source`] rather than repeated in the message.

use tonic::Code;

/// Boxed error used as the source of HTTP failures.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a [`Client`](crate::Client) call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered a gRPC call with a non-OK status.
    #[error("{}", format_status(*code, message))]
    Status {
        /// The gRPC status code.
        code: Code,
        /// The server's message, as sent.
        message: String,
    },
    /// The gRPC server could not be reached.
    #[error("cannot connect to whd at {address}")]
    Transport {
        /// The address that was dialled.
        address: String,
        /// What went wrong while connecting.
        #[source]
        source: tonic::transport::Error,
    },
    /// The ingest endpoint answered with something other than 2xx.
    #[error("ingest rejected with HTTP {status}: {message}")]
    Ingest {
        /// The HTTP status code.
        status: u16,
        /// The `error` field of the JSON answer (or the raw body when it had none).
        message: String,
    },
    /// The ingest request failed before an answer arrived (connection refused, reset, …).
    #[error("ingest request to {url} failed")]
    Http {
        /// The URL that was posted to.
        url: String,
        /// The I/O or protocol failure.
        #[source]
        source: BoxError,
    },
    /// The ingest endpoint accepted the request but its answer could not be understood.
    #[error("unexpected ingest response: {0}")]
    InvalidResponse(String),
    /// The [`ClientConfig`](crate::ClientConfig) holds an unusable value.
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
    /// An argument of a call cannot be sent (e.g. a header value with control characters).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// Returns the gRPC status code for [`Error::Status`], `None` for every other kind of error.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// Formats a status as `NOT_FOUND: subscription sub_x not found`, on a single line.
fn format_status(code: Code, message: &str) -> String {
    let name = code_name(code);
    // Server messages are expected to be one line already; a multi-line one is folded so that the
    // error still fits the `error: …` line a command-line tool prints.
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if message.is_empty() {
        name.to_owned()
    } else {
        format!("{name}: {message}")
    }
}

/// Returns the canonical upper-case name of a gRPC code, as used in the gRPC specification.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_error_displays_code_name_and_message() {
        let error = Error::from(tonic::Status::not_found("subscription sub_x not found"));

        assert_eq!(error.to_string(), "NOT_FOUND: subscription sub_x not found");
        assert_eq!(error.code(), Some(Code::NotFound));
    }

    #[test]
    fn status_error_without_message_displays_only_the_code() {
        let error = Error::from(tonic::Status::new(Code::Unauthenticated, ""));

        assert_eq!(error.to_string(), "UNAUTHENTICATED");
    }

    #[test]
    fn multi_line_status_message_is_folded_onto_one_line() {
        let error = Error::from(tonic::Status::invalid_argument(
            "target_url: must be absolute\nsecret: too short",
        ));

        assert_eq!(
            error.to_string(),
            "INVALID_ARGUMENT: target_url: must be absolute secret: too short"
        );
    }

    #[test]
    fn ingest_error_displays_status_and_message() {
        let error = Error::Ingest {
            status: 404,
            message: "subscription not found".into(),
        };

        assert_eq!(
            error.to_string(),
            "ingest rejected with HTTP 404: subscription not found"
        );
        assert_eq!(error.code(), None);
    }

    #[test]
    fn every_code_name_is_screaming_snake_case() {
        for value in 0..=16 {
            let name = code_name(Code::from_i32(value));
            assert!(
                name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
        }
    }
}
