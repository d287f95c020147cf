//! Memory policy: eviction in LRU order, reclaim writeback, age-out,
//! watermarks, pressure.

use super::cache::Inner;
use super::shard::Entry;
use super::writeback::WritebackMode;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Times one `make_room` waits for in-flight writes before giving up and
/// exceeding the limit.
const MAX_WRITE_WAITS: u32 = 16;
/// How long one such wait may take.
const WRITE_WAIT: Duration = Duration::from_millis(10);
/// Clean buffers aged out per shard lock hold.
const AGE_OUT_BATCH: usize = 64;

impl Inner {
    /// High watermark: above it, background writeback starts even if the
    /// dirty ratio is not reached (7/8 of the limit).
    fn high_watermark(&self) -> u64 {
        self.config.memory_limit_bytes / 8 * 7
    }

    /// Bring the cache under its limit after a buffer was added: evict clean
    /// buffers oldest first, write back dirty unheld ones when no clean one
    /// is left, wait for in-flight writes, and as a last resort exceed the
    /// limit and report pressure.
    pub(crate) fn make_room(&self) {
        let limit = self.config.memory_limit_bytes;
        let mut write_waits = 0;
        while self.counters.current_bytes() > limit {
            if self.evict_oldest_clean() {
                continue;
            }
            let written =
                self.writeback_oldest(self.config.writeback_batch, WritebackMode::Reclaim);
            if written.cleaned > 0 {
                continue;
            }
            if write_waits < MAX_WRITE_WAITS && self.wait_for_write_completion() {
                write_waits += 1;
                continue;
            }
            self.report_pressure();
            break;
        }
        self.maybe_kick_writeback();
    }

    /// If a write is in flight, wait (bounded) until some write completes;
    /// false if none was in flight. Safe with data guards held: in-flight
    /// writes need no lock but shard locks to complete.
    fn wait_for_write_completion(&self) -> bool {
        let mut generation = self.writes_done.lock();
        if self.counters.writes_in_flight.load(Relaxed) == 0 {
            return false;
        }
        let seen = *generation;
        let _ = self
            .writes_done_cv
            .wait_while_for(&mut generation, |g| *g == seen, WRITE_WAIT);
        true
    }

    /// Evict the least recently released clean unheld unpinned buffer of
    /// the whole cache. False if there is none.
    pub(crate) fn evict_oldest_clean(&self) -> bool {
        for _ in 0..2 * super::shard::SHARDS {
            let oldest = self
                .shards()
                .map(|(index, shard)| (shard.clean_tail_stamp(), index))
                .min();
            let Some((stamp, index)) = oldest else {
                return false;
            };
            if stamp == u64::MAX {
                return false;
            }
            let mut st = self.shard(index).lock();
            let Some(slot) = st.clean_lru.back() else {
                continue; // raced with a hit; look again
            };
            let victim = st.remove(slot);
            drop(st);
            self.counters.remove_buffer(self.block_bytes());
            self.counters.evictions.fetch_add(1, Relaxed);
            drop(victim);
            return true;
        }
        false
    }

    /// Evict clean buffers until at most `target` bytes are cached or no
    /// clean buffer is left. Never writes.
    pub(crate) fn evict_clean_down_to(&self, target: u64) {
        while self.counters.current_bytes() > target && self.evict_oldest_clean() {}
    }

    /// Free clean unheld buffers released more than `max_age` ago, oldest
    /// first per shard, never going below `resident_min_bytes`.
    pub(crate) fn age_out(&self) -> u64 {
        let now = self.now();
        let Some(cutoff) = now.checked_sub(self.config.max_age.as_nanos() as u64) else {
            return 0;
        };
        let floor = self.config.resident_min_bytes;
        let bytes = self.block_bytes();
        let mut aged = 0;
        for (_, shard) in self.shards() {
            loop {
                let mut victims: Vec<Entry> = Vec::new();
                let mut st = shard.lock();
                while victims.len() < AGE_OUT_BATCH {
                    let current = self.counters.current_bytes();
                    let Some(slot) = st.clean_lru.back() else {
                        break;
                    };
                    if st.entry(slot).stamp >= cutoff || current < floor + bytes {
                        break;
                    }
                    victims.push(st.remove(slot));
                    self.counters.remove_buffer(bytes);
                }
                drop(st);
                let count = victims.len();
                aged += count as u64;
                if count < AGE_OUT_BATCH {
                    break;
                }
            }
        }
        self.counters.aged_out.fetch_add(aged, Relaxed);
        aged
    }

    /// Whether background writeback should run: dirty buffers outnumber
    /// clean ones by more than `dirty_ratio`, or the cache is above its high
    /// watermark with dirty buffers. (Pinned dirty buffers count; they are
    /// not on the dirty LRU, so a pass over them costs nothing.)
    pub(crate) fn writeback_wanted(&self) -> bool {
        let dirty = self.counters.dirty_buffers();
        if dirty == 0 {
            return false;
        }
        let current = self.counters.current_bytes();
        let clean = (current / self.block_bytes()).saturating_sub(dirty);
        dirty > clean.saturating_mul(u64::from(self.config.dirty_ratio))
            || current > self.high_watermark()
    }

    pub(crate) fn maybe_kick_writeback(&self) {
        if self.writeback_wanted() {
            self.kick_background();
        }
    }
}
