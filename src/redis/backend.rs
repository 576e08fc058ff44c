//! `Service<CacheRequest>` over a bb8 pool of multiplexed connections, and
//! over a client the user already has.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use tower::Service;

use super::config::RedisConfig;
use super::error::RedisError;
use crate::cache::{CacheRequest, CacheResponse, Reason};

/// The future of a Redis backend call.
pub type BackendFuture = Pin<Box<dyn Future<Output = Result<CacheResponse, RedisError>> + Send>>;

/// A Redis cache backend over a bb8 pool, with every wait bounded.
///
/// Unlike stock bb8-redis it: never waits on Redis to be built; bounds the
/// checkout (default 50 ms, not 30 s), the connect and every response; does
/// not `PING` on checkout (a dropped connection is flagged by a RESP3 push,
/// or by its first I/O error or timeout, and never handed out again); and
/// shares one multiplexed connection among all calls (cloned out, without a
/// pool checkout per call), so in-flight commands are not capped by the
/// pool size and are batched into few writes. The pool is asked only when
/// that connection is missing or broken.
///
/// Errors are [`RedisError`]s classified by [`Reason`]; put a
/// [`CircuitBreaker`](crate::breaker::CircuitBreaker) and a
/// [`FailOpen`](crate::fail_open::FailOpen) on top (the [`Cache`] does).
///
/// [`Cache`]: crate::cache::Cache
#[derive(Clone)]
pub struct RedisBackend {
    pool: bb8::Pool<Manager>,
    shared: Arc<Shared>,
}

struct Shared {
    addr: String,
    /// The connection calls use, cloned out without touching the pool; the
    /// pool is asked again only when it is missing or flagged broken.
    current: RwLock<Option<Conn>>,
    /// Why the last connect failed (a `Reason` code), so that a checkout
    /// that times out can say why. `NONE` when the last connect worked.
    last_connect: AtomicU8,
}

const NONE: u8 = u8::MAX;

impl RedisBackend {
    /// Makes the pool. Connects nothing and spawns nothing: connections are
    /// made on demand, so this succeeds at once whether or not Redis is up,
    /// inside a tokio runtime or not. Calls need a tokio runtime.
    pub fn new(config: RedisConfig) -> Self {
        let shared = Arc::new(Shared {
            addr: config.addr.clone(),
            current: RwLock::new(None),
            last_connect: AtomicU8::new(NONE),
        });
        let manager = Manager {
            client: config.client.clone(),
            resp3: config.resp3,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            shared: shared.clone(),
        };
        let pool = bb8::Pool::builder()
            .max_size(config.pool_size)
            .min_idle(None)
            .connection_timeout(config.checkout_timeout)
            // No reaper task: building must not need a runtime (bb8 spawns
            // one for either setting), and a multiplexed connection is
            // replaced when it breaks, not by age.
            .idle_timeout(None)
            .max_lifetime(None)
            // The breaker owns back-off: one attempt per replenishment.
            .retry_connection(false)
            // `is_valid` is a flag check, not a round trip.
            .test_on_check_out(true)
            .error_sink(Box::new(Sink {
                shared: shared.clone(),
            }))
            .build_unchecked(manager);
        RedisBackend { pool, shared }
    }

    /// The address this backend connects to (no credentials).
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// Connections in the pool, and how many are idle.
    pub fn pool_state(&self) -> (u32, u32) {
        let s = self.pool.state();
        (s.connections, s.idle_connections)
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("addr", &self.shared.addr)
            .field("pool", &self.pool.state())
            .finish()
    }
}

impl Service<CacheRequest> for RedisBackend {
    type Response = CacheResponse;
    type Error = RedisError;
    type Future = BackendFuture;

    /// Always ready: waiting for a connection happens in the call, bounded
    /// by the checkout deadline.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), RedisError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CacheRequest) -> BackendFuture {
        // The pool is cloned into the future only when it will be asked.
        // (Each clone of an `Arc` here is a write to memory every thread
        // shares: the fast path makes only the connection's.)
        let source = match self.shared.current() {
            Some(conn) => Source::Current(conn),
            None => Source::Pool(self.pool.clone(), self.shared.clone()),
        };
        Box::pin(async move {
            let mut conn = match source {
                Source::Current(conn) => conn,
                Source::Pool(pool, shared) => match pool.get().await {
                    // Clone the multiplexed connection out and give the
                    // slot back at once.
                    Ok(pooled) => shared.set_current(pooled.clone()),
                    Err(bb8::RunError::User(e)) => return Err(e),
                    Err(bb8::RunError::TimedOut) => {
                        let last = reason_from_code(shared.last_connect.load(Relaxed));
                        return Err(RedisError::checkout_timeout(last));
                    }
                },
            };
            let result = execute(&mut conn.inner, request)
                .await
                .map_err(RedisError::from);
            if let Err(e) = &result {
                if e.breaks_connection() {
                    conn.broken.store(true, Relaxed);
                }
            }
            result
        })
    }
}

impl Shared {
    /// The current connection, unless there is none or it is broken.
    fn current(&self) -> Option<Conn> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|c| !c.broken.load(Relaxed))
            .cloned()
    }

    fn set_current(&self, conn: Conn) -> Conn {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *current = Some(conn.clone());
        conn
    }
}

