//! Parsing `INFO` text: pure, total (never panics), tolerant of fields it
//! does not know and of other Redis versions.

use std::fmt;

/// The figures the watchdog reads from `INFO memory`, `INFO keyspace` and
/// `INFO stats`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Info {
    /// `used_memory`: bytes allocated by Redis.
    pub used_memory: u64,
    /// `maxmemory`: the limit in bytes; 0 means none.
    pub maxmemory: u64,
    /// `maxmemory_policy`.
    pub policy: Policy,
    /// One entry per database with keys.
    pub keyspace: Vec<Keyspace>,
    /// `evicted_keys` (total since start), if reported.
    pub evicted_keys: Option<u64>,
    /// `expired_keys` (total since start), if reported.
    pub expired_keys: Option<u64>,
    /// `total_error_replies`, if reported (Redis 6.2+).
    pub total_error_replies: Option<u64>,
    /// `rejected_connections`, if reported.
    pub rejected_connections: Option<u64>,
    /// `cluster_enabled:1` (from `INFO cluster`): a Redis Cluster node.
    pub cluster_enabled: bool,
}

impl Info {
    /// Keys in every database.
    pub fn keys(&self) -> u64 {
        self.keyspace.iter().map(|k| k.keys).sum()
    }

    /// Keys without a TTL in every database.
    pub fn keys_without_ttl(&self) -> u64 {
        self.keyspace.iter().map(Keyspace::without_ttl).sum()
    }

    /// The share of keys without a TTL, if there are keys.
    pub fn no_ttl_share(&self) -> Option<f64> {
        let keys = self.keys();
        (keys > 0).then(|| self.keys_without_ttl() as f64 / keys as f64)
    }
}

/// One `dbN:keys=…,expires=…` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Keyspace {
    /// The database number.
    pub db: u32,
    /// Keys in it.
    pub keys: u64,
    /// Keys with a TTL.
    pub expires: u64,
}

impl Keyspace {
    /// Keys without a TTL.
    pub fn without_ttl(&self) -> u64 {
        self.keys.saturating_sub(self.expires)
    }
}

/// `maxmemory_policy`: what Redis does at the limit.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// `noeviction`: writes fail with `OOM`.
    NoEviction,
    /// `allkeys-*`: any key may be evicted.
    AllKeys(String),
    /// `volatile-*`: only keys with a TTL may be evicted; keys without one
    /// fill memory as under `noeviction`.
    Volatile(String),
    /// Not reported, or unknown to this version.
    #[default]
    Unknown,
}

impl Policy {
    fn parse(s: &str) -> Policy {
        match s {
            "noeviction" => Policy::NoEviction,
            s if s.starts_with("allkeys-") => Policy::AllKeys(s.to_owned()),
            s if s.starts_with("volatile-") => Policy::Volatile(s.to_owned()),
            _ => Policy::Unknown,
        }
    }

    /// Whether keys without a TTL can never be evicted under this policy.
    pub fn keeps_keys_without_ttl(&self) -> bool {
        matches!(self, Policy::NoEviction | Policy::Volatile(_))
    }
}

/// As Redis names it (`noeviction`, `allkeys-lru`, …; `unknown`).
#[cfg(feature = "serde")]
impl serde::Serialize for Policy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::NoEviction => f.write_str("noeviction"),
            Policy::AllKeys(s) | Policy::Volatile(s) => f.write_str(s),
            Policy::Unknown => f.write_str("unknown"),
        }
    }
}

/// `INFO` text the watchdog could not use: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoError {
    field: String,
    reason: &'static str,
}

impl InfoError {
    fn new(field: &str, reason: &'static str) -> Self {
        // Bounded: a garbage field name never bloats a log line.
        let field = field.chars().take(64).collect();
        InfoError { field, reason }
    }

    /// The field at fault.
    pub fn field(&self) -> &str {
        &self.field
    }
}

