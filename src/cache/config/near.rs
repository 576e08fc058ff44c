//! The near cache a [`CacheBuilder`](super::CacheBuilder) was asked for:
//! checked, and its tracking connection started.

use std::sync::Arc;

use bytes::Bytes;

use super::Settings;
use crate::backend::RedisConfig;
use crate::cache::handle::NearParts;
use crate::error::ConfigError;
use crate::near::tracking::TrackingTask;
use crate::near::{Invalidation, Near};

impl Settings {
    /// The near cache asked for, with its tracking task started.
    pub(super) fn near_parts(&self, redis: Option<&RedisConfig>) -> Result<NearParts, ConfigError> {
        let Some(settings) = &self.near else {
            return Ok((None, None));
        };
        settings.check()?;
        let refuse = |why: &str| Err(ConfigError::new("cache", "near_cache", why));
        let config = match (&settings.invalidation, redis) {
            (Invalidation::Lifetime, _) => None,
            (Invalidation::TrackingUrl(url), _) => Some(RedisConfig::builder(url).build()?),
            (_, Some(config)) => Some(config.clone()),
            (_, None) => return refuse(
                "tracking needs the cache's Redis: use `redis`/`redis_url`, `Invalidation::TrackingUrl`, or `Invalidation::Lifetime`",
            ),
        };
        let name: Arc<str> = Arc::from(self.name.as_str());
        let Some(config) = config else {
            return Ok((Some(Arc::new(Near::new(settings, &name, false))), None));
        };
        if !config.resp3 {
            return refuse("tracking needs RESP3 (Redis 6 or later): drop `?protocol=resp2` from the URL, or choose `Invalidation::Lifetime`");
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return refuse("tracking needs a tokio runtime: build the cache inside one");
        }
        let near = Arc::new(Near::new(settings, &name, true));
        let task = TrackingTask::spawn(&near, config, Bytes::from(self.prefix.clone()), name);
        Ok((Some(near), Some(task)))
    }
}
