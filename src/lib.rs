//! Circuit breakers and fail-open caching for [Tower] services, built for
//! Redis.
//!
//! When the cache a service depends on fails — down, hung, or out of memory
//! because keys without expiry piled up for weeks — a service that only
//! needed a *cache* should keep answering from its source of truth. fusebox
//! turns such failures into fast, bounded, counted cache misses.
//!
//! * A [circuit breaker](breaker) that wraps any `tower::Service` (an HTTP
//!   client, a gRPC channel, a cache client), with a closed-state hot path
//!   that takes no lock, reads no clock and writes no shared memory.
//! * A [fail-open cache](cache) over Redis: bounded deadlines everywhere,
//!   the breaker in front, and every failure answered as a miss or a skip,
//!   counted and traced.
//! * A [memory watchdog](watchdog) that sees Redis filling up days ahead
//!   and names the keys without TTL that fill it.
//! * Response caching for axum and tonic servers (feature `http`).
//!
//! ```
//! use std::time::Duration;
//! use fusebox::cache::Cache;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Nothing listens on port 1: every call is a miss, never an error, and
//! // once the breaker is open, an immediate one.
//! let cache = Cache::builder().name("demo").redis_url("redis://127.0.0.1:1").build()?;
//! for _ in 0..10 {
//!     assert_eq!(cache.get("key").await, None);
//! }
//! assert!(cache.breaker().state().is_rejecting());
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! Each module uses only those below it:
//!
//! ```text
//! http       response caching (HttpCacheLayer, GrpcCacheLayer) and breakers
//!   │        for HTTP/gRPC (HttpBreakerLayer, GrpcBreakerLayer, classifiers)
//! cache      the Cache handle: keys, TTLs, caps, typed values (Codec)
//!   │        its private fail_open layer: errors → misses and skips,
//!   │        write shedding
//!   │
//!   ├─ near        the near cache: an L1 bounded in bytes, invalidated by
//!   │              RESP3 client tracking, stale entries for failures
//!   ├─ watchdog    memory levels, growth forecast, leeway alerts, no-TTL keys
//!   ├─ redis       RedisBackend (own connections), ClientBackend,
//!   │              Bb8Backend, DeadpoolBackend, ClusterBackend (a breaker
//!   │              per shard), error classification
//!   │
//! request    CacheRequest, CacheResponse, Reason, Fault (re-exported by cache)
//! flight     single flight, for get_or_load and the response caches
//! breaker    CircuitBreaker, KeyedBreaker, the state machine, per-thread counts
//! telemetry  the names of every metric
//! ```
//!
//! One `cache.get("k")`, top to bottom:
//!
//! 1. [`Cache::get`](cache::Cache::get) adds the prefix, refuses a key over
//!    the cap (a counted miss), and takes this thread's clone of the stack.
//! 2. The cache's fail-open layer passes it on, unless writes are being
//!    shed (a `get` never is).
//! 3. The [`CircuitBreaker`](breaker::CircuitBreaker) admits it: closed, one
//!    load of the state word; open, an immediate rejection (a miss, reason
//!    `breaker_open`).
//! 4. [`RedisBackend`](backend::RedisBackend) takes the read connection (or
//!    connects, single-flight, bounded), counts it in flight (over the
//!    limit: a miss, reason `overloaded`), sends `GET` (or, while four
//!    round trips are in flight on it, queues it for the next `MGET`),
//!    bounded by the response deadline.
//! 5. On the way back, the breaker classifies the outcome
//!    ([`FaultClassifier`](cache::FaultClassifier)); the fail-open layer turns any
//!    error into a miss with its [`Reason`](cache::Reason), counted in
//!    [`telemetry`] and logged once a second at most.
//!
//! [Tower]: https://docs.rs/tower
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod backend;
pub mod breaker;
pub mod cache;
#[cfg(feature = "http")]
pub mod http;
pub mod telemetry;
pub mod watchdog;

mod error;
mod flight;
mod hold;
mod near;
mod request;
mod sync;

pub use error::ConfigError;
