//! `Service<CacheRequest>` over a few multiplexed connections of its own,
//! and over a client the user already has.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use tower::Service;

use super::config::RedisConfig;
use super::error::RedisError;
use crate::cache::{CacheRequest, CacheResponse};

/// The future of a Redis backend call.
pub type BackendFuture = Pin<Box<dyn Future<Output = Result<CacheResponse, RedisError>> + Send>>;

/// At most one connect attempt per connection in this interval: while
/// Redis refuses, every other caller gets the last attempt's error at once,
/// and a down Redis sees a few attempts per second from this process.
const RECONNECT_PACE: Duration = Duration::from_millis(100);

/// A Redis cache backend over a few multiplexed connections, with every
/// wait bounded.
///
/// Unlike a stock pool it: never waits on Redis to be built; bounds the
/// wait for a connection (default 50 ms, not 30 s), the connect and every
/// response; answers at once when a connect is refused (the error itself,
/// not a timeout later); does not `PING` on use (a dropped connection is
/// flagged by a RESP3 push, or by its first I/O error or timeout, and never
/// used again); and shares each multiplexed connection among all calls, so
/// in-flight commands are not capped and are batched into few writes.
///
/// Reads and writes go over separate connections: Redis serves one
/// connection's commands in order, so a write held up (`CLIENT PAUSE …
/// WRITE`, a slow `SET` of a large value) would otherwise hold up every read
/// queued behind it. A connection that answers `READONLY` (a replica, or a
/// primary demoted by a failover) is dropped, and the next one re-resolves
/// the host name, so writes reach the new primary without a restart.
///
/// Errors are [`RedisError`]s classified by [`Reason`](crate::cache::Reason); put a
/// [`CircuitBreaker`](crate::breaker::CircuitBreaker) and a
/// [`FailOpen`](crate::fail_open::FailOpen) on top (the [`Cache`] does).
///
/// [`Cache`]: crate::cache::Cache
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
}

struct Shared {
    config: RedisConfig,
    /// Connections for reads (spread by thread), then the one for writes.
    slots: Box<[Slot]>,
}

/// One multiplexed connection, made on demand and replaced when broken.
struct Slot {
    /// The connection calls use, cloned out; `None` or flagged broken when
    /// a new one must be made.
    current: RwLock<Option<Conn>>,
    /// Held while connecting: one attempt at a time per slot, whose result
    /// every waiting caller shares.
    connecting: tokio::sync::Mutex<Attempt>,
}

/// The last failed connect of a slot, shared with callers that arrive
/// within [`RECONNECT_PACE`] of it.
#[derive(Default)]
struct Attempt {
    failed: Option<(tokio::time::Instant, RedisError)>,
}

impl RedisBackend {
    /// Makes the backend. Connects nothing and spawns nothing: connections
    /// are made on demand, so this succeeds at once whether or not Redis is
    /// up, inside a tokio runtime or not. Calls need a tokio runtime.
    pub fn new(config: RedisConfig) -> Self {
        let slots = (0..=config.connections)
            .map(|_| Slot {
                current: RwLock::new(None),
                connecting: tokio::sync::Mutex::new(Attempt::default()),
            })
            .collect();
        RedisBackend {
            shared: Arc::new(Shared { config, slots }),
        }
    }

    /// The address this backend connects to (no credentials).
    pub fn addr(&self) -> &str {
        &self.shared.config.addr
    }

