//! `whctl listen`: a local webhook receiver that prints every request it gets.
//!
//! An HTTP/1 and HTTP/2 server runs in-process on `--bind`:`--port`. Each request under `--path` is
//! handed to the printing loop, which shows its method, path, `webhook-*` and `content-type`
//! headers and body (re-indented when it is JSON, as sent otherwise), checks its Standard Webhooks
//! signature when `--secret` is given, and answers `--status`. Requests outside `--path` get 404 and
//! are neither printed nor counted.
//!
//! With `--count N` the receiver stops after N webhooks: it stops accepting, lets in-flight requests
//! finish their responses (bounded by [`DRAIN_TIMEOUT`]) and returns.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use anstyle::{AnsiColor, Style};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Context;
use crate::error::CliError;
use crate::output::{self, OutputFormat};
use crate::verify::{self, Secret, SignatureHeaders};

/// Bodies larger than this are refused with 413: more than any webhook a person wants printed.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long in-flight requests may take to finish once the receiver stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Arguments of `whctl listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Port to listen on (0 picks a free one, printed at start).
    #[arg(long, value_name = "PORT", default_value_t = 9000)]
    pub port: u16,
    /// Address to listen on; loopback by default, so nothing outside this machine can reach it.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Standard Webhooks secret (`whsec_…`) to verify `webhook-signature` with. Default: no check.
    #[arg(long, value_name = "whsec_…")]
    pub secret: Option<String>,
    /// HTTP status to answer every webhook with (100 to 599).
    #[arg(long, value_name = "CODE", default_value_t = 200, value_parser = clap::value_parser!(u16).range(100..=599))]
    pub status: u16,
    /// Only requests to this path (or below it) are webhooks; others get 404.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub path: String,
    /// Exit after printing this many webhooks. Default: run until interrupted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// One received webhook, as handed from a connection to the printing loop.
#[derive(Debug)]
pub(crate) struct Webhook {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Header names (lowercase) and values, in arrival order; repeated names appear repeatedly.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Bytes,
}

impl Webhook {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The outcome of the signature check of one webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SignatureCheck {
    /// No `--secret` was given.
    Unchecked,
    Valid,
    Invalid(verify::Invalid),
}

/// Serves until `--count` webhooks have been printed (or forever).
pub(crate) async fn run(
    context: &Context,
    args: ListenArgs,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let secret = args
        .secret
        .as_deref()
        .map(Secret::parse)
        .transpose()
        .map_err(|why| CliError::Usage(format!("--secret {why}")))?;
    if !args.path.starts_with('/') {
        return Err(CliError::Usage(format!(
            "--path {:?} must start with /",
            args.path
        )));
    }
    let status = StatusCode::from_u16(args.status)
        .map_err(|_| CliError::Usage(format!("--status {} is not an HTTP status", args.status)))?;
    let address = SocketAddr::new(args.bind, args.port);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| CliError::Listen { address, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| CliError::Listen { address, source })?;
    // Status goes to standard error so that standard output holds only webhooks (one JSON per line
    // with `-o json`).
    eprintln!(
        "listening on http://{local}{}, answering {}{}",
        args.path,
        status.as_u16(),
        if secret.is_some() {
            ", verifying signatures"
        } else {
            ""
        }
    );

    let (sender, mut webhooks) = mpsc::channel(64);
    let stop = CancellationToken::new();
    // Stops the server however this function returns, e.g. when standard output is closed.
    let _stop_on_return = stop.clone().drop_guard();
    let server = tokio::spawn(serve(
        listener,
        Route {
            path: args.path,
            status,
            webhooks: sender,
        },
        stop.clone(),
    ));

    let mut printed: u64 = 0;
    while let Some((webhook, printed_signal)) = webhooks.recv().await {
        let check = match &secret {
            None => SignatureCheck::Unchecked,
            Some(secret) => check_signature(secret, &webhook, unix_now()),
        };
        let text = match context.output {
            OutputFormat::Json => render_json(&webhook, &check)?,
            OutputFormat::Table => render_text(&webhook, &check, context.color),
        };
        output::emit(out, &text)?;
        // The handler answers once the webhook is printed; a closed handler only means the sender
        // went away.
        let _ = printed_signal.send(());
        printed += 1;
        if args.count.is_some_and(|count| printed >= count) {
            break;
        }
    }
    // Dropped first: handlers still waiting for their webhook to be printed then answer 503 at once.
    drop(webhooks);
    stop.cancel();
    // The server task only ends by returning; a panic in it is a bug worth surfacing.
    server.await.expect("the listen server task does not panic");
    Ok(())
}

/// What the request handler needs.
#[derive(Clone, Debug)]
struct Route {
    /// `--path`.
    path: String,
    /// `--status`.
    status: StatusCode,
    /// To the printing loop; the reply tells the handler the webhook was printed.
    webhooks: mpsc::Sender<(Webhook, oneshot::Sender<()>)>,
}

/// Accepts connections until `stop`, then lets open ones finish their in-flight requests.
async fn serve(listener: TcpListener, route: Route, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Per-connection failures (e.g. the peer reset before accept) leave the listener usable.
                Err(_) => continue,
            },
        };
        let route = route.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let handler = service_fn(move |request| handle(route.clone(), request));
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), handler);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        // Reap finished connections so that a long-running receiver does not accumulate them.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        connections.abort_all();
    }
}

