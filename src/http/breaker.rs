//! Circuit breakers for HTTP and gRPC services: classifiers for what they
//! return, and layers that answer a rejected call the way HTTP and gRPC
//! clients understand (`503` with `Retry-After`; `UNAVAILABLE`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::breaker::{
    Breaker, BreakerOpen, CircuitBreaker, Classify, Config, Error, Outcome, State,
};

/// Classifies HTTP responses: a `5xx` is a failure, and so is every error
/// (the connection failed, a timeout layer gave up); `429 Too Many
/// Requests` is a failure only if asked ([`too_many_requests`]); anything
/// else is a success (a `4xx` is the caller's own doing, and a healthy
/// server's answer).
///
/// [`too_many_requests`]: ServerErrors::too_many_requests
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerErrors {
    too_many_requests: bool,
}

impl ServerErrors {
    /// `5xx` and errors are failures; `429` is not.
    pub fn new() -> Self {
        ServerErrors::default()
    }

    /// Whether a `429 Too Many Requests` counts as a failure: yes for a
    /// downstream that sheds load with it (then the breaker backs off), no
    /// (the default) when it means the caller's own quota.
    pub fn too_many_requests(mut self, failure: bool) -> Self {
        self.too_many_requests = failure;
        self
    }
}

impl ServerErrors {
    /// A call that ended with `status` (`Err`: with an error).
    pub(super) fn by_status<E>(&self, status: Result<StatusCode, &E>) -> Outcome {
        match status {
            Err(_) => Outcome::Failure,
            Ok(status) if status.is_server_error() => Outcome::Failure,
            Ok(StatusCode::TOO_MANY_REQUESTS) if self.too_many_requests => Outcome::Failure,
            Ok(_) => Outcome::Success,
        }
    }
}

impl<B, E> Classify<Response<B>, E> for ServerErrors {
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        self.by_status(result.map(Response::status))
    }
}

/// Classifies gRPC responses by the status a call ends with when it ends at
/// once (a trailers-only answer: how servers, and proxies in front of them,
/// send errors), and by the HTTP status.
///
/// * Failures: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`,
///   `INTERNAL`, `UNKNOWN`, `DATA_LOSS`; an HTTP `5xx`; every error (the
///   transport failed).
/// * Ignored (the caller's doing, not the server's health):
///   `INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`, `PERMISSION_DENIED`,
///   `FAILED_PRECONDITION`, `ABORTED`, `OUT_OF_RANGE`, `UNIMPLEMENTED`,
///   `UNAUTHENTICATED`, `CANCELLED`.
/// * Successes: anything else, including a response whose status comes
///   later, in its trailers (a tower layer sees the response when its
///   headers arrive; a stream that fails after answering is not seen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcErrors;

/// gRPC status codes.
const UNKNOWN: u16 = 2;
const DEADLINE_EXCEEDED: u16 = 4;
const RESOURCE_EXHAUSTED: u16 = 8;
const INTERNAL: u16 = 13;
const UNAVAILABLE: u16 = 14;
const DATA_LOSS: u16 = 15;

impl<B, E> Classify<Response<B>, E> for GrpcErrors {
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        let res = match result {
            Err(_) => return Outcome::Failure,
            Ok(res) if res.status().is_server_error() => return Outcome::Failure,
            Ok(res) => res,
        };
        match grpc_status(res.headers()) {
            None | Some(0) => Outcome::Success,
            Some(
                UNKNOWN | DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED | INTERNAL | UNAVAILABLE
                | DATA_LOSS,
            ) => Outcome::Failure,
            Some(_) => Outcome::Ignored,
        }
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A circuit breaker for an HTTP service (an axum route or router, a
/// tower HTTP service whose body type has a `Default`): trips on
/// [`ServerErrors`] and answers a rejected call with `503 Service
/// Unavailable` and `Retry-After` (the seconds left of the open period),
/// without calling the service. For an outbound client (hyper-util's,
/// reqwest's), use [`HttpClientBreakerLayer`](super::HttpClientBreakerLayer):
/// rejections as errors, and a deadline.
///
/// ```
/// use axum::{http::StatusCode, routing::get, Router};
/// use fusebox::breaker::Config;
/// use fusebox::http::HttpBreakerLayer;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = HttpBreakerLayer::new(Config::builder().name("reports").consecutive_failures(2).build().unwrap());
/// let breaker = layer.breaker().clone();
/// let app: Router = Router::new()
///     .route("/report", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
///     .layer(layer);
/// let report = || axum::http::Request::get("/report").body(axum::body::Body::empty()).unwrap();
/// for _ in 0..2 {
///     let res = app.clone().oneshot(report()).await.unwrap();
///     assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
/// }
/// // Two 500s in a row: open. The handler is no longer called.
/// let res = app.clone().oneshot(report()).await.unwrap();
/// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert!(res.headers().contains_key("retry-after"));
/// assert_eq!(breaker.state(), fusebox::breaker::State::Open);
/// # }
/// ```
#[derive(Clone)]
pub struct HttpBreakerLayer {
    breaker: Breaker,
    classifier: ServerErrors,
}

impl HttpBreakerLayer {
    /// A layer with a new circuit of this configuration.
    pub fn new(config: Config) -> Self {
        Self::with_breaker(Breaker::new(config))
    }

    /// A layer over an existing circuit.
    pub fn with_breaker(breaker: Breaker) -> Self {
        HttpBreakerLayer {
            breaker,
            classifier: ServerErrors::new(),
        }
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

impl<S> Layer<S> for HttpBreakerLayer {
    type Service = HttpBreaker<S, ServerErrors>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpBreaker::new(inner, &self.breaker, self.classifier, Answer::Http)
    }
}

impl fmt::Debug for HttpBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBreakerLayer")
            .field("breaker", &self.breaker)
            .field("classifier", &self.classifier)
            .finish()
    }
}

/// A circuit breaker for a gRPC client (a tonic `Channel`) or server: trips
/// on [`GrpcErrors`] and answers a rejected call with status `UNAVAILABLE`
/// (with `grpc-retry-pushback-ms` while the open period's end is known),
/// which tonic clients surface as `Status::unavailable`.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use fusebox::breaker::Config;
/// use fusebox::http::GrpcBreakerLayer;
/// use tower::Layer;
///
/// let channel = tonic::transport::Channel::from_static("http://[::1]:50051").connect_lazy();
/// let layer = GrpcBreakerLayer::new(Config::builder().name("greeter").build()?);
/// let mut client = tonic::client::Grpc::new(layer.layer(channel));
/// # let _ = &mut client;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GrpcBreakerLayer {
    breaker: Breaker,
}

