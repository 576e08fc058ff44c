//! Metric names and the events every layer emits, in one place.
//!
//! | metric | kind | labels | meaning |
//! |---|---|---|---|
//! | `fusebox_breaker_calls_total` | counter | `breaker`, `outcome` = `success` / `failure` / `ignored` / `rejected` | calls through a breaker, by outcome |
//! | `fusebox_breaker_slow_calls_total` | counter | `breaker` | calls slower than the slow-call threshold |
//! | `fusebox_breaker_transitions_total` | counter | `breaker`, `from`, `to`, `reason` | state changes |
//! | `fusebox_breaker_state` | gauge | `breaker`, `state` = `closed` / `open` / `half_open` / `forced_open` / `disabled` | how many circuits of that name are in that state |
//!
//! Every figure is correct whatever the names: breakers (and caches) that
//! share a name add up, and a breaker made under the name of a dropped one
//! carries on from its totals. Counters only ever grow by what happened
//! since they were last published.
//!
//! Successes, rejections and ignored outcomes are counted per thread without
//! touching shared memory, and published (what changed since the last time) every
//! second, on every transition and when a breaker is dropped; failures are
//! published one by one. The periodic publishing runs on a thread named
//! `fusebox-metrics`, which exists only while some breaker does; it reports
//! to the global recorder, so a recorder installed with
//! `metrics::with_local_recorder` sees those totals only as of the last
//! transition.
//!
//! Every transition is also a `tracing` event of target `fusebox::breaker`:
//! `WARN` when a circuit opens, `INFO` otherwise.

use std::sync::Arc;

use metrics::{counter, gauge};

use crate::breaker::{Outcome, Transition};

/// Counter of calls through a breaker, by `outcome`.
pub const BREAKER_CALLS_TOTAL: &str = "fusebox_breaker_calls_total";
/// Counter of slow calls through a breaker.
pub const BREAKER_SLOW_CALLS_TOTAL: &str = "fusebox_breaker_slow_calls_total";
/// Counter of breaker state changes, by `from`, `to` and `reason`.
pub const BREAKER_TRANSITIONS_TOTAL: &str = "fusebox_breaker_transitions_total";
/// Gauge of how many circuits of a name are in each `state`.
pub const BREAKER_STATE: &str = "fusebox_breaker_state";

pub(crate) fn breaker_transition(name: &Arc<str>, t: &Transition) {
    let (from, to, reason) = (t.from.as_str(), t.to.as_str(), t.reason.as_str());
    let open_ms = t
        .open_until
        .map(|u| u.saturating_duration_since(t.at).as_millis() as u64);
    if t.to.is_rejecting() {
        tracing::warn!(
            target: "fusebox::breaker",
            breaker = &**name, from, to, reason,
            failure_rate = t.failure_rate, open_ms,
            "circuit breaker opened"
        );
    } else {
        tracing::info!(
            target: "fusebox::breaker",
            breaker = &**name, from, to, reason,
            "circuit breaker {to}"
        );
    }
    counter!(BREAKER_TRANSITIONS_TOTAL, "breaker" => name.clone(), "from" => from, "to" => to, "reason" => reason)
        .increment(1);
    breaker_left(name, t.from);
    breaker_entered(name, t.to);
}

/// Adds outcomes counted since the last publish (never totals: two breakers
/// of one name must add up).
pub(crate) fn breaker_counts(name: &Arc<str>, successes: u64, rejections: u64, ignored: u64) {
    for (outcome, n) in [
        ("success", successes),
        ("rejected", rejections),
        ("ignored", ignored),
    ] {
        if n > 0 {
            counter!(BREAKER_CALLS_TOTAL, "breaker" => name.clone(), "outcome" => outcome)
                .increment(n);
        }
    }
}

pub(crate) fn breaker_outcome(name: Option<&Arc<str>>, outcome: Outcome, slow: bool) {
    let Some(name) = name else { return };
    if outcome == Outcome::Failure {
        counter!(BREAKER_CALLS_TOTAL, "breaker" => name.clone(), "outcome" => "failure")
            .increment(1);
    }
    if slow {
        counter!(BREAKER_SLOW_CALLS_TOTAL, "breaker" => name.clone()).increment(1);
    }
}

/// A circuit of `name` entered `state` (made: `closed`).
pub(crate) fn breaker_entered(name: &Arc<str>, state: crate::breaker::State) {
    gauge!(BREAKER_STATE, "breaker" => name.clone(), "state" => state.as_str()).increment(1.0);
}

