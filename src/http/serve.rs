//! One request through the HTTP response cache: the lookup (entry and
//! purge marker), what a stored entry may be used for, and the single
//! flight of misses.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower::{BoxError, Service};

use super::directives::{now_ms, Directives};
use super::entry::Use;
use super::policy::buffer_if_cacheable;
use super::{invalidate, key, stale, validate, CachedBody, Config, Entry};
use crate::cache::{Backend, Cache, Reason, Ttl};
use crate::flight::Coalesced;

/// One request, counted by how the layer answered it.
pub(super) async fn respond<S, C, ReqBody, ResBody>(
    inner: S,
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
    let (name, counted) = (cache.label().clone(), config.clone());
    let method = req.method() == Method::GET || req.method() == Method::HEAD;
    let res = answer(inner, cache, config, req).await;
    if let Ok(res) = &res {
        count(res, &counted.status_header, &name, "http", method);
    }
    res
}

async fn answer<S, C, ReqBody, ResBody>(
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
    if !is_safe(req.method()) {
        return invalidate::after_unsafe(inner, &cache, &config, req).await;
    }
    let head = req.method() == Method::HEAD;
    let keys = (req.method() == Method::GET || head)
        .then(|| key::request(&config.scope, &req))
        .flatten();
    let Some(keys) = keys else {
        let res = inner.call(req).await?;
        return Ok(mark(res.map(CachedBody::inner), &config, "bypass"));
    };
    // Fresh: a hit. Stale (RFC 5861, where RFC 9111 allows it): served
    // while revalidated in the background, or kept for the case the
    // handler fails. Otherwise, with a validator: validated (§4.3).
    let conditions = validate::Conditions::of(req.headers());
    let (mut if_error, mut validating) = (None, None);
    let (entry, purged) = cached_entry(&cache, "http", &keys.entry, Some(&keys.purge)).await;
    if let Some(entry) = entry {
        let now = now_ms();
        let usable = entry
            .lifetime
            .for_request(now, &Directives::of(req.headers()));
        let validator = validate::has_validator(&entry.headers) && !head;
        match usable {
            Use::Fresh => {
                let res = mark(entry.into_response(head, now), &config, "hit");
                return Ok(conditions.apply(res, &config.status_header));
            }
            Use::Revalidate => {
                if !head {
                    stale::revalidate(inner, cache, config.clone(), req, keys.entry);
                }
                let res = mark(entry.into_response(head, now), &config, "stale");
                return Ok(conditions.apply(res, &config.status_header));
            }
            Use::IfError if validator => {
                validating = Some(entry.clone());
                if_error = Some(entry);
            }
            Use::IfError => if_error = Some(entry),
            Use::Expired if validator => validating = Some(entry),
            Use::Expired => {}
        }
    }
    if head {
        // HEAD is answered from a cached GET, never stored itself.
        let res = (inner.call(req).await).map(|r| mark(r.map(CachedBody::inner), &config, "miss"));
        return stale::or_stale(res, if_error, &config, true);
    }
    let policy = policy_request(&req);
    let rules = &*config;
    let (policy, cache_ref, purge) = (&policy, &cache, &keys.purge);
    let keeps_stale = if_error.is_some();
    let res = through_flight(
        &cache,
        (&keys.entry, purged),
        &config.status_header,
        (inner, req),
        move |(mut inner, mut req)| async move {
            if let Some(stored) = &validating {
                validate::make_conditional(&mut req, stored);
            }
            let requested = now_ms();
            let res = inner.call(req).await?;
            if let Some(stored) = validating.filter(|_| res.status() == StatusCode::NOT_MODIFIED) {
                let (res, share) =
                    validate::freshen(rules, policy, stored, res.headers(), requested);
                return Ok((mark(res, rules, "revalidated"), share));
            }
            let (res, share) = buffer_if_cacheable(rules, policy, requested, res).await;
            // A server error does not replace a copy kept for that case.
            let share = share.filter(|_| !(keeps_stale && res.status().is_server_error()));
            if share.is_some() {
                invalidate::mark_unpurged(cache_ref, purge).await;
            }
            Ok((res, share))
        },
        |(mut inner, req)| async move { Ok(inner.call(req).await?.map(CachedBody::inner)) },
    )
    .await;
    let res = stale::or_stale(res, if_error, &config, false)?;
    Ok(
        match res
            .headers()
            .get(&config.status_header)
            .map(HeaderValue::as_bytes)
        {
            Some(b"hit" | b"stale" | b"revalidated") => {
                conditions.apply(res, &config.status_header)
            }
            _ => res,
        },
    )
}