impl GrpcBreakerLayer {
    /// A layer with a new circuit of this configuration.
    pub fn new(config: Config) -> Self {
        Self::with_breaker(Breaker::new(config))
    }

    /// A layer over an existing circuit.
    pub fn with_breaker(breaker: Breaker) -> Self {
        GrpcBreakerLayer { breaker }
    }

    /// The circuit this layer's services share.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl<S> Layer<S> for GrpcBreakerLayer {
    type Service = HttpBreaker<S, GrpcErrors>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpBreaker::new(inner, &self.breaker, GrpcErrors, Answer::Grpc)
    }
}

impl fmt::Debug for GrpcBreakerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcBreakerLayer")
            .field("breaker", &self.breaker)
            .finish()
    }
}

/// How a rejected call is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Http,
    Grpc,
}

/// An HTTP or gRPC service behind a circuit breaker whose rejections are
/// answers, not errors; made by [`HttpBreakerLayer`] or [`GrpcBreakerLayer`].
/// Its error is the inner service's own, so it fits where an axum route
/// needs `Infallible`.
#[derive(Clone)]
pub struct HttpBreaker<S, C> {
    inner: CircuitBreaker<S, C>,
    answer: Answer,
}

impl<S, C> HttpBreaker<S, C> {
    fn new(inner: S, breaker: &Breaker, classifier: C, answer: Answer) -> Self {
        HttpBreaker {
            inner: CircuitBreaker::with_classifier(inner, breaker.clone(), classifier),
            answer,
        }
    }

    /// The circuit.
    pub fn breaker(&self) -> &Breaker {
        self.inner.breaker()
    }
}

impl<S: fmt::Debug, C> fmt::Debug for HttpBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpBreaker")
            .field("inner", &self.inner)
            .field("answer", &self.answer)
            .finish()
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for HttpBreaker<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: Classify<Response<ResBody>, S::Error> + Clone,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<crate::breaker::future::ResponseFuture<S::Future, C>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // The breaker's readiness fails only with the inner service's error
        // (an open circuit is ready, and rejects in `call`).
        self.inner.poll_ready(cx).map_err(|e| match e {
            Error::Inner(e) => e,
            Error::Open(_) => unreachable!("an open circuit is ready and rejects in `call`"),
        })
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        ResponseFuture {
            future: self.inner.call(request),
            answer: self.answer,
        }
    }
}

pin_project! {
    /// The response future of [`HttpBreaker`].
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        answer: Answer,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("http::breaker::ResponseFuture")
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, Error<E>>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.future.poll(cx)) {
            Ok(res) => Ok(res),
            Err(Error::Inner(e)) => Err(e),
            Err(Error::Open(open)) => Ok(match this.answer {
                Answer::Http => unavailable(&open),
                Answer::Grpc => grpc_unavailable(&open),
            }),
        })
    }
}

/// When to try again, in whole seconds (at least 1): the open period's end,
/// or at once for a half-open circuit whose probes are taken; `None` for a
/// forced-open one (only a handle closes it).
fn retry_after(open: &BreakerOpen) -> Option<Duration> {
    match open.state() {
        State::ForcedOpen => None,
        State::HalfOpen => Some(Duration::ZERO),
        _ => open.retry_after(),
    }
}

/// `503 Service Unavailable`, with `Retry-After` when the end is known.
fn unavailable<B: Default>(open: &BreakerOpen) -> Response<B> {
    let mut res = Response::new(B::default());
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    if let Some(after) = retry_after(open) {
        // Whole seconds, rounded up, so a client never retries early.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    res
}

/// A trailers-only gRPC answer: `UNAVAILABLE`, with the breaker's message
/// and, when known, when to retry.
fn grpc_unavailable<B: Default>(open: &BreakerOpen) -> Response<B> {
    let mut res = Response::new(B::default());
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(UNAVAILABLE));
    let message = HeaderValue::from_str(&open.to_string())
        .unwrap_or(HeaderValue::from_static("circuit breaker is open"));
    headers.insert("grpc-message", message);
    if let Some(after) = retry_after(open) {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        headers.insert("grpc-retry-pushback-ms", HeaderValue::from(ms));
    }
    res
}

#[cfg(test)]
mod tests;
