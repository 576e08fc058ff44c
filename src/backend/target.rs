//! Where a Redis backend connects: one address, the primary a set of
//! Sentinels names at the moment of connecting, or a pool of the user's it
//! leases connections from.

use redis::RedisConnectionInfo;

use super::error::RedisError;

/// What a connection is made to.
#[derive(Clone)]
pub(crate) enum Target {
    /// One address, from a `redis://`, `rediss://` or `unix://` URL.
    Direct(Box<redis::Client>),
    /// The primary the sentinels name, asked again for every new
    /// connection (a failover replaces it).
    #[cfg(feature = "sentinel")]
    Sentinel(std::sync::Arc<super::sentinel::Sentinels>),
    /// Connections leased from a pool the user has (bb8, deadpool).
    #[cfg(any(feature = "bb8", feature = "deadpool"))]
    Leased(std::sync::Arc<dyn super::lease::Lease>),
}

impl Target {
    /// The client to connect with now: for Sentinel, the primary named by
    /// the first sentinel to answer (and checked to be one). Unbounded: the
    /// caller bounds it, with the connect that follows.
    pub(crate) async fn client(&self) -> Result<redis::Client, RedisError> {
        match self {
            Target::Direct(client) => Ok(redis::Client::clone(client)),
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinels) => sentinels.primary().await,
            #[cfg(any(feature = "bb8", feature = "deadpool"))]
            // (Never asked: leased connections come from the pool.)
            Target::Leased(_) => Err(RedisError::checkout_timeout(None)),
        }
    }

    /// The credentials, database and protocol connections use.
    pub(crate) fn settings(&self) -> &RedisConnectionInfo {
        match self {
            Target::Direct(client) => client.get_connection_info().redis_settings(),
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinels) => sentinels.settings(),
            #[cfg(any(feature = "bb8", feature = "deadpool"))]
            Target::Leased(_) => {
                static DEFAULT: std::sync::OnceLock<RedisConnectionInfo> =
                    std::sync::OnceLock::new();
                DEFAULT.get_or_init(RedisConnectionInfo::default)
            }
        }
    }
}

/// Says which kind of target, never its credentials.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Direct(_) => f.write_str("Target::Direct"),
            #[cfg(feature = "sentinel")]
            Target::Sentinel(_) => f.write_str("Target::Sentinel"),
            #[cfg(any(feature = "bb8", feature = "deadpool"))]
            Target::Leased(_) => f.write_str("Target::Leased"),
        }
    }
}
