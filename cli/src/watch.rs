//! `whctl watch`: follow delivery events live, one line each (or one JSON object per line).
//!
//! The command remembers the cursor of the last event it printed. When the stream breaks (the server
//! restarts, the connection drops) or the server ends it, it reconnects with a doubling backoff
//! ([`Backoff`]) and asks for the events after that cursor, so that nothing is missed or printed
//! twice; it gives up when the server has been unreachable for `--reconnect-for`. Before the first
//! event there is no cursor to resume from (unless `--after-cursor` was given), so a break at that
//! point resumes at the live position.
//!
//! LAGGED events are notices, not delivery events: they print a warning line and do not count
//! towards `--count`.

use std::io::Write;
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use clap::{Args, ValueEnum};
use whd_sdk::{AttemptOutcome, Code, DeliveryEvent, DeliveryEventKind, WatchDeliveriesRequest};

use crate::Context;
use crate::error::CliError;
use crate::output::{self, OutputFormat};

/// Arguments of `whctl watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only events of this subscription. Default: every subscription.
    #[arg(long = "subscription", value_name = "ID")]
    pub subscription_id: Option<String>,
    /// Only events of this delivery. Default: every delivery.
    #[arg(long = "delivery", value_name = "ID")]
    pub delivery_id: Option<String>,
    /// Only events of deliveries with this event type; repeat for several. Default: every type.
    #[arg(long = "event-type", value_name = "TYPE")]
    pub event_types: Vec<String>,
    /// Only attempts with this outcome (other events are dropped too); repeat for several. Default:
    /// every event.
    #[arg(long = "outcome", value_enum, value_name = "OUTCOME")]
    pub outcomes: Vec<OutcomeArg>,
    /// First print the logged events after this cursor, then live ones. Default: live events only.
    #[arg(long, value_name = "N")]
    pub after_cursor: Option<u64>,
    /// Exit after printing this many delivery events (LAGGED notices do not count). Default: run until
    /// interrupted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Keep trying to reconnect for this long after the stream breaks before giving up (e.g. `30s`,
    /// `5m`).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconnect_for: Duration,
}

/// An attempt outcome as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutcomeArg {
    /// The target answered 2xx.
    Success,
    /// The attempt failed and another one is scheduled.
    FailedAttempt,
    /// The attempt failed and no more will be made.
    Failure,
}

impl From<OutcomeArg> for AttemptOutcome {
    fn from(outcome: OutcomeArg) -> Self {
        match outcome {
            OutcomeArg::Success => AttemptOutcome::Success,
            OutcomeArg::FailedAttempt => AttemptOutcome::FailedAttempt,
            OutcomeArg::Failure => AttemptOutcome::Failure,
        }
    }
}

/// The reconnect delays: 250 ms, doubling up to 5 s.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// The delay before the next reconnect; each call doubles the one after, up to the maximum.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    /// Starts over after a successful connection.
    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// Follows events until `--count` is reached, the server stays unreachable for `--reconnect-for`, or
/// the server rejects the request.
pub(crate) async fn run(
    context: &Context,
    args: WatchArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let client = context.client().await?;
    let mut request = WatchDeliveriesRequest {
        subscription_id: args.subscription_id.unwrap_or_default(),
        delivery_id: args.delivery_id.unwrap_or_default(),
        event_types: args.event_types,
        outcomes: args
            .outcomes
            .into_iter()
            .map(|outcome| AttemptOutcome::from(outcome) as i32)
            .collect(),
        after_cursor: args.after_cursor,
    };
    let mut printed: u64 = 0;
    let mut backoff = Backoff::new();
    // When the current outage began; `None` while connected.
    let mut outage_since: Option<tokio::time::Instant> = None;

    loop {
        let broke_because = match client.watch_deliveries(request.clone()).await {
            Err(error) if !is_transient(&error) => return Err(error.into()),
            Err(error) => error.to_string(),
            Ok(mut stream) => {
                outage_since = None;
                backoff.reset();
                loop {
                    let event = match stream.message().await {
                        Ok(Some(event)) => event,
                        Ok(None) => break "the server ended the stream".to_owned(),
                        Err(error) if !is_transient(&error) => return Err(error.into()),
                        Err(error) => break error.to_string(),
                    };
                    if event.kind() == DeliveryEventKind::Lagged {
                        output::emit(out, &render(&event, context))?;
                        continue;
                    }
                    // The server never repeats a cursor after `after_cursor`; skipping here keeps the
                    // output free of duplicates even if a reconnect overlapped.
                    if request
                        .after_cursor
                        .is_some_and(|last| event.cursor <= last)
                    {
                        continue;
                    }
                    request.after_cursor = Some(event.cursor);
                    output::emit(out, &render(&event, context))?;
                    printed += 1;
                    if args.count.is_some_and(|count| printed >= count) {
                        return Ok(());
                    }
                }
            }
        };

        let since = *outage_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= args.reconnect_for {
            return Err(CliError::StreamLost {
                within: humantime::format_duration(args.reconnect_for).to_string(),
                last_cause: broke_because,
            });
        }
        let delay = backoff.next_delay();
        let resume = request
            .after_cursor
            .map_or_else(|| "the live position".to_owned(), |c| format!("cursor {c}"));
        eprintln!(
            "warning: watch stream interrupted ({broke_because}); reconnecting in {} from {resume}",
            humantime::format_duration(delay)
        );
        tokio::time::sleep(delay).await;
    }
}

