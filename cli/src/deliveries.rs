//! `whctl deliveries get ID` and `whctl attempts SUBSCRIPTION_ID`: a delivery's status and the attempt log.

use std::io::Write;

use clap::{Args, Subcommand};
use whd_sdk::{
    Delivery, DeliveryAttempt, ListDeliveryAttemptsRequest, ListDeliveryAttemptsResponse,
};

use crate::Context;
use crate::error::CliError;
use crate::output::{self, OutputFormat, Table};

/// Subcommands of `whctl deliveries`.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Print a delivery's status and every attempt, oldest first.
    Get {
        /// Delivery id, as printed by `whctl ingest`.
        id: String,
    },
}

/// Arguments of `whctl attempts`.
#[derive(Debug, Args)]
pub struct AttemptsArgs {
    /// Subscription whose attempts to list (`sub_…`).
    pub subscription_id: String,
    /// At most this many attempts (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Continue from the page token printed by a previous listing. Default: the newest attempts.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

/// Runs one `deliveries` subcommand.
pub(crate) async fn run(
    context: &Context,
    command: DeliveriesCommand,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let text = match command {
        DeliveriesCommand::Get { id } => {
            let delivery = context.client().await?.get_delivery(id).await?;
            match context.output {
                OutputFormat::Json => output::json(&delivery)?,
                OutputFormat::Table => render_delivery(&delivery),
            }
        }
    };
    output::emit(out, &text)
}

/// Lists a subscription's attempts, newest first.
pub(crate) async fn run_attempts(
    context: &Context,
    args: AttemptsArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let request = ListDeliveryAttemptsRequest {
        subscription_id: args.subscription_id,
        // `--limit` is capped at 1000 by clap, so it always fits.
        page_size: i32::try_from(args.limit).unwrap_or(i32::MAX),
        page_token: args.page_token.unwrap_or_default(),
    };
    let response = context
        .client()
        .await?
        .list_delivery_attempts(request)
        .await?;
    let text = match context.output {
        OutputFormat::Json => output::json(&response)?,
        OutputFormat::Table => render_attempt_list(&response),
    };
    output::emit(out, &text)
}

/// Which columns an attempt table has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttemptColumns {
    /// Attempts of one delivery: the delivery id would repeat on every row, so it is left out.
    OneDelivery,
    /// Attempts of many deliveries: each row names its delivery.
    ManyDeliveries,
}

/// Renders attempts as a table, in the order given.
pub(crate) fn attempts_table(attempts: &[DeliveryAttempt], columns: AttemptColumns) -> String {
    let header = match columns {
        AttemptColumns::OneDelivery => vec!["#", "TIME", "OUTCOME", "HTTP", "DURATION", "ERROR"],
        AttemptColumns::ManyDeliveries => vec![
            "TIME", "DELIVERY", "#", "OUTCOME", "HTTP", "DURATION", "ERROR",
        ],
    };
    let mut table = Table::new(header);
    for attempt in attempts {
        let number = attempt.attempt_number.to_string();
        let time = output::timestamp(attempt.attempt_time.as_ref());
        let outcome = output::attempt_outcome(attempt.outcome);
        let http_status = attempt
            .http_status
            .map_or_else(|| output::NONE.to_owned(), |status| status.to_string());
        let duration = output::duration_ms(attempt.duration.as_ref());
        let error = output::or_none(&attempt.error);
        table.push_row(match columns {
            AttemptColumns::OneDelivery => {
                vec![number, time, outcome, http_status, duration, error]
            }
            AttemptColumns::ManyDeliveries => {
                vec![
                    time,
                    attempt.delivery_id.clone(),
                    number,
                    outcome,
                    http_status,
                    duration,
                    error,
                ]
            }
        });
    }
    table.render()
}

fn render_delivery(delivery: &Delivery) -> String {
    let mut text = output::fields(&[
        ("ID", delivery.id.clone()),
        ("Subscription", delivery.subscription_id.clone()),
        ("Event type", output::or_none(&delivery.event_type)),
        ("Status", output::delivery_status(delivery.status)),
        ("Attempts", delivery.attempt_count.to_string()),
        ("Created", output::timestamp(delivery.create_time.as_ref())),
        (
            "Next attempt",
            output::timestamp(delivery.next_attempt_time.as_ref()),
        ),
    ]);
    text.push('\n');
    if delivery.attempts.is_empty() {
        text.push_str("no attempts yet\n");
    } else {
        text.push_str(&attempts_table(
            &delivery.attempts,
            AttemptColumns::OneDelivery,
        ));
    }
    text
}

fn render_attempt_list(response: &ListDeliveryAttemptsResponse) -> String {
    if response.attempts.is_empty() {
        return "no delivery attempts\n".to_owned();
    }
    let mut text = attempts_table(&response.attempts, AttemptColumns::ManyDeliveries);
    if !response.next_page_token.is_empty() {
        text.push_str(&format!(
            "\nmore: --page-token {}\n",
            response.next_page_token
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use whd_sdk::pbjson_types::{Duration, Timestamp};
    use whd_sdk::{AttemptOutcome, DeliveryStatus};

    use super::*;

    fn failed_attempt() -> DeliveryAttempt {
        DeliveryAttempt {
            delivery_id: "dlv_1".into(),
            subscription_id: "sub_1".into(),
            target_url: "http://127.0.0.1:9/hook".into(),
            attempt_time: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            attempt_number: 2,
            outcome: AttemptOutcome::FailedAttempt as i32,
            http_status: Some(503),
            error: "target answered 503".into(),
            duration: Some(Duration {
                seconds: 0,
                nanos: 42_000_000,
            }),
            node_id: "node-a".into(),
        }
    }

    #[test]
    fn attempt_row_shows_time_delivery_number_outcome_status_duration_and_error() {
        let text = attempts_table(&[failed_attempt()], AttemptColumns::ManyDeliveries);

        assert_eq!(
            text,
            "TIME                      DELIVERY  #  OUTCOME         HTTP  DURATION  ERROR\n\
             2023-11-14T22:13:20.000Z  dlv_1     2  FAILED_ATTEMPT  503   42 ms     target answered 503\n"
        );
    }

    #[test]
    fn attempt_without_response_shows_dashes() {
        let attempt = DeliveryAttempt {
            http_status: None,
            duration: None,
            error: String::new(),
            outcome: AttemptOutcome::Success as i32,
            ..failed_attempt()
        };

        let text = attempts_table(&[attempt], AttemptColumns::OneDelivery);

        assert_eq!(
            text,
            "#  TIME                      OUTCOME  HTTP  DURATION  ERROR\n\
             2  2023-11-14T22:13:20.000Z  SUCCESS  -     -         -\n"
        );
    }

    #[test]
    fn delivery_view_lists_status_then_attempts() {
        let delivery = Delivery {
            id: "dlv_1".into(),
            subscription_id: "sub_1".into(),
            status: DeliveryStatus::Pending as i32,
            attempts: vec![failed_attempt()],
            attempt_count: 1,
            next_attempt_time: Some(Timestamp {
                seconds: 1_700_000_060,
                nanos: 0,
            }),
            ..Delivery::default()
        };

        let text = render_delivery(&delivery);

        assert!(text.contains("Status        PENDING\n"), "{text}");
        assert!(
            text.contains("Next attempt  2023-11-14T22:14:20.000Z\n"),
            "{text}"
        );
        assert!(text.contains("Event type    -\n"), "{text}");
        assert!(text.contains("FAILED_ATTEMPT"), "{text}");
    }
}
