//! The vocabulary of cache work: requests, responses, and why a call was
//! answered without the cache.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::breaker::{Classify, Outcome};

/// How long a written key lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ttl {
    /// Expires after this long (rounded to milliseconds, at least 1 ms).
    After(Duration),
    /// Never expires. Only by explicit request: keys without expiry are
    /// what fills a Redis over weeks.
    Never,
}

impl From<Duration> for Ttl {
    fn from(d: Duration) -> Self {
        Ttl::After(d)
    }
}

/// One unit of cache work, on binary keys and values.
///
/// Keys are sent as given: prefixes, TTL defaults and size caps are applied
/// by the [`Cache`](crate::cache::Cache) handle before a request is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheRequest {
    /// `GET key` → [`CacheResponse::Value`].
    Get(Bytes),
    /// `MGET keys…` → [`CacheResponse::Values`], one slot per key.
    GetMany(Vec<Bytes>),
    /// `GET key` and `PTTL key` in one round trip →
    /// [`CacheResponse::ValueWithTtl`]: what a near cache stores, for no
    /// longer than Redis keeps it.
    GetWithTtl(Bytes),
    /// `SET key value [PX ttl]` → [`CacheResponse::Written`]`(true)`.
    Set {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Its lifetime.
        ttl: Ttl,
    },
    /// `SET key value NX [PX ttl]` → [`CacheResponse::Written`]: whether the
    /// key was absent and is now set.
    SetIfAbsent {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Its lifetime.
        ttl: Ttl,
    },
    /// `DEL keys…` → [`CacheResponse::Deleted`] with how many existed.
    Delete(Vec<Bytes>),
    /// `PEXPIRE key ttl` → [`CacheResponse::Expired`]: whether the key
    /// existed.
    Expire {
        /// The key.
        key: Bytes,
        /// Its new lifetime.
        ttl: Duration,
    },
}

impl CacheRequest {
    /// The operation's name, as used in metric labels: `get`, `get_many`,
    /// `set`, `set_if_absent`, `delete`, `expire`.
    pub fn op(&self) -> &'static str {
        match self {
            CacheRequest::Get(_) | CacheRequest::GetWithTtl(_) => "get",
            CacheRequest::GetMany(_) => "get_many",
            CacheRequest::Set { .. } => "set",
            CacheRequest::SetIfAbsent { .. } => "set_if_absent",
            CacheRequest::Delete(_) => "delete",
            CacheRequest::Expire { .. } => "expire",
        }
    }

    /// Whether the request only reads.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            CacheRequest::Get(_) | CacheRequest::GetMany(_) | CacheRequest::GetWithTtl(_)
        )
    }

    /// Whether the request changes data (a write, a delete, an expiry):
    /// what a replica, a failed save (`MISCONF`) or a write pause refuses.
    pub fn is_mutation(&self) -> bool {
        !self.is_read()
    }

    /// Whether the request may grow memory (and so fails when Redis is out
    /// of memory).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            CacheRequest::Set { .. } | CacheRequest::SetIfAbsent { .. }
        )
    }
}

/// The answer to a [`CacheRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheResponse {
    /// `Get`: the value, or `None` if the key is absent.
    Value(Option<Bytes>),
    /// `GetMany`: one slot per key, `None` where absent (or, behind a
    /// fail-open layer, where the cache could not answer).
    Values(Vec<Option<Bytes>>),
    /// `GetWithTtl`: the value and how long Redis keeps it from now
    /// ([`Ttl::Never`] for a key without expiry), or `None` if absent.
    ValueWithTtl(Option<(Bytes, Ttl)>),
    /// `Set`, `SetIfAbsent`: whether the value was written.
    Written(bool),
    /// `Delete`: how many of the keys existed.
    Deleted(u64),
    /// `Delete` of keys on several shards, some of which failed: how many
    /// of the keys the others deleted, the positions (among the request's
    /// keys) of those not deleted, and why. A failure, never a success.
    DeletedExcept {
        /// How many of the keys the shards that answered deleted.
        deleted: u64,
        /// The positions of the keys whose delete was not done.
        skipped: Vec<usize>,
        /// Why (the first failed shard's reason).
        reason: Reason,
    },
    /// `Expire`: whether the key existed.
    Expired(bool),
    /// A read answered as a miss because the cache could not answer it
    /// (only from a fail-open layer).
    Miss(Reason),
    /// A write or delete not done because the cache could not take it
    /// (only from a fail-open layer, or refused locally, e.g. too large).
    Skipped(Reason),
}

