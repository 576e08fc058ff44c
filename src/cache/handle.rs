//! The [`Cache`] handle.

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tower::Service;

use super::config::CacheBuilder;
use crate::backend::RedisBackend;
use crate::breaker::{Breaker, CircuitBreaker};
use crate::cache::fail_open::FailOpen;
use crate::request::{CacheRequest, CacheResponse, Fault, FaultClassifier, Reason, Ttl};

mod load;
#[cfg(feature = "http")]
pub(crate) use load::Placed;
mod near;
#[cfg(feature = "http")]
mod purges;
mod read;
mod write;

#[cfg(test)]
mod tests;
use crate::flight::{Flights, InFlight};

/// The stack a [`Cache`] drives over a backend `B`: fail-open over a
/// circuit breaker over `B`.
pub(crate) type Stack<B> = FailOpen<CircuitBreaker<B, FaultClassifier>>;

/// What [`Cache::delete_many_detailed`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    /// What [`Cache::delete_many`] answers: `Skipped` if the delete of any
    /// key was not done.
    pub write: Write,
    /// The positions, among the keys given, of those whose delete was not
    /// done (too large to send, or their shard failed): their old values
    /// may still be served.
    pub skipped: Vec<usize>,
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
    /// `get_or_load` refreshes a value this close to its expiry (a
    /// fraction of the default TTL); 0 for never.
    pub(crate) early_refresh: f64,
    pub(crate) max_value_size: usize,
    pub(crate) max_key_size: usize,
}

/// A fail-open cache: cheap to clone, `Send + Sync`; every method answers
/// within the backend's deadlines and never returns a cache error. See the
/// [module docs](super) for an example, and [`CacheBuilder`] for the
/// defaults.
pub struct Cache<B = RedisBackend> {
    svc: Stack<B>,
    shared: Arc<Shared>,
    /// Clones of the stack, one per thread (by a thread index), so that a
    /// call neither clones the stack (a handful of shared reference-count
    /// writes, which cost more than the rest of the stack once two threads
    /// fight over them) nor waits: a busy shard falls back to a clone.
    shards: Arc<[Shard<Stack<B>>]>,
}

/// What a [`Cache`] can be built over: any cloneable
/// `Service<CacheRequest>` whose errors say why they happened ([`Fault`])
/// and whose futures are `Send` — a [`RedisBackend`], a
/// [`ClientBackend`](crate::backend::ClientBackend) over your own client, or
/// your own. Implemented for every such service.
pub trait Backend:
    Service<CacheRequest, Response = CacheResponse, Error: Fault, Future: Send> + Clone + Send + 'static
{
}

impl<T> Backend for T where
    T: Service<CacheRequest, Response = CacheResponse, Error: Fault, Future: Send>
        + Clone
        + Send
        + 'static
{
}

/// A stack clone on a cache line of its own.
#[repr(align(128))]
struct Shard<S>(Mutex<S>);

/// The operations a cache's calls are timed by (`CacheRequest::op`).
const OPS: [&str; 6] = [
    "get",
    "get_many",
    "set",
    "set_if_absent",
    "delete",
    "expire",
];

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
    breaker: Breaker,
    watchdog: Option<crate::watchdog::Watchdog>,
    /// Keys being loaded by `get_or_load` right now, and nothing else.
    flights: Flights,
    near: Option<Arc<crate::near::Near>>,
    /// Reads by outcome, for a cache without a near cache (one with counts
    /// in its near cache's tally).
    reads: Option<crate::near::Tally>,
    /// How long calls took, by operation ([`OPS`]).
    latency: [metrics::Histogram; OPS.len()],
    tracking: Option<crate::near::tracking::TrackingTask>,
    /// This cache's prefix on its Redis, while it lives.
    prefix: Option<crate::cache::config::prefixes::PrefixClaim>,
    /// HTTP purges Redis did not take, held in this process.
    #[cfg(feature = "http")]
    purges: purges::LocalPurges,
}

/// A cache's near cache and its tracking task, if it has them.
pub(crate) type NearParts = (
    Option<Arc<crate::near::Near>>,
    Option<crate::near::tracking::TrackingTask>,
);

impl<B: Clone> Clone for Cache<B> {
    fn clone(&self) -> Self {
        Cache {
            svc: self.svc.clone(),
            shared: self.shared.clone(),
            shards: self.shards.clone(),
        }
    }
}

impl<B> fmt::Debug for Cache<B> {
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

impl<B: Backend> Cache<B> {
    pub(crate) fn from_parts(
        svc: Stack<B>,
        options: Options,
        breaker: Breaker,
        watchdog: Option<crate::watchdog::Watchdog>,
        (near, tracking): NearParts,
    ) -> Self {
        let reads = near
            .is_none()
            .then(|| crate::near::Tally::new(&options.name));
        let latency = OPS.map(|op| crate::telemetry::cache_latency(&options.name, op));
        let shards = (0..SHARDS)
            .map(|_| Shard(Mutex::new(svc.clone())))
            .collect();
        Cache {
            shards,
            svc,
            shared: Arc::new(Shared {
                options,
                breaker,
                watchdog,
                flights: Flights::default(),
                reads,
                latency,
                near,
                tracking,
                prefix: None,
                #[cfg(feature = "http")]
                purges: purges::LocalPurges::default(),
            }),
        }
    }

