use std::fmt;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{BoxError, Service};

use super::classify::{Classify, DefaultClassifier};
use super::core::{epoch_of, state_of, Core, LAZY};
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
    Reject(BreakerOpen),
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
        let mut word = self.core.word();
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
                State::ForcedOpen => {
                    return Admit::Reject(BreakerOpen::new(State::ForcedOpen, None))
                }
                State::Open => {
                    let retry_at = self.core.open_until(self.breaker.base());
                    if word & LAZY != 0 && Instant::now() >= retry_at {
                        word = self.core.check_lazy_deadline(word);
                        continue;
                    }
                    return Admit::Reject(BreakerOpen::new(State::Open, Some(retry_at)));
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
                    return Admit::Reject(BreakerOpen::new(State::HalfOpen, None));
                }
            }
        }
        Admit::Reject(BreakerOpen::new(state_of(word), None))
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
        if let Admit::Probe(permit) = std::mem::replace(&mut self.admit, Admit::Unready) {
            self.held = Some(permit);
        }
        let admit = match self.admission() {
            reject @ Admit::Reject(_) => {
                self.admit = reject;
                return Poll::Ready(Ok(()));
            }
            admit => admit,
        };
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
            Poll::Ready(Err(error)) => {
                let (word, permit) = match admit {
                    Admit::Closed(word) => (word, None),
                    Admit::Probe(permit) => (self.core.word(), Some(permit)),
                    _ => return Poll::Ready(Err(error.into())),
                };
                let classifier = self.classifier.clone();
                Recorder::new(self.core, word, classifier, permit)
                    .finish::<S::Response, S::Error>(Err(&error));
                Poll::Ready(Err(error.into()))
            }
        }
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        match std::mem::replace(&mut self.admit, Admit::Unready) {
            Admit::Closed(word) => {
                let recorder = Recorder::new(self.core, word, self.classifier.clone(), None);
                ResponseFuture::admitted(self.inner.call(request), recorder)
            }
            Admit::Probe(permit) => {
                let word = self.core.word();
                let recorder =
                    Recorder::new(self.core, word, self.classifier.clone(), Some(permit));
                ResponseFuture::admitted(self.inner.call(request), recorder)
            }
            Admit::Disabled => ResponseFuture::passthrough(self.inner.call(request)),
            Admit::Reject(error) => {
                self.core.record_rejection();
                ResponseFuture::rejected(error)
            }
            Admit::Unready => {
                panic!("CircuitBreaker::call before poll_ready returned Ready(Ok(()))")
            }
        }
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
