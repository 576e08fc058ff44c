//! One circuit per downstream: a layer that picks each call's circuit by a
//! key taken from the request (its host, its route), from a bounded
//! registry that forgets idle keys.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::util::Oneshot;
use tower::{Layer, Service, ServiceExt};

use super::classify::DefaultClassifier;
use super::config::Config;
use super::handle::Breaker;
use super::service::CircuitBreaker;

/// Wraps a service shared by many downstreams (an HTTP client, a tonic
/// channel to a balancer) so that each key — a host, a route, any function
/// of the request — has its own circuit: one host failing opens only its
/// own. Circuits are made on first use from one [`Config`] (named
/// `{name}:{key}`, so metrics tell them apart), and forgotten after
/// [`idle_after`](Self::idle_after) without a call; at most
/// [`max_keys`](Self::max_keys) are kept (the least recently used goes
/// first), so keys from untrusted input cannot grow it without bound.
///
/// ```
/// use fusebox::breaker::{Config, KeyedBreakerLayer, State};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A client for many hosts; the request is (host, path).
/// let client = service_fn(|(host, _path): (&'static str, &'static str)| async move {
///     if host == "down.example" { Err("connection refused") } else { Ok("200 OK") }
/// });
/// let config = Config::builder().name("api").consecutive_failures(2).build().unwrap();
/// let layer = KeyedBreakerLayer::new(config, |req: &(&'static str, &'static str)| req.0);
/// let svc = layer.layer(client);
/// for _ in 0..3 {
///     let _ = svc.clone().oneshot(("down.example", "/")).await;
///     assert_eq!(svc.clone().oneshot(("up.example", "/")).await.unwrap(), "200 OK");
/// }
/// assert_eq!(layer.breaker(&"down.example").unwrap().state(), State::Open);
/// assert_eq!(layer.breaker(&"up.example").unwrap().state(), State::Closed);
/// # }
/// ```
pub struct KeyedBreakerLayer<K, F, C = DefaultClassifier> {
    registry: Arc<Registry<K>>,
    key: F,
    classifier: C,
}

struct Registry<K> {
    config: Config,
    max_keys: usize,
    idle_after: Duration,
    circuits: Mutex<Circuits<K>>,
}

struct Circuits<K> {
    by_key: HashMap<K, Circuit>,
    /// When idle circuits were last looked for.
    swept: Instant,
    /// Counts uses, to order circuits by their last (instants can tie).
    uses: u64,
}

struct Circuit {
    breaker: Breaker,
    used: Instant,
    /// The use count at its last use.
    last: u64,
}

impl<K, F> KeyedBreakerLayer<K, F> {
    /// One circuit of `config` per key that `key` gives a request. Keeps at
    /// most 1024 circuits and forgets one after 10 minutes without a call.
    pub fn new(config: Config, key: F) -> Self {
        KeyedBreakerLayer {
            registry: Arc::new(Registry {
                config,
                max_keys: 1024,
                idle_after: Duration::from_secs(600),
                circuits: Mutex::new(Circuits {
                    by_key: HashMap::new(),
                    swept: Instant::now(),
                    uses: 0,
                }),
            }),
            key,
            classifier: DefaultClassifier,
        }
    }
}

impl<K, F, C> KeyedBreakerLayer<K, F, C> {
    /// Replaces the classifier (shared by every circuit).
    pub fn classifier<C2>(self, classifier: C2) -> KeyedBreakerLayer<K, F, C2> {
        KeyedBreakerLayer {
            registry: self.registry,
            key: self.key,
            classifier,
        }
    }

    /// At most this many circuits are kept; a new key beyond that replaces
    /// the least recently used. At least 1. Defaults to 1024. Set before the
    /// layer is cloned or used.
    pub fn max_keys(mut self, keys: usize) -> Self {
        if let Some(registry) = Arc::get_mut(&mut self.registry) {
            registry.max_keys = keys.max(1);
        }
        self
    }

    /// A circuit without a call for this long is forgotten (its key starts
    /// closed again). Defaults to 10 minutes. Set before the layer is cloned
    /// or used.
    pub fn idle_after(mut self, idle: Duration) -> Self {
        if let Some(registry) = Arc::get_mut(&mut self.registry) {
            registry.idle_after = idle;
        }
        self
    }
}

