//! A Redis memory watchdog: usage levels, a growth forecast with a leeway
//! alert, dangerous settings, and the key prefixes that hold memory without
//! a TTL.
//!
//! The outage this exists for grew for weeks in plain sight: memory rose a
//! little every day because jobs were written without expiry, and the first
//! alert came from customers after Redis was full. The watchdog polls
//! `INFO memory`, `INFO keyspace` and `INFO stats` on a connection of its
//! own (never the request pool) with its own timeout, and:
//!
//! * raises a usage alert as `used_memory / maxmemory` crosses each level
//!   (default 20 %, 50 %, 90 %), once on the way up, cleared with hysteresis
//!   on the way down;
//! * fits the growth rate over a horizon (robust to spikes and to the
//!   sawtooth of expiring keys, see [`Forecaster`]), projects the time until
//!   memory is full, and raises a **leeway alert** when it is under the
//!   budget (default 48 h);
//! * warns, at start and in every report, about `maxmemory 0` (no limit;
//!   set [`memory_budget`](WatchdogBuilder::memory_budget) to forecast
//!   against) and about `noeviction` or `volatile-*` while most keys have no
//!   TTL;
//! * samples keys with a bounded, paced `SCAN` and names the patterns that
//!   hold most no-TTL bytes;
//! * publishes `metrics` gauges, a `tracing` event per alert and clear, a
//!   subscription, and a [`Report`] for health endpoints. An alert makes the
//!   service [`Status::Degraded`], never not-ready.
//!
//! Dropping the [`Watchdog`] stops it. It survives Redis being down, and
//! says so ([`Status::Down`], [`Alert::Down`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use fusebox::watchdog::Watchdog;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let watchdog = Watchdog::builder()
//!     .interval(Duration::from_secs(10))
//!     .leeway(Duration::from_secs(48 * 3600))
//!     .start("redis://127.0.0.1:6379")?;
//! let mut alerts = watchdog.subscribe();
//! while let Ok(alert) = alerts.recv().await {
//!     eprintln!("{alert}");
//! }
//! # Ok(()) }
//! ```

mod forecast;
mod info;
mod levels;
mod sampler;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::broadcast;
use tokio::time::Instant;

pub use forecast::{Forecaster, Growth};
pub use info::{parse, Info, InfoError, Keyspace, Policy};
pub use levels::{Crossing, Levels};
pub use sampler::{pattern, PrefixShare, Tally};

use crate::cache::ConfigError;
use sampler::Sampler;

/// Something that deserves attention, sent to subscribers and logged.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Alert {
    /// Usage crossed a level: raised on the way up, cleared on the way down.
    Usage {
        /// The level (0.5 for 50 %).
        level: f64,
        /// Usage now, as a fraction of the limit.
        ratio: f64,
        /// Raised (`true`) or cleared.
        raised: bool,
    },
    /// The forecast time until memory is full went under the leeway budget
    /// (`raised`), or back over it.
    Leeway {
        /// The forecast, if memory is still growing.
        time_to_full: Option<Duration>,
        /// Raised (`true`) or cleared.
        raised: bool,
    },
    /// A dangerous setting was seen (at start, or when it appeared).
    Warning(Warning),
    /// Redis stopped answering the watchdog.
    Down {
        /// Why (never contains credentials).
        error: String,
    },
    /// Redis answers again.
    Up,
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alert::Usage {
                level,
                ratio,
                raised: true,
            } => write!(
                f,
                "memory above {:.0} % of the limit (now {:.1} %)",
                level * 100.0,
                ratio * 100.0
            ),
            Alert::Usage {
                level,
                ratio,
                raised: false,
            } => write!(
                f,
                "memory back under {:.0} % of the limit (now {:.1} %)",
                level * 100.0,
                ratio * 100.0
            ),
            Alert::Leeway {
                time_to_full: Some(d),
                raised: true,
            } => {
                write!(f, "memory full in {} at the current growth", human(*d))
            }
            Alert::Leeway { raised: true, .. } => f.write_str("memory will be full soon"),
            Alert::Leeway {
                time_to_full,
                raised: false,
            } => match time_to_full {
                Some(d) => write!(f, "leeway restored: full in {}", human(*d)),
                None => f.write_str("leeway restored: memory no longer growing"),
            },
            Alert::Warning(w) => write!(f, "{w}"),
            Alert::Down { error } => write!(f, "redis unreachable: {error}"),
            Alert::Up => f.write_str("redis reachable again"),
        }
    }
}

