//! Building a [`Cache`]: safe defaults, checked at build time.

use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::handle::{Backend, Cache, NearParts};
use crate::breaker::{Breaker, CircuitBreakerLayer, Config as BreakerConfig, ConfigBuilder};
use crate::cache::fail_open::FailOpenLayer;
use crate::error::ConfigError;
use crate::near::NearCache;

mod check;
mod near;
pub(crate) mod prefixes;
use crate::backend::{RedisBackend, RedisConfig};
use crate::request::FaultClassifier;
use crate::request::Ttl;
use crate::watchdog::{Watchdog, WatchdogBuilder};

/// The open period of a cache's default breaker.
const CACHE_OPEN_FOR: Duration = Duration::from_millis(500);

/// Builds a [`Cache`]. Every setter documents its default; [`build`]-time
/// checks reject bad values with a [`ConfigError`].
///
/// The stack built: backend (bounded deadlines) → [circuit
/// breaker](crate::breaker) (classifying by [`Fault`](super::Fault): `OOM` and the
/// caller's own errors do not trip it) → fail-open (see [the module docs](super#failing-open)).
///
/// [`build`]: CacheBuilder::build
#[must_use]
#[derive(Clone, Debug)]
pub struct CacheBuilder<B = RedisBackend> {
    settings: Settings,
    /// `None` until `redis`, `redis_url` or `backend` is called.
    backend: Option<Result<B, ConfigError>>,
    /// The Redis a watchdog would watch, and a near cache track: known for
    /// `redis`/`redis_url`.
    client: Option<RedisConfig>,
}

/// Everything but the backend.
#[derive(Clone, Debug)]
struct Settings {
    name: String,
    prefix: Vec<u8>,
    default_ttl: Ttl,
    max_ttl: Duration,
    ttl_jitter: f64,
    early_refresh: f64,
    max_value_size: usize,
    max_key_size: usize,
    write_hold_down: Duration,
    breaker: Option<BreakerSettings>,
    watchdog: Option<WatchdogBuilder>,
    near: Option<NearCache>,
}

/// Changes to the cache's breaker settings, from [`CacheBuilder::breaker`].
#[derive(Clone)]
struct BreakerSettings(Arc<dyn Fn(ConfigBuilder) -> ConfigBuilder + Send + Sync>);

impl std::fmt::Debug for BreakerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BreakerSettings(..)")
    }
}

impl Default for CacheBuilder {
    fn default() -> Self {
        CacheBuilder {
            settings: Settings::default(),
            backend: None,
            client: None,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            name: "cache".into(),
            prefix: Vec::new(),
            default_ttl: Ttl::After(Duration::from_secs(3600)),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            ttl_jitter: 0.0,
            early_refresh: 0.0,
            max_value_size: 1 << 20,
            max_key_size: 8 << 10,
            write_hold_down: Duration::from_secs(5),
            breaker: None,
            watchdog: None,
            near: None,
        }
    }
}

impl<B> CacheBuilder<B> {
    /// The `cache` label of metrics and logs, and the breaker's name.
    /// Defaults to `"cache"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// Prepended to every key, so that caches sharing a Redis keep to keys
    /// of their own. Two prefixes collide when one begins the other
    /// (`app:` and `app:v2:`: the first cache's key `v2:x` is the second's
    /// `x`); the empty prefix (the default) begins every other. `build`
    /// refuses a prefix that nests with a live cache's of this process on
    /// the same Redis (address and database, as given with
    /// [`redis`](Self::redis) or [`redis_url`](Self::redis_url)); equal
    /// prefixes are one namespace, shared on purpose. Caches in other
    /// processes, or over a [`backend`](Self::backend) of your own, are not
    /// seen: give every service a prefix that ends in a separator and
    /// begins no other's. Defaults to none.
    pub fn prefix(mut self, prefix: impl AsRef<[u8]>) -> Self {
        self.settings.prefix = prefix.as_ref().to_vec();
        self
    }

    /// The TTL of every write that does not name one. Defaults to 1 hour.
    /// `Ttl::Never` here makes keys without expiry the default: allowed, but
    /// it is how a Redis fills up over weeks.
    pub fn default_ttl(mut self, ttl: impl Into<Ttl>) -> Self {
        self.settings.default_ttl = ttl.into();
        self
    }

