//! A cache backend over a bb8 pool of bb8-redis connections. Feature `bb8`.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use tower::Service;

use super::error::RedisError;
use super::lease::{Leases, Pool};
use super::{BackendFuture, RedisBackend, RedisConfig};
use crate::request::CacheRequest;

type Bb8Pool = bb8::Pool<RedisConnectionManager>;

/// A cache backend over the `bb8::Pool<bb8_redis::RedisConnectionManager>`
/// an axum service often holds already: one line gives it a fail-open cache,
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use fusebox::cache::Cache;
/// use fusebox::backend::Bb8Backend;
///
/// let manager = bb8_redis::RedisConnectionManager::new("redis://127.0.0.1:6379")?;
/// let pool = bb8::Pool::builder().build(manager).await?;
/// let cache = Cache::builder().backend(Bb8Backend::new(pool, Duration::from_millis(100))).build()?;
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
/// does not trip the breaker); `test_on_check_out` costs one `PING` per
/// lease, not per call; `connection_timeout`, `max_lifetime` and
/// `idle_timeout` do not apply to leased connections. `deadline` bounds the
/// wait for a connection and each response.
///
/// A leased connection that broke (Redis restarted, a timeout) is replaced
/// in its lease at the next call, with a connection the pool's manager
/// makes at once: bb8's own connects back off after failures
/// (djc/bb8#141), which kept hits away seconds after Redis answered again.
/// A refused connect is answered at once, with its reason.
#[derive(Clone)]
pub struct Bb8Backend {
    backend: RedisBackend,
    pool: Bb8Pool,
}

impl Bb8Backend {
    /// Wraps `pool`; waiting for a connection, and each response, give up
    /// after `deadline`.
    pub fn new(pool: Bb8Pool, deadline: Duration) -> Self {
        let lease = Arc::new(Leases::new(pool.clone()));
        let config = RedisConfig::leased(lease, "bb8-redis pool", deadline);
        Bb8Backend {
            backend: RedisBackend::new(config),
            pool,
        }
    }
}

impl fmt::Debug for Bb8Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bb8Backend")
            .field("pool", &self.pool.state())
            .field("leased", &self.backend.open_connections())
            .finish()
    }
}

impl Pool for Bb8Pool {
    type Held = bb8::PooledConnection<'static, RedisConnectionManager>;

    async fn check_out(&self) -> Result<Self::Held, RedisError> {
        let state = self.state();
        if state.idle_connections == 0 {
            if state.connections >= self.config().max_size {
                // Every connection it may open is in use.
                return Err(RedisError::overloaded());
            }
            // None idle: one made here, at once, and added, rather than
            // waiting on bb8's own connect and its back-off.
            let made = self.dedicated_connection().await?;
            if self.add(made).is_err() {
                return Err(RedisError::overloaded());
            }
        }
        self.get_owned().await.map_err(|e| match e {
            bb8::RunError::User(e) => RedisError::from(e),
            bb8::RunError::TimedOut => RedisError::overloaded(),
        })
    }

    async fn mend(&self, held: &mut Option<Self::Held>) -> Result<(), RedisError> {
        let made: MultiplexedConnection = self.dedicated_connection().await?;
        if let Some(held) = held {
            **held = made;
        }
        Ok(())
    }

    fn max_size(&self) -> usize {
        self.config().max_size as usize
    }
}

impl Service<CacheRequest> for Bb8Backend {
    type Response = crate::request::CacheResponse;
    type Error = RedisError;
    type Future = BackendFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RedisError>> {
        self.backend.poll_ready(cx)
    }

    fn call(&mut self, request: CacheRequest) -> BackendFuture {
        self.backend.call(request)
    }
}
