//! Breaker configuration: a builder validated once, at `build()`.

use std::time::Duration;

use crate::error::ConfigError;

/// How the breaker measures the failure rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The last `calls` recorded calls.
    ///
    /// This is the default, and the only window whose closed-state hot path
    /// takes no lock and reads no clock: successes are counted per thread
    /// and the window is reconstructed when a failure is recorded.
    Count {
        /// Number of calls in the window.
        calls: u32,
    },
    /// The calls recorded during the last `span`, in `buckets` buckets of
    /// `span / buckets` each; a whole bucket leaves the window at once.
    ///
    /// Every outcome is recorded under a short lock with a clock read.
    Time {
        /// Length of the window.
        span: Duration,
        /// Number of buckets the window is divided into.
        buckets: u32,
    },
}

/// Slow-call detection (opt-in): calls slower than `threshold` count
/// towards the slow-call rate, which trips the breaker like the failure rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SlowCalls {
    pub(crate) threshold: Duration,
    pub(crate) rate: f64,
}

/// A validated circuit breaker configuration.
///
/// Built with [`Config::builder`]; every field has a default chosen for a
/// cache in front of a network service.
///
/// ```
/// use std::time::Duration;
/// use fusebox::breaker::Config;
///
/// let config = Config::builder()
///     .name("redis")
///     .failure_rate(0.5)
///     .minimum_calls(10)
///     .open_for(Duration::from_secs(1))
///     .build()?;
/// assert_eq!(config.name(), "redis");
/// # Ok::<(), fusebox::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) name: String,
    pub(crate) window: Window,
    pub(crate) failure_rate: f64,
    pub(crate) minimum_calls: u32,
    pub(crate) consecutive_failures: u32,
    pub(crate) slow: Option<SlowCalls>,
    pub(crate) open_base: Duration,
    pub(crate) open_multiplier: f64,
    /// `None`: the larger of 60 s and `open_base`.
    pub(crate) open_max: Option<Duration>,
    pub(crate) open_jitter: f64,
    pub(crate) half_open_probes: u32,
    pub(crate) half_open_successes: u32,
    pub(crate) half_open_max: Duration,
    pub(crate) seed: Option<u64>,
    pub(crate) shadow: bool,
    pub(crate) record_latency: bool,
}

impl Config {
    /// Starts a builder with the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                name: "default".to_owned(),
                window: Window::Count { calls: 100 },
                failure_rate: 0.5,
                minimum_calls: 20,
                consecutive_failures: 5,
                slow: None,
                open_base: Duration::from_secs(5),
                open_multiplier: 2.0,
                open_max: None,
                open_jitter: 0.1,
                half_open_probes: 1,
                half_open_successes: 1,
                half_open_max: Duration::from_secs(30),
                seed: None,
                shadow: false,
                record_latency: false,
            },
        }
    }

    /// The breaker's name, used as the `breaker` label of metrics and in
    /// tracing events.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The longest open period, back-off included.
    pub(crate) fn open_max(&self) -> Duration {
        self.open_max
            .unwrap_or(self.open_base.max(Duration::from_secs(60)))
    }

    /// The sliding window the failure rate is measured over.
    pub fn window(&self) -> Window {
        self.window
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::builder()
            .build()
            .expect("the default configuration is valid")
    }
}

