//! Response caching for HTTP services (axum, hyper, tonic's transport),
//! through the fail-open [`Cache`]. Feature `http`.
//!
//! ```
//! use axum::{routing::get, Router};
//! use fusebox::cache::Cache;
//! use fusebox::http::HttpCacheLayer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::builder().name("pages").redis_url("redis://127.0.0.1:6379").build()?;
//! // Pages that differ by language: cached per host, path, query and
//! // Accept-Language. Requests with a cookie or credentials bypass it.
//! let pages = Router::new()
//!     .route("/page/{id}", get(|| async { ([("cache-control", "public, max-age=60")], "page") }))
//!     .layer(HttpCacheLayer::new(cache.clone()).vary(["accept-language"]));
//! // Assets that are the same for everyone, cookies or not.
//! let assets = Router::new()
//!     .route("/logo.svg", get(|| async { ([("cache-control", "max-age=3600")], "<svg/>") }))
//!     .layer(HttpCacheLayer::new(cache).public());
//! let app: Router = pages.merge(assets);
//! # Ok(()) }
//! ```
//!
//! * Caches successful responses to `GET` (and answers `HEAD` from them).
//! * **The key** is the scheme (when the request has one, as HTTP/2
//!   requests do), the host (the URI's authority, else `Host`;
//!   lower-cased), the path and query, the request headers named with
//!   [`vary`](HttpCacheLayer::vary), and `Forwarded`, `X-Forwarded-Host`
//!   and `X-Forwarded-Proto` when present. A request whose URI and `Host`
//!   name different hosts is not cached. Keys over 256 bytes, and keys
//!   holding a credential, are stored as a SHA-256 hash.
//! * **Per-caller requests bypass the cache**: a request with
//!   `Authorization`, `Proxy-Authorization`, `Cookie` (or another header
//!   named with [`credential_headers`](HttpCacheLayer::credential_headers))
//!   reaches the handler and its response is not stored, unless that header
//!   is in the key (`vary(["cookie"])`: one entry per cookie) or the layer
//!   is declared [`public`](HttpCacheLayer::public).
//! * **Whether, and how long**, follows the response's `Cache-Control`
//!   (`no-store`, `private`, `max-age`, `s-maxage`, `Expires`…), decided by
//!   the [`http-cache-semantics`](https://docs.rs/http-cache-semantics) crate
//!   from the point of view of a shared cache. Responses that set cookies,
//!   that say `Vary: *`, or that vary on a request header not in the key
//!   (`Vary: Accept-Encoding` with no `vary(["accept-encoding"])`) are not
//!   stored. A response without an explicit lifetime (only a
//!   `Last-Modified`) is not stored unless
//!   [`heuristic_freshness`](HttpCacheLayer::heuristic_freshness) is set.
//! * Only bodies of known length up to a cap (default 1 MiB) are buffered;
//!   anything else streams through uncached.
//! * **Stale responses** (RFC 5861): a response with
//!   `stale-while-revalidate=N` is kept N seconds past its freshness, and
//!   served from the cache meanwhile (marked `stale`) while one request at
//!   a time per key revalidates it in the background; one with
//!   `stale-if-error=N` is kept N seconds more and served (marked `stale`)
//!   only when the handler fails meanwhile (an error or a 5xx).
//! * A response header (default `x-cache`) says `hit` (from the cache, or
//!   shared from a concurrent miss), `stale`, `miss` or `bypass`
//!   (not a `GET`/`HEAD`, a per-caller request, or one with
//!   `Cache-Control: no-cache`/`no-store`).
//! * Concurrent misses for one key are coalesced: one request reaches the
//!   handler; the others get its response if it may be shared, or go to the
//!   handler themselves if not.
//! * Fail-open: with the cache down, hung or full, every request still
//!   reaches the handler, within the cache's deadline (nanoseconds once its
//!   breaker is open).
//!
//! A handler that reads a request header the key does not hold (a tenant
//! header, say) must have it named in `vary`, or responses made for one
//! value are served to requests with another.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body;
use tower::{BoxError, Layer, Service};

use crate::cache::{Backend, Cache, Reason, Ttl};
use crate::flight::Coalesced;
use crate::redis::RedisBackend;

mod body;
mod breaker;
mod entry;
mod grpc;
mod key;
mod policy;
mod stale;

pub use body::CachedBody;
pub use breaker::{
    GrpcBreakerLayer, GrpcErrors, HttpBreaker, HttpBreakerLayer, ResponseFuture as BreakerFuture,
    ServerErrors,
};
use entry::{Entry, Use};
pub use grpc::{GrpcCache, GrpcCacheLayer};
use key::Scope;
use policy::buffer_if_cacheable;

/// Adds response caching to an HTTP service; see the [module docs](self).
pub struct HttpCacheLayer<C = RedisBackend> {
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
    scope: Scope,
    max_body: usize,
    status_header: HeaderName,
    /// The fraction of the time since `Last-Modified` a response without an
    /// explicit lifetime is kept for; 0 stores none.
    heuristic: f32,
}

impl<C> HttpCacheLayer<C> {
    /// Caches responses in `cache` (whose prefix, size cap and breaker
    /// apply; its TTL settings are replaced by the responses' own).
    pub fn new(cache: Cache<C>) -> Self {
        HttpCacheLayer {
            cache,
            config: Arc::new(Config {
                scope: Scope::new(),
                max_body: 1 << 20,
                status_header: HeaderName::from_static("x-cache"),
                heuristic: 0.0,
            }),
        }
    }

