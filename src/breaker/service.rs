use std::fmt;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::Service;

use super::classify::{Classify, DefaultClassifier};
use super::core::{epoch_of, is_open_on_timer, state_of, Core, CLOCKED, LAZY, SHADOW};
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
    /// What the last `poll_ready` decided for the next `call`.
    ready: Ready,
    /// The state word the next call was admitted (or rejected) under.
    admitted: u64,
    /// A probe slot taken by `poll_ready` while half-open.
    permit: Option<Permit>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ready {
    /// `poll_ready` has not returned `Ready(Ok)` since the last call.
    No,
    /// The inner service is ready; the circuit was closed with no flag set
    /// (the hot path: the call needs neither the clock nor the lock).
    Fast,
    /// The inner service is ready; the circuit was closed with a flag set
    /// (timed or time-windowed calls), or disabled.
    Admitted,
    /// The inner service is ready and `permit` holds a probe slot.
    Probe,
    /// The call will be rejected (the inner service was not polled).
    Reject,
    /// The call would be rejected, but the circuit is in shadow mode: the
    /// inner service is ready, and the call goes to it unrecorded.
    Shadow,
}

/// Whether `word` is closed (state code 0) with no flag set: the hot path.
#[inline]
fn is_fast(word: u64) -> bool {
    word & 0xff == 0
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
            admitted: 0,
            permit: None,
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
    /// service (which must then be polled) or is rejected, and the word it
    /// is decided under. Every state but the two cheap ones comes here.
    #[cold]
    #[inline(never)]
    fn admission(&mut self, mut word: u64) -> (Ready, u64) {
        // At most one lazy deadline check: it either changes the state or
        // the deadline has not passed.
        for _ in 0..2 {
            match state_of(word) {
                State::Closed | State::Disabled => return (Ready::Admitted, word),
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
                        return (Ready::Probe, word);
                    }
                    if self.core.try_acquire_probe(epoch) {
                        self.permit = Some(Permit::new(self.core, epoch));
                        return (Ready::Probe, word);
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
        if word & SHADOW != 0 {
            // Would reject: lets the call through instead, unrecorded.
            return (Ready::Shadow, word);
        }
        (Ready::Reject, word)
    }

    #[inline]
    fn retry_at(&self) -> Instant {
        self.core.open_until()
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
        // A permit still held on the two cheap paths is from an earlier
        // half-open period (every transition starts a new epoch): harmless,
        // and replaced or dropped by the next half-open admission.
        if is_fast(word) {
            self.admitted = word;
            return self.poll_inner(cx, Ready::Fast);
        }
        if is_open_on_timer(word) {
            // The other cheap case: open, with a timer task to end it.
            self.admitted = word;
            self.ready = Ready::Reject;
            return Poll::Ready(Ok(()));
        }
        // Every other state. The inner service is polled here, not in the
        // out-of-line admission: `cx` never escapes into a call the
        // compiler cannot see through.
        let (ready, word) = self.admission(word);
        self.admitted = word;
        if ready == Ready::Reject {
            self.ready = Ready::Reject;
            return Poll::Ready(Ok(()));
        }
        self.poll_inner(cx, ready)
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        let ready = std::mem::replace(&mut self.ready, Ready::No);
        if ready == Ready::Fast {
            let classifier = self.classifier.clone();
            let future = self.inner.call(request);
            return ResponseFuture::closed(future, self.core, self.admitted, classifier);
        }
        if ready == Ready::Reject {
            self.core.record_rejection();
            return ResponseFuture::rejected(BreakerOpen::new(self.core, self.admitted));
        }
        // Every other call. Only the decision is out of line: each future
        // is built here, so the compiler can build it where the caller
        // keeps it rather than in a temporary it then copies.
        match self.prepare(ready) {
            None => {
                let classifier = self.classifier.clone();
                ResponseFuture::unrecorded(self.inner.call(request), self.core, classifier)
            }
            Some(recorder) => ResponseFuture::tracked(self.inner.call(request), recorder),
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Polls the inner service for a call admitted as `ready`.
    #[inline]
    fn poll_inner<Request>(
        &mut self,
        cx: &mut Context<'_>,
        ready: Ready,
    ) -> Poll<Result<(), Error<S::Error>>>
    where
        S: Service<Request>,
        C: Classify<S::Response, S::Error> + Clone,
    {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.ready = ready;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                self.ready = Ready::No;
                Poll::Pending
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(self.not_ready(ready, error))),
        }
    }

    /// How to record a call that is neither on the hot path nor rejected:
    /// through a recorder (a probe, or a closed call that is timed or
    /// time-windowed), or not at all (disabled).
    #[cold]
    #[inline(never)]
    fn prepare(&mut self, ready: Ready) -> Option<Recorder<C>>
    where
        C: Clone,
    {
        let word = self.admitted;
        let (word, permit) = match ready {
            Ready::Probe => {
                let permit = self.permit.take();
                (permit.as_ref().map_or(word, |p| p.word_for(word)), permit)
            }
            Ready::Admitted if state_of(word) == State::Closed => (word, None),
            Ready::Admitted => return None,
            Ready::Shadow => {
                self.core.record_rejection();
                return None;
            }
            Ready::Fast | Ready::Reject => unreachable!("handled inline"),
            Ready::No => panic!("CircuitBreaker::call before poll_ready returned Ready(Ok(()))"),
        };
        let start = (word & CLOCKED != 0).then(Instant::now);
        let classifier = self.classifier.clone();
        Some(Recorder::new(self.core, word, classifier, start, permit))
    }

    /// Records the inner service's readiness error like a call's outcome.
    #[cold]
    #[inline(never)]
    fn not_ready<T, E>(&mut self, ready: Ready, error: E) -> Error<E>
    where
        C: Classify<T, E> + Clone,
    {
        self.ready = Ready::No;
        let word = self.admitted;
        let permit = match ready {
            Ready::Probe => self.permit.take(),
            Ready::Fast => None,
            Ready::Admitted if state_of(word) == State::Closed => None,
            _ => return Error::Inner(error),
        };
        let word = permit.as_ref().map_or(word, |p| p.word_for(word));
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
            admitted: 0,
            permit: None,
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
