//! Cores are never freed: a dropped breaker's core goes back to a pool for
//! the next breaker, with its epoch bumped so that stragglers of the old
//! owner are discarded.

use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::Mutex;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::publish::{register, PUBLISHER};
use super::{
    epoch_of, lock, nanos, Core, Head, Live, Stripe, Totals, CLOCKED, EPOCH_SHIFT, LOCKED, SHADOW,
};
use crate::breaker::config::Config;
use crate::breaker::machine::Machine;
use crate::breaker::state::{Ctx, State};
use crate::telemetry;

/// Cores whose breaker was dropped, ready for the next one.
static POOL: Mutex<Vec<&'static Core>> = Mutex::new(Vec::new());

impl Core {
    /// Takes a core from the pool (or allocates one) for a new breaker.
    pub(crate) fn acquire(config: Config) -> &'static Core {
        let now = Instant::now();
        // Only a core whose base is not after now: with real time that is
        // every core; a paused test clock can be behind an earlier one's.
        // Under the model checks, a core per model run (loom's atomics
        // live for one run).
        let pooled = (!cfg!(fusebox_loom)).then(|| {
            let mut pool = lock(&POOL);
            let found = pool.iter().rposition(|core| core.base <= now);
            found.map(|i| pool.swap_remove(i))
        });
        let pooled = pooled.flatten();
        let core: &'static Core = pooled.unwrap_or_else(|| {
            Box::leak(Box::new(Core {
                head: Head::default(),
                base: now,
                stripes: std::array::from_fn(|_| Stripe::default()),
                live: crate::sync::Mutex::new(None),
                latency: std::sync::RwLock::new(None),
            }))
        });
        let mut live = core.live();
        let totals = core.totals();
        let epoch = epoch_of(core.head.word.load(Relaxed)) + 1;
        let mut flags = 0;
        if config.slow.is_some() || config.record_latency {
            flags |= CLOCKED;
        }
        if matches!(config.window, crate::breaker::Window::Time { .. }) {
            flags |= LOCKED;
        }
        if config.shadow {
            flags |= SHADOW;
        }
        let slow = config.slow.map_or(u64::MAX, |s| nanos(s.threshold));
        core.head.slow_nanos.store(slow, Relaxed);
        core.head.open_until.store(0, Relaxed);
        let name: std::sync::Arc<str> = config.name.as_str().into();
        telemetry::describe();
        telemetry::breaker_entered(&name, State::Closed.as_str());
        *core
            .latency
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (flags & CLOCKED != 0).then(|| telemetry::breaker_latency(&name));
        let machine = Machine::new(
            config,
            epoch,
            Ctx {
                now,
                fast: totals.successes,
            },
        );
        *live = Some(Live {
            machine,
            name,
            events: broadcast::channel(64).0,
            timer: None,
            metrics_base: totals,
            locked: Totals::default(),
            published: Totals::default(),
        });
        core.head
            .word
            .store(flags | (epoch << EPOCH_SHIFT), Release);
        drop(live);
        if !cfg!(fusebox_loom) {
            // No publisher thread under the model checks.
            register(core);
        }
        core
    }

    /// Returns the core to the pool when its breaker is dropped.
    pub(crate) fn release(&'static self) {
        // The last totals of this breaker, then no more.
        self.publish();
        lock(&PUBLISHER).cores.retain(|c| !std::ptr::eq(*c, self));
        let mut live = self.live();
        if let Some(l) = live.as_mut() {
            if let Some(timer) = l.timer.take() {
                timer.abort();
            }
            telemetry::breaker_left(&l.name, l.machine.state().as_str());
        }
        *live = None;
        *self
            .latency
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let epoch = epoch_of(self.head.word.load(Relaxed)) + 1;
        self.head
            .word
            .store((epoch << EPOCH_SHIFT) | State::Disabled.code(), Release);
        drop(live);
        if !cfg!(fusebox_loom) {
            lock(&POOL).push(self);
        }
    }
}
