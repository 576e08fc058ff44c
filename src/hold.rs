//! The write hold-down: after Redis refused a write while it may still
//! serve reads (`OOM`, `READONLY`, `MISCONF`, a write that timed out),
//! changes are shed locally for a while instead of being sent to be
//! refused again. Shared by the cache's fail-open layer (one Redis) and by
//! each shard of a cluster backend (one shard's refusal is its own).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use crate::request::{CacheRequest, Reason};

/// One Redis' (or one shard's) hold-down.
#[derive(Debug)]
pub(crate) struct HoldDown {
    hold_down: Duration,
    /// Origin of the nanosecond clocks below.
    base: Instant,
    /// Writes that grow memory are shed until this many nanoseconds after
    /// `base` (after `OOM`; 0: never were, so no clock is read on the write
    /// path).
    grow_until: AtomicU64,
    /// Every change is shed until then (after `READONLY`, `MISCONF`, a
    /// write timeout), with the reason in `change_reason`.
    change_until: AtomicU64,
    change_reason: AtomicU8,
}

impl HoldDown {
    /// Sheds for `hold_down` after each refusal (zero: never).
    pub(crate) fn new(hold_down: Duration) -> Self {
        HoldDown {
            hold_down,
            base: Instant::now(),
            grow_until: AtomicU64::new(0),
            change_until: AtomicU64::new(0),
            change_reason: AtomicU8::new(0),
        }
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Why `request` is shed, if it is: after `OOM` the writes that may
    /// grow memory (`Set`, `SetIfAbsent`; deletes go on); after the other
    /// refusals, every change.
    pub(crate) fn shed(&self, request: &CacheRequest) -> Option<Reason> {
        if !request.is_mutation() {
            return None;
        }
        let until = self.change_until.load(Relaxed);
        if until != 0 && self.nanos() < until {
            return Some(Reason::from_code(self.change_reason.load(Relaxed)));
        }
        if !request.is_write() {
            return None;
        }
        let until = self.grow_until.load(Relaxed);
        (until != 0 && self.nanos() < until).then_some(Reason::OutOfMemory)
    }

    /// Redis answered `reason`: a refusal of writes starts (or extends) the
    /// hold-down. Call it only for Redis' own answers: a call shed here
    /// must not extend it, or it would never end while writes keep coming.
    pub(crate) fn answered(&self, reason: Reason) {
        if !reason.refuses_writes() || self.hold_down.is_zero() {
            return;
        }
        let hold = u64::try_from(self.hold_down.as_nanos()).unwrap_or(u64::MAX);
        let until = self.nanos().saturating_add(hold).max(1);
        if reason == Reason::OutOfMemory {
            self.grow_until.fetch_max(until, Relaxed);
        } else {
            self.change_reason.store(reason.code(), Relaxed);
            self.change_until.fetch_max(until, Relaxed);
        }
    }
}
