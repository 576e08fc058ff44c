//! The response future of [`CircuitBreaker`](super::CircuitBreaker).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::BoxError;

use super::classify::{Classify, Outcome};
use super::core::{epoch_of, Core, CLOCKED, LOCKED};
use super::error::BreakerOpen;

pin_project! {
    /// The response future of [`CircuitBreaker`](super::CircuitBreaker):
    /// the inner future, recording its outcome when it completes, or an
    /// already-failed rejection.
    #[project = Proj]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Admitted { #[pin] future: F, recorder: Option<Recorder<C>> },
        Passthrough { #[pin] future: F },
        Rejected { error: Option<BreakerOpen> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn admitted(future: F, recorder: Recorder<C>) -> Self {
        let recorder = Some(recorder);
        ResponseFuture {
            kind: Kind::Admitted { future, recorder },
        }
    }

    pub(crate) fn passthrough(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn rejected(error: BreakerOpen) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Admitted { future, recorder } => {
                let result = ready!(future.poll(cx));
                if let Some(recorder) = recorder.take() {
                    recorder.finish(result.as_ref());
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Passthrough { future } => future.poll(cx).map_err(Into::into),
            KindProj::Rejected { error } => Poll::Ready(Err(match error.take() {
                Some(error) => error.into(),
                None => "circuit breaker future polled after completion".into(),
            })),
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Admitted { .. } => "admitted",
            Kind::Passthrough { .. } => "passthrough",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

/// A half-open probe slot, freed on drop if the probe ends without an
/// outcome (cancelled, or its service dropped before calling).
#[derive(Debug)]
pub(crate) struct Permit {
    core: &'static Core,
    epoch: u64,
}

impl Permit {
    pub(crate) fn new(core: &'static Core, epoch: u64) -> Self {
        Permit { core, epoch }
    }

    fn finish(self, outcome: Outcome, slow: bool) {
        let (core, epoch) = (self.core, self.epoch);
        std::mem::forget(self);
        core.record_probe(epoch, outcome, slow);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.core.release_probe(self.epoch);
    }
}

/// Records the outcome of one admitted call.
#[derive(Debug)]
pub(crate) struct Recorder<C> {
    pub(crate) core: &'static Core,
    /// The state word the call was admitted under.
    pub(crate) word: u64,
    pub(crate) classifier: C,
    /// When the call started, if slow calls are detected.
    pub(crate) start: Option<Instant>,
    pub(crate) permit: Option<Permit>,
}

impl<C> Recorder<C> {
    pub(crate) fn new(
        core: &'static Core,
        word: u64,
        classifier: C,
        permit: Option<Permit>,
    ) -> Self {
        let start = (word & CLOCKED != 0).then(Instant::now);
        Recorder {
            core,
            word,
            classifier,
            start,
            permit,
        }
    }

    #[inline]
    pub(crate) fn finish<T, E>(self, result: Result<&T, &E>)
    where
        C: Classify<T, E>,
    {
        let outcome = self.classifier.classify(result);
        let slow = match self.start {
            Some(start) => start.elapsed() >= self.core.slow_threshold(),
            None => false,
        };
        match (self.permit, outcome) {
            (Some(permit), _) => permit.finish(outcome, slow),
            (None, Outcome::Success) if !slow && self.word & LOCKED == 0 => {
                self.core.record_fast_success(self.word)
            }
            (None, Outcome::Ignored) => self.core.record_ignored(),
            (None, _) => self.core.record_call(epoch_of(self.word), outcome, slow),
        }
    }
}