/// Where a call gets its connection.
enum Source {
    Current(Conn),
    Pool(bb8::Pool<Manager>, Arc<Shared>),
}

/// A pooled connection: a multiplexed connection and a flag set when it
/// must not be used again.
#[derive(Clone)]
pub(crate) struct Conn {
    inner: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

pub(crate) struct Manager {
    client: redis::Client,
    resp3: bool,
    connect_timeout: Duration,
    response_timeout: Duration,
    shared: Arc<Shared>,
}

impl bb8::ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    async fn connect(&self) -> Result<Conn, RedisError> {
        let broken = Arc::new(AtomicBool::new(false));
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout));
        if self.resp3 {
            let flag = broken.clone();
            config = config.set_push_sender(move |push: PushInfo| {
                if push.kind == PushKind::Disconnection {
                    flag.store(true, Relaxed);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        }
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        // The client's own timeout covers the handshake too; this one makes
        // sure of it.
        let inner = match tokio::time::timeout(self.connect_timeout * 2, connect).await {
            Ok(Ok(inner)) => inner,
            Ok(Err(e)) => return Err(RedisError::from(e)),
            Err(_) => return Err(RedisError::timeout()),
        };
        self.shared.last_connect.store(NONE, Relaxed);
        Ok(Conn { inner, broken })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), RedisError> {
        if conn.broken.load(Relaxed) {
            Err(RedisError::broken())
        } else {
            Ok(())
        }
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken.load(Relaxed)
    }
}

/// Receives bb8's connect errors: remembers the last one's reason and counts
/// it.
struct Sink {
    shared: Arc<Shared>,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sink")
    }
}

impl bb8::ErrorSink<RedisError> for Sink {
    fn sink(&self, error: RedisError) {
        let reason = error.reason();
        self.shared.last_connect.store(reason_code(reason), Relaxed);
        crate::telemetry::redis_connect_error(&self.shared.addr, reason);
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<RedisError>> {
        Box::new(Sink {
            shared: self.shared.clone(),
        })
    }
}

const REASONS: [Reason; 12] = [
    Reason::BreakerOpen,
    Reason::Timeout,
    Reason::Unavailable,
    Reason::Io,
    Reason::OutOfMemory,
    Reason::Busy,
    Reason::Auth,
    Reason::Rejected,
    Reason::TooLarge,
    Reason::Undecodable,
    Reason::MemoryPressure,
    Reason::Other,
];

fn reason_code(r: Reason) -> u8 {
    REASONS
        .iter()
        .position(|x| *x == r)
        .unwrap_or(REASONS.len() - 1) as u8
}

fn reason_from_code(code: u8) -> Option<Reason> {
    REASONS.get(usize::from(code)).copied()
}

/// A cache backend over a client the caller already has: a redis
/// [`ConnectionManager`](redis::aio::ConnectionManager), a
/// [`MultiplexedConnection`], or any cloneable [`ConnectionLike`]. Every call
/// is bounded by `deadline` (the client's own retries included).
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
            match tokio::time::timeout(deadline, execute(&mut conn, request)).await {
                Ok(result) => result.map_err(RedisError::from),
                Err(_) => Err(RedisError::timeout()),
            }
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Runs one request on one connection.
pub(crate) async fn execute<C: ConnectionLike + Send>(
    conn: &mut C,
    request: CacheRequest,
) -> redis::RedisResult<CacheResponse> {
    use crate::cache::Ttl;
    Ok(match request {
        CacheRequest::Get(key) => {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(&key[..]).query_async(conn).await?;
            CacheResponse::Value(v.map(Bytes::from))
        }
        CacheRequest::GetMany(keys) => {
            if keys.is_empty() {
                return Ok(CacheResponse::Values(Vec::new()));
            }
            let mut cmd = redis::cmd("MGET");
            for key in &keys {
                cmd.arg(&key[..]);
            }
            let v: Vec<Option<Vec<u8>>> = cmd.query_async(conn).await?;
            CacheResponse::Values(v.into_iter().map(|v| v.map(Bytes::from)).collect())
        }
        CacheRequest::Set { key, value, ttl } => {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key[..]).arg(&value[..]);
            if let Ttl::After(d) = ttl {
                cmd.arg("PX").arg(millis(d));
            }
            let _: redis::Value = cmd.query_async(conn).await?;
            CacheResponse::Written(true)
        }
        CacheRequest::SetIfAbsent { key, value, ttl } => {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key[..]).arg(&value[..]).arg("NX");
            if let Ttl::After(d) = ttl {
                cmd.arg("PX").arg(millis(d));
            }
            let v: redis::Value = cmd.query_async(conn).await?;
            CacheResponse::Written(!matches!(v, redis::Value::Nil))
        }
        CacheRequest::Delete(keys) => {
            if keys.is_empty() {
                return Ok(CacheResponse::Deleted(0));
            }
            let mut cmd = redis::cmd("DEL");
            for key in &keys {
                cmd.arg(&key[..]);
            }
            CacheResponse::Deleted(cmd.query_async(conn).await?)
        }
        CacheRequest::Expire { key, ttl } => {
            let n: u64 = redis::cmd("PEXPIRE")
                .arg(&key[..])
                .arg(millis(ttl))
                .query_async(conn)
                .await?;
            CacheResponse::Expired(n == 1)
        }
    })
}