/// Methods that do not change what they target (RFC 9110 §9.2.1); any
/// other invalidates (RFC 9111 §4.4).
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// What the caching rules need of a request, kept past the call.
pub(super) fn policy_request<B>(req: &Request<B>) -> Request<()> {
    let mut policy = Request::new(());
    *policy.method_mut() = req.method().clone();
    *policy.uri_mut() = req.uri().clone();
    *policy.headers_mut() = req.headers().clone();
    policy
}

/// The cached entry for `key`, if there is a valid one that no purge of
/// its URL (the marker at `purge`) came after, and the time (ms) of that
/// URL's last purge (0: none known); an entry that does not decode is
/// counted and treated as a miss.
pub(super) async fn cached_entry<C: Backend>(
    cache: &Cache<C>,
    op: &'static str,
    key: &[u8],
    purge: Option<&[u8]>,
) -> (Option<Entry>, u64) {
    let (bytes, marker) = match purge {
        // Both in one round trip's time.
        Some(purge) => join(cache.get(key), cache.get(purge)).await,
        None => (cache.get(key).await, None),
    };
    // A marker that does not read as a time purges everything; a purge
    // Redis did not take is held here.
    let purged = marker.map_or(0, |m| {
        std::str::from_utf8(&m)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    let purged = purge.map_or(purged, |p| purged.max(cache.local_purges().0.of(p)));
    let Some(bytes) = bytes else {
        return (None, purged);
    };
    let entry = Entry::decode(&bytes);
    if entry.is_none() {
        crate::telemetry::cache_fail_open(
            &Arc::from(cache.name()),
            op,
            Reason::Undecodable.as_str(),
        );
    }
    let entry = entry.filter(|e| e.lifetime.requested > purged);
    (entry, purged)
}

/// Both futures' outputs, polled together.
async fn join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    poll_fn(|cx| {
        if ra.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        match (ra.take(), rb.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                (ra, rb) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}

/// After a miss: the first caller for `key` runs `lead` with its request
/// through the cache's single flight (storing what it may share); callers
/// arriving meanwhile get that shared response, or, when it could not be
/// shared or was requested no later than `purged` (the last purge of the
/// URL this caller knows of: a flight that began before a `POST` this
/// caller has seen answered), run `direct` with their own request.
pub(super) async fn through_flight<C, P, B, E, L, LFut, D, DFut>(
    cache: &Cache<C>,
    (key, purged): (&[u8], u64),
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
    let name = cache.label();
    let lead = |pending| async move {
        let (res, share) = lead(pending).await?;
        if share.is_some() {
            crate::telemetry::http_store(name);
        }
        Ok((res, share))
    };
    let pending = match cache.coalesce(key, pending, lead).await? {
        // A leader's answer is a miss, unless it says more (revalidated).
        Coalesced::Led(res) if res.headers().contains_key(header) => return Ok(res),
        Coalesced::Led(res) => return Ok(mark_with(res, header, "miss")),
        Coalesced::Shared(bytes, pending) => match Entry::decode(&bytes) {
            Some(entry) if entry.lifetime.requested > purged => {
                let res = entry.into_response(false, now_ms());
                return Ok(mark_with(res, header, "hit"));
            }
            _ => pending,
        },
        Coalesced::Direct(pending) => pending,
    };
    Ok(mark_with(direct(pending).await?, header, "miss"))
}

/// Counts `res` by the outcome its status `header` says
/// ([`HTTP_RESPONSES_TOTAL`](crate::telemetry::HTTP_RESPONSES_TOTAL));
/// `method`: whether the request's method is one the layer may answer.
pub(super) fn count<B>(
    res: &Response<B>,
    header: &HeaderName,
    name: &Arc<str>,
    layer: &'static str,
    method: bool,
) {
    let outcome = match res.headers().get(header).map(HeaderValue::as_bytes) {
        Some(b"hit") => "hit",
        Some(b"stale") => "stale",
        Some(b"miss") => "miss",
        Some(b"revalidated") => "revalidated",
        Some(b"bypass") => "bypass",
        _ => return,
    };
    let reason = match (outcome, method) {
        ("bypass", false) => "method",
        ("bypass", true) => "request",
        _ => "",
    };
    crate::telemetry::http_response(name, layer, outcome, reason);
}

pub(super) fn mark<B>(res: Response<B>, config: &Config, status: &'static str) -> Response<B> {
    mark_with(res, &config.status_header, status)
}

pub(super) fn mark_with<B>(
    mut res: Response<B>,
    header: &HeaderName,
    status: &'static str,
) -> Response<B> {
    res.headers_mut()
        .insert(header.clone(), HeaderValue::from_static(status));
    res
}
