//! The watchdog's settings and their builder.

use std::fmt;
use std::time::Duration;

use super::*;

/// Settings of a [`Watchdog`]; see [`Watchdog::builder`].
#[derive(Clone, Debug)]
pub(crate) struct WatchdogConfig {
    pub(super) name: String,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    pub(super) levels: Vec<f64>,
    pub(super) hysteresis: f64,
    pub(super) horizon: Duration,
    pub(super) min_span: Duration,
    pub(super) leeway: Duration,
    pub(super) memory_budget: Option<u64>,
    pub(super) samples_per_round: usize,
    pub(super) keys_per_second: u32,
    pub(super) shed_above: Option<f64>,
    pub(super) no_ttl_warning_share: f64,
    pub(super) expiry: Vec<super::expiry::ExpiryRule>,
    pub(super) expire_dry_run: bool,
    pub(super) webhooks: Hooks,
}

/// Builds a [`Watchdog`]. Every setter documents its default.
///
/// Standalone, it ends like every builder of the crate:
/// `Watchdog::builder().redis_url(url).build()?`. Given to
/// [`CacheBuilder::watchdog`](crate::cache::CacheBuilder::watchdog), it
/// watches the cache's own Redis and has no URL of its own.
#[must_use]
#[derive(Clone)]
pub struct WatchdogBuilder {
    pub(super) config: WatchdogConfig,
    /// The Redis to watch, from `redis_url` (never printed: it may hold a
    /// password).
    redis: Option<Result<Watched, ConfigError>>,
}

/// What a standalone watchdog watches.
#[derive(Clone)]
enum Watched {
    One(crate::backend::Target),
    /// Every primary of the cluster these nodes belong to.
    Cluster(Vec<redis::Client>),
}

impl fmt::Debug for WatchdogBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchdogBuilder")
            .field("config", &self.config)
            .field("redis_url", &self.redis.as_ref().map(|_| ".."))
            .finish()
    }
}

impl Default for WatchdogBuilder {
    fn default() -> Self {
        WatchdogBuilder {
            config: WatchdogConfig {
                name: "redis".into(),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                levels: vec![0.2, 0.5, 0.9],
                hysteresis: 0.05,
                horizon: Duration::from_secs(6 * 3600),
                min_span: Duration::from_secs(10 * 60),
                leeway: Duration::from_secs(48 * 3600),
                memory_budget: None,
                samples_per_round: 100,
                keys_per_second: 500,
                shed_above: None,
                no_ttl_warning_share: 0.5,
                expiry: Vec::new(),
                expire_dry_run: false,
                webhooks: Vec::new(),
            },
            redis: None,
        }
    }
}

impl WatchdogBuilder {
    /// The metrics label and log field. Defaults to `"redis"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// How often INFO is polled. Defaults to 10 s.
    pub fn interval(mut self, d: Duration) -> Self {
        self.config.interval = d;
        self
    }

