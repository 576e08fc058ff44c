//! A cache backend over a client the caller already has.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use redis::aio::ConnectionLike;
use tower::Service;

use super::commands::{execute, within};
use super::error::RedisError;
use super::BackendFuture;
use crate::request::{CacheRequest, CacheResponse};

/// A cache backend over a client the caller already has: a redis
/// [`ConnectionManager`](redis::aio::ConnectionManager), a
/// [`MultiplexedConnection`](redis::aio::MultiplexedConnection), or any cloneable [`ConnectionLike`](redis::aio::ConnectionLike). Every call
/// is bounded by `deadline` (the client's own retries included).
///
/// Reconnecting is the client's own business. A `ConnectionManager`
/// reconnects inside the calls that find its connection lost, backing off
/// between attempts up to 3.2 s by default: behind a cache, cap it with
/// `ConnectionManagerConfig::set_max_delay` (250 ms brings hits back within
/// a second of Redis, as the cache's own connections do), and expect its
/// misses while Redis refuses to say `timeout`. A bare
/// `MultiplexedConnection` never reconnects.
#[derive(Clone)]
pub struct ClientBackend<C> {
    conn: C,
    deadline: Duration,
}

impl<C> ClientBackend<C> {
    /// Wraps `conn`; each call gives up after `deadline`.
    pub fn new(conn: C, deadline: Duration) -> Self {
        ClientBackend { conn, deadline }
    }
}

impl<C> fmt::Debug for ClientBackend<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBackend")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<C> Service<CacheRequest> for ClientBackend<C>
where
    C: ConnectionLike + Clone + Send + 'static,
{
    type Response = CacheResponse;
    type Error = RedisError;
    type Future = BackendFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RedisError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CacheRequest) -> BackendFuture {
        let mut conn = self.conn.clone();
        let deadline = self.deadline;
        Box::pin(async move {
            within(deadline, async {
                execute(&mut conn, &request).await.map_err(RedisError::from)
            })
            .await
        })
    }
}