    /// How many of its connections are open and usable right now.
    pub fn open_connections(&self) -> usize {
        self.shared
            .slots
            .iter()
            .filter(|s| s.current().is_some())
            .count()
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("addr", &self.shared.config.addr)
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

thread_local! {
    /// Spreads this thread's reads over the read connections.
    static READ_SLOT: usize = {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, Relaxed)
    };
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
        let reads = self.shared.config.connections as usize;
        let index = if request.is_mutation() {
            reads
        } else {
            READ_SLOT.with(|i| *i) % reads
        };
        // The shared state is cloned into the future only when a connection
        // must be made. (Each clone of an `Arc` here is a write to memory
        // every thread shares: the fast path makes only the connection's.)
        let source = match self.shared.slots[index].current() {
            Some(conn) => Source::Current(conn),
            None => Source::Connect(self.shared.clone(), index),
        };
        let mutation = request.is_mutation();
        Box::pin(async move {
            let mut conn = match source {
                Source::Current(conn) => conn,
                Source::Connect(shared, index) => shared.checkout(index).await?,
            };
            let result = execute(&mut conn.inner, request)
                .await
                .map_err(RedisError::from);
            match result {
                Ok(response) => Ok(response),
                Err(e) => {
                    if e.breaks_connection() {
                        conn.broken.store(true, Relaxed);
                    }
                    // A write that times out on a connection of its own
                    // says writes are held up (a write pause, a stuck
                    // save), not that reads are: reads say that themselves.
                    Err(if mutation { e.on_write() } else { e })
                }
            }
        })
    }
}

impl Shared {
    /// A usable connection for slot `index`: the current one, one another
    /// caller has just made, or a new one. Bounded by the checkout
    /// deadline; a refused connect is answered at once, and within
    /// [`RECONNECT_PACE`] of a failed attempt its error is answered without
    /// another.
    async fn checkout(&self, index: usize) -> Result<Conn, RedisError> {
        let slot = &self.slots[index];
        let deadline = self.config.checkout_timeout;
        let attempt = async {
            let mut attempt = slot.connecting.lock().await;
            if let Some(conn) = slot.current() {
                return Ok(conn);
            }
            if let Some((at, e)) = &attempt.failed {
                if at.elapsed() < RECONNECT_PACE {
                    return Err(e.clone());
                }
            }
            match self.connect().await {
                Ok(conn) => {
                    attempt.failed = None;
                    slot.set(conn.clone());
                    Ok(conn)
                }
                Err(e) => {
                    crate::telemetry::redis_connect_error(&self.config.addr, e.reason());
                    attempt.failed = Some((tokio::time::Instant::now(), e.clone()));
                    Err(e)
                }
            }
        };
        match tokio::time::timeout(deadline, attempt).await {
            Ok(result) => result,
            Err(_) => {
                // Why the last attempt failed, if one did, says why none
                // could be had in time.
                let last = slot
                    .connecting
                    .try_lock()
                    .ok()
                    .and_then(|a| a.failed.as_ref().map(|(_, e)| e.reason()));
                Err(RedisError::checkout_timeout(last))
            }
        }
    }

    async fn connect(&self) -> Result<Conn, RedisError> {
        let config = &self.config;
        let broken = Arc::new(AtomicBool::new(false));
        let mut settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        if config.resp3 {
            let flag = broken.clone();
            settings = settings.set_push_sender(move |push: PushInfo| {
                if push.kind == PushKind::Disconnection {
                    flag.store(true, Relaxed);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        }
        let connect = config
            .client
            .get_multiplexed_async_connection_with_config(&settings);
        // The client's own timeout covers the handshake too; this one makes
        // sure of it.
        let limit = config.connect_timeout.saturating_mul(2);
        match tokio::time::timeout(limit, connect).await {
            Ok(Ok(inner)) => Ok(Conn { inner, broken }),
            Ok(Err(e)) => Err(RedisError::from(e)),
            Err(_) => Err(RedisError::timeout()),
        }
    }
}

impl Slot {
    /// The current connection, unless there is none or it is broken.
    fn current(&self) -> Option<Conn> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|c| !c.broken.load(Relaxed))
            .cloned()
    }

    fn set(&self, conn: Conn) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(conn);
    }
}

/// Where a call gets its connection.
enum Source {
    Current(Conn),
    Connect(Arc<Shared>, usize),
}

/// A multiplexed connection and a flag set when it must not be used again.
#[derive(Clone)]
struct Conn {
    inner: MultiplexedConnection,
    broken: Arc<AtomicBool>,
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

/// A TTL in milliseconds as Redis takes it: at least 1, and at most 2^62
/// (Redis refuses an expiry that overflows its clock, so a `max_ttl` of
/// `Duration::MAX` means "millions of years", not "refused").
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, 1 << 62)
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
