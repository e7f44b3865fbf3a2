//! Checkpoints the write-ahead log from a connection of its own, beside the writer. SQLite's own
//! checkpoint runs inside the commit that fills the log past its threshold, on the writer's thread:
//! it copies every page the log changed since the last one into the database file and syncs it, 3–7
//! ms during which no group commit can start, many times a second under load. A passive checkpoint
//! on another connection copies the same pages while the writer goes on appending to the log.
//!
//! The log starts again from its beginning only when a write finds it wholly copied, and under load
//! commits land during every checkpoint. So the writer keeps SQLite's own checkpoint too, at a
//! multiple of this one's threshold: by then all but the last few pages are copied, its pass is
//! short, and it lets the log start over.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqliteConnection;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::CHECKPOINT_PAGES;

/// How often the checkpointer looks at how much of the log is not copied yet. Under load it copies
/// at every look, so this sets the size of its bursts of writes to the database file, which the
/// log's next sync waits behind: about 370 pages at half rate, against 900 when it looked every
/// 25 ms (measured with `whctl bench` at half rate: fewer 100 ms windows with a p99 over 5 ms in 10
/// of 12 pairs, for under 1 µs more CPU per webhook). A look is one read of a hundred bytes.
const POLL: Duration = Duration::from_millis(10);

/// The background checkpointer of one store; stops when the store closes.
#[derive(Debug, Clone)]
pub(super) struct Checkpointer {
    stop: CancellationToken,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Checkpointer {
    /// Checkpoints the log of the database file `database` from `connection` whenever
    /// [`CHECKPOINT_PAGES`] of it are not copied yet. A database without a shared-memory file (one in
    /// memory) has no log to checkpoint, and the task ends at once.
    pub(super) fn spawn(connection: SqliteConnection, database: &Path) -> Self {
        let mut shm = database.as_os_str().to_owned();
        shm.push("-shm");
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(connection, File::open(shm), stop.clone()));
        Checkpointer {
            stop,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    pub(super) async fn close(&self) {
        self.stop.cancel();
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn run(
    mut connection: SqliteConnection,
    shm: std::io::Result<File>,
    stop: CancellationToken,
) {
    if let Ok(shm) = shm {
        let mut polls = tokio::time::interval(POLL);
        polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = polls.tick() => {}
            }
            match uncopied_frames(&shm) {
                Ok(frames) if u64::from(frames) >= CHECKPOINT_PAGES => {}
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "reading the log's progress failed; checkpoints are left to the writer");
                    break;
                }
            }
            let started = std::time::Instant::now();
            let checkpointed: Result<(i64, i64, i64), _> =
                sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut connection)
                    .await;
            match checkpointed {
                Ok((_, log, copied)) => tracing::trace!(
                    log,
                    copied,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "log checkpointed"
                ),
                Err(error) => tracing::warn!(%error, "checkpointing the log failed; retrying"),
            }
        }
    }
    let _ = sqlx::Connection::close(connection).await;
}

/// Frames of the log not copied into the database yet, from the WAL-index header that SQLite keeps
/// at the start of the `-shm` file (<https://sqlite.org/walformat.html>): `mxFrame` at byte 16 and
/// `nBackfill` at byte 96, in native byte order. Read without SQLite's locks, which is enough for
/// deciding when to checkpoint: a torn read moves one checkpoint by a poll. The file's pages are
/// the memory SQLite maps, so the read never waits for the disk.
fn uncopied_frames(shm: &File) -> std::io::Result<u32> {
    let (frames, copied) = log_progress(shm)?;
    Ok(frames.saturating_sub(copied))
}

/// Frames in the log, and how many of them are copied into the database (see [`uncopied_frames`]).
pub(super) fn log_progress(shm: &File) -> std::io::Result<(u32, u32)> {
    let mut header = [0u8; 100];
    shm.read_exact_at(&mut header, 0)?;
    let word = |at: usize| u32::from_ne_bytes(header[at..at + 4].try_into().expect("four bytes"));
    Ok((word(16), word(96)))
}
