//! The [`Cache`] handle.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::{poll_fn, Future};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tower::Service;

use super::config::CacheBuilder;
use super::request::{CacheRequest, CacheResponse, Fault, Reason, Ttl};
use crate::breaker::{Breaker, CircuitBreaker, Classify, Outcome};
use crate::fail_open::FailOpen;
use crate::redis::RedisBackend;

/// The stack a [`Cache`] drives over a backend `B`: fail-open over a
/// circuit breaker over `B`.
pub type Stack<B> = FailOpen<CircuitBreaker<B, FaultClassifier>>;

/// The breaker classifier for cache backends, by the error's [`Reason`]:
/// refusals of writes alone ([`Reason::refuses_writes`]: `OOM`, `READONLY`,
/// `MISCONF`, a write that timed out) and the caller's own errors
/// ([`Reason::Rejected`], [`Reason::TooLarge`]) are ignored (such a Redis
/// still serves reads; a `WRONGTYPE` says nothing about health); every
/// other error is a failure; every response a success.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultClassifier;

impl<T, E: Fault> Classify<T, E> for FaultClassifier {
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => match e.reason() {
                r if r.refuses_writes() => Outcome::Ignored,
                Reason::Rejected | Reason::TooLarge => Outcome::Ignored,
                _ => Outcome::Failure,
            },
        }
    }
}

/// What became of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Done: written, deleted, or expiry set.
    Done,
    /// Not needed: `set_if_absent` found the key; `expire` or `delete` found
    /// no key.
    Unchanged,
    /// Not done, because the cache could not take it (or, for
    /// [`Reason::TooLarge`], was not asked).
    Skipped(Reason),
}

impl Write {
    /// Whether the write was done.
    pub fn is_done(self) -> bool {
        self == Write::Done
    }
}

pub(crate) struct Options {
    pub(crate) name: Arc<str>,
    pub(crate) prefix: Bytes,
    pub(crate) default_ttl: Ttl,
    pub(crate) max_ttl: Duration,
    pub(crate) ttl_jitter: f64,
    pub(crate) max_value_size: usize,
}

/// A fail-open cache: cheap to clone, `Send + Sync`; every method answers
/// within the backend's deadlines and never returns a cache error. See the
/// [module docs](super) for an example, and [`CacheBuilder`] for the
/// defaults.
pub struct Cache<S = Stack<RedisBackend>> {
    svc: S,
    shared: Arc<Shared>,
    /// Clones of the stack, one per thread (by a thread index), so that a
    /// call neither clones the stack (a handful of shared reference-count
    /// writes, which cost more than the rest of the stack once two threads
    /// fight over them) nor waits: a busy shard falls back to a clone.
    shards: Arc<[Shard<S>]>,
}

/// A stack clone on a cache line of its own.
#[repr(align(128))]
struct Shard<S>(Mutex<S>);

/// How many stack clones a cache keeps.
const SHARDS: usize = 32;

thread_local! {
    /// This thread's shard (assigned on first use, in turn).
    static SHARD: usize = {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, Relaxed) % SHARDS
    };
}

struct Shared {
    options: Options,
    breaker: Option<Breaker>,
    watchdog: Option<crate::watchdog::Watchdog>,
    /// Keys being loaded by `get_or_load` right now, and nothing else.
    flights: Mutex<HashMap<Bytes, Arc<Flight>>>,
}

/// One in-flight load: followers wait for `done`, then read `value`.
struct Flight {
    done: watch::Sender<bool>,
    value: OnceLock<Bytes>,
    /// The leader's result may not be shared: followers do their own work.
    direct: AtomicBool,
}

/// How a [`Cache::coalesce`] call was answered.
#[derive(Debug)]
pub(crate) enum Coalesced<T> {
    /// This caller ran the load.
    Led(T),
    /// Another caller's shared result.
    Shared(Bytes),
    /// Another caller's result could not be shared: do the work directly.
    Direct,
}

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Cache {
            svc: self.svc.clone(),
            shared: self.shared.clone(),
            shards: self.shards.clone(),
        }
    }
}

