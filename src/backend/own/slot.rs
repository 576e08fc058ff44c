//! One connection slot of a backend: its connection, and the one caller
//! at a time that connects it.

use std::sync::atomic::{AtomicBool, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::conn::Conn;
use crate::backend::error::RedisError;

/// At most one connect attempt per connection in this interval: while
/// Redis refuses, every other caller gets the last attempt's error at once,
/// and a down Redis sees a few attempts per second from this process.
pub(super) const RECONNECT_PACE: Duration = Duration::from_millis(100);

/// One multiplexed connection, made on demand and replaced when broken.
pub(super) struct Slot {
    /// The connection calls use, cloned out; `None` or flagged broken when
    /// a new one must be made.
    pub(super) current: RwLock<Option<Arc<Conn>>>,
    /// Set while one caller connects: one attempt at a time per slot, whose
    /// result every waiting caller shares.
    pub(super) connecting: AtomicBool,
    /// The last failed connect, shared with callers that arrive within
    /// [`RECONNECT_PACE`] of it.
    pub(super) failed: Mutex<Option<(tokio::time::Instant, RedisError)>>,
    /// Bumped when an attempt ends, made, failed or cancelled: wakes every
    /// caller waiting on it at once (a queue on a lock would hand the
    /// result on one caller at a time, too slowly for a burst of
    /// thousands).
    pub(super) ended: watch::Sender<u64>,
}

/// The one caller connecting a slot, until dropped (done or cancelled):
/// then the next may, and every waiter looks again.
pub(super) struct Leading<'a>(&'a Slot);

impl<'a> Leading<'a> {
    pub(super) fn try_new(slot: &'a Slot) -> Option<Self> {
        // Made only on success: a `Leading` dropped unused would hand the
        // lead on while another caller holds it.
        match slot
            .connecting
            .compare_exchange(false, true, Acquire, Relaxed)
        {
            Ok(_) => Some(Leading(slot)),
            Err(_) => None,
        }
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.0.connecting.store(false, Release);
        self.0.ended.send_modify(|n| *n = n.wrapping_add(1));
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slot {
    /// The last connect's error, if it failed within [`RECONNECT_PACE`].
    pub(super) fn recent_failure(&self) -> Option<RedisError> {
        let failed = lock(&self.failed);
        let (at, e) = failed.as_ref()?;
        (at.elapsed() < RECONNECT_PACE).then(|| e.clone())
    }

    /// The current connection, unless there is none or it is broken.
    pub(super) fn current(&self) -> Option<Arc<Conn>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().filter(|c| c.state.usable()).cloned()
    }

    pub(super) fn set(&self, conn: Arc<Conn>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(conn);
    }
}
