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
//! second, on every transition and when a breaker is dropped, and whenever
//! [`breaker::publish_counts`](crate::breaker::publish_counts) is called
//! (call it in a `/metrics` handler before rendering, and the scrape is
//! exact, not up to a second behind); failures are
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

/// Counter of calls through a breaker, by `outcome`.
pub const BREAKER_CALLS_TOTAL: &str = "fusebox_breaker_calls_total";
/// Counter of slow calls through a breaker.
pub const BREAKER_SLOW_CALLS_TOTAL: &str = "fusebox_breaker_slow_calls_total";
/// Counter of breaker state changes, by `from`, `to` and `reason`.
pub const BREAKER_TRANSITIONS_TOTAL: &str = "fusebox_breaker_transitions_total";
/// Gauge of how many circuits of a name are in each `state`.
pub const BREAKER_STATE: &str = "fusebox_breaker_state";
/// Histogram of the durations in seconds of calls through a breaker that
/// times its calls (one with slow-call detection, or
/// [`record_latency`](crate::breaker::ConfigBuilder::record_latency)), by
/// `breaker`.
pub const BREAKER_CALL_DURATION_SECONDS: &str = "fusebox_breaker_call_duration_seconds";

pub(crate) fn breaker_latency(name: &Arc<str>) -> metrics::Histogram {
    metrics::histogram!(BREAKER_CALL_DURATION_SECONDS, "breaker" => name.clone())
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

pub(crate) fn breaker_outcome(name: Option<&Arc<str>>, failure: bool, slow: bool) {
    let Some(name) = name else { return };
    if failure {
        counter!(BREAKER_CALLS_TOTAL, "breaker" => name.clone(), "outcome" => "failure")
            .increment(1);
    }
    if slow {
        counter!(BREAKER_SLOW_CALLS_TOTAL, "breaker" => name.clone()).increment(1);
    }
}

/// A circuit of `name` entered `state` (made: `closed`).
pub(crate) fn breaker_entered(name: &Arc<str>, state: &'static str) {
    gauge!(BREAKER_STATE, "breaker" => name.clone(), "state" => state).increment(1.0);
}

/// A circuit of `name` left `state` (or was dropped in it).
pub(crate) fn breaker_left(name: &Arc<str>, state: &'static str) {
    gauge!(BREAKER_STATE, "breaker" => name.clone(), "state" => state).decrement(1.0);
}

/// Counter of cache calls answered without the cache (a miss or a skip), by
/// `cache`, `op` (`get`, `set`, …) and `reason` (see
/// [`Reason::as_str`](crate::cache::Reason::as_str)).
pub const CACHE_FAIL_OPEN_TOTAL: &str = "fusebox_cache_fail_open_total";
/// Counter: reads through a near cache, by outcome; labels `cache`,
/// `outcome` (`l1_hit`: fresh from L1; `hit`: from Redis; `stale`: from L1
/// while Redis failed; `miss`: no value). Registered when the cache is
/// built, so a recorder must be installed before.
pub const CACHE_READS_TOTAL: &str = "fusebox_cache_reads_total";

/// Counter of writes whose TTL was over the cache's `max_ttl` and was cut
/// to it, by `cache`.
pub const CACHE_TTL_CAPPED_TOTAL: &str = "fusebox_cache_ttl_capped_total";

pub(crate) fn ttl_capped(name: &Arc<str>) {
    counter!(CACHE_TTL_CAPPED_TOTAL, "cache" => name.clone()).increment(1);
}

/// Histogram of cache calls' durations in seconds, from the call to its
/// answer (a hit, a miss, a failure answered as a miss), by `cache` and
/// `op` (`get`, `get_many`, `set`, `set_if_absent`, `delete`, `expire`).
pub const CACHE_CALL_DURATION_SECONDS: &str = "fusebox_cache_call_duration_seconds";

pub(crate) fn cache_latency(name: &Arc<str>, op: &'static str) -> metrics::Histogram {
    metrics::histogram!(CACHE_CALL_DURATION_SECONDS, "cache" => name.clone(), "op" => op)
}

/// Counter: keys without TTL an expiry policy gave one (`mode` =
/// `applied`), or in a dry run would have (`dry_run`); labels `watchdog`,
/// `pattern`, `mode`.
pub const WATCHDOG_KEYS_EXPIRED_TOTAL: &str = "fusebox_watchdog_keys_expired_total";

pub(crate) fn watchdog_key_expired(watchdog: &str, pattern: &str, mode: &'static str) {
    counter!(WATCHDOG_KEYS_EXPIRED_TOTAL, "watchdog" => watchdog.to_owned(), "pattern" => pattern.to_owned(), "mode" => mode)
        .increment(1);
}

/// Counter: watchdog alerts delivered to a webhook (`outcome` = `sent`),
/// attempts that failed and will be retried (`retried`), and alerts given
/// up (`dropped`: the queue was full, or the watchdog was dropped while
/// the receiver failed); labels `watchdog`, `outcome`.
pub const WATCHDOG_WEBHOOK_TOTAL: &str = "fusebox_watchdog_webhook_total";

#[cfg_attr(not(feature = "webhook"), allow(dead_code))]
pub(crate) fn webhook(watchdog: &str, outcome: &'static str, n: u64) {
    counter!(WATCHDOG_WEBHOOK_TOTAL, "watchdog" => watchdog.to_owned(), "outcome" => outcome)
        .increment(n);
}

/// Describes every metric (its help text and unit) to the installed
/// recorder: the exporter prints them as `# HELP` (and `# UNIT` where it
/// does). Called as each cache, breaker and watchdog is built, so a
/// recorder installed before them gets them; call it after installing one
/// later.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        WATCHDOG_KEYS_EXPIRED_TOTAL,
        Unit::Count,
        "Keys without TTL a watchdog expiry policy gave one (mode applied), or would have (dry_run), by pattern."
    );
    describe_counter!(
        WATCHDOG_WEBHOOK_TOTAL,
        Unit::Count,
        "Watchdog alerts delivered to a webhook (sent), attempts to retry (retried), alerts given up (dropped)."
    );
    describe_counter!(
        BREAKER_CALLS_TOTAL,
        Unit::Count,
        "Calls through a circuit breaker, by outcome (success, failure, rejected, ignored)."
    );
    describe_counter!(
        BREAKER_SLOW_CALLS_TOTAL,
        Unit::Count,
        "Calls through a circuit breaker slower than its slow-call threshold."
    );
    describe_counter!(
        BREAKER_TRANSITIONS_TOTAL,
        Unit::Count,
        "Circuit breaker state changes, by from, to and reason."
    );
    describe_gauge!(
        BREAKER_STATE,
        Unit::Count,
        "Circuits of a breaker name in each state (closed, open, half_open)."
    );
    describe_histogram!(
        BREAKER_CALL_DURATION_SECONDS,
        Unit::Seconds,
        "Durations of calls through a circuit breaker that times its calls."
    );
    describe_counter!(
        CACHE_FAIL_OPEN_TOTAL,
        Unit::Count,
        "Cache calls answered without Redis (a miss or a skipped write), by op and reason."
    );
    describe_counter!(
        CACHE_READS_TOTAL,
        Unit::Count,
        "Cache reads by outcome (hit, miss; with a near cache also l1_hit and stale)."
    );
    describe_counter!(
        CACHE_TTL_CAPPED_TOTAL,
        Unit::Count,
        "Writes whose TTL was over the cache's max_ttl, cut to it."
    );
    describe_histogram!(
        CACHE_CALL_DURATION_SECONDS,
        Unit::Seconds,
        "Durations of cache calls, by op, failures answered as misses included."
    );
    describe_counter!(HTTP_RESPONSES_TOTAL, Unit::Count, "Responses through an HTTP or gRPC response cache, by layer, outcome (hit, stale, revalidated, miss, bypass) and a bypass's reason.");
    describe_counter!(
        HTTP_STORES_TOTAL,
        Unit::Count,
        "Responses an HTTP or gRPC response cache decided to store."
    );
    describe_counter!(
        HTTP_PURGES_TOTAL,
        Unit::Count,
        "Purges of stored HTTP responses, by trigger and result."
    );
    describe_counter!(
        REDIS_CONNECT_ERRORS_TOTAL,
        Unit::Count,
        "Connections to Redis that failed to open, by addr and reason."
    );
    describe_gauge!(
        REDIS_UP,
        Unit::Count,
        "1 while the watchdog reaches Redis, 0 while it does not."
    );
    describe_gauge!(REDIS_USED_MEMORY_BYTES, Unit::Bytes, "Redis used_memory.");
    describe_gauge!(
        REDIS_MEMORY_RATIO,
        "Redis used_memory over its limit (maxmemory, or the budget given)."
    );
    describe_gauge!(
        REDIS_MEMORY_GROWTH_BYTES_PER_SECOND,
        "Fitted growth of Redis used_memory, in bytes per second."
    );
    describe_gauge!(
        REDIS_SECONDS_TO_FULL,
        Unit::Seconds,
        "Forecast time until Redis reaches its memory limit (+Inf when not growing)."
    );
    describe_gauge!(REDIS_NO_TTL_KEY_RATIO, "Share of Redis keys without a TTL.");
    describe_counter!(
        REDIS_EVICTED_KEYS_TOTAL,
        Unit::Count,
        "Keys Redis evicted, as seen by the watchdog."
    );
    describe_counter!(
        REDIS_EXPIRED_KEYS_TOTAL,
        Unit::Count,
        "Keys Redis expired, as seen by the watchdog."
    );
}

