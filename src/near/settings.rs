//! The near cache's settings, checked when the cache is built.

use std::time::Duration;

use crate::error::ConfigError;

/// How L1 entries learn that Redis changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// Redis tells: RESP3 `CLIENT TRACKING` in broadcast mode on the
    /// cache's prefix, over a connection of its own to the cache's Redis
    /// (which must speak RESP3: Redis 6 or later, and no
    /// `?protocol=resp2` in the URL). Any client's change to a key removes
    /// its entry within a round trip. While that connection is down, no
    /// entry counts as fresh (they may still be served
    /// [stale](NearCache::stale_for)). The default.
    #[default]
    Tracking,
    /// As [`Tracking`](Self::Tracking), on a connection to the Redis at
    /// this URL: for a cache built over
    /// [`backend`](crate::cache::CacheBuilder::backend) (a `ClientBackend`,
    /// bb8 or deadpool pool of your own). Not for Redis Cluster, whose
    /// other shards' changes one connection would not hear of.
    TrackingUrl(String),
    /// No tracking: an entry is fresh for [`NearCache::lifetime`], and may
    /// be that much out of date when another client changes its key. The
    /// explicit choice for a Redis without RESP3, or a cluster.
    Lifetime,
}

/// The settings of a cache's near cache: an in-process L1 in front of
/// Redis, turned on with
/// [`CacheBuilder::near_cache`](crate::cache::CacheBuilder::near_cache).
///
/// ```
/// use std::time::Duration;
/// use fusebox::cache::{Cache, NearCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), fusebox::ConfigError> {
/// let cache = Cache::builder()
///     .prefix("pages:")
///     .near_cache(
///         NearCache::new()
///             .max_bytes(64 << 20)                  // the bound of L1
///             .stale_for(Duration::from_secs(600)), // served while Redis fails
///     )
///     .redis_url("redis://127.0.0.1:6379")
///     .build()?;
/// # let _ = cache;
/// # Ok(()) }
/// ```
#[must_use]
#[derive(Clone, Debug)]
pub struct NearCache {
    pub(crate) max_bytes: u64,
    pub(crate) lifetime: Duration,
    pub(crate) stale_for: Duration,
    pub(crate) invalidation: Invalidation,
}

impl Default for NearCache {
    fn default() -> Self {
        NearCache {
            max_bytes: 32 << 20,
            lifetime: Duration::from_secs(60),
            stale_for: Duration::from_secs(600),
            invalidation: Invalidation::Tracking,
        }
    }
}

impl NearCache {
    /// The defaults: 32 MiB, a lifetime of 60 s, stale for 10 minutes,
    /// invalidated by [tracking](Invalidation::Tracking).
    pub fn new() -> Self {
        Self::default()
    }

    /// The bound of L1: keys, values and about 100 bytes per entry. The
    /// least recently useful entries make room. Defaults to 32 MiB; must
    /// be at least 4 KiB.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How long an entry is fresh at most: never longer than the key's TTL
    /// in Redis, read with the value. Under tracking, a bound on memory
    /// more than on staleness; without, the staleness accepted. Defaults
    /// to 60 s; must be more than zero (`Duration::MAX`: the Redis TTL
    /// alone).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// How long past its lifetime an entry may still be served, counted as
    /// `stale`, to reads that Redis fails to answer (breaker open, deadline
    /// passed, connection refused): stale-if-error. Never while Redis
    /// answers, and never to a read this process shed itself (reason
    /// `overloaded`: too many calls in flight on the connection): Redis is
    /// healthy then, the fresh answer is one call away, and a stale entry
    /// may predate an invalidation lost with a tracking connection, so the
    /// read is a miss like any other. Defaults to 10 minutes; zero turns it
    /// off.
    pub fn stale_for(mut self, stale_for: Duration) -> Self {
        self.stale_for = stale_for;
        self
    }

    /// How entries learn that Redis changed. Defaults to
    /// [`Invalidation::Tracking`].
    pub fn invalidation(mut self, invalidation: Invalidation) -> Self {
        self.invalidation = invalidation;
        self
    }

    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.max_bytes < 4 << 10 {
            return Err(ConfigError::new(
                "cache",
                "near_cache",
                "max_bytes must be at least 4 KiB",
            ));
        }
        if self.lifetime.is_zero() {
            return Err(ConfigError::new(
                "cache",
                "near_cache",
                "lifetime must be more than zero",
            ));
        }
        Ok(())
    }
}
