//! Preallocates SQLite's write-ahead log, as PostgreSQL zero-fills each new WAL segment. While the
//! log file grows, every commit's fsync also allocates the new blocks and writes the file's size
//! (measured on this project's machines: a 16 KiB write and its fsync took 0.30–0.45 ms at the median
//! past the end of a file, 0.15–0.20 ms over blocks already written; `perf trace` of a fresh whd
//! showed most of the log's fsyncs over 1 ms until the first checkpoint). SQLite deletes the log when it closes the database and starts it again from
//! its beginning after each complete checkpoint, so without this every start paid that growth.
//! Zeros past the log's end are no frames to SQLite: recovery stops at the first frame whose salt
//! and checksum do not match, as it does after a checkpoint has restarted a longer log.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sqlx::SqliteConnection;

use super::{BACKSTOP_CHECKPOINTS, CHECKPOINT_PAGES, begin_write};
use crate::store::StoreError;

/// The log's size once preallocated: the frames it holds before the writer's own checkpoint lets it
/// start over, and a checkpointer's threshold more (each frame a page of SQLite's default 4 KiB and a
/// 24-byte header, after the log's 32-byte header), so that a log whose checkpoint readers held back
/// part of the way still finds its blocks written.
const PREALLOCATED_BYTES: u64 = (BACKSTOP_CHECKPOINTS + 1) * CHECKPOINT_PAGES * (4096 + 24) + 32;

/// Zero-fills the write-ahead log of the database at `database` up to [`PREALLOCATED_BYTES`], under
/// the write lock so that no other connection appends frames meanwhile. A log already that long, or
/// none (an in-memory database), is left alone.
pub(super) async fn preallocate(
    writer: &mut SqliteConnection,
    database: &Path,
) -> Result<(), StoreError> {
    let mut log = database.as_os_str().to_owned();
    log.push("-wal");
    let log = PathBuf::from(log);
    let tx = begin_write(writer).await?;
    tokio::task::spawn_blocking(move || zero_fill(&log, PREALLOCATED_BYTES))
        .await
        .unwrap_or_else(|error| Err(std::io::Error::other(error)))
        .map_err(sqlx::Error::Io)?;
    tx.rollback().await?;
    Ok(())
}

fn zero_fill(path: &Path, size: u64) -> std::io::Result<()> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    // Written, not `fallocate`d: ext4 keeps fallocated blocks as unwritten extents, and the first
    // write into one changes the file's metadata again at the next fsync.
    let zeros = vec![0u8; 1 << 20];
    let mut offset = file.metadata()?.len();
    while offset < size {
        let length = (size - offset).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..length], offset)?;
        offset += length as u64;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_log_is_zero_filled_to_its_preallocated_size_and_keeps_what_it_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whd.db-wal");
        std::fs::write(&path, b"frames").unwrap();
        zero_fill(&path, 3 << 20).unwrap();
        let log = std::fs::read(&path).unwrap();
        assert_eq!(log.len(), 3 << 20);
        assert_eq!(&log[..6], b"frames");
        assert!(log[6..].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn a_log_that_is_already_long_or_missing_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whd.db-wal");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        zero_fill(&path, 1024).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 4096]);
        zero_fill(&dir.path().join("none-wal"), 1024).unwrap();
        assert!(!dir.path().join("none-wal").exists());
    }
}
