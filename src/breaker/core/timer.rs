//! Ending open and half-open periods: a timer task per period, or, without
//! one, a clock check on rejections.

use super::*;

impl Core {
    /// For a circuit without a timer task: checks the clock, and ends the
    /// period if it is over. Returns the (possibly new) word.
    #[cold]
    pub(crate) fn check_lazy_deadline(&'static self, word: u64) -> u64 {
        self.on_deadline(epoch_of(word));
        self.word()
    }

    /// Marks the period of `epoch` as lazily checked (its timer task died
    /// without firing, e.g. its runtime shut down). Lock-free: a task can be
    /// dropped while this thread holds the lock.
    fn fall_back_to_lazy(&'static self, epoch: u64) {
        let word = self.head.word.load(Relaxed);
        if epoch_of(word) == epoch {
            let _ = self
                .head
                .word
                .compare_exchange(word, word | LAZY, Release, Relaxed);
        }
    }
}

/// Ends an open or half-open period when its deadline passes. If its task is
/// dropped before then without being superseded (its runtime shut down), the
/// circuit falls back to checking the clock on rejections.
pub(super) struct TimerGuard {
    pub(super) core: &'static Core,
    pub(super) epoch: u64,
    pub(super) fired: bool,
}

impl TimerGuard {
    pub(super) async fn run(mut self, deadline: Instant) {
        tokio::time::sleep_until(deadline).await;
        // Marked fired only once the deadline is handled: if handling it
        // panicked, the guard's drop still hands the period to the clock
        // check on rejections, so the circuit cannot stay open for good.
        self.core.on_deadline(self.epoch);
        self.fired = true;
    }
}

impl Drop for TimerGuard {
    fn drop(&mut self) {
        if !self.fired {
            self.core.fall_back_to_lazy(self.epoch);
        }
    }
}