    /// Deadline of each connect and command of the watchdog. Defaults to 1 s.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.config.timeout = d;
        self
    }

    /// Usage levels, as fractions of the limit. Defaults to 0.2, 0.5, 0.9.
    pub fn levels(mut self, levels: &[f64]) -> Self {
        self.config.levels = levels.to_vec();
        self
    }

    /// How far under a level usage must fall to clear it. Defaults to 0.05.
    pub fn hysteresis(mut self, h: f64) -> Self {
        self.config.hysteresis = h;
        self
    }

    /// How far back the growth rate is fitted. Defaults to 6 h.
    pub fn horizon(mut self, d: Duration) -> Self {
        self.config.horizon = d;
        self
    }

    /// No forecast until the samples span this long. Defaults to 10 min.
    pub fn min_span(mut self, d: Duration) -> Self {
        self.config.min_span = d;
        self
    }

    /// The leeway alert fires when memory is forecast full in less than
    /// this. Defaults to 48 h.
    pub fn leeway(mut self, d: Duration) -> Self {
        self.config.leeway = d;
        self
    }

    /// The limit to measure against when `maxmemory` is 0. Defaults to none
    /// (then no usage levels or forecast, only the warning).
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.config.memory_budget = Some(bytes);
        self
    }

    /// Keys sampled per poll by the no-TTL sampler (0 turns it off).
    /// Defaults to 100.
    pub fn samples_per_round(mut self, n: usize) -> Self {
        self.config.samples_per_round = n;
        self
    }

    /// The sampler's pace cap. Defaults to 500 keys per second.
    pub fn keys_per_second(mut self, n: u32) -> Self {
        self.config.keys_per_second = n;
        self
    }

    /// Holds keys matching `pattern` (a Redis glob, as `SCAN … MATCH`
    /// takes: `*`, `?`, `[…]`) to an expiry policy, whoever writes them: a
    /// matching key the sampler finds **without a TTL** is given `ttl`
    /// (`EXPIRE key ttl NX`, so a key with a TTL, even one set a moment
    /// ago, keeps its own). Keys matching no policy are never touched.
    /// Policies are tried in the order given; the first match applies.
    ///
    /// It runs at the sampler's pace
    /// ([`samples_per_round`](Self::samples_per_round) keys per poll, at
    /// most [`keys_per_second`](Self::keys_per_second)): one pipelined
    /// `EXPIRE` per batch of keys found, never a `KEYS`. What each policy
    /// did is in [`Report::expiry`] and in
    /// `fusebox_watchdog_keys_expired_total{pattern, mode}`. On Redis
    /// before 7 (no `NX`), the same check-and-set runs as a one-key Lua
    /// script. Over a cluster, every primary's keys are held to it.
    ///
    /// For the outage this crate exists for, a job queue's completed jobs:
    /// `.expire("jobs:done:*", Duration::from_secs(72 * 3600))`. Refused at
    /// build: an empty pattern or one over 1024 bytes, a TTL under 1 s or
    /// over 100 years (sub-second parts are rounded up to whole seconds),
    /// more than 64 policies, or the sampler off.
    ///
    /// [`Report::expiry`]: super::Report::expiry
    pub fn expire(mut self, pattern: impl Into<String>, ttl: Duration) -> Self {
        self.config.expiry.push(super::expiry::ExpiryRule {
            pattern: pattern.into(),
            ttl,
        });
        self
    }

    /// With `true`, the [`expire`](Self::expire) policies only count the
    /// keys they would give a TTL ([`PolicyCount::would_expire`]) and
    /// change nothing: run it first against a Redis you do not know well.
    /// Defaults to `false`.
    ///
    /// [`PolicyCount::would_expire`]: super::PolicyCount::would_expire
    pub fn expire_dry_run(mut self, dry_run: bool) -> Self {
        self.config.expire_dry_run = dry_run;
        self
    }

    /// Also posts every alert to `webhook` (call again for more, up to 8):
    /// JSON that Slack-style incoming webhooks and Alertmanager-style
    /// receivers read, once per change, from a queue of its own with
    /// retries; see [`Webhook`](super::Webhook). Refused at build: a
    /// setting of the webhook out of range, or more than 8.
    #[cfg(feature = "webhook")]
    pub fn webhook(mut self, webhook: super::Webhook) -> Self {
        self.config.webhooks.push(webhook);
        self
    }

    /// Opt-in: above this usage ratio under `noeviction`, a [`Cache`]
    /// started with this watchdog skips writes (reason `memory_pressure`)
    /// before Redis starts answering `OOM`. Defaults to off.
    ///
    /// [`Cache`]: crate::cache::Cache
    pub fn shed_writes_above(mut self, ratio: f64) -> Self {
        self.config.shed_above = Some(ratio);
        self
    }

    /// The Redis to watch when the watchdog is built on its own. An invalid
    /// URL is refused by [`build`](Self::build) (field `url`).
    pub fn redis_url(mut self, url: impl AsRef<str>) -> Self {
        self.redis = Some(
            crate::backend::RedisConfig::builder(url)
                .build()
                .map(|c| Watched::One(c.target)),
        );
        self
    }

    /// Watches every primary of a Redis Cluster, found from these nodes'
    /// URLs (any nodes of it; the first URL's credentials are used for
    /// every node): one connection, forecast, level set and sampler per
    /// primary, primaries re-read with `CLUSTER NODES` every interval (a
    /// failover moves the watch to the new primary). The
    /// [`report`](Watchdog::report) is decided by the node that will fill
    /// first and names it ([`Report::node`]), with every node's own report
    /// in [`Report::nodes`]; alerts come as [`Alert::Node`], and each node's
    /// metrics are labelled `<name>@<ip:port>`. Replaces a
    /// [`redis_url`](Self::redis_url) given before. An invalid or empty
    /// list is refused by [`build`](Self::build) (field `redis_cluster`).
    pub fn redis_cluster<I, U>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: AsRef<str>,
    {
        let clients = nodes
            .into_iter()
            .map(
                |url| match crate::backend::RedisConfig::builder(url).build() {
                    Ok(c) => match c.target {
                        crate::backend::Target::Direct(client) => Ok(*client),
                        #[allow(unreachable_patterns)]
                        _ => Err(ConfigError::new(
                            "watchdog",
                            "redis_cluster",
                            "takes redis:// or rediss:// URLs of cluster nodes",
                        )),
                    },
                    Err(e) => Err(ConfigError::new(
                        "watchdog",
                        "redis_cluster",
                        e.reason.clone(),
                    )),
                },
            )
            .collect::<Result<Vec<_>, _>>()
            .and_then(|c| match c.is_empty() {
                true => Err(ConfigError::new(
                    "watchdog",
                    "redis_cluster",
                    "no node given",
                )),
                false => Ok(Watched::Cluster(c)),
            });
        self.redis = Some(clients);
        self
    }

    /// Whether [`redis_url`](Self::redis_url) was given.
    pub(crate) fn has_redis(&self) -> bool {
        self.redis.is_some()
    }

    /// Checks the settings.
    #[cfg_attr(not(feature = "webhook"), allow(unused_mut))]
    pub(crate) fn config(mut self) -> Result<WatchdogConfig, ConfigError> {
        #[cfg(feature = "webhook")]
        {
            if self.config.webhooks.len() > 8 {
                return Err(ConfigError::new("watchdog", "webhook", "at most 8"));
            }
            for hook in &mut self.config.webhooks {
                hook.check()?;
            }
        }
        let c = &self.config;
        if c.name.is_empty() {
            return Err(ConfigError::new("watchdog", "name", "must not be empty"));
        }
        for (field, d) in [
            ("interval", c.interval),
            ("timeout", c.timeout),
            ("horizon", c.horizon),
            ("leeway", c.leeway),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(
                    "watchdog",
                    field,
                    "must be more than zero",
                ));
            }
        }
        if c.min_span >= c.horizon {
            return Err(ConfigError::new(
                "watchdog",
                "min_span",
                "must be shorter than the horizon",
            ));
        }
        if c.levels.iter().any(|l| !(*l > 0.0 && *l <= 1.0)) {
            return Err(ConfigError::new(
                "watchdog",
                "levels",
                "each must be in (0, 1]",
            ));
        }
        if !(0.0..0.5).contains(&c.hysteresis) {
            return Err(ConfigError::new(
                "watchdog",
                "hysteresis",
                "must be in [0, 0.5)",
            ));
        }
        if c.memory_budget == Some(0) {
            return Err(ConfigError::new(
                "watchdog",
                "memory_budget",
                "must be more than zero",
            ));
        }
        if c.keys_per_second == 0 {
            return Err(ConfigError::new(
                "watchdog",
                "keys_per_second",
                "must be at least 1",
            ));
        }
        super::expiry::check(c)?;
        if c.shed_above.is_some_and(|r| !(r > 0.0 && r <= 1.0)) {
            return Err(ConfigError::new(
                "watchdog",
                "shed_writes_above",
                "must be in (0, 1]",
            ));
        }
        Ok(self.config)
    }

    /// Checks the settings and starts watching the Redis of
    /// [`redis_url`](Self::redis_url) on the current tokio runtime.
    /// Connects nothing before the first poll: never fails because Redis is
    /// down.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid setting; field
    /// `redis_url` when none was given, `build` outside a tokio runtime.
    pub fn build(mut self) -> Result<Watchdog, ConfigError> {
        let watched = match self.redis.take() {
            Some(watched) => watched?,
            None => {
                return Err(ConfigError::new(
                    "watchdog",
                    "redis_url",
                    "none given: call `redis_url` before `build`",
                ))
            }
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::new(
                "watchdog",
                "build",
                "needs a tokio runtime: build it inside one",
            ));
        }
        match watched {
            Watched::One(target) => Ok(Watchdog::spawn(self.config()?, target)),
            Watched::Cluster(_) if self.config.shed_above.is_some() => Err(ConfigError::new(
                "watchdog",
                "shed_writes_above",
                "applies to the Redis of one cache, not to a cluster's watchdog",
            )),
            Watched::Cluster(seeds) => Ok(Watchdog::spawn_cluster(self.config()?, seeds)),
        }
    }
}
