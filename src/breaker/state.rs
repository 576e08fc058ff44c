//! What a circuit is in, and what it went through: states, transitions,
//! their reasons, and readings. The machine that moves between them is in
//! [`machine`](super::machine).

use std::fmt;

use tokio::time::Instant;

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
pub enum Cause {
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

impl Cause {
    /// A short, stable name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::FailureRate => "failure_rate",
            Cause::SlowCallRate => "slow_call_rate",
            Cause::ConsecutiveFailures => "consecutive_failures",
            Cause::OpenElapsed => "open_elapsed",
            Cause::ProbesSucceeded => "probes_succeeded",
            Cause::ProbeFailed => "probe_failed",
            Cause::HalfOpenTimedOut => "half_open_timed_out",
            Cause::Forced => "forced",
            Cause::Reset => "reset",
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
    pub reason: Cause,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are metrics labels and the codes the lock-free word:
    /// both must stay as they are (mutation testing found them unchecked
    /// by the unit tests).
    #[test]
    fn names_codes_and_rejection_are_stable() {
        let all = [
            (State::Closed, "closed", false),
            (State::Open, "open", true),
            (State::HalfOpen, "half_open", false),
            (State::ForcedOpen, "forced_open", true),
            (State::Disabled, "disabled", false),
        ];
        for (state, name, rejecting) in all {
            assert_eq!(state.as_str(), name);
            assert_eq!(state.to_string(), name);
            assert_eq!(state.is_rejecting(), rejecting, "{name}");
            assert_eq!(State::from_code(state.code()), state);
        }
        let causes = [
            (Cause::FailureRate, "failure_rate"),
            (Cause::SlowCallRate, "slow_call_rate"),
            (Cause::ConsecutiveFailures, "consecutive_failures"),
            (Cause::OpenElapsed, "open_elapsed"),
            (Cause::ProbesSucceeded, "probes_succeeded"),
            (Cause::ProbeFailed, "probe_failed"),
            (Cause::HalfOpenTimedOut, "half_open_timed_out"),
            (Cause::Forced, "forced"),
            (Cause::Reset, "reset"),
        ];
        for (cause, name) in causes {
            assert_eq!(cause.as_str(), name);
        }
    }
}
