use std::fmt;

use tower::Layer;

use super::classify::DefaultClassifier;
use super::config::Config;
use super::handle::Breaker;
use super::service::CircuitBreaker;

/// Wraps services in a [`CircuitBreaker`].
///
/// The layer owns one circuit: every service it makes, and every clone of
/// them, shares it. (axum clones a layer's services per route and per
/// connection; they still trip together.) Use one layer per backend that
/// should have its own circuit.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    breaker: Breaker,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A layer with a new circuit of this configuration, classifying every
    /// error as a failure.
    pub fn new(config: Config) -> Self {
        Self::with_breaker(Breaker::new(config))
    }

    /// A layer over an existing circuit, shared with whatever else uses it.
    pub fn with_breaker(breaker: Breaker) -> Self {
        CircuitBreakerLayer {
            breaker,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Replaces the classifier that decides which outcomes are failures.
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The circuit this layer's services share.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_classifier(inner, self.breaker.clone(), self.classifier.clone())
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}
