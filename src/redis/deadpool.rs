//! A cache backend over a deadpool-redis pool. Feature `deadpool`.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use deadpool_redis::{Pool, PoolError};
use tower::Service;

use super::commands::pooled;
use super::error::RedisError;
use super::BackendFuture;
use crate::request::{CacheRequest, CacheResponse};

/// A cache backend over the [`deadpool_redis::Pool`] a service holds
/// already:
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use fusebox::cache::Cache;
/// use fusebox::redis::DeadpoolBackend;
///
/// let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:6379")
///     .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
/// let cache = Cache::builder().backend(DeadpoolBackend::new(pool, Duration::from_millis(100))).build()?;
/// # let _ = cache; Ok(()) }
/// ```
///
/// Every call — checking a connection out, then the command — is bounded by
/// `deadline`. A call still waiting for a connection at its deadline while
/// the pool has all the connections it may open, all busy, is a miss with
/// reason `overloaded` (callers queueing, not Redis failing: it does not
/// trip the breaker); size the pool to the callers. deadpool recycles a connection with an `UNWATCH` + `PING`
/// round trip when it goes back into use, and each pooled connection is
/// multiplexed but used by one caller at a time.
/// [`RedisBackend`](super::RedisBackend) pipelines every caller over a few
/// connections instead: prefer it unless the pool is shared with other code.
#[derive(Clone)]
pub struct DeadpoolBackend {
    pool: Pool,
    deadline: Duration,
}

impl DeadpoolBackend {
    /// Wraps `pool`; each call gives up after `deadline`.
    pub fn new(pool: Pool, deadline: Duration) -> Self {
        DeadpoolBackend { pool, deadline }
    }
}

impl fmt::Debug for DeadpoolBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("DeadpoolBackend")
            .field("size", &status.size)
            .field("available", &status.available)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Service<CacheRequest> for DeadpoolBackend {
    type Response = CacheResponse;
    type Error = RedisError;
    type Future = BackendFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RedisError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CacheRequest) -> BackendFuture {
        let (pool, deadline) = (self.pool.clone(), self.deadline);
        Box::pin(async move {
            let checkout = async {
                pool.get().await.map_err(|e| match e {
                    PoolError::Backend(e) => RedisError::from(e),
                    // A closed pool, a timeout of the pool's own, a hook.
                    _ => RedisError::checkout_timeout(None),
                })
            };
            let saturated = || {
                let status = pool.status();
                status.available == 0 && status.size >= status.max_size
            };
            pooled(deadline, checkout, request, saturated).await
        })
    }
}