/// A dangerous configuration.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum Warning {
    /// `maxmemory` is 0: Redis grows until the OS kills it, and clients
    /// then see connection errors, not `OOM`.
    NoMaxmemory,
    /// Under this policy keys without a TTL are never evicted, and most
    /// keys have none: memory can only grow.
    KeysWithoutTtlNeverEvicted {
        /// The policy.
        policy: String,
        /// The share of keys without a TTL.
        no_ttl_share: f64,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::NoMaxmemory => f.write_str(
                "maxmemory is 0 (no limit): Redis will grow until the OS kills it",
            ),
            Warning::KeysWithoutTtlNeverEvicted { policy, no_ttl_share } => write!(
                f,
                "maxmemory-policy {policy} never evicts keys without TTL, and {:.0} % of keys have none",
                no_ttl_share * 100.0
            ),
        }
    }
}

/// Overall health, for a health endpoint. Alerts degrade; nothing here
/// should fail readiness: a cache is optional.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Status {
    /// No poll has finished yet.
    Starting,
    /// No alert, no warning.
    Healthy,
    /// An alert is raised or a warning stands.
    Degraded,
    /// Redis does not answer the watchdog.
    Down,
}

/// What the watchdog knows now.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Report {
    /// The watchdog's name (its metrics label).
    pub name: String,
    /// Overall health.
    pub status: Status,
    /// The last figures read (kept while Redis is down or INFO unusable).
    pub info: Option<Info>,
    /// The memory limit used: `maxmemory`, or the configured budget.
    pub limit: Option<u64>,
    /// `used_memory / limit`.
    pub ratio: Option<f64>,
    /// Growth in bytes per second over the horizon, once known.
    pub growth_bytes_per_sec: Option<f64>,
    /// Forecast time until the limit is reached, in seconds, if growing.
    pub seconds_to_full: Option<f64>,
    /// Usage levels currently raised.
    pub levels_raised: Vec<f64>,
    /// Whether the leeway alert is raised.
    pub leeway_alert: bool,
    /// Dangerous settings.
    pub warnings: Vec<Warning>,
    /// The patterns holding most sampled no-TTL bytes.
    pub no_ttl_prefixes: Vec<PrefixShare>,
    /// Keys sampled so far in the current (or last full) pass.
    pub keys_sampled: u64,
    /// Keys evicted and expired since the previous poll.
    pub evicted_since_last: Option<u64>,
    /// Keys expired since the previous poll.
    pub expired_since_last: Option<u64>,
    /// The last poll's error, if it failed (connection or unusable INFO).
    pub last_error: Option<String>,
    /// Whether low-value writes are being shed (opt-in).
    pub shedding_writes: bool,
}

/// How bad a [`Report`] is, for an exit code or a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Nothing to do.
    Ok,
    /// A usage level under 90 % or a dangerous setting: look soon.
    Warning,
    /// Redis unreachable, usage at or above 90 %, or full within the
    /// leeway: act now.
    Critical,
}

impl Report {
    /// How bad this is: critical when Redis is down, usage is at or above
    /// 90 % of the limit, or the leeway alert is raised; a warning for any
    /// other alert or warning.
    pub fn severity(&self) -> Severity {
        let high = self.ratio.is_some_and(|r| r >= 0.9);
        match self.status {
            Status::Down => Severity::Critical,
            _ if high || self.leeway_alert => Severity::Critical,
            Status::Degraded => Severity::Warning,
            Status::Healthy | Status::Starting => Severity::Ok,
        }
    }

    fn starting(name: &str) -> Self {
        Report {
            name: name.to_owned(),
            status: Status::Starting,
            info: None,
            limit: None,
            ratio: None,
            growth_bytes_per_sec: None,
            seconds_to_full: None,
            levels_raised: Vec::new(),
            leeway_alert: false,
            warnings: Vec::new(),
            no_ttl_prefixes: Vec::new(),
            keys_sampled: 0,
            evicted_since_last: None,
            expired_since_last: None,
            last_error: None,
            shedding_writes: false,
        }
    }
}

