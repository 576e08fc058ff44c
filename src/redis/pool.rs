//! A cache backend over a bb8 pool of bb8-redis connections. Feature `bb8`.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use tower::Service;

use super::commands::pooled;
use super::error::RedisError;
use super::BackendFuture;
use crate::request::{CacheRequest, CacheResponse};

/// A cache backend over the `bb8::Pool<bb8_redis::RedisConnectionManager>`
/// an axum service often holds already: one line gives it a fail-open cache,
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use fusebox::cache::Cache;
/// use fusebox::redis::Bb8Backend;
///
/// let manager = bb8_redis::RedisConnectionManager::new("redis://127.0.0.1:6379")?;
/// let pool = bb8::Pool::builder().build(manager).await?;
/// let cache = Cache::builder().backend(Bb8Backend::new(pool, Duration::from_millis(100))).build()?;
/// # let _ = cache; Ok(()) }
/// ```
///
/// Every call — checking a connection out, then the command — is bounded by
/// `deadline`. A call still waiting for a connection at its deadline while
/// the pool has all the connections it may open, all busy, is a miss with
/// reason `overloaded` (callers queueing, not Redis failing: it does not
/// trip the breaker); size the pool to the callers. What the pool itself does is its own: bb8 checks each
/// connection out with a `PING` by default (a round trip per call; turn it
/// off with `Pool::builder().test_on_check_out(false)`), and after a failed
/// connect a checkout waits for its `connection_timeout` rather than
/// failing at once (djc/bb8#141). [`RedisBackend`](super::RedisBackend)
/// has neither cost: prefer it unless the pool is shared with other code.
#[derive(Clone)]
pub struct Bb8Backend {
    pool: bb8::Pool<RedisConnectionManager>,
    deadline: Duration,
    max_size: u32,
}

impl Bb8Backend {
    /// Wraps `pool`; each call gives up after `deadline`.
    pub fn new(pool: bb8::Pool<RedisConnectionManager>, deadline: Duration) -> Self {
        let max_size = pool.config().max_size;
        Bb8Backend {
            pool,
            deadline,
            max_size,
        }
    }
}

impl fmt::Debug for Bb8Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bb8Backend")
            .field("pool", &self.pool.state())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Service<CacheRequest> for Bb8Backend {
    type Response = CacheResponse;
    type Error = RedisError;
    type Future = BackendFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RedisError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CacheRequest) -> BackendFuture {
        let (pool, deadline, max_size) = (self.pool.clone(), self.deadline, self.max_size);
        Box::pin(async move {
            let checkout = async {
                pool.get().await.map_err(|e| match e {
                    bb8::RunError::User(e) => RedisError::from(e),
                    bb8::RunError::TimedOut => RedisError::checkout_timeout(None),
                })
            };
            let saturated = || {
                let state = pool.state();
                state.idle_connections == 0 && state.connections >= max_size
            };
            pooled(deadline, checkout, request, saturated).await
        })
    }
}