async fn handle(
    route: Route,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    if !under_path(parts.uri.path(), &route.path) {
        return Ok(answer(StatusCode::NOT_FOUND, "not a webhook path\n"));
    }
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large or broken\n",
            ));
        }
    };
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let webhook = Webhook {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string),
        headers,
        body,
    };
    let (printed, printed_signal) = oneshot::channel();
    let delivered = route.webhooks.send((webhook, printed)).await.is_ok();
    // Answer only once printed, so that a sender never sees success for a webhook nobody saw; after
    // `--count` the loop is gone and the sender is told to try again later.
    if delivered && printed_signal.await.is_ok() {
        Ok(answer(route.status, ""))
    } else {
        Ok(answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "receiver is shutting down\n",
        ))
    }
}

fn answer(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

/// Whether `path` is `prefix` or below it, by whole segments (`/hooks` covers `/hooks/a`, not
/// `/hooksx`); `/` covers everything.
pub(crate) fn under_path(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

pub(crate) fn check_signature(secret: &Secret, webhook: &Webhook, now: i64) -> SignatureCheck {
    let headers = SignatureHeaders {
        id: webhook.header("webhook-id"),
        timestamp: webhook.header("webhook-timestamp"),
        signature: webhook.header("webhook-signature"),
    };
    match verify::verify(secret, headers, &webhook.body, now) {
        Ok(()) => SignatureCheck::Valid,
        Err(why) => SignatureCheck::Invalid(why),
    }
}

const REQUEST_STYLE: Style = Style::new().bold();
const HEADER_NAME_STYLE: Style = Style::new().dimmed();
const VALID_STYLE: Style = AnsiColor::Green.on_default();
const INVALID_STYLE: Style = AnsiColor::Red.on_default().bold();

fn paint(text: &str, style: Style, color: bool) -> String {
    if color {
        format!("{}{text}{}", style.render(), style.render_reset())
    } else {
        text.to_owned()
    }
}

/// Whether a header is shown in text output: the Standard Webhooks headers and the content type.
fn is_shown_header(name: &str) -> bool {
    name.starts_with("webhook-") || name == "content-type"
}

/// Renders a webhook for people: request line, selected headers, signature verdict, body, blank line.
pub(crate) fn render_text(webhook: &Webhook, check: &SignatureCheck, color: bool) -> String {
    let received = humantime::format_rfc3339_millis(SystemTime::now());
    let mut text = format!(
        "{}  {}\n",
        paint(
            &format!("{} {}", webhook.method, webhook.path),
            REQUEST_STYLE,
            color
        ),
        received
    );
    let mut shown: Vec<&(String, String)> = webhook
        .headers
        .iter()
        .filter(|(name, _)| is_shown_header(name))
        .collect();
    // Sorted so that the same webhook always prints the same way.
    shown.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in shown {
        text.push_str(&format!(
            "{} {value}\n",
            paint(&format!("{name}:"), HEADER_NAME_STYLE, color)
        ));
    }
    match check {
        SignatureCheck::Unchecked => {}
        SignatureCheck::Valid => {
            text.push_str(&format!(
                "signature: {}\n",
                paint("valid", VALID_STYLE, color)
            ));
        }
        SignatureCheck::Invalid(why) => {
            let verdict = format!("INVALID ({why})");
            text.push_str(&format!(
                "signature: {}\n",
                paint(&verdict, INVALID_STYLE, color)
            ));
        }
    }
    let body = match std::str::from_utf8(&webhook.body) {
        Ok(body) if is_json(body) => reformat_json(body, Some("  ")),
        _ => String::from_utf8_lossy(&webhook.body).into_owned(),
    };
    text.push_str(&body);
    if !body.ends_with('\n') {
        text.push('\n');
    }
    text.push('\n');
    text
}

/// Renders a webhook as one compact JSON object: method, path, every header, the body (as JSON when
/// it is JSON, as a string otherwise) and the signature verdict.
pub(crate) fn render_json(webhook: &Webhook, check: &SignatureCheck) -> Result<String, CliError> {
    let mut headers: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in &webhook.headers {
        headers
            .entry(name)
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    // The body is spliced in as re-formatted text rather than through `serde_json::Value`, which
    // would sort its keys: the sender's key order is part of what a person wants to see.
    let body = match std::str::from_utf8(&webhook.body) {
        Ok(body) if is_json(body) => reformat_json(body, None),
        _ => serde_json::to_string(&String::from_utf8_lossy(&webhook.body))?,
    };
    let (signature, signature_error) = match check {
        SignatureCheck::Unchecked => ("unchecked", None),
        SignatureCheck::Valid => ("valid", None),
        SignatureCheck::Invalid(why) => ("invalid", Some(why.to_string())),
    };
    let mut line = format!(
        "{{\"method\":{},\"path\":{},\"headers\":{},\"body\":{body},\"signature\":{}",
        serde_json::to_string(&webhook.method)?,
        serde_json::to_string(&webhook.path)?,
        serde_json::to_string(&headers)?,
        serde_json::to_string(signature)?,
    );
    if let Some(why) = signature_error {
        line.push_str(&format!(
            ",\"signature_error\":{}",
            serde_json::to_string(&why)?
        ));
    }
    line.push_str("}\n");
    Ok(line)
}

fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Re-lays out valid JSON text without reordering anything: indented by `indent` per level, or
/// compact when `indent` is `None`. String contents are copied untouched.
pub(crate) fn reformat_json(json: &str, indent: Option<&str>) -> String {
    let mut text = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = json.chars().peekable();
    let newline = |text: &mut String, depth: usize| {
        if let Some(indent) = indent {
            text.push('\n');
            for _ in 0..depth {
                text.push_str(indent);
            }
        }
    };
    while let Some(c) = chars.next() {
        if in_string {
            text.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                text.push(c);
            }
            '{' | '[' => {
                text.push(c);
                // Skip whitespace to see whether the container is empty: `{}` stays on one line.
                while chars.peek().is_some_and(|next| next.is_whitespace()) {
                    chars.next();
                }
                if matches!(chars.peek(), Some('}' | ']')) {
                    if let Some(close) = chars.next() {
                        text.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut text, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut text, depth);
                text.push(c);
            }
            ',' => {
                text.push(c);
                newline(&mut text, depth);
            }
            ':' => {
                text.push(':');
                if indent.is_some() {
                    text.push(' ');
                }
            }
            c if c.is_whitespace() => {}
            c => text.push(c),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(body: &str) -> Webhook {
        Webhook {
            method: "POST".into(),
            path: "/hook".into(),
            headers: vec![
                ("user-agent".into(), "whd/0.1.0".into()),
                ("webhook-timestamp".into(), "1649367553".into()),
                ("content-type".into(), "application/json".into()),
                (
                    "webhook-id".into(),
                    "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk".into(),
                ),
                (
                    "webhook-signature".into(),
                    "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=".into(),
                ),
            ],
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    const SIGNED_BODY: &str = r#"{"email":"test@example.com","username":"test_user"}"#;

    #[test]
    fn json_is_reindented_in_the_order_sent() {
        let body = r#"{"z": 1, "a": [1, {"b": "x, y: {z}"}], "e": {}, "q": "say \"hi\""}"#;

        assert_eq!(
            reformat_json(body, Some("  ")),
            "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    {\n      \"b\": \"x, y: {z}\"\n    }\n  ],\n  \
             \"e\": {},\n  \"q\": \"say \\\"hi\\\"\"\n}"
        );
        assert_eq!(
            reformat_json(body, None),
            r#"{"z":1,"a":[1,{"b":"x, y: {z}"}],"e":{},"q":"say \"hi\""}"#
        );
    }

    #[test]
    fn text_shows_request_webhook_headers_verdict_and_pretty_body() {
        let check = SignatureCheck::Valid;

        let text = render_text(&webhook(SIGNED_BODY), &check, false);

        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("POST /hook  "), "{text}");
        assert_eq!(
            lines[1..7],
            [
                "content-type: application/json",
                "webhook-id: msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                "webhook-signature: v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
                "webhook-timestamp: 1649367553",
                "signature: valid",
                "{",
            ]
        );
        assert!(!text.contains("user-agent"), "{text}");
        assert!(text.ends_with("}\n\n"), "{text}");
    }

    #[test]
    fn text_prints_a_body_that_is_not_json_as_sent() {
        let check = SignatureCheck::Invalid(verify::Invalid::Mismatch);

        let text = render_text(&webhook("plain {text"), &check, false);

        assert!(
            text.contains("signature: INVALID (no signature matches)\n"),
            "{text}"
        );
        assert!(text.ends_with("plain {text\n\n"), "{text}");
    }

    #[test]
    fn json_line_has_headers_body_and_verdict() {
        let line = render_json(&webhook(SIGNED_BODY), &SignatureCheck::Valid).unwrap();

        assert_eq!(line.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["signature"], "valid");
        assert_eq!(value["body"]["username"], "test_user");
        assert_eq!(value["headers"]["user-agent"], "whd/0.1.0");
        assert_eq!(value["method"], "POST");
        assert!(value.get("signature_error").is_none());
    }

    #[test]
    fn json_line_carries_a_non_json_body_as_a_string_and_the_reason_for_invalid() {
        let check = SignatureCheck::Invalid(verify::Invalid::MissingHeader("webhook-id"));

        let line = render_json(&webhook("not json\n"), &check).unwrap();

        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["body"], "not json\n");
        assert_eq!(value["signature"], "invalid");
        assert_eq!(value["signature_error"], "missing webhook-id header");
    }

    #[test]
    fn signature_of_the_reference_vector_checks_out_at_its_time() {
        let secret = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();

        assert_eq!(
            check_signature(&secret, &webhook(SIGNED_BODY), 1_649_367_553),
            SignatureCheck::Valid
        );
        assert!(matches!(
            check_signature(&secret, &webhook(SIGNED_BODY), 1_649_367_553 + 3600),
            SignatureCheck::Invalid(verify::Invalid::StaleTimestamp { .. })
        ));
    }

    #[test]
    fn paths_match_by_whole_segments() {
        assert!(under_path("/anything/at/all", "/"));
        assert!(under_path("/hooks", "/hooks"));
        assert!(under_path("/hooks/a", "/hooks/"));
        assert!(!under_path("/hooksx", "/hooks"));
        assert!(!under_path("/other", "/hooks"));
    }
}
