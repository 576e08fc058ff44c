//! Whether, and for how long, a response may be stored (RFC 9111, from a
//! shared cache's point of view), and buffering the ones that may.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tower::BoxError;

use super::{CachedBody, Config, Entry};
use crate::cache::Ttl;

/// The leader's response, and, if it may be cached, its encoded entry and
/// TTL.
pub(super) async fn buffer_if_cacheable<B>(
    config: &Config,
    req: &Request<()>,
    res: Response<B>,
) -> (Response<CachedBody<B>>, Option<(Bytes, Ttl)>)
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let Some(ttl) = cacheable_for(config, req, &res) else {
        return (res.map(CachedBody::inner), None);
    };
    let (parts, body) = res.into_parts();
    let limited = http_body_util::Limited::new(body, config.max_body);
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
    config: &Config,
    req: &Request<()>,
    res: &Response<B>,
) -> Option<Duration> {
    let headers = res.headers();
    if res.status() != StatusCode::OK
        || headers.contains_key(header::SET_COOKIE)
        || !config.scope.covers_vary(headers)
    {
        return None;
    }
    let length = res.body().size_hint().exact()?;
    if length > config.max_body as u64 {
        return None;
    }
    let now = SystemTime::now();
    let options = http_cache_semantics::CacheOptions {
        shared: true,
        cache_heuristic: config.heuristic,
        immutable_min_time_to_live: Duration::ZERO,
        ignore_cargo_cult: false,
    };
    let policy =
        http_cache_semantics::CachePolicy::new_options(req, &ResponseHead(res), now, options);
    if !policy.is_storable() {
        return None;
    }
    let ttl = policy.time_to_live(now);
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
