//! A connection and what its calls share of it: the in-flight count that
//! sheds a call beyond the limit, and the counts that tell a slow Redis
//! from a process too busy to read its answers.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// A multiplexed connection and what its calls share of it.
#[derive(Clone)]
pub(super) struct Conn {
    pub(super) inner: MultiplexedConnection,
    pub(super) state: Arc<ConnState>,
}

pub(super) struct ConnState {
    /// Set when the connection must not be used again.
    pub(super) broken: AtomicBool,
    /// Calls sent and not yet answered (or given up).
    in_flight: AtomicUsize,
    /// Calls answered so far.
    pub(super) answered: AtomicU64,
    /// For a connection leased from a pool (which sends no push when it
    /// drops): the count of connections its backend lost, and its value
    /// when this one was made. A connection lost says Redis may have gone
    /// (a restart), so the others are replaced too rather than fail their
    /// next call.
    pub(super) lost: Option<(Arc<AtomicU64>, u64)>,
    /// The calls waiting to go out together.
    pub(super) batches: super::batch::Batches,
    /// The connection of its own its batches go out on, where it can have
    /// one (see [`super::pipe`]).
    pub(super) pipe: Option<Arc<super::pipe::Pipe>>,
}

impl Drop for ConnState {
    fn drop(&mut self) {
        if let Some(pipe) = &self.pipe {
            pipe.close();
        }
    }
}

impl ConnState {
    /// The state of a new connection, with its batches' own connection if
    /// it has one.
    pub(super) fn new(pipe: Option<Arc<super::pipe::Pipe>>) -> Self {
        ConnState {
            broken: AtomicBool::default(),
            in_flight: AtomicUsize::default(),
            answered: AtomicU64::default(),
            lost: None,
            batches: super::batch::Batches::default(),
            pipe,
        }
    }

    /// The state of a connection leased now, of a backend that lost `lost`.
    #[cfg(any(feature = "bb8", feature = "deadpool"))]
    pub(super) fn leased(lost: &Arc<AtomicU64>) -> Self {
        let mut state = ConnState::new(None);
        state.lost = Some((lost.clone(), lost.load(Relaxed)));
        state
    }

    /// Whether calls may use the connection.
    pub(super) fn usable(&self) -> bool {
        !self.broken.load(Relaxed)
            && self
                .lost
                .as_ref()
                .is_none_or(|(lost, born)| lost.load(Relaxed) == *born)
    }

    /// Flags the connection never to be used again.
    pub(super) fn lose(&self) {
        self.broken.store(true, Relaxed);
        if let Some((lost, _)) = &self.lost {
            lost.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn answered(&self) -> u64 {
        self.answered.load(Relaxed)
    }

    /// Counts `n` calls answered.
    pub(super) fn answered_many(&self, n: usize) {
        self.answered.fetch_add(n as u64, Relaxed);
    }

    /// Whether a call sent at `sent` (when `answered` calls had been
    /// answered) that timed out says this process, not Redis, fell behind:
    /// Redis answered other calls since and the timeout was noticed [`LATE`]
    /// or more after its deadline (a healthy runtime notices within a
    /// millisecond; a hung Redis answers nothing; a slow one is noticed on
    /// time), or it was [noticed well past its deadline](noticed_late), or
    /// the runtime is [`backlogged`].
    pub(super) fn starved(
        &self,
        sent: tokio::time::Instant,
        answered: u64,
        deadline: Duration,
    ) -> bool {
        let late = sent.elapsed() > deadline.saturating_add(LATE);
        (self.answered() > answered && late) || noticed_late(sent, deadline) || backlogged()
    }
}

/// Whether the runtime has a backlog of runnable tasks (its shared queue,
/// where the tasks its workers cannot hold go): the connection's own task,
/// which reads the answers, then waits behind all of them, so deadlines
/// pass with the answers unread.
pub(in crate::backend) fn backlogged() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|h| h.metrics().global_queue_depth() >= BACKLOG)
}

/// Runnable tasks waiting in a runtime's shared queue that make it
/// backlogged.
const BACKLOG: usize = 128;

/// How late a deadline must be noticed to say the runtime fell behind.
pub(in crate::backend) const LATE: Duration = Duration::from_millis(5);

/// One call counted in flight on a connection, until dropped. (Borrowed,
/// not a clone of the state's `Arc`: two fewer writes per call to memory
/// every thread shares.)
pub(super) struct InFlight<'a> {
    state: &'a ConnState,
    /// Whether no other call was in flight on the connection.
    alone: bool,
}

impl<'a> InFlight<'a> {
    /// Counts a call in, unless `max` are in flight already.
    pub(super) fn enter(state: &'a ConnState, max: usize) -> Option<InFlight<'a>> {
        let before = state.in_flight.fetch_add(1, Relaxed);
        if before >= max {
            state.in_flight.fetch_sub(1, Relaxed);
            return None;
        }
        Some(InFlight {
            state,
            alone: before == 0,
        })
    }

    /// Whether no other call was in flight on the connection when this
    /// one was counted in.
    pub(super) fn alone(&self) -> bool {
        self.alone
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Whether a wait bounded by `deadline` that began at `start` is being
/// noticed late: more than a quarter of the deadline and [`LATE`] after it
/// passed. A healthy runtime notices within a millisecond or so; one whose
/// workers are behind (thousands of runnable tasks) notices far later, and
/// the answer it timed out on may be waiting, unread, on the socket.
pub(super) fn noticed_late(start: tokio::time::Instant, deadline: Duration) -> bool {
    let limit = deadline.saturating_add(deadline / 4).saturating_add(LATE);
    start.elapsed() > limit
}
