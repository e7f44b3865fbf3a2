//! Watching deliveries: a stream of log entries that first replays what the log holds after a cursor,
//! then follows live events, with no gap and no duplicate at the seam.
//!
//! The stream subscribes to the hub *before* it reads the log, so anything committed meanwhile is in
//! one or the other; live events at or below the last cursor already sent are skipped. Watchers read
//! from the hub's bounded window: one that falls behind is sent a `Lagged` item with the number of
//! events it missed, and the stream then fills the gap from the log before going live again, so a
//! slow consumer loses nothing (unless retention purged it meanwhile) and slows nobody else.
//! Dropping the stream (a client disconnecting) releases everything at once.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::error::ServiceError;
use crate::store::{EventFilter, LoggedEvent, Store};

use super::{Service, store_error};

/// Log entries read per replay query.
const REPLAY_PAGE: u32 = 500;

/// One item of a watch stream.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// A logged event.
    Event(Arc<LoggedEvent>),
    /// The watcher fell behind and this many live events were dropped; they are replayed next.
    Lagged(u64),
}

struct Watch {
    store: Arc<dyn Store>,
    stop: CancellationToken,
    filter: EventFilter,
    live: broadcast::Receiver<Arc<LoggedEvent>>,
    /// Highest cursor sent or skipped; everything at or below it is done.
    last: i64,
    replaying: bool,
    page: VecDeque<LoggedEvent>,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<WatchItem, ServiceError>> {
        loop {
            if let Some(event) = self.page.pop_front() {
                self.last = event.cursor;
                return Some(Ok(WatchItem::Event(Arc::new(event))));
            }
            if self.replaying {
                let page = match self
                    .store
                    .events_after(self.last, &self.filter, REPLAY_PAGE)
                    .await
                {
                    Ok(page) => page,
                    Err(error) => return Some(Err(store_error(error))),
                };
                self.replaying = page.len() == REPLAY_PAGE as usize;
                self.page.extend(page);
                continue;
            }
            let received = tokio::select! {
                () = self.stop.cancelled() => return None,
                received = self.live.recv() => received,
            };
            match received {
                Ok(event) if event.cursor <= self.last => continue,
                Ok(event) => {
                    self.last = event.cursor;
                    if self.filter.matches(&event) {
                        return Some(Ok(WatchItem::Event(event)));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.replaying = true;
                    return Some(Ok(WatchItem::Lagged(missed)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Service {
    /// Streams events that pass `filter`: those logged after `after_cursor` first, when given, then
    /// live ones. Without a cursor the stream starts at the newest logged event.
    pub async fn watch(
        &self,
        filter: EventFilter,
        after_cursor: Option<i64>,
    ) -> Result<impl Stream<Item = Result<WatchItem, ServiceError>> + Send + 'static, ServiceError>
    {
        // Subscribe first: whatever commits from here on is either read from the log or received live.
        let live = self.inner.hub.subscribe();
        let store = self.inner.store.clone();
        let (last, replaying) = match after_cursor {
            Some(cursor) => (cursor, true),
            None => (store.latest_cursor().await.map_err(store_error)?, false),
        };
        let watch = Watch {
            store,
            stop: self.inner.settings.watch_stop.clone(),
            filter,
            live,
            last,
            replaying,
            page: VecDeque::new(),
        };
        Ok(futures::stream::unfold(watch, |mut watch| async move {
            let item = watch.next().await?;
            Some((item, watch))
        }))
    }
}
