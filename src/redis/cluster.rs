//! A cache backend over Redis Cluster, with a circuit breaker per shard.
//! Feature `cluster`.
//!
//! One `get` through it: the key's slot (CRC16 of the key or its hash tag,
//! as Redis computes it) → the primary that owns the slot in this
//! backend's map of the cluster (from `CLUSTER SLOTS`, refreshed twice a
//! second, and every 50 ms while a shard's breaker is not closed) → that primary's breaker → redis-rs's cluster connection, which
//! routes the command itself (`MOVED`, `ASK`, its own topology refresh) →
//! the answer, within the deadline. A shard whose breaker is open answers
//! its keys as misses at once while the other shards keep hitting; a slot
//! that moves to a new primary (a failover) is served by that primary's
//! own breaker, closed, and does not inherit the old owner's open one.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use tower::{Layer, Service, ServiceExt};

use super::commands::{execute, within};
use super::error::RedisError;
use crate::breaker::{Breaker, CircuitBreakerLayer, Config};
use crate::error::ConfigError;
use crate::request::FaultClassifier;
use crate::request::{CacheRequest, CacheResponse, Reason};

mod error;
mod slots;
mod split;

pub use error::ShardError;
pub(crate) use slots::slot_of;
use slots::{parse_slots, Circuit, Shard, SlotMap, UNMAPPED};

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
/// use fusebox::redis::ClusterBackend;
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
///   `deadline`; redis-rs's own timeouts are set to it too.
/// * **Breakers**: one per primary, named `{name}:{host:port}` in metrics
///   and events (default name `cluster`), from the cache's defaults: 5
///   failures in a row or half of the last 100 calls trip it, open
///   0.4–0.5 s without back-off. Their rejections and the errors they
///   counted are [contained](crate::cache::Fault::contained): the cache's own breaker
///   ignores them, so one shard never opens the whole cache.
/// * **Multi-key calls** (`get_many`, `delete` of several keys) are split by
///   slot: the keys of a failing shard miss, the others are answered.
///
/// Set `cluster-require-full-coverage no` on the cluster: with `yes` (the
/// default) every node refuses every key while one shard has no primary,
/// and one shard's failure becomes the whole cluster's for a second or so.
#[derive(Clone)]
pub struct ClusterBackend {
    shared: Arc<Shared>,
}

