//! The write hold-down: after Redis refused a write while it still serves
//! reads (`OOM`, `READONLY`, `MISCONF`, a write pause), changes are shed
//! locally instead of being sent to be refused again. Shared by the cache's
//! fail-open layer (one Redis) and by each shard of a cluster backend (one
//! shard's refusal is its own).
//!
//! * **Only write-only refusals.** A refusal Redis sends starts it at once.
//!   A write that timed out starts it only when it is seen to be a write
//!   pause: the write was sent after an earlier write timed out, and a read
//!   was answered while it waited. Timeouts that a stall of the process or
//!   the network caused (reads time out too, and writes sent after the
//!   stall are answered) never do.
//! * **Writes resume with Redis.** While it holds, one write every
//!   [`PROBE_EVERY`] (or every hold-down, if shorter) is sent as a probe;
//!   the first write answered ends it. The hold-down's length bounds it
//!   only when no write is tried.

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
    /// While held: the next moment a write may go as a probe.
    next_probe: AtomicU64,
    /// When a write last timed out without starting the hold-down (0: no
    /// suspicion, or a write was answered since).
    suspect_since: AtomicU64,
    /// While suspect: when a read was last answered.
    read_at: AtomicU64,
}

/// While held down, a write goes through as a probe this often.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(250);

impl HoldDown {
    /// Sheds for `hold_down` after each refusal (zero: never).
    pub(crate) fn new(hold_down: Duration) -> Self {
        HoldDown {
            hold_down,
            base: Instant::now(),
            grow_until: AtomicU64::new(0),
            change_until: AtomicU64::new(0),
            change_reason: AtomicU8::new(0),
            next_probe: AtomicU64::new(0),
            suspect_since: AtomicU64::new(0),
            read_at: AtomicU64::new(0),
        }
    }