/// Counter of purges of HTTP responses (every stored variant of one URL),
/// by `cache`, `trigger` (`purge`: asked for; `unsafe_method`: after a
/// `POST`, `PUT`, `DELETE`… answered without error) and `result`
/// (`done`, or `skipped`: not written, the old responses may still be
/// served).
pub const HTTP_PURGES_TOTAL: &str = "fusebox_http_purges_total";

/// Counter of responses through an HTTP or gRPC response cache, by
/// `cache`, `layer` (`http`, `grpc`) and `outcome` (`hit`; `stale`; `revalidated`: stored, confirmed by a `304`; `miss`:
/// from the handler; `bypass`: the cache could not answer it, with a
/// `reason`: `method`, not a `GET` or `HEAD`; `request`, a request it may
/// not answer from a shared cache: credentials, a cookie, `no-store`, no
/// host).
pub const HTTP_RESPONSES_TOTAL: &str = "fusebox_http_responses_total";

/// Counter of responses an HTTP or gRPC response cache decided to store,
/// by `cache` (a store Redis did not take is counted in
/// [`CACHE_FAIL_OPEN_TOTAL`] with `op="set"`).
pub const HTTP_STORES_TOTAL: &str = "fusebox_http_stores_total";

#[cfg(feature = "http")]
pub(crate) fn http_response(
    name: &Arc<str>,
    layer: &'static str,
    outcome: &'static str,
    reason: &'static str,
) {
    match reason {
        "" => counter!(HTTP_RESPONSES_TOTAL, "cache" => name.clone(), "layer" => layer, "outcome" => outcome).increment(1),
        _ => counter!(HTTP_RESPONSES_TOTAL, "cache" => name.clone(), "layer" => layer, "outcome" => outcome, "reason" => reason).increment(1),
    }
}

