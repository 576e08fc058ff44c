//! A cache backend over a deadpool-redis pool. Feature `deadpool`.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use deadpool_redis::{Connection, Pool as DeadPool, PoolError};
use tower::Service;

use super::error::RedisError;
use super::lease::{Leases, Pool};
use super::{BackendFuture, RedisBackend, RedisConfig};
use crate::request::{CacheRequest, CacheResponse};

/// A cache backend over the [`deadpool_redis::Pool`](https://docs.rs/deadpool-redis/0.23/deadpool_redis/type.Pool.html) a service holds
/// already:
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use fusebox::cache::Cache;
/// use fusebox::backend::DeadpoolBackend;
///
/// let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:6379")
///     .create_pool(Some(deadpool_redis::Runtime::Tokio1))?;
/// let cache = Cache::builder().backend(DeadpoolBackend::new(pool, Duration::from_millis(100))).build()?;
/// # let _ = cache; Ok(()) }
/// ```
///
/// at the speed of a multiplexed connection: the backend leases two of the
/// pool's connections (one for reads, one for writes; one in all from a
/// pool of at most two) and keeps them checked out, sharing each among all
/// its calls, as [`RedisBackend`] shares its own. The pool still opens and
/// counts every connection, and its other users keep the rest: size it
/// two larger for the cache. (A pool of one connection is the cache's
/// alone.)
///
/// What the pool's settings still mean: `max_size` bounds the connections
/// opened, the cache's included (when every other connection is in use,
/// calls share the lease they have, or miss with reason `overloaded`, which
/// does not trip the breaker); the `UNWATCH` + `PING` recycle runs once per
/// lease, not per call; the pool's timeouts do not apply to the cache,
/// whose `deadline` bounds the wait for a connection and each response.
///
/// A leased connection that broke (Redis restarted, a timeout) is taken
/// out of the pool and replaced at the next call; a refused connect is
/// answered at once, with its reason.
#[derive(Clone)]
pub struct DeadpoolBackend {
    backend: RedisBackend,
    pool: DeadPool,
}

impl DeadpoolBackend {
    /// Wraps `pool`; waiting for a connection, and each response, give up
    /// after `deadline`.
    pub fn new(pool: DeadPool, deadline: Duration) -> Self {
        let lease = Arc::new(Leases::new(pool.clone()));
        let config = RedisConfig::leased(lease, "deadpool-redis pool", deadline);
        DeadpoolBackend {
            backend: RedisBackend::new(config),
            pool,
        }
    }
}

impl fmt::Debug for DeadpoolBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("DeadpoolBackend")
            .field("size", &status.size)
            .field("available", &status.available)
            .field("leased", &self.backend.open_connections())
            .finish()
    }
}

impl Pool for DeadPool {
    type Held = Connection;

    async fn check_out(&self) -> Result<Connection, RedisError> {
        let status = self.status();
        if status.available == 0 && status.size >= status.max_size {
            // Every connection it may open is in use.
            return Err(RedisError::overloaded());
        }
        self.get().await.map_err(|e| match e {
            PoolError::Backend(e) => RedisError::from(e),
            // A closed pool, a timeout of the pool's own, a hook.
            _ => RedisError::overloaded(),
        })
    }

    async fn mend(&self, held: &mut Option<Connection>) -> Result<(), RedisError> {
        // Out of the pool for good (so no one else gets it), then a new one.
        if let Some(broken) = held.take() {
            drop(Connection::take(broken));
        }
        *held = Some(self.check_out().await?);
        Ok(())
    }

    fn max_size(&self) -> usize {
        self.status().max_size
    }
}

impl Service<CacheRequest> for DeadpoolBackend {
    type Response = CacheResponse;
    type Error = RedisError;
    type Future = BackendFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RedisError>> {
        self.backend.poll_ready(cx)
    }

    fn call(&mut self, request: CacheRequest) -> BackendFuture {
        self.backend.call(request)
    }
}
