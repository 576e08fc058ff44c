//! A Redis memory watchdog: usage levels, a growth forecast with a leeway
//! alert, dangerous settings, and the key prefixes that hold memory without
//! a TTL.
//!
//! The outage this exists for grew for weeks in plain sight: memory rose a
//! little every day because jobs were written without expiry, and the first
//! alert came from customers after Redis was full. The watchdog polls
//! `INFO memory`, `INFO keyspace` and `INFO stats` on a connection of its
//! own (never the request pool) with its own timeout, and:
//!
//! * raises a usage alert as `used_memory / maxmemory` crosses each level
//!   (default 20 %, 50 %, 90 %), once on the way up, cleared with hysteresis
//!   on the way down;
//! * fits the growth rate over a horizon (robust to spikes and to the
//!   sawtooth of expiring keys: the median of pairwise slopes), projects the time until
//!   memory is full, and raises a **leeway alert** when it is under the
//!   budget (default 48 h);
//! * warns, at start and in every report, about `maxmemory 0` (no limit;
//!   set [`memory_budget`](WatchdogBuilder::memory_budget) to forecast
//!   against) and about `noeviction` or `volatile-*` while most keys have no
//!   TTL;
//! * samples keys with a bounded, paced `SCAN` and names the patterns that
//!   hold most no-TTL bytes;
//! * holds keys any client wrote to an expiry policy
//!   ([`expire`](WatchdogBuilder::expire)): a key matching a policy's
//!   pattern that has no TTL is given the policy's, as the `SCAN` meets it
//!   (`EXPIRE … NX`); counted by pattern, with a dry run;
//! * publishes `metrics` gauges, a `tracing` event per alert and clear, a
//!   subscription, and a [`Report`] for health endpoints. An alert makes the
//!   service [`Status::Degraded`], never not-ready.
//!
//! Over a Redis Cluster ([`redis_cluster`](WatchdogBuilder::redis_cluster))
//! it watches every primary, each with its own connection, forecast and
//! sample: a cluster is full when one shard is, so the node that will fill
//! first decides the [`Report`] and is named in it ([`Report::node`]).
//!
//! Dropping the [`Watchdog`] stops it. It survives Redis being down, and
//! says so ([`Status::Down`], [`Alert::Down`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use fusebox::watchdog::Watchdog;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let watchdog = Watchdog::builder()
//!     .interval(Duration::from_secs(10))
//!     .leeway(Duration::from_secs(48 * 3600))
//!     .redis_url("redis://127.0.0.1:6379").build()?;
//! let mut alerts = watchdog.subscribe();
//! while let Ok(alert) = alerts.recv().await {
//!     eprintln!("{alert}");
//! }
//! # Ok(()) }
//! ```

mod alert;
mod chart;
mod cluster;
mod config;
mod expiry;
mod forecast;
mod guard;
mod info;
mod levels;
mod report;
mod sampler;
mod task;
#[cfg(feature = "webhook")]
mod webhook;
#[cfg(feature = "webhook")]
pub use webhook::Webhook;

/// The webhooks alerts are posted to (none without the feature).
#[cfg(feature = "webhook")]
type Hooks = Vec<Webhook>;
#[cfg(not(feature = "webhook"))]
type Hooks = Vec<std::convert::Infallible>;

/// Starts delivering `alerts` to `hooks`.
#[cfg(feature = "webhook")]
fn deliver(hooks: &Hooks, name: &str, alerts: &tokio::sync::broadcast::Sender<Alert>) {
    webhook::spawn(hooks, name, alerts);
}
#[cfg(not(feature = "webhook"))]
fn deliver(_: &Hooks, _: &str, _: &tokio::sync::broadcast::Sender<Alert>) {}

pub(crate) use forecast::Forecaster;
pub use forecast::Growth;
pub use info::{parse, Info, InfoError, Keyspace, Policy};
pub(crate) use levels::Levels;
pub use sampler::PrefixShare;

pub use alert::{Alert, Warning, POLICY_QUIET_POLLS};
pub use chart::{Chart, Panel};
pub use config::WatchdogBuilder;
pub(crate) use config::WatchdogConfig;
pub use expiry::PolicyCount;
pub use guard::{ExpiryGuard, ExpiryGuardBuilder};
pub use report::{Report, Severity, Status};
pub use task::Watchdog;

use crate::error::ConfigError;
use sampler::Sampler;
