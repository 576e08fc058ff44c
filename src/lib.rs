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
//! let cache = Cache::builder().name("demo").redis_url("redis://127.0.0.1:1")?;
//! for _ in 0..10 {
//!     assert_eq!(cache.get("key").await, None);
//! }
//! assert!(cache.breaker().state().is_rejecting());
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! * [`breaker`]: the circuit breaker layer, its configuration, its handle,
//!   and the state machine behind them.
//! * [`cache`]: the [`Cache`](cache::Cache) handle and the request
//!   vocabulary every cache layer speaks.
//! * [`redis`]: the Redis backend (its own multiplexed connections), error classification, and an
//!   adapter for clients you already have.
//! * [`fail_open`]: the layer that turns errors into misses and skips.
//! * [`watchdog`]: Redis memory levels, growth forecast, leeway alerts,
//!   and the key prefixes that hold memory without a TTL.
//! * `http` (feature `http`): `HttpCacheLayer` for HTTP services, and
//!   `GrpcCacheLayer` for gRPC servers.
//! * [`telemetry`]: the names of every metric, in one place.
//!
//! [Tower]: https://docs.rs/tower
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod breaker;
pub mod cache;
pub mod fail_open;
#[cfg(feature = "http")]
pub mod http;
pub mod redis;
pub mod telemetry;
pub mod watchdog;

mod error;
mod request;

pub use error::ConfigError;
