//! What the watchdog tells: alerts and standing warnings.

use std::fmt;
use std::time::Duration;

use super::report::human;

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
    /// A dangerous setting is gone.
    WarningCleared(Warning),
    /// An expiry policy ([`expire`](super::WatchdogBuilder::expire)) began
    /// giving keys without TTL one (`raised`): some client writes them
    /// without. Cleared once no such key was met for
    /// [`POLICY_QUIET_POLLS`] polls.
    Policy {
        /// The policy's pattern.
        pattern: String,
        /// The TTL it gives.
        ttl: Duration,
        /// Keys given it (in a dry run: that would have been) since raised.
        keys: u64,
        /// A dry run: nothing was changed.
        dry_run: bool,
        /// Raised (`true`) or cleared.
        raised: bool,
    },
    /// Redis stopped answering the watchdog.
    Down {
        /// Why (never contains credentials).
        error: String,
    },
    /// Redis answers again.
    Up,
    /// An alert of one primary of a cluster
    /// ([`redis_cluster`](super::WatchdogBuilder::redis_cluster)).
    Node {
        /// The node's address (`ip:port`).
        node: String,
        /// What it said.
        alert: Box<Alert>,
    },
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
            Alert::WarningCleared(w) => write!(f, "resolved: {w}"),
            Alert::Policy {
                pattern,
                ttl,
                keys,
                dry_run,
                raised: true,
            } => write!(
                f,
                "keys matching {pattern:?} are written without TTL: {} {keys} a TTL of {}",
                if *dry_run { "would give" } else { "gave" },
                human(*ttl)
            ),
            Alert::Policy {
                pattern,
                keys,
                dry_run,
                raised: false,
                ..
            } => write!(
                f,
                "no key matching {pattern:?} without TTL for {POLICY_QUIET_POLLS} polls ({keys} {} in all)",
                if *dry_run { "would have been given one" } else { "given one" }
            ),
            Alert::Down { error } => write!(f, "redis unreachable: {error}"),
            Alert::Up => f.write_str("redis reachable again"),
            Alert::Node { node, alert } => write!(f, "{node}: {alert}"),
        }
    }
}

/// Polls without a key of a policy's pattern met without TTL that clear
/// its [`Alert::Policy`].
pub const POLICY_QUIET_POLLS: u32 = 6;

/// A dangerous configuration.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
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
    /// A cluster node with `cluster-require-full-coverage yes` (the
    /// default): while one shard has no primary, every node refuses every
    /// key (`CLUSTERDOWN`), and one shard's failure is the whole cluster's.
    /// A cache wants `no`.
    FullCoverageRequired,
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
            Warning::FullCoverageRequired => f.write_str(
                "cluster-require-full-coverage is yes: one shard without a primary stops the whole cluster; set it to no",
            ),
        }
    }
}

/// The standing warnings `info` calls for: no `maxmemory`, keys without TTL
/// that the policy never evicts (at least `no_ttl_warning_share` of them),
/// a cluster node requiring full coverage.
pub(super) fn standing_warnings(
    info: &super::info::Info,
    full_coverage: Option<bool>,
    no_ttl_warning_share: f64,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if info.maxmemory == 0 {
        warnings.push(Warning::NoMaxmemory);
    }
    if info.cluster_enabled && full_coverage == Some(true) {
        warnings.push(Warning::FullCoverageRequired);
    }
    if let Some(share) = info.no_ttl_share() {
        if info.policy.keeps_keys_without_ttl() && share >= no_ttl_warning_share {
            warnings.push(Warning::KeysWithoutTtlNeverEvicted {
                policy: info.policy.to_string(),
                no_ttl_share: share,
            });
        }
    }
    warnings
}
