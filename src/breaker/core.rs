//! The shared circuit: a lock-free front over the locked state machine.
//!
//! # Why a `&'static Core`
//!
//! The closed-state hot path must not write to any memory that another
//! thread writes, or two threads calling one breaker would fight over a cache
//! line (the benchmarks in `BENCHMARKING.md` show a shared refcount alone
//! cutting two-thread throughput to a third). A response future has to reach
//! the circuit to record its outcome, and cloning an `Arc` into it is exactly
//! such a write. So futures hold a `&'static Core` instead: cores are
//! allocated once and recycled through a pool when their breaker is dropped,
//! so memory is bounded by the most breakers ever alive at once. Every use of
//! a core is stamped with an epoch (bumped on every transition and on
//! recycling), so a straggler from an earlier epoch or an earlier owner is
//! recognised and discarded.
//!
//! # What the hot path touches
//!
//! * `head.word`: state, flags and epoch in one `u64`, read with one load per
//!   call and written only on transitions.
//! * one `Stripe` per thread, written only by that thread (a plain load and
//!   store, no read-modify-write), counting fast successes, rejections and
//!   ignored outcomes.
//!
//! Failures, slow calls, probes and time-window outcomes take the mutex.
//!
//! # Publishing the counts
//!
//! The stripes are summed and sent to `metrics` off the hot path: by a
//! `fusebox-metrics` thread every second (it runs only while some breaker
//! lives), on every transition, and when a breaker is dropped.

use std::cell::Cell;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::sync::atomic::AtomicU64;
use crate::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::classify::Outcome;
use super::config::Config;
use super::machine::Machine;
use super::state::{Ctx, Snapshot, State, Transition};
use crate::telemetry;

mod pool;
mod publish;
pub(crate) use publish::publish_all;
mod stripes;
#[cfg(test)]
mod tests;
mod timer;

use stripes::{stripe_index, STRIPE};
use timer::TimerGuard;

/// Stripes owned by one thread each; one more is shared by any further
/// threads, which update it with read-modify-writes.
const OWNED_STRIPES: usize = 64;
const SHARED_STRIPE: usize = OWNED_STRIPES;
const UNASSIGNED: usize = usize::MAX;
/// How often the publisher thread sends every live circuit's call totals to
/// `metrics`.
const PUBLISH_PERIOD: Duration = Duration::from_secs(1);

pub(crate) const STATE_MASK: u64 = 0b111;
/// The open (or half-open) period has no timer task: whoever sees the
/// circuit rejecting must check the clock.
pub(crate) const LAZY: u64 = 1 << 3;
/// Calls must note their start time (slow-call detection is on).
pub(crate) const CLOCKED: u64 = 1 << 4;
/// Every outcome goes through the lock (time window).
pub(crate) const LOCKED: u64 = 1 << 5;
/// Shadow mode: a rejection lets the call through, unrecorded.
pub(crate) const SHADOW: u64 = 1 << 6;
pub(crate) const EPOCH_SHIFT: u32 = 8;

/// Whether `word` says open with a timer task to end the period, so a
/// rejection needs no clock check.
#[inline]
pub(crate) fn is_open_on_timer(word: u64) -> bool {
    word & (STATE_MASK | LAZY | SHADOW) == State::Open.code()
}

pub(crate) fn state_of(word: u64) -> State {
    State::from_code(word & STATE_MASK)
}

pub(crate) fn epoch_of(word: u64) -> u64 {
    word >> EPOCH_SHIFT
}

#[repr(align(128))]
#[derive(Debug, Default)]
struct Head {
    word: AtomicU64,
    /// End of the open period, in nanoseconds since `Core::base`.
    open_until: AtomicU64,
    /// Slow-call threshold in nanoseconds (`u64::MAX`: off).
    slow_nanos: AtomicU64,
}

