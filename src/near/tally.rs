//! Reads counted by outcome: per-thread lines in process (so that two
//! threads hitting L1 do not fight over one counter), and the
//! [`CACHE_READS_TOTAL`](crate::telemetry::CACHE_READS_TOTAL) counters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use metrics::Counter;

/// How a read through the near cache was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// From L1, fresh.
    L1Hit,
    /// From Redis.
    Hit,
    /// From L1, stale, because Redis did not answer.
    Stale,
    /// Not answered with a value (absent, or Redis failed with nothing in
    /// L1 to serve).
    Miss,
}

const OUTCOMES: usize = 4;
const LINES: usize = 16;

/// What a near cache has served and holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearStats {
    /// Reads answered from L1, fresh.
    pub l1_hits: u64,
    /// Reads answered by Redis with a value.
    pub hits: u64,
    /// Reads answered from L1 with a stale value while Redis failed.
    pub stale: u64,
    /// Reads answered with no value.
    pub misses: u64,
    /// Entries removed because their key changed (by another client or
    /// by this cache).
    pub invalidations: u64,
    /// Times the tracking connection was lost after it was up.
    pub tracking_lost: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now, as weighed against the bound.
    pub bytes: u64,
    /// Whether entries may be fresh now: tracking is up (or not used).
    pub fresh: bool,
}

impl NearStats {
    /// All reads counted.
    pub fn reads(&self) -> u64 {
        self.l1_hits + self.hits + self.stale + self.misses
    }
}

#[repr(align(128))]
#[derive(Default)]
struct Line([AtomicU64; OUTCOMES + 2]);

pub(crate) struct Tally {
    lines: Box<[Line]>,
    counters: [Counter; OUTCOMES],
}

thread_local! {
    static LINE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Relaxed) % LINES
    };
}

impl Tally {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        let counter = |outcome: &'static str| metrics::counter!(crate::telemetry::CACHE_READS_TOTAL, "cache" => name.clone(), "outcome" => outcome);
        Tally {
            lines: (0..LINES).map(|_| Line::default()).collect(),
            counters: [
                counter("l1_hit"),
                counter("hit"),
                counter("stale"),
                counter("miss"),
            ],
        }
    }

    fn add(&self, slot: usize) {
        let line = LINE.try_with(|l| *l).unwrap_or(0);
        self.lines[line].0[slot].fetch_add(1, Relaxed);
    }

    pub(crate) fn count(&self, outcome: Outcome) {
        let slot = outcome as usize;
        self.add(slot);
        self.counters[slot].increment(1);
    }

    pub(crate) fn invalidated(&self) {
        self.add(OUTCOMES);
    }

    pub(crate) fn tracking_lost(&self) {
        self.add(OUTCOMES + 1);
    }

    pub(crate) fn stats(&self, entries: u64, bytes: u64, fresh: bool) -> NearStats {
        let sum = |slot: usize| self.lines.iter().map(|l| l.0[slot].load(Relaxed)).sum();
        NearStats {
            l1_hits: sum(Outcome::L1Hit as usize),
            hits: sum(Outcome::Hit as usize),
            stale: sum(Outcome::Stale as usize),
            misses: sum(Outcome::Miss as usize),
            invalidations: sum(OUTCOMES),
            tracking_lost: sum(OUTCOMES + 1),
            entries,
            bytes,
            fresh,
        }
    }
}
