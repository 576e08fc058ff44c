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
//! * Caches responses to `GET` (and answers `HEAD` from them): any final
//!   status with a lifetime (errors for at most
//!   [`max_error_freshness`](HttpCacheLayer::max_error_freshness)), never
//!   `206` or `304`.
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
//! * **Whether, and how long**, follows the response's `Cache-Control`,
//!   `Expires`, `Date` and `Age`, read as a shared cache must (RFC 9111;
//!   the rules below). Responses that set cookies or say `Vary: *` are
//!   not stored. One that varies on request headers the key does not hold
//!   (`Vary: Accept-Encoding` with no `vary(["accept-encoding"])`) is
//!   stored as one variant per set of their values, at most
//!   [`max_variants`](HttpCacheLayer::max_variants) per URL, and served
//!   only to requests with the same values. A response
//!   without an explicit lifetime (only a `Last-Modified`) is not stored
//!   unless [`heuristic_freshness`](HttpCacheLayer::heuristic_freshness)
//!   is set.
//! * **Unsafe methods invalidate**: after a `POST`, `PUT`, `DELETE`,
//!   `PATCH` (any method but `GET`, `HEAD`, `OPTIONS`, `TRACE`) answered
//!   2xx or 3xx, no response stored before for its URL, or for the
//!   `Location` and `Content-Location` it names on the same host, is
//!   served again: every variant, before the caller has the answer.
//!   [`HttpCacheLayer::purge`] does the same for a URL you name.
//! * Only bodies of known length up to a cap (default 1 MiB) are buffered;
//!   anything else streams through uncached.
//! * **Stale responses** (RFC 5861): a response with
//!   `stale-while-revalidate=N` is kept N seconds past its freshness, and
//!   served from the cache meanwhile (marked `stale`) while one request at
//!   a time per key revalidates it in the background; one with
//!   `stale-if-error=N` is kept N seconds more and served (marked `stale`)
//!   only when the handler fails meanwhile (an error or a 5xx).
//! * A response header (default `x-cache`) says `hit` (from the cache, or
//!   shared from a concurrent miss), `stale`, `revalidated` (stored, and
//!   confirmed by the handler with a `304`), `miss` or `bypass`
//!   (not a `GET`/`HEAD`, a per-caller request, or one with
//!   `Cache-Control: no-cache`/`no-store`).
//! * **`Cache-Status`** (RFC 9211) says the same in the standard form,
//!   appended after the members of the caches behind the layer (named
//!   with [`cache_status`](HttpCacheLayer::cache_status), default
//!   `fusebox`):
//!
//!   | `x-cache` | `Cache-Status` member |
//!   |---|---|
//!   | `hit` | `fusebox; hit; ttl=42` (freshness left, seconds) |
//!   | `hit` (a concurrent miss's response) | `fusebox; fwd=uri-miss; fwd-status=200; collapsed` |
//!   | `stale` (while revalidated) | `fusebox; hit; ttl=-5` |
//!   | `stale` (the handler failed) | `fusebox; fwd=stale; fwd-status=503; ttl=-5; detail=stale-if-error` |
//!   | `revalidated` | `fusebox; fwd=stale; fwd-status=304; ttl=-5` |
//!   | `miss` | `fusebox; fwd=uri-miss` (nothing stored for the URL), `fwd=vary-miss` (not for these values) or `fwd=stale` (a stored copy not usable), `; fwd-status=200`, then `; stored` if it was, `; collapsed=?0` if it waited on a concurrent miss whose response was not for it |
//!   | `bypass` | `fusebox; fwd=method` (not `GET`/`HEAD`), `fwd=request` (`no-cache`/`no-store` request), `fwd=bypass; detail=bypass-credentials` or `detail=bypass-host` |
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
//!
//! # The rules, and what is not implemented
//!
//! The layer is a shared cache in the sense of RFC 9111, in front of one
//! origin (the inner service). When in doubt, it does not serve.
//!
//! | rule | what the layer does | tested by (`tests/http/`) |
//! |---|---|---|
//! | §5.2 directive names in any case, quoted arguments, first of repeated directives | `Private`, `NO-STORE`, `S-Maxage=0`, `private="set-cookie"` all obeyed, in responses and requests | `directive_names_are_obeyed_in_any_case` |
//! | §3, §3.5 storing | responses to `GET` of any final status with an explicit lifetime (or `no-cache` and a validator) (errors capped by [`max_error_freshness`](HttpCacheLayer::max_error_freshness)), or a heuristic one for the statuses RFC 9110 §15.1 names; never `206`, `304`, `no-store`, `private` (any form), `no-cache` without a validator, a `Set-Cookie` (a cookie is one user's); a request with `Authorization` only if `public`, `s-maxage` or `must-revalidate` | `hits_misses_bypasses_and_cache_control`, `two_users_never_share_a_response` |
//! | §4.2.1 freshness lifetime | `s-maxage`, else `max-age`, else `Expires` − `Date`; an invalid number or `Expires` means already stale (§5.3); heuristic only when asked | `hits_carry_their_current_age_and_old_responses_are_not_fresh`, `last_modified_alone_is_not_a_lifetime_unless_asked_for` |
//! | §4.2.3 age, §5.1 `Age` | a hit carries `Age`: the stored response's corrected initial age (its `Age`, the time from `Date`, the handler's time) plus the time stored; a response already older than its lifetime is not fresh | `hits_carry_their_current_age_and_old_responses_are_not_fresh` |
//! | §4.3 validation | a stored response that may not be served as it is (stale past its windows, `no-cache`, `must-revalidate` once stale, or older than a request's `max-age`) but has an `ETag` or `Last-Modified` is revalidated with `If-None-Match` / `If-Modified-Since`, one request per key at a time; a `304` updates its headers and freshness (§4.3.4) and the caller gets the stored response (`revalidated`); such entries are kept [`keep_for_validation`](HttpCacheLayer::keep_for_validation) past their freshness; `no-cache` responses are stored only with a validator | `breadth::a_stale_copy_with_a_validator_is_revalidated_and_a_304_freshens_it`, `breadth::no_cache_responses_are_stored_only_with_a_validator_and_validated_on_every_use` |
//! | §4.3.2 a client's conditional request | answered `304` from a stored copy it matches (`If-None-Match` by weak comparison, else `If-Modified-Since`) | `breadth::a_clients_conditional_request_is_answered_304_from_a_stored_copy` |
//! | §5.2.1 request directives | `no-cache`, `no-store`, `Pragma: no-cache`: bypass; `max-age`, `min-fresh`: a stored response that does not meet them is not served | `directive_names_are_obeyed_in_any_case`, `a_hung_background_revalidation_holds_no_caller` |
//! | §3.1 hop-by-hop headers | `Connection`, the headers it names, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`, `Proxy-*` are not stored | `hop_by_hop_headers_are_not_replayed_and_head_has_the_gets_headers` |
//! | §4.3.5 `HEAD` | answered from a stored `GET` with its headers (`Content-Length` too), no body | same |
//! | §4.4 invalidation | unsafe methods answered 2xx/3xx invalidate the target, `Location` and `Content-Location` on the same host | `unsafe_methods_invalidate_every_variant_and_the_urls_they_name` |
//! | §4.2.4 serving stale | never where `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache` say so; otherwise only within RFC 5861's windows below, labelled `stale` | `directives_that_forbid_stale_win_over_stale_windows`, `with_a_near_cache_and_redis_down_no_expired_page_is_a_hit` |
//! | RFC 5861 `stale-while-revalidate` | served stale while one background revalidation per key runs, bounded by [`revalidation_timeout`](HttpCacheLayer::revalidation_timeout); no request waits on it | `stale_while_revalidate_serves_stale_and_revalidates_once_in_the_background`, `a_hung_background_revalidation_holds_no_caller` |
//! | RFC 5861 `stale-if-error` | served stale only when the handler errs or answers 5xx; a 5xx never replaces the copy kept for that case | `stale_if_error_serves_stale_only_when_the_handler_fails` |
//! | stale on error by policy | [`serve_stale_on_error`](HttpCacheLayer::serve_stale_on_error): as if every response said `stale-if-error`, never where §4.2.4 forbids stale | `breadth::the_layers_stale_on_error_policy_serves_a_copy_unless_a_directive_forbids_it` |
//! | §4.1 `Vary` | a response varying on request headers outside the key is one variant per set of their values (field lines combined, whitespace around commas dropped; absent differs from empty), at most [`max_variants`](HttpCacheLayer::max_variants) per URL, each served only to a request presenting its values, their hash kept with it (never a value in clear); `Vary: *` never stored; a purge reaches every variant | `variants::each_set_of_values_gets_its_own_variant_and_only_its_own`, `variants::values_are_compared_with_lines_combined_and_spaces_around_commas_dropped`, `variants::vary_star_is_never_served_and_variants_per_url_are_bounded`, `variants::concurrent_misses_for_other_values_never_take_the_leaders_response` |
//! | RFC 9211 `Cache-Status` | on every response the layer handles, after the members behind it | `variants::cache_status_says_what_the_layer_did_after_the_caches_behind_it` |
//! | RFC 9213 targeted fields | `CDN-Cache-Control` (or the fields named with [`targeted_cache_control`](HttpCacheLayer::targeted_cache_control)), when a valid Structured Field Dictionary, replaces `Cache-Control` and `Expires`; an invalid one is ignored whole | `breadth::a_targeted_field_replaces_cache_control_and_expires_when_valid` |
//!
//! Not implemented (yet): partial content (`206` is passed through, never stored, and a request
//! with `Range` may be answered with a stored full `200`, which RFC 9110
//! §14.2 allows); request `max-stale` and `only-if-cached`; validating
//! with the entity tags of a URL's other variants (§4.3.1); normalising
//! `Accept-Language` beyond whitespace (order, case, q-values).
//!
//! Entries are checked on every read, so bytes in Redis that are not an
//! entry this version wrote (another version's, or anything else) are a
//! counted miss (reason `undecodable`), never a panic.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::{BoxError, Layer, Service};

