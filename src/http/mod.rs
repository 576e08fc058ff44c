//! Response caching for HTTP services (axum, hyper, tonic's transport),
//! through the fail-open [`Cache`]. Feature `http`.
//!
//! ```
//! use axum::{routing::get, Router};
//! use fusebox::cache::Cache;
//! use fusebox::http::HttpCacheLayer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::builder().name("pages").redis_url("redis://127.0.0.1:6379")?;
//! let app: Router = Router::new()
//!     .route("/page/{id}", get(|| async { ([("cache-control", "public, max-age=60")], "page") }))
//!     .layer(HttpCacheLayer::new(cache).vary(["accept-language"]));
//! # Ok(()) }
//! ```
//!
//! * Caches successful responses to `GET` (and answers `HEAD` from them).
//!   The key is the method, path, query and the configured request headers.
//!   Whether, and how long, follows the response's `Cache-Control`
//!   (`no-store`, `private`, `max-age`, `s-maxage`, `Expires`…), decided by
//!   the [`http-cache-semantics`](https://docs.rs/http-cache-semantics) crate
//!   from the point of view of a shared cache; responses that set cookies,
//!   or vary on headers not in the key, are not cached.
//! * Only bodies of known length up to a cap (default 1 MiB) are buffered;
//!   anything else streams through uncached.
//! * A response header (default `x-cache`) says `hit` (from the cache, or
//!   shared from a concurrent miss), `miss` or `bypass`
//!   (not a `GET`/`HEAD`, or a request with `Authorization` or
//!   `Cache-Control: no-cache`/`no-store`).
//! * Concurrent misses for one key are coalesced: one request reaches the
//!   handler; the others get its response if it may be shared, or go to the
//!   handler themselves if not.
//! * Fail-open: with the cache down, hung or full, every request still
//!   reaches the handler, within the cache's deadline (nanoseconds once its
//!   breaker is open).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::{BoxError, Layer, Service};

use crate::cache::handle::Coalesced;
use crate::cache::{Cache, CacheRequest, CacheResponse, Reason, Stack, Ttl};
use crate::redis::RedisBackend;

mod grpc;
pub use grpc::{GrpcCache, GrpcCacheLayer};

/// Adds response caching to an HTTP service; see the [module docs](self).
pub struct HttpCacheLayer<C = Stack<RedisBackend>> {
    cache: Cache<C>,
    config: Arc<Config>,
}

impl<C: Clone> Clone for HttpCacheLayer<C> {
    fn clone(&self) -> Self {
        HttpCacheLayer {
            cache: self.cache.clone(),
            config: self.config.clone(),
        }
    }
}

impl<C> fmt::Debug for HttpCacheLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
struct Config {
    vary: Vec<HeaderName>,
    max_body: usize,
    status_header: HeaderName,
    prefix: &'static str,
}

impl<C> HttpCacheLayer<C> {
    /// Caches responses in `cache` (whose prefix, size cap and breaker
    /// apply; its TTL settings are replaced by the responses' own).
    pub fn new(cache: Cache<C>) -> Self {
        HttpCacheLayer {
            cache,
            config: Arc::new(Config {
                vary: Vec::new(),
                max_body: 1 << 20,
                status_header: HeaderName::from_static("x-cache"),
                prefix: "http:",
            }),
        }
    }

    /// Request headers that are part of the key (like `Vary`): for example
    /// `accept-language`. Defaults to none. Names that are not valid header
    /// names are ignored.
    pub fn vary<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let vary = names
            .into_iter()
            .filter_map(|n| HeaderName::from_bytes(n.as_ref().as_bytes()).ok())
            .collect();
        Arc::make_mut(&mut self.config).vary = vary;
        self
    }

    /// Larger bodies are passed through uncached. Defaults to 1 MiB.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).max_body = bytes;
        self
    }

    /// The response header saying `hit`, `miss` or `bypass`. Defaults to
    /// `x-cache`.
    pub fn status_header(mut self, name: HeaderName) -> Self {
        Arc::make_mut(&mut self.config).status_header = name;
        self
    }
}

impl<S, C: Clone> Layer<S> for HttpCacheLayer<C> {
    type Service = HttpCache<S, C>;

    fn layer(&self, inner: S) -> HttpCache<S, C> {
        HttpCache {
            inner,
            cache: self.cache.clone(),
            config: self.config.clone(),
        }
    }
}

