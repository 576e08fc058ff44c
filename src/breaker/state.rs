//! The breaker's state machine: pure logic, no atomics, no futures, no clock.
//!
//! Everything that changes state goes through [`Machine`], under the core's
//! lock; the caller passes the time and the running total of fast successes.
//! Every transition bumps the epoch, and outcomes of calls admitted in an
//! earlier epoch are discarded, so a slow call admitted before a trip can
//! never count as a probe, nor a stale probe close a re-opened circuit.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::classify::Outcome;
use super::config::Config;
use super::window::{Figures, WindowState};

/// The state of a circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass and their outcomes are recorded.
    Closed,
    /// Calls are rejected until the open period ends.
    Open,
    /// A limited number of probe calls pass; their outcomes decide whether
    /// the circuit closes or re-opens.
    HalfOpen,
    /// Opened by hand: calls are rejected until the circuit is closed or
    /// reset by hand.
    ForcedOpen,
    /// Switched off by hand: calls pass and nothing is recorded.
    Disabled,
}

impl State {
    /// A short, stable name: `closed`, `open`, `half_open`, `forced_open`,
    /// `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    /// Whether calls are being rejected in this state (probes aside).
    pub fn is_rejecting(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }

    pub(crate) fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
        }
    }

    pub(crate) fn from_code(code: u64) -> State {
        match code {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::Disabled,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The failure rate of the window reached the threshold.
    FailureRate,
    /// The slow-call rate of the window reached the threshold.
    SlowCallRate,
    /// The consecutive-failure threshold was reached.
    ConsecutiveFailures,
    /// The open period ended.
    OpenElapsed,
    /// Enough probes succeeded.
    ProbesSucceeded,
    /// A probe failed (or was slow).
    ProbeFailed,
    /// The half-open period ended before enough probes succeeded.
    HalfOpenTimedOut,
    /// A handle forced the state.
    Forced,
    /// A handle reset the breaker.
    Reset,
}

impl Reason {
    /// A short, stable name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::FailureRate => "failure_rate",
            Reason::SlowCallRate => "slow_call_rate",
            Reason::ConsecutiveFailures => "consecutive_failures",
            Reason::OpenElapsed => "open_elapsed",
            Reason::ProbesSucceeded => "probes_succeeded",
            Reason::ProbeFailed => "probe_failed",
            Reason::HalfOpenTimedOut => "half_open_timed_out",
            Reason::Forced => "forced",
            Reason::Reset => "reset",
        }
    }
}

/// A change of state, as delivered to subscribers.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// When.
    pub at: Instant,
    /// When an open period ends (for `to == Open`).
    pub open_until: Option<Instant>,
    /// The failure rate of the window when the circuit tripped.
    pub failure_rate: f64,
}

/// The time and the running total of fast successes, handed to the machine.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub(crate) now: Instant,
    pub(crate) fast: u64,
}

