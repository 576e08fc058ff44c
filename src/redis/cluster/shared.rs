//! What every clone of a [`ClusterBackend`](super::ClusterBackend)
//! shares: the cluster connection, the map of slots to primaries and each
//! primary's circuit, kept fresh by a task; and the shared call path
//! (multi-key calls, the first calls).

use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::{Arc, PoisonError, Weak};

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
    pub(super) async fn on_shard(
        self: &Arc<Self>,
        slot: u16,
        request: CacheRequest,
    ) -> Result<CacheResponse, ShardError> {
        let Shard { addr, circuit } = self.shard_of(slot);
        let primary = Primary::new(&addr, &circuit);
        if let Some(shed) = primary.shed(&request) {
            return Err(shed);
        }
        let conns = within(self.deadline, self.conn())
            .await
            .map_err(|e| primary.failed(crate::breaker::Error::Inner(e)))?;
        let call = ShardCall {
            conns,
            deadline: self.deadline,
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
        self.ensure_refreshing().await;
        match request {
            CacheRequest::GetMany(keys) => self.get_many(keys).await,
            CacheRequest::Delete(keys) if keys.len() > 1 => self.delete_many(keys).await,
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
                self.on_shard(slot, request).await
            }
        }
    }
}