struct Shared {
    client: ClusterClient,
    deadline: Duration,
    conn: OnceLock<ClusterConnection>,
    /// Held while connecting; the last failed attempt, for pacing.
    connecting: tokio::sync::Mutex<Option<(tokio::time::Instant, RedisError)>>,
    map: RwLock<Arc<SlotMap>>,
    /// The circuits of the primaries in the latest map, and of slots no
    /// primary holds (`unmapped`).
    circuits: Mutex<HashMap<Arc<str>, Arc<Circuit>>>,
    config: Config,
    /// How long a shard's changes are shed after it refused one.
    write_hold_down: Duration,
    refreshing: AtomicBool,
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
            .response_timeout(deadline)
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
            shared: Arc::new(Shared {
                client,
                deadline,
                conn: OnceLock::new(),
                connecting: tokio::sync::Mutex::new(None),
                map: RwLock::new(Arc::default()),
                circuits: Mutex::new(HashMap::new()),
                config,
                write_hold_down: DEFAULT_WRITE_HOLD_DOWN,
                refreshing: AtomicBool::new(false),
            }),
        })
    }

    /// How long a shard's changes are shed, unsent, after it refused one
    /// (`OOM`: writes; `READONLY`, `MISCONF`, a write timeout: every
    /// change), while the other shards take theirs. The cache's own
    /// [`write_hold_down`](crate::cache::CacheBuilder::write_hold_down) is
    /// for a single Redis: over this backend, a refusal is its shard's
    /// alone. Defaults to 5 s; zero sends every change.
    ///
    /// # Panics
    ///
    /// If called once the backend has been cloned (set it first).
    pub fn write_hold_down(mut self, d: Duration) -> Self {
        Arc::get_mut(&mut self.shared)
            .expect("write_hold_down is set before the backend is cloned")
            .write_hold_down = d;
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

impl Shared {
    fn map(&self) -> Arc<SlotMap> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The cluster connection, connecting it (once, paced) if need be.
    async fn conn(&self) -> Result<ClusterConnection, RedisError> {
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        let mut failed = self.connecting.lock().await;
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        if let Some((at, e)) = failed.as_ref() {
            if at.elapsed() < RECONNECT_PACE {
                return Err(e.clone());
            }
        }
        match self.client.get_async_connection().await {
            Ok(conn) => {
                let _ = self.conn.set(conn.clone());
                *failed = None;
                Ok(conn)
            }
            Err(e) => {
                let e = RedisError::from(e);
                *failed = Some((tokio::time::Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// Reads the map of slots to primaries again (`CLUSTER SLOTS`).
    async fn refresh(&self) -> Result<(), RedisError> {
        let mut conn = within(self.deadline, self.conn()).await?;
        let cmd = redis::cmd("CLUSTER").arg("SLOTS").clone();
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let reply = within(self.deadline, async {
            conn.route_command(cmd, routing)
                .await
                .map_err(RedisError::from)
        })
        .await?;
        if let Some(ranges) = parse_slots(&reply) {
            let map = self.resolve(ranges);
            *self.map.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
        }
        Ok(())
    }

    /// The circuit of the primary at `addr`, made on first sight.
    fn circuit(&self, addr: &Arc<str>) -> Arc<Circuit> {
        let mut circuits = self.circuits.lock().unwrap_or_else(PoisonError::into_inner);
        circuits
            .entry(addr.clone())
            .or_insert_with(|| {
                let mut config = self.config.clone();
                config.name = format!("{}:{addr}", self.config.name);
                Arc::new(Circuit {
                    breaker: Breaker::new(config),
                    hold: crate::hold::HoldDown::new(self.write_hold_down),
                })
            })
            .clone()
    }

    /// A map of ranges to primaries, each with its circuit. Circuits of
    /// primaries no longer in the map are forgotten (a demoted primary that
    /// comes back as one starts closed).
    fn resolve(&self, ranges: Vec<(u16, u16, Arc<str>)>) -> SlotMap {
        let map = SlotMap(
            ranges
                .into_iter()
                .map(|(start, end, addr)| {
                    let circuit = self.circuit(&addr);
                    (start, end, Shard { addr, circuit })
                })
                .collect(),
        );
        let mut circuits = self.circuits.lock().unwrap_or_else(PoisonError::into_inner);
        circuits
            .retain(|addr, _| &**addr == UNMAPPED || map.0.iter().any(|(_, _, s)| s.addr == *addr));
        map
    }

    /// Starts the task that keeps the map fresh, on the first call; it ends
    /// with the backend.
    async fn ensure_refreshing(self: &Arc<Self>) {
        // A load first: the swap writes, and every call passes here.
        if self.refreshing.load(Relaxed) || self.refreshing.swap(true, Relaxed) {
            return;
        }
        // The first map before the first call, so that it goes to its
        // shard's breaker (bounded by the deadline).
        let _ = self.refresh().await;
        let weak: Weak<Shared> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut pause = REFRESH_EVERY;
            loop {
                tokio::time::sleep(pause).await;
                let Some(shared) = weak.upgrade() else { return };
                let _ = shared.refresh().await;
                pause = match shared.any_not_closed() {
                    true => REFRESH_WHILE_OPEN,
                    false => REFRESH_EVERY,
                };
            }
        });
    }

    /// Whether a shard of the latest map has a breaker open or half open.
    fn any_not_closed(&self) -> bool {
        let map = self.map();
        map.0
            .iter()
            .any(|(_, _, s)| s.circuit.breaker.state() != crate::breaker::State::Closed)
    }

    fn shard_of(&self, slot: u16) -> Shard {
        match self.map().owner(slot) {
            Some(owner) => owner.clone(),
            None => {
                let addr = Arc::from(UNMAPPED);
                let circuit = self.circuit(&addr);
                Shard { addr, circuit }
            }
        }
    }

    /// `request` (whose keys share `slot`) through its shard's breaker.
    async fn on_shard(
        self: &Arc<Self>,
        slot: u16,
        request: CacheRequest,
    ) -> Result<CacheResponse, ShardError> {
        let Shard { addr, circuit } = self.shard_of(slot);
        if let Some(reason) = circuit.hold.shed(&request) {
            let error = crate::breaker::Error::Inner(RedisError::held_down(reason));
            return Err(ShardError { shard: addr, error });
        }
        let result = CircuitBreakerLayer::with_breaker(circuit.breaker.clone())
            .classifier(FaultClassifier)
            .layer(ShardClient(self.clone(), addr.clone()))
            .oneshot(request)
            .await;
        result.map_err(|error| {
            if let crate::breaker::Error::Inner(e) = &error {
                circuit.hold.answered(e.reason());
            }
            ShardError { shard: addr, error }
        })
    }

    async fn run(self: Arc<Self>, request: CacheRequest) -> Result<CacheResponse, ShardError> {
        self.ensure_refreshing().await;
        match request {
            CacheRequest::GetMany(keys) => self.get_many(keys).await,
            CacheRequest::Delete(keys) if keys.len() > 1 => self.delete_many(keys).await,
            request => {
                let slot = match &request {
                    CacheRequest::Get(key)
                    | CacheRequest::Set { key, .. }
                    | CacheRequest::SetIfAbsent { key, .. }
                    | CacheRequest::Expire { key, .. } => slot_of(key),
                    CacheRequest::Delete(keys) => keys.first().map_or(0, |k| slot_of(k)),
                    CacheRequest::GetMany(_) => 0,
                };
                self.on_shard(slot, request).await
            }
        }
    }
}

impl Service<CacheRequest> for ClusterBackend {
    type Response = CacheResponse;
    type Error = ShardError;
    type Future = ClusterFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ShardError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CacheRequest) -> ClusterFuture {
        Box::pin(self.shared.clone().run(request))
    }
}

/// The call under a shard's breaker: the cluster connection, bounded by
/// the deadline; the primary it is meant for.
#[derive(Clone)]
struct ShardClient(Arc<Shared>, Arc<str>);

impl Service<CacheRequest> for ShardClient {
    type Response = CacheResponse;
    type Error = RedisError;
    type Future = Pin<Box<dyn Future<Output = Result<CacheResponse, RedisError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RedisError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CacheRequest) -> Self::Future {
        let (shared, owner) = (self.0.clone(), self.1.clone());
        Box::pin(async move {
            within(shared.deadline, async {
                let mut conn = shared.conn().await?;
                // A redirection that reached us means redis-rs gave up
                // following it. To the owner it could not reach: the
                // owner is down. Elsewhere: a slot in motion (an `ASK` met
                // again and again while its keys move), tried once more,
                // afresh, within the same deadline.
                let again = request.clone();
                let down = |e: RedisError| match e.redirected_to() {
                    Some(to) if to == &*owner => e.owner_unreachable(),
                    _ => e,
                };
                match execute(&mut conn, request).await.map_err(RedisError::from) {
                    Err(e)
                        if e.reason() == Reason::Redirected
                            && e.redirected_to() != Some(&owner) =>
                    {
                        execute(&mut conn, again)
                            .await
                            .map_err(|e| down(RedisError::from(e)))
                    }
                    result => result.map_err(down),
                }
            })
            .await
        })
    }
}
