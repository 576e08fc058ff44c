//! Fail open: every error from the cache below becomes a miss (reads) or a
//! skip (writes, deletes), counted and traced, never surfaced.
//!
//! [`FailOpen`] wraps any `Service<CacheRequest, Response = CacheResponse>`
//! whose error says why it failed ([`Fault`]): usually a
//! [`CircuitBreaker`](crate::breaker::CircuitBreaker) over a Redis backend.
//! Its error type is [`Infallible`].
//!
//! * A failed `Get` answers [`CacheResponse::Miss`]`(reason)`; a failed
//!   `GetMany` answers all-`None`; anything else [`CacheResponse::Skipped`].
//! * When Redis refuses writes while it may still serve reads, writes are
//!   shed locally for the [hold-down](FailOpenLayer::hold_down) period,
//!   counted with the reason of the refusal, while reads go on: after `OOM`
//!   the writes that may grow memory (`Set`, `SetIfAbsent`; deletes go on);
//!   after `READONLY`, `MISCONF` or a write pause (writes timing out while
//!   reads are answered), every change (writes, deletes, expiries). A probe
//!   write every 250 ms ends it once answered ([`crate::hold`]).
//! * Each fallback increments
//!   [`CACHE_FAIL_OPEN_TOTAL`](crate::telemetry::CACHE_FAIL_OPEN_TOTAL); a
//!   `WARN` event of target `fusebox::cache` summarises them at most once per
//!   second per layer, not once per call.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::hold::HoldDown;
use crate::request::{CacheRequest, CacheResponse, Fault, Reason};

/// Makes [`FailOpen`] services that share one OOM hold-down and one log
/// rate limit.
#[derive(Clone, Debug)]
pub(crate) struct FailOpenLayer {
    shared: Arc<Shared>,
}

impl FailOpenLayer {
    /// A layer whose metrics and logs carry `name` as the `cache` label,
    /// shedding writes for `hold_down` after Redis refused one.
    pub(crate) fn with_hold_down(name: impl Into<Arc<str>>, hold_down: Duration) -> Self {
        Self::build(name.into(), hold_down, None)
    }

    /// As [`with_hold_down`](Self::with_hold_down), also skipping writes
    /// (reason `memory_pressure`) while `pressure` is set — by a
    /// [`Watchdog`](crate::watchdog::Watchdog) configured to shed.
    pub(crate) fn with_pressure(
        name: impl Into<Arc<str>>,
        hold_down: Duration,
        pressure: Arc<AtomicBool>,
    ) -> Self {
        Self::build(name.into(), hold_down, Some(pressure))
    }

    fn build(name: Arc<str>, hold_down: Duration, pressure: Option<Arc<AtomicBool>>) -> Self {
        FailOpenLayer {
            shared: Arc::new(Shared {
                name,
                pressure,
                hold: HoldDown::new(hold_down),
                base: Instant::now(),
                next_log: AtomicU64::new(0),
                unlogged: AtomicU64::new(0),
            }),
        }
    }
}

impl<S: Clone> Layer<S> for FailOpenLayer {
    type Service = FailOpen<S>;

    fn layer(&self, inner: S) -> FailOpen<S> {
        FailOpen {
            fresh: inner.clone(),
            inner,
            shared: self.shared.clone(),
            not_ready: None,
        }
    }
}

struct Shared {
    name: Arc<str>,
    /// Set while writes should be shed before Redis fills (opt-in).
    pressure: Option<Arc<AtomicBool>>,
    /// Writes shed after Redis refused one.
    hold: HoldDown,
    /// Origin of the log clock.
    base: Instant,
    /// No summary is logged before this.
    next_log: AtomicU64,
    /// Fallbacks since the last summary.
    unlogged: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailOpen")
            .field("name", &self.name)
            .field("hold", &self.hold)
            .finish_non_exhaustive()
    }
}

const LOG_EVERY: Duration = Duration::from_secs(1);

