//! A cache backend over Redis Cluster, with a circuit breaker per shard.
//! Feature `cluster`.
//!
//! One `get` through it: the key's slot (CRC16 of the key or its hash tag,
//! as Redis computes it) → the primary that owns the slot in this
//! backend's map of the cluster (from `CLUSTER SLOTS`, refreshed twice a
//! second, and every 50 ms while a shard's breaker is not closed) → that primary's breaker → redis-rs's cluster connection, which
//! routes the command itself (`MOVED`, `ASK`, its own topology refresh) →
//! the answer, within the deadline. A shard whose breaker is open answers
//! its keys as misses at once while the other shards keep hitting, and its
//! primary gets a `PING` every 50 ms: the breaker closes as soon as it
//! answers (hits return with the shard, not with the next probe); a slot
//! that moves to a new primary (a failover) is served by that primary's
//! own breaker, closed, and does not inherit the old owner's open one.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Acquire};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::cluster::ClusterClient;
use tower::Service;

use super::error::RedisError;
use crate::breaker::{Breaker, Config};
use crate::error::ConfigError;
use crate::request::{CacheRequest, CacheResponse};

mod call;
mod error;
mod shared;
mod slots;
mod split;

use call::{Guarded, Local};

pub use error::ShardError;
pub(crate) use slots::slot_of;
use slots::{Circuit, SlotMap};

/// How often the map of slots to primaries is read again.
const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// How often while a shard's breaker is not closed: its replica's
/// promotion is seen within this, and its slots go to the new primary's
/// closed breaker.
const REFRESH_WHILE_OPEN: Duration = Duration::from_millis(50);

/// At most one connect attempt per this interval while the cluster is
/// unreachable; callers in between get the last attempt's error at once.
const RECONNECT_PACE: Duration = Duration::from_millis(100);

/// How long a shard's changes are shed after it refused one, by default
/// (the cache's own default).
const DEFAULT_WRITE_HOLD_DOWN: Duration = Duration::from_secs(5);

/// The future of a [`ClusterBackend`] call.
pub type ClusterFuture = Pin<Box<dyn Future<Output = Result<CacheResponse, ShardError>> + Send>>;

/// A cache backend over a Redis Cluster (or a managed one in cluster mode:
/// ElastiCache, MemoryDB), through redis-rs's async cluster client, with a
/// circuit breaker per shard: one failing primary makes only its own keys
/// miss, at once once its breaker is open, while the other shards keep
/// hitting.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use fusebox::cache::Cache;
/// use fusebox::backend::ClusterBackend;
///
/// let nodes = ["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"];
/// let cache = Cache::builder()
///     .name("pages")
///     .backend(ClusterBackend::new(nodes, Duration::from_millis(50))?)
///     .build()?;
/// # let _ = cache; Ok(()) }
/// ```
///
/// * **Lazy**: building connects nothing; the first call connects (at most
///   one attempt per 100 ms while the cluster is unreachable).
/// * **Deadline**: every call, connecting included, gives up after
///   `deadline`, its retries included; redis-rs's connect timeout is set
///   to it too, and its per-call timers are off (the deadline is the one
///   timer of a call).
/// * **Breakers**: one per primary, named `{name}:{host:port}` in metrics
///   and events (default name `cluster`), from the cache's defaults: 5
///   failures in a row or half of the last 100 calls trip it, open
///   0.4–0.5 s without back-off. Their rejections and the errors they
///   counted are [contained](crate::cache::Fault::contained): the cache's own breaker
///   ignores them, so one shard never opens the whole cache.
///   Tune them with [`with_breaker`](Self::with_breaker): the cache's own
///   [`breaker`](crate::cache::CacheBuilder::breaker) setting does not
///   reach them. No connection to the cluster at all is not one shard's
///   failure: the cache's breaker counts it. Timeouts that a stall of this
///   process causes together (noticed late) count once per shard.
/// * **Multi-key calls** (`get_many`, `delete` of several keys) are split by
///   slot: the keys of a failing shard miss, the others are answered; a
///   `delete_many` that a shard did not do answers `Skipped`
///   ([`Cache::delete_many_detailed`](crate::cache::Cache::delete_many_detailed)
///   says which keys).
/// * **Writes** go on a connection of their own: a primary that holds
///   writes (`CLIENT PAUSE … WRITE`, a stuck save) keeps serving reads, and
///   its writes are held down
///   ([`write_hold_down`](Self::write_hold_down)) while the other shards
///   take theirs.
///
/// **Choosing the deadline.** It bounds every call, redis-rs's redirects
/// and retries included, and a shard's keys miss for as long as its
/// breaker needs five of them to open (then at once). On one host or
/// one zone, 50–100 ms keeps a hung shard cheap while a healthy one never
/// comes near it; across zones, allow each hop's round trip three times
/// over. Below a few milliseconds,
/// a busy process's own scheduling delays read as timeouts. This crate's
/// tests use 200 ms (a loaded 2-core CI machine), its benches 250 ms, the
/// incident replay 100 ms.
///
/// **While the cluster refuses keys** (`CLUSTERDOWN`, `TRYAGAIN`),
/// redis-rs retries a call up to six times, 1–10 ms apart (about 30 ms in
/// all), within the deadline, before it misses with reason
/// `cluster_down` / `try_again` (never a breaker failure: the refusal is
/// fast, and ends for every shard at once).
///
/// Set `cluster-require-full-coverage no` on the cluster: with `yes` (the
/// default) every node refuses every key while one shard has no primary,
/// and one shard's failure becomes the whole cluster's for a second or so.
#[derive(Clone)]
pub struct ClusterBackend {
    shared: Arc<Shared>,
    /// This clone's own view of the map (empty in a new clone).
    local: Local,
}

