use std::fmt;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{BoxError, Service};

use super::classify::{Classify, DefaultClassifier};
use super::core::{epoch_of, is_closed, state_of, Core, CLOCKED, LAZY, LOCKED};
use super::error::BreakerOpen;
use super::future::{Permit, Recorder, ResponseFuture};
use super::handle::Breaker;
use super::state::State;

/// A service guarded by a circuit breaker. Made by [`CircuitBreakerLayer`]
/// or [`CircuitBreaker::new`].
///
/// * Closed (or disabled): `poll_ready` is the inner service's; outcomes are
///   classified and recorded (disabled: not recorded).
/// * Open or forced open: `poll_ready` is `Ready(Ok(()))` at once, without
///   polling the inner service, and `call` returns an already-failed future
///   whose error is a [`BreakerOpen`]. `poll_ready` never fails because the
///   circuit is open.
/// * Half-open: `poll_ready` takes one of the probe slots if one is free (the
///   slot then travels with the call and is freed when it completes or is
///   dropped) and polls the inner service; without a slot, it rejects like
///   an open circuit.
///
/// An error from the inner service's `poll_ready` is classified and recorded
/// like a call's, then returned.
///
/// Clones share the circuit but not readiness: a clone must be made ready
/// itself.
///
/// [`CircuitBreakerLayer`]: super::CircuitBreakerLayer
pub struct CircuitBreaker<S, C = DefaultClassifier> {
    inner: S,
    breaker: Breaker,
    /// The breaker's core, copied out of the `Arc` so the hot path does not
    /// chase two pointers.
    core: &'static Core,
    classifier: C,
    /// What the last `poll_ready` decided for the next `call`.
    admit: Admit,
    /// A probe slot taken while the inner service was not ready yet.
    held: Option<Permit>,
}

#[derive(Debug)]
enum Admit {
    /// `poll_ready` has not returned `Ready(Ok)` since the last call.
    Unready,
    /// Closed: the call records its outcome against this state word.
    Closed(u64),
    Disabled,
    Probe(Permit),
    /// Rejected under this state word.
    Reject(u64),
}

impl<S> CircuitBreaker<S> {
    /// Guards `inner` with `breaker`, classifying every error as a failure.
    pub fn new(inner: S, breaker: Breaker) -> Self {
        Self::with_classifier(inner, breaker, DefaultClassifier)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Guards `inner` with `breaker` and this classifier.
    pub fn with_classifier(inner: S, breaker: Breaker, classifier: C) -> Self {
        CircuitBreaker {
            inner,
            core: breaker.core(),
            breaker,
            classifier,
            admit: Admit::Unready,
            held: None,
        }
    }

    /// The circuit this service uses.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Decides what the next call gets, from the state word.
    #[inline]
    fn admission(&mut self) -> Admit {
        let word = self.core.word();
        if is_closed(word) && self.held.is_none() {
            return Admit::Closed(word);
        }
        self.admission_slow(word)
    }

    #[cold]
    #[inline(never)]
    fn admission_slow(&mut self, mut word: u64) -> Admit {
        if let Some(permit) = self.held.take() {
            if state_of(word) == State::HalfOpen {
                return Admit::Probe(permit);
            }
        }
        // At most one lazy deadline check: it either changes the state or
        // the deadline has not passed.
        for _ in 0..2 {
            match state_of(word) {
                State::Closed => return Admit::Closed(word),
                State::Disabled => return Admit::Disabled,
                State::ForcedOpen => return Admit::Reject(word),
                State::Open => {
                    if word & LAZY != 0 && Instant::now() >= self.retry_at() {
                        word = self.core.check_lazy_deadline(word);
                        continue;
                    }
                    return Admit::Reject(word);
                }
                State::HalfOpen => {
                    let epoch = epoch_of(word);
                    if self.core.try_acquire_probe(epoch) {
                        return Admit::Probe(Permit::new(self.core, epoch));
                    }
                    if word & LAZY != 0 {
                        let now = self.core.check_lazy_deadline(word);
                        if now != word {
                            word = now;
                            continue;
                        }
                    }
                    return Admit::Reject(word);
                }
            }
        }
        Admit::Reject(word)
    }

    fn retry_at(&self) -> Instant {
        self.core.open_until(self.breaker.base())
    }

    /// The error of a call rejected under `word`.
    fn rejection(&self, word: u64) -> BreakerOpen {
        let state = state_of(word);
        let retry_at = (state == State::Open).then(|| self.retry_at());
        BreakerOpen::new(state, retry_at)
    }

    #[cold]
    fn start_tracked<F>(&mut self, future: F, word: u64, permit: Option<Permit>) -> ResponseFuture<F, C>
    where
        C: Clone,
    {
        let start = (word & CLOCKED != 0).then(Instant::now);
        let recorder = Recorder::new(self.core, word, self.classifier.clone(), start, permit);
        ResponseFuture::tracked(future, recorder)
    }
}

impl<S, C, Request> Service<Request> for CircuitBreaker<S, C>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Admit::Probe(_) = self.admit {
            self.keep_probe();
        }
        let admit = self.admission();
        if let Admit::Reject(_) = admit {
            self.admit = admit;
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.admit = admit;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let Admit::Probe(permit) = admit {
                    self.held = Some(permit);
                }
                Poll::Pending
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(self.not_ready(admit, error))),
        }
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        match std::mem::replace(&mut self.admit, Admit::Unready) {
            Admit::Closed(word) if word & (CLOCKED | LOCKED) == 0 => {
                let classifier = self.classifier.clone();
                ResponseFuture::closed(self.inner.call(request), self.core, word, classifier)
            }
            admit => self.call_other(admit, request),
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Every call but the closed-state hot path.
    #[cold]
    #[inline(never)]
    fn call_other<Request>(&mut self, admit: Admit, request: Request) -> ResponseFuture<S::Future, C>
    where
        S: Service<Request>,
        C: Clone,
    {
        match admit {
            Admit::Closed(word) => {
                let future = self.inner.call(request);
                self.start_tracked(future, word, None)
            }
            Admit::Probe(permit) => {
                let future = self.inner.call(request);
                self.start_tracked(future, self.core.word(), Some(permit))
            }
            Admit::Disabled => ResponseFuture::passthrough(self.inner.call(request)),
            Admit::Reject(word) => {
                self.core.record_rejection();
                ResponseFuture::rejected(self.rejection(word))
            }
            Admit::Unready => panic!("CircuitBreaker::call before poll_ready returned Ready(Ok(()))"),
        }
    }

    /// Moves a probe slot taken by an earlier `poll_ready` aside, so that
    /// the next admission reuses it instead of taking another.
    #[cold]
    fn keep_probe(&mut self) {
        if let Admit::Probe(permit) = std::mem::replace(&mut self.admit, Admit::Unready) {
            self.held = Some(permit);
        }
    }

    /// Records the inner service's readiness error like a call's outcome.
    #[cold]
    fn not_ready<T, E>(&mut self, admit: Admit, error: E) -> BoxError
    where
        C: Classify<T, E> + Clone,
        E: Into<BoxError>,
    {
        let (word, permit) = match admit {
            Admit::Closed(word) => (word, None),
            Admit::Probe(permit) => (self.core.word(), Some(permit)),
            _ => return error.into(),
        };
        Recorder::new(self.core, word, self.classifier.clone(), None, permit)
            .finish::<T, E>(Err(&error));
        error.into()
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    /// Shares the circuit; readiness and probe slots stay with the original.
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            core: self.core,
            classifier: self.classifier.clone(),
            admit: Admit::Unready,
            held: None,
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}
