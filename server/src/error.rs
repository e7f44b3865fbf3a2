//! The error-code taxonomy shared by every interface, and its single mapping to gRPC and HTTP.
//!
//! Components keep their own error enums (`StoreError`, `ConfigError`, …); what reaches a client is a
//! [`ServiceError`]: an [`ErrorCode`] plus a message that is safe to show. Internal causes are logged
//! once where they are converted, never sent.

use std::fmt;

/// What kind of failure a client sees, independent of the protocol it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or breaks a rule; the message names the field and the rule.
    InvalidArgument,
    /// The named resource does not exist.
    NotFound,
    /// The resource exists already.
    AlreadyExists,
    /// No valid credentials (API token, request signature).
    Unauthenticated,
    /// Credentials are valid but do not allow this.
    PermissionDenied,
    /// A size or rate limit was exceeded.
    ResourceExhausted,
    /// A body's media type is not accepted (HTTP only; gRPC sees `InvalidArgument`).
    UnsupportedMediaType,
    /// The HTTP method is not supported on this path (HTTP only; gRPC sees `Unimplemented`).
    MethodNotAllowed,
    /// A dependency (the database) is unreachable for now; retrying later can succeed.
    Unavailable,
    /// A bug or an unexpected failure; details are in the server log only.
    Internal,
}

impl ErrorCode {
    /// The gRPC status code for this error.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument | ErrorCode::UnsupportedMediaType => {
                tonic::Code::InvalidArgument
            }
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::MethodNotAllowed => tonic::Code::Unimplemented,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status code for this error.
    pub fn http_status(self) -> http::StatusCode {
        match self {
            ErrorCode::InvalidArgument => http::StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => http::StatusCode::NOT_FOUND,
            ErrorCode::AlreadyExists => http::StatusCode::CONFLICT,
            ErrorCode::Unauthenticated => http::StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => http::StatusCode::FORBIDDEN,
            ErrorCode::ResourceExhausted => http::StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::MethodNotAllowed => http::StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A field that failed validation, reported to gRPC clients as a `BadRequest` field violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the offending field, e.g. `subscription.target_url`.
    pub field: String,
    /// The rule it broke, e.g. `must be an absolute http or https URL`.
    pub description: String,
}

/// An error as a client sees it: a code and a message that is safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// The kind of failure.
    pub code: ErrorCode,
    /// What went wrong, in lowercase without a trailing period.
    pub message: String,
    /// For `InvalidArgument`: the field that was wrong.
    pub field: Option<FieldViolation>,
}

impl ServiceError {
    /// Builds an error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A validation failure of one field; the message reads `<field>: <rule>`.
    pub fn invalid_field(field: &str, rule: impl Into<String>) -> Self {
        let rule = rule.into();
        ServiceError {
            code: ErrorCode::InvalidArgument,
            message: format!("{field}: {rule}"),
            field: Some(FieldViolation {
                field: field.to_owned(),
                description: rule,
            }),
        }
    }

    /// A missing resource, e.g. `not_found("subscription", id)`.
    pub fn not_found(kind: &str, id: &str) -> Self {
        ServiceError::new(ErrorCode::NotFound, format!("{kind} {id} not found"))
    }

    /// An opaque internal error; the caller has logged the cause.
    pub fn internal() -> Self {
        ServiceError::new(ErrorCode::Internal, "internal error")
    }

    /// The database cannot be reached for now.
    pub fn unavailable() -> Self {
        ServiceError::new(
            ErrorCode::Unavailable,
            "the database is unavailable, retry later",
        )
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServiceError {}

impl From<ServiceError> for tonic::Status {
    fn from(error: ServiceError) -> Self {
        let code = error.code.grpc_code();
        match bad_request_details(&error) {
            Some(details) => tonic::Status::with_details(code, error.message, details),
            None => tonic::Status::new(code, error.message),
        }
    }
}

/// Encodes a `google.rpc.BadRequest` detail for a field violation, so that clients which understand
/// rich errors can point at the field. Encoded by hand with prost to avoid another dependency for
/// two message types.
fn bad_request_details(error: &ServiceError) -> Option<bytes::Bytes> {
    use prost::Message;

    #[derive(Clone, PartialEq, prost::Message)]
    struct FieldViolationProto {
        #[prost(string, tag = "1")]
        field: String,
        #[prost(string, tag = "2")]
        description: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct BadRequestProto {
        #[prost(message, repeated, tag = "1")]
        field_violations: Vec<FieldViolationProto>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct AnyProto {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct StatusProto {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
        #[prost(message, repeated, tag = "3")]
        details: Vec<AnyProto>,
    }

    let violation = error.field.as_ref()?;
    let bad_request = BadRequestProto {
        field_violations: vec![FieldViolationProto {
            field: violation.field.clone(),
            description: violation.description.clone(),
        }],
    };
    let status = StatusProto {
        code: error.code.grpc_code() as i32,
        message: error.message.clone(),
        details: vec![AnyProto {
            type_url: "type.googleapis.com/google.rpc.BadRequest".to_owned(),
            value: bad_request.encode_to_vec(),
        }],
    };
    Some(status.encode_to_vec().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_maps_to_the_expected_grpc_and_http_status() {
        let cases = [
            (
                ErrorCode::InvalidArgument,
                tonic::Code::InvalidArgument,
                400,
            ),
            (ErrorCode::NotFound, tonic::Code::NotFound, 404),
            (
                ErrorCode::Unauthenticated,
                tonic::Code::Unauthenticated,
                401,
            ),
            (
                ErrorCode::ResourceExhausted,
                tonic::Code::ResourceExhausted,
                413,
            ),
            (
                ErrorCode::UnsupportedMediaType,
                tonic::Code::InvalidArgument,
                415,
            ),
            (ErrorCode::Unavailable, tonic::Code::Unavailable, 503),
            (ErrorCode::Internal, tonic::Code::Internal, 500),
        ];
        for (code, grpc, http) in cases {
            assert_eq!(code.grpc_code(), grpc, "{code:?}");
            assert_eq!(code.http_status().as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn a_field_violation_reaches_grpc_with_its_message_and_details() {
        let status: tonic::Status = ServiceError::invalid_field(
            "subscription.target_url",
            "must be an absolute http or https URL",
        )
        .into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "subscription.target_url: must be an absolute http or https URL"
        );
        assert!(!status.details().is_empty());
    }
}