    /// Now, on this hold-down's clock (never 0).
    pub(crate) fn nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether this held-down change may go as the probe (one per probe
    /// interval).
    fn probe(&self, now: u64) -> bool {
        let next = self.next_probe.load(Relaxed);
        now >= next
            && self
                .next_probe
                .compare_exchange(
                    next,
                    now.saturating_add(self.probe_every()),
                    Relaxed,
                    Relaxed,
                )
                .is_ok()
    }

    fn probe_every(&self) -> u64 {
        u64::try_from(self.hold_down.min(PROBE_EVERY).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Why `request` is shed, if it is: after `OOM` the writes that may
    /// grow memory (`Set`, `SetIfAbsent`; deletes go on); after the other
    /// refusals, every change.
    pub(crate) fn shed(&self, request: &CacheRequest) -> Option<Reason> {
        if !request.is_mutation() {
            return None;
        }
        let until = self.change_until.load(Relaxed);
        if until != 0 {
            let now = self.nanos();
            if now < until && !self.probe(now) {
                return Some(Reason::from_code(self.change_reason.load(Relaxed)));
            }
        }
        if !request.is_write() {
            return None;
        }
        let until = self.grow_until.load(Relaxed);
        if until == 0 {
            return None;
        }
        let now = self.nanos();
        (now < until && !self.probe(now)).then_some(Reason::OutOfMemory)
    }

    /// A read was answered: while a write timeout is under suspicion, the
    /// evidence that Redis serves reads.
    pub(crate) fn read_answered(&self) {
        if self.suspect_since.load(Relaxed) != 0 {
            self.read_at.store(self.nanos(), Relaxed);
        }
    }

    /// A change was answered (`grows`: a write that may grow memory):
    /// Redis takes them, so the hold-down ends, and so does any suspicion.
    pub(crate) fn change_answered(&self, grows: bool) {
        for (flag, clear) in [
            (&self.suspect_since, true),
            (&self.change_until, true),
            (&self.grow_until, grows),
        ] {
            if clear && flag.load(Relaxed) != 0 {
                flag.store(0, Relaxed);
            }
        }
    }

    /// A change sent at `sent` (on [`nanos`](Self::nanos)' clock) got no
    /// answer within its deadline. The hold-down starts only if it was sent
    /// after an earlier change timed out and a read was answered while it
    /// waited: Redis serves reads and not writes (a write pause). Else
    /// this is the first sign, or a stall of everything, and only noted.
    pub(crate) fn change_timed_out(&self, sent: u64) {
        if self.hold_down.is_zero() {
            return;
        }
        let since = self.suspect_since.load(Relaxed);
        let paused = since != 0 && sent > since && self.read_at.load(Relaxed) > sent;
        if paused {
            self.answered(Reason::WriteTimeout);
        } else if since == 0 || sent > since {
            self.read_at.store(0, Relaxed);
            self.suspect_since.store(self.nanos(), Relaxed);
        }
    }

    /// Redis answered `reason`: a refusal of writes starts (or extends) the
    /// hold-down. Call it only for Redis' own answers: a call shed here
    /// must not extend it, or it would never end while writes keep coming.
    /// A write timeout goes to [`change_timed_out`](Self::change_timed_out)
    /// instead, which knows when the write was sent.
    pub(crate) fn answered(&self, reason: Reason) {
        if !reason.refuses_writes() || self.hold_down.is_zero() {
            return;
        }
        let hold = u64::try_from(self.hold_down.as_nanos()).unwrap_or(u64::MAX);
        let now = self.nanos();
        let until = now.saturating_add(hold);
        // The first probe one interval after the refusal, not at once.
        self.next_probe
            .fetch_max(now.saturating_add(self.probe_every()), Relaxed);
        if reason == Reason::OutOfMemory {
            self.grow_until.fetch_max(until, Relaxed);
        } else {
            self.change_reason.store(reason.code(), Relaxed);
            self.change_until.fetch_max(until, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::time::advance;

    fn set() -> CacheRequest {
        CacheRequest::Set {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ttl: crate::request::Ttl::Never,
        }
    }

    fn delete() -> CacheRequest {
        CacheRequest::Delete(vec![Bytes::from_static(b"k")])
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_of_everything_never_holds_writes_down() {
        let hold = HoldDown::new(Duration::from_secs(5));
        // A batch of writes sent before the stall times out together; the
        // reads sent with them time out too (nothing answered).
        let sent = hold.nanos();
        advance(Duration::from_millis(60)).await;
        for _ in 0..100 {
            hold.change_timed_out(sent);
        }
        assert_eq!(hold.shed(&set()), None);
        // After the stall, reads and writes are answered again.
        hold.read_answered();
        hold.change_answered(true);
        let late = hold.nanos();
        advance(Duration::from_millis(60)).await;
        hold.change_timed_out(late);
        assert_eq!(hold.shed(&set()), None, "a fresh suspicion, not a pause");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_pause_holds_writes_down_and_a_probe_ends_it() {
        let hold = HoldDown::new(Duration::from_secs(5));
        let first = hold.nanos();
        advance(Duration::from_millis(50)).await;
        hold.change_timed_out(first);
        assert_eq!(hold.shed(&set()), None, "one timeout is only a suspicion");
        // A write sent after it waits while reads are answered: a pause.
        advance(Duration::from_millis(1)).await;
        let second = hold.nanos();
        advance(Duration::from_millis(10)).await;
        hold.read_answered();
        advance(Duration::from_millis(40)).await;
        hold.change_timed_out(second);
        assert_eq!(hold.shed(&set()), Some(Reason::WriteTimeout));
        assert_eq!(hold.shed(&delete()), Some(Reason::WriteTimeout));
        assert_eq!(
            hold.shed(&CacheRequest::Get(Bytes::from_static(b"k"))),
            None
        );
        // One probe per interval.
        advance(PROBE_EVERY).await;
        assert_eq!(hold.shed(&set()), None);
        assert_eq!(hold.shed(&set()), Some(Reason::WriteTimeout));
        // The probe answered: writes resume at once.
        hold.change_answered(true);
        assert_eq!(hold.shed(&set()), None);
        assert_eq!(hold.shed(&set()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_hold_at_once_and_oom_only_writes_that_grow() {
        let hold = HoldDown::new(Duration::from_secs(5));
        hold.answered(Reason::OutOfMemory);
        assert_eq!(hold.shed(&set()), Some(Reason::OutOfMemory));
        assert_eq!(hold.shed(&delete()), None, "deletes free memory");
        hold.change_answered(false);
        assert_eq!(
            hold.shed(&set()),
            Some(Reason::OutOfMemory),
            "a delete is no proof"
        );
        hold.change_answered(true);
        assert_eq!(hold.shed(&set()), None);
        hold.answered(Reason::ReadOnly);
        assert_eq!(hold.shed(&delete()), Some(Reason::ReadOnly));
        // Unprobed, the hold-down ends with its length.
        advance(Duration::from_secs(5)).await;
        assert_eq!(hold.shed(&delete()), None);
        let never = HoldDown::new(Duration::ZERO);
        never.answered(Reason::ReadOnly);
        let sent = never.nanos();
        never.change_timed_out(sent);
        never.change_timed_out(sent);
        assert_eq!(never.shed(&set()), None);
    }
}