/// Builds a [`Config`]; see each setter for its default.
#[derive(Clone, Debug)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Names the breaker: the `breaker` label of its metrics and a field of
    /// its tracing events. Keep it short and of few values (never a URL).
    ///
    /// Defaults to `"default"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Trips the breaker when at least this share of the calls in the window
    /// failed (and the window holds at least [`minimum_calls`]). In `(0, 1]`.
    ///
    /// Defaults to `0.5`.
    ///
    /// [`minimum_calls`]: ConfigBuilder::minimum_calls
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = rate;
        self
    }

    /// Measures rates over the last `calls` calls. The default kind of window:
    /// its closed-state hot path takes no lock and reads no clock.
    ///
    /// Defaults to a count window of 100 calls.
    pub fn count_window(mut self, calls: u32) -> Self {
        self.config.window = Window::Count { calls };
        self
    }

    /// Measures rates over the last `span`, divided into `buckets` buckets
    /// (each at least 1 ms). Every outcome then takes a clock read and a
    /// short lock.
    ///
    /// Defaults to a count window of 100 calls (no time window).
    pub fn time_window(mut self, span: Duration, buckets: u32) -> Self {
        self.config.window = Window::Time { span, buckets };
        self
    }

    /// Rates are not evaluated until the window holds this many calls, so a
    /// single early failure cannot trip the breaker.
    ///
    /// Defaults to `20`.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.config.minimum_calls = calls;
        self
    }

    /// Trips the breaker after this many failures in a row, whatever the
    /// window holds: the fast trip on a hard outage. `0` disables it.
    ///
    /// Defaults to `5`.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.config.consecutive_failures = failures;
        self
    }

    /// Counts calls that take `threshold` or longer as slow, and trips the
    /// breaker when at least `rate` of the window is slow. A slow probe
    /// counts as a failed probe. Enabling this reads the clock twice per call
    /// and allocates a small record per call.
    ///
    /// Defaults to off.
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.config.slow = Some(SlowCalls { threshold, rate });
        self
    }

    /// How long the circuit stays open after its first trip.
    ///
    /// Defaults to 5 seconds.
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.config.open_base = duration;
        self
    }

    /// Each trip that follows a failed recovery multiplies the open duration
    /// by `multiplier` (at least `1.0`), up to `max`. A successful recovery
    /// starts again from [`open_for`].
    ///
    /// Defaults to a multiplier of `2.0` and a cap of 60 seconds, or of
    /// [`open_for`] if that is longer.
    ///
    /// [`open_for`]: ConfigBuilder::open_for
    pub fn open_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.config.open_multiplier = multiplier;
        self.config.open_max = Some(max);
        self
    }

    /// Shortens each open duration by a random share of up to `jitter` (in
    /// `[0, 1)`), so that a fleet tripped by one outage does not probe in
    /// lock-step. Durations are rounded to whole milliseconds.
    ///
    /// Defaults to `0.1`.
    pub fn open_jitter(mut self, jitter: f64) -> Self {
        self.config.open_jitter = jitter;
        self
    }

    /// Shadow mode, for rolling a breaker out on production traffic: the
    /// circuit trips, opens, probes and closes as it would, with the same
    /// metrics, events and [`Snapshot`](super::Snapshot)s, but never
    /// rejects a call. A call it would have rejected goes to the inner
    /// service, is counted as a rejection, and its outcome is not recorded
    /// (as if it had not happened, so the timeline is the real one). Calls
    /// of a shadow circuit take the breaker's slower path (a few
    /// nanoseconds more). Defaults to off.
    ///
    /// ```
    /// use fusebox::breaker::{CircuitBreakerLayer, Config, State};
    /// use tower::{service_fn, Layer, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower::BoxError> {
    /// let layer = CircuitBreakerLayer::new(
    ///     Config::builder().consecutive_failures(1).shadow(true).build()?,
    /// );
    /// let breaker = layer.breaker().clone();
    /// let mut svc = layer.layer(service_fn(|fail: bool| async move {
    ///     if fail { Err("down") } else { Ok("up") }
    /// }));
    /// assert!(svc.ready().await?.call(true).await.is_err());
    /// assert_eq!(breaker.state(), State::Open); // it would reject now...
    /// assert_eq!(svc.ready().await?.call(false).await?, "up"); // ...but lets the call through
    /// assert_eq!(breaker.snapshot().trips, 1);
    /// # Ok(()) }
    /// ```
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.config.shadow = shadow;
        self
    }

    /// Times every call and records its duration in the
    /// [`BREAKER_CALL_DURATION_SECONDS`](crate::telemetry::BREAKER_CALL_DURATION_SECONDS)
    /// histogram (so does a breaker with [`slow_calls`](Self::slow_calls)).
    /// Costs two clock reads per call.
    ///
    /// Defaults to `false`.
    pub fn record_latency(mut self, record: bool) -> Self {
        self.config.record_latency = record;
        self
    }

    /// Seeds the jitter's random numbers, for reproducible tests.
    ///
    /// Defaults to a random seed per breaker.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// How many probe calls may run at once while half-open; every other
    /// call is rejected.
    ///
    /// Defaults to `1`.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.config.half_open_probes = probes;
        self
    }

    /// How many probes must succeed (one failure re-opens) before the
    /// circuit closes.
    ///
    /// Defaults to `1`.
    pub fn half_open_successes(mut self, successes: u32) -> Self {
        self.config.half_open_successes = successes;
        self
    }

    /// The longest the circuit may stay half-open: a probe that never
    /// completes then counts as failed and the circuit re-opens, so it can
    /// never wedge the breaker.
    ///
    /// Defaults to 30 seconds.
    pub fn half_open_max_duration(mut self, duration: Duration) -> Self {
        self.config.half_open_max = duration;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        let unit = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        check(!c.name.is_empty(), "name", || "must not be empty".into())?;
        check(unit(c.failure_rate), "failure_rate", || {
            format!("must be in (0, 1], got {}", c.failure_rate)
        })?;
        check(c.minimum_calls >= 1, "minimum_calls", || {
            "must be at least 1".into()
        })?;
        match c.window {
            Window::Count { calls } => {
                check(calls >= 1, "count_window", || "must be at least 1".into())?;
                check(c.minimum_calls <= calls, "minimum_calls", || {
                    format!("{} exceeds the window of {calls} calls", c.minimum_calls)
                })?;
            }
            Window::Time { span, buckets } => {
                check((1..=10_000).contains(&buckets), "time_window", || {
                    format!("buckets must be in 1..=10000, got {buckets}")
                })?;
                check(
                    span / buckets >= Duration::from_millis(1),
                    "time_window",
                    || format!("buckets of {span:?} / {buckets} are shorter than 1 ms"),
                )?;
            }
        }
        if let Some(slow) = c.slow {
            check(!slow.threshold.is_zero(), "slow_calls", || {
                "threshold must be positive".into()
            })?;
            check(unit(slow.rate), "slow_calls", || {
                format!("rate must be in (0, 1], got {}", slow.rate)
            })?;
        }
        check(c.open_base >= Duration::from_millis(1), "open_for", || {
            format!("must be at least 1 ms, got {:?}", c.open_base)
        })?;
        check(
            c.open_multiplier.is_finite() && c.open_multiplier >= 1.0,
            "open_backoff",
            || format!("multiplier must be at least 1, got {}", c.open_multiplier),
        )?;
        if let Some(max) = c.open_max {
            check(max >= c.open_base, "open_backoff", || {
                format!(
                    "max {max:?} is below open_for {:?}: raise the max, or lower open_for",
                    c.open_base
                )
            })?;
        }
        check(
            c.open_jitter.is_finite() && (0.0..1.0).contains(&c.open_jitter),
            "open_jitter",
            || format!("must be in [0, 1), got {}", c.open_jitter),
        )?;
        check(c.half_open_probes >= 1, "half_open_probes", || {
            "must be at least 1".into()
        })?;
        check(c.half_open_successes >= 1, "half_open_successes", || {
            "must be at least 1".into()
        })?;
        check(
            c.half_open_max >= Duration::from_millis(1),
            "half_open_max_duration",
            || format!("must be at least 1 ms, got {:?}", c.half_open_max),
        )?;
        Ok(c)
    }
}

fn check(ok: bool, field: &'static str, why: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new("circuit breaker", field, why()))
    }
}

#[cfg(test)]
mod tests;
