//! The breaker's state machine: pure logic, no atomics, no futures, no clock.
//!
//! Everything that changes state goes through [`Machine`], under the core's
//! lock; the caller passes the time and the running total of fast successes.
//! Every transition bumps the epoch, and outcomes of calls admitted in an
//! earlier epoch are discarded, so a slow call admitted before a trip can
//! never count as a probe, nor a stale probe close a re-opened circuit.

use std::time::Duration;

use tokio::time::Instant;

use super::classify::Outcome;
use super::config::Config;
use super::state::{Cause, Ctx, Snapshot, State, Transition};
use super::window::{Figures, WindowState};

#[derive(Debug)]
pub(crate) struct Machine {
    cfg: Config,
    state: State,
    epoch: u64,
    window: WindowState,
    /// Failures in a row, ending at position `last_failure`.
    consecutive: u32,
    last_failure: Option<u64>,
    trips: u32,
    open_until: Option<Instant>,
    half_open_until: Option<Instant>,
    probes: u32,
    probe_successes: u32,
    rng: u64,
}

impl Machine {
    pub(crate) fn new(cfg: Config, epoch: u64, ctx: Ctx) -> Self {
        let rng = cfg.seed.unwrap_or_else(random_seed);
        Machine {
            window: WindowState::new(cfg.window, ctx.fast, ctx.now),
            cfg,
            state: State::Closed,
            epoch,
            consecutive: 0,
            last_failure: None,
            trips: 0,
            open_until: None,
            half_open_until: None,
            probes: 0,
            probe_successes: 0,
            rng,
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn open_until(&self) -> Option<Instant> {
        self.open_until
    }

    /// When the current state ends on its own, if it does.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Open => self.open_until,
            State::HalfOpen => self.half_open_until,
            _ => None,
        }
    }

    /// Records the outcome of a call admitted in `epoch` while closed.
    pub(crate) fn on_call(
        &mut self,
        epoch: u64,
        outcome: Outcome,
        slow: bool,
        ctx: Ctx,
    ) -> Option<Transition> {
        let stale = epoch != self.epoch && !crate::sync::seeded("breaker_any_epoch");
        if stale || self.state != State::Closed || outcome == Outcome::Ignored {
            return None;
        }
        let failure = outcome == Outcome::Failure;
        let pos = self.window.record(failure, slow, ctx.fast, ctx.now);
        if failure {
            let follows = self.last_failure.is_some_and(|last| last + 1 == pos);
            self.consecutive = if follows { self.consecutive + 1 } else { 1 };
            self.last_failure = Some(pos);
            let limit = self.cfg.consecutive_failures;
            if limit > 0 && self.consecutive >= limit {
                return Some(self.trip(Cause::ConsecutiveFailures, ctx));
            }
        }
        if !(failure || slow) {
            return None;
        }
        let figures = self.window.figures(ctx.fast, ctx.now);
        if figures.calls < u64::from(self.cfg.minimum_calls) {
            return None;
        }
        if figures.failure_rate() >= self.cfg.failure_rate {
            return Some(self.trip(Cause::FailureRate, ctx));
        }
        match self.cfg.slow {
            Some(s) if figures.slow_rate() >= s.rate => Some(self.trip(Cause::SlowCallRate, ctx)),
            _ => None,
        }
    }

    /// Admits a probe, if the circuit is half-open in `epoch` and a probe
    /// slot is free.
    pub(crate) fn try_acquire_probe(&mut self, epoch: u64) -> bool {
        let admit = epoch == self.epoch
            && self.state == State::HalfOpen
            && (self.probes < self.cfg.half_open_probes
                || crate::sync::seeded("breaker_probe_limit"));
        self.probes += u32::from(admit);
        admit
    }

    /// Frees the slot of a probe that ended without an outcome (cancelled).
    pub(crate) fn release_probe(&mut self, epoch: u64) {
        if epoch == self.epoch && self.state == State::HalfOpen {
            self.probes = self.probes.saturating_sub(1);
        }
    }

    /// Records the outcome of a probe admitted in `epoch`, freeing its slot.
    pub(crate) fn on_probe(
        &mut self,
        epoch: u64,
        outcome: Outcome,
        slow: bool,
        ctx: Ctx,
    ) -> Option<Transition> {
        if epoch != self.epoch || self.state != State::HalfOpen {
            return None;
        }
        self.probes = self.probes.saturating_sub(1);
        match (outcome, slow) {
            (Outcome::Ignored, _) => None,
            (Outcome::Success, false) => {
                self.probe_successes += 1;
                (self.probe_successes >= self.cfg.half_open_successes)
                    .then(|| self.close(Cause::ProbesSucceeded, ctx))
            }
            _ => Some(self.trip(Cause::ProbeFailed, ctx)),
        }
    }

