//! One call to one shard, and each backend clone's own view of the
//! cluster, so that a call writes no memory that other threads' clones
//! share (reference counts included): the per-call cost that kept the
//! cache over this backend below a raw cluster connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use tower::Service;

use super::super::commands::{execute, within};
use super::super::error::RedisError;
use super::super::own::conn::{backlogged, LATE};
use super::slots::{Circuit, SlotMap};
use super::ShardError;
use crate::breaker::CircuitBreaker;
use crate::request::{CacheRequest, CacheResponse, FaultClassifier, Reason};

/// A primary as one clone sees it: its circuit, and its address in an
/// allocation of the clone's own (cloned for each call's future: a count no
/// other thread writes).
#[derive(Debug)]
pub(super) struct Primary {
    pub(super) addr: Arc<str>,
    pub(super) circuit: Arc<Circuit>,
}

impl Primary {
    pub(super) fn new(addr: &str, circuit: &Arc<Circuit>) -> Arc<Self> {
        Arc::new(Primary {
            addr: Arc::from(addr),
            circuit: circuit.clone(),
        })
    }

    /// `error`, as the shard's: a refusal of writes starts its hold-down.
    pub(super) fn failed(&self, error: crate::breaker::Error<RedisError>) -> ShardError {
        // (A write timeout was weighed by the call itself, which knows
        // when it was sent.)
        if let crate::breaker::Error::Inner(e) = &error {
            if e.reason() != Reason::WriteTimeout {
                self.circuit.hold.answered(e.reason());
            }
        }
        ShardError {
            shard: self.addr.clone(),
            error,
            whole: false,
        }
    }

    /// No connection to the cluster could be had: the whole cache's
    /// failure (counted by its breaker), under this shard's name.
    pub(super) fn unreachable(&self, e: RedisError) -> ShardError {
        ShardError {
            shard: self.addr.clone(),
            error: crate::breaker::Error::Inner(e),
            whole: false,
        }
        .whole()
    }

    /// `e`, as what it says of this shard: a redirection to this very
    /// primary, which redis-rs could not reach, says it is down.
    fn down(&self, e: RedisError) -> RedisError {
        match e.redirected_to() {
            Some(to) if to == &*self.addr => e.owner_unreachable(),
            _ => e,
        }
    }

    /// Why `request` is not sent to this shard, if it is not (its write
    /// hold-down).
    pub(super) fn shed(&self, request: &CacheRequest) -> Option<ShardError> {
        let reason = self.circuit.hold.shed(request)?;
        Some(ShardError {
            shard: self.addr.clone(),
            error: crate::breaker::Error::Inner(RedisError::held_down(reason)),
            whole: false,
        })
    }
}

/// A backend's two cluster connections: one for reads, one for changes.
#[derive(Clone)]
pub(super) struct Conns {
    pub(super) reads: ClusterConnection,
    pub(super) writes: ClusterConnection,
}

/// The call under a shard's breaker: the cluster connections, bounded by
/// the deadline; the primary it is meant for.
#[derive(Clone)]
pub(super) struct ShardCall {
    pub(super) conns: Conns,
    pub(super) deadline: Duration,
    pub(super) primary: Arc<Primary>,
}

pub(super) type CallFuture =
    Pin<Box<dyn Future<Output = Result<CacheResponse, RedisError>> + Send>>;

impl Service<CacheRequest> for ShardCall {
    type Response = CacheResponse;
    type Error = RedisError;
    type Future = CallFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RedisError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CacheRequest) -> CallFuture {
        // Changes on a connection of their own: a write pause (or a hung
        // write) on a primary does not hold the reads queued behind it.
        let mut conn = match request.is_mutation() {
            true => self.conns.writes.clone(),
            false => self.conns.reads.clone(),
        };
        let (deadline, primary) = (self.deadline, self.primary.clone());
        // What the answer tells the shard's write hold-down: a read or a
        // change answered, or a change (sent now) that timed out.
        let change = request.is_mutation().then(|| request.is_write());
        let circuit = primary.circuit.clone();
        let sent = change.map_or(0, |_| circuit.hold.nanos());
        let start = tokio::time::Instant::now();
        let call = within(deadline, async move {
            // A redirection that reached us means redis-rs gave up
            // following it. To the owner it could not reach: the owner is
            // down. Elsewhere: a slot in motion (an `ASK` met again and
            // again while its keys move), tried once more, afresh, within
            // the same deadline (in a future of its own, so that the
            // common call's stays small).
            match execute(&mut conn, &request).await.map_err(RedisError::from) {
                Err(e)
                    if e.reason() == Reason::Redirected
                        && e.redirected_to() != Some(&primary.addr) =>
                {
                    again(conn, request, primary).await
                }
                result => result.map_err(|e| primary.down(e)),
            }
        });
        Box::pin(async move {
            let result = call.await;
            let hold = &circuit.hold;
            // A timeout noticed late (or while the runtime is backlogged)
            // says this process fell behind: of the timeouts one stall
            // causes together, only the first counts against the shard.
            let result = match result {
                Err(e)
                    if e.reason() == Reason::Timeout
                        && (start.elapsed() > deadline.saturating_add(LATE) || backlogged())
                        && circuit.same_stall(deadline) =>
                {
                    return Err(RedisError::overloaded());
                }
                result => result,
            };
            match (result, change) {
                (Ok(answer), Some(grows)) => {
                    hold.change_answered(grows);
                    Ok(answer)
                }
                (Ok(answer), None) => {
                    hold.read_answered();
                    Ok(answer)
                }
                (Err(e), Some(_)) if e.reason() == Reason::Timeout => {
                    hold.change_timed_out(sent);
                    Err(e.on_write())
                }
                (Err(e), _) => Err(e),
            }
        })
    }
}

/// The one retry of a call whose redirection redis-rs gave up on.
fn again(mut conn: ClusterConnection, request: CacheRequest, primary: Arc<Primary>) -> CallFuture {
    Box::pin(async move {
        execute(&mut conn, &request)
            .await
            .map_err(|e| primary.down(RedisError::from(e)))
    })
}

/// A shard's breaker over one clone's connection.
pub(super) type Guarded = CircuitBreaker<ShardCall, FaultClassifier>;

/// One clone's view: the map it last read (by generation), and for each
/// range of it a breaker service of its own over its own connection. Built
/// on the first call and again when the map changes; a new clone starts
/// empty.
#[derive(Default)]
pub(super) struct Local {
    pub(super) generation: u64,
    pub(super) map: Arc<SlotMap>,
    pub(super) shards: Vec<Guarded>,
}

impl Clone for Local {
    fn clone(&self) -> Self {
        Local::default()
    }
}

impl Local {
    /// Builds this view from `map` (of `generation`) over `conn`.
    pub(super) fn rebuild(
        &mut self,
        generation: u64,
        map: Arc<SlotMap>,
        conns: &Conns,
        deadline: Duration,
    ) {
        self.shards = map
            .0
            .iter()
            .map(|(_, _, shard)| {
                let call = ShardCall {
                    conns: conns.clone(),
                    deadline,
                    primary: Primary::new(&shard.addr, &shard.circuit),
                };
                CircuitBreaker::with_classifier(
                    call,
                    shard.circuit.breaker.clone(),
                    FaultClassifier,
                )
            })
            .collect();
        self.map = map;
        self.generation = generation;
    }
}