#[cfg(feature = "http")]
pub(crate) fn http_store(name: &Arc<str>) {
    counter!(HTTP_STORES_TOTAL, "cache" => name.clone()).increment(1);
}

#[cfg(feature = "http")]
pub(crate) fn http_purge(name: &Arc<str>, trigger: &'static str, done: bool) {
    let result = if done { "done" } else { "skipped" };
    counter!(HTTP_PURGES_TOTAL, "cache" => name.clone(), "trigger" => trigger, "result" => result)
        .increment(1);
}

/// Counter of pooled connections that failed to open, or were found
/// broken at checkout, by `addr` and `reason`.
pub const REDIS_CONNECT_ERRORS_TOTAL: &str = "fusebox_redis_connect_errors_total";

pub(crate) fn cache_fail_open(name: &Arc<str>, op: &'static str, reason: &'static str) {
    counter!(CACHE_FAIL_OPEN_TOTAL, "cache" => name.clone(), "op" => op, "reason" => reason)
        .increment(1);
}

pub(crate) fn redis_connect_error(addr: &str, reason: &'static str) {
    tracing::debug!(target: "fusebox::redis", addr, reason, "redis connect failed");
    counter!(REDIS_CONNECT_ERRORS_TOTAL, "addr" => addr.to_owned(), "reason" => reason)
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
