//! Connections leased from a user's pool (bb8, deadpool).
//!
//! Both pools hand out multiplexed connections, which carry any number of
//! commands at once, yet a call that checks one out for its round trip
//! holds it alone (and bb8 sends a `PING` per checkout). Leased instead,
//! each connection slot of the backend keeps one of the pool's connections
//! checked out for as long as the backend lives, and every call of the
//! slot shares it: the pool still opens and counts every connection, and
//! its other users keep the rest.
//!
//! A leased connection that broke is replaced in its lease: bb8's is mended
//! in place with a connection its manager makes at once (bb8's own connects
//! back off after failures, djc/bb8#141); deadpool's is taken out of the
//! pool, and a new one checked out (deadpool connects at once).

use std::future::Future;
use std::ops::DerefMut;
use std::pin::Pin;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use super::error::RedisError;

/// The future of a [`Lease`].
pub(crate) type LeaseFuture<'a> =
    Pin<Box<dyn Future<Output = Result<MultiplexedConnection, RedisError>> + Send + 'a>>;

/// A pool a backend leases its connections from: each of the backend's
/// connection slots keeps one of the pool's connections checked out for as
/// long as the backend lives, and shares it among all its calls.
pub(crate) trait Lease: Send + Sync + 'static {
    /// A working connection for `slot`: a new lease, or the slot's lease
    /// mended in place when its connection broke. Unbounded: the caller
    /// bounds it.
    fn lease(&self, slot: usize) -> LeaseFuture<'_>;

    /// Whether reads and writes share one lease (a pool too small to give
    /// the backend two connections and its other users one).
    fn one_slot(&self) -> bool;
}

/// What the backend needs of a pool.
pub(super) trait Pool: Send + Sync + 'static {
    /// A connection checked out; back in the pool when dropped.
    type Held: DerefMut<Target = MultiplexedConnection> + Send + 'static;

    /// Checks a connection out. Unbounded: the caller bounds it. A pool
    /// with every connection it may open in use answers
    /// [`RedisError::overloaded`] at once.
    fn check_out(&self) -> impl Future<Output = Result<Self::Held, RedisError>> + Send;

    /// Replaces the broken connection in `held` (`Some`) with a working
    /// one, or leaves `held` as it was or empty and says why not.
    fn mend<'a>(
        &'a self,
        held: &'a mut Option<Self::Held>,
    ) -> impl Future<Output = Result<(), RedisError>> + Send + 'a;

    /// The most connections the pool opens.
    fn max_size(&self) -> usize;
}

/// One lease per slot of the backend.
pub(super) struct Leases<P: Pool> {
    pool: P,
    /// Per slot: the connection checked out, broken or not. Locked only by
    /// the slot's one connecting caller, across the checkout.
    held: Box<[Mutex<Option<P::Held>>]>,
}

impl<P: Pool> Leases<P> {
    pub(super) fn new(pool: P) -> Self {
        Leases {
            pool,
            held: (0..2).map(|_| Mutex::new(None)).collect(),
        }
    }
}

impl<P: Pool> Lease for Leases<P> {
    fn lease(&self, slot: usize) -> LeaseFuture<'_> {
        Box::pin(async move {
            let mut held = self.held[slot].lock().await;
            match held.is_some() {
                // Asked again: the connection broke.
                true => self.pool.mend(&mut held).await?,
                false => *held = Some(self.pool.check_out().await?),
            }
            let conn = held.as_deref().ok_or_else(RedisError::overloaded)?;
            Ok(MultiplexedConnection::clone(conn))
        })
    }

    /// Two leases (reads, writes) when the pool keeps one more for its other
    /// users; else one.
    fn one_slot(&self) -> bool {
        self.pool.max_size() < 3
    }
}
