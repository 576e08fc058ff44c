//! `Service<CacheRequest>` over a few multiplexed connections of its own,
//! and over a client the user already has.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use tokio::sync::watch;
use tower::Service;

mod batch;
pub(super) mod conn;
mod pipe;
mod resp;
mod slot;

use batch::{Caller, Join, Kind};
use conn::{backlogged, noticed_late, Conn, ConnState, InFlight};
use slot::{lock, Leading, Slot};

use super::commands::execute;
use super::config::RedisConfig;
use super::error::RedisError;
use crate::request::{CacheRequest, CacheResponse, Reason};

/// The future of a Redis backend call.
pub type BackendFuture = Pin<Box<dyn Future<Output = Result<CacheResponse, RedisError>> + Send>>;

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
/// queued behind it. While Redis has no room for one of them (`maxclients`
/// reached), calls share a connection it did take. A connection that answers `READONLY` (a replica, or a
/// primary demoted by a failover) is dropped, and the next one re-resolves
/// the host name, so writes reach the new primary without a restart.
///
/// Errors are [`RedisError`]s classified by [`Reason`](crate::cache::Reason); put a
/// [`CircuitBreaker`](crate::breaker::CircuitBreaker) and a
/// fail-open on top (the [`Cache`] does).
///
/// [`Cache`]: crate::cache::Cache
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
}

struct Shared {
    config: RedisConfig,
    /// Connections for reads, then as many for writes (each spread by
    /// thread).
    slots: Box<[Slot]>,
    /// The first slot writes use (0, the only slot, when a small pool is
    /// leased from).
    write_slots: usize,
    /// Whether connections are leased from a user's pool.
    leased: bool,
    /// How many leased connections were lost (see [`ConnState`]).
    #[cfg_attr(not(any(feature = "bb8", feature = "deadpool")), allow(dead_code))]
    lost: Arc<std::sync::atomic::AtomicU64>,
}