    /// No write lives longer than this (longer TTLs are clamped; explicit
    /// no-expiry writes are not affected). Defaults to 7 days.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.settings.max_ttl = ttl;
        self
    }

    /// Shortens each TTL by a random fraction up to this, so keys written
    /// together do not expire together. Defaults to 0 (off).
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.settings.ttl_jitter = fraction;
        self
    }

    /// Stampede control at expiry: `get_or_load` refreshes a value in the
    /// last `fraction` of the default TTL before Redis drops it, rather
    /// than letting every caller miss at once when it does. A caller
    /// there refreshes with a probability rising from 0 at the window's
    /// start to 1 at expiry (so a fleet of processes spreads its refreshes),
    /// and only if no load of the key is under way in this process; it
    /// loads, stores with a full TTL, and returns the new value, while
    /// every other caller gets the current one at once (as does the
    /// refresher, if its load fails). Costs a `PTTL` with every
    /// `get_or_load` read. Defaults to 0 (off); must be in [0, 1).
    pub fn early_refresh(mut self, fraction: f64) -> Self {
        self.settings.early_refresh = fraction;
        self
    }

    /// Larger values are not written (skipped locally with reason
    /// `too_large`). Defaults to 1 MiB.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.settings.max_value_size = bytes;
        self
    }

    /// Keys longer than this (with the prefix) are not sent: reads miss and
    /// writes are skipped, with reason `too_large`. A multi-megabyte key
    /// holds up every call queued behind it on the shared connection.
    /// Defaults to 8 KiB; must be between 1 byte and 512 MiB.
    pub fn max_key_size(mut self, bytes: usize) -> Self {
        self.settings.max_key_size = bytes;
        self
    }

    /// How long writes are shed at most (answered `Skipped` at once, with
    /// the refusal's reason) after Redis refused one while it still serves
    /// reads: `OOM` (writes that grow memory), `READONLY`, `MISCONF` (every
    /// change), or a write pause: writes timing out while reads are
    /// answered (timeouts of reads and writes alike, a stall of the process
    /// or the network, hold nothing down). Reads go on meanwhile. While it
    /// holds, one write every 250 ms (or every hold-down, if shorter) is
    /// sent as a probe, and the first one answered ends it: writes resume
    /// within about 250 ms of Redis taking them. Zero turns it off; any
    /// duration works (`Duration::MAX`: shed until a probe is answered).
    /// Defaults to 5 s.
    pub fn write_hold_down(mut self, d: Duration) -> Self {
        self.settings.write_hold_down = d;
        self
    }

    /// Changes the circuit breaker's settings, starting from the cache's
    /// own: the breaker's defaults, with this cache's name and an open
    /// period of 0.4–0.5 s that does not grow with repeated trips (however
    /// long Redis was down, hits resume within about half a second of it
    /// answering again, while a down Redis sees about two connection
    /// attempts per second from this cache). Only what `settings` changes
    /// differs:
    ///
    /// ```
    /// # use fusebox::cache::Cache;
    /// let cache = Cache::builder()
    ///     .name("pages")
    ///     .breaker(|b| b.consecutive_failures(3)) // still named "pages", still open 0.5 s
    ///     .redis_url("redis://127.0.0.1:6379").build()?;
    /// assert_eq!(cache.breaker().name(), "pages");
    /// # Ok::<(), fusebox::ConfigError>(())
    /// ```
    ///
    /// A configuration with back-off (`open_backoff(2.0, …)`) trades that
    /// recovery time for fewer probes. Invalid settings are refused when
    /// the cache is built (field `breaker`).
    pub fn breaker<F>(mut self, settings: F) -> Self
    where
        F: Fn(ConfigBuilder) -> ConfigBuilder + Send + Sync + 'static,
    {
        self.settings.breaker = Some(BreakerSettings(Arc::new(settings)));
        self
    }

    /// Also start a memory [`Watchdog`] on the same Redis (its own
    /// connection), reachable with [`Cache::watchdog`]; with
    /// [`shed_writes_above`](WatchdogBuilder::shed_writes_above), the cache
    /// skips writes while Redis is nearly full. Only for Redis-backed caches
    /// ([`redis`](Self::redis), [`redis_url`](Self::redis_url)); needs a
    /// tokio runtime. Defaults to none.
    pub fn watchdog(mut self, watchdog: WatchdogBuilder) -> Self {
        self.settings.watchdog = Some(watchdog);
        self
    }

    /// Puts a [near cache](NearCache) in front of Redis: an in-process L1,
    /// bounded in bytes, kept consistent by Redis (RESP3 client tracking,
    /// by default), whose entries are also served, stale, to the reads
    /// Redis fails to answer. `get` reads L1 first and Redis for what is not
    /// fresh there; `get_many` answers fresh L1 entries and asks Redis for
    /// the rest; every change this cache makes removes its keys' entries.
    /// Reads are counted by outcome ([`Cache::near_stats`],
    /// [`CACHE_READS_TOTAL`](crate::telemetry::CACHE_READS_TOTAL)).
    ///
    /// Tracking needs a tokio runtime at build and the cache's own Redis
    /// ([`redis`](Self::redis), [`redis_url`](Self::redis_url)) speaking
    /// RESP3, or [`Invalidation::TrackingUrl`](crate::cache::Invalidation::TrackingUrl); else the build is refused
    /// (field `near_cache`), never silently stale. Defaults to none.
    pub fn near_cache(mut self, near: NearCache) -> Self {
        self.settings.near = Some(near);
        self
    }

    /// Builds the cache over any backend: a [`ClientBackend`] over your own
    /// redis client, a pool you have (`Bb8Backend`, `DeadpoolBackend`), or
    /// your own `Service<CacheRequest>`. Its errors must say why they
    /// happened ([`Fault`](super::Fault)); it should bound its own calls.
    /// Replaces a Redis given before.
    ///
    /// [`ClientBackend`]: crate::backend::ClientBackend
    pub fn backend<C: Backend>(self, backend: C) -> CacheBuilder<C> {
        CacheBuilder {
            settings: self.settings,
            backend: Some(Ok(backend)),
            client: None,
        }
    }
}

