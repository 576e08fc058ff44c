//! The breaker handle: one circuit, shared by services and read by operators.

use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::config::Config;
use super::core::{state_of, Core};
use super::layer::CircuitBreakerLayer;
use super::state::{Snapshot, State, Transition};

/// A circuit: cheap to clone, and every clone is the same circuit.
///
/// Services made by one [`CircuitBreakerLayer`], and their clones, share its
/// breaker. To share one circuit between services built separately, make a
/// `Breaker` and hand it to each ([`CircuitBreakerLayer::with_breaker`],
/// [`CircuitBreaker::new`](super::CircuitBreaker::new)).
///
/// ```
/// use fusebox::breaker::{Breaker, Config, State};
///
/// let breaker = Breaker::new(Config::builder().name("billing").build()?);
/// assert_eq!(breaker.state(), State::Closed);
///
/// breaker.force_open(); // e.g. from an admin endpoint during maintenance
/// assert_eq!(breaker.state(), State::ForcedOpen);
/// breaker.reset();
/// assert_eq!(breaker.snapshot().calls, 0);
/// # Ok::<(), fusebox::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Breaker {
    shared: Arc<Shared>,
}

struct Shared {
    core: &'static Core,
    name: Arc<str>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.core.release();
    }
}

impl Breaker {
    /// Makes a closed circuit. Needs no runtime; timers are started on the
    /// runtime of whoever trips it (without one, rejections check the clock).
    pub fn new(config: Config) -> Self {
        let name: Arc<str> = config.name().into();
        let core = Core::acquire(config);
        Breaker {
            shared: Arc::new(Shared { core, name }),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current state (one atomic load).
    pub fn state(&self) -> State {
        state_of(self.shared.core.word())
    }

    /// The state with the window's figures.
    pub fn snapshot(&self) -> Snapshot {
        self.shared
            .core
            .snapshot()
            .expect("a live breaker always has a machine")
    }

    /// This breaker's configuration.
    pub fn config(&self) -> Config {
        self.shared
            .core
            .config()
            .expect("a live breaker always has a machine")
    }

    /// Opens the circuit until [`close`](Self::close) or
    /// [`reset`](Self::reset): every call is rejected.
    pub fn force_open(&self) {
        self.shared.core.force(State::ForcedOpen);
    }

    /// Switches the breaker off until [`close`](Self::close) or
    /// [`reset`](Self::reset): every call passes, nothing is recorded.
    pub fn disable(&self) {
        self.shared.core.force(State::Disabled);
    }

    /// Closes the circuit with an empty window, from any state. Back-off
    /// history is kept: if it trips again before recovering through probes,
    /// the next open period is longer.
    pub fn close(&self) {
        self.shared.core.force(State::Closed);
    }

    /// Closes the circuit with an empty window and no back-off history.
    pub fn reset(&self) {
        self.shared.core.reset();
    }

    /// Subscribes to this breaker's transitions, delivered in order. A
    /// receiver that falls more than 64 transitions behind loses the oldest
    /// (`RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.shared
            .core
            .subscribe()
            .expect("a live breaker always has a machine")
    }

    /// A layer whose services all use this circuit.
    pub fn layer(&self) -> CircuitBreakerLayer {
        CircuitBreakerLayer::with_breaker(self.clone())
    }

    pub(crate) fn core(&self) -> &'static Core {
        self.shared.core
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.name())
            .field("state", &self.state())
            .finish()
    }
}
