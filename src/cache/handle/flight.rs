//! Single flight: concurrent misses for one key share one load.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, PoisonError};

use bytes::Bytes;
use tokio::sync::watch;

use super::{Cache, Shared};
#[cfg(feature = "serde")]
use crate::request::Reason;
use crate::request::Ttl;

/// One in-flight load: followers wait for `done`, then read `value`.
pub(super) struct Flight {
    pub(super) done: watch::Sender<bool>,
    value: OnceLock<Bytes>,
    /// The leader's result may not be shared: followers do their own work.
    direct: AtomicBool,
}

/// How a [`Cache::coalesce`] call was answered; when this caller did not
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

impl<B: super::Backend> Cache<B> {
    /// The value at `key`; on a miss, runs `load`, stores its value with the
    /// default TTL, and returns it.
    ///
    /// Concurrent misses for one key in this process share one `load` call
    /// (single flight): the others wait for it and take its value. If that
    /// call fails or is cancelled, one waiter loads in its place. Only keys
    /// being loaded right now are remembered. `load`'s errors are returned;
    /// cache errors never are (a failed store is counted and skipped).
    pub async fn get_or_load<F, Fut, V, E>(
        &self,
        key: impl AsRef<[u8]>,
        load: F,
    ) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        V: Into<Bytes>,
    {
        let key = key.as_ref();
        if let Some(v) = self.get(key).await {
            return Ok(v);
        }
        self.load_through(key, || async { Ok(load().await?.into()) })
            .await
    }

    /// The single flight behind `get_or_load`: runs `load` unless another
    /// caller is loading `key`, in which case it takes that caller's value.
    async fn load_through<F, Fut, E>(&self, key: &[u8], load: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let ttl = self.shared.options.default_ttl;
        let loaded = self
            .coalesce(key, load, |load| async move {
                let value = load().await?;
                Ok((value.clone(), Some((value, ttl))))
            })
            .await?;
        match loaded {
            Coalesced::Led(value) | Coalesced::Shared(value, _) => Ok(value),
            // The leader's answer was not for sharing (an HTTP layer's,
            // under the same key): load, without storing over it.
            Coalesced::Direct(load) => load().await,
        }
    }

    /// Single flight: the first caller for `key` runs `load` with `work`;
    /// callers that arrive meanwhile wait for it. `load` returns its own
    /// result and, if it may be shared, the bytes to store (with their TTL)
    /// and hand to the waiters. When it may not be shared, the waiters are
    /// told to do the work themselves ([`Coalesced::Direct`]); when it fails
    /// or is cancelled, one waiter leads in its place. A caller that did not
    /// lead gets `work` back.
    pub(crate) async fn coalesce<A, T, F, Fut, E>(
        &self,
        key: &[u8],
        work: A,
        load: F,
    ) -> Result<Coalesced<T, A>, E>
    where
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = Result<(T, Option<(Bytes, Ttl)>), E>>,
    {
        let full = self.key(key);
        loop {
            let (flight, leader) = {
                let mut flights = self
                    .shared
                    .flights
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match flights.get(&full) {
                    Some(f) => (f.clone(), false),
                    None => {
                        let f = Arc::new(Flight {
                            done: watch::channel(false).0,
                            value: OnceLock::new(),
                            direct: AtomicBool::new(false),
                        });
                        flights.insert(full.clone(), f.clone());
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
            // Lands (or is cancelled) with the flight removed and followers
            // woken.
            let guard = Landing {
                shared: &self.shared,
                key: &full,
                flight: &flight,
            };
            let (own, share) = load(work).await?;
            match share {
                Some((value, ttl)) => {
                    let _ = self
                        .write_full(full.clone(), value.clone(), ttl, false)
                        .await;
                    let _ = flight.value.set(value);
                }
                None => flight.direct.store(true, Relaxed),
            }
            drop(guard);
            return Ok(Coalesced::Led(own));
        }
    }

    /// [`get_or_load`](Self::get_or_load) for JSON values: a cached value
    /// that does not decode counts as a miss (and is replaced).
    #[cfg(feature = "serde")]
    pub async fn get_or_load_json<T, F, Fut, E>(
        &self,
        key: impl AsRef<[u8]>,
        load: F,
    ) -> Result<T, E>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let key = key.as_ref();
        if let Some(v) = self.get_json(key).await {
            return Ok(v);
        }
        let (ttl, name) = (self.shared.options.default_ttl, &self.shared.options.name);
        let loaded = self
            .coalesce(key, load, |load| async move {
                let value = load().await?;
                // A value that does not encode is returned, never stored
                // (nor shared: the waiters load their own).
                let share = match serde_json::to_vec(&value) {
                    Ok(bytes) => Some((Bytes::from(bytes), ttl)),
                    Err(e) => {
                        crate::telemetry::cache_fail_open(name, "set", Reason::Other.as_str());
                        tracing::debug!(target: "fusebox::cache", cache = &**name, error = %e, "loaded value does not encode");
                        None
                    }
                };
                Ok((value, share))
            })
            .await?;
        match loaded {
            Coalesced::Led(value) => Ok(value),
            Coalesced::Shared(bytes, load) => match self.decode(&bytes) {
                Some(value) => Ok(value),
                None => load().await,
            },
            Coalesced::Direct(load) => load().await,
        }
    }
}

/// The flight table is never shrunk below this many keys.
pub(super) const MIN_CAPACITY: usize = 64;

/// Ends a flight when dropped, whether the leader finished or was
/// cancelled: removes it from the map, then wakes the followers.
struct Landing<'a> {
    shared: &'a Shared,
    key: &'a Bytes,
    flight: &'a Arc<Flight>,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let mut flights = self
            .shared
            .flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight))
        {
            flights.remove(self.key);
            // A burst of distinct keys must not keep its peak table for
            // good: shrink once it is three-quarters empty.
            if flights.capacity() > MIN_CAPACITY && flights.len() < flights.capacity() / 4 {
                let keep = MIN_CAPACITY.max(flights.len() * 2);
                flights.shrink_to(keep);
            }
        }
        drop(flights);
        self.flight.done.send_replace(true);
    }
}
