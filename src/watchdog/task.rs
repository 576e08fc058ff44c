//! The running watchdog: its handle, and the task that polls Redis and
//! assesses what it reads.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use redis::aio::MultiplexedConnection;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::*;

pub(super) struct Shared {
    pub(super) report: Mutex<Report>,
    pub(super) alerts: broadcast::Sender<Alert>,
    /// Set while writes should be shed (opt-in).
    pub(super) pressure: Arc<AtomicBool>,
}

/// A running watchdog. Cheap to clone; the task stops when the last clone
/// is dropped.
#[derive(Clone)]
pub struct Watchdog {
    pub(super) shared: Arc<Shared>,
    pub(super) _task: Arc<AbortOnDrop>,
}

pub(super) struct AbortOnDrop(tokio::task::AbortHandle);

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

    pub(crate) fn spawn(mut config: WatchdogConfig, target: crate::backend::Target) -> Self {
        crate::telemetry::describe();
        let name = config.name.clone();
        let hooks = std::mem::take(&mut config.webhooks);
        Self::start(&name, &hooks, move |shared| run(config, target, shared))
    }

    /// Spawns `task` over a new report and alert channel; the task stops
    /// when the last handle is dropped (and should return once it cannot
    /// upgrade its `Weak`).
    pub(super) fn start<F>(
        name: &str,
        hooks: &Hooks,
        task: impl FnOnce(std::sync::Weak<Shared>) -> F,
    ) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            report: Mutex::new(Report::starting(name)),
            alerts: broadcast::channel(64).0,
            pressure: Arc::new(AtomicBool::new(false)),
        });
        // Subscribed before the first poll can alert.
        deliver(hooks, name, &shared.alerts);
        let task = tokio::spawn(task(Arc::downgrade(&shared)));
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
pub(super) struct State {
    pub(super) config: WatchdogConfig,
    pub(super) conn: Option<MultiplexedConnection>,
    pub(super) started: Instant,
    pub(super) forecaster: Forecaster,
    pub(super) levels: Levels,
    pub(super) sampler: Sampler,
    pub(super) expiry: super::expiry::Expiry,
    pub(super) previous: Option<Info>,
    pub(super) warned: Vec<Warning>,
    /// A cluster node's `cluster-require-full-coverage`, when known.
    full_coverage: Option<bool>,
    pub(super) up: Option<bool>,
}

impl State {
    fn new(config: WatchdogConfig) -> Self {
        State {
            forecaster: Forecaster::new(config.horizon, config.min_span),
            levels: Levels::new(&config.levels, config.hysteresis),
            sampler: Sampler::default(),
            expiry: super::expiry::Expiry::new(
                &config.name,
                config.expiry.clone(),
                config.expire_dry_run,
            ),
            conn: None,
            started: Instant::now(),
            previous: None,
            warned: Vec::new(),
            full_coverage: None,
            up: None,
            config,
        }
    }
}

async fn run(
    config: WatchdogConfig,
    target: crate::backend::Target,
    shared: std::sync::Weak<Shared>,
) {
    let mut state = State::new(config);
    let mut ticks = tokio::time::interval(state.config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        state.poll(&target, &shared).await;
    }
}

impl State {
    async fn poll(&mut self, target: &crate::backend::Target, shared: &Shared) {
        let text = match self.read_info(target).await {
            Ok(t) => t,
            Err(e) => {
                self.conn = None;
                let error = e.to_string();
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
                if let Err(e) = self
                    .sampler
                    .round(&mut conn, n, rate, t, &mut self.expiry)
                    .await
                {
                    tracing::debug!(target: "fusebox::watchdog", error = %crate::backend::RedisError::from(e), "no-TTL sampling round failed");
                }
                let tally = self.sampler.tally();
                let mut report = lock(&shared.report);
                report.no_ttl_prefixes = tally.top(5);
                report.keys_sampled = tally.sampled;
                report.expiry.clone_from(&self.expiry.counts);
                drop(report);
                for alert in self.expiry.alerts() {
                    emit(shared, &self.config.name, alert);
                }
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
        let warnings = super::alert::standing_warnings(
            &info,
            self.full_coverage,
            self.config.no_ttl_warning_share,
        );
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
        for w in &self.warned {
            let gone = !warnings
                .iter()
                .any(|k| std::mem::discriminant(k) == std::mem::discriminant(w));
            if gone {
                emit(shared, &name, Alert::WarningCleared(w.clone()));
            }
        }
        self.warned = warnings.clone();
        let shedding = match (self.config.shed_above, ratio) {
            (Some(level), Some(r)) => info.policy == Policy::NoEviction && r >= level,
            _ => false,
        };
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
        watchdog_figures(
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
        // After the report: whoever sees writes shed finds the report
        // saying so.
        shared.pressure.store(shedding, Relaxed);
        self.previous = Some(info);
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn emit(shared: &Shared, name: &str, alert: Alert) {
    match &alert {
        Alert::Usage { raised: false, .. }
        | Alert::Leeway { raised: false, .. }
        | Alert::Policy { raised: false, .. }
        | Alert::WarningCleared(_)
        | Alert::Up => {
            tracing::info!(target: "fusebox::watchdog", watchdog = name, "{alert}");
        }
        _ => tracing::warn!(target: "fusebox::watchdog", watchdog = name, "{alert}"),
    }
    let _ = shared.alerts.send(alert);
}

mod figures;
use figures::watchdog_figures;
mod io;
#[cfg(test)]
mod tests;