impl CacheBuilder<RedisBackend> {
    /// The cache's backend: a [`RedisBackend`] over `config` (see
    /// [`RedisConfig`] for the deadlines). Connects nothing: the cache
    /// builds at once with Redis down.
    pub fn redis(mut self, config: RedisConfig) -> Self {
        self.client = Some(config.clone());
        self.backend = Some(Ok(RedisBackend::new(config)));
        self
    }

    /// The cache's backend: Redis at `url` with the default deadlines
    /// (connect 50 ms, checkout 50 ms, response 50 ms, one connection). An
    /// invalid URL is refused by [`build`](Self::build) (field `url`).
    pub fn redis_url(self, url: impl AsRef<str>) -> Self {
        match RedisConfig::builder(url).build() {
            Ok(config) => self.redis(config),
            Err(e) => CacheBuilder {
                backend: Some(Err(e)),
                client: None,
                ..self
            },
        }
    }
}

impl<B: Backend> CacheBuilder<B> {
    /// Checks every setting and builds the cache over the backend given by
    /// [`redis`](CacheBuilder::redis), [`redis_url`](CacheBuilder::redis_url)
    /// or [`backend`](Self::backend), and the watchdog if one was asked for.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid setting; field `backend`
    /// when none was given, `watchdog` when one was asked for without a
    /// Redis URL or outside a tokio runtime.
    pub fn build(self) -> Result<Cache<B>, ConfigError> {
        let backend = match self.backend {
            Some(backend) => backend?,
            None => {
                return Err(ConfigError::new(
                    "cache",
                    "backend",
                    "none given: call `redis_url`, `redis` or `backend` before `build`",
                ))
            }
        };
        let claim = match &self.client {
            Some(redis) => Some(prefixes::claim(
                redis.identity(),
                &self.settings.prefix,
                &self.settings.name,
            )?),
            None => None,
        };
        let near = self.settings.near_parts(self.client.as_ref())?;
        let watchdog = match (&self.settings.watchdog, self.client.map(|c| c.target)) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "cache",
                    "watchdog",
                    "needs a Redis URL: use `redis`/`redis_url`, or build `Watchdog::builder().redis_url(url).build()` yourself",
                ))
            }
            (Some(builder), _) if builder.has_redis() => {
                return Err(ConfigError::new(
                    "cache",
                    "watchdog",
                    "watches the cache's own Redis: leave its `redis_url` unset",
                ))
            }
            (Some(builder), Some(client)) => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(ConfigError::new(
                        "cache",
                        "watchdog",
                        "needs a tokio runtime: build the cache inside one",
                    ));
                }
                Some(Watchdog::spawn(builder.clone().config()?, client))
            }
        };
        let mut cache = self.settings.stack(backend, watchdog, near)?;
        cache.hold_prefix(claim);
        Ok(cache)
    }
}

impl Settings {
    fn stack<B: Backend>(
        self,
        backend: B,
        watchdog: Option<Watchdog>,
        near: NearParts,
    ) -> Result<Cache<B>, ConfigError> {
        let options = self.options()?;
        // Recovery follows Redis, not a growing back-off: a probe every
        // 0.4-0.5 s however long the outage, so hits resume within half a
        // second of Redis answering, for the price of about two connection
        // attempts per second while it does not.
        let defaults = BreakerConfig::builder()
            .name(self.name.clone())
            .open_for(CACHE_OPEN_FOR)
            .open_backoff(1.0, Duration::MAX)
            .open_jitter(0.2);
        let settings = match &self.breaker {
            Some(change) => (change.0)(defaults),
            None => defaults,
        };
        let breaker = Breaker::new(settings.build()?);
        let fail_open = match watchdog.as_ref().map(Watchdog::pressure) {
            Some(p) => FailOpenLayer::with_pressure(options.name.clone(), self.write_hold_down, p),
            None => FailOpenLayer::with_hold_down(options.name.clone(), self.write_hold_down),
        };
        let svc = fail_open.layer(
            CircuitBreakerLayer::with_breaker(breaker.clone())
                .classifier(FaultClassifier)
                .layer(backend),
        );
        Ok(Cache::from_parts(svc, options, breaker, watchdog, near))
    }
}
