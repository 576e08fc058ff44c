//! Single flight, for the cache's `get_or_load` and the HTTP and gRPC
//! response caches alike: concurrent misses for one key share one load.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, PoisonError};

use crate::sync::atomic::{AtomicBool, Ordering::Relaxed};
use crate::sync::Mutex;

use bytes::Bytes;
use tokio::sync::watch;

/// How a [`Flights::coalesce`] call was answered; when this caller did not
/// lead, it gets its own work (`A`) back, unused.
#[derive(Debug)]
pub(crate) enum Coalesced<T, A> {
    /// This caller ran the load.
    Led(T),
    /// Another caller's shared result.
    Shared(Bytes, A),
    /// Another caller's result could not be shared: do the work directly.
    Direct(A),
}

/// What [`Cache::in_flight`](crate::cache::Cache::in_flight) sees: the single-flight table, which holds
/// only the keys being loaded and shrinks back when a burst has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct InFlight {
    /// Keys being loaded now.
    pub keys: usize,
    /// Keys the table has room for without growing.
    pub capacity: usize,
}

/// One in-flight load: followers wait for `done`, then read `value`.
struct Flight {
    done: watch::Sender<bool>,
    value: OnceLock<Bytes>,
    /// The leader's result may not be shared: followers do their own work.
    direct: AtomicBool,
}

impl Flight {
    fn new() -> Self {
        Flight {
            done: watch::channel(false).0,
            value: OnceLock::new(),
            direct: AtomicBool::new(false),
        }
    }
}

/// The table of keys being loaded right now, and nothing else.
#[derive(Default)]
pub(crate) struct Flights(Mutex<HashMap<Bytes, Arc<Flight>>>);

/// The flight table is never shrunk below this many keys.
pub(crate) const MIN_CAPACITY: usize = 64;

impl Flights {
    /// The first caller for `key` runs `load` with `work`; callers that
    /// arrive meanwhile wait for it. `load` returns its own result and, if
    /// it may be shared, the bytes to hand to the waiters with what `store`
    /// needs to store them (`store` runs before the waiters wake, so that
    /// they find the value in Redis too). When it may not be shared, the
    /// waiters are told to do the work themselves ([`Coalesced::Direct`]);
    /// when it fails or is cancelled, one waiter leads in its place. A
    /// caller that did not lead gets `work` back.
    pub(crate) async fn coalesce<A, T, X, E, F, Fut, S, SFut>(
        &self,
        key: &Bytes,
        work: A,
        load: F,
        store: S,
    ) -> Result<Coalesced<T, A>, E>
    where
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = Result<(T, Option<(Bytes, X)>), E>>,
        S: FnOnce(Bytes, X) -> SFut,
        SFut: Future<Output = ()>,
    {
        loop {
            let (flight, leader) = {
                let mut flights = self.0.lock().unwrap_or_else(PoisonError::into_inner);
                match flights.get(key) {
                    Some(f) => (f.clone(), false),
                    None => {
                        let f = Arc::new(Flight::new());
                        flights.insert(key.clone(), f.clone());
                        (f, true)
                    }
                }
            };
            if !leader {
                let mut done = flight.done.subscribe();
                let _ = done.wait_for(|d| *d).await;
                if let Some(v) = flight.value.get() {
                    return Ok(Coalesced::Shared(v.clone(), work));
                }
                if flight.direct.load(Relaxed) {
                    return Ok(Coalesced::Direct(work));
                }
                // The leader failed or was cancelled: try to lead.
                continue;
            }
            let own = self.lead(key, &flight, || load(work), store).await?;
            return Ok(Coalesced::Led(own));
        }
    }

    /// Leads a refresh of `key` unless a flight for it is under way (then
    /// `None` at once: the caller keeps what it has). As a leader of
    /// [`coalesce`](Self::coalesce), callers arriving meanwhile share the
    /// result.
    pub(crate) async fn try_lead<T, X, E, F, Fut, S, SFut>(
        &self,
        key: &Bytes,
        load: F,
        store: S,
    ) -> Option<Result<T, E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Option<(Bytes, X)>), E>>,
        S: FnOnce(Bytes, X) -> SFut,
        SFut: Future<Output = ()>,
    {
        let flight = {
            let mut flights = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if flights.contains_key(key) {
                return None;
            }
            let f = Arc::new(Flight::new());
            flights.insert(key.clone(), f.clone());
            f
        };
        Some(self.lead(key, &flight, load, store).await)
    }

    /// Runs `load` as `flight`'s leader; stores and hands on what it may
    /// share. Lands (or is cancelled) with the flight removed and the
    /// followers woken.
    async fn lead<T, X, E, F, Fut, S, SFut>(
        &self,
        key: &Bytes,
        flight: &Arc<Flight>,
        load: F,
        store: S,
    ) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Option<(Bytes, X)>), E>>,
        S: FnOnce(Bytes, X) -> SFut,
        SFut: Future<Output = ()>,
    {
        let mut guard = Landing {
            flights: self,
            key,
            flight,
            landed: false,
        };
        let (own, share) = load().await?;
        match share {
            Some((value, extra)) => {
                store(value.clone(), extra).await;
                let _ = flight.value.set(value);
            }
            None => flight.direct.store(true, Relaxed),
        }
        guard.landed = true;
        drop(guard);
        Ok(own)
    }

    /// How many callers wait on `key`'s flight (`None`: no flight).
    #[cfg(test)]
    pub(crate) fn followers(&self, key: &Bytes) -> Option<usize> {
        let flights = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        flights.get(key).map(|f| f.done.receiver_count())
    }

    /// Keys in flight, and the table's capacity.
    pub(crate) fn size(&self) -> InFlight {
        let flights = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        InFlight {
            keys: flights.len(),
            capacity: flights.capacity(),
        }
    }
}

/// Ends a flight when dropped, whether the leader finished or was
/// cancelled: removes it from the table, then wakes the followers.
struct Landing<'a> {
    flights: &'a Flights,
    key: &'a Bytes,
    flight: &'a Arc<Flight>,
    /// The leader finished (else it failed or was cancelled).
    landed: bool,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let mut flights = self
            .flights
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight))
        {
            flights.remove(self.key);
            // A burst of distinct keys must not keep its peak table for
            // good: shrink once it is three-quarters empty. (Its exact
            // thresholds are a memory trade-off: mutants of them survive
            // the tests, which check only that the peak goes.)
            if flights.capacity() > MIN_CAPACITY && flights.len() < flights.capacity() / 4 {
                let keep = MIN_CAPACITY.max(flights.len() * 2);
                flights.shrink_to(keep);
            }
        }
        drop(flights);
        // Woken whether the leader landed or not (the seed is for the loom
        // model, which must catch a cancelled leader that wakes no one).
        if self.landed || !crate::sync::seeded("flight_no_wake_on_cancel") {
            self.flight.done.send_replace(true);
        }
    }
}

#[cfg(all(test, fusebox_loom))]
mod models;
#[cfg(all(test, not(fusebox_loom)))]
mod tests;