/// A point-in-time reading of a breaker.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The current state.
    pub state: State,
    /// Calls in the window (closed state; zero otherwise).
    pub calls: u64,
    /// Failures in the window.
    pub failures: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// `failures / calls`, or 0 with no calls.
    pub failure_rate: f64,
    /// `slow_calls / calls`, or 0 with no calls.
    pub slow_call_rate: f64,
    /// Failures in a row up to now.
    pub consecutive_failures: u32,
    /// Trips since the circuit last closed through probes (drives back-off).
    pub trips: u32,
    /// When the open period ends, while open.
    pub open_until: Option<Instant>,
    /// Probes running now, while half-open.
    pub probes_in_flight: u32,
}

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
        if epoch != self.epoch || self.state != State::Closed || outcome == Outcome::Ignored {
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
                return Some(self.trip(Reason::ConsecutiveFailures, ctx));
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
            return Some(self.trip(Reason::FailureRate, ctx));
        }
        match self.cfg.slow {
            Some(s) if figures.slow_rate() >= s.rate => Some(self.trip(Reason::SlowCallRate, ctx)),
            _ => None,
        }
    }

    /// Admits a probe, if the circuit is half-open in `epoch` and a probe
    /// slot is free.
    pub(crate) fn try_acquire_probe(&mut self, epoch: u64) -> bool {
        let admit = epoch == self.epoch
            && self.state == State::HalfOpen
            && self.probes < self.cfg.half_open_probes;
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
                    .then(|| self.close(Reason::ProbesSucceeded, ctx))
            }
            _ => Some(self.trip(Reason::ProbeFailed, ctx)),
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
                Some(self.transition(from, Reason::OpenElapsed, ctx, 0.0))
            }
            State::HalfOpen => Some(self.trip(Reason::HalfOpenTimedOut, ctx)),
            _ => None,
        }
    }

    /// Forces `target` (`ForcedOpen`, `Disabled` or `Closed`) by hand.
    /// Closing a closed circuit empties its window (a new epoch, no
    /// transition).
    pub(crate) fn force(&mut self, target: State, ctx: Ctx) -> Option<Transition> {
        if target == State::Closed {
            let t = self.close(Reason::Forced, ctx);
            return (t.from != t.to).then_some(t);
        }
        if target == self.state {
            return None;
        }
        match target {
            State::Closed => Some(self.close(Reason::Forced, ctx)),
            State::ForcedOpen | State::Disabled => {
                let from = self.enter(target);
                self.open_until = None;
                Some(self.transition(from, Reason::Forced, ctx, 0.0))
            }
            State::Open | State::HalfOpen => None,
        }
    }

    /// Closes the circuit with an empty window and no back-off history.
    pub(crate) fn reset(&mut self, ctx: Ctx) -> Option<Transition> {
        let t = self.close(Reason::Reset, ctx);
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

    fn transition(&self, from: State, reason: Reason, ctx: Ctx, rate: f64) -> Transition {
        Transition {
            from,
            to: self.state,
            reason,
            at: ctx.now,
            open_until: self.deadline().filter(|_| self.state == State::Open),
            failure_rate: rate,
        }
    }

    fn trip(&mut self, reason: Reason, ctx: Ctx) -> Transition {
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

    fn close(&mut self, reason: Reason, ctx: Ctx) -> Transition {
        if reason != Reason::Forced {
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
mod tests {
    use super::*;
    use Outcome::{Failure, Ignored, Success};

    fn machine(b: crate::breaker::ConfigBuilder) -> (Machine, Instant) {
        let now = Instant::now();
        let cfg = b.open_jitter(0.0).build().unwrap();
        (Machine::new(cfg, 0, Ctx { now, fast: 0 }), now)
    }

    fn at(now: Instant, fast: u64) -> Ctx {
        Ctx { now, fast }
    }

    #[test]
    fn failure_rate_trips_only_after_minimum_calls() {
        let b = Config::builder()
            .count_window(10)
            .minimum_calls(4)
            .consecutive_failures(0);
        let (mut m, now) = machine(b);
        assert!(m.on_call(0, Failure, false, at(now, 0)).is_none());
        assert!(m.on_call(0, Failure, false, at(now, 0)).is_none());
        // F, F, two fast successes, F: 5 calls, 3 failures.
        let t = m.on_call(0, Failure, false, at(now, 2)).unwrap();
        assert_eq!(
            (t.from, t.to, t.reason),
            (State::Closed, State::Open, Reason::FailureRate)
        );
        assert_eq!(t.failure_rate, 0.6);
        assert_eq!(t.open_until, Some(now + Duration::from_secs(5)));
        assert_eq!(m.epoch(), 1);
    }

    #[test]
    fn successes_never_trip_and_dilute_the_rate() {
        let b = Config::builder()
            .count_window(10)
            .minimum_calls(2)
            .failure_rate(0.5);
        let (mut m, now) = machine(b.consecutive_failures(0));
        assert!(m.on_call(0, Failure, false, at(now, 0)).is_none());
        // 1 failure, 3 successes, 1 failure: 2 / 5 < 0.5.
        assert!(m.on_call(0, Failure, false, at(now, 3)).is_none());
        assert_eq!(m.snapshot(at(now, 3)).failures, 2);
        assert_eq!(m.snapshot(at(now, 3)).calls, 5);
    }

    #[test]
    fn consecutive_failures_trip_and_a_success_breaks_the_run() {
        let b = Config::builder().consecutive_failures(3);
        let (mut m, now) = machine(b);
        m.on_call(0, Failure, false, at(now, 0));
        m.on_call(0, Failure, false, at(now, 0));
        assert_eq!(m.snapshot(at(now, 0)).consecutive_failures, 2);
        // A success in between restarts the run.
        assert!(m.on_call(0, Failure, false, at(now, 1)).is_none());
        assert_eq!(m.snapshot(at(now, 1)).consecutive_failures, 1);
        m.on_call(0, Failure, false, at(now, 1));
        let t = m.on_call(0, Failure, false, at(now, 1)).unwrap();
        assert_eq!(t.reason, Reason::ConsecutiveFailures);
    }

    #[test]
    fn slow_calls_trip_on_their_own_rate() {
        let b = Config::builder()
            .count_window(4)
            .minimum_calls(4)
            .slow_calls(Duration::from_millis(10), 0.5);
        let (mut m, now) = machine(b);
        assert!(m.on_call(0, Success, true, at(now, 0)).is_none());
        assert!(m.on_call(0, Success, true, at(now, 1)).is_none());
        let t = m.on_call(0, Success, false, at(now, 2));
        assert!(t.is_none(), "a plain success never trips");
        // 4 calls: slow, fast, slow, (locked success) -> now a 4th slow one.
        let t = m.on_call(0, Success, true, at(now, 2)).unwrap();
        assert_eq!(t.reason, Reason::SlowCallRate);
    }

    #[test]
    fn open_half_open_closed_with_probe_limits() {
        let b = Config::builder()
            .consecutive_failures(1)
            .half_open_probes(2)
            .half_open_successes(2);
        let (mut m, now) = machine(b);
        m.on_call(0, Failure, false, at(now, 0)).unwrap();
        assert!(!m.try_acquire_probe(1), "no probes while open");
        let early = now + Duration::from_millis(4999);
        assert!(m.on_deadline(1, at(early, 0)).is_none());
        let later = now + Duration::from_secs(5);
        let t = m.on_deadline(1, at(later, 0)).unwrap();
        assert_eq!((t.to, t.reason), (State::HalfOpen, Reason::OpenElapsed));
        assert!(m.try_acquire_probe(2));
        assert!(m.try_acquire_probe(2));
        assert!(!m.try_acquire_probe(2), "only two probes at once");
        m.release_probe(2);
        assert!(m.try_acquire_probe(2), "a cancelled probe frees its slot");
        assert!(m.on_probe(2, Success, false, at(later, 0)).is_none());
        assert!(m.on_probe(2, Ignored, false, at(later, 0)).is_none());
        assert_eq!(m.snapshot(at(later, 0)).probes_in_flight, 0);
        assert!(m.try_acquire_probe(2));
        let t = m.on_probe(2, Success, false, at(later, 0)).unwrap();
        assert_eq!((t.to, t.reason), (State::Closed, Reason::ProbesSucceeded));
        assert_eq!(m.snapshot(at(later, 0)).trips, 0);
    }

    #[test]
    fn failed_probes_back_off_up_to_the_cap() {
        let b = Config::builder()
            .consecutive_failures(1)
            .open_for(Duration::from_secs(1))
            .open_backoff(3.0, Duration::from_secs(5));
        let (mut m, mut now) = machine(b);
        m.on_call(0, Failure, false, at(now, 0)).unwrap();
        let mut durations = vec![];
        for _ in 0..4 {
            let until = m.open_until().unwrap();
            durations.push(until - now);
            now = until;
            m.on_deadline(m.epoch(), at(now, 0)).unwrap();
            assert!(m.try_acquire_probe(m.epoch()));
            let t = m.on_probe(m.epoch(), Failure, false, at(now, 0)).unwrap();
            assert_eq!(t.reason, Reason::ProbeFailed);
        }
        let secs: Vec<u64> = durations.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 3, 5, 5]);
    }

    #[test]
    fn half_open_times_out_and_reopens() {
        let b = Config::builder()
            .consecutive_failures(1)
            .half_open_max_duration(Duration::from_secs(2));
        let (mut m, now) = machine(b);
        m.on_call(0, Failure, false, at(now, 0)).unwrap();
        let t1 = now + Duration::from_secs(5);
        m.on_deadline(1, at(t1, 0)).unwrap();
        assert!(m.try_acquire_probe(2));
        assert!(m
            .on_deadline(2, at(t1 + Duration::from_millis(1999), 0))
            .is_none());
        let t = m
            .on_deadline(2, at(t1 + Duration::from_secs(2), 0))
            .unwrap();
        assert_eq!((t.to, t.reason), (State::Open, Reason::HalfOpenTimedOut));
        // The hung probe's late outcome belongs to an old epoch.
        assert!(m.on_probe(2, Success, false, at(t1, 0)).is_none());
        assert_eq!(m.state(), State::Open);
    }

    #[test]
    fn stale_outcomes_are_discarded() {
        let (mut m, now) = machine(Config::builder().consecutive_failures(1));
        m.on_call(0, Failure, false, at(now, 0)).unwrap();
        assert!(m.on_call(0, Failure, false, at(now, 0)).is_none());
        m.force(State::Closed, at(now, 0)).unwrap();
        assert!(m.on_call(1, Failure, false, at(now, 0)).is_none());
        assert_eq!(m.state(), State::Closed);
    }

    #[test]
    fn forced_states_and_reset() {
        let (mut m, now) = machine(Config::builder().consecutive_failures(1));
        let t = m.force(State::ForcedOpen, at(now, 0)).unwrap();
        assert_eq!((t.from, t.to), (State::Closed, State::ForcedOpen));
        assert!(m.force(State::ForcedOpen, at(now, 0)).is_none());
        assert!(m
            .on_deadline(m.epoch(), at(now + Duration::from_secs(999), 0))
            .is_none());
        m.force(State::Disabled, at(now, 0)).unwrap();
        assert!(m.on_call(m.epoch(), Failure, false, at(now, 0)).is_none());
        assert_eq!(m.state(), State::Disabled);
        let t = m.reset(at(now, 0)).unwrap();
        assert_eq!((t.to, t.reason), (State::Closed, Reason::Reset));
        assert!(
            m.reset(at(now, 0)).is_none(),
            "closed to closed is no transition"
        );
    }

    #[test]
    fn closing_a_closed_circuit_empties_its_window() {
        let b = Config::builder().consecutive_failures(2);
        let (mut m, now) = machine(b);
        m.on_call(0, Failure, false, at(now, 0));
        assert_eq!(m.snapshot(at(now, 0)).failures, 1);
        assert!(
            m.force(State::Closed, at(now, 0)).is_none(),
            "no transition"
        );
        let s = m.snapshot(at(now, 0));
        assert_eq!((s.failures, s.consecutive_failures), (0, 0));
        // One failure after the close does not complete the old run.
        let epoch = m.epoch();
        assert!(m.on_call(epoch, Failure, false, at(now, 0)).is_none());
        assert_eq!(m.state(), State::Closed);
    }

    #[test]
    fn durations_at_their_maximum_never_overflow() {
        let b = Config::builder()
            .consecutive_failures(1)
            .open_for(Duration::MAX)
            .half_open_max_duration(Duration::MAX);
        let (mut m, now) = machine(b);
        let t = m.on_call(0, Failure, false, at(now, 0)).unwrap();
        assert!(t.open_until.unwrap() > now + Duration::from_secs(3600));
        let (b, _) = machine(
            Config::builder()
                .consecutive_failures(1)
                .open_for(Duration::from_millis(1))
                .half_open_max_duration(Duration::MAX),
        );
        let mut m = b;
        m.on_call(0, Failure, false, at(now, 0)).unwrap();
        let later = now + Duration::from_millis(1);
        let t = m.on_deadline(m.epoch(), at(later, 0)).unwrap();
        assert_eq!(t.to, State::HalfOpen);
        assert!(m.deadline().unwrap() > later + Duration::from_secs(3600));
    }

    #[test]
    fn jitter_shortens_within_bounds() {
        let cfg = Config::builder()
            .open_jitter(0.5)
            .jitter_seed(7)
            .build()
            .unwrap();
        let now = Instant::now();
        let mut m = Machine::new(cfg, 0, Ctx { now, fast: 0 });
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            m.trips = 1;
            let d = m.open_duration();
            assert!(
                d >= Duration::from_millis(2500) && d <= Duration::from_secs(5),
                "{d:?}"
            );
            seen.insert(d);
        }
        assert!(seen.len() > 10, "jitter varies: {seen:?}");
    }
}
