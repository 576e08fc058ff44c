//! Where a Redis backend connects: one address, or the primary a set of
//! Sentinels names at the moment of connecting.

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
        }
    }

    /// The credentials, database and protocol connections use.
    pub(crate) fn settings(&self) -> &RedisConnectionInfo {
        match self {
            Target::Direct(client) => client.get_connection_info().redis_settings(),
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinels) => sentinels.settings(),
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
        }
    }
}