impl fmt::Display for Report {
    /// A one-screen summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "status: {:?}", self.status)?;
        if let Some(info) = &self.info {
            let limit = match (self.limit, info.maxmemory) {
                (Some(l), 0) => format!(" of {} (budget; maxmemory 0)", bytes(l)),
                (Some(l), _) => format!(" of {}", bytes(l)),
                (None, _) => " (no limit)".into(),
            };
            write!(f, "memory: {}{limit}", bytes(info.used_memory))?;
            if let Some(r) = self.ratio {
                write!(f, " ({:.1} %)", r * 100.0)?;
            }
            writeln!(f, ", policy {}", info.policy)?;
            writeln!(
                f,
                "keys: {} ({} without TTL{})",
                info.keys(),
                info.keys_without_ttl(),
                info.no_ttl_share()
                    .map(|s| format!(", {:.0} %", s * 100.0))
                    .unwrap_or_default()
            )?;
            if info.keyspace.len() > 1 {
                for k in &info.keyspace {
                    writeln!(
                        f,
                        "  db{}: {} keys, {} without TTL",
                        k.db,
                        k.keys,
                        k.without_ttl()
                    )?;
                }
            }
        }
        match (self.growth_bytes_per_sec, self.seconds_to_full) {
            (Some(g), Some(s)) => writeln!(
                f,
                "growth: {}/h, full in {}",
                bytes((g * 3600.0).max(0.0) as u64),
                human(Duration::from_secs_f64(s))
            )?,
            (Some(g), None) => writeln!(f, "growth: {:.0} B/s, not filling", g)?,
            _ => writeln!(f, "growth: not enough samples yet")?,
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if !self.levels_raised.is_empty() {
            let l: Vec<String> = self
                .levels_raised
                .iter()
                .map(|l| format!("{:.0} %", l * 100.0))
                .collect();
            writeln!(f, "alerts: usage above {}", l.join(", "))?;
        }
        if self.leeway_alert {
            writeln!(f, "alert: leeway under budget")?;
        }
        for p in &self.no_ttl_prefixes {
            writeln!(
                f,
                "no-TTL: `{}` holds ~{:.0} % of sampled no-TTL bytes ({} keys, {})",
                p.pattern,
                p.share * 100.0,
                p.keys,
                bytes(p.bytes)
            )?;
        }
        if let Some(e) = &self.last_error {
            writeln!(f, "last error: {e}")?;
        }
        Ok(())
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{:.1} h", s as f64 / 3600.0),
        _ => format!("{:.1} days", s as f64 / 86400.0),
    }
}

/// Settings of a [`Watchdog`]; see [`Watchdog::builder`].
#[derive(Clone, Debug)]
pub struct WatchdogConfig {
    name: String,
    interval: Duration,
    timeout: Duration,
    levels: Vec<f64>,
    hysteresis: f64,
    horizon: Duration,
    min_span: Duration,
    leeway: Duration,
    memory_budget: Option<u64>,
    samples_per_round: usize,
    keys_per_second: u32,
    shed_above: Option<f64>,
    no_ttl_warning_share: f64,
}

/// Builds a [`Watchdog`]. Every setter documents its default.
#[must_use]
#[derive(Clone, Debug)]
pub struct WatchdogBuilder {
    config: WatchdogConfig,
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
            },
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

    /// Opt-in: above this usage ratio under `noeviction`, a [`Cache`]
    /// started with this watchdog skips writes (reason `memory_pressure`)
    /// before Redis starts answering `OOM`. Defaults to off.
    ///
    /// [`Cache`]: crate::cache::Cache
    pub fn shed_writes_above(mut self, ratio: f64) -> Self {
        self.config.shed_above = Some(ratio);
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<WatchdogConfig, ConfigError> {
        let c = &self.config;
        if c.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        for (field, d) in [
            ("interval", c.interval),
            ("timeout", c.timeout),
            ("horizon", c.horizon),
            ("leeway", c.leeway),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be more than zero"));
            }
        }
        if c.min_span >= c.horizon {
            return Err(ConfigError::new(
                "min_span",
                "must be shorter than the horizon",
            ));
        }
        if c.levels.iter().any(|l| !(*l > 0.0 && *l <= 1.0)) {
            return Err(ConfigError::new("levels", "each must be in (0, 1]"));
        }
        if !(0.0..0.5).contains(&c.hysteresis) {
            return Err(ConfigError::new("hysteresis", "must be in [0, 0.5)"));
        }
        if c.memory_budget == Some(0) {
            return Err(ConfigError::new("memory_budget", "must be more than zero"));
        }
        if c.keys_per_second == 0 {
            return Err(ConfigError::new("keys_per_second", "must be at least 1"));
        }
        if c.shed_above.is_some_and(|r| !(r > 0.0 && r <= 1.0)) {
            return Err(ConfigError::new("shed_writes_above", "must be in (0, 1]"));
        }
        Ok(self.config)
    }

    /// Starts watching the Redis at `url` (on the current tokio runtime).
    /// Connects nothing before the first poll: never fails because Redis is
    /// down.
    pub fn start(self, url: impl AsRef<str>) -> Result<Watchdog, ConfigError> {
        let redis = crate::redis::RedisConfig::builder(url).build()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::new(
                "start",
                "needs a tokio runtime: start it inside one",
            ));
        }
        Ok(Watchdog::spawn(self.build()?, redis.client))
    }
}

