//! Rendering responses: aligned tables and key/value blocks for people, proto3 JSON for scripts.
//!
//! Renderers build a `String` and hand it to [`emit`], so that formatting stays pure and testable and
//! all write errors surface in one place. Timestamps print as RFC 3339 UTC with milliseconds,
//! durations as whole milliseconds, enums by their short name (`DELIVERED`, not
//! `DELIVERY_STATUS_DELIVERED`), and absent values as `-`.

use std::io::Write;
use std::time::{Duration, SystemTime};

use clap::ValueEnum;
use serde::Serialize;
use whd_sdk::pbjson_types;
use whd_sdk::{AttemptOutcome, DeliveryStatus};

use crate::error::CliError;

/// How command results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned, human-readable tables.
    #[default]
    Table,
    /// The response message as proto3 JSON (one pretty-printed document).
    Json,
}

/// Shown for a value that is absent (no timestamp, no HTTP status, …).
pub(crate) const NONE: &str = "-";

/// Writes rendered output in one go.
pub(crate) fn emit(out: &mut (dyn Write + Send), text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Renders a message as pretty-printed JSON followed by a newline.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, CliError> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

/// A table with a header row whose columns are padded to their widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Starts a table with these column titles.
    pub(crate) fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
        }
    }

    /// Appends a row; line breaks inside cells become spaces so that every row stays one line.
    pub(crate) fn push_row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(
            cells.len(),
            self.header.len(),
            "row width must match the header"
        );
        self.rows
            .push(cells.iter().map(|cell| one_line(cell)).collect());
    }

    /// Renders the header and rows, columns separated by two spaces, without trailing spaces.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self
            .header
            .iter()
            .map(|title| title.chars().count())
            .collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }

        let header: Vec<String> = self.header.iter().map(|title| title.to_string()).collect();
        let mut text = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if index > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Renders `label  value` lines with the values aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (label, value) in pairs {
        let line = format!("{label:<width$}  {}", one_line(value));
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Formats a timestamp as RFC 3339 UTC with milliseconds, or `-` when unset.
pub(crate) fn timestamp(value: Option<&pbjson_types::Timestamp>) -> String {
    // The formatter only covers years 1970 to 9999; anything else is shown raw rather than panicking.
    const YEAR_10000: i64 = 253_402_300_800;
    let Some(value) = value else {
        return NONE.to_owned();
    };
    let in_range =
        (0..YEAR_10000).contains(&value.seconds) && (0..1_000_000_000).contains(&value.nanos);
    if !in_range {
        return format!("{}s {}ns since epoch", value.seconds, value.nanos);
    }
    let since_epoch = Duration::new(value.seconds.unsigned_abs(), value.nanos.unsigned_abs());
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + since_epoch).to_string()
}

/// Formats a duration in whole milliseconds (`125 ms`), or `-` when unset.
pub(crate) fn duration_ms(value: Option<&pbjson_types::Duration>) -> String {
    match value {
        None => NONE.to_owned(),
        Some(value) => {
            let millis = value
                .seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(value.nanos / 1_000_000));
            format!("{millis} ms")
        }
    }
}

/// Short name of a delivery status (`PENDING`), `UNKNOWN(n)` for values this build does not know.
pub(crate) fn delivery_status(value: i32) -> String {
    match DeliveryStatus::try_from(value) {
        Ok(status) => short_name(status.as_str_name(), "DELIVERY_STATUS_"),
        Err(_) => format!("UNKNOWN({value})"),
    }
}

/// Short name of an attempt outcome (`FAILED_ATTEMPT`), `UNKNOWN(n)` for unknown values.
pub(crate) fn attempt_outcome(value: i32) -> String {
    match AttemptOutcome::try_from(value) {
        Ok(outcome) => short_name(outcome.as_str_name(), "ATTEMPT_OUTCOME_"),
        Err(_) => format!("UNKNOWN({value})"),
    }
}

/// The value, or `-` when it is empty.
pub(crate) fn or_none(value: &str) -> String {
    if value.is_empty() {
        NONE.to_owned()
    } else {
        value.to_owned()
    }
}

/// Event types as a comma-separated list; an empty list means every type.
pub(crate) fn event_types(types: &[String]) -> String {
    if types.is_empty() {
        "(all)".to_owned()
    } else {
        types.join(", ")
    }
}

fn short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix).unwrap_or(full).to_owned()
}

fn one_line(text: &str) -> String {
    if text.contains(['\n', '\r', '\t']) {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_to_the_widest_cell_without_trailing_spaces() {
        let mut table = Table::new(vec!["ID", "NAME"]);
        table.push_row(vec!["a".into(), "first".into()]);
        table.push_row(vec!["long-id".into(), String::new()]);

        assert_eq!(table.render(), "ID       NAME\na        first\nlong-id\n");
    }

    #[test]
    fn table_cells_with_line_breaks_stay_on_one_line() {
        let mut table = Table::new(vec!["ERROR"]);
        table.push_row(vec!["connection reset\nby peer".into()]);

        assert_eq!(table.render(), "ERROR\nconnection reset by peer\n");
    }

    #[test]
    fn fields_align_values() {
        let text = fields(&[("ID", "sub_1".into()), ("Target URL", "http://x".into())]);

        assert_eq!(text, "ID          sub_1\nTarget URL  http://x\n");
    }

    #[test]
    fn timestamps_print_as_rfc3339_utc_with_milliseconds() {
        let value = pbjson_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        };

        assert_eq!(timestamp(Some(&value)), "2023-11-14T22:13:20.123Z");
        assert_eq!(timestamp(None), "-");
        assert_eq!(
            timestamp(Some(&pbjson_types::Timestamp {
                seconds: -1,
                nanos: 0
            })),
            "-1s 0ns since epoch"
        );
    }

    #[test]
    fn durations_print_in_milliseconds() {
        let value = pbjson_types::Duration {
            seconds: 1,
            nanos: 250_900_000,
        };

        assert_eq!(duration_ms(Some(&value)), "1250 ms");
        assert_eq!(duration_ms(None), "-");
    }

    #[test]
    fn enums_print_their_short_names() {
        assert_eq!(
            delivery_status(DeliveryStatus::Delivered as i32),
            "DELIVERED"
        );
        assert_eq!(
            attempt_outcome(AttemptOutcome::FailedAttempt as i32),
            "FAILED_ATTEMPT"
        );
        assert_eq!(attempt_outcome(42), "UNKNOWN(42)");
    }
}
