//! The error of a rejected call.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tower::BoxError;

use super::core::{state_of, Core};
use super::state::State;

/// A call rejected because the circuit is open (or half-open with every
/// probe slot taken, or forced open).
///
/// Returned as [`Error::Open`], without allocating; once converted into a
/// [`BoxError`](tower::BoxError), find it with `err.is::<BreakerOpen>()` or
/// `err.downcast_ref::<BreakerOpen>()`.
///
/// Two rejections are equal when their state and retry time are.
#[derive(Clone, Copy)]
pub struct BreakerOpen {
    /// The circuit's state word when the call was rejected.
    word: u64,
    /// The end of the open period, in nanoseconds since the core's base.
    /// Read at rejection; turned into an `Instant` only when asked for, so a
    /// rejection does no time arithmetic. Every field is a word, so moving
    /// the error never splits a load across narrower stores.
    open_until: u64,
    core: &'static Core,
}

impl BreakerOpen {
    #[inline]
    pub(crate) fn new(core: &'static Core, word: u64) -> Self {
        BreakerOpen {
            word,
            open_until: core.open_nanos(),
            core,
        }
    }

    /// The state that rejected the call: `Open`, `HalfOpen` or `ForcedOpen`.
    pub fn state(&self) -> State {
        state_of(self.word)
    }

    /// When the open period ends and probes are let through, if known: set
    /// for `Open`; `None` when half-open (retry at once) or forced open (only
    /// a handle closes it).
    pub fn retry_at(&self) -> Option<Instant> {
        (self.state() == State::Open).then(|| self.core.instant(self.open_until))
    }

    /// How long from now until [`retry_at`](Self::retry_at). Reads the clock.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_at()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.state() {
            State::HalfOpen => "circuit breaker is half-open and its probes are taken",
            State::ForcedOpen => "circuit breaker is forced open",
            _ => "circuit breaker is open",
        })
    }
}

impl std::error::Error for BreakerOpen {}

impl PartialEq for BreakerOpen {
    fn eq(&self, other: &Self) -> bool {
        (self.state(), self.retry_at()) == (other.state(), other.retry_at())
    }
}

impl Eq for BreakerOpen {}

impl fmt::Debug for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerOpen")
            .field("state", &self.state())
            .field("retry_at", &self.retry_at())
            .finish()
    }
}

/// The error of a [`CircuitBreaker`](super::CircuitBreaker): its own
/// rejection, or the inner service's error, unboxed.
///
/// A rejection costs no allocation: match on it where the caller handles
/// it (a fail-open layer turns it into a miss). Where a tower stack wants a
/// [`BoxError`](tower::BoxError), `?` or `.into()` flattens it: the box holds the
/// [`BreakerOpen`] or the inner error itself (not this wrapper), so
/// `err.is::<BreakerOpen>()` and `err.is::<YourError>()` keep working. For
/// that flattening, this type deliberately does not implement
/// [`std::error::Error`] (the standard library's blanket conversion into a
/// box would otherwise wrap it).
///
/// ```
/// use fusebox::breaker::{BreakerOpen, Error, State};
/// use tower::BoxError;
///
/// fn explain(err: Error<std::io::Error>) -> String {
///     match err {
///         Error::Open(open) => format!("skipped: {open}"),
///         Error::Inner(e) => format!("failed: {e}"),
///     }
/// }
/// let io = std::io::Error::other("reset");
/// assert_eq!(explain(Error::Inner(io)), "failed: reset");
///
/// let boxed: BoxError = Error::<std::io::Error>::Inner(std::io::Error::other("x")).into();
/// assert!(boxed.is::<std::io::Error>());
/// ```
#[derive(Debug)]
pub enum Error<E> {
    /// The circuit rejected the call; the inner service was not called.
    Open(BreakerOpen),
    /// The inner service failed (in `poll_ready` or in its response).
    Inner(E),
}

impl<E> Error<E> {
    /// Whether the circuit rejected the call.
    pub fn is_open(&self) -> bool {
        matches!(self, Error::Open(_))
    }

    /// The rejection, if the circuit rejected the call.
    pub fn as_open(&self) -> Option<&BreakerOpen> {
        match self {
            Error::Open(open) => Some(open),
            Error::Inner(_) => None,
        }
    }

    /// The inner service's error, if it failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Open(_) => None,
            Error::Inner(e) => Some(e),
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open(open) => open.fmt(f),
            Error::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: Into<BoxError>> From<Error<E>> for BoxError {
    /// Flattens: the box holds the [`BreakerOpen`] or the inner error.
    fn from(err: Error<E>) -> BoxError {
        match err {
            Error::Open(open) => Box::new(open),
            Error::Inner(e) => e.into(),
        }
    }
}
