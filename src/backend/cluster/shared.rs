//! What every clone of a [`ClusterBackend`](super::ClusterBackend)
//! shares: the cluster connection, the map of slots to primaries and each
//! primary's circuit, kept fresh by a task; and the shared call path
//! (multi-key calls, the first calls).

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use tower::ServiceExt;

use super::super::commands::within;
use super::super::error::RedisError;
use super::call::{Conns, Primary, ShardCall};
use super::slots::{parse_slots, Circuit, Shard, SlotMap, UNMAPPED};
use super::{slot_of, ShardError, Shared, RECONNECT_PACE, REFRESH_EVERY, REFRESH_WHILE_OPEN};
use crate::breaker::{Breaker, CircuitBreaker};
use crate::request::{CacheRequest, CacheResponse, FaultClassifier};

impl Shared {
    pub(super) fn map(&self) -> Arc<SlotMap> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The cluster connections, connecting them (once, paced) if need be.
    async fn conn(&self) -> Result<Conns, RedisError> {
        if let Some(conns) = self.conn.get() {
            return Ok(conns.clone());
        }
        let mut failed = self.connecting.lock().await;
        if let Some(conns) = self.conn.get() {
            return Ok(conns.clone());
        }
        if let Some((at, e)) = failed.as_ref() {
            if at.elapsed() < RECONNECT_PACE {
                return Err(e.clone());
            }
        }
        let connected = async {
            let reads = self.client.get_async_connection().await?;
            let writes = self.client.get_async_connection().await?;
            Ok::<_, redis::RedisError>(Conns { reads, writes })
        };
        match connected.await {
            Ok(conns) => {
                let _ = self.conn.set(conns.clone());
                *failed = None;
                Ok(conns)
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
        let mut conn = within(self.deadline, self.conn()).await?.reads;
        let cmd = redis::cmd("CLUSTER").arg("SLOTS").clone();
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let reply = within(self.deadline, async {
            conn.route_command(cmd, routing)
                .await
                .map_err(RedisError::from)
        })
        .await?;
        if let Some(ranges) = parse_slots(&reply) {
            // Only a change is written: each one makes every clone rebuild
            // its view.
            if !self.map().same_as(&ranges) {
                let map = self.resolve(ranges);
                *self.map.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
                self.generation.fetch_add(1, Release);
            }
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
                    late_at: std::sync::atomic::AtomicU64::new(0),
                    breaker: Breaker::new(config),
                    hold: crate::hold::HoldDown::new(
                        *self
                            .write_hold_down
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner),
                    ),
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

    /// Starts the task that keeps the map fresh (on the first call, and
    /// again if it ended with the runtime it ran on), then, while there is
    /// no map, waits for the end of a refresh (no later than `until`), so
    /// that the first calls go to their shard's breaker. Nothing is undone if this future is dropped:
    /// the task is spawned before the first await, and does the first
    /// refresh itself.
    async fn ensure_refreshing(self: &Arc<Self>, until: tokio::time::Instant) {
        // A load first: the swap writes, and every call passes here.
        if !self.refreshing.load(Relaxed) && !self.refreshing.swap(true, Relaxed) {
            self.spawn_refresher();
        }
        if self.generation.load(Acquire) != 0 {
            return;
        }
        let mapped = self.mapped.notified();
        let mut mapped = std::pin::pin!(mapped);
        mapped.as_mut().enable();
        if self.generation.load(Acquire) == 0 {
            let _ = tokio::time::timeout_at(until, mapped).await;
        }
    }

    /// The refresh task: a map at once, then every [`REFRESH_EVERY`] (every
    /// [`REFRESH_WHILE_OPEN`] while a shard's breaker is not closed), until
    /// the backend is dropped. Whenever it ends — the backend gone, or its
    /// runtime shut down — it clears `refreshing`, so that the next call
    /// starts it again.
    fn spawn_refresher(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refreshing.store(false, Relaxed);
            return;
        };
        let weak: Weak<Shared> = Arc::downgrade(self);
        runtime.spawn(async move {
            let _ended = RefresherEnded(weak.clone());
            let mut pause = Duration::ZERO;
            loop {
                tokio::time::sleep(pause).await;
                let Some(shared) = weak.upgrade() else { return };
                let _ = shared.refresh().await;
                // Whether it made a map or failed: the calls waiting for
                // the first one go on.
                shared.mapped.notify_waiters();
                shared.close_answering().await;
                pause = match shared.any_not_closed() {
                    true => REFRESH_WHILE_OPEN,
                    false => REFRESH_EVERY,
                };
            }
        });
    }

    /// Closes the breaker of each primary whose breaker is open and that
    /// answers a `PING` now (all at once, each within the deadline): hits
    /// come back with the shard, not with the breaker's next probe up to
    /// half a second later (after the whole cluster hung, the first probes
    /// may also wait on redis-rs's own recovery).
    async fn close_answering(&self) {
        let open: Vec<Shard> = {
            let map = self.map();
            map.0
                .iter()
                .filter(|(_, _, s)| s.circuit.breaker.state() == crate::breaker::State::Open)
                .map(|(_, _, s)| s.clone())
                .collect()
        };
        if open.is_empty() {
            return;
        }
        let Some(conns) = self.conn.get().cloned() else {
            return;
        };
        let pings = open.into_iter().map(|shard| {
            let mut conn = conns.reads.clone();
            async move {
                let (host, port) = shard.addr.rsplit_once(':')?;
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.to_owned(),
                    port: port.parse().ok()?,
                });
                let ping = conn.route_command(redis::cmd("PING"), routing);
                match tokio::time::timeout(self.deadline, ping).await {
                    Ok(Ok(_)) => Some(shard),
                    _ => None,
                }
            }
        });
        for shard in futures_util::future::join_all(pings)
            .await
            .into_iter()
            .flatten()
        {
            if shard.circuit.breaker.state() == crate::breaker::State::Open {
                shard.circuit.breaker.close();
            }
        }
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
    pub(super) async fn on_shard(
        self: &Arc<Self>,
        slot: u16,
        request: CacheRequest,
        until: tokio::time::Instant,
    ) -> Result<CacheResponse, ShardError> {
        let Shard { addr, circuit } = self.shard_of(slot);
        let primary = Primary::new(&addr, &circuit);
        if let Some(shed) = primary.shed(&request) {
            return Err(shed);
        }
        let left = || until.saturating_duration_since(tokio::time::Instant::now());
        // No connection to the cluster at all is the whole cache's
        // failure, not one shard's: the cache's breaker counts it.
        let conns = within(left(), self.conn())
            .await
            .map_err(|e| primary.unreachable(e))?;
        let call = ShardCall {
            conns,
            deadline: left(),
            primary: primary.clone(),
        };
        CircuitBreaker::with_classifier(call, circuit.breaker.clone(), FaultClassifier)
            .oneshot(request)
            .await
            .map_err(|e| primary.failed(e))
    }

    pub(super) async fn run(
        self: Arc<Self>,
        request: CacheRequest,
    ) -> Result<CacheResponse, ShardError> {
        // One deadline for the whole call, waiting for the first map
        // included.
        let now = tokio::time::Instant::now();
        let until = now
            .checked_add(self.deadline)
            .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600));
        self.ensure_refreshing(until).await;
        match request {
            CacheRequest::GetMany(keys) => self.get_many(keys, until).await,
            CacheRequest::Delete(keys) if keys.len() > 1 => self.delete_many(keys, until).await,
            request => {
                let slot = match &request {
                    CacheRequest::Get(key)
                    | CacheRequest::GetWithTtl(key)
                    | CacheRequest::Set { key, .. }
                    | CacheRequest::SetIfAbsent { key, .. }
                    | CacheRequest::Expire { key, .. } => slot_of(key),
                    CacheRequest::Delete(keys) => keys.first().map_or(0, |k| slot_of(k)),
                    CacheRequest::GetMany(_) => 0,
                };
                self.on_shard(slot, request, until).await
            }
        }
    }
}

/// Clears `refreshing` when the refresh task ends, however it ends.
struct RefresherEnded(Weak<Shared>);

impl Drop for RefresherEnded {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.refreshing.store(false, Relaxed);
        }
    }
}
