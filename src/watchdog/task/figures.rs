//! One poll's figures, published as metrics.

use metrics::{counter, gauge};

use super::Info;
use crate::telemetry;

/// Publishes one poll's figures.
pub(super) fn watchdog_figures(
    name: &str,
    info: &Info,
    ratio: Option<f64>,
    growth: Option<f64>,
    to_full: Option<std::time::Duration>,
    evicted: Option<u64>,
    expired: Option<u64>,
) {
    let name = name.to_owned();
    let label = || ("watchdog", name.clone());
    let set = |metric: &'static str, v: f64| {
        let (k, n) = label();
        gauge!(metric, k => n).set(v);
    };
    set(telemetry::REDIS_USED_MEMORY_BYTES, info.used_memory as f64);
    if let Some(r) = ratio {
        set(telemetry::REDIS_MEMORY_RATIO, r);
    }
    if let Some(g) = growth {
        set(telemetry::REDIS_MEMORY_GROWTH_BYTES_PER_SECOND, g);
    }
    match (to_full, growth) {
        (Some(d), _) => set(telemetry::REDIS_SECONDS_TO_FULL, d.as_secs_f64()),
        // A forecast, and it says never.
        (None, Some(_)) => set(telemetry::REDIS_SECONDS_TO_FULL, f64::INFINITY),
        (None, None) => {}
    }
    if let Some(s) = info.no_ttl_share() {
        set(telemetry::REDIS_NO_TTL_KEY_RATIO, s);
    }
    let add = |metric: &'static str, n: u64| {
        let (k, v) = label();
        counter!(metric, k => v).increment(n);
    };
    if let Some(n) = evicted {
        add(telemetry::REDIS_EVICTED_KEYS_TOTAL, n);
    }
    if let Some(n) = expired {
        add(telemetry::REDIS_EXPIRED_KEYS_TOTAL, n);
    }
}