/// Whether a failed call may succeed when repeated: the server is restarting, the connection broke.
/// Anything else (a bad filter, a missing token) would fail the same way again.
fn is_transient(error: &whd_sdk::Error) -> bool {
    match error {
        whd_sdk::Error::Transport { .. } => true,
        whd_sdk::Error::Status { code, .. } => matches!(
            code,
            Code::Unavailable
                | Code::Unknown
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::Internal
                | Code::ResourceExhausted
        ),
        _ => false,
    }
}

/// Renders one event as a line of text or compact JSON.
fn render(event: &DeliveryEvent, context: &Context) -> String {
    match context.output {
        OutputFormat::Json => {
            // Serialising a generated message cannot fail: it has no maps with non-string keys.
            let mut line = serde_json::to_string(event).expect("events serialise to JSON");
            line.push('\n');
            line
        }
        OutputFormat::Table => render_line(event, context.color),
    }
}

/// Colours of the parts of an event line.
const TIME_STYLE: Style = Style::new().dimmed();
const QUEUED_STYLE: Style = AnsiColor::Cyan.on_default();
const SUCCESS_STYLE: Style = AnsiColor::Green.on_default();
const FAILED_ATTEMPT_STYLE: Style = AnsiColor::Yellow.on_default();
const FAILURE_STYLE: Style = AnsiColor::Red.on_default().bold();
const WARNING_STYLE: Style = AnsiColor::Yellow.on_default().bold();

/// Wraps `text` in `style` when colouring.
fn paint(text: &str, style: Style, color: bool) -> String {
    if color {
        format!("{}{text}{}", style.render(), style.render_reset())
    } else {
        text.to_owned()
    }
}

/// One human-readable line: time, kind or outcome, delivery, subscription, then for attempts the
/// attempt number, HTTP status, error and next retry.
pub(crate) fn render_line(event: &DeliveryEvent, color: bool) -> String {
    if event.kind() == DeliveryEventKind::Lagged {
        let text = format!(
            "warning: this watch fell behind and skipped {} events; they are replayed from the log next",
            event.lagged_count
        );
        return format!("{}\n", paint(&text, WARNING_STYLE, color));
    }
    let time = event
        .event_time
        .as_ref()
        .or(event.attempt.as_ref().and_then(|a| a.attempt_time.as_ref()));
    let (label, style) = match (event.kind(), &event.attempt) {
        (DeliveryEventKind::Queued, _) => ("QUEUED".to_owned(), QUEUED_STYLE),
        (DeliveryEventKind::Attempt, Some(attempt)) => {
            let style = match attempt.outcome() {
                AttemptOutcome::Success => SUCCESS_STYLE,
                AttemptOutcome::FailedAttempt => FAILED_ATTEMPT_STYLE,
                _ => FAILURE_STYLE,
            };
            (output::attempt_outcome(attempt.outcome), style)
        }
        (kind, _) => (short_kind(kind.as_str_name()).to_owned(), Style::new()),
    };
    let mut parts = vec![
        paint(&output::timestamp(time), TIME_STYLE, color),
        // Padded before painting so that the escape codes do not upset the alignment.
        paint(&format!("{label:<14}"), style, color),
        event.delivery_id.clone(),
        event.subscription_id.clone(),
    ];
    if !event.event_type.is_empty() {
        parts.push(format!("type={}", event.event_type));
    }
    if let Some(attempt) = &event.attempt {
        parts.push(format!("attempt {}", attempt.attempt_number));
        if let Some(status) = attempt.http_status {
            parts.push(format!("HTTP {status}"));
        }
        if !attempt.error.is_empty() {
            parts.push(format!("error: {}", attempt.error));
        }
        if attempt.outcome() == AttemptOutcome::FailedAttempt {
            parts.push(format!(
                "next retry {}",
                output::timestamp(event.next_attempt_time.as_ref())
            ));
        }
    }
    let mut line = parts.join("  ");
    // Errors come from remote servers; keep each event on exactly one line.
    line.retain(|c| c != '\n' && c != '\r');
    line.push('\n');
    line
}