#[repr(align(128))]
#[derive(Debug, Default)]
struct Stripe {
    successes: AtomicU64,
    rejections: AtomicU64,
    ignored: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals {
    successes: u64,
    rejections: u64,
    ignored: u64,
}

/// One circuit. See the module docs for why it is `'static`.
#[derive(Debug)]
pub(crate) struct Core {
    head: Head,
    /// The origin of `head.open_until`: fixed when the core is allocated,
    /// so a rejection's error can carry the core instead of an `Instant`.
    /// A core is only reused by a breaker made at or after it.
    base: Instant,
    stripes: [Stripe; OWNED_STRIPES + 1],
    live: crate::sync::Mutex<Option<Live>>,
    /// Where timed calls' durations go (set while a breaker that times its
    /// calls owns the core).
    latency: std::sync::RwLock<Option<metrics::Histogram>>,
}

/// The parts of a core that belong to its current breaker.
#[derive(Debug)]
struct Live {
    machine: Machine,
    name: std::sync::Arc<str>,
    events: broadcast::Sender<Transition>,
    timer: Option<AbortHandle>,
    /// Stripe totals when this breaker took the core (metrics start at 0).
    metrics_base: Totals,
    /// Outcomes recorded under the lock, for the published totals.
    locked: Totals,
    /// The totals already added to `metrics`.
    published: Totals,
}

/// Locks `m` even if poisoned: a panic on one thread must not turn every
/// later call of the breaker into a panic too.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Core {
    /// The parts of the current breaker, locked (as [`lock`] does).
    fn live(&self) -> crate::sync::MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[inline]
    pub(crate) fn word(&self) -> u64 {
        self.head.word.load(Acquire)
    }

    pub(crate) fn slow_threshold(&self) -> Duration {
        Duration::from_nanos(self.head.slow_nanos.load(Relaxed))
    }

    /// A timed call took `elapsed`.
    pub(crate) fn record_latency(&self, elapsed: Duration) {
        let latency = self.latency.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(histogram) = &*latency {
            histogram.record(elapsed);
        }
    }

    /// When the current open period ends.
    pub(crate) fn open_until(&self) -> Instant {
        self.instant(self.open_nanos())
    }

    /// When the current open period ends, in nanoseconds since the base.
    #[inline]
    pub(crate) fn open_nanos(&self) -> u64 {
        self.head.open_until.load(Relaxed)
    }

