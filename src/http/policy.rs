//! Whether, and for how long, a response may be stored (RFC 9111, from a
//! shared cache's point of view), and buffering the ones that may.

use bytes::Bytes;
use http::header;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tower::BoxError;

use super::directives::{self, Directives};
use super::entry::Lifetime;
use super::{targeted, validate, variant};
use super::{CachedBody, Config, Entry};
use crate::cache::{Placed, Ttl};

/// The leader's response, and, if it may be cached, its encoded entry and
/// where to store it: at `key` (the URL's), or, for a response that varies
/// on request headers the key does not hold, in its variant's slot with an
/// index at `key`. `requested` is when the request was sent to the
/// handler (ms since the epoch).
pub(super) async fn buffer_if_cacheable<B>(
    config: &Config,
    req: &Request<()>,
    key: &[u8],
    requested: u64,
    res: Response<B>,
) -> (Response<CachedBody<B>>, Option<(Bytes, Placed)>)
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let received = directives::now_ms();
    let length = res.body().size_hint().exact();
    let lifetime = length
        .filter(|&n| n <= config.max_body as u64)
        .and_then(|_| {
            lifetime_of(
                config,
                req,
                res.status(),
                res.headers(),
                requested,
                received,
            )
        });
    let Some(lifetime) = lifetime else {
        return (res.map(CachedBody::inner), None);
    };
    let (parts, body) = res.into_parts();
    let limited = http_body_util::Limited::new(body, config.max_body);
    match limited.collect().await {
        Ok(collected) => {
            let body = collected.to_bytes();
            let names = variant::names(&config.scope, &parts.headers).unwrap_or_default();
            let id = (!names.is_empty()).then(|| variant::id(&names, req.headers()));
            let entry = Entry {
                status: parts.status,
                headers: parts.headers.clone(),
                body: body.clone(),
                trailers: None,
                lifetime,
                variant: id,
            };
            let ttl = ttl_of(config, &entry);
            let placed = match id {
                Some(id) => Placed {
                    ttl,
                    at: variant::slot(key, &id, config.max_variants),
                    index: Some((key.to_vec(), variant::index(&names))),
                },
                None => Placed {
                    ttl,
                    at: key.to_vec(),
                    index: None,
                },
            };
            let res = Response::from_parts(parts, CachedBody::full(body));
            (res, Some((entry.encode(), placed)))
        }
        // The body failed (or lied about its length): the client sees the
        // failure; nothing is stored.
        Err(e) => (Response::from_parts(parts, CachedBody::failed(e)), None),
    }
}

