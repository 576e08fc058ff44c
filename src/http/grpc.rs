//! Caching of unary gRPC responses in a server, through the fail-open
//! [`Cache`]: a tower layer for tonic (or any gRPC-over-HTTP/2 server).
//!
//! gRPC has no `Cache-Control`: the methods to cache and their TTL are
//! configured. The key is the method path, then a SHA-256 hash of the
//! authority, the metadata named with [`vary`](GrpcCacheLayer::vary) and
//! the request message. Calls with `authorization` or `cookie` metadata
//! (or other metadata named with
//! [`credential_metadata`](GrpcCacheLayer::credential_metadata)) bypass
//! the cache, unless it is in the key or the layer is
//! [`public`](GrpcCacheLayer::public). Only responses that end with
//! `grpc-status: 0` are stored, with their headers, message and trailers; a
//! hit replays them. Concurrent misses for one key reach the service once.
//! With the cache down, every call reaches the service.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tower::{BoxError, Layer, Service};

use super::directives::{millis, now_ms};
use super::entry::{Lifetime, Use};
use super::key::{self, Scope};
use super::serve::{cached_entry, through_flight};
use super::status::Outcome;
use super::{mark_with, CachedBody, Entry, ResponseFuture};
use crate::backend::RedisBackend;
use crate::cache::{Backend, Cache, Placed, Ttl};

/// gRPC's default largest message; longer requests are refused as a gRPC
/// server would (`RESOURCE_EXHAUSTED`).
const HARD_MAX: usize = 4 << 20;

/// Adds caching of configured unary methods to a gRPC server.
///
/// * Only the methods named with [`method`](Self::method) are cached, for
///   their TTL (gRPC has no `Cache-Control`).
/// * The key is the method path, then a SHA-256 hash of the authority, the
///   metadata named with [`vary`](Self::vary) and the request message (so
///   keys stay short and hold no token).
/// * Calls with `authorization`, `proxy-authorization` or `cookie` metadata
///   (or metadata named with [`credential_metadata`](Self::credential_metadata))
///   bypass the cache, unless it is in the key or the layer is
///   [`public`](Self::public).
/// * Only responses ending in `grpc-status: 0` are stored, with their
///   trailers; concurrent misses are coalesced; with the cache down, every
///   call reaches the service.
pub struct GrpcCacheLayer<B, C = RedisBackend> {
    cache: Cache<C>,
    config: Arc<Config>,
    rebuild: fn(Bytes) -> B,
}

#[derive(Clone, Debug)]
struct Config {
    methods: HashMap<String, Duration>,
    scope: Scope,
    max_message: usize,
    status_header: HeaderName,
}

impl<B, C: Clone> Clone for GrpcCacheLayer<B, C> {
    fn clone(&self) -> Self {
        GrpcCacheLayer {
            cache: self.cache.clone(),
            config: self.config.clone(),
            rebuild: self.rebuild,
        }
    }
}

impl<B, C> fmt::Debug for GrpcCacheLayer<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCacheLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<B, C> GrpcCacheLayer<B, C> {
    /// Caches in `cache`. The request body is read to build the key, so the
    /// layer needs to make a new one from the bytes: for tonic,
    /// `|b| tonic::body::Body::new(http_body_util::Full::new(b))`.
    pub fn new(cache: Cache<C>, rebuild: fn(Bytes) -> B) -> Self {
        GrpcCacheLayer {
            cache,
            config: Arc::new(Config {
                methods: HashMap::new(),
                scope: Scope::new(),
                max_message: 64 << 10,
                status_header: HeaderName::from_static("x-cache"),
            }),
            rebuild,
        }
    }

    /// Caches the unary method at `path` (`/package.Service/Method`) for
    /// `ttl`. Methods not named are never cached.
    pub fn method(mut self, path: impl Into<String>, ttl: Duration) -> Self {
        Arc::make_mut(&mut self.config)
            .methods
            .insert(path.into(), ttl);
        self
    }

    /// Request metadata that is part of the key: `x-tenant`, say, or
    /// `authorization` for one entry per caller (hashed like the rest).
    /// Defaults to none; each call replaces the list. Names that are not
    /// valid metadata keys are ignored.
    pub fn vary<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        Arc::make_mut(&mut self.config).scope.vary = key::header_names(names);
        self
    }

    /// More metadata that carries a caller's identity (`x-api-key`, say):
    /// calls with it bypass the cache unless it is in [`vary`](Self::vary).
    /// `authorization`, `proxy-authorization` and `cookie` always do.
    pub fn credential_metadata<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        let names = key::header_names(names);
        Arc::make_mut(&mut self.config).scope.add_credentials(names);
        self
    }

    /// Declares that the cached methods answer the same whoever calls:
    /// credentials no longer keep a call out of the cache.
    pub fn public(mut self) -> Self {
        Arc::make_mut(&mut self.config).scope.public = true;
        self
    }

    /// Requests larger than this are not cached (they are still served).
    /// Defaults to 64 KiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).max_message = bytes;
        self
    }
}

impl<S, B, C: Clone> Layer<S> for GrpcCacheLayer<B, C> {
    type Service = GrpcCache<S, B, C>;

    fn layer(&self, inner: S) -> GrpcCache<S, B, C> {
        GrpcCache {
            inner,
            cache: self.cache.clone(),
            config: self.config.clone(),
            rebuild: self.rebuild,
        }
    }
}

/// A gRPC server with unary response caching; made by [`GrpcCacheLayer`].
pub struct GrpcCache<S, B, C = RedisBackend> {
    inner: S,
    cache: Cache<C>,
    config: Arc<Config>,
    rebuild: fn(Bytes) -> B,
}

