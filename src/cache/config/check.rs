//! The checks of a [`CacheBuilder`](super::CacheBuilder)'s settings, and
//! the options a cache keeps of them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Settings;
use crate::cache::handle::Options;
use crate::error::ConfigError;
use crate::request::Ttl;

impl Settings {
    pub(super) fn options(&self) -> Result<Options, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("cache", "name", "must not be empty"));
        }
        // Before the default TTL, which is checked against it.
        if self.max_ttl < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "cache",
                "max_ttl",
                "must be at least 1 ms",
            ));
        }
        if let Ttl::After(d) = self.default_ttl {
            if d < Duration::from_millis(1) {
                return Err(ConfigError::new(
                    "cache",
                    "default_ttl",
                    "must be at least 1 ms",
                ));
            }
            if d > self.max_ttl {
                return Err(ConfigError::new(
                    "cache",
                    "default_ttl",
                    "must not exceed max_ttl",
                ));
            }
        }
        if !(0.0..1.0).contains(&self.ttl_jitter) {
            return Err(ConfigError::new("cache", "ttl_jitter", "must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&self.early_refresh) {
            return Err(ConfigError::new(
                "cache",
                "early_refresh",
                "must be in [0, 1)",
            ));
        }
        if self.max_value_size == 0 || self.max_value_size > 512 << 20 {
            return Err(ConfigError::new(
                "cache",
                "max_value_size",
                "must be between 1 byte and 512 MiB (Redis' own limit)",
            ));
        }
        if self.max_key_size == 0 || self.max_key_size > 512 << 20 {
            return Err(ConfigError::new(
                "cache",
                "max_key_size",
                "must be between 1 byte and 512 MiB (Redis' own limit)",
            ));
        }
        if self.write_hold_down.is_zero() {
            return Err(ConfigError::new(
                "cache",
                "write_hold_down",
                "must be more than zero",
            ));
        }
        Ok(Options {
            name: Arc::from(self.name.as_str()),
            prefix: Bytes::from(self.prefix.clone()),
            default_ttl: self.default_ttl,
            max_ttl: self.max_ttl,
            ttl_jitter: self.ttl_jitter,
            early_refresh: self.early_refresh,
            max_value_size: self.max_value_size,
            max_key_size: self.max_key_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field a setting is refused for, if it is.
    fn refused(change: impl FnOnce(&mut Settings)) -> Option<&'static str> {
        let mut settings = Settings::default();
        change(&mut settings);
        settings.options().err().map(|e| e.field())
    }

    #[test]
    fn every_bound_is_accepted_and_one_past_it_refused() {
        let ms = Duration::from_millis(1);
        assert_eq!(refused(|_| {}), None);
        let short = |s: &mut Settings| (s.max_ttl, s.default_ttl) = (ms, Ttl::After(ms));
        assert_eq!(refused(short), None);
        assert_eq!(refused(|s| s.max_ttl = Duration::ZERO), Some("max_ttl"));
        assert_eq!(refused(|s| s.max_ttl = Duration::MAX), None);
        assert_eq!(refused(|s| s.default_ttl = Ttl::After(ms)), None);
        assert_eq!(
            refused(|s| s.default_ttl = Ttl::After(ms - Duration::from_nanos(1))),
            Some("default_ttl")
        );
        let max = Settings::default().max_ttl;
        assert_eq!(refused(|s| s.default_ttl = Ttl::After(max)), None);
        assert_eq!(
            refused(|s| s.default_ttl = Ttl::After(max + ms)),
            Some("default_ttl")
        );
        assert_eq!(refused(|s| s.default_ttl = Ttl::Never), None);
        let cap = 512 << 20;
        for (size, refusal) in [(1, None), (cap, None), (cap + 1, Some(())), (0, Some(()))] {
            let value = refused(|s| s.max_value_size = size);
            assert_eq!(value, refusal.map(|()| "max_value_size"), "{size}");
            let key = refused(|s| s.max_key_size = size);
            assert_eq!(key, refusal.map(|()| "max_key_size"), "{size}");
        }
        assert_eq!(refused(|s| s.name.clear()), Some("name"));
        assert_eq!(refused(|s| s.ttl_jitter = 1.0), Some("ttl_jitter"));
        assert_eq!(refused(|s| s.early_refresh = 1.0), Some("early_refresh"));
        assert_eq!(
            refused(|s| s.write_hold_down = Duration::ZERO),
            Some("write_hold_down")
        );
    }
}