/// An HTTP service with response caching; made by [`HttpCacheLayer`].
pub struct HttpCache<S, C = Stack<RedisBackend>> {
    inner: S,
    cache: Cache<C>,
    config: Arc<Config>,
}

impl<S: Clone, C: Clone> Clone for HttpCache<S, C> {
    fn clone(&self) -> Self {
        HttpCache {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for HttpCache<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCache")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The response future of [`HttpCache`].
pub type ResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<CachedBody<B>>, E>> + Send>>;

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for HttpCache<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    C: Service<CacheRequest, Response = CacheResponse, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    C::Future: Send,
{
    type Response = Response<CachedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The service made ready goes into the future; a fresh clone stays.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (cache, config) = (self.cache.clone(), self.config.clone());
        Box::pin(respond(inner, cache, config, req))
    }
}

async fn respond<S, C, ReqBody, ResBody>(
    mut inner: S,
    cache: Cache<C>,
    config: Arc<Config>,
    req: Request<ReqBody>,
) -> Result<Response<CachedBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    C: Service<CacheRequest, Response = CacheResponse, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    C::Future: Send,
{
    let head = req.method() == Method::HEAD;
    if !(req.method() == Method::GET || head) || bypasses(req.headers()) {
        let res = inner.call(req).await?;
        return Ok(mark(res.map(CachedBody::inner), &config, "bypass"));
    }
    let key = key(&config, &req);
    if let Some(res) = lookup(&cache, "http", key.as_bytes(), head).await {
        return Ok(mark(res, &config, "hit"));
    }
    if head {
        // HEAD is answered from a cached GET, never stored itself.
        let res = inner.call(req).await?;
        return Ok(mark(res.map(CachedBody::inner), &config, "miss"));
    }
    // What the caching rules need of the request, kept past the call.
    let mut policy_req = Request::new(());
    *policy_req.method_mut() = req.method().clone();
    *policy_req.uri_mut() = req.uri().clone();
    *policy_req.headers_mut() = req.headers().clone();

    let max_body = config.max_body;
    let policy = &policy_req;
    through_flight(
        &cache,
        key.as_bytes(),
        &config.status_header,
        (inner, req),
        move |(mut inner, req)| async move {
            let res = inner.call(req).await?;
            Ok(buffer_if_cacheable(policy, res, max_body).await)
        },
        |(mut inner, req)| async move { Ok(inner.call(req).await?.map(CachedBody::inner)) },
    )
    .await
}

/// A cached response for `key`, if there is a valid one; an entry that does
/// not decode is counted and treated as a miss.
async fn lookup<C, B>(
    cache: &Cache<C>,
    op: &'static str,
    key: &[u8],
    head: bool,
) -> Option<Response<CachedBody<B>>>
where
    C: Service<CacheRequest, Response = CacheResponse, Error = Infallible> + Clone + Send,
    C::Future: Send,
{
    let bytes = cache.get(key).await?;
    let entry = Entry::decode(&bytes);
    if entry.is_none() {
        crate::telemetry::cache_fail_open(&Arc::from(cache.name()), op, Reason::Undecodable);
    }
    Some(entry?.into_response(head))
}

/// After a miss: the first caller for `key` runs `lead` with its request
/// through the cache's single flight (storing what it may share); callers
/// arriving meanwhile get that shared response, or, when it could not be
/// shared, run `direct` with their own request.
async fn through_flight<C, P, B, E, L, LFut, D, DFut>(
    cache: &Cache<C>,
    key: &[u8],
    header: &HeaderName,
    pending: P,
    lead: L,
    direct: D,
) -> Result<Response<CachedBody<B>>, E>
where
    C: Service<CacheRequest, Response = CacheResponse, Error = Infallible> + Clone + Send,
    C::Future: Send,
    L: FnOnce(P) -> LFut,
    LFut: Future<Output = Result<(Response<CachedBody<B>>, Option<(Bytes, Ttl)>), E>>,
    D: FnOnce(P) -> DFut,
    DFut: Future<Output = Result<Response<CachedBody<B>>, E>>,
{
    // The request goes to the service once: through the flight if this
    // caller leads, directly if the leader's answer was not shareable.
    let mut slot = Some(pending);
    let taken = &mut slot;
    let led = cache
        .coalesce(key, move || async move {
            match taken.take() {
                Some(pending) => lead(pending).await,
                None => unreachable!("a caller leads at most once"),
            }
        })
        .await?;
    match led {
        Coalesced::Led(res) => return Ok(mark_with(res, header, "miss")),
        Coalesced::Shared(bytes) => {
            if let Some(entry) = Entry::decode(&bytes) {
                return Ok(mark_with(entry.into_response(false), header, "hit"));
            }
        }
        Coalesced::Direct => {}
    }
    match slot {
        Some(pending) => Ok(mark_with(direct(pending).await?, header, "miss")),
        None => unreachable!("only the leader's request is taken, and the leader returned"),
    }
}

fn bypasses(headers: &HeaderMap) -> bool {
    if headers.contains_key(header::AUTHORIZATION) {
        return true;
    }
    let no_cache = |v: &HeaderValue| {
        v.to_str().is_ok_and(|s| {
            let s = s.to_ascii_lowercase();
            s.contains("no-cache") || s.contains("no-store")
        })
    };
    headers.get_all(header::CACHE_CONTROL).iter().any(no_cache)
        || headers.get_all(header::PRAGMA).iter().any(no_cache)
}

fn key<B>(config: &Config, req: &Request<B>) -> String {
    let mut key = String::from(config.prefix);
    key.push_str("GET ");
    key.push_str(req.uri().path());
    if let Some(q) = req.uri().query() {
        key.push('?');
        key.push_str(q);
    }
    for name in &config.vary {
        key.push('\n');
        key.push_str(name.as_str());
        key.push('=');
        for v in req.headers().get_all(name) {
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
            key.push(',');
        }
    }
    key
}

fn mark<B>(res: Response<B>, config: &Config, status: &'static str) -> Response<B> {
    mark_with(res, &config.status_header, status)
}

fn mark_with<B>(mut res: Response<B>, header: &HeaderName, status: &'static str) -> Response<B> {
    res.headers_mut()
        .insert(header.clone(), HeaderValue::from_static(status));
    res
}

/// The leader's response, and, if it may be cached, its encoded entry and
/// TTL.
async fn buffer_if_cacheable<B>(
    req: &Request<()>,
    res: Response<B>,
    max_body: usize,
) -> (Response<CachedBody<B>>, Option<(Bytes, Ttl)>)
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let Some(ttl) = cacheable_for(req, &res, max_body) else {
        return (res.map(CachedBody::inner), None);
    };
    let (parts, body) = res.into_parts();
    let limited = http_body_util::Limited::new(body, max_body);
    match limited.collect().await {
        Ok(collected) => {
            let body = collected.to_bytes();
            let entry = Entry {
                status: parts.status,
                headers: parts.headers.clone(),
                body: body.clone(),
                trailers: None,
            };
            let res = Response::from_parts(parts, CachedBody::full(body));
            (res, Some((entry.encode(), Ttl::After(ttl))))
        }
        // The body failed (or lied about its length): the client sees the
        // failure; nothing is stored.
        Err(e) => (Response::from_parts(parts, CachedBody::failed(e)), None),
    }
}

/// How long the response may be cached, if at all.
fn cacheable_for<B: Body>(
    req: &Request<()>,
    res: &Response<B>,
    max_body: usize,
) -> Option<Duration> {
    if res.status() != StatusCode::OK || res.headers().contains_key(header::SET_COOKIE) {
        return None;
    }
    let length = res.body().size_hint().exact()?;
    if length > max_body as u64 {
        return None;
    }
    // Vary must name only headers already in the key... which are the
    // configured ones; any Vary at all is refused unless configured.
    let policy = http_cache_semantics::CachePolicy::new(req, &ResponseHead(res));
    if !policy.is_storable() {
        return None;
    }
    let ttl = policy.time_to_live(SystemTime::now());
    (ttl >= Duration::from_millis(1)).then_some(ttl)
}

/// A response's head, for the caching rules (they never read the body).
struct ResponseHead<'a, B>(&'a Response<B>);

