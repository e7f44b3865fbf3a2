//! One delivery attempt end to end: look up the subscription, sign, POST the original bytes, read a
//! capped part of the response, classify the result, and record it with the fencing token of the claim.
//! The whole exchange, body included, runs under the attempt timeout, so a target that trickles or
//! never answers costs at most that long.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};

use super::client::DeliveryClient;
use super::retry::RetryPolicy;
use super::signer;
use super::ssrf::{TargetPolicy, is_blocked};
use crate::domain::AttemptOutcome;
use crate::store::{AttemptRecord, ClaimedTask, Millis, SubscriptionRecord, now_millis};

/// Bytes of a response body read for the attempt log; the rest is never read.
pub const RESPONSE_SNIPPET_LIMIT: usize = 512;

/// Sent as `user-agent` on every attempt.
pub const USER_AGENT_VALUE: &str = concat!("whd/", env!("CARGO_PKG_VERSION"));

/// What the request came to, before the retry policy is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// The response status, when a response came.
    pub http_status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// Whether trying again could help (false for e.g. a deleted subscription).
    pub retryable: bool,
}

impl AttemptResult {
    /// Whether the target accepted the webhook.
    pub fn is_success(&self) -> bool {
        self.error.is_none()
            && self
                .http_status
                .is_some_and(|status| (200..300).contains(&status))
    }

    /// A failure that no retry can fix.
    pub fn final_failure(error: impl Into<String>) -> Self {
        AttemptResult {
            http_status: None,
            error: Some(error.into()),
            retryable: false,
        }
    }

    fn retryable_failure(http_status: Option<u16>, error: String) -> Self {
        AttemptResult {
            http_status,
            error: Some(error),
            retryable: true,
        }
    }
}

/// What an attempt needs besides the task.
#[derive(Debug, Clone)]
pub struct AttemptContext {
    /// The pooled client.
    pub client: DeliveryClient,
    /// When to try again.
    pub retry: Arc<RetryPolicy>,
    /// Limit of one attempt.
    pub timeout: Duration,
    /// Which addresses may be reached.
    pub policy: Arc<TargetPolicy>,
    /// This node's name, recorded with each attempt.
    pub node_id: Arc<str>,
}

/// Makes one attempt of `task` to `subscription` (`None` when it was deleted) and returns the record
/// to commit.
pub async fn run(
    context: &AttemptContext,
    task: &ClaimedTask,
    subscription: Option<&SubscriptionRecord>,
) -> AttemptRecord {
    let attempt_number = task.attempts_made + 1;
    let attempt_time = now_millis();
    let started = Instant::now();
    let (target_url, result) = match subscription {
        Some(subscription) => {
            let result = send(context, task, subscription, attempt_time).await;
            (subscription.target_url.as_str().to_owned(), result)
        }
        None => (
            String::new(),
            AttemptResult::final_failure(crate::store::SUBSCRIPTION_DELETED),
        ),
    };
    let duration = started.elapsed();

    let (outcome, retry_after) = if result.is_success() {
        (AttemptOutcome::Success, None)
    } else {
        match context
            .retry
            .delay_after(attempt_number)
            .filter(|_| result.retryable)
        {
            Some(delay) => (AttemptOutcome::FailedAttempt, Some(delay)),
            None => (AttemptOutcome::Failure, None),
        }
    };
    AttemptRecord {
        delivery_id: task.delivery_id.clone(),
        subscription_id: task.subscription_id.clone(),
        event_type: task.event_type.clone(),
        lease_token: task.lease_token,
        attempt_number,
        target_url,
        attempt_time,
        outcome,
        http_status: result.http_status,
        error: result.error,
        duration,
        node_id: context.node_id.clone(),
        retry_after,
    }
}

async fn send(
    context: &AttemptContext,
    task: &ClaimedTask,
    subscription: &SubscriptionRecord,
    attempt_time: Millis,
) -> AttemptResult {
    // Literal IP targets are not resolved, so the guarded resolver never sees them: check here. The
    // URL may predate the current policy, so this is checked on every attempt, not only on create.
    if let Some(address) = subscription.target_url.literal_ip()
        && let Err(refusal) = context.policy.check(address)
    {
        return AttemptResult::final_failure(refusal.to_string());
    }
    let request = match build_request(task, subscription, attempt_time) {
        Ok(request) => request,
        Err(error) => {
            return AttemptResult::final_failure(format!("could not build the request: {error}"));
        }
    };
    let exchange = async {
        let response = context.client.request(request).await.map_err(|error| {
            // A refusal by the address policy would recur on every retry: fail for good.
            if is_blocked(&error) {
                AttemptResult::final_failure(describe_error(&error))
            } else {
                AttemptResult::retryable_failure(None, describe_error(&error))
            }
        })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(AttemptResult {
                http_status: Some(status),
                error: None,
                retryable: true,
            });
        }
        // Keep a little of the body for the log: it usually says why the target refused.
        let snippet = read_snippet(response.into_body()).await;
        let error = if snippet.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {snippet}")
        };
        Ok(AttemptResult::retryable_failure(Some(status), error))
    };
    match tokio::time::timeout(context.timeout, exchange).await {
        Ok(Ok(result)) | Ok(Err(result)) => result,
        Err(_) => AttemptResult::retryable_failure(
            None,
            format!(
                "timed out after {}",
                humantime::format_duration(context.timeout)
            ),
        ),
    }
}

fn build_request(
    task: &ClaimedTask,
    subscription: &SubscriptionRecord,
    attempt_time: Millis,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let timestamp = attempt_time / 1000;
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(subscription.target_url.uri().clone())
        .header(HOST, subscription.target_url.host_header().clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
        .header("webhook-id", task.delivery_id.as_str())
        .header("webhook-timestamp", timestamp);
    if let Some(event_type) = &task.event_type {
        builder = builder.header("webhook-event-type", event_type.as_str());
    }
    let secrets = signing_secrets(subscription, attempt_time);
    if !secrets.is_empty() {
        let signature =
            signer::signature_header(secrets, task.delivery_id.as_str(), timestamp, &task.payload);
        builder = builder.header("webhook-signature", signature);
    }
    builder.body(Full::new(task.payload.clone()))
}

/// The secrets to sign with: the current one, plus the previous one while its grace period lasts.
fn signing_secrets(
    subscription: &SubscriptionRecord,
    now: Millis,
) -> Vec<&crate::domain::SigningSecret> {
    let mut secrets: Vec<_> = subscription.secret.iter().collect();
    if subscription
        .previous_secret_until
        .is_some_and(|until| now < until)
    {
        secrets.extend(subscription.previous_secret.iter());
    }
    secrets
}

async fn read_snippet(mut body: hyper::body::Incoming) -> String {
    let mut bytes = Vec::with_capacity(RESPONSE_SNIPPET_LIMIT);
    while bytes.len() < RESPONSE_SNIPPET_LIMIT {
        let Some(Ok(frame)) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame.into_data() {
            let room = RESPONSE_SNIPPET_LIMIT - bytes.len();
            bytes.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    text.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_owned()
}

/// One line from an error and its causes, e.g. `client error (Connect): tcp connect error: Connection refused`.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