    /// Keeps `claim` for as long as the cache lives (called on a cache
    /// just built, the only handle to it).
    pub(crate) fn hold_prefix(
        &mut self,
        claim: Option<crate::cache::config::prefixes::PrefixClaim>,
    ) {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.prefix = claim;
        }
    }

    /// The memory watchdog started with this cache, if any (see
    /// [`CacheBuilder::watchdog`]). It stops when the last clone of the
    /// cache is dropped.
    pub fn watchdog(&self) -> Option<&crate::watchdog::Watchdog> {
        self.shared.watchdog.as_ref()
    }

    /// The circuit breaker in front of the backend.
    pub fn breaker(&self) -> &Breaker {
        &self.shared.breaker
    }

    /// The cache's name, as metrics take it.
    pub(crate) fn label(&self) -> &Arc<str> {
        &self.shared.options.name
    }

    /// The TTL of writes that do not name one.
    pub(crate) fn default_ttl(&self) -> Ttl {
        self.shared.options.default_ttl
    }

    /// What the [near cache](CacheBuilder::near_cache) has served and
    /// holds, if there is one.
    pub fn near_stats(&self) -> Option<crate::near::NearStats> {
        self.shared.near.as_ref().map(|n| n.stats())
    }

    /// The loads in flight right now (single flight of
    /// [`get_or_load`](Self::get_or_load) and the HTTP and gRPC response
    /// caches): for dashboards and leak checks, as the soak
    /// (`scripts/soak.sh`) uses it.
    pub fn in_flight(&self) -> InFlight {
        self.shared.flights.size()
    }

    /// Whether the cache has a near cache.
    #[cfg(feature = "http")]
    pub(crate) fn has_near(&self) -> bool {
        self.shared.near.is_some()
    }

    /// The cache's name (its metrics label).
    pub fn name(&self) -> &str {
        &self.shared.options.name
    }

    /// The value at `key`, or `None` if absent or if the cache could not
    /// answer (counted, with its reason, in
    /// [`CACHE_FAIL_OPEN_TOTAL`](crate::telemetry::CACHE_FAIL_OPEN_TOTAL)).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Option<Bytes> {
        let key = self.checked_key("get", key.as_ref())?;
        if let Some(near) = &self.shared.near {
            return self.near_get(near, key).await;
        }
        let value = match self.request(CacheRequest::Get(key)).await {
            CacheResponse::Value(v) => v,
            _ => None,
        };
        self.count_read(match value {
            Some(_) => crate::near::Outcome::Hit,
            None => crate::near::Outcome::Miss,
        });
        value
    }

    /// Writes `value` at `key` with the default TTL.
    pub async fn set(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Write {
        let ttl = self.shared.options.default_ttl;
        self.write(key.as_ref(), value.into(), ttl, false).await
    }

    /// Writes `value` at `key`, expiring after `ttl`, jittered if
    /// configured. A `ttl` over the cache's
    /// [`max_ttl`](CacheBuilder::max_ttl) (7 days by default) is cut to it,
    /// and counted in
    /// [`CACHE_TTL_CAPPED_TOTAL`](crate::telemetry::CACHE_TTL_CAPPED_TOTAL);
    /// a zero `ttl` is never sent: `Write::Skipped(Reason::Rejected)`.
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
        let Some(key) = self.checked_key("delete", key.as_ref()) else {
            return Write::Skipped(Reason::TooLarge);
        };
        self.changed(CacheRequest::Delete(vec![key])).await
    }

    /// Sets `key` to expire after `ttl` (clamped to the maximum TTL):
    /// [`Write::Unchanged`] if the key is absent.
    pub async fn expire(&self, key: impl AsRef<[u8]>, ttl: Duration) -> Write {
        if ttl.is_zero() {
            return self.zero_ttl("expire");
        }
        let ttl = self.ttl_of(Ttl::After(ttl)).unwrap_or(ttl);
        let Some(key) = self.checked_key("expire", key.as_ref()) else {
            return Write::Skipped(Reason::TooLarge);
        };
        self.changed(CacheRequest::Expire { key, ttl }).await
    }

    /// The full key, unless it is over the cap (then counted, as `op`,
    /// with reason `too_large`).
    fn checked_key(&self, op: &'static str, key: &[u8]) -> Option<Bytes> {
        let options = &self.shared.options;
        if options.prefix.len() + key.len() > options.max_key_size {
            crate::telemetry::cache_fail_open(&options.name, op, Reason::TooLarge.as_str());
            return None;
        }
        Some(self.key(key))
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
        let op = OPS.iter().position(|o| *o == request.op()).unwrap_or(0);
        let start = std::time::Instant::now();
        let response = self.call(request).await;
        self.shared.latency[op].record(start.elapsed());
        response
    }

    async fn call(&self, request: CacheRequest) -> CacheResponse {
        // This thread's stack clone, if it is free and ready at once.
        let mut request = Some(request);
        let shard = &self.shards[SHARD.with(|s| *s)];
        let fast = poll_fn(|cx| {
            let Ok(mut svc) = shard.0.try_lock() else {
                return Poll::Ready(None);
            };
            match svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(request.take().map(|r| svc.call(r))),
                Poll::Pending => {
                    // Not waited on: a clone polled only part-way may hold
                    // what readiness reserved (a half-open probe's
                    // permit), so it gives way to a fresh one.
                    *svc = self.svc.clone();
                    Poll::Ready(None)
                }
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
