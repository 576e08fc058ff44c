//! Whether, and for how long, a response may be stored (RFC 9111, from a
//! shared cache's point of view), and buffering the ones that may.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tower::BoxError;

use super::entry::{now_ms, Lifetime};
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
            // Kept past its freshness for as long as it may be served
            // stale (RFC 5861).
            let (revalidate, if_error) = stale_windows(&parts.headers);
            let lifetime = (!revalidate.is_zero() || !if_error.is_zero()).then(|| Lifetime {
                stored: now_ms(),
                fresh: millis(ttl),
                revalidate: millis(revalidate),
                if_error: millis(if_error),
            });
            let kept = ttl.saturating_add(revalidate.max(if_error));
            let entry = Entry {
                status: parts.status,
                headers: parts.headers.clone(),
                body: body.clone(),
                trailers: None,
                lifetime,
            };
            let res = Response::from_parts(parts, CachedBody::full(body));
            (res, Some((entry.encode(), Ttl::After(kept))))
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

/// The `stale-while-revalidate` and `stale-if-error` windows of a
/// response's `Cache-Control` (RFC 5861); zero where absent or invalid.
pub(super) fn stale_windows(headers: &HeaderMap) -> (Duration, Duration) {
    let (mut revalidate, mut if_error) = (Duration::ZERO, Duration::ZERO);
    let directives = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for directive in directives {
        let Some((name, value)) = directive.split_once('=') else {
            continue;
        };
        let Ok(secs) = value.trim().trim_matches('"').parse::<u64>() else {
            continue;
        };
        let window = Duration::from_secs(secs);
        match name.trim().to_ascii_lowercase().as_str() {
            "stale-while-revalidate" => revalidate = window,
            "stale-if-error" => if_error = window,
            _ => {}
        }
    }
    (revalidate, if_error)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