fn short_kind(full: &str) -> &str {
    full.strip_prefix("DELIVERY_EVENT_KIND_").unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use whd_sdk::pbjson_types::Timestamp;
    use whd_sdk::{DeliveryAttempt, DeliveryStatus};

    use super::*;

    fn at(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    fn queued() -> DeliveryEvent {
        DeliveryEvent {
            cursor: 7,
            kind: DeliveryEventKind::Queued as i32,
            delivery_id: "dlv_1".into(),
            subscription_id: "sub_1".into(),
            status: DeliveryStatus::Pending as i32,
            event_time: at(1_700_000_000),
            ..DeliveryEvent::default()
        }
    }

    fn failed_attempt() -> DeliveryEvent {
        DeliveryEvent {
            cursor: 8,
            kind: DeliveryEventKind::Attempt as i32,
            event_type: "order.created".into(),
            attempt: Some(DeliveryAttempt {
                attempt_number: 1,
                outcome: AttemptOutcome::FailedAttempt as i32,
                http_status: Some(500),
                error: "target answered\n500".into(),
                ..DeliveryAttempt::default()
            }),
            next_attempt_time: at(1_700_000_060),
            ..queued()
        }
    }

    #[test]
    fn queued_line_shows_time_kind_delivery_and_subscription() {
        assert_eq!(
            render_line(&queued(), false),
            "2023-11-14T22:13:20.000Z  QUEUED          dlv_1  sub_1\n"
        );
    }

    #[test]
    fn failed_attempt_line_shows_number_status_error_and_next_retry() {
        assert_eq!(
            render_line(&failed_attempt(), false),
            "2023-11-14T22:13:20.000Z  FAILED_ATTEMPT  dlv_1  sub_1  type=order.created  attempt 1  \
             HTTP 500  error: target answered500  next retry 2023-11-14T22:14:20.000Z\n"
        );
    }

    #[test]
    fn successful_attempt_line_has_no_retry() {
        let mut event = failed_attempt();
        let attempt = event.attempt.as_mut().unwrap();
        attempt.outcome = AttemptOutcome::Success as i32;
        attempt.http_status = Some(200);
        attempt.error.clear();
        event.next_attempt_time = None;

        let line = render_line(&event, false);

        assert!(line.contains("  SUCCESS         dlv_1  sub_1  "), "{line}");
        assert!(line.ends_with("attempt 1  HTTP 200\n"), "{line}");
    }

    #[test]
    fn lagged_event_prints_a_warning_with_the_count() {
        let event = DeliveryEvent {
            kind: DeliveryEventKind::Lagged as i32,
            lagged_count: 42,
            ..DeliveryEvent::default()
        };

        let line = render_line(&event, false);

        assert!(line.starts_with("warning: "), "{line}");
        assert!(line.contains("skipped 42 events"), "{line}");
    }

    #[test]
    fn colour_wraps_the_kind_in_escape_codes_only_when_asked() {
        let plain = render_line(&queued(), false);
        let coloured = render_line(&queued(), true);

        assert!(!plain.contains('\u{1b}'));
        assert!(coloured.contains('\u{1b}'));
        assert!(coloured.contains("QUEUED"));
    }

    #[test]
    fn backoff_doubles_from_250ms_up_to_5s_and_resets() {
        let mut backoff = Backoff::new();

        let delays: Vec<u64> = (0..7)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        backoff.reset();

        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn outcome_names_on_the_command_line_map_to_the_api() {
        assert_eq!(
            AttemptOutcome::from(OutcomeArg::from_str("failed-attempt", false).unwrap()),
            AttemptOutcome::FailedAttempt
        );
        assert_eq!(
            AttemptOutcome::from(OutcomeArg::from_str("failure", false).unwrap()),
            AttemptOutcome::Failure
        );
    }

    #[test]
    fn transient_errors_are_retried_and_others_are_not() {
        let status = |code| whd_sdk::Error::Status {
            code,
            message: String::new(),
        };

        assert!(is_transient(&status(Code::Unavailable)));
        assert!(is_transient(&status(Code::Unknown)));
        assert!(!is_transient(&status(Code::InvalidArgument)));
        assert!(!is_transient(&status(Code::Unauthenticated)));
    }
}