impl<S: Clone, B, C: Clone> Clone for GrpcCache<S, B, C> {
    fn clone(&self) -> Self {
        GrpcCache {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            config: self.config.clone(),
            rebuild: self.rebuild,
        }
    }
}

impl<S: fmt::Debug, B, C> fmt::Debug for GrpcCache<S, B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCache")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, B, C, ResBody> Service<Request<B>> for GrpcCache<S, B, C>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
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

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(ttl) = self.config.methods.get(req.uri().path()).copied() else {
            return Box::pin(async move { Ok(inner.call(req).await?.map(CachedBody::inner)) });
        };
        let (cache, config, rebuild) = (self.cache.clone(), self.config.clone(), self.rebuild);
        Box::pin(async move {
            let (name, counted) = (cache.label().clone(), config.clone());
            let res = respond(inner, cache, config, rebuild, ttl, req).await;
            if let Ok(res) = &res {
                super::serve::count(res, &counted.status_header, &name, "grpc", true);
            }
            res
        })
    }
}

async fn respond<S, B, C, ResBody>(
    inner: S,
    cache: Cache<C>,
    config: Arc<Config>,
    rebuild: fn(Bytes) -> B,
    ttl: Duration,
    req: Request<B>,
) -> Result<Response<CachedBody<ResBody>>, S::Error>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    C: Backend + Sync,
{
    let (parts, body) = req.into_parts();
    let Ok(collected) = http_body_util::Limited::new(body, HARD_MAX).collect().await else {
        return Ok(grpc_error(8, "request message too large or unreadable"));
    };
    let message = collected.to_bytes();
    let mut inner = inner;
    let key = (message.len() <= config.max_message)
        .then(|| key(&config.scope, &parts, &message))
        .flatten();
    let Some(key) = key else {
        let req = Request::from_parts(parts, rebuild(message));
        let res = inner.call(req).await?;
        return Ok(mark_with(
            res.map(CachedBody::inner),
            &config.status_header,
            "bypass",
        ));
    };
    let header = &config.status_header;
    // A reply past its method's TTL is never served, even if the cache
    // still holds it (a near cache's copy while Redis is down).
    if let Some(entry) = cached_entry(&cache, "grpc", &key).await {
        let now = now_ms();
        if entry.lifetime.at(now) == Use::Fresh {
            return Ok(mark_with(entry.into_response(false, now), header, "hit"));
        }
    }
    let at = key.clone();
    through_flight(
        &cache,
        (&key, 0),
        (header, &mut Outcome::default(), &|_| true),
        (inner, parts, message),
        move |(mut inner, parts, message)| async move {
            let res = inner
                .call(Request::from_parts(parts, rebuild(message)))
                .await?;
            let (res, share) = buffer_if_ok(res, ttl).await;
            let place = |(bytes, ttl)| {
                let placed = Placed {
                    ttl,
                    at,
                    index: None,
                };
                (bytes, placed)
            };
            Ok((res, share.map(place)))
        },
        move |(mut inner, parts, message)| async move {
            let res = inner
                .call(Request::from_parts(parts, rebuild(message)))
                .await?;
            Ok(res.map(CachedBody::inner))
        },
    )
    .await
}

/// The key of a call: the method path in clear, then a hash of the
/// authority, the keyed metadata and the message. `None` for a call with
/// an unkeyed credential, or naming two hosts.
fn key(scope: &Scope, parts: &http::request::Parts, message: &[u8]) -> Option<Vec<u8>> {
    if scope.is_personal(&parts.headers) {
        return None;
    }
    let host = key::authority(&parts.uri, &parts.headers)?;
    let path = parts.uri.path().as_bytes();
    let mut plain = Vec::with_capacity(8 + path.len() + host.len() + message.len());
    plain.extend_from_slice(b"grpc:");
    plain.extend_from_slice(path);
    let readable = plain.len();
    plain.extend_from_slice(b"\n//");
    plain.extend_from_slice(host.as_bytes());
    scope.push_lines(&mut plain, &parts.headers);
    // A blank line ends the metadata; the message is the rest.
    plain.extend_from_slice(b"\n\n");
    plain.extend_from_slice(message);
    Some(key::finish(plain, readable, true))
}

/// Reads the whole unary response; shares it if it ended with status 0.
async fn buffer_if_ok<B>(
    res: Response<B>,
    ttl: Duration,
) -> (Response<CachedBody<B>>, Option<(Bytes, Ttl)>)
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = res.into_parts();
    let collected = match http_body_util::Limited::new(body, HARD_MAX).collect().await {
        Ok(c) => c,
        Err(e) => return (Response::from_parts(parts, CachedBody::failed(e)), None),
    };
    let trailers = collected.trailers().cloned();
    let data = collected.to_bytes();
    let status_of = |h: Option<&http::HeaderMap>| {
        h.and_then(|h| h.get("grpc-status"))
            .map(|v| v.as_bytes() == b"0")
    };
    // Status 0 in the trailers, or in the headers of a trailers-only answer.
    let ok = parts.status == StatusCode::OK
        && status_of(trailers.as_ref()).or_else(|| status_of(Some(&parts.headers))) == Some(true);
    let share = ok.then(|| {
        let entry = Entry {
            status: parts.status,
            headers: parts.headers.clone(),
            body: data.clone(),
            trailers: trailers.clone(),
            lifetime: Lifetime::fresh_for(now_ms(), millis(ttl)),
            variant: None,
        };
        (entry.encode(), Ttl::After(ttl))
    });
    (
        Response::from_parts(parts, CachedBody::with_trailers(data, trailers)),
        share,
    )
}

/// A trailers-only gRPC error response.
fn grpc_error<B>(code: u8, message: &'static str) -> Response<CachedBody<B>> {
    let mut res = Response::new(CachedBody::full(Bytes::new()));
    let headers = res.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    res
}
