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
        // The hot path: a closed-state call whose success needs no clock
        // nor lock. Also a call that records nothing (the breaker is
        // disabled), under the word `UNRECORDED`.
        Closed { #[pin] future: F, core: &'static Core, word: u64, classifier: C },
        // A probe, or a call timed for slow-call detection or recorded in
        // a time window: rare, and boxed (with its recorder) so the hot
        // variant's future stays small and dropping one checks one tag.
        Tracked { future: Pin<Box<Tracked<F, C>>> },
        Rejected { error: BreakerOpen },
    }
}

/// The word of a call whose outcome is not recorded. It never equals a
/// circuit's word (bit 7 is never set in one), so the fast success check
/// fails and the cold path sees the bit.
const UNRECORDED: u64 = 1 << 7;

pin_project! {
    /// A call whose outcome goes through a [`Recorder`].
    struct Tracked<F, C> {
        #[pin]
        future: F,
        recorder: Option<Recorder<C>>,
    }
}

impl<F, C> ResponseFuture<F, C> {
    /// A closed call admitted under `word`, which has neither `CLOCKED`
    /// nor `LOCKED` set.
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

    #[inline]
    pub(crate) fn tracked(future: F, recorder: Recorder<C>) -> Self {
        ResponseFuture {
            kind: Kind::Tracked {
                future: boxed(future, recorder),
            },
        }
    }

    /// A call whose outcome is not recorded.
    pub(crate) fn unrecorded(future: F, core: &'static Core, classifier: C) -> Self {
        Self::closed(future, core, UNRECORDED, classifier)
    }

    #[inline]
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
        match self.project().kind.project() {
            KindProj::Closed {
                future,
                core,
                word,
                classifier,
            } => {
                let value = match ready!(future.poll(cx)) {
                    Ok(value) => value,
                    Err(error) => {
                        return Poll::Ready(Err(closed_error(core, *word, classifier, error)))
                    }
                };
                match classifier.classify(Ok(&value)) {
                    // Counted only if the circuit is still in `word`.
                    Outcome::Success => core.record_fast_success(*word),
                    outcome => closed_outcome(core, *word, outcome),
                }
                Poll::Ready(Ok(value))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(Error::Open(*error))),
            KindProj::Tracked { future } => {
                let tracked = future.as_mut().project();
                let result = ready!(tracked.future.poll(cx));
                if let Some(recorder) = tracked.recorder.take() {
                    finish(recorder, result.as_ref());
                }
                Poll::Ready(result.map_err(Error::Inner))
            }
        }
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
    if word & UNRECORDED != 0 {
        return;
    }
    match outcome {
        Outcome::Ignored => core.record_ignored(),
        Outcome::Success => core.record_fast_success(word),
        Outcome::Failure => core.record_call(epoch_of(word), outcome, false),
    }
}

/// Boxes a tracked call (out of line, so that building the response future
/// inline stays small).
#[cold]
#[inline(never)]
fn boxed<F, C>(future: F, recorder: Recorder<C>) -> Pin<Box<Tracked<F, C>>> {
    let recorder = Some(recorder);
    Box::pin(Tracked { future, recorder })
}

/// Records a tracked call's outcome.
#[cold]
#[inline(never)]
fn finish<C, T, E>(recorder: Recorder<C>, result: Result<&T, &E>)
where
    C: Classify<T, E>,
{
    recorder.finish(result);
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Closed { word, .. } if word & UNRECORDED != 0 => "unrecorded",
            Kind::Closed { .. } => "closed",
            Kind::Tracked { .. } => "tracked",
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
    /// When the call started, if calls are timed.
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
            Some(start) => {
                let elapsed = start.elapsed();
                self.core.record_latency(elapsed);
                elapsed >= self.core.slow_threshold()
            }
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