impl<B> http_cache_semantics::ResponseLike for ResponseHead<'_, B> {
    fn status(&self) -> StatusCode {
        self.0.status()
    }
    fn headers(&self) -> &HeaderMap {
        self.0.headers()
    }
}

/// A cached response: status, headers, body, and trailers (gRPC).
#[derive(Debug, PartialEq)]
struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

const MAGIC: &[u8; 4] = b"FBH1";

/// Headers that describe one connection, never stored.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-connection"
            | "te"
            | "trailer"
    )
}

impl Entry {
    fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.body.len() + 256);
        out.put_slice(MAGIC);
        out.put_u16(self.status.as_u16());
        put_headers(&mut out, &self.headers);
        out.put_u64(self.body.len() as u64);
        out.put_slice(&self.body);
        match &self.trailers {
            None => out.put_u32(u32::MAX),
            Some(trailers) => put_headers(&mut out, trailers),
        }
        out.freeze()
    }

    /// `None` for anything that is not a whole, valid entry.
    fn decode(bytes: &Bytes) -> Option<Entry> {
        let mut b = bytes.clone();
        if b.remaining() < 4 || &b[..4] != MAGIC {
            return None;
        }
        b.advance(4);
        let status = StatusCode::from_u16(take_u16(&mut b)?).ok()?;
        let count = take_u32(&mut b)?;
        let headers = take_headers(&mut b, count)?;
        let n = usize::try_from(take_u64(&mut b)?).ok()?;
        let body = take(&mut b, n)?;
        let trailers = match take_u32(&mut b)? {
            u32::MAX => None,
            count => Some(take_headers(&mut b, count)?),
        };
        b.is_empty().then_some(Entry {
            status,
            headers,
            body,
            trailers,
        })
    }

    fn into_response<B>(self, head: bool) -> Response<CachedBody<B>> {
        let body = if head { Bytes::new() } else { self.body };
        let mut res = Response::new(CachedBody::with_trailers(body, self.trailers));
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers;
        res
    }
}

fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    let kept: Vec<_> = headers.iter().filter(|(n, _)| !hop_by_hop(n)).collect();
    out.put_u32(kept.len() as u32);
    for (name, value) in kept {
        out.put_u32(name.as_str().len() as u32);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
}

fn take_headers(b: &mut Bytes, count: u32) -> Option<HeaderMap> {
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let n = take_u32(b)? as usize;
        let name = HeaderName::from_bytes(&take(b, n)?).ok()?;
        let n = take_u32(b)? as usize;
        let value = HeaderValue::from_maybe_shared(take(b, n)?).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

fn take_u16(b: &mut Bytes) -> Option<u16> {
    (b.remaining() >= 2).then(|| b.get_u16())
}

fn take_u32(b: &mut Bytes) -> Option<u32> {
    (b.remaining() >= 4).then(|| b.get_u32())
}

fn take_u64(b: &mut Bytes) -> Option<u64> {
    (b.remaining() >= 8).then(|| b.get_u64())
}

fn take(b: &mut Bytes, n: usize) -> Option<Bytes> {
    (b.remaining() >= n).then(|| b.split_to(n))
}

pin_project! {
    /// The body of an [`HttpCache`] response: a cached or buffered body, or
    /// the handler's own, streamed through.
    pub struct CachedBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Inner { #[pin] body: B },
        Failed { error: Option<BoxError> },
    }
}

impl<B> CachedBody<B> {
    fn full(data: Bytes) -> Self {
        Self::with_trailers(data, None)
    }

    fn with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        let data = (!data.is_empty()).then_some(data);
        CachedBody {
            kind: Kind::Full { data, trailers },
        }
    }

    fn inner(body: B) -> Self {
        CachedBody {
            kind: Kind::Inner { body },
        }
    }

    fn failed(error: BoxError) -> Self {
        CachedBody {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<B> fmt::Debug for CachedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CachedBody")
    }
}

impl<B> Body for CachedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Full { data, trailers } => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(t))),
            }),
            KindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body } => body.size_hint(),
            Kind::Failed { .. } => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let e = Entry {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"<html>"),
            trailers: Some(trailers),
        };
        let bytes = e.encode();
        let back = Entry::decode(&bytes).unwrap();
        assert_eq!(back.body, e.body);
        assert_eq!(back.trailers, e.trailers);
        assert_eq!(back.headers.get_all("x-multi").iter().count(), 2);
        assert!(
            !back.headers.contains_key(header::CONNECTION),
            "hop-by-hop dropped"
        );
        for cut in 0..bytes.len() {
            assert!(Entry::decode(&bytes.slice(..cut)).is_none());
        }
        assert!(Entry::decode(&Bytes::from_static(b"garbage")).is_none());
        let mut extra = bytes.to_vec();
        extra.push(0);
        assert!(Entry::decode(&Bytes::from(extra)).is_none());
    }
}