    /// Ends an open or half-open period whose deadline has passed.
    pub(crate) fn on_deadline(&mut self, epoch: u64, ctx: Ctx) -> Option<Transition> {
        if epoch != self.epoch || self.deadline().is_none_or(|d| ctx.now < d) {
            return None;
        }
        match self.state {
            State::Open => {
                // Computed before anything changes: no setting can leave the
                // machine half-way through a transition.
                let until = later(ctx.now, self.cfg.half_open_max);
                let from = self.enter(State::HalfOpen);
                self.probes = 0;
                self.probe_successes = 0;
                self.half_open_until = Some(until);
                Some(self.transition(from, Cause::OpenElapsed, ctx, 0.0))
            }
            State::HalfOpen => Some(self.trip(Cause::HalfOpenTimedOut, ctx)),
            _ => None,
        }
    }

    /// Forces `target` (`ForcedOpen`, `Disabled` or `Closed`) by hand.
    /// Closing a closed circuit empties its window (a new epoch, no
    /// transition).
    pub(crate) fn force(&mut self, target: State, ctx: Ctx) -> Option<Transition> {
        if target == State::Closed {
            let t = self.close(Cause::Forced, ctx);
            return (t.from != t.to).then_some(t);
        }
        if target == self.state {
            return None;
        }
        match target {
            State::Closed => Some(self.close(Cause::Forced, ctx)),
            State::ForcedOpen | State::Disabled => {
                let from = self.enter(target);
                self.open_until = None;
                Some(self.transition(from, Cause::Forced, ctx, 0.0))
            }
            State::Open | State::HalfOpen => None,
        }
    }

    /// Closes the circuit with an empty window and no back-off history.
    pub(crate) fn reset(&mut self, ctx: Ctx) -> Option<Transition> {
        let t = self.close(Cause::Reset, ctx);
        (t.from != t.to).then_some(t)
    }

    pub(crate) fn snapshot(&self, ctx: Ctx) -> Snapshot {
        let closed = self.state == State::Closed;
        let figures = if closed {
            self.window.figures(ctx.fast, ctx.now)
        } else {
            Figures::default()
        };
        let next = self.window.next_position(ctx.fast);
        let current = closed && self.last_failure.is_some_and(|last| last + 1 == next);
        Snapshot {
            state: self.state,
            calls: figures.calls,
            failures: figures.failures,
            slow_calls: figures.slow,
            failure_rate: figures.failure_rate(),
            slow_call_rate: figures.slow_rate(),
            consecutive_failures: if current { self.consecutive } else { 0 },
            trips: self.trips,
            open_until: (self.state == State::Open)
                .then_some(self.open_until)
                .flatten(),
            probes_in_flight: if self.state == State::HalfOpen {
                self.probes
            } else {
                0
            },
        }
    }

    fn enter(&mut self, state: State) -> State {
        self.epoch += 1;
        std::mem::replace(&mut self.state, state)
    }

    fn transition(&self, from: State, reason: Cause, ctx: Ctx, rate: f64) -> Transition {
        Transition {
            from,
            to: self.state,
            reason,
            at: ctx.now,
            open_until: self.deadline().filter(|_| self.state == State::Open),
            failure_rate: rate,
        }
    }

    fn trip(&mut self, reason: Cause, ctx: Ctx) -> Transition {
        let rate = self.window.figures(ctx.fast, ctx.now).failure_rate();
        self.trips = self.trips.saturating_add(1);
        let until = later(ctx.now, self.open_duration());
        let from = self.enter(State::Open);
        self.open_until = Some(until);
        self.half_open_until = None;
        Transition {
            failure_rate: if from == State::Closed { rate } else { 0.0 },
            ..self.transition(from, reason, ctx, 0.0)
        }
    }

    fn close(&mut self, reason: Cause, ctx: Ctx) -> Transition {
        if reason != Cause::Forced {
            self.trips = 0;
        }
        let from = self.enter(State::Closed);
        self.window.reset(ctx.fast, ctx.now);
        self.consecutive = 0;
        self.last_failure = None;
        self.open_until = None;
        self.half_open_until = None;
        self.transition(from, reason, ctx, 0.0)
    }

    /// `open_for × multiplier^(trips − 1)`, capped, shortened by jitter and
    /// rounded to whole milliseconds (at least one).
    fn open_duration(&mut self) -> Duration {
        let c = &self.cfg;
        let exponent = i32::try_from(self.trips.saturating_sub(1))
            .unwrap_or(i32::MAX)
            .min(1024);
        let secs = (c.open_base.as_secs_f64() * c.open_multiplier.powi(exponent))
            .min(c.open_max().as_secs_f64());
        let unit = (splitmix64(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64;
        let secs = secs * (1.0 - c.open_jitter * unit);
        Duration::from_millis(((secs * 1000.0).round() as u64).max(1))
    }
}

/// `now + d`, or a time decades away where that would overflow
/// (`Duration::MAX` is a valid setting: "practically never").
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    now.checked_add(d.min(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests;
