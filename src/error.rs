//! The one error of a bad setting, for every builder in the crate.

use std::fmt;

/// An invalid setting, found when a builder's `build()` (or the call that
/// ends it) validates: which builder, which setter, and why. Never quotes a
/// URL (it may hold a password).
///
/// ```
/// use fusebox::breaker::Config;
///
/// let err = Config::builder().failure_rate(2.0).build().unwrap_err();
/// assert_eq!((err.builder(), err.field()), ("circuit breaker", "failure_rate"));
/// assert_eq!(err.to_string(), "invalid circuit breaker `failure_rate`: must be in (0, 1], got 2");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    builder: &'static str,
    field: &'static str,
    pub(crate) reason: String,
}

impl ConfigError {
    pub(crate) fn new(
        builder: &'static str,
        field: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError {
            builder,
            field,
            reason: reason.into(),
        }
    }

    /// What was being built: `"cache"`, `"Redis"`, `"watchdog"` or
    /// `"circuit breaker"`.
    pub fn builder(&self) -> &'static str {
        self.builder
    }

    /// The name of the setter whose value is invalid.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} `{}`: {}",
            self.builder, self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}
