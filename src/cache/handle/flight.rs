//! Single flight: concurrent misses for one key share one load.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, PoisonError};

use bytes::Bytes;
use tokio::sync::watch;
use tower::Service;

use super::{Cache, Shared};
#[cfg(feature = "serde")]
use crate::cache::request::Reason;
use crate::cache::request::{CacheRequest, CacheResponse, Ttl};

/// One in-flight load: followers wait for `done`, then read `value`.
pub(super) struct Flight {
    done: watch::Sender<bool>,
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

impl<S> Cache<S>
where
    S: Service<CacheRequest, Response = CacheResponse, Error = Infallible> + Clone + Send,
    S::Future: Send,
{
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
                        crate::telemetry::cache_fail_open(name, "set", Reason::Other);
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
const MIN_CAPACITY: usize = 64;

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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use tokio::sync::oneshot;
    use tower::BoxError;

    use super::*;
    use crate::cache::handle::Stack;

    /// A backend that keeps values in memory (no expiry).
    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<HashMap<Bytes, Bytes>>>);

    impl Service<CacheRequest> for Memory {
        type Response = CacheResponse;
        type Error = BoxError;
        type Future = std::future::Ready<Result<CacheResponse, BoxError>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: CacheRequest) -> Self::Future {
            let mut map = self.0.lock().unwrap();
            std::future::ready(Ok(match req {
                CacheRequest::Get(key) => CacheResponse::Value(map.get(&key).cloned()),
                CacheRequest::Set { key, value, .. } => {
                    map.insert(key, value);
                    CacheResponse::Written(true)
                }
                _ => CacheResponse::Written(false),
            }))
        }
    }

    fn memory_cache() -> Cache<Stack<Memory>> {
        Cache::builder()
            .name("memory")
            .service(Memory::default())
            .unwrap()
    }

    /// Yields until `key`'s flight has `n` followers waiting.
    async fn followers<S>(cache: &Cache<S>, key: &[u8], n: usize)
    where
        S: Service<CacheRequest, Response = CacheResponse, Error = Infallible> + Clone + Send,
        S::Future: Send,
    {
        let full = cache.key(key);
        for _ in 0..100_000 {
            let waiting = cache
                .shared
                .flights
                .lock()
                .unwrap()
                .get(&full)
                .map(|f| f.done.receiver_count());
            if waiting >= Some(n) {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{n} followers never joined");
    }

    #[tokio::test]
    async fn a_load_behind_a_leader_that_would_not_share_loads_itself() {
        let cache = memory_cache();
        let (entered, started) = oneshot::channel();
        let (release, released) = oneshot::channel::<()>();
        // An HTTP layer leads on this key with a response it may not share.
        let leader = tokio::spawn({
            let cache = cache.clone();
            async move {
                let led = cache
                    .coalesce(b"k", (), |()| async move {
                        let _ = entered.send(());
                        let _ = released.await;
                        Ok::<_, Infallible>(("private", None))
                    })
                    .await;
                matches!(led, Ok(Coalesced::Led("private")))
            }
        });
        started.await.unwrap();
        let user = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get_or_load("k", || async { Ok::<_, Infallible>("mine") })
                    .await
            }
        });
        followers(&cache, b"k", 1).await;
        release.send(()).unwrap();
        assert!(leader.await.unwrap());
        assert_eq!(user.await.expect("no panic").unwrap(), "mine");
    }

    #[tokio::test]
    async fn a_burst_of_distinct_keys_leaves_no_peak_table_behind() {
        let cache = memory_cache();
        let (release, released) = watch::channel(false);
        let mut loads = Vec::new();
        for i in 0..5_000u32 {
            let (cache, mut released) = (cache.clone(), released.clone());
            loads.push(tokio::spawn(async move {
                cache
                    .get_or_load(i.to_be_bytes(), || async move {
                        let _ = released.wait_for(|r| *r).await;
                        Ok::<_, Infallible>(Bytes::new())
                    })
                    .await
            }));
        }
        drop(released);
        for _ in 0..100_000 {
            if cache.shared.flights.lock().unwrap().len() == 5_000 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(cache.shared.flights.lock().unwrap().capacity() >= 5_000);
        release.send_replace(true);
        for load in loads {
            load.await.unwrap().unwrap();
        }
        let capacity = cache.shared.flights.lock().unwrap().capacity();
        assert!(capacity <= 2 * MIN_CAPACITY, "{capacity}");
    }

    #[cfg(feature = "serde")]
    #[tokio::test]
    async fn a_loaded_value_that_does_not_encode_is_returned_and_not_stored() {
        use std::collections::BTreeMap;
        let cache = memory_cache();
        // JSON objects need string keys: this map does not encode.
        let value = BTreeMap::from([(vec![1u8], 1u8)]);
        let loaded = cache
            .get_or_load_json("k", || async { Ok::<_, Infallible>(value.clone()) })
            .await;
        assert_eq!(loaded.unwrap(), value);
        assert_eq!(cache.get("k").await, None, "nothing stored");
    }
}
