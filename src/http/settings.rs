//! The layer's settings: what is keyed, what may be stored and for how
//! long, and how the layer labels its answers.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;

use super::directives;
use super::key::{self, Scope};
use super::status;
use super::HttpCacheLayer;
use crate::cache::Cache;

/// The layer's settings, shared by its services.
#[derive(Clone, Debug)]
pub(super) struct Config {
    pub(super) scope: Scope,
    pub(super) max_body: usize,
    pub(super) status_header: HeaderName,
    /// The fraction of the time since `Last-Modified` a response without an
    /// explicit lifetime is kept for; 0 stores none.
    pub(super) heuristic: f32,
    /// How long a background revalidation may take.
    pub(super) revalidation_timeout: Duration,
    /// Targeted cache-control fields (RFC 9213), first valid one wins.
    pub(super) targeted: Vec<HeaderName>,
    /// How long past its freshness a copy may be served when the handler
    /// fails, beside any `stale-if-error` (ms).
    pub(super) stale_on_error: u64,
    /// The longest freshness an error (4xx, 5xx) is stored with (ms).
    pub(super) max_error_freshness: u64,
    /// How long past its freshness an entry with a validator is kept for a
    /// conditional request (ms).
    pub(super) keep_for_validation: u64,
    /// Variants stored per URL (and value of the keyed headers); 0: none.
    pub(super) max_variants: u16,
    /// This cache's identifier in `Cache-Status`, as written; `None`: no
    /// `Cache-Status`.
    pub(super) cache_status: Option<String>,
}

impl Config {
    /// The defaults.
    pub(super) fn new() -> Self {
        Config {
            scope: Scope::new(),
            max_body: 1 << 20,
            status_header: HeaderName::from_static("x-cache"),
            heuristic: 0.0,
            revalidation_timeout: Duration::from_secs(10),
            targeted: vec![HeaderName::from_static("cdn-cache-control")],
            stale_on_error: 0,
            max_error_freshness: 5 * 60 * 1000,
            keep_for_validation: 60 * 1000,
            max_variants: 16,
            cache_status: status::identifier("fusebox"),
        }
    }
}

impl<C> HttpCacheLayer<C> {
    /// Caches responses in `cache` (whose prefix, size cap and breaker
    /// apply; its TTL settings are replaced by the responses' own).
    pub fn new(cache: Cache<C>) -> Self {
        HttpCacheLayer {
            cache,
            config: Arc::new(Config::new()),
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

    /// The response header saying `hit`, `stale`, `revalidated`, `miss` or `bypass`. Defaults to
    /// `x-cache`.
    pub fn status_header(mut self, name: HeaderName) -> Self {
        Arc::make_mut(&mut self.config).status_header = name;
        self
    }

    /// How long a background revalidation (`stale-while-revalidate`) may
    /// take before it is abandoned; none waits behind it meanwhile, and the
    /// next stale hit may start another once it is. `Duration::ZERO`: stale
    /// copies are served but never revalidated in the background (misses
    /// past the window still render). Defaults to 10 s.
    pub fn revalidation_timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.config).revalidation_timeout = timeout;
        self
    }

    /// Targeted cache-control fields (RFC 9213), in order of precedence:
    /// the first one a response carries with a valid value (a Structured
    /// Field Dictionary) replaces its `Cache-Control` and `Expires` for
    /// this cache. Defaults to `CDN-Cache-Control`; each call replaces the
    /// list, and an empty one turns targeting off. Names that are not
    /// valid header names are ignored.
    pub fn targeted_cache_control<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        Arc::make_mut(&mut self.config).targeted = key::header_names(names);
        self
    }

    /// Serves a stored copy for up to `window` past its freshness when the
    /// handler fails (an error, or a 5xx), labelled `stale`, as if every
    /// response said `stale-if-error` (the longer of the two applies).
    /// Never where the response forbids serving stale: `must-revalidate`,
    /// `proxy-revalidate`, `s-maxage` or `no-cache`. Entries are kept in
    /// Redis that much longer (up to the cache's `max_ttl`). Defaults to
    /// zero: only the responses' own `stale-if-error`.
    pub fn serve_stale_on_error(mut self, window: Duration) -> Self {
        Arc::make_mut(&mut self.config).stale_on_error = directives::millis(window);
        self
    }

    /// The longest a client or server error (4xx, 5xx: a `404` with
    /// `max-age=86400`, say) is served from the cache, whatever its
    /// headers say. Defaults to 5 minutes; zero stores none.
    pub fn max_error_freshness(mut self, max: Duration) -> Self {
        Arc::make_mut(&mut self.config).max_error_freshness = directives::millis(max);
        self
    }

    /// How long past its freshness a stored response with a validator
    /// (`ETag`, `Last-Modified`) is kept, so that the next request
    /// revalidates it with a conditional request (a `304` costs the handler
    /// no body) instead of rendering it again; responses marked `no-cache`
    /// are stored only then, and validated on every use. Defaults to one
    /// minute; zero keeps none past its freshness (`no-cache` ones are then
    /// not stored).
    pub fn keep_for_validation(mut self, window: Duration) -> Self {
        Arc::make_mut(&mut self.config).keep_for_validation = directives::millis(window);
        self
    }

    /// How many variants of one URL are stored, at most, when its responses
    /// vary on request headers the key does not hold (`Vary: Foo` without
    /// `vary(["foo"])`): each is served only to requests presenting the
    /// values it was made for (RFC 9111 §4.1); values are compared with
    /// their field lines combined and the whitespace around commas
    /// dropped. Two variants may share a slot, and then replace each other.
    /// A variant costs a second Redis round trip on a lookup, after the
    /// URL's. Defaults to 16; zero stores no response that varies outside
    /// the key. Headers in [`vary`](Self::vary) are in the key itself: no
    /// bound, one round trip.
    pub fn max_variants(mut self, max: u16) -> Self {
        Arc::make_mut(&mut self.config).max_variants = max;
        self
    }

    /// This cache's identifier in the `Cache-Status` response header (RFC
    /// 9211) the layer appends to every response it handles, after any the
    /// handler's response carries: `fusebox; hit; ttl=42`, `fusebox;
    /// fwd=uri-miss; fwd-status=200; stored`. Defaults to `fusebox`; a name
    /// that is not a Structured Field token is written as a string; an
    /// empty one turns the header off. The [`status_header`](Self::status_header)
    /// (`x-cache`) is set either way.
    pub fn cache_status(mut self, name: &str) -> Self {
        Arc::make_mut(&mut self.config).cache_status = status::identifier(name);
        self
    }
}