struct Shared {
    client: ClusterClient,
    deadline: Duration,
    conn: OnceLock<call::Conns>,
    /// Held while connecting; the last failed attempt, for pacing.
    connecting: tokio::sync::Mutex<Option<(tokio::time::Instant, RedisError)>>,
    map: RwLock<Arc<SlotMap>>,
    /// Bumped each time `map` changes (0: no map yet).
    generation: AtomicU64,
    /// The circuits of the primaries in the latest map, and of slots no
    /// primary holds (`unmapped`).
    circuits: Mutex<HashMap<Arc<str>, Arc<Circuit>>>,
    config: Config,
    /// How long a shard's changes are shed after it refused one.
    write_hold_down: Mutex<Duration>,
    refreshing: AtomicBool,
    /// Woken after each refresh (the first calls wait for the first).
    mapped: tokio::sync::Notify,
}

impl ClusterBackend {
    /// A backend over the cluster that `nodes` (one or more of its nodes'
    /// URLs) belong to; each call gives up after `deadline`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for an invalid URL, none at all, or a zero
    /// deadline. Never because the cluster is down: nothing connects yet.
    pub fn new<I, U>(nodes: I, deadline: Duration) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let config = Config::builder()
            .name("cluster")
            .open_for(Duration::from_millis(500))
            .open_backoff(1.0, Duration::MAX)
            .open_jitter(0.2)
            .build()?;
        Self::with_breaker(nodes, deadline, config)
    }

    /// As [`new`](Self::new), with each shard's breaker made from `config`
    /// (its name the prefix of theirs).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_breaker<I, U>(
        nodes: I,
        deadline: Duration,
        config: Config,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let bad = |why: String| ConfigError::new("cluster", "nodes", why);
        let mut infos = Vec::new();
        for url in nodes {
            let info = redis::IntoConnectionInfo::into_connection_info(url.as_ref())
                .map_err(|e| bad(format!("not a valid redis URL ({})", e.category())))?;
            infos.push(info);
        }
        if infos.is_empty() {
            return Err(bad("none given: name at least one node".into()));
        }
        if deadline.is_zero() {
            return Err(ConfigError::new(
                "cluster",
                "deadline",
                "must be more than zero",
            ));
        }
        let client = ClusterClient::builder(infos)
            .connection_timeout(deadline)
            // The call's own deadline bounds it all, retries included:
            // no timers of redis-rs's per call (two, with a response
            // timeout: per node and overall).
            .overall_response_timeout(None)
            .retries(6)
            // Waits between retries of `CLUSTERDOWN` and `TRYAGAIN` of
            // 1–10 ms, not redis-rs's 1.28 s and more: a cluster refusing
            // every key is answered as such within the deadline, and the
            // first call after it is whole again is served.
            .min_retry_wait(1)
            .max_retry_wait(10)
            .retry_wait_formula(2, 2)
            .build()
            .map_err(|e| bad(format!("not usable ({})", e.category())))?;
        Ok(ClusterBackend {
            local: Local::default(),
            shared: Arc::new(Shared {
                client,
                deadline,
                conn: OnceLock::new(),
                connecting: tokio::sync::Mutex::new(None),
                map: RwLock::new(Arc::default()),
                generation: AtomicU64::new(0),
                circuits: Mutex::new(HashMap::new()),
                config,
                write_hold_down: Mutex::new(DEFAULT_WRITE_HOLD_DOWN),
                refreshing: AtomicBool::new(false),
                mapped: tokio::sync::Notify::new(),
            }),
        })
    }

    /// How long a shard's changes are shed, unsent, after it refused one
    /// (`OOM`: writes; `READONLY`, `MISCONF`, a write timeout: every
    /// change), while the other shards take theirs. The cache's own
    /// [`write_hold_down`](crate::cache::CacheBuilder::write_hold_down) is
    /// for a single Redis: over this backend, a refusal is its shard's
    /// alone. Defaults to 5 s; zero sends every change.
    /// Applies to the shards this backend meets from then on (set it
    /// before the first call, as when building).
    pub fn write_hold_down(self, d: Duration) -> Self {
        *self
            .shared
            .write_hold_down
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = d;
        self
    }

    /// The breaker of the primary at `addr` (`host:port`, as the cluster
    /// names it), once a call has gone to it.
    pub fn shard_breaker(&self, addr: &str) -> Option<Breaker> {
        let circuits = self
            .shared
            .circuits
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        circuits.get(addr).map(|c| c.breaker.clone())
    }

    /// The primary that owns `key`'s slot in this backend's latest map of
    /// the cluster (`None` before the first map, or for a slot no primary
    /// holds).
    pub fn primary_of(&self, key: &[u8]) -> Option<String> {
        let map = self.shared.map();
        map.owner(slot_of(key)).map(|s| s.addr.to_string())
    }
}

