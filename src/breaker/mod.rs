//! A circuit breaker for any [`tower::Service`](https://docs.rs/tower/0.5/tower/trait.Service.html).
//!
//! ```
//! use std::time::Duration;
//! use fusebox::breaker::{BreakerOpen, CircuitBreakerLayer, Config, State};
//! use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = CircuitBreakerLayer::new(
//!     Config::builder()
//!         .name("backend")
//!         .consecutive_failures(3)
//!         .open_for(Duration::from_secs(10))
//!         .build()?,
//! );
//! let breaker = layer.breaker().clone();
//! let backend = service_fn(|fail: bool| async move {
//!     if fail { Err("backend is down") } else { Ok("pong") }
//! });
//! let mut svc = layer.layer(backend);
//!
//! assert_eq!(svc.ready().await?.call(false).await?, "pong");
//! for _ in 0..3 {
//!     assert!(svc.ready().await?.call(true).await.is_err());
//! }
//! assert_eq!(breaker.state(), State::Open);
//!
//! // Rejected at once, without reaching the backend, with a typed error
//! // (no allocation): `Error::Open`, or `Error::Inner` for the backend's.
//! let err = svc.ready().await?.call(false).await.unwrap_err();
//! let open = err.as_open().expect("rejected by the breaker");
//! assert!(open.retry_after().unwrap() <= Duration::from_secs(10));
//!
//! // Boxed (as by `?` in a tower stack), it is the `BreakerOpen` itself.
//! let boxed: BoxError = err.into();
//! assert!(boxed.is::<BreakerOpen>());
//! # Ok(())
//! # }
//! ```
//!
//! # The pieces
//!
//! The names follow tower's split between a layer, its service and the state
//! they share:
//!
//! * [`Breaker`] is **the circuit**: its state, its window of outcomes, its
//!   metrics. It is a cheap handle (an `Arc`); clone it to read the state,
//!   [`subscribe`](Breaker::subscribe) to transitions, or force it open
//!   from an admin endpoint. It never wraps a service.
//! * [`CircuitBreaker<S>`](CircuitBreaker) is **the tower `Service`** that
//!   asks a `Breaker` before each call to `S` and tells it each outcome.
//!   Any number of them (clones, or one per route) can share one circuit.
//! * [`CircuitBreakerLayer`] makes `CircuitBreaker`s over one `Breaker`;
//!   [`KeyedBreakerLayer`] keeps one `Breaker` per key (per host, per
//!   route) in a bounded registry.
//!
//! # States
//!
//! ```text
//!            failure rate, slow-call rate or consecutive failures
//!   Closed ─────────────────────────────────────────────────────▶ Open
//!     ▲                                                         │  ▲
//!     │ enough probes succeed                 open period ends  │  │ a probe fails, or the
//!     │                                                         ▼  │ half-open period ends
//!     └─────────────────────────────────────────────────────── HalfOpen
//!
//!   ForcedOpen, Disabled: entered and left only by hand (Breaker).
//! ```
//!
//! * **Closed**: calls pass. A trip is evaluated each time a failure or slow
//!   call is recorded (a success never trips the breaker): the window must
//!   hold [`minimum_calls`](ConfigBuilder::minimum_calls), then the failure
//!   rate or the slow-call rate must reach its threshold; or the
//!   [consecutive-failure](ConfigBuilder::consecutive_failures) count must.
//! * **Open**: calls are rejected with [`Error::Open`] for the open duration,
//!   which grows on repeated trips (back-off, capped, jittered).
//! * **HalfOpen**: up to [`half_open_probes`](ConfigBuilder::half_open_probes)
//!   calls run at once; a failure re-opens, enough successes close.
//!
//! Outcomes of calls admitted before a transition are discarded after it, so
//! a slow call from the closed period never counts as a probe.
//!
//! # Cost
//!
//! In the closed state with a count window and no slow-call detection (the
//! default), a call costs one atomic load to admit, one more when it
//! completes (to check that the circuit has not changed since), and one
//! increment of a counter owned by the calling thread: no lock, no
//! allocation, no clock read, no write to memory another thread writes.
//! Rejections read no clock and allocate nothing. Failures, probes,
//! slow-call detection and time windows take a short lock; probes and
//! slow-call detection also allocate a small record per call. The figures
//! are in the README.
//!
//! # Metrics and events
//!
//! See [`telemetry`](crate::telemetry) for the metric names; subscribe to
//! transitions with [`Breaker::subscribe`]. The per-thread counters are
//! published every second by a `fusebox-metrics` thread, which runs only
//! while some breaker exists, as well as on every transition and when a
//! breaker is dropped.

mod classify;
mod config;
mod core;
mod error;
pub mod future;
mod handle;
mod keyed;
mod layer;
mod machine;
#[cfg(all(test, fusebox_loom))]
mod models;
mod service;
mod state;
mod window;

pub use classify::{Classify, DefaultClassifier, Outcome};
pub use config::{Config, ConfigBuilder, Window};
pub use error::{BreakerOpen, Error};
pub use handle::Breaker;
pub use keyed::{KeyedBreaker, KeyedBreakerLayer};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::{Cause, Snapshot, State, Transition};

/// Publishes every live breaker's call counts to `metrics` now, rather than
/// at the next one-second tick. Call it in a `/metrics` handler before
/// rendering, so a scrape counts every call made before it:
///
/// ```
/// # fn render() -> String { String::new() }
/// async fn metrics() -> String {
///     fusebox::breaker::publish_counts();
///     render() // e.g. metrics_exporter_prometheus::PrometheusHandle::render
/// }
/// ```
///
/// Costs a lock and a sum over each breaker's per-thread counts: cheap at
/// scrape rates, not meant for every call.
pub fn publish_counts() {
    self::core::publish_all();
}