/// Why a call was answered without the cache. Used as the `reason` label of
/// [`CACHE_FAIL_OPEN_TOTAL`](crate::telemetry::CACHE_FAIL_OPEN_TOTAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The circuit breaker is open: the cache was not asked.
    BreakerOpen,
    /// No answer within the response deadline.
    Timeout,
    /// No connection could be had within the checkout deadline (Redis down,
    /// unreachable, refusing, or every connection busy).
    Unavailable,
    /// The connection failed (refused, reset, broken pipe).
    Io,
    /// Redis is out of memory (`OOM`): writes are shed for a while.
    OutOfMemory,
    /// Redis refuses writes because it is a replica (`READONLY`): a
    /// replica, or a primary demoted by a failover. Reads go on; writes are
    /// shed for the hold-down, then tried on a new connection.
    ReadOnly,
    /// Redis refuses writes because its last save failed (`MISCONF`, with
    /// `stop-writes-on-bgsave-error yes`). Reads go on; writes are shed for
    /// the hold-down.
    WritesStopped,
    /// A write got no answer within the deadline while the cache's reads
    /// may still be answered (a write pause, `CLIENT PAUSE … WRITE`). Writes
    /// are shed for the hold-down; timeouts of reads are [`Timeout`].
    ///
    /// [`Timeout`]: Reason::Timeout
    WriteTimeout,
    /// Redis has as many clients as `maxclients` allows: no new connection.
    MaxClients,
    /// Redis is up but cannot serve (`LOADING`, `MASTERDOWN`, `BUSY`).
    Busy,
    /// The cluster refuses every key (`CLUSTERDOWN`): a shard has no
    /// primary while `cluster-require-full-coverage` is `yes`, or the node
    /// lost the majority. It never trips a breaker: the refusal is fast,
    /// and ends for every shard at once when the cluster is whole again,
    /// which an open breaker would outlast.
    ClusterDown,
    /// The key's slot has no live primary (`CLUSTERDOWN Hash slot not
    /// served`, with `cluster-require-full-coverage no`): its shard is
    /// down, not yet replaced. A failure: it trips the shard's breaker.
    SlotDown,
    /// A multi-key call met a slot being migrated (`TRYAGAIN`): transient,
    /// and no sign of ill health, so it never trips a breaker.
    TryAgain,
    /// A redirection reached the caller (`MOVED`, `ASK`): the client's map
    /// of the cluster is behind while slots move. Transient; it never trips
    /// a breaker.
    Redirected,
    /// No sentinel named a primary that could be reached and says it is one
    /// (a failover under way, the primary down and not yet replaced, or no
    /// sentinel answering). A failure: it trips the breaker.
    NoPrimary,
    /// Redis refused the credentials (`WRONGPASS`, `NOAUTH`, `NOPERM`).
    Auth,
    /// Redis rejected the command itself (`WRONGTYPE`, a bad argument), or
    /// the cache refused it unsent (a zero TTL): the caller's bug, not a
    /// health signal.
    Rejected,
    /// The value or the key is larger than its configured cap: not sent.
    TooLarge,
    /// This process, not Redis, could not keep up: the connection already
    /// had as many calls in flight as allowed
    /// ([`max_in_flight`](crate::backend::RedisConfigBuilder::max_in_flight))
    /// and the call was not sent, or a deadline was noticed more than a
    /// whole deadline late (a runtime starved by a burst of tasks). Local
    /// back-pressure, not a health signal: it never trips the breaker.
    Overloaded,
    /// A stored value could not be decoded.
    Undecodable,
    /// Redis is close to full under `noeviction` (the watchdog's opt-in
    /// pre-emptive shedding): the write was not sent.
    MemoryPressure,
    /// Any other failure.
    Other,
}

