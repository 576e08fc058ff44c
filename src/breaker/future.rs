//! The response future of [`CircuitBreaker`](super::CircuitBreaker).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use super::classify::{Classify, Outcome};
use super::core::{epoch_of, Core, LOCKED};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::error::{BreakerOpen, Error};

pin_project! {
    /// The response future of [`CircuitBreaker`](super::CircuitBreaker):
    /// the inner future, recording its outcome when it completes, or an
    /// already-failed rejection.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        // The hot path: a closed-state call whose success needs no clock.
        Closed { #[pin] future: F, core: &'static Core, word: u64, classifier: C },
        // A probe, or a call timed for slow-call detection: boxed, to keep
        // the hot variant's future small.
        Tracked { #[pin] future: F, recorder: Option<Box<Recorder<C>>> },
        Passthrough { #[pin] future: F },
        Rejected { error: BreakerOpen },
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn closed(future: F, core: &'static Core, word: u64, classifier: C) -> Self {
        let kind = Kind::Closed {
            future,
            core,
            word,
            classifier,
        };
        ResponseFuture { kind }
    }

    pub(crate) fn tracked(future: F, recorder: Recorder<C>) -> Self {
        let recorder = Some(Box::new(recorder));
        ResponseFuture {
            kind: Kind::Tracked { future, recorder },
        }
    }

    pub(crate) fn passthrough(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn rejected(error: BreakerOpen) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    type Output = Result<T, Error<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        if let KindProj::Closed {
            future,
            core,
            word,
            classifier,
        } = kind.as_mut().project()
        {
            let value = match ready!(future.poll(cx)) {
                Ok(value) => value,
                Err(error) => {
                    return Poll::Ready(Err(closed_error(core, *word, classifier, error)))
                }
            };
            // Closed futures are only made for words without LOCKED or
            // CLOCKED: a success needs no lock and no clock.
            match classifier.classify(Ok(&value)) {
                Outcome::Success => core.record_fast_success(*word),
                outcome => closed_outcome(core, *word, outcome),
            }
            return Poll::Ready(Ok(value));
        }
        if let KindProj::Rejected { error } = kind.as_mut().project() {
            return Poll::Ready(Err(Error::Open(*error)));
        }
        poll_other(kind, cx)
    }
}

/// Records a closed call's error.
#[cold]
#[inline(never)]
fn closed_error<T, E, C>(core: &'static Core, word: u64, classifier: &C, error: E) -> Error<E>
where
    C: Classify<T, E>,
{
    closed_outcome(core, word, classifier.classify(Err(&error)));
    Error::Inner(error)
}

/// Records a closed call's outcome other than a fast success.
#[cold]
#[inline(never)]
fn closed_outcome(core: &'static Core, word: u64, outcome: Outcome) {
    match outcome {
        Outcome::Ignored => core.record_ignored(),
        Outcome::Success if word & LOCKED == 0 => core.record_fast_success(word),
        outcome => core.record_call(epoch_of(word), outcome, false),
    }
}

/// Every kind of response but the closed-state hot path.
#[cold]
#[inline(never)]
fn poll_other<F, C, T, E>(
    kind: Pin<&mut Kind<F, C>>,
    cx: &mut Context<'_>,
) -> Poll<Result<T, Error<E>>>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    match kind.project() {
        KindProj::Closed { .. } => unreachable!("handled inline"),
        KindProj::Tracked { future, recorder } => {
            let result = ready!(future.poll(cx));
            if let Some(recorder) = recorder.take() {
                recorder.finish(result.as_ref());
            }
            Poll::Ready(result.map_err(Error::Inner))
        }
        KindProj::Passthrough { future } => future.poll(cx).map_err(Error::Inner),
        KindProj::Rejected { .. } => unreachable!("handled inline"),
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Closed { .. } => "closed",
            Kind::Tracked { .. } => "tracked",
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

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A state word carrying this probe's epoch, with the flags of `word`.
    pub(crate) fn word_for(&self, word: u64) -> u64 {
        (self.epoch << super::core::EPOCH_SHIFT) | (word & 0xff)
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

/// Records the outcome of a probe or of a call timed for slow-call
/// detection.
#[derive(Debug)]
pub(crate) struct Recorder<C> {
    core: &'static Core,
    /// The state word the call was admitted under.
    word: u64,
    classifier: C,
    /// When the call started, if slow calls are detected.
    start: Option<Instant>,
    permit: Option<Permit>,
}

impl<C> Recorder<C> {
    pub(crate) fn new(
        core: &'static Core,
        word: u64,
        classifier: C,
        start: Option<Instant>,
        permit: Option<Permit>,
    ) -> Self {
        Recorder {
            core,
            word,
            classifier,
            start,
            permit,
        }
    }

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
