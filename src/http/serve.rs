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
use super::key::{self, Bypass};
use super::policy::buffer_if_cacheable;
use super::status::{self, Fwd, Outcome};
use super::{invalidate, stale, validate, variant, CachedBody, Config, Entry};
use crate::cache::{Backend, Cache, Placed, Reason};
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
    let mut outcome = Outcome::default();
    let mut res = answer(inner, cache, config, req, &mut outcome).await;
    if let Ok(res) = &mut res {
        count(res, &counted.status_header, &name, "http", method);
        let label = res.headers().get(&counted.status_header).cloned();
        if let (Some(id), Some(label)) = (&counted.cache_status, label) {
            let status = res.status().as_u16();
            status::append(res.headers_mut(), id, label.as_bytes(), status, &outcome);
        }
    }
    res
}

async fn answer<S, C, ReqBody, ResBody>(
    mut inner: S,
    cache: Cache<C>,
    config: Arc<Config>,
    req: Request<ReqBody>,
    outcome: &mut Outcome,
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
        outcome.fwd = Fwd::Method;
        return invalidate::after_unsafe(inner, &cache, &config, req).await;
    }
    let head = req.method() == Method::HEAD;
    let keys = match req.method() == Method::GET || head {
        true => key::request(&config.scope, &req).map_err(Some),
        false => Err(None),
    };
    let keys = match keys {
        Ok(keys) => keys,
        Err(why) => {
            (outcome.fwd, outcome.detail) = match why {
                None => (Fwd::Method, None),
                Some(Bypass::Request) => (Fwd::Request, None),
                Some(Bypass::Credentials) => (Fwd::Bypass, Some("bypass-credentials")),
                Some(Bypass::Host) => (Fwd::Bypass, Some("bypass-host")),
            };
            let res = inner.call(req).await?;
            return Ok(mark(res.map(CachedBody::inner), &config, "bypass"));
        }
    };
    // Fresh: a hit. Stale (RFC 5861, where RFC 9111 allows it): served
    // while revalidated in the background, or kept for the case the
    // handler fails. Otherwise, with a validator: validated (§4.3).
    let conditions = validate::Conditions::of(req.headers());
    let (mut if_error, mut validating) = (None, None);
    let found = variant::lookup(&cache, &config, (&keys.entry, &keys.purge), req.headers()).await;
    let (purged, flight) = (found.purged, found.flight);
    if found.vary_miss {
        outcome.fwd = Fwd::VaryMiss;
    }
    if let Some(entry) = found.entry {
        let now = now_ms();
        outcome.ttl = Some(entry.lifetime.ttl_at(now));
        outcome.fwd = Fwd::Stale;
        let usable = entry
            .lifetime
            .for_request(now, &Directives::of(req.headers()));
        // (A HEAD is forwarded as it came: it never validates a stored GET.)
        let validator = validate::has_validator(&entry.headers);
        match usable {
            Use::Fresh => {
                let res = mark(entry.into_response(head, now), &config, "hit");
                return Ok(conditions.apply(res, &config.status_header));
            }
            Use::Revalidate => {
                if !head {
                    let keys = (flight, keys.entry);
                    stale::revalidate(inner, cache, config.clone(), req, keys);
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
    outcome.forwarded = true;
    if head {
        // HEAD is answered from a cached GET, never stored itself.
        let res = (inner.call(req).await).map(|r| mark(r.map(CachedBody::inner), &config, "miss"));
        outcome.fwd_status = res.as_ref().ok().map(|r| r.status().as_u16());
        return stale::or_stale(res, if_error, &config, true);
    }
    let policy = policy_request(&req);
    let rules = &*config;
    let (policy, cache_ref, purge) = (&policy, &cache, &keys.purge);
    let (base, at) = (&keys.entry[..], &flight[..]);
    let keeps_stale = if_error.is_some();
    let fits = |e: &Entry| variant::fits(&rules.scope, e, policy.headers());
    let res = through_flight(
        &cache,
        (at, purged),
        (&config.status_header, &mut *outcome, &fits),
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
                let place = |(bytes, ttl)| {
                    let at = at.to_vec();
                    (
                        bytes,
                        Placed {
                            ttl,
                            at,
                            index: None,
                        },
                    )
                };
                return Ok((mark(res, rules, "revalidated"), share.map(place)));
            }
            let (res, share) = buffer_if_cacheable(rules, policy, base, requested, res).await;
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
    outcome.fwd_status = res.as_ref().ok().map(|r| r.status().as_u16());
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

/// The cached entry for `key`, if there is a valid one (a gRPC reply:
/// no purge marker); an entry that does not decode is counted and treated
/// as a miss.
pub(super) async fn cached_entry<C: Backend>(
    cache: &Cache<C>,
    op: &'static str,
    key: &[u8],
) -> Option<Entry> {
    let (bytes, _) = cached_bytes(cache, key, None).await;
    bytes.and_then(|b| decoded(cache, op, &b))
}

/// The bytes at `key`, and the time (ms) of its URL's last purge (the
/// marker at `purge`; 0: none known).
pub(super) async fn cached_bytes<C: Backend>(
    cache: &Cache<C>,
    key: &[u8],
    purge: Option<&[u8]>,
) -> (Option<Bytes>, u64) {
    let (bytes, marker) = match purge {
        // Both in one round trip's time.
        Some(purge) => join(cache.get(key), cache.get(purge)).await,
        None => (cache.get(key).await, None),
    };
    // A marker that does not read as a time purges everything; this
    // process's own purges are held here (Redis may not have taken them,
    // or may have died since).
    let purged = marker.map_or(0, |m| {
        std::str::from_utf8(&m)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    let purged = purge.map_or(purged, |p| purged.max(cache.local_purges().0.of(p)));
    (bytes, purged)
}

/// The entry `bytes` hold; bytes that are not one are counted (reason
/// `undecodable`) and are a miss.
pub(super) fn decoded<C: Backend>(
    cache: &Cache<C>,
    op: &'static str,
    bytes: &Bytes,
) -> Option<Entry> {
    let entry = Entry::decode(bytes);
    if entry.is_none() {
        crate::telemetry::cache_fail_open(
            &Arc::from(cache.name()),
            op,
            Reason::Undecodable.as_str(),
        );
    }
    entry
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

/// Whether a stored response may be given to the request at hand.
pub(super) type Fits<'a> = dyn Fn(&Entry) -> bool + Sync + 'a;

/// After a miss: the first caller for `key` runs `lead` with its request
/// through the cache's single flight (storing what it may share where it
/// says); callers arriving meanwhile get that shared response if it `fits`
/// their request, or, when it does not, could not be shared, or was
/// requested no later than `purged` (the last purge of the URL this caller
/// knows of: a flight that began before a `POST` this caller has seen
/// answered), run `direct` with their own request. What happened goes in
/// `outcome`.
pub(super) async fn through_flight<C, P, B, E, L, LFut, D, DFut>(
    cache: &Cache<C>,
    (key, purged): (&[u8], u64),
    (header, outcome, fits): (&HeaderName, &mut Outcome, &Fits<'_>),
    pending: P,
    lead: L,
    direct: D,
) -> Result<Response<CachedBody<B>>, E>
where
    C: Backend,
    L: FnOnce(P) -> LFut,
    LFut: Future<Output = Result<(Response<CachedBody<B>>, Option<(Bytes, Placed)>), E>>,
    D: FnOnce(P) -> DFut,
    DFut: Future<Output = Result<Response<CachedBody<B>>, E>>,
{
    // The request goes to the service once: through the flight if this
    // caller leads, directly if the leader's answer was not shareable (or
    // was not an entry: a user's own value under the same key).
    let name = cache.label();
    let stored = &mut outcome.stored;
    let lead = |pending| async move {
        let (res, share) = lead(pending).await?;
        if share.is_some() {
            crate::telemetry::http_store(name);
            *stored = true;
        }
        Ok((res, share))
    };
    let pending = match cache.coalesce_placed(key, pending, lead).await? {
        // A leader's answer is a miss, unless it was revalidated (a label
        // the handler's own `x-cache`, say from a CDN behind, is replaced).
        Coalesced::Led(res)
            if res
                .headers()
                .get(header)
                .is_some_and(|v| v == "revalidated") =>
        {
            return Ok(res)
        }
        Coalesced::Led(res) => return Ok(mark_with(res, header, "miss")),
        Coalesced::Shared(bytes, pending) => match Entry::decode(&bytes) {
            // Strictly after: a response requested in the very millisecond of
            // a purge this caller knows of is not taken.
            Some(entry) if entry.lifetime.requested > purged && fits(&entry) => {
                outcome.collapsed = Some(true);
                let res = entry.into_response(false, now_ms());
                return Ok(mark_with(res, header, "hit"));
            }
            _ => pending,
        },
        Coalesced::Direct(pending) => pending,
    };
    outcome.collapsed = Some(false);
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