struct Shared {
    report: Mutex<Report>,
    alerts: broadcast::Sender<Alert>,
    /// Set while writes should be shed (opt-in).
    pressure: Arc<AtomicBool>,
}

/// A running watchdog. Cheap to clone; the task stops when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Watchdog {
    shared: Arc<Shared>,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchdog")
            .field("status", &self.report().status)
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    /// Starts a [`WatchdogBuilder`] with the defaults.
    pub fn builder() -> WatchdogBuilder {
        WatchdogBuilder::default()
    }

    pub(crate) fn spawn(config: WatchdogConfig, client: redis::Client) -> Self {
        let shared = Arc::new(Shared {
            report: Mutex::new(Report::starting(&config.name)),
            alerts: broadcast::channel(64).0,
            pressure: Arc::new(AtomicBool::new(false)),
        });
        let task = tokio::spawn(run(config, client, Arc::downgrade(&shared)));
        Watchdog {
            shared,
            _task: Arc::new(AbortOnDrop(task.abort_handle())),
        }
    }

    /// What the watchdog knows now.
    pub fn report(&self) -> Report {
        self.shared
            .report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Alerts from now on (a lagging receiver loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.shared.alerts.subscribe()
    }

    /// The flag a cache checks to shed writes (see
    /// [`shed_writes_above`](WatchdogBuilder::shed_writes_above)).
    pub(crate) fn pressure(&self) -> Arc<AtomicBool> {
        self.shared.pressure.clone()
    }
}

/// The polling loop's own state.
struct State {
    config: WatchdogConfig,
    conn: Option<MultiplexedConnection>,
    started: Instant,
    forecaster: Forecaster,
    levels: Levels,
    sampler: Sampler,
    previous: Option<Info>,
    warned: Vec<Warning>,
    up: Option<bool>,
}

impl State {
    fn new(config: WatchdogConfig) -> Self {
        State {
            forecaster: Forecaster::new(config.horizon, config.min_span),
            levels: Levels::new(&config.levels, config.hysteresis),
            sampler: Sampler::default(),
            conn: None,
            started: Instant::now(),
            previous: None,
            warned: Vec::new(),
            up: None,
            config,
        }
    }
}

async fn run(config: WatchdogConfig, client: redis::Client, shared: std::sync::Weak<Shared>) {
    let mut state = State::new(config);
    let mut ticks = tokio::time::interval(state.config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        state.poll(&client, &shared).await;
    }
}

