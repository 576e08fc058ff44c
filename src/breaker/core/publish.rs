//! Publishing each circuit's counts to `metrics`: on every transition, when
//! a breaker is dropped, and every second from a thread of its own.

use std::sync::Arc;

use metrics::counter;

use super::*;

pub(super) static PUBLISHER: Mutex<Publisher> = Mutex::new(Publisher {
    cores: Vec::new(),
    running: false,
});

pub(super) struct Publisher {
    pub(super) cores: Vec<&'static Core>,
    /// Whether the publisher thread is running. It stops once no breaker
    /// lives, and is started again by the next one.
    running: bool,
}

impl Core {
    /// Adds to `metrics` the outcomes counted since the last publish.
    pub(super) fn publish(&self) {
        let totals = self.totals();
        let (name, delta) = {
            let mut live = self.live();
            let Some(live) = live.as_mut() else { return };
            let base = live.metrics_base;
            let now = Totals {
                successes: totals.successes - base.successes + live.locked.successes,
                rejections: totals.rejections - base.rejections + live.locked.rejections,
                ignored: totals.ignored - base.ignored + live.locked.ignored,
            };
            let last = live.published;
            if now == last {
                return;
            }
            live.published = now;
            // Computed under the lock, so two publishes never send the same
            // outcomes twice.
            let delta = Totals {
                successes: now.successes.saturating_sub(last.successes),
                rejections: now.rejections.saturating_sub(last.rejections),
                ignored: now.ignored.saturating_sub(last.ignored),
            };
            (live.name.clone(), delta)
        };
        telemetry::breaker_counts(&name, delta.successes, delta.rejections, delta.ignored);
    }
}

/// Publishes every live circuit's totals now (see
/// [`publish_counts`](crate::breaker::publish_counts)).
pub(crate) fn publish_all() {
    let cores = lock(&PUBLISHER).cores.clone();
    for core in cores {
        core.publish();
    }
}

/// Adds a core to those the publisher thread publishes, starting the thread
/// if it is not running. Without a thread (the platform has none), totals
/// are still published on every transition and when a breaker is dropped.
pub(super) fn register(core: &'static Core) {
    let mut publisher = lock(&PUBLISHER);
    publisher.cores.push(core);
    if !publisher.running {
        publisher.running = std::thread::Builder::new()
            .name("fusebox-metrics".into())
            .spawn(publish_loop)
            .is_ok();
    }
}

/// Publishes every live circuit's totals every `PUBLISH_PERIOD`, until no
/// breaker lives.
fn publish_loop() {
    let mut cores = Vec::new();
    loop {
        std::thread::sleep(PUBLISH_PERIOD);
        {
            let mut publisher = lock(&PUBLISHER);
            if publisher.cores.is_empty() {
                publisher.running = false;
                return;
            }
            cores.clone_from(&publisher.cores);
        }
        for core in &cores {
            core.publish();
        }
    }
}

/// Logs, counts and publishes a transition of the circuit `name`.
pub(super) fn transition(name: &Arc<str>, t: &Transition) {
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
    counter!(telemetry::BREAKER_TRANSITIONS_TOTAL, "breaker" => name.clone(), "from" => from, "to" => to, "reason" => reason)
        .increment(1);
    telemetry::breaker_left(name, t.from.as_str());
    telemetry::breaker_entered(name, t.to.as_str());
}