impl Reason {
    /// The reason as a metric label (`breaker_open`, `timeout`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BreakerOpen => "breaker_open",
            Reason::Timeout => "timeout",
            Reason::Unavailable => "unavailable",
            Reason::Io => "io",
            Reason::OutOfMemory => "out_of_memory",
            Reason::ReadOnly => "read_only",
            Reason::WritesStopped => "writes_stopped",
            Reason::WriteTimeout => "write_timeout",
            Reason::MaxClients => "max_clients",
            Reason::Busy => "busy",
            Reason::ClusterDown => "cluster_down",
            Reason::SlotDown => "slot_down",
            Reason::TryAgain => "try_again",
            Reason::Redirected => "redirected",
            Reason::NoPrimary => "no_primary",
            Reason::Auth => "auth",
            Reason::Rejected => "rejected",
            Reason::TooLarge => "too_large",
            Reason::Overloaded => "overloaded",
            Reason::Undecodable => "undecodable",
            Reason::MemoryPressure => "memory_pressure",
            Reason::Other => "other",
        }
    }
}

impl Reason {
    /// Whether this answer means Redis refuses writes while it may still
    /// serve reads: it says nothing of the health of reads, so it does not
    /// trip a breaker, and writes are shed for a hold-down instead.
    pub fn refuses_writes(self) -> bool {
        matches!(
            self,
            Reason::OutOfMemory | Reason::ReadOnly | Reason::WritesStopped | Reason::WriteTimeout
        )
    }

    const ALL: [Reason; 22] = [
        Reason::BreakerOpen,
        Reason::Timeout,
        Reason::Unavailable,
        Reason::Io,
        Reason::OutOfMemory,
        Reason::ReadOnly,
        Reason::WritesStopped,
        Reason::WriteTimeout,
        Reason::MaxClients,
        Reason::Busy,
        Reason::ClusterDown,
        Reason::SlotDown,
        Reason::TryAgain,
        Reason::Redirected,
        Reason::NoPrimary,
        Reason::Auth,
        Reason::Rejected,
        Reason::TooLarge,
        Reason::Overloaded,
        Reason::Undecodable,
        Reason::MemoryPressure,
        Reason::Other,
    ];

    /// A small number standing for this reason, for atomics.
    pub(crate) fn code(self) -> u8 {
        Self::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(Self::ALL.len() - 1) as u8
    }

    /// The reason of a [`code`](Self::code).
    pub(crate) fn from_code(code: u8) -> Reason {
        Self::ALL
            .get(usize::from(code))
            .copied()
            .unwrap_or(Reason::Other)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that can say why, as a fail-open [`Reason`].
pub trait Fault {
    /// The reason to report when this error is turned into a miss or a skip.
    fn reason(&self) -> Reason;

    /// Whether a breaker of its own already counted this error (a cluster
    /// shard's): the cache's breaker then ignores it, so that one failing
    /// shard never opens the whole cache. Defaults to `false`.
    fn contained(&self) -> bool {
        false
    }
}

impl<E: Fault> Fault for crate::breaker::Error<E> {
    fn reason(&self) -> Reason {
        match self {
            crate::breaker::Error::Open(_) => Reason::BreakerOpen,
            crate::breaker::Error::Inner(e) => e.reason(),
        }
    }

    fn contained(&self) -> bool {
        match self {
            crate::breaker::Error::Open(_) => false,
            crate::breaker::Error::Inner(e) => e.contained(),
        }
    }
}

/// The breaker classifier for cache backends, by the error's [`Reason`]:
/// refusals of writes alone ([`Reason::refuses_writes`]: `OOM`, `READONLY`,
/// `MISCONF`, a write that timed out), the caller's own errors
/// ([`Reason::Rejected`], [`Reason::TooLarge`]), local back-pressure
/// ([`Reason::Overloaded`]), a cluster's slots moving
/// ([`Reason::TryAgain`], [`Reason::Redirected`]) and a cluster refusing
/// every key ([`Reason::ClusterDown`]: answered at once, and over the
/// moment the cluster is whole again, which an open breaker would outlast)
/// are ignored (such a Redis still serves reads; a `WRONGTYPE` says
/// nothing about health); every other error is a failure; every response a
/// success.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultClassifier;

impl<T, E: Fault> Classify<T, E> for FaultClassifier {
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) if e.contained() => Outcome::Ignored,
            Err(e) => match e.reason() {
                r if r.refuses_writes() => Outcome::Ignored,
                Reason::Rejected
                | Reason::TooLarge
                | Reason::Overloaded
                | Reason::TryAgain
                | Reason::Redirected
                | Reason::ClusterDown => Outcome::Ignored,
                _ => Outcome::Failure,
            },
        }
    }
}