impl State {
    async fn connect(
        &mut self,
        client: &redis::Client,
    ) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let t = self.config.timeout;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t));
        let conn = match tokio::time::timeout(
            t * 2,
            client.get_multiplexed_async_connection_with_config(&cfg),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => return Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
        };
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    async fn read_info(&mut self, client: &redis::Client) -> redis::RedisResult<String> {
        let mut conn = self.connect(client).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("INFO")
            .arg("memory")
            .cmd("INFO")
            .arg("keyspace")
            .cmd("INFO")
            .arg("stats");
        let texts: Vec<String> =
            match tokio::time::timeout(self.config.timeout, pipe.query_async(&mut conn)).await {
                Ok(r) => r?,
                Err(_) => return Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
            };
        Ok(texts.join("\r\n"))
    }

    async fn poll(&mut self, client: &redis::Client, shared: &Shared) {
        let text = match self.read_info(client).await {
            Ok(t) => t,
            Err(e) => {
                self.conn = None;
                let error = crate::redis::RedisError::from(e).to_string();
                if self.up != Some(false) {
                    self.up = Some(false);
                    emit(
                        shared,
                        &self.config.name,
                        Alert::Down {
                            error: error.clone(),
                        },
                    );
                }
                let mut report = lock(&shared.report);
                report.status = Status::Down;
                report.last_error = Some(error);
                crate::telemetry::watchdog_up(&self.config.name, false);
                return;
            }
        };
        if self.up == Some(false) {
            emit(shared, &self.config.name, Alert::Up);
        }
        self.up = Some(true);
        crate::telemetry::watchdog_up(&self.config.name, true);
        if !self.ingest(&text, shared) {
            return;
        }
        if self.config.samples_per_round > 0 {
            if let Some(mut conn) = self.conn.clone() {
                let c = &self.config;
                let (n, rate, t) = (c.samples_per_round, c.keys_per_second, c.timeout);
                if let Err(e) = self.sampler.round(&mut conn, n, rate, t).await {
                    tracing::debug!(target: "fusebox::watchdog", error = %crate::redis::RedisError::from(e), "no-TTL sampling round failed");
                }
                let tally = self.sampler.tally();
                let mut report = lock(&shared.report);
                report.no_ttl_prefixes = tally.top(5);
                report.keys_sampled = tally.sampled;
            }
        }
    }

    /// Parses one INFO text and updates everything from it; an unusable
    /// text is reported and the previous figures kept. Returns whether it
    /// was usable.
    fn ingest(&mut self, text: &str, shared: &Shared) -> bool {
        match parse(text) {
            Ok(info) => {
                self.assess(info, shared);
                true
            }
            Err(e) => {
                tracing::warn!(target: "fusebox::watchdog", watchdog = &*self.config.name, error = %e, "INFO not usable; keeping the previous figures");
                lock(&shared.report).last_error = Some(e.to_string());
                false
            }
        }
    }

    /// Everything computed from one good INFO.
    fn assess(&mut self, info: Info, shared: &Shared) {
        let name = self.config.name.clone();
        // A restart (memory and counters started over) breaks the series.
        if let Some(prev) = &self.previous {
            let restarted =
                info.expired_keys < prev.expired_keys || info.evicted_keys < prev.evicted_keys;
            if restarted {
                self.forecaster.clear();
            }
        }
        let now = self.started.elapsed().as_secs_f64();
        self.forecaster.push(now, info.used_memory);
        let limit = match info.maxmemory {
            0 => self.config.memory_budget,
            m => Some(m),
        };
        let ratio = limit.map(|l| info.used_memory as f64 / l as f64);
        if let Some(r) = ratio {
            for c in self.levels.update(r) {
                emit(
                    shared,
                    &name,
                    Alert::Usage {
                        level: c.level,
                        ratio: r,
                        raised: c.raised,
                    },
                );
            }
        }
        let growth = self.forecaster.growth();
        let to_full = growth.zip(limit).and_then(|(g, l)| g.time_to(l));
        let was = lock(&shared.report).leeway_alert;
        let leeway = self.config.leeway;
        let now_alert = match to_full {
            Some(d) if d < leeway => true,
            Some(d) if was => d < leeway.mul_f64(1.25),
            _ => false,
        };
        if now_alert != was {
            emit(
                shared,
                &name,
                Alert::Leeway {
                    time_to_full: to_full,
                    raised: now_alert,
                },
            );
        }
        let mut warnings = Vec::new();
        if info.maxmemory == 0 {
            warnings.push(Warning::NoMaxmemory);
        }
        if let Some(share) = info.no_ttl_share() {
            if info.policy.keeps_keys_without_ttl() && share >= self.config.no_ttl_warning_share {
                warnings.push(Warning::KeysWithoutTtlNeverEvicted {
                    policy: info.policy.to_string(),
                    no_ttl_share: share,
                });
            }
        }
        for w in &warnings {
            let known = self
                .warned
                .iter()
                .any(|k| std::mem::discriminant(k) == std::mem::discriminant(w));
            if !known {
                tracing::warn!(target: "fusebox::watchdog", watchdog = &*name, "{w}");
                let _ = shared.alerts.send(Alert::Warning(w.clone()));
            }
        }
        self.warned = warnings.clone();
        let shedding = match (self.config.shed_above, ratio) {
            (Some(level), Some(r)) => info.policy == Policy::NoEviction && r >= level,
            _ => false,
        };
        shared.pressure.store(shedding, Relaxed);
        // Redis' totals since its start; below the last one, it restarted,
        // and all of its total is new.
        let delta = |now: Option<u64>, prev: Option<u64>| match (now, prev) {
            (Some(n), Some(p)) if n >= p => Some(n - p),
            (Some(n), Some(_)) => Some(n),
            _ => None,
        };
        let prev = self.previous.as_ref();
        let evicted = delta(info.evicted_keys, prev.and_then(|p| p.evicted_keys));
        let expired = delta(info.expired_keys, prev.and_then(|p| p.expired_keys));
        crate::telemetry::watchdog_figures(
            &name,
            &info,
            ratio,
            growth.map(|g| g.bytes_per_sec),
            to_full,
            evicted,
            expired,
        );
        let mut report = lock(&shared.report);
        report.levels_raised = self.levels.raised();
        report.leeway_alert = now_alert;
        report.status = if now_alert || !report.levels_raised.is_empty() || !warnings.is_empty() {
            Status::Degraded
        } else {
            Status::Healthy
        };
        report.limit = limit;
        report.ratio = ratio;
        report.growth_bytes_per_sec = growth.map(|g| g.bytes_per_sec);
        report.seconds_to_full = to_full.map(|d| d.as_secs_f64());
        report.warnings = warnings;
        report.evicted_since_last = evicted;
        report.expired_since_last = expired;
        report.last_error = None;
        report.shedding_writes = shedding;
        report.info = Some(info.clone());
        drop(report);
        self.previous = Some(info);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn emit(shared: &Shared, name: &str, alert: Alert) {
    match &alert {
        Alert::Usage { raised: false, .. } | Alert::Leeway { raised: false, .. } | Alert::Up => {
            tracing::info!(target: "fusebox::watchdog", watchdog = name, "{alert}");
        }
        _ => tracing::warn!(target: "fusebox::watchdog", watchdog = name, "{alert}"),
    }
    let _ = shared.alerts.send(alert);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    /// INFO text as redis-server 7.0 writes it, with these figures.
    fn info_text(used: u64, max: u64, keys: u64, expires: u64) -> String {
        format!(
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:x\r\nmaxmemory:{max}\r\nmaxmemory_policy:noeviction\r\n\r\n# Keyspace\r\ndb0:keys={keys},expires={expires},avg_ttl=0\r\n\r\n# Stats\r\nexpired_keys:0\r\nevicted_keys:0\r\ntotal_error_replies:0\r\n"
        )
    }

    fn harness() -> (State, Shared, broadcast::Receiver<Alert>) {
        let config = Watchdog::builder()
            .interval(Duration::from_secs(60))
            .horizon(Duration::from_secs(6 * 3600))
            .min_span(Duration::from_secs(600))
            .build()
            .unwrap();
        let shared = Shared {
            report: Mutex::new(Report::starting("t")),
            alerts: broadcast::channel(1024).0,
            pressure: Arc::new(AtomicBool::new(false)),
        };
        let rx = shared.alerts.subscribe();
        (State::new(config), shared, rx)
    }

    fn drain(rx: &mut broadcast::Receiver<Alert>) -> Vec<Alert> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// Feeds one INFO per minute for `minutes`, usage by `used(minute)`.
    async fn feed(
        state: &mut State,
        shared: &Shared,
        minutes: u64,
        max: u64,
        used: impl Fn(u64) -> u64,
    ) {
        for m in 0..minutes {
            assert!(state.ingest(&info_text(used(m), max, 1000, 100), shared));
            tokio::time::advance(Duration::from_secs(60)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn steady_growth_raises_levels_in_order_and_forecasts_within_15_percent() {
        let (mut state, shared, mut rx) = harness();
        // 1 GiB limit, 100 MiB used, +1 MiB a minute, for 3 hours.
        feed(&mut state, &shared, 180, 1024 * MB, |m| 100 * MB + m * MB).await;
        let alerts = drain(&mut rx);
        let levels: Vec<f64> = alerts
            .iter()
            .filter_map(|a| match a {
                Alert::Usage {
                    level,
                    raised: true,
                    ..
                } => Some(*level),
                _ => None,
            })
            .collect();
        assert_eq!(levels, vec![0.2]);
        // Full in (1024 - 279) min = 12.4 h: under the 48 h leeway.
        let report = lock(&shared.report).clone();
        let truth = (1024.0 - 279.0) * 60.0;
        let got = report.seconds_to_full.unwrap();
        assert!(
            (got - truth).abs() / truth < 0.15,
            "forecast {got} s, truth {truth} s"
        );
        assert!(report.leeway_alert);
        assert!(alerts
            .iter()
            .any(|a| matches!(a, Alert::Leeway { raised: true, .. })));
        assert_eq!(report.status, Status::Degraded);
        // Mostly keys without TTL under noeviction: warned once.
        let warnings = alerts
            .iter()
            .filter(|a| matches!(a, Alert::Warning(_)))
            .count();
        assert_eq!(warnings, 1);
        assert_eq!(report.warnings.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn sawtooth_spike_flat_and_shrinking_usage() {
        // Sawtooth: +3.5 MiB/min for 20 min, then 60 MiB expire: net
        // +0.5 MiB/min. The forecast follows the net growth.
        let (mut state, shared, _rx) = harness();
        feed(&mut state, &shared, 360, 1024 * MB, |m| {
            200 * MB + (m / 20) * 10 * MB + (m % 20) * 7 * MB / 2
        })
        .await;
        let rate = lock(&shared.report).growth_bytes_per_sec.unwrap() * 60.0 / MB as f64;
        assert!((0.35..0.75).contains(&rate), "net {rate} MiB/min");

        // A one-off spike of 500 MiB raises and clears the 50 % level but
        // leaves the forecast alone.
        let (mut state, shared, mut rx) = harness();
        feed(&mut state, &shared, 120, 1024 * MB, |m| {
            if m == 100 {
                700 * MB
            } else {
                150 * MB + m * MB / 10
            }
        })
        .await;
        let alerts = drain(&mut rx);
        assert!(alerts.contains(&Alert::Usage {
            level: 0.5,
            ratio: 700.0 / 1024.0,
            raised: true
        }));
        assert!(alerts
            .iter()
            .any(|a| matches!(a, Alert::Usage { level, raised: false, .. } if *level == 0.5)));
        let rate = lock(&shared.report).growth_bytes_per_sec.unwrap() * 60.0 / MB as f64;
        assert!((rate - 0.1).abs() < 0.02, "{rate} MiB/min");

        // Flat, then shrinking: never a leeway alert.
        for used in [|_m: u64| 300 * MB, |m: u64| 600 * MB - m * MB] {
            let (mut state, shared, mut rx) = harness();
            feed(&mut state, &shared, 120, 1024 * MB, used).await;
            assert!(!drain(&mut rx)
                .iter()
                .any(|a| matches!(a, Alert::Leeway { .. })));
            let report = lock(&shared.report).clone();
            assert_eq!(report.seconds_to_full, None);
            assert!(!report.leeway_alert);
        }
    }

    #[cfg(feature = "serde")]
    #[tokio::test(start_paused = true)]
    async fn the_report_serializes_for_a_health_endpoint() {
        let (mut state, shared, _rx) = harness();
        feed(&mut state, &shared, 20, 1024 * MB, |m| 300 * MB + m * MB).await;
        let json = serde_json::to_value(lock(&shared.report).clone()).unwrap();
        assert_eq!(json["status"], "Degraded");
        assert_eq!(json["info"]["keyspace"][0]["keys"], 1000);
        assert_eq!(json["levels_raised"][0], 0.2);
        assert!(json["seconds_to_full"].is_number());
    }

    #[tokio::test(start_paused = true)]
    async fn maxmemory_zero_and_unusable_text() {
        let (mut state, shared, mut rx) = harness();
        feed(&mut state, &shared, 30, 0, |m| 100 * MB + m * MB).await;
        let report = lock(&shared.report).clone();
        assert!(report.warnings.contains(&Warning::NoMaxmemory));
        assert_eq!(
            (report.limit, report.ratio, report.seconds_to_full),
            (None, None, None)
        );
        assert!(drain(&mut rx).contains(&Alert::Warning(Warning::NoMaxmemory)));

        // Garbage, truncation, another version's layout: reported, the
        // previous figures kept, nothing panics.
        let before = report.info.clone();
        let good = info_text(5 * MB, 0, 10, 0);
        for bad in [
            "",
            "garbage\u{0}\u{ff}",
            &good[..good.find("maxmemory:").unwrap()],
            "used_memory:x\nmaxmemory:0",
        ] {
            assert!(!state.ingest(bad, &shared));
            let report = lock(&shared.report).clone();
            assert!(report.last_error.is_some());
            assert_eq!(report.info, before);
        }
    }
}
