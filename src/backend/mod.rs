//! Redis as a cache backend: bounded connections, error classification, and an
//! adapter for clients you already have.
//!
//! * [`RedisBackend`]: `Service<CacheRequest>` over a few
//!   multiplexed connections, configured by [`RedisConfig`].
//! * [`ClientBackend`]: the same over your own `ConnectionManager` or
//!   `MultiplexedConnection`.
//! * `Bb8Backend` (feature `bb8`): the same over a bb8-redis pool.
//! * `DeadpoolBackend` (feature `deadpool`): the same over a deadpool-redis
//!   pool.
//! * `ClusterBackend` (feature `cluster`): Redis Cluster, a breaker per
//!   shard.
//! * Sentinel (feature `sentinel`): a [`RedisBackend`] over a
//!   `redis+sentinel://` URL connects to the primary the sentinels name.
//! * [`RedisError`]: every failure, with a [`Reason`](crate::cache::Reason);
//!   [`FaultClassifier`](crate::cache::FaultClassifier) tells the breaker
//!   which ones mean Redis is unwell.

mod client;
#[cfg(feature = "cluster")]
mod cluster;
mod commands;
mod config;
#[cfg(feature = "deadpool")]
mod deadpool;
mod error;
#[cfg(any(feature = "bb8", feature = "deadpool"))]
mod lease;
mod own;
#[cfg(feature = "bb8")]
mod pool;
#[cfg(feature = "sentinel")]
mod sentinel;
mod target;

pub use client::ClientBackend;
#[cfg(feature = "cluster")]
pub use cluster::{ClusterBackend, ClusterFuture, ShardError};
pub use config::{RedisConfig, RedisConfigBuilder};
#[cfg(feature = "deadpool")]
pub use deadpool::DeadpoolBackend;
pub use error::RedisError;
pub use own::{BackendFuture, RedisBackend};
#[cfg(feature = "bb8")]
pub use pool::Bb8Backend;
pub(crate) use target::Target;
