//! A redis-server of each test's own (from `fusebox-testkit`, shared with
//! the examples and benches), and the metrics the cache emits.
#![allow(dead_code)] // shared by several test binaries, each using part of it

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

#[allow(unused_imports)] // each test binary uses part of it
pub(crate) use fusebox_testkit::{free_port, RedisServer};

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("no other recorder in this test binary");
        snapshotter
    })
}

/// Installs the test binary's metrics recorder (call before building).
pub(crate) fn metrics() {
    snapshotter();
}

/// Counter totals and the last gauge values so far: a snapshot drains the
/// recorder (counters and gauges read 0 after it), so they are kept here.
#[derive(Default)]
struct Seen {
    counters: Vec<(metrics::Key, u64)>,
    /// The last value other than 0 each gauge was read at.
    gauges: Vec<(metrics::Key, f64)>,
}

fn seen() -> std::sync::MutexGuard<'static, Seen> {
    static SEEN: Mutex<Seen> = Mutex::new(Seen {
        counters: Vec::new(),
        gauges: Vec::new(),
    });
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let key = key.key().clone();
        match value {
            DebugValue::Counter(n) => match seen.counters.iter_mut().find(|(k, _)| *k == key) {
                Some((_, total)) => *total += n,
                None => seen.counters.push((key, n)),
            },
            DebugValue::Gauge(v) if v.into_inner() != 0.0 => {
                let v = v.into_inner();
                match seen.gauges.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, last)) => *last = v,
                    None => seen.gauges.push((key, v)),
                }
            }
            _ => {}
        }
    }
    seen
}

fn matches(key: &metrics::Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

/// The sum of counter `name` over every label set containing all of
/// `labels`.
pub(crate) fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    seen()
        .counters
        .iter()
        .filter(|(key, _)| matches(key, name, labels))
        .map(|(_, n)| n)
        .sum()
}

/// The last value (other than 0) of gauge `name` with `labels`, if any.
pub(crate) fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    seen()
        .gauges
        .iter()
        .find(|(key, _)| matches(key, name, labels))
        .map(|(_, v)| *v)
}

/// A Redis configuration whose deadlines fit a loaded 2-core machine, for
/// tests where what is tested is which calls fail, not how fast.
pub(crate) fn roomy(url: &str) -> fusebox::backend::RedisConfig {
    fusebox::backend::RedisConfig::builder(url)
        .connect_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(300))
        .build()
        .expect("a valid configuration")
}

/// Runs `f` until it returns true, for at most `limit`; returns whether it
/// did.
pub(crate) async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Every metric key seen so far, names and labels, as text.
pub(crate) fn metric_keys() -> Vec<String> {
    let seen = seen();
    let counters = seen.counters.iter().map(|(k, _)| k);
    let gauges = seen.gauges.iter().map(|(k, _)| k);
    counters.chain(gauges).map(|k| format!("{k:?}")).collect()
}

/// How many times `redis` ran `command` (lower case), from `INFO
/// commandstats`.
pub(crate) fn calls(redis: &RedisServer, command: &str) -> u64 {
    let info = redis.cmd(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