impl Shared {
    fn nanos(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn under_pressure(&self) -> bool {
        self.pressure.as_ref().is_some_and(|p| p.load(Relaxed))
    }

    /// Why `request` is shed without asking Redis, if it is.
    fn shed(&self, request: &CacheRequest) -> Option<Reason> {
        if let Some(reason) = self.hold.shed(request) {
            return Some(reason);
        }
        (request.is_write() && self.under_pressure()).then_some(Reason::MemoryPressure)
    }

    /// Counts and logs a fallback. `answered` says whether the reason is
    /// Redis' own answer, for this whole cache (a refused write starts the
    /// hold-down), rather than this layer's (a write shed during the
    /// hold-down must not extend it) or one shard's, held down by the
    /// shard itself ([contained](Fault::contained)).
    fn fell_back(&self, op: &'static str, reason: Reason, answered: Option<Fallback>) {
        crate::telemetry::cache_fail_open(&self.name, op, reason.as_str());
        match answered {
            Some(call) if reason == Reason::WriteTimeout => self.hold.change_timed_out(call.sent),
            Some(_) => self.hold.answered(reason),
            None => {}
        }
        self.unlogged.fetch_add(1, Relaxed);
        let now = self.nanos();
        let next = self.next_log.load(Relaxed);
        if now >= next
            && self
                .next_log
                .compare_exchange(next, now.saturating_add(nanos(LOG_EVERY)), Relaxed, Relaxed)
                .is_ok()
        {
            let count = self.unlogged.swap(0, Relaxed);
            tracing::warn!(
                target: "fusebox::cache",
                cache = &*self.name,
                op,
                reason = reason.as_str(),
                count,
                "cache failing open: answering without it"
            );
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A cache service that never fails: see the [module docs](self).
pub(crate) struct FailOpen<S> {
    inner: S,
    /// A clone never polled: it replaces `inner` once `inner`'s readiness
    /// fails (tower's contract: such a service is not used again), and
    /// clones are made from it.
    fresh: S,
    shared: Arc<Shared>,
    /// The inner service's readiness failed: the next call falls back
    /// without calling it.
    not_ready: Option<Reason>,
}

impl<S: Clone> Clone for FailOpen<S> {
    fn clone(&self) -> Self {
        FailOpen {
            inner: self.fresh.clone(),
            fresh: self.fresh.clone(),
            shared: self.shared.clone(),
            not_ready: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for FailOpen<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailOpen")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<S> Service<CacheRequest> for FailOpen<S>
where
    S: Service<CacheRequest, Response = CacheResponse> + Clone,
    S::Error: Fault,
{
    type Response = CacheResponse;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => self.not_ready = None,
            Err(e) => {
                self.not_ready = Some(e.reason());
                self.inner = self.fresh.clone();
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CacheRequest) -> Self::Future {
        let op = request.op();
        let early = match self.not_ready.take() {
            Some(reason) => Some(reason),
            None => self.shared.shed(&request),
        };
        if let Some(reason) = early {
            self.shared.fell_back(op, reason, None);
            return ResponseFuture {
                state: State::Done {
                    response: Some(Fallback::of(&request).response(reason)),
                },
            };
        }
        let mut fallback = Fallback::of(&request);
        if request.is_mutation() {
            // When it was sent: a write timeout starts the hold-down only
            // if reads were answered while it waited.
            fallback.sent = self.shared.hold.nanos();
        }
        ResponseFuture {
            state: State::Call {
                future: self.inner.call(request),
                fallback,
                shared: self.shared.clone(),
            },
        }
    }
}

/// Enough of a request to answer it without the cache, and to tell the
/// hold-down what its answer says.
#[derive(Clone, Copy, Debug)]
struct Fallback {
    op: &'static str,
    /// For `GetMany`, how many keys.
    keys: Option<usize>,
    /// A change (`Some(grows)`: whether it may grow memory), or a read.
    change: Option<bool>,
    /// For a change, when it was sent (the hold-down's clock).
    sent: u64,
}

impl Fallback {
    fn of(request: &CacheRequest) -> Self {
        let keys = match request {
            CacheRequest::GetMany(keys) => Some(keys.len()),
            _ => None,
        };
        Fallback {
            op: request.op(),
            keys,
            change: request.is_mutation().then(|| request.is_write()),
            sent: 0,
        }
    }

    fn response(self, reason: Reason) -> CacheResponse {
        match (self.op, self.keys) {
            ("get", _) => CacheResponse::Miss(reason),
            (_, Some(n)) => CacheResponse::Values(vec![None; n]),
            _ => CacheResponse::Skipped(reason),
        }
    }
}

pin_project! {
    /// The response future of [`FailOpen`].
    pub(crate) struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Call { #[pin] future: F, fallback: Fallback, shared: Arc<Shared> },
        Done { response: Option<CacheResponse> },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fail_open::ResponseFuture")
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<CacheResponse, E>>,
    E: Fault,
{
    type Output = Result<CacheResponse, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Call {
                future,
                fallback,
                shared,
            } => Poll::Ready(Ok(match ready!(future.poll(cx)) {
                Ok(response) => {
                    match fallback.change {
                        Some(grows) => shared.hold.change_answered(grows),
                        None => shared.hold.read_answered(),
                    }
                    response
                }
                Err(e) => {
                    let reason = e.reason();
                    let answered = (!e.contained()).then_some(*fallback);
                    shared.fell_back(fallback.op, reason, answered);
                    fallback.response(reason)
                }
            })),
            StateProj::Done { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or(CacheResponse::Skipped(Reason::Other)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tower::{BoxError, ServiceExt};

    use super::*;

    /// A service that holds tower's contract against its caller: once its
    /// `poll_ready` has failed, any further use panics.
    #[derive(Clone)]
    struct Strict {
        fail_next: Arc<AtomicBool>,
        failed: bool,
    }

    impl Service<CacheRequest> for Strict {
        type Response = CacheResponse;
        type Error = BoxError;
        type Future = std::future::Ready<Result<CacheResponse, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            assert!(!self.failed, "polled again after its readiness failed");
            if self.fail_next.swap(false, Relaxed) {
                self.failed = true;
                return Poll::Ready(Err("not ready".into()));
            }
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: CacheRequest) -> Self::Future {
            assert!(!self.failed, "called after its readiness failed");
            std::future::ready(Ok(CacheResponse::Value(Some("v".into()))))
        }
    }

    #[tokio::test]
    async fn a_service_whose_readiness_failed_is_replaced_not_reused() {
        let fail_next = Arc::new(AtomicBool::new(true));
        let strict = Strict {
            fail_next: fail_next.clone(),
            failed: false,
        };
        let mut svc = FailOpenLayer::with_hold_down("strict", Duration::from_secs(5)).layer(strict);
        let get = || CacheRequest::Get("k".into());
        let first = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(first, CacheResponse::Miss(Reason::Other));
        let second = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(second, CacheResponse::Value(Some("v".into())));
    }
}
