//! Redis as a cache backend: a bounded pool, error classification, and an
//! adapter for clients you already have.
//!
//! * [`RedisBackend`]: `Service<CacheRequest>` over a bb8 pool of
//!   multiplexed connections, configured by [`RedisConfig`].
//! * [`ClientBackend`]: the same over your own `ConnectionManager` or
//!   `MultiplexedConnection`.
//! * [`RedisError`]: every failure, with a [`Reason`](crate::cache::Reason);
//!   [`FaultClassifier`](crate::cache::FaultClassifier) tells the breaker
//!   which ones mean Redis is unwell.

mod backend;
mod config;
mod error;

pub use backend::{BackendFuture, ClientBackend, RedisBackend};
pub use config::{RedisConfig, RedisConfigBuilder};
pub use error::RedisError;