    /// The instant `nanos` after this core's base.
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        let offset = Duration::from_nanos(nanos);
        self.base.checked_add(offset).unwrap_or(self.base)
    }

    /// Counts a success of a call admitted while closed under `word`.
    #[inline]
    pub(crate) fn record_fast_success(&'static self, word: u64) {
        if self.head.word.load(Relaxed) == word {
            self.bump(|s| &s.successes);
        }
    }

    /// Counts a rejected call.
    #[inline]
    pub(crate) fn record_rejection(&'static self) {
        self.bump(|s| &s.rejections);
    }

    /// Counts a call whose outcome was ignored.
    #[inline]
    pub(crate) fn record_ignored(&'static self) {
        self.bump(|s| &s.ignored);
    }

    #[inline]
    fn bump(&'static self, counter: impl Fn(&Stripe) -> &AtomicU64) {
        if cfg!(fusebox_loom) {
            // Loom's threads share one OS thread, and its thread-locals.
            counter(&self.stripes[SHARED_STRIPE]).fetch_add(1, Relaxed);
            return;
        }
        let index = STRIPE.with(Cell::get);
        if index < OWNED_STRIPES {
            // This thread is the only writer of its stripe: no
            // read-modify-write needed.
            let c = counter(&self.stripes[index]);
            c.store(c.load(Relaxed) + 1, Relaxed);
        } else {
            self.bump_shared(counter);
        }
    }

    /// For a thread without a stripe of its own: takes one if any is free
    /// (then counts as its owner), else counts on the shared stripe.
    #[cold]
    #[inline(never)]
    fn bump_shared(&'static self, counter: impl Fn(&Stripe) -> &AtomicU64) {
        let (index, owned) = stripe_index();
        if owned {
            return self.bump(counter);
        }
        counter(&self.stripes[index]).fetch_add(1, Relaxed);
    }

    fn totals(&self) -> Totals {
        // Under the model checks only the shared stripe is written.
        let skip = if cfg!(fusebox_loom) { SHARED_STRIPE } else { 0 };
        self.stripes[skip..]
            .iter()
            .fold(Totals::default(), |t, s| Totals {
                successes: t.successes + s.successes.load(Relaxed),
                rejections: t.rejections + s.rejections.load(Relaxed),
                ignored: t.ignored + s.ignored.load(Relaxed),
            })
    }

    fn ctx(&self) -> Ctx {
        Ctx {
            now: Instant::now(),
            fast: self.totals().successes,
        }
    }

    /// Runs `op` on the machine of `epoch`'s breaker, then applies and emits
    /// the transition it returns, if any.
    fn with_machine<R>(
        &'static self,
        op: impl FnOnce(&mut Machine, &mut Totals, Ctx) -> (R, Option<Transition>),
    ) -> Option<R> {
        let ctx = self.ctx();
        let mut guard = self.live();
        let live = guard.as_mut()?;
        let (result, transition) = op(&mut live.machine, &mut live.locked, ctx);
        // A reset of a closed circuit changes the epoch without a transition.
        if transition.is_some() || live.machine.epoch() != epoch_of(self.head.word.load(Relaxed)) {
            self.apply(live, transition.as_ref());
        }
        let emitted = transition.map(|t| (live.name.clone(), t));
        drop(guard);
        if let Some((name, t)) = emitted {
            publish::transition(&name, &t);
            self.publish();
        }
        Some(result)
    }

    /// Publishes the machine's state to the lock-free front, arms the timer
    /// for its deadline and tells subscribers of the transition (under the
    /// lock).
    fn apply(&'static self, live: &mut Live, t: Option<&Transition>) {
        if let Some(timer) = live.timer.take() {
            timer.abort();
        }
        let machine = &live.machine;
        let epoch = machine.epoch();
        let mut word = self.head.word.load(Relaxed) & (CLOCKED | LOCKED | SHADOW);
        word |= (epoch << EPOCH_SHIFT) | machine.state().code();
        if let Some(until) = machine.open_until() {
            let offset = until.saturating_duration_since(self.base);
            self.head.open_until.store(nanos(offset), Relaxed);
        }
        if let Some(deadline) = machine.deadline() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    let guard = TimerGuard {
                        core: self,
                        epoch,
                        fired: false,
                    };
                    let task = handle.spawn(guard.run(deadline));
                    if task.is_finished() {
                        // The runtime is shutting down and dropped the task.
                        word |= LAZY;
                    } else {
                        live.timer = Some(task.abort_handle());
                    }
                }
                Err(_) => word |= LAZY,
            }
        }
        self.head.word.store(word, Release);
        // Sent under the lock so subscribers see transitions in order.
        if let Some(t) = t {
            let _ = live.events.send(t.clone());
        }
    }

    /// Records the outcome of a closed-state call that needs the lock.
    pub(crate) fn record_call(&'static self, epoch: u64, outcome: Outcome, slow: bool) {
        self.with_machine(|m, locked, ctx| {
            if outcome == Outcome::Success {
                locked.successes += 1;
            }
            ((), m.on_call(epoch, outcome, slow, ctx))
        });
        telemetry::breaker_outcome(
            self.name_for(outcome, slow).as_ref(),
            outcome == Outcome::Failure,
            slow,
        );
    }

    fn name_for(&self, outcome: Outcome, slow: bool) -> Option<std::sync::Arc<str>> {
        // Successes are published as totals; failures and slow calls are
        // counted one by one, so they need the label.
        (outcome == Outcome::Failure || slow)
            .then(|| self.live().as_ref().map(|l| l.name.clone()))
            .flatten()
    }

    /// Records the outcome of a probe admitted in `epoch`.
    pub(crate) fn record_probe(&'static self, epoch: u64, outcome: Outcome, slow: bool) {
        self.with_machine(|m, locked, ctx| {
            match outcome {
                Outcome::Success => locked.successes += 1,
                Outcome::Ignored => locked.ignored += 1,
                Outcome::Failure => {}
            }
            ((), m.on_probe(epoch, outcome, slow, ctx))
        });
        telemetry::breaker_outcome(
            self.name_for(outcome, slow).as_ref(),
            outcome == Outcome::Failure,
            slow,
        );
    }

    /// Takes a probe slot while half-open in `epoch`.
    pub(crate) fn try_acquire_probe(&'static self, epoch: u64) -> bool {
        self.with_machine(|m, _, _| (m.try_acquire_probe(epoch), None))
            .unwrap_or(false)
    }

    /// Frees a probe slot that ended without an outcome.
    pub(crate) fn release_probe(&'static self, epoch: u64) {
        self.with_machine(|m, _, _| {
            m.release_probe(epoch);
            ((), None)
        });
    }

    /// Ends the open or half-open period of `epoch` if it is over.
    pub(crate) fn on_deadline(&'static self, epoch: u64) {
        self.with_machine(|m, _, ctx| ((), m.on_deadline(epoch, ctx)));
    }

    pub(crate) fn force(&'static self, target: State) {
        self.with_machine(|m, _, ctx| ((), m.force(target, ctx)));
    }

    pub(crate) fn reset(&'static self) {
        self.with_machine(|m, _, ctx| ((), m.reset(ctx)));
    }

    pub(crate) fn snapshot(&'static self) -> Option<Snapshot> {
        self.with_machine(|m, _, ctx| (m.snapshot(ctx), None))
    }

    pub(crate) fn subscribe(&'static self) -> Option<broadcast::Receiver<Transition>> {
        self.live().as_ref().map(|l| l.events.subscribe())
    }

    pub(crate) fn config(&'static self) -> Option<Config> {
        self.live().as_ref().map(|l| l.machine.config().clone())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