impl RedisBackend {
    /// Makes the backend. Connects nothing and spawns nothing: connections
    /// are made on demand, so this succeeds at once whether or not Redis is
    /// up, inside a tokio runtime or not. Calls need a tokio runtime.
    pub fn new(config: RedisConfig) -> Self {
        let (leased, one_slot) = match &config.target {
            #[cfg(any(feature = "bb8", feature = "deadpool"))]
            super::Target::Leased(lease) => (true, lease.one_slot()),
            _ => (false, false),
        };
        let reads = config.connections as usize;
        let write_slots = if one_slot { 0 } else { reads };
        let slots = (0..write_slots + reads)
            .map(|_| Slot {
                current: RwLock::new(None),
                connecting: AtomicBool::new(false),
                failed: Mutex::new(None),
                ended: watch::channel(0).0,
            })
            .collect();
        RedisBackend {
            shared: Arc::new(Shared {
                config,
                slots,
                write_slots,
                leased,
                lost: Arc::default(),
            }),
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
    /// Spreads the threads' calls over the connections: each thread keeps
    /// to one for reads and one for writes.
    static THREAD_SLOT: usize = {
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
        let mine = THREAD_SLOT.with(|i| *i) % reads;
        let index = if request.is_mutation() {
            self.shared.write_slots + mine
        } else {
            mine
        };
        // The shared state is cloned into the future only when a connection
        // must be made. (Each clone of an `Arc` here is a write to memory
        // every thread shares: the fast path makes only the connection's.)
        let source = match self.shared.slots[index].current() {
            Some(conn) => Source::Current(conn),
            None => Source::Connect(self.shared.clone(), index),
        };
        let mutation = request.is_mutation();
        let max_in_flight = self.shared.config.max_in_flight;
        let deadline = self.shared.config.response_timeout;
        let max_batch = self.shared.config.max_batch;
        let kind = Kind::of(&request).filter(|_| max_batch > 1);
        let fut = async move {
            let conn = match source {
                Source::Current(conn) => conn,
                // (Boxed apart, as the round trip below is: see there.)
                Source::Connect(shared, index) => match Box::pin(shared.checkout(index)).await {
                    Ok(conn) => conn,
                    // Redis (`maxclients`) or the pool leased from has no
                    // room for this connection but gave another: the calls
                    // share that one, rather than fail what it can serve.
                    Err(e) if matches!(e.reason(), Reason::MaxClients | Reason::Overloaded) => {
                        shared.any_current().ok_or(e)?
                    }
                    Err(e) => return Err(e),
                },
            };
            let mut call = Caller { conn, turn: None };
            // Beyond the limit a call would queue behind the others and time
            // out, and the timeouts would open the breaker: it is shed
            // unsent instead.
            let Some(counted) = InFlight::enter(&call.conn.state, max_in_flight) else {
                return Err(RedisError::overloaded());
            };
            let state = &call.conn.state;
            let (sent, answered) = (tokio::time::Instant::now(), state.answered());
            // A timeout, as what it says: of this process when it was too
            // busy to read the answer in time (a burst of tasks starving
            // the runtime), which says nothing of Redis; else of Redis.
            let timed_out = |e: RedisError| match e.reason() {
                Reason::Timeout if state.starved(sent, answered, deadline) => {
                    RedisError::overloaded()
                }
                _ if mutation => e.on_write(),
                _ => e,
            };
            let request = match kind {
                Some(kind) => {
                    match state.batches.join(
                        kind,
                        request,
                        sent + deadline,
                        state.pipe.as_ref(),
                        counted.alone(),
                    ) {
                        Join::Now(request) => {
                            call.turn = Some((kind, max_batch));
                            request
                        }
                        // Answered by its deadline (see `Batches::join`).
                        Join::Queued(answer) => {
                            return match answer.await {
                                Ok(answer) => answer.map_err(timed_out),
                                Err(_) => Err(RedisError::abandoned()),
                            };
                        }
                    }
                }
                None => request,
            };
            let mut inner = call.conn.inner.clone();
            // The round trip's future (~2.6 KiB, most of it redis-rs's) is
            // boxed apart, so that every call's own box stays small
            // (432 bytes): a queued call never needs it, and a box over
            // glibc's per-thread cache size (1 KiB) is freed on another
            // thread under the arena's lock. At 64 tasks of `get`s that
            // free was 9 % of the client's CPU.
            let result = Box::pin(execute(&mut inner, &request))
                .await
                .map_err(RedisError::from);
            match result {
                Ok(response) => {
                    state.answered_many(1);
                    Ok(response)
                }
                Err(e) => {
                    // (A timeout noticed late keeps the connection.)
                    let e = timed_out(e);
                    if e.breaks_connection() {
                        state.lose();
                    }
                    // A write that times out on a connection of its own
                    // says writes are held up (a write pause, a stuck
                    // save), not that reads are: reads say that themselves.
                    Err(e)
                }
            }
        };
        Box::pin(fut)
    }
}

impl Shared {
    /// Any usable connection this backend has.
    fn any_current(&self) -> Option<Arc<Conn>> {
        self.slots.iter().find_map(Slot::current)
    }

    /// A usable connection for slot `index`: the current one, one another
    /// caller has just made, or a new one. Bounded by the checkout
    /// deadline; a refused connect is answered at once, and within
    /// [`RECONNECT_PACE`](slot::RECONNECT_PACE) of a failed attempt its error is answered without
    /// another.
    async fn checkout(&self, index: usize) -> Result<Arc<Conn>, RedisError> {
        let slot = &self.slots[index];
        let attempt = async {
            loop {
                // Subscribed before looking, so an attempt that ends after
                // the look still wakes this caller.
                let mut ended = slot.ended.subscribe();
                if let Some(conn) = slot.current() {
                    return Ok(conn);
                }
                if let Some(e) = slot.recent_failure() {
                    return Err(e);
                }
                if let Some(_leading) = Leading::try_new(slot) {
                    // Looked at again now that no one else can be
                    // connecting: an attempt may have ended between the
                    // first look and the lead.
                    if let Some(conn) = slot.current() {
                        return Ok(conn);
                    }
                    if let Some(e) = slot.recent_failure() {
                        return Err(e);
                    }
                    return match self.connect(index).await {
                        Ok(conn) => {
                            let conn = Arc::new(conn);
                            slot.set(conn.clone());
                            *lock(&slot.failed) = None;
                            Ok(conn)
                        }
                        Err(e) => {
                            // A connect that timed out while the runtime
                            // was backlogged: its handshake waited behind
                            // the backlog, not on Redis.
                            let e = match e.reason() {
                                Reason::Timeout if backlogged() => RedisError::overloaded(),
                                _ => e,
                            };
                            crate::telemetry::redis_connect_error(
                                &self.config.addr,
                                e.reason().as_str(),
                            );
                            // (A pool with no connection free is asked
                            // again by the next call: no Redis to spare.)
                            if !(self.leased && e.reason() == Reason::Overloaded) {
                                *lock(&slot.failed) =
                                    Some((tokio::time::Instant::now(), e.clone()));
                            }
                            Err(e)
                        }
                    };
                }
                // Another caller is connecting: its attempt's end wakes us.
                let _ = ended.changed().await;
            }
        };
        let start = tokio::time::Instant::now();
        match tokio::time::timeout(self.config.checkout_timeout, attempt).await {
            Ok(result) => result,
            Err(_) if noticed_late(start, self.config.checkout_timeout) || backlogged() => {
                Err(RedisError::overloaded())
            }
            // Why the last attempt failed, if one did, says why no
            // connection could be had in time.
            Err(_) => {
                let last = lock(&slot.failed).as_ref().map(|(_, e)| e.reason());
                Err(RedisError::checkout_timeout(last))
            }
        }
    }

    async fn connect(&self, index: usize) -> Result<Conn, RedisError> {
        let config = &self.config;
        #[cfg(any(feature = "bb8", feature = "deadpool"))]
        if let super::Target::Leased(pool) = &config.target {
            let state = Arc::new(ConnState::leased(&self.lost));
            return match tokio::time::timeout(config.checkout_timeout, pool.lease(index)).await {
                Ok(lease) => {
                    // Made with the pool's settings: this handle waits for
                    // responses as long as the backend's own would.
                    let mut inner = lease?;
                    inner.set_response_timeout(config.response_timeout);
                    Ok(Conn { inner, state })
                }
                Err(_) => Err(RedisError::timeout()),
            };
        }
        let _ = index;
        let connect = async {
            // Behind Sentinel, the primary it names now.
            let client = config.target.client().await?;
            // Batches go out on a connection of its own, where it can have
            // one (see `pipe`).
            let pipe = pipe::PipeTarget::of(
                client.get_connection_info(),
                config.connect_timeout,
                config.max_batch,
            )
            .filter(|_| config.max_batch > 1);
            let state = Arc::new_cyclic(|conn| {
                ConnState::new(pipe.map(|target| Arc::new(pipe::Pipe::new(target, conn.clone()))))
            });
            let mut settings = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout));
            if config.resp3 {
                // (Weak: the connection may be held by its own state's
                // pipe, as the way its calls go when the pipe is refused.)
                let flag = Arc::downgrade(&state);
                settings = settings.set_push_sender(move |push: PushInfo| {
                    if let Some(state) = flag
                        .upgrade()
                        .filter(|_| push.kind == PushKind::Disconnection)
                    {
                        state.broken.store(true, Relaxed);
                    }
                    Ok::<(), std::convert::Infallible>(())
                });
            }
            let inner = client
                .get_multiplexed_async_connection_with_config(&settings)
                .await
                .map_err(RedisError::from)?;
            if let Some(pipe) = &state.pipe {
                pipe.fall_back_to(inner.clone());
            }
            Ok::<_, RedisError>(Conn { inner, state })
        };
        // The client's own timeout covers the handshake too; this one makes
        // sure of it (and bounds asking the sentinels).
        let limit = config.connect_timeout.saturating_mul(2);
        match tokio::time::timeout(limit, connect).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::timeout()),
        }
    }
}

/// Where a call gets its connection.
enum Source {
    Current(Arc<Conn>),
    Connect(Arc<Shared>, usize),
}