    /// Request headers that are part of the key (like `Vary`): for example
    /// `accept-language`, or `cookie` for one entry per cookie (such keys
    /// are hashed). Defaults to none; each call replaces the list. Names
    /// that are not valid header names are ignored.
    pub fn vary<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        Arc::make_mut(&mut self.config).scope.vary = key::header_names(names);
        self
    }

    /// More request headers that carry a caller's identity (an API key
    /// header, say): requests with one bypass the cache unless it is in
    /// [`vary`](Self::vary). `Authorization`, `Proxy-Authorization` and
    /// `Cookie` always are.
    pub fn credential_headers<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let names = key::header_names(names);
        Arc::make_mut(&mut self.config).scope.add_credentials(names);
        self
    }

    /// Declares that the routes under this layer answer the same whoever
    /// asks: credentials and cookies no longer keep a request out of the
    /// cache. For assets and public pages only; a response marked
    /// `private`, or one to a request with `Authorization` that is not
    /// marked `public`, `s-maxage` or `must-revalidate`, is still never
    /// stored.
    pub fn public(mut self) -> Self {
        Arc::make_mut(&mut self.config).scope.public = true;
        self
    }

    /// Stores responses that give no lifetime (no `max-age`, `s-maxage` or
    /// `Expires`) but a `Last-Modified`, for `percent` % of the time since
    /// (RFC 9111 heuristic freshness; browsers use 10). Off by default, as
    /// static-file handlers send `Last-Modified` on content that may change
    /// at any time. Values above 100 count as 100.
    pub fn heuristic_freshness(mut self, percent: u8) -> Self {
        Arc::make_mut(&mut self.config).heuristic = f32::from(percent.min(100)) / 100.0;
        self
    }

    /// Larger bodies are passed through uncached. Defaults to 1 MiB.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).max_body = bytes;
        self
    }

    /// The response header saying `hit`, `stale`, `miss` or `bypass`. Defaults to
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
pub struct HttpCache<S, C = RedisBackend> {
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
    C: Backend + Sync,
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
    C: Backend + Sync,
{
    let head = req.method() == Method::HEAD;
    let key = (req.method() == Method::GET || head)
        .then(|| key::request(&config.scope, &req))
        .flatten();
    let Some(key) = key else {
        let res = inner.call(req).await?;
        return Ok(mark(res.map(CachedBody::inner), &config, "bypass"));
    };
    // Fresh: a hit. Stale (RFC 5861): served while revalidated in the
    // background, or kept for the case the handler fails.
    let mut if_error = None;
    if let Some(entry) = cached_entry(&cache, "http", &key).await {
        match entry.lifetime.map_or(Use::Fresh, |l| l.at(entry::now_ms())) {
            Use::Fresh => return Ok(mark(entry.into_response(head), &config, "hit")),
            Use::Revalidate => {
                if !head {
                    stale::revalidate(inner, cache, config.clone(), req, key);
                }
                return Ok(mark(entry.into_response(head), &config, "stale"));
            }
            Use::IfError => if_error = Some(entry),
            Use::Expired => {}
        }
    }
    if head {
        // HEAD is answered from a cached GET, never stored itself.
        let res = (inner.call(req).await).map(|r| mark(r.map(CachedBody::inner), &config, "miss"));
        return stale::or_stale(res, if_error, &config, true);
    }
    // What the caching rules need of the request, kept past the call.
    let mut policy_req = Request::new(());
    *policy_req.method_mut() = req.method().clone();
    *policy_req.uri_mut() = req.uri().clone();
    *policy_req.headers_mut() = req.headers().clone();

    let rules = &*config;
    let policy = &policy_req;
    let res = through_flight(
        &cache,
        &key,
        &config.status_header,
        (inner, req),
        move |(mut inner, req)| async move {
            let res = inner.call(req).await?;
            Ok(buffer_if_cacheable(rules, policy, res).await)
        },
        |(mut inner, req)| async move { Ok(inner.call(req).await?.map(CachedBody::inner)) },
    )
    .await;
    stale::or_stale(res, if_error, &config, false)
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
    C: Backend,
{
    Some(cached_entry(cache, op, key).await?.into_response(head))
}

/// The cached entry for `key`, if there is a valid one; an entry that
/// does not decode is counted and treated as a miss.
async fn cached_entry<C: Backend>(cache: &Cache<C>, op: &'static str, key: &[u8]) -> Option<Entry> {
    let bytes = cache.get(key).await?;
    let entry = Entry::decode(&bytes);
    if entry.is_none() {
        crate::telemetry::cache_fail_open(
            &Arc::from(cache.name()),
            op,
            Reason::Undecodable.as_str(),
        );
    }
    entry
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
    C: Backend,
    L: FnOnce(P) -> LFut,
    LFut: Future<Output = Result<(Response<CachedBody<B>>, Option<(Bytes, Ttl)>), E>>,
    D: FnOnce(P) -> DFut,
    DFut: Future<Output = Result<Response<CachedBody<B>>, E>>,
{
    // The request goes to the service once: through the flight if this
    // caller leads, directly if the leader's answer was not shareable (or
    // was not an entry: a user's own value under the same key).
    let pending = match cache.coalesce(key, pending, lead).await? {
        Coalesced::Led(res) => return Ok(mark_with(res, header, "miss")),
        Coalesced::Shared(bytes, pending) => match Entry::decode(&bytes) {
            Some(entry) => return Ok(mark_with(entry.into_response(false), header, "hit")),
            None => pending,
        },
        Coalesced::Direct(pending) => pending,
    };
    Ok(mark_with(direct(pending).await?, header, "miss"))
}

fn mark<B>(res: Response<B>, config: &Config, status: &'static str) -> Response<B> {
    mark_with(res, &config.status_header, status)
}

fn mark_with<B>(mut res: Response<B>, header: &HeaderName, status: &'static str) -> Response<B> {
    res.headers_mut()
        .insert(header.clone(), HeaderValue::from_static(status));
    res
}