impl fmt::Display for InfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unusable INFO field `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for InfoError {}

/// Parses the concatenated text of `INFO memory`, `INFO keyspace`,
/// `INFO stats` and `INFO cluster` (or of a plain `INFO`). `used_memory` and `maxmemory` are
/// required; everything else is optional; unknown fields are ignored.
pub fn parse(text: &str) -> Result<Info, InfoError> {
    let mut info = Info::default();
    let (mut used, mut max) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "used_memory" => used = Some(number(key, value)?),
            "maxmemory" => max = Some(number(key, value)?),
            "maxmemory_policy" => info.policy = Policy::parse(value),
            "evicted_keys" => info.evicted_keys = Some(number(key, value)?),
            "expired_keys" => info.expired_keys = Some(number(key, value)?),
            "total_error_replies" => info.total_error_replies = Some(number(key, value)?),
            "rejected_connections" => info.rejected_connections = Some(number(key, value)?),
            "cluster_enabled" => info.cluster_enabled = value.trim() == "1",
            _ => {
                if let Some(db) = key.strip_prefix("db") {
                    if let Ok(db) = db.parse::<u32>() {
                        info.keyspace.push(keyspace(key, db, value)?);
                    }
                }
            }
        }
    }
    info.used_memory = used.ok_or_else(|| InfoError::new("used_memory", "missing"))?;
    info.maxmemory = max.ok_or_else(|| InfoError::new("maxmemory", "missing"))?;
    Ok(info)
}

fn number(key: &str, value: &str) -> Result<u64, InfoError> {
    value
        .trim()
        .parse()
        .map_err(|_| InfoError::new(key, "not a whole number"))
}

/// `keys=400,expires=100,avg_ttl=…[,subexpiry=…]`
fn keyspace(key: &str, db: u32, value: &str) -> Result<Keyspace, InfoError> {
    let (mut keys, mut expires) = (None, None);
    for part in value.split(',') {
        match part.split_once('=') {
            Some(("keys", n)) => keys = Some(number(key, n)?),
            Some(("expires", n)) => expires = Some(number(key, n)?),
            _ => {}
        }
    }
    match (keys, expires) {
        (Some(keys), Some(expires)) => Ok(Keyspace { db, keys, expires }),
        _ => Err(InfoError::new(key, "no keys= or expires=")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from redis-server 7.0.15 (trimmed to the sections polled).
    pub(crate) const REDIS_7: &str = "# Memory\r\nused_memory:964208\r\nused_memory_human:941.61K\r\nused_memory_peak:964208\r\nmaxmemory:8388608\r\nmaxmemory_human:8.00M\r\nmaxmemory_policy:noeviction\r\nmem_fragmentation_ratio:7.46\r\nmem_not_counted_for_evict:0\r\n\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n\r\n# Stats\r\nexpired_keys:0\r\nexpired_stale_perc:0.00\r\nevicted_keys:0\r\nrejected_connections:0\r\ntotal_error_replies:0\r\n";

    #[test]
    fn parses_redis_7() {
        let info = parse(REDIS_7).unwrap();
        assert_eq!(info.used_memory, 964_208);
        assert_eq!(info.maxmemory, 8 << 20);
        assert_eq!(info.policy, Policy::NoEviction);
        assert_eq!(info.keys(), 3);
        assert_eq!(info.keys_without_ttl(), 2);
        assert_eq!(
            info.keyspace[1],
            Keyspace {
                db: 3,
                keys: 1,
                expires: 0
            }
        );
        assert_eq!(info.evicted_keys, Some(0));
        assert_eq!(info.total_error_replies, Some(0));
    }

    #[test]
    fn older_versions_without_optional_fields_parse() {
        // Redis 4-style: no total_error_replies, an allkeys policy.
        let text = "used_memory:1000\nmaxmemory:0\nmaxmemory_policy:allkeys-lru\nevicted_keys:5\n";
        let info = parse(text).unwrap();
        assert_eq!(info.maxmemory, 0);
        assert_eq!(info.policy, Policy::AllKeys("allkeys-lru".into()));
        assert!(!info.policy.keeps_keys_without_ttl());
        assert_eq!(info.total_error_replies, None);
        assert_eq!(info.no_ttl_share(), None);
        // Redis 7.4 adds subexpiry= to keyspace lines.
        let info = parse("used_memory:1\nmaxmemory:2\ndb0:keys=10,expires=4,avg_ttl=0,subexpiry=0")
            .unwrap();
        assert_eq!(info.keys_without_ttl(), 6);
    }

    proptest::proptest! {
        #[test]
        fn any_text_or_truncation_parses_or_errs_without_panicking(
            cut in 0..REDIS_7.len(),
            junk in "\\PC{0,200}",
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let _ = parse(&REDIS_7[..cut]);
            let _ = parse(&junk);
            let _ = parse(&String::from_utf8_lossy(&noise));
            let _ = parse(&format!("{}{junk}", &REDIS_7[..cut]));
        }
    }

    #[test]
    fn malformed_text_is_an_error_naming_the_field() {
        assert_eq!(parse("").unwrap_err().field(), "used_memory");
        assert_eq!(parse("used_memory:12").unwrap_err().field(), "maxmemory");
        assert_eq!(
            parse("used_memory:12x\nmaxmemory:0").unwrap_err().field(),
            "used_memory"
        );
        assert_eq!(
            parse("used_memory:-1\nmaxmemory:0").unwrap_err().field(),
            "used_memory"
        );
        let err = parse("used_memory:1\nmaxmemory:0\ndb0:keys=x,expires=1").unwrap_err();
        assert_eq!(err.field(), "db0");
        // Truncated mid-line.
        let cut = &REDIS_7[..REDIS_7.find("maxmemory:").unwrap() + 5];
        assert!(parse(cut).is_err());
    }
}
