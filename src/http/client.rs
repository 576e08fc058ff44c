//! A circuit breaker for outbound HTTP clients: hyper-util's `Client`,
//! reqwest's (feature `reqwest`), any tower HTTP client.

use std::fmt;
use std::time::Duration;

use tower::timeout::Timeout;
use tower::Layer;

use super::breaker::ServerErrors;
use crate::breaker::{Breaker, CircuitBreaker, Config};

/// A circuit breaker for an outbound HTTP client, one circuit per
/// downstream: trips on [`ServerErrors`] (a failed connect, a timeout, a
/// `5xx`), and bounds every call by a deadline, so a hung upstream counts
/// as a failure (and as slow, where [slow calls](crate::breaker::ConfigBuilder::slow_calls)
/// are counted) instead of holding its callers.
///
/// A rejected call fails at once with
/// [`Error::Open`](crate::breaker::Error::Open), for the caller's fallback
/// to handle: unlike [`HttpBreakerLayer`](super::HttpBreakerLayer), which
/// answers for a server with a `503` it makes up, this layer needs nothing
/// of the response body type, so it wraps hyper-util's `Client` (whose
/// body, `Incoming`, cannot be made) as it is:
///
/// ```no_run
/// # async fn demo() -> Result<(), tower::BoxError> {
/// use std::time::Duration;
/// use fusebox::breaker::Config;
/// use fusebox::http::HttpClientBreakerLayer;
/// use http_body_util::Empty;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower::{Layer, Service, ServiceExt};
///
/// let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
/// let layer = HttpClientBreakerLayer::new(Config::builder().name("payments").build()?)
///     .deadline(Duration::from_secs(2));
/// let mut payments = layer.layer(client);
/// let req = http::Request::get("http://127.0.0.1:8080/health").body(Empty::new())?;
/// match payments.ready().await?.call(req).await {
///     Ok(res) => println!("{}", res.status()),
///     Err(e) if e.is_open() => println!("payments is down: fallback"),
///     Err(e) => println!("failed: {e}"),
/// }
/// # Ok(()) }
/// ```
///
/// Over reqwest (feature `reqwest`), whose `Client` is a tower service of
/// `reqwest::Request`: `layer.layer(reqwest::Client::new())`. The service's
/// type is nameable, for an axum state:
/// `CircuitBreaker<Timeout<reqwest::Client>, ServerErrors>`.
///
/// The deadline sits inside the breaker (the order that makes a timeout a
/// failure of the call); it defaults to 10 s.
#[derive(Clone)]
pub struct HttpClientBreakerLayer {
    breaker: Breaker,
    classifier: ServerErrors,
    deadline: Duration,
}

impl HttpClientBreakerLayer {
    /// A layer with a new circuit of this configuration.
    pub fn new(config: Config) -> Self {
        Self::with_breaker(Breaker::new(config))
    }

    /// A layer over an existing circuit (a [`KeyedBreaker`](crate::breaker::KeyedBreaker)'s,
    /// for one circuit per host).
    pub fn with_breaker(breaker: Breaker) -> Self {
        HttpClientBreakerLayer {
            breaker,
            classifier: ServerErrors::new(),
            deadline: Duration::from_secs(10),
        }
    }

    /// Bounds each call (connect, request and response head): one that
    /// takes longer fails with a timeout, counted as a failure. Defaults to
    /// 10 s; `Duration::MAX` leaves calls unbounded.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Whether a `429 Too Many Requests` counts as a failure (see
    /// [`ServerErrors::too_many_requests`]). Defaults to no.
    pub fn too_many_requests(mut self, failure: bool) -> Self {
        self.classifier = self.classifier.too_many_requests(failure);
        self
    }

    /// The circuit this layer's services share.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl<S> Layer<S> for HttpClientBreakerLayer {
    type Service = CircuitBreaker<Timeout<S>, ServerErrors>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_classifier(
            Timeout::new(inner, self.deadline),
            self.breaker.clone(),
            self.classifier,
        )
    }
}

impl fmt::Debug for HttpClientBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClientBreakerLayer")
            .field("breaker", &self.breaker)
            .field("classifier", &self.classifier)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// reqwest's responses: a `5xx` is a failure, and so is every error.
#[cfg(feature = "reqwest")]
impl<E> crate::breaker::Classify<reqwest::Response, E> for ServerErrors {
    fn classify(&self, result: Result<&reqwest::Response, &E>) -> crate::breaker::Outcome {
        self.by_status(result.map(reqwest::Response::status))
    }
}
