//! The one error of a bad setting, for caches, Redis and the watchdog.

use std::fmt;

/// An invalid cache or Redis setting, naming the setter at fault. Never
/// quotes a URL (it may hold a password).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }

    /// The name of the setter whose value is invalid.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid cache `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl From<crate::breaker::ConfigError> for ConfigError {
    fn from(e: crate::breaker::ConfigError) -> Self {
        ConfigError::new("breaker", e.to_string())
    }
}