impl<S> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.shared.options.name)
            .field("breaker", &self.shared.breaker)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Starts a [`CacheBuilder`] with the defaults.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }
}

impl<S> Cache<S>
where
    S: Service<CacheRequest, Response = CacheResponse, Error = Infallible> + Clone + Send,
    S::Future: Send,
{
    pub(crate) fn from_parts(svc: S, options: Options, breaker: Option<Breaker>) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Shard(Mutex::new(svc.clone())))
            .collect();
        Cache {
            shards,
            svc,
            shared: Arc::new(Shared {
                options,
                breaker,
                watchdog: None,
                flights: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn set_watchdog(&mut self, watchdog: Option<crate::watchdog::Watchdog>) {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.watchdog = watchdog;
        }
    }

    /// The memory watchdog started with this cache, if any (see
    /// [`CacheBuilder::watchdog`]). It stops when the last clone of the
    /// cache is dropped.
    pub fn watchdog(&self) -> Option<&crate::watchdog::Watchdog> {
        self.shared.watchdog.as_ref()
    }

    /// The circuit breaker in front of the backend.
    pub fn breaker(&self) -> Option<&Breaker> {
        self.shared.breaker.as_ref()
    }

    /// The cache's name (its metrics label).
    pub fn name(&self) -> &str {
        &self.shared.options.name
    }

    /// The value at `key`, or `None` if absent or if the cache could not
    /// answer (counted, with its reason, in
    /// [`CACHE_FAIL_OPEN_TOTAL`](crate::telemetry::CACHE_FAIL_OPEN_TOTAL)).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Option<Bytes> {
        match self
            .request(CacheRequest::Get(self.key(key.as_ref())))
            .await
        {
            CacheResponse::Value(v) => v,
            _ => None,
        }
    }

    /// The values at `keys`, in order; `None` where absent or unanswered.
    pub async fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Vec<Option<Bytes>> {
        let keys: Vec<Bytes> = keys.into_iter().map(|k| self.key(k.as_ref())).collect();
        let n = keys.len();
        match self.request(CacheRequest::GetMany(keys)).await {
            CacheResponse::Values(v) if v.len() == n => v,
            _ => vec![None; n],
        }
    }

    /// Writes `value` at `key` with the default TTL.
    pub async fn set(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Write {
        let ttl = self.shared.options.default_ttl;
        self.write(key.as_ref(), value.into(), ttl, false).await
    }

    /// Writes `value` at `key`, expiring after `ttl` (clamped to the
    /// maximum TTL, and jittered if configured).
    pub async fn set_with_ttl(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        ttl: Duration,
    ) -> Write {
        self.write(key.as_ref(), value.into(), Ttl::After(ttl), false)
            .await
    }

    /// Writes `value` at `key` with **no expiry**. Only for data that must
    /// stay until deleted: keys without TTL are what fills a Redis.
    pub async fn set_without_ttl(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Write {
        self.write(key.as_ref(), value.into(), Ttl::Never, false)
            .await
    }

    /// Writes `value` at `key` with the default TTL only if the key is
    /// absent: [`Write::Unchanged`] if it was there.
    pub async fn set_if_absent(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Write {
        let ttl = self.shared.options.default_ttl;
        self.write(key.as_ref(), value.into(), ttl, true).await
    }

    /// Deletes `key`: [`Write::Unchanged`] if it was absent.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Write {
        match self
            .request(CacheRequest::Delete(vec![self.key(key.as_ref())]))
            .await
        {
            CacheResponse::Deleted(0) => Write::Unchanged,
            CacheResponse::Deleted(_) => Write::Done,
            other => skipped(other),
        }
    }

    /// Sets `key` to expire after `ttl` (clamped to the maximum TTL):
    /// [`Write::Unchanged`] if the key is absent.
    pub async fn expire(&self, key: impl AsRef<[u8]>, ttl: Duration) -> Write {
        if ttl.is_zero() {
            return self.zero_ttl("expire");
        }
        let ttl = self.ttl_of(Ttl::After(ttl)).unwrap_or(ttl);
        let key = self.key(key.as_ref());
        match self.request(CacheRequest::Expire { key, ttl }).await {
            CacheResponse::Expired(true) => Write::Done,
            CacheResponse::Expired(false) => Write::Unchanged,
            other => skipped(other),
        }
    }

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
            .coalesce(key, || async move {
                let value = load().await?;
                Ok((value.clone(), Some((value, ttl))))
            })
            .await?;
        match loaded {
            Coalesced::Led(value) | Coalesced::Shared(value) => Ok(value),
            Coalesced::Direct => unreachable!("every load here is shared"),
        }
    }

    /// Single flight: the first caller for `key` runs `load`; callers that
    /// arrive meanwhile wait for it. `load` returns its own result and, if
    /// it may be shared, the bytes to store (with their TTL) and hand to the
    /// waiters. When it may not be shared, the waiters are told to do the
    /// work themselves ([`Coalesced::Direct`]); when it fails or is
    /// cancelled, one waiter leads in its place.
    pub(crate) async fn coalesce<T, F, Fut, E>(
        &self,
        key: &[u8],
        load: F,
    ) -> Result<Coalesced<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Option<(Bytes, Ttl)>), E>>,
    {
        let full = self.key(key);
        let mut load = Some(load);
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
                    return Ok(Coalesced::Shared(v.clone()));
                }
                if flight.direct.load(Relaxed) {
                    return Ok(Coalesced::Direct);
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
            let load = load.take().expect("a caller leads at most once");
            let (own, share) = load().await?;
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

    /// The value at `key` decoded from JSON, or `None` if absent, if the
    /// cache could not answer, or if it does not decode (counted with reason
    /// `undecodable`, never a panic).
    #[cfg(feature = "serde")]
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Option<T> {
        let bytes = self.get(key).await?;
        self.decode(&bytes)
    }

    /// Writes `value` encoded as JSON, with the default TTL. A value that
    /// does not encode is skipped with reason `other`.
    #[cfg(feature = "serde")]
    pub async fn set_json<T: serde::Serialize + ?Sized>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Write {
        match serde_json::to_vec(value) {
            Ok(bytes) => self.set(key, bytes).await,
            Err(_) => {
                crate::telemetry::cache_fail_open(&self.shared.options.name, "set", Reason::Other);
                Write::Skipped(Reason::Other)
            }
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
        let mut load = Some(load);
        let mut loaded = None;
        let (load_ref, loaded_ref) = (&mut load, &mut loaded);
        let bytes = self
            .load_through(key, move || async move {
                let load = load_ref.take().expect("loads once");
                let value = load().await?;
                let bytes = serde_json::to_vec(&value).unwrap_or_default();
                *loaded_ref = Some(value);
                Ok(Bytes::from(bytes))
            })
            .await?;
        if let Some(value) = loaded {
            return Ok(value);
        }
        // Another caller's value; if it did not encode, load our own.
        match (self.decode(&bytes), load) {
            (Some(value), _) => Ok(value),
            (None, Some(load)) => load().await,
            (None, None) => unreachable!("a follower never ran its loader"),
        }
    }

    #[cfg(feature = "serde")]
    fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Option<T> {
        match serde_json::from_slice(bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                let name = &self.shared.options.name;
                crate::telemetry::cache_fail_open(name, "get", Reason::Undecodable);
                tracing::debug!(target: "fusebox::cache", cache = &**name, error = %e, "cached value does not decode");
                None
            }
        }
    }

    async fn write(&self, key: &[u8], value: Bytes, ttl: Ttl, if_absent: bool) -> Write {
        self.write_full(self.key(key), value, ttl, if_absent).await
    }

    async fn write_full(&self, key: Bytes, value: Bytes, ttl: Ttl, if_absent: bool) -> Write {
        let options = &self.shared.options;
        if value.len() > options.max_value_size {
            let op = if if_absent { "set_if_absent" } else { "set" };
            crate::telemetry::cache_fail_open(&options.name, op, Reason::TooLarge);
            return Write::Skipped(Reason::TooLarge);
        }
        if ttl == Ttl::After(Duration::ZERO) {
            return self.zero_ttl(if if_absent { "set_if_absent" } else { "set" });
        }
        let ttl = match self.ttl_of(ttl) {
            Some(d) => Ttl::After(d),
            None => Ttl::Never,
        };
        let request = if if_absent {
            CacheRequest::SetIfAbsent { key, value, ttl }
        } else {
            CacheRequest::Set { key, value, ttl }
        };
        match self.request(request).await {
            CacheResponse::Written(true) => Write::Done,
            CacheResponse::Written(false) => Write::Unchanged,
            other => skipped(other),
        }
    }

    /// A zero TTL is the caller's mistake (a key that lives 0 ms), never
    /// sent: skipped, counted and answered as such, not `Done`.
    fn zero_ttl(&self, op: &'static str) -> Write {
        crate::telemetry::cache_fail_open(&self.shared.options.name, op, Reason::Rejected);
        Write::Skipped(Reason::Rejected)
    }

    /// The TTL to send: clamped and jittered; `None` for no expiry.
    fn ttl_of(&self, ttl: Ttl) -> Option<Duration> {
        let options = &self.shared.options;
        let Ttl::After(d) = ttl else { return None };
        let d = d.min(options.max_ttl);
        if options.ttl_jitter == 0.0 {
            return Some(d);
        }
        let unit = (random() >> 11) as f64 / (1u64 << 53) as f64;
        let cut = d.mul_f64(options.ttl_jitter * unit);
        Some((d - cut).max(Duration::from_millis(1)))
    }

    fn key(&self, key: &[u8]) -> Bytes {
        let prefix = &self.shared.options.prefix;
        if prefix.is_empty() {
            return Bytes::copy_from_slice(key);
        }
        let mut full = BytesMut::with_capacity(prefix.len() + key.len());
        full.extend_from_slice(prefix);
        full.extend_from_slice(key);
        full.freeze()
    }

    async fn request(&self, request: CacheRequest) -> CacheResponse {
        // This thread's stack clone, if it is free and ready at once.
        let mut request = Some(request);
        let shard = &self.shards[SHARD.with(|s| *s)];
        let fast = poll_fn(|cx| {
            let Ok(mut svc) = shard.0.try_lock() else {
                return Poll::Ready(None);
            };
            match svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(request.take().map(|r| svc.call(r))),
                Poll::Pending => Poll::Ready(None),
            }
        })
        .await;
        let future = match (fast, request) {
            (Some(future), _) => future,
            (None, Some(request)) => {
                let mut svc = self.svc.clone();
                let Ok(()) = poll_fn(|cx| svc.poll_ready(cx)).await;
                svc.call(request)
            }
            (None, None) => unreachable!("the request is taken only with a call"),
        };
        let Ok(response) = future.await;
        response
    }
}

/// A write's answer that is not the expected kind: a fail-open skip.
fn skipped(response: CacheResponse) -> Write {
    match response {
        CacheResponse::Skipped(reason) | CacheResponse::Miss(reason) => Write::Skipped(reason),
        _ => Write::Skipped(Reason::Other),
    }
}

/// A random `u64` without a dependency: `RandomState` is seeded per
/// instance from the OS and a counter.
fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

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
        }
        drop(flights);
        self.flight.done.send_replace(true);
    }
}
