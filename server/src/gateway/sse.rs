//! `GET /v1/events` as Server-Sent Events: a watch stream of the service, one SSE event per
//! `DeliveryEvent` (`id: <cursor>`, `data: <DeliveryEvent JSON>`), so a browser's `EventSource`
//! resumes after a reconnect by sending the last id back as `Last-Event-ID`.
//!
//! Lag notices carry no `id:` line: per the SSE rules an event without one leaves the client's last
//! event id as it was, so a reconnect still resumes from the last delivered cursor. A comment line
//! goes out every [`KEEP_ALIVE`] so proxies keep the connection open and a vanished client is noticed
//! on the next write. The stream ends when the client goes away (hyper drops the body, which drops the
//! watch), when the service reports an error (sent as an `error` event first), or when the gateway
//! shuts down.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::routes::Body;
use crate::api::convert;
use crate::error::ServiceError;
use crate::service::WatchItem;

/// Time between keep-alive comments.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Reconnect delay suggested to `EventSource` (its default is about three seconds).
const RETRY_MILLIS: u64 = 2000;

type Items = Pin<Box<dyn Stream<Item = Result<WatchItem, ServiceError>> + Send>>;

struct EventStream {
    items: Items,
    keep_alive: Interval,
    shutdown: CancellationToken,
    /// Set once the stream has sent its last frame.
    done: bool,
}

/// A `text/event-stream` response over a watch stream.
pub(super) fn event_stream(
    items: impl Stream<Item = Result<WatchItem, ServiceError>> + Send + 'static,
    shutdown: CancellationToken,
) -> Response<Body> {
    let mut keep_alive = tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = EventStream {
        items: Box::pin(items),
        keep_alive,
        shutdown,
        done: false,
    };
    let preamble = futures::stream::once(async move {
        Ok::<_, Infallible>(Frame::data(Bytes::from(format!(
            "retry: {RETRY_MILLIS}\n\n"
        ))))
    });
    let frames = preamble.chain(futures::stream::unfold(state, next_frame));
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Reverse proxies that buffer responses would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn next_frame(
    mut state: EventStream,
) -> Option<(Result<Frame<Bytes>, Infallible>, EventStream)> {
    if state.done {
        return None;
    }
    let text = tokio::select! {
        () = state.shutdown.cancelled() => return None,
        _ = state.keep_alive.tick() => ": keep-alive\n\n".to_owned(),
        item = state.items.next() => match item {
            None => return None,
            Some(Ok(item)) => format_item(&item),
            Some(Err(error)) => {
                state.done = true;
                let data = serde_json::json!({"error": error.message});
                format!("event: error\ndata: {data}\n\n")
            }
        },
    };
    Some((Ok(Frame::data(Bytes::from(text))), state))
}

/// One SSE event: `id:` (for logged events) and a one-line JSON `data:`.
fn format_item(item: &WatchItem) -> String {
    let event = convert::watch_item(item);
    // serde_json escapes newlines inside strings, so the JSON is always a single line.
    let data = serde_json::to_string(&event).expect("a DeliveryEvent serialises");
    match item {
        WatchItem::Event(_) => format!("id: {}\ndata: {data}\n\n", event.cursor),
        WatchItem::Lagged(_) => format!("data: {data}\n\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_notices_carry_no_id_so_resumption_keeps_the_last_cursor() {
        let text = format_item(&WatchItem::Lagged(3));
        assert!(!text.contains("id:"), "{text}");
        assert!(text.starts_with("data: {"), "{text}");
        assert!(text.ends_with("}\n\n"), "{text}");
        assert!(text.contains("DELIVERY_EVENT_KIND_LAGGED"), "{text}");
    }
}