/// The lifetime to store a response with, if it may be stored at all by a
/// shared cache (RFC 9111 §3, §4.2); `received` is when it arrived.
pub(super) fn lifetime_of(
    config: &Config,
    req: &Request<()>,
    status: StatusCode,
    headers: &HeaderMap,
    requested: u64,
    received: u64,
) -> Option<Lifetime> {
    // §3: final statuses only; `206` (ranges are not stored) and `304`
    // (an answer to a validation, not a response to keep) are never stored.
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || headers.contains_key(header::SET_COOKIE)
        || !storable_vary(config, headers)
    {
        return None;
    }
    // RFC 9213: a valid targeted field replaces `Cache-Control` and
    // `Expires` for this cache.
    let targeted = targeted::directives(headers, &config.targeted);
    let explicit_only = targeted.is_some();
    let cc = targeted.unwrap_or_else(|| Directives::of(headers));
    // Qualified `private`/`no-cache` count whole (the safe reading).
    // `no-cache`: stored only with a validator, and validated on every use.
    if cc.no_store
        || cc.private
        || (cc.no_cache && !validate::has_validator(headers))
        || Directives::of(req.headers()).no_store
    {
        return None;
    }
    // §3.5: a response to a request with credentials only if it says so.
    if req.headers().contains_key(header::AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return None;
    }
    // A missing or invalid `Date` is the time the response arrived.
    let date = directives::date(headers, &header::DATE)
        .flatten()
        .unwrap_or(received);
    let fresh = freshness(config, &cc, (status, headers), date, explicit_only);
    // `no-cache`: storable with a lifetime or a heuristically cacheable
    // status (§3), and never fresh.
    let mut fresh = match cc.no_cache {
        true if fresh.is_some() || heuristically_cacheable(status) => 0,
        _ => fresh?,
    };
    if status.as_u16() >= 400 {
        fresh = fresh.min(config.max_error_freshness);
    }
    // §4.2.3, in ms. `Date` has a resolution of one second: a response
    // dated this second is not yet old.
    let apparent = (received / 1000).saturating_sub(date / 1000) * 1000;
    let corrected = directives::age(headers)
        .unwrap_or(0)
        .saturating_mul(1000)
        .saturating_add(received.saturating_sub(requested));
    let window = |d: Option<directives::Delta>| d.map_or(0, directives::Delta::millis);
    let (revalidate, if_error) = match cc.allows_stale() {
        true => (
            window(cc.stale_while_revalidate),
            window(cc.stale_if_error).max(config.stale_on_error),
        ),
        false => (0, 0),
    };
    let lifetime = Lifetime {
        requested,
        stored: received,
        age: apparent.max(corrected),
        fresh,
        revalidate,
        if_error,
    };
    (kept(config, &lifetime, headers) > 0).then_some(lifetime)
}

/// Whether a response's `Vary` lets it be stored: never `*`; headers the
/// key does not hold only while variants are.
fn storable_vary(config: &Config, headers: &HeaderMap) -> bool {
    variant::names(&config.scope, headers)
        .is_some_and(|names| names.is_empty() || config.max_variants > 0)
}

/// How long Redis keeps an entry (ms): while it may be served, fresh or
/// stale, and, when it has a validator, for the layer's
/// `keep_for_validation` past its freshness.
fn kept(config: &Config, lifetime: &Lifetime, headers: &HeaderMap) -> u64 {
    let validation = match validate::has_validator(headers) {
        true => config.keep_for_validation,
        false => 0,
    };
    let left = lifetime.fresh.saturating_sub(lifetime.age);
    lifetime.kept().max(left.saturating_add(validation))
}

/// The TTL to store `entry` with.
pub(super) fn ttl_of(config: &Config, entry: &Entry) -> Ttl {
    let ms = kept(config, &entry.lifetime, &entry.headers);
    Ttl::After(std::time::Duration::from_millis(ms))
}

/// The freshness lifetime in ms (§4.2.1): `s-maxage`, else `max-age`,
/// else `Expires` minus `Date` (an invalid `Expires` is already expired,
/// §5.3; ignored under a targeted field), else, when heuristics are on and
/// the status is heuristically cacheable, their share of the time since
/// `Last-Modified`; `None` when there is none.
fn freshness(
    config: &Config,
    cc: &Directives,
    (status, headers): (StatusCode, &HeaderMap),
    date: u64,
    targeted: bool,
) -> Option<u64> {
    if let Some(delta) = cc.s_maxage.or(cc.max_age) {
        return Some(delta.millis());
    }
    if !targeted {
        if let Some(expires) = directives::date(headers, &header::EXPIRES) {
            return Some(expires.map_or(0, |e| e.saturating_sub(date)));
        }
    }
    if config.heuristic > 0.0 && heuristically_cacheable(status) {
        if let Some(Some(modified)) = directives::date(headers, &header::LAST_MODIFIED) {
            let since = date.saturating_sub(modified) as f64;
            return Some((since * f64::from(config.heuristic)) as u64);
        }
    }
    None
}

/// The statuses a cache may give a heuristic lifetime (RFC 9110 §15.1),
/// but `206`, which is never stored.
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

#[cfg(test)]
mod tests;
