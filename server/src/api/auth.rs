//! API token check for the whd services: every call must carry `authorization: Bearer <token>`.
//! Health and reflection are served without it, so that load balancers and grpcurl discovery work.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// The interceptor; with no token configured it lets every call through.
#[derive(Debug, Clone)]
pub struct RequireToken {
    expected: Option<Arc<str>>,
}

impl RequireToken {
    /// Requires `token` when it is set.
    pub fn new(token: Option<&str>) -> Self {
        RequireToken {
            expected: token.map(Arc::from),
        }
    }

    /// Checks the `authorization` value of a call.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), Status> {
        let Some(expected) = &self.expected else {
            return Ok(());
        };
        let presented = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("missing API token: send authorization: Bearer <token>")
            })?;
        // Constant-time, so the comparison does not reveal how much of a guess was right.
        if presented.as_bytes().ct_eq(expected.as_bytes()).into() {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid API token"))
        }
    }
}

impl tonic::service::Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        self.check(authorization)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_token_is_required_and_compared_exactly() {
        let auth = RequireToken::new(Some("0123456789abcdef"));
        assert!(auth.check(Some("Bearer 0123456789abcdef")).is_ok());
        for wrong in [
            None,
            Some("Bearer 0123456789abcde"),
            Some("Bearer 0123456789abcdefX"),
            Some("0123456789abcdef"),
            Some("Bearer "),
        ] {
            assert_eq!(
                auth.check(wrong).unwrap_err().code(),
                tonic::Code::Unauthenticated,
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn without_a_token_every_call_passes() {
        assert!(RequireToken::new(None).check(None).is_ok());
    }
}
