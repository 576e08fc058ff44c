//! What the watchdog knows now, for health endpoints and the doctor.

use std::fmt;
use std::time::Duration;

use super::*;

/// Overall health, for a health endpoint. Alerts degrade; nothing here
/// should fail readiness: a cache is optional.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
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

impl Status {
    /// The status as the doctor, logs and JSON write it: `starting`,
    /// `healthy`, `degraded`, `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Down => "down",
        }
    }
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
    /// What each [`expire`](super::WatchdogBuilder::expire) policy did
    /// since the watchdog started (over a cluster: every primary's, added
    /// up), in the order given.
    pub expiry: Vec<super::PolicyCount>,
    /// Keys evicted and expired since the previous poll.
    pub evicted_since_last: Option<u64>,
    /// Keys expired since the previous poll.
    pub expired_since_last: Option<u64>,
    /// The last poll's error, if it failed (connection or unusable INFO).
    pub last_error: Option<String>,
    /// Whether low-value writes are being shed (opt-in).
    pub shedding_writes: bool,
    /// For a node of a cluster, its address (`ip:port`). For a whole
    /// cluster, the node that will fill first, whose forecast, figures and
    /// patterns this report shows (a cluster is full when one shard is).
    /// `None` for a single Redis.
    pub node: Option<String>,
    /// For a whole cluster, every primary's own report, by address; empty
    /// otherwise.
    pub nodes: Vec<Report>,
}

/// How bad a [`Report`] is, for an exit code or a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// No alert is raised: nothing to do. (Named as an alarm is named when
    /// it ends, and so that a `match` never reads like a `Result`'s `Ok`.)
    Clear,
    /// A usage level under 90 % or a dangerous setting: look soon.
    Warning,
    /// Redis unreachable, usage at or above 90 %, or full within the
    /// leeway: act now.
    Critical,
}

impl Severity {
    /// The severity as the doctor and JSON write it: `clear`, `warning`,
    /// `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Clear => "clear",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
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
            Status::Healthy | Status::Starting => Severity::Clear,
        }
    }

    /// The `maxmemory` that leaves `leeway` before memory is full at the
    /// measured growth: memory used now plus `leeway` of growth. `None`
    /// before a forecast, or while memory is not growing.
    pub fn maxmemory_for(&self, leeway: Duration) -> Option<u64> {
        let used = self.info.as_ref()?.used_memory;
        let growth = self.growth_bytes_per_sec.filter(|g| *g > 0.0)?;
        let more = growth * leeway.as_secs_f64();
        Some(used.saturating_add(more.min(u64::MAX as f64) as u64))
    }

    pub(super) fn starting(name: &str) -> Self {
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
            expiry: Vec::new(),
            evicted_since_last: None,
            expired_since_last: None,
            last_error: None,
            shedding_writes: false,
            node: None,
            nodes: Vec::new(),
        }
    }
}

impl fmt::Display for Report {
    /// A one-screen summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "status: {}", self.status.as_str())?;
        if !self.nodes.is_empty() {
            let first = self.node.as_deref().unwrap_or("-");
            writeln!(
                f,
                "cluster: {} primaries; fills first: {first} (the figures below are its own)",
                self.nodes.len()
            )?;
        }
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
        // The finding, turned into the line that would stop it.
        if let Some(top) = self
            .no_ttl_prefixes
            .first()
            .filter(|_| self.expiry.is_empty())
        {
            writeln!(
                f,
                "advice: give `{0}` keys a TTL where they are written, or hold them to one: \
                 Watchdog::builder().expire(\"{0}\", Duration::from_secs(72 * 3600)) \
                 (once: fusebox-doctor --expire '{0}=72h' --apply)",
                top.pattern
            )?;
        }
        for p in &self.expiry {
            write!(
                f,
                "expiry: `{}` → {}: {} keys given a TTL",
                p.pattern,
                human(Duration::from_secs(p.ttl_secs)),
                p.expired
            )?;
            match p.would_expire {
                0 => writeln!(f)?,
                n => writeln!(f, ", {n} would be (dry run)")?,
            }
        }
        if let Some(e) = &self.last_error {
            writeln!(f, "last error: {e}")?;
        }
        if !self.nodes.is_empty() {
            writeln!(f, "nodes:")?;
            for n in &self.nodes {
                writeln!(f, "  {}", n.one_line())?;
            }
        }
        Ok(())
    }
}

impl Report {
    /// One node in one line: address, status, usage, forecast, the top
    /// no-TTL pattern.
    fn one_line(&self) -> String {
        let mut line = format!(
            "{}: {}",
            self.node.as_deref().unwrap_or("-"),
            self.status.as_str()
        );
        if let Some(info) = &self.info {
            line.push_str(&format!(", {}", bytes(info.used_memory)));
            if let Some(r) = self.ratio {
                line.push_str(&format!(" ({:.1} %)", r * 100.0));
            }
        }
        match self.seconds_to_full {
            Some(s) => line.push_str(&format!(", full in {}", human(Duration::from_secs_f64(s)))),
            None if self.growth_bytes_per_sec.is_some() => line.push_str(", not filling"),
            None => {}
        }
        if let Some(p) = self.no_ttl_prefixes.first() {
            line.push_str(&format!(
                ", no-TTL `{}` ~{:.0} %",
                p.pattern,
                p.share * 100.0
            ));
        }
        if self.status == Status::Down {
            if let Some(e) = &self.last_error {
                line.push_str(&format!(" ({e})"));
            }
        }
        line
    }
}

pub(super) fn bytes(n: u64) -> String {
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

pub(super) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{:.1} h", s as f64 / 3600.0),
        _ => format!("{:.1} days", s as f64 / 86400.0),
    }
}
