use std::fmt;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::Service;

use super::classify::{Classify, DefaultClassifier};
use super::core::{
    epoch_of, is_closed, is_open_on_timer, state_of, Core, CLOCKED, LAZY, LOCKED, STATE_MASK,
};
use super::error::{BreakerOpen, Error};
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
///   whose error is [`Error::Open`] (no allocation). `poll_ready` never fails because the
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
    /// What the last `poll_ready` decided for the next `call`. A one-byte
    /// flag, so the hot path stores and loads no more than that.
    ready: Ready,
    /// A probe slot taken by `poll_ready` while half-open.
    permit: Option<Permit>,
    /// The state word a rejection was decided under.
    rejected: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ready {
    /// `poll_ready` has not returned `Ready(Ok)` since the last call.
    No,
    /// The inner service is ready and the circuit was closed.
    Closed,
    /// The inner service is ready and the breaker disabled.
    Disabled,
    /// The inner service is ready and `permit` holds a probe slot.
    Probe,
    /// The call will be rejected (the inner service was not polled).
    Reject,
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
            ready: Ready::No,
            permit: None,
            rejected: 0,
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

    /// Decides, from the state word, whether the next call goes to the inner
    /// service (which must then be polled) or is rejected. Every state but
    /// closed-without-a-held-permit comes here.
    #[cold]
    #[inline(never)]
    fn admission(&mut self, mut word: u64) -> Ready {
        // At most one lazy deadline check: it either changes the state or
        // the deadline has not passed.
        for _ in 0..2 {
            match state_of(word) {
                State::Closed => {
                    self.permit = None;
                    return Ready::Closed;
                }
                State::Disabled => {
                    self.permit = None;
                    return Ready::Disabled;
                }
                State::ForcedOpen => break,
                State::Open => {
                    if word & LAZY != 0 && Instant::now() >= self.retry_at() {
                        word = self.core.check_lazy_deadline(word);
                        continue;
                    }
                    break;
                }
                State::HalfOpen => {
                    let epoch = epoch_of(word);
                    if self.permit.as_ref().is_some_and(|p| p.epoch() == epoch) {
                        return Ready::Probe;
                    }
                    if self.core.try_acquire_probe(epoch) {
                        self.permit = Some(Permit::new(self.core, epoch));
                        return Ready::Probe;
                    }
                    if word & LAZY != 0 {
                        let now = self.core.check_lazy_deadline(word);
                        if now != word {
                            word = now;
                            continue;
                        }
                    }
                    break;
                }
            }
        }
        self.permit = None;
        self.rejected = word;
        Ready::Reject
    }

    #[inline]
    fn retry_at(&self) -> Instant {
        self.core.open_until()
    }

    /// The error of a call rejected under `word`.
    #[inline]
    fn rejection(&self, word: u64) -> BreakerOpen {
        BreakerOpen::new(self.core, word)
    }

    fn tracked<F>(&mut self, future: F, word: u64, permit: Option<Permit>) -> ResponseFuture<F, C>
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
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let word = self.core.word();
        let admit = if is_closed(word) && self.permit.is_none() {
            Ready::Closed
        } else if is_open_on_timer(word) && self.permit.is_none() {
            // The other cheap case: open, with a timer task to end it.
            self.rejected = word;
            Ready::Reject
        } else {
            self.admission(word)
        };
        if admit == Ready::Reject {
            self.ready = Ready::Reject;
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.ready = admit;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                self.ready = Ready::No;
                Poll::Pending
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(self.not_ready(admit, word, error))),
        }
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        let ready = std::mem::replace(&mut self.ready, Ready::No);
        let word = self.core.word();
        if ready == Ready::Closed && word & (STATE_MASK | CLOCKED | LOCKED) == 0 {
            let classifier = self.classifier.clone();
            return ResponseFuture::closed(self.inner.call(request), self.core, word, classifier);
        }
        if ready == Ready::Reject {
            self.core.record_rejection();
            return ResponseFuture::rejected(self.rejection(self.rejected));
        }
        self.call_other(ready, word, request)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Every call but the closed-state hot path.
    #[cold]
    #[inline(never)]
    fn call_other<Request>(
        &mut self,
        ready: Ready,
        word: u64,
        request: Request,
    ) -> ResponseFuture<S::Future, C>
    where
        S: Service<Request>,
        C: Clone,
    {
        match ready {
            // Closed when polled; the inner service is ready. Timed, or the
            // circuit changed since: recorded against the word of now.
            Ready::Closed if is_closed(word) => {
                let future = self.inner.call(request);
                self.tracked(future, word, None)
            }
            Ready::Closed => {
                let future = self.inner.call(request);
                ResponseFuture::passthrough(future)
            }
            Ready::Probe => {
                let permit = self.permit.take();
                let word = permit.as_ref().map_or(word, |p| p.word_for(word));
                let future = self.inner.call(request);
                self.tracked(future, word, permit)
            }
            Ready::Disabled => ResponseFuture::passthrough(self.inner.call(request)),
            Ready::Reject => unreachable!("handled inline"),
            Ready::No => panic!("CircuitBreaker::call before poll_ready returned Ready(Ok(()))"),
        }
    }

    /// Records the inner service's readiness error like a call's outcome.
    #[cold]
    #[inline(never)]
    fn not_ready<T, E>(&mut self, admit: Ready, word: u64, error: E) -> Error<E>
    where
        C: Classify<T, E> + Clone,
    {
        self.ready = Ready::No;
        let permit = match admit {
            Ready::Closed => None,
            Ready::Probe => self.permit.take(),
            _ => return Error::Inner(error),
        };
        Recorder::new(self.core, word, self.classifier.clone(), None, permit)
            .finish::<T, E>(Err(&error));
        Error::Inner(error)
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
            ready: Ready::No,
            permit: None,
            rejected: 0,
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