impl fmt::Debug for ClusterBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterBackend")
            .field("deadline", &self.shared.deadline)
            .field("shards", &self.shared.map().0.len())
            .finish_non_exhaustive()
    }
}

impl Service<CacheRequest> for ClusterBackend {
    type Response = CacheResponse;
    type Error = ShardError;
    type Future = ClusterFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ShardError>> {
        Poll::Ready(Ok(()))
    }

    /// A one-key call goes through this clone's own view (no lock, and no
    /// reference count that other threads' clones write); multi-key calls,
    /// the first calls and calls before a map take the shared path.
    fn call(&mut self, request: CacheRequest) -> ClusterFuture {
        let slot = match &request {
            CacheRequest::Get(key)
            | CacheRequest::GetWithTtl(key)
            | CacheRequest::Set { key, .. }
            | CacheRequest::SetIfAbsent { key, .. }
            | CacheRequest::Expire { key, .. } => slot_of(key),
            CacheRequest::Delete(keys) if keys.len() == 1 => slot_of(&keys[0]),
            _ => return Box::pin(self.shared.clone().run(request)),
        };
        // (A refresh task that ended with its runtime is started again on
        // the shared path.)
        let refreshing = self
            .shared
            .refreshing
            .load(std::sync::atomic::Ordering::Relaxed);
        let Some(svc) = self.local_shard(slot).filter(|_| refreshing) else {
            return Box::pin(self.shared.clone().run(request));
        };
        let primary = svc.get_ref().primary.clone();
        if let Some(shed) = primary.shed(&request) {
            return Box::pin(std::future::ready(Err(shed)));
        }
        // Always ready (the shard call is; the breaker decides here).
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(Err(e)) = svc.poll_ready(&mut cx) {
            return Box::pin(std::future::ready(Err(primary.failed(e))));
        }
        let call = svc.call(request);
        Box::pin(async move { call.await.map_err(|e| primary.failed(e)) })
    }
}

impl ClusterBackend {
    /// This clone's breaker service for `slot`, its view brought up to date
    /// first; `None` before the first map and connection (the shared path
    /// makes them) or for a slot no primary holds.
    fn local_shard(&mut self, slot: u16) -> Option<&mut Guarded> {
        let generation = self.shared.generation.load(Acquire);
        if generation != self.local.generation || self.local.shards.is_empty() {
            let conn = self.shared.conn.get()?;
            if generation == 0 {
                return None;
            }
            self.local
                .rebuild(generation, self.shared.map(), conn, self.shared.deadline);
        }
        let i = self.local.map.index_of(slot)?;
        self.local.shards.get_mut(i)
    }
}
