//! WAL checkpoints off the write path, for the embedded store. SQLite's own automatic checkpoint runs
//! inside the commit that crosses its threshold, on the writer connection: that commit then waits while
//! pages are copied into the database file and synced, and every settlement queued behind it waits too
//! (the gateway's p99 at 2,000 requests/s was over 6 ms with it; BENCHMARKS.md). Each commit's WAL frames
//! are whole pages, so the pages are 1 KiB rather than 4: a settlement touches about four pages, and the WAL
//! and every checkpoint copy a quarter of the bytes.
//!
//! So checkpointing happens in two steps, and SQLite's own is left only as a backstop at a high threshold
//! (`wal_autocheckpoint`, for write loads without settlements, such as a long ingestion):
//! - this task, every `INTERVAL`, checkpoints PASSIVE on a connection of its own, beside the writer and
//!   never blocking it, and repeats at once while a pass found many new frames: each repeat copies only what
//!   was written during the one before, so within two or three passes little is left;
//! - the settlement writer (`group_commit`) then runs one more PASSIVE checkpoint itself between two
//!   batches: only the frames written since remain, and since no write is in progress it completes, so the
//!   next write starts the WAL over. The passes alone never got the WAL to start over under a steady stream
//!   of writes (measured), and the file grew without bound. The writer waits while it copies and syncs: 8 to
//!   16 ms at 2,000 settlements/s with one pass before it, 2 to 7 ms with the repeats (BENCHMARKS.md).
//!
//! A crash loses nothing: until a frame is checkpointed it is in the WAL, which SQLite replays on open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyPool, Row};

/// How often the WAL is checkpointed in the background. A pass syncs the WAL before it copies, and that
/// sync writes out everything committed since the last one (about 9 MB per 500 ms at 2,000 settlements/s,
/// 15–28 ms of flushing on this machine's disk), during which commits beside it slow down. Short intervals
/// keep each sync small: measured against 500 ms, 1, 3 and 5 s; rarer passes have more to flush and stall
/// the machine longer (BENCHMARKS.md).
const INTERVAL: Duration = Duration::from_millis(100);

/// The writer's finishing pass (the WAL starts over after it) is due every this many ticks: every 500 ms.
/// Each costs the writer 1–4 ms while it copies and syncs, so it is not run at every short tick.
const FINISH_EVERY_TICKS: u64 = 5;

/// Passes in a row at most per tick.
const MAX_PASSES: usize = 8;

/// A pass that found fewer new frames than this caught up: the writer has little left to copy.
const CAUGHT_UP_FRAMES: i64 = 64;

/// The running checkpointer; dropping it (with the last handle of the store) stops it.
#[derive(Debug)]
pub(crate) struct Checkpoints {
    task: tokio::task::AbortHandle,
    /// The pass's own connection, closed with the store (`Store::close`).
    pool: AnyPool,
    /// Set after the passes of every `FINISH_EVERY_TICKS`-th tick: the writer's short pass is due.
    finish_due: Arc<AtomicBool>,
}

pub(crate) const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";

impl Checkpoints {
    pub(crate) fn start(pool: AnyPool) -> Self {
        let finish_due = Arc::new(AtomicBool::new(false));
        let due = finish_due.clone();
        let passes = pool.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for ticks in 1u64.. {
                tick.tick().await;
                match catch_up(&passes).await {
                    // A WAL with frames in it is due to start over.
                    Ok(frames) if frames > 0 && ticks % FINISH_EVERY_TICKS == 0 => due.store(true, Ordering::Release),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying at the next tick"),
                }
            }
        });
        Self { task: task.abort_handle(), pool, finish_due }
    }

    /// Stops the passes and closes their connection; what the WAL holds stays there until the next open.
    pub(crate) async fn close(&self) {
        self.task.abort();
        self.pool.close().await;
    }

    /// The flag the settlement writer takes (swaps to false) to learn that its finishing pass is due; set
    /// every `FINISH_EVERY_TICKS` ticks.
    pub(crate) fn finish_due(&self) -> Arc<AtomicBool> {
        self.finish_due.clone()
    }
}

/// PASSIVE passes, each copying what the WAL gained during the one before, until one finds fewer than
/// `CAUGHT_UP_FRAMES` new frames (`MAX_PASSES` at most); the frames in the WAL at the last pass.
async fn catch_up(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    let mut frames: Option<i64> = None;
    for _ in 0..MAX_PASSES {
        let row = sqlx::query(PASSIVE).fetch_one(pool).await?;
        // Columns: busy, frames in the WAL, frames checkpointed (-1 and -1 when not in WAL mode).
        let now: i64 = row.try_get(1)?;
        let gained = match frames {
            Some(before) if now >= before => now - before,
            // The first pass, or the WAL started over meanwhile.
            _ => now,
        };
        frames = Some(now);
        if gained < CAUGHT_UP_FRAMES {
            break;
        }
    }
    Ok(frames.unwrap_or(0))
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[tokio::test]
    async fn closing_the_store_closes_the_checkpoint_connection() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open("", dir.path()).await.expect("open");
        let pool = store.sole_owner().expect("the embedded store checkpoints").checkpoints().pool.clone();
        assert!(!pool.is_closed());
        store.close().await;
        assert!(pool.is_closed());
        assert_eq!(pool.size(), 0, "no connection left open");
    }
}