impl<K: Hash + Eq, F, C> KeyedBreakerLayer<K, F, C> {
    /// The circuit of `key`, if it has one now.
    pub fn breaker(&self, key: &K) -> Option<Breaker> {
        self.registry
            .lock()
            .by_key
            .get(key)
            .map(|c| c.breaker.clone())
    }

    /// How many circuits are kept now.
    pub fn len(&self) -> usize {
        self.registry.lock().by_key.len()
    }

    /// Whether no circuit is kept now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K> Registry<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Circuits<K>> {
        self.circuits.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> Registry<K> {
    /// The circuit of `key`, made on first use.
    fn circuit(&self, key: K) -> Breaker {
        let now = Instant::now();
        let mut circuits = self.lock();
        circuits.uses += 1;
        let last = circuits.uses;
        if let Some(c) = circuits.by_key.get_mut(&key) {
            (c.used, c.last) = (now, last);
            return c.breaker.clone();
        }
        // A new key: forget idle circuits now and then, and make room.
        let idle_after = self.idle_after;
        if now.duration_since(circuits.swept) >= idle_after / 4 {
            circuits
                .by_key
                .retain(|_, c| now.duration_since(c.used) < idle_after);
            circuits.swept = now;
        }
        if circuits.by_key.len() >= self.max_keys {
            let oldest = circuits
                .by_key
                .iter()
                .min_by_key(|(_, c)| c.last)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                circuits.by_key.remove(&oldest);
            }
        }
        let mut config = self.config.clone();
        config.name = format!("{}:{key}", self.config.name);
        let breaker = Breaker::new(config);
        circuits.by_key.insert(
            key,
            Circuit {
                breaker: breaker.clone(),
                used: now,
                last,
            },
        );
        breaker
    }
}

impl<K, F: Clone, C: Clone> Clone for KeyedBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        KeyedBreakerLayer {
            registry: self.registry.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, F, C> fmt::Debug for KeyedBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerLayer")
            .field("config", &self.registry.config)
            .field("max_keys", &self.registry.max_keys)
            .field("idle_after", &self.registry.idle_after)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedBreakerLayer<K, F, C> {
    type Service = KeyedBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedBreaker {
            inner,
            registry: self.registry.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service with a circuit per key; made by [`KeyedBreakerLayer`].
///
/// Always ready: the key is known only from the request, so each call
/// clones the inner service, and that clone is made ready behind the key's
/// circuit (an open circuit answers at once, without waiting for the inner
/// service). For cheap-to-clone services: HTTP clients, tonic channels.
pub struct KeyedBreaker<S, K, F, C = DefaultClassifier> {
    inner: S,
    registry: Arc<Registry<K>>,
    key: F,
    classifier: C,
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        KeyedBreaker {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, C> fmt::Debug for KeyedBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreaker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, C, Request> Service<Request> for KeyedBreaker<S, K, F, C>
where
    S: Service<Request> + Clone,
    K: Hash + Eq + Clone + fmt::Display,
    F: Fn(&Request) -> K,
    C: super::Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = super::Error<S::Error>;
    type Future = Oneshot<CircuitBreaker<S, C>, Request>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let breaker = self.registry.circuit((self.key)(&request));
        let guarded =
            CircuitBreaker::with_classifier(self.inner.clone(), breaker, self.classifier.clone());
        guarded.oneshot(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_registry_is_bounded_and_forgets_idle_keys() {
        let ok = tower::service_fn(|_: u32| async { Ok::<_, std::io::Error>(()) });
        let layer = KeyedBreakerLayer::new(Config::default(), |k: &u32| *k)
            .max_keys(3)
            .idle_after(Duration::from_secs(60));
        let svc = layer.layer(ok);
        // Keys from untrusted input: never more than the bound, the least
        // recently used going first.
        for key in 0..100 {
            svc.clone().oneshot(key).await.unwrap();
            svc.clone().oneshot(0).await.unwrap();
        }
        assert_eq!(layer.len(), 3);
        assert!(layer.breaker(&0).is_some(), "the key in use stays");
        assert!(layer.breaker(&99).is_some());
        assert!(layer.breaker(&50).is_none());
        // Idle keys are forgotten when a new key comes.
        tokio::time::advance(Duration::from_secs(61)).await;
        svc.clone().oneshot(1000).await.unwrap();
        assert_eq!(layer.len(), 1);
        assert!(layer.breaker(&0).is_none());
    }
}