/// A circuit of `name` left `state` (or was dropped in it).
pub(crate) fn breaker_left(name: &Arc<str>, state: crate::breaker::State) {
    gauge!(BREAKER_STATE, "breaker" => name.clone(), "state" => state.as_str()).decrement(1.0);
}

/// Counter of cache calls answered without the cache (a miss or a skip), by
/// `cache`, `op` (`get`, `set`, …) and `reason` (see
/// [`Reason::as_str`](crate::cache::Reason::as_str)).
pub const CACHE_FAIL_OPEN_TOTAL: &str = "fusebox_cache_fail_open_total";
/// Counter of pooled connections that failed to open, or were found
/// broken at checkout, by `addr` and `reason`.
pub const REDIS_CONNECT_ERRORS_TOTAL: &str = "fusebox_redis_connect_errors_total";

pub(crate) fn cache_fail_open(name: &Arc<str>, op: &'static str, reason: crate::cache::Reason) {
    counter!(CACHE_FAIL_OPEN_TOTAL, "cache" => name.clone(), "op" => op, "reason" => reason.as_str())
        .increment(1);
}

pub(crate) fn redis_connect_error(addr: &str, reason: crate::cache::Reason) {
    tracing::debug!(target: "fusebox::redis", addr, reason = reason.as_str(), "redis connect failed");
    counter!(REDIS_CONNECT_ERRORS_TOTAL, "addr" => addr.to_owned(), "reason" => reason.as_str())
        .increment(1);
}

/// Gauge: 1 while the watchdog reaches Redis, 0 while it does not; label
/// `watchdog`.
pub const REDIS_UP: &str = "fusebox_redis_up";
/// Gauge: `used_memory` in bytes; label `watchdog`.
pub const REDIS_USED_MEMORY_BYTES: &str = "fusebox_redis_used_memory_bytes";
/// Gauge: `used_memory` over the limit (`maxmemory` or the budget).
pub const REDIS_MEMORY_RATIO: &str = "fusebox_redis_memory_ratio";
/// Gauge: fitted growth of `used_memory`, bytes per second.
pub const REDIS_MEMORY_GROWTH_BYTES_PER_SECOND: &str =
    "fusebox_redis_memory_growth_bytes_per_second";
/// Gauge: forecast seconds until `maxmemory`; `+Inf` once a forecast says
/// memory is not growing (or there is no limit); absent before the first
/// forecast.
pub const REDIS_SECONDS_TO_FULL: &str = "fusebox_redis_seconds_to_full";
/// Gauge: share of keys without a TTL (from `INFO keyspace`).
pub const REDIS_NO_TTL_KEY_RATIO: &str = "fusebox_redis_no_ttl_key_ratio";
/// Counter: keys Redis evicted, as seen by the watchdog's polls (a restart
/// of Redis, which resets its own count, is not a decrease here).
pub const REDIS_EVICTED_KEYS_TOTAL: &str = "fusebox_redis_evicted_keys_total";
/// Counter: keys Redis expired, as seen by the watchdog's polls.
pub const REDIS_EXPIRED_KEYS_TOTAL: &str = "fusebox_redis_expired_keys_total";

pub(crate) fn watchdog_up(name: &str, up: bool) {
    gauge!(REDIS_UP, "watchdog" => name.to_owned()).set(if up { 1.0 } else { 0.0 });
}

pub(crate) fn watchdog_figures(
    name: &str,
    info: &crate::watchdog::Info,
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
    set(REDIS_USED_MEMORY_BYTES, info.used_memory as f64);
    if let Some(r) = ratio {
        set(REDIS_MEMORY_RATIO, r);
    }
    if let Some(g) = growth {
        set(REDIS_MEMORY_GROWTH_BYTES_PER_SECOND, g);
    }
    match (to_full, growth) {
        (Some(d), _) => set(REDIS_SECONDS_TO_FULL, d.as_secs_f64()),
        // A forecast, and it says never.
        (None, Some(_)) => set(REDIS_SECONDS_TO_FULL, f64::INFINITY),
        (None, None) => {}
    }
    if let Some(s) = info.no_ttl_share() {
        set(REDIS_NO_TTL_KEY_RATIO, s);
    }
    let add = |metric: &'static str, n: u64| {
        let (k, v) = label();
        counter!(metric, k => v).increment(n);
    };
    if let Some(n) = evicted {
        add(REDIS_EVICTED_KEYS_TOTAL, n);
    }
    if let Some(n) = expired {
        add(REDIS_EXPIRED_KEYS_TOTAL, n);
    }
}
