//! The error of a rejected call.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::state::State;

/// A call rejected because the circuit is open (or half-open with every
/// probe slot taken, or forced open).
///
/// Returned boxed, as the service's [`BoxError`](tower::BoxError); find it
/// with `err.is::<BreakerOpen>()` or `err.downcast_ref::<BreakerOpen>()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerOpen {
    state: State,
    retry_at: Option<Instant>,
}

impl BreakerOpen {
    pub(crate) fn new(state: State, retry_at: Option<Instant>) -> Self {
        BreakerOpen { state, retry_at }
    }

    /// The state that rejected the call: `Open`, `HalfOpen` or `ForcedOpen`.
    pub fn state(&self) -> State {
        self.state
    }

    /// When the open period ends and probes are let through, if known: set
    /// for `Open`; `None` when half-open (retry at once) or forced open (only
    /// a handle closes it).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// How long from now until [`retry_at`](Self::retry_at). Reads the clock.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.state {
            State::HalfOpen => "circuit breaker is half-open and its probes are taken",
            State::ForcedOpen => "circuit breaker is forced open",
            _ => "circuit breaker is open",
        })
    }
}

impl std::error::Error for BreakerOpen {}