use crate::backend::RedisBackend;
use crate::cache::{Backend, Cache, Write};

mod body;
mod breaker;
mod client;
mod directives;
mod entry;
mod grpc;
mod invalidate;
mod key;
mod policy;
mod serve;
mod settings;
mod stale;
mod status;
mod targeted;
mod validate;
mod variant;

pub use body::CachedBody;
pub use breaker::{
    GrpcBreakerLayer, GrpcErrors, HttpBreaker, HttpBreakerLayer, ResponseFuture as BreakerFuture,
    ServerErrors,
};
pub use client::HttpClientBreakerLayer;
use entry::Entry;
pub use grpc::{GrpcCache, GrpcCacheLayer};
use serve::{mark, mark_with};
use settings::Config;

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

impl<C: Backend + Sync> HttpCacheLayer<C> {
    /// Removes every stored response for `target` (a path and query,
    /// `/page/1?lang=fr`) on `host`: every variant (each `vary` value,
    /// each forwarded header, each scheme), in one write, counted in
    /// [`HTTP_PURGES_TOTAL`](crate::telemetry::HTTP_PURGES_TOTAL) with
    /// trigger `purge`. [`Write::Done`] once no such response can be
    /// served again; [`Write::Skipped`] if the cache could not take the
    /// write (then they still may, until they expire).
    ///
    /// A purge is a time: it holds against entries fetched by requests
    /// sent before it, so servers sharing a cache need clocks that agree
    /// (NTP) to within the time a page takes to render.
    pub async fn purge(&self, host: &str, target: &str) -> Write {
        let target = target.split('#').next().unwrap_or_default();
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        invalidate::purge(&self.cache, host, path, query, "purge").await
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

/// The response future of `HttpCache`.
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
        Box::pin(serve::respond(inner, cache, config, req))
    }
}
