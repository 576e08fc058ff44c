//! The shared-cache rules of RFC 9111 that decide what may be served, each
//! through a real axum server, a real redis-server and raw HTTP/1.1 on
//! loopback. The origin answers with the headers the request asks for
//! (`x-respond: name: value`, `x-status: N`), so one route covers every
//! case.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use axum::routing::any;
use axum::Router;
use fusebox::cache::{Cache, NearCache, Write};
use fusebox::http::HttpCacheLayer;

use super::common::{counter, eventually, metrics, RedisServer};
use super::exchange;

/// Renders so far, and the render (by number) that never answers.
#[derive(Clone)]
pub(super) struct Origin {
    renders: Arc<AtomicU32>,
    hang_on: Arc<AtomicU32>,
    /// Requests with `x-hold: 1` wait for a permit.
    pub(super) gate: Arc<tokio::sync::Semaphore>,
    /// The `If-None-Match` of the last request, if it had one.
    pub(super) last_if_none_match: Arc<std::sync::Mutex<Option<String>>>,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            renders: Arc::default(),
            hang_on: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            last_if_none_match: Arc::default(),
        }
    }
}

impl Origin {
    pub(super) fn renders(&self) -> u32 {
        self.renders.load(SeqCst)
    }
}

async fn origin(State(o): State<Origin>, headers: HeaderMap) -> Response<Body> {
    let n = o.renders.fetch_add(1, SeqCst) + 1;
    if o.hang_on.load(SeqCst) == n {
        std::future::pending::<()>().await;
    }
    if headers.contains_key("x-hold") {
        o.gate.acquire().await.unwrap().forget();
    }
    let mut res = Response::new(Body::from(format!("render {n}")));
    if let Some(status) = headers.get("x-status") {
        *res.status_mut() = StatusCode::from_bytes(status.as_bytes()).unwrap();
    }
    for line in headers.get_all("x-respond") {
        let (name, value) = line.to_str().unwrap().split_once(": ").unwrap();
        res.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    // A validation that matches the `ETag` it is told to send: a `304`.
    let asked = headers
        .get("if-none-match")
        .map(|v| v.to_str().unwrap().to_owned());
    *o.last_if_none_match.lock().unwrap() = asked.clone();
    if asked.is_some()
        && asked.as_deref() == res.headers().get("etag").and_then(|v| v.to_str().ok())
    {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        *res.body_mut() = Body::empty();
    }
    res
}

pub(super) async fn serve(layer: HttpCacheLayer, origin_state: Origin) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/o/{*rest}", any(origin))
        .with_state(origin_state)
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub(super) fn cache(redis: &RedisServer, name: &str) -> Cache {
    Cache::builder()
        .name(name)
        .redis_url(redis.url())
        .build()
        .unwrap()
}

/// A response: status, head (lower-cased), body.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) head: String,
    pub(super) body: String,
}

impl Reply {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.head.lines().find_map(|l| l.strip_prefix(&prefix))
    }

    pub(super) fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("")
    }
}

/// One request on a fresh connection, to host `test`, with `headers`
/// (`name: value` lines).
pub(super) async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if method != "GET" && method != "HEAD" {
        req.push_str("content-length: 0\r\n");
    }
    req.push_str("\r\n");
    let text = exchange(addr, &req).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Reply {
        status: head[9..12].parse().unwrap(),
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

pub(super) async fn get(addr: std::net::SocketAddr, path: &str, headers: &[&str]) -> Reply {
    send(addr, "GET", path, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directive_names_are_obeyed_in_any_case() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    // Public: a cookie does not keep a request out, only the response's
    // own directives keep a user's page from the others.
    let addr = serve(
        HttpCacheLayer::new(cache(&redis, "rfc-case")).public(),
        o.clone(),
    )
    .await;
    let refused = [
        "Private, max-age=60",
        "PRIVATE, max-age=60",
        "public, Private=\"set-cookie\", max-age=60",
        "No-Store, max-age=60",
        "NO-CACHE, max-age=60",
        "public, S-Maxage=0, max-age=60",
        "public, MAX-AGE=abc",
    ];
    for (i, cc) in refused.iter().enumerate() {
        let path = format!("/o/refused{i}");
        let respond = format!("x-respond: cache-control: {cc}");
        let mine = get(addr, &path, &["cookie: user=alice", &respond]).await;
        assert_eq!((mine.x_cache(), mine.body.as_str()), ("miss", "render 1"));
        let renders = o.renders();
        let theirs = get(addr, &path, &[]).await;
        assert_eq!(
            theirs.x_cache(),
            "miss",
            "{cc}: another caller got a stored copy"
        );
        assert_ne!(theirs.body, mine.body, "{cc}");
        assert_eq!(o.renders(), renders + 1, "{cc}");
        o.renders.store(0, SeqCst);
    }
    // Names in any case work the other way too.
    let stored = get(
        addr,
        "/o/kept",
        &["x-respond: cache-control: Public, Max-Age=60"],
    )
    .await;
    assert_eq!(stored.x_cache(), "miss");
    assert_eq!(get(addr, "/o/kept", &[]).await.x_cache(), "hit");
    // A client's directives, in any case: an age limit it cannot meet, or
    // no stored answer at all.
    let renders = o.renders();
    assert_eq!(
        get(addr, "/o/kept", &["cache-control: MAX-AGE=0"])
            .await
            .x_cache(),
        "miss"
    );
    assert_eq!(
        get(addr, "/o/kept", &["pragma: No-Cache"]).await.x_cache(),
        "bypass"
    );
    assert_eq!(
        get(addr, "/o/kept", &["cache-control: No-Store"])
            .await
            .x_cache(),
        "bypass"
    );
    assert_eq!(o.renders(), renders + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_every_variant_and_the_urls_they_name() {
    metrics();
    let redis = RedisServer::start(&[]);
    let layer = HttpCacheLayer::new(cache(&redis, "rfc-unsafe")).vary(["accept-language"]);
    let addr = serve(layer.clone(), Origin::default()).await;
    let cc = "x-respond: cache-control: max-age=600";
    let pages = [
        ("/o/a", "accept-language: en"),
        ("/o/a", "accept-language: fr"),
        ("/o/b", "x-none: 1"),
        ("/o/c?q=1", "x-none: 1"),
        ("/o/d", "x-none: 1"),
    ];
    let store_all = || async {
        for (path, lang) in pages {
            let first = get(addr, path, &[lang, cc]).await.x_cache().to_owned();
            assert!(first == "miss" || first == "hit", "{path}: {first}");
            // (A page rendered in the millisecond of a purge is not used:
            // it renders again.)
            let again = eventually(Duration::from_secs(5), || async {
                get(addr, path, &[lang, cc]).await.x_cache() == "hit"
            });
            assert!(again.await, "{path} {lang} stored");
        }
    };
    store_all().await;
    let hit = |path: &'static str, lang: &'static str| async move {
        get(addr, path, &[lang]).await.x_cache() == "hit"
    };

    // A POST that fails changes nothing.
    let failed = send(addr, "POST", "/o/a", &["x-status: 500"]).await;
    assert_eq!((failed.status, failed.x_cache()), (500, "bypass"));
    assert!(hit("/o/a", "accept-language: en").await);

    // A successful POST invalidates its target (both variants), its
    // Location and its Content-Location (same host); not other pages.
    let post = send(
        addr,
        "POST",
        "/o/a",
        &[
            "x-respond: location: /o/b",
            "x-respond: content-location: http://TEST/o/c?q=1",
        ],
    )
    .await;
    assert_eq!(post.status, 200);
    for (path, lang) in &pages[..4] {
        assert_eq!(
            get(addr, path, &[lang]).await.x_cache(),
            "miss",
            "{path} {lang}"
        );
    }
    assert!(hit("/o/d", "x-none: 1").await, "an unrelated page stays");

    // Other methods not known to be safe do the same; a Location on
    // another host is not ours to invalidate.
    store_all().await;
    let put = send(
        addr,
        "PUT",
        "/o/d",
        &[
            "x-status: 204",
            "x-respond: location: http://other.example/o/a",
        ],
    )
    .await;
    assert_eq!(put.status, 204);
    assert_eq!(get(addr, "/o/d", &["x-none: 1"]).await.x_cache(), "miss");
    assert!(hit("/o/a", "accept-language: fr").await);
    for method in ["DELETE", "PATCH", "PURGE"] {
        let res = send(addr, method, "/o/b", &[]).await;
        assert_eq!(res.status, 200, "{method}");
        let after = get(addr, "/o/b", &["x-none: 1", cc]).await;
        assert_eq!(after.x_cache(), "miss", "{method}");
        let stored = eventually(Duration::from_secs(5), || async {
            get(addr, "/o/b", &["x-none: 1", cc]).await.x_cache() == "hit"
        });
        assert!(stored.await, "{method}");
    }

    // A purge: every variant of one URL, in one call, counted.
    store_all().await;
    assert_eq!(layer.purge("Test", "/o/a").await, Write::Done);
    for lang in ["accept-language: en", "accept-language: fr"] {
        assert_eq!(get(addr, "/o/a", &[lang]).await.x_cache(), "miss");
    }
    assert!(hit("/o/c?q=1", "x-none: 1").await);
    let purges = |trigger| {
        counter(
            "fusebox_http_purges_total",
            &[
                ("cache", "rfc-unsafe"),
                ("trigger", trigger),
                ("result", "done"),
            ],
        )
    };
    assert_eq!(purges("purge"), 1);
    // POST: 3 URLs; PUT: 1; DELETE, PATCH, PURGE: 1 each.
    assert_eq!(purges("unsafe_method"), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_redis_does_not_take_still_holds_in_this_process() {
    metrics();
    let cc = "x-respond: cache-control: max-age=600";
    // Out of memory: Redis still serves the stored page, but refuses the
    // purge marker.
    let redis = RedisServer::start(&["--maxmemory-policy", "noeviction"]);
    let addr = serve(
        HttpCacheLayer::new(cache(&redis, "rfc-held")),
        Origin::default(),
    )
    .await;
    get(addr, "/o/p", &[cc]).await;
    assert_eq!(get(addr, "/o/p", &[]).await.body, "render 1");
    redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    assert_eq!(send(addr, "POST", "/o/p", &[]).await.status, 200);
    for _ in 0..3 {
        let after = get(addr, "/o/p", &[cc]).await;
        assert_eq!(after.x_cache(), "miss", "not the page from before the POST");
        assert_ne!(after.body, "render 1");
    }
    let skipped = counter(
        "fusebox_http_purges_total",
        &[
            ("cache", "rfc-held"),
            ("trigger", "unsafe_method"),
            ("result", "skipped"),
        ],
    );
    assert_eq!(skipped, 1);
    // Once Redis takes writes again (and the cache has stopped shedding
    // them), a new page is stored and hits.
    redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    let stored = eventually(Duration::from_secs(10), || async {
        let hit = get(addr, "/o/p", &[cc]).await;
        hit.x_cache() == "hit" && hit.body != "render 1"
    });
    assert!(stored.await, "a new page stored");

    // A near cache with Redis down: L1 holds the page, and Redis cannot
    // be told of the purge.
    let mut redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("rfc-held-near")
        .redis_url(redis.url())
        .near_cache(NearCache::new())
        .build()
        .unwrap();
    let addr = serve(HttpCacheLayer::new(cache), Origin::default()).await;
    get(addr, "/o/q", &[cc]).await;
    assert_eq!(get(addr, "/o/q", &[]).await.x_cache(), "hit");
    redis.kill();
    let from_l1 = get(addr, "/o/q", &[]).await;
    assert_eq!(
        (from_l1.x_cache(), from_l1.body.as_str()),
        ("hit", "render 1")
    );
    assert_eq!(send(addr, "POST", "/o/q", &[]).await.status, 200);
    let after = get(addr, "/o/q", &[]).await;
    assert_eq!((after.x_cache(), after.body.as_str()), ("miss", "render 3"));
}

/// Found by the soak: Redis takes the purge, then dies before this process
/// reads the marker back. The near cache still holds the page (served
/// stale while Redis fails), but not the marker, which the purge's own
/// write took out of L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_redis_took_just_before_dying_still_holds_in_this_process() {
    let cc = "x-respond: cache-control: max-age=600";
    let mut redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("rfc-taken-near")
        .redis_url(redis.url())
        .near_cache(NearCache::new())
        .build()
        .unwrap();
    let addr = serve(HttpCacheLayer::new(cache), Origin::default()).await;
    get(addr, "/o/t", &[cc]).await;
    assert_eq!(get(addr, "/o/t", &[]).await.body, "render 1");
    assert_eq!(send(addr, "POST", "/o/t", &[]).await.status, 200);
    assert!(
        redis.cmd(&["GET", "http:purge //test/o/t"]).len() > 4,
        "Redis took it"
    );
    redis.kill();
    for _ in 0..3 {
        let after = get(addr, "/o/t", &[]).await;
        assert_ne!(after.body, "render 1", "the page from before the POST");
        assert_eq!(after.x_cache(), "miss");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_a_post_never_takes_a_render_begun_before_it() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(
        HttpCacheLayer::new(cache(&redis, "rfc-collapse")),
        o.clone(),
    )
    .await;
    let cc = "x-respond: cache-control: max-age=600";
    // A render of the page begins, and is held.
    let early = tokio::spawn(async move { get(addr, "/o/f", &[cc, "x-hold: 1"]).await });
    assert!(eventually(Duration::from_secs(5), || async { o.renders() == 1 }).await);
    // The page changes.
    assert_eq!(send(addr, "POST", "/o/f", &[]).await.status, 200);
    // A request after the POST finds the early render in flight: it must
    // not take it (nor, once stored, serve it).
    let late = tokio::spawn(async move { get(addr, "/o/f", &[cc]).await });
    // (Give it time to join the flight; the check below holds either way.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    o.gate.add_permits(1);
    let (early, late) = (early.await.unwrap(), late.await.unwrap());
    assert_eq!(early.body, "render 1");
    assert_ne!(late.body, "render 1", "the page from before the POST");
    let after = get(addr, "/o/f", &[]).await;
    assert_ne!(after.body, "render 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_carry_their_current_age_and_old_responses_are_not_fresh() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "rfc-age")), o.clone()).await;
    let age_of = |r: &Reply| -> u64 { r.header("age").expect("an age").parse().unwrap() };

    // No Age from the origin: a hit still says how old it is.
    get(addr, "/o/plain", &["x-respond: cache-control: max-age=600"]).await;
    let hit = get(addr, "/o/plain", &[]).await;
    assert_eq!(hit.x_cache(), "hit");
    assert!(age_of(&hit) <= 1, "{}", hit.head);

    // An origin's Age grows while stored; it is never replayed as it was.
    let respond = [
        "x-respond: cache-control: max-age=600",
        "x-respond: age: 30",
    ];
    get(addr, "/o/aged", &respond).await;
    let first = get(addr, "/o/aged", &[]).await;
    assert_eq!(first.x_cache(), "hit");
    assert!((30..=31).contains(&age_of(&first)), "{}", first.head);
    // Time has to pass for an age to grow.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = get(addr, "/o/aged", &[]).await;
    assert_eq!(later.x_cache(), "hit");
    assert!(age_of(&later) >= 32, "{}", later.head);

    // Responses already too old to be fresh are not served from the cache.
    let stale = [
        vec![
            "x-respond: cache-control: max-age=3600",
            "x-respond: age: 7200, 0",
        ],
        vec!["x-respond: expires: 0"],
        vec!["x-respond: expires: not a date"],
        vec![
            "x-respond: cache-control: max-age=60",
            "x-respond: date: Wed, 21 Oct 2015 07:28:00 GMT",
        ],
    ];
    for (i, respond) in stale.iter().enumerate() {
        let path = format!("/o/old{i}");
        get(addr, &path, respond).await;
        let renders = o.renders();
        let again = get(addr, &path, &[]).await;
        assert_eq!(again.x_cache(), "miss", "{respond:?}");
        assert_eq!(o.renders(), renders + 1, "{respond:?}");
    }
    // A valid Expires in the future alone is a lifetime.
    let future = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(600));
    let expires = format!("x-respond: expires: {future}");
    get(addr, "/o/expires", &[&expires]).await;
    assert_eq!(get(addr, "/o/expires", &[]).await.x_cache(), "hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_replayed_and_head_has_the_gets_headers() {
    let redis = RedisServer::start(&[]);
    let addr = serve(
        HttpCacheLayer::new(cache(&redis, "rfc-hop")),
        Origin::default(),
    )
    .await;
    let respond = [
        "x-respond: cache-control: max-age=600",
        "x-respond: connection: x-hop",
        "x-respond: x-hop: for this hop",
        "x-respond: x-kept: for everyone",
    ];
    let miss = get(addr, "/o/hop", &respond).await;
    assert_eq!(miss.x_cache(), "miss");
    let hit = get(addr, "/o/hop", &[]).await;
    assert_eq!(hit.x_cache(), "hit");
    assert_eq!(hit.header("x-hop"), None, "{}", hit.head);
    assert_eq!(hit.header("x-kept"), Some("for everyone"));

    let head = send(addr, "HEAD", "/o/hop", &[]).await;
    assert_eq!((head.x_cache(), head.body.as_str()), ("hit", ""));
    assert_eq!(head.header("content-length"), Some("8"), "{}", head.head);
    assert_eq!(head.header("x-kept"), Some("for everyone"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_that_forbid_stale_win_over_stale_windows() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(
        HttpCacheLayer::new(cache(&redis, "rfc-no-stale")),
        o.clone(),
    )
    .await;
    let forbidding = [
        "max-age=1, must-revalidate, stale-while-revalidate=60, stale-if-error=60",
        "max-age=1, Proxy-Revalidate, stale-while-revalidate=60, stale-if-error=60",
        "s-maxage=1, stale-while-revalidate=60, stale-if-error=60",
    ];
    for (i, cc) in forbidding.iter().enumerate() {
        let respond = format!("x-respond: cache-control: {cc}");
        get(addr, &format!("/o/strict{i}"), &[&respond]).await;
    }
    get(
        addr,
        "/o/lax",
        &["x-respond: cache-control: max-age=1, stale-if-error=60"],
    )
    .await;
    // Past max-age=1.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for (i, cc) in forbidding.iter().enumerate() {
        let path = format!("/o/strict{i}");
        let renders = o.renders();
        assert_eq!(get(addr, &path, &[]).await.x_cache(), "miss", "{cc}");
        assert_eq!(o.renders(), renders + 1, "{cc}");
    }
    for (i, cc) in forbidding.iter().enumerate() {
        let failing = get(addr, &format!("/o/strict{i}"), &["x-status: 500"]).await;
        assert_eq!((failing.status, failing.x_cache()), (500, "miss"), "{cc}");
    }
    // Without them, the same failure gets the stale copy.
    let failing = get(addr, "/o/lax", &["x-status: 500"]).await;
    assert_eq!((failing.status, failing.x_cache()), (200, "stale"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_near_cache_and_redis_down_no_expired_page_is_a_hit() {
    let mut redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("rfc-near")
        .redis_url(redis.url())
        .near_cache(NearCache::new())
        .build()
        .unwrap();
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache), o.clone()).await;
    get(addr, "/o/n", &["x-respond: cache-control: max-age=1"]).await;
    get(
        addr,
        "/o/allowed",
        &["x-respond: cache-control: max-age=1, stale-if-error=600"],
    )
    .await;
    assert_eq!(get(addr, "/o/n", &[]).await.x_cache(), "hit");
    assert_eq!(get(addr, "/o/allowed", &[]).await.x_cache(), "hit");
    redis.kill();
    // Past max-age=1, with L1 still holding both.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let renders = o.renders();
    let past = get(addr, "/o/n", &[]).await;
    assert_eq!((past.x_cache(), past.body.as_str()), ("miss", "render 3"));
    assert_eq!(o.renders(), renders + 1);
    // Where the response allowed it, the stale copy, labelled so.
    let failing = get(addr, "/o/allowed", &["x-status: 503"]).await;
    assert_eq!((failing.status, failing.x_cache()), (200, "stale"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_background_revalidation_holds_no_caller() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let layer = HttpCacheLayer::new(cache(&redis, "rfc-hung"))
        .revalidation_timeout(Duration::from_millis(300));
    let addr = serve(layer, o.clone()).await;
    let swr = "x-respond: cache-control: max-age=1, stale-while-revalidate=600";
    get(addr, "/o/swr", &[swr]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The second render (the background revalidation) never answers.
    o.hang_on.store(2, SeqCst);
    assert_eq!(get(addr, "/o/swr", &[swr]).await.x_cache(), "stale");
    assert!(eventually(Duration::from_secs(5), || async { o.renders() == 2 }).await);
    // A request that cannot take the stale copy renders at once, without
    // waiting behind the hung revalidation.
    let own = tokio::time::timeout(
        Duration::from_secs(5),
        get(addr, "/o/swr", &["cache-control: max-age=0"]),
    )
    .await
    .expect("not held behind the revalidation");
    assert_eq!((own.x_cache(), own.body.as_str()), ("miss", "render 3"));
    // Past its deadline, the revalidation is abandoned: a later stale hit
    // may start another.
    assert_eq!(redis.cmd(&["DEL", "http:GET //test/o/swr"]), ":1");
    get(addr, "/o/swr", &[swr]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let renders = o.renders();
    assert_eq!(get(addr, "/o/swr", &[swr]).await.x_cache(), "stale");
    assert!(
        eventually(Duration::from_secs(5), || async {
            o.renders() == renders + 1
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_no_response_could_hold_is_a_counted_miss_not_a_panic() {
    metrics();
    let redis = RedisServer::start(&[]);
    let addr = serve(
        HttpCacheLayer::new(cache(&redis, "rfc-evil")),
        Origin::default(),
    )
    .await;
    // A well-formed entry with more header lines than a HeaderMap holds.
    let mut evil = b"FBH3".to_vec();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for figure in [now, now, 0, 600_000, 0, 0] {
        evil.extend_from_slice(&figure.to_be_bytes());
    }
    evil.extend_from_slice(&200u16.to_be_bytes());
    let count = 40_000u32;
    evil.extend_from_slice(&count.to_be_bytes());
    for _ in 0..count {
        evil.extend_from_slice(&1u32.to_be_bytes());
        evil.push(b'a');
        evil.extend_from_slice(&1u32.to_be_bytes());
        evil.push(b'b');
    }
    evil.extend_from_slice(&0u64.to_be_bytes());
    evil.extend_from_slice(&u32::MAX.to_be_bytes());
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("http:GET //test/o/evil")
        .arg(evil)
        .query_async(&mut conn)
        .await
        .unwrap();
    let res = get(addr, "/o/evil", &[]).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (200, "miss", "render 1")
    );
    let undecodable = counter(
        "fusebox_cache_fail_open_total",
        &[("cache", "rfc-evil"), ("reason", "undecodable")],
    );
    assert_eq!(undecodable, 1);
}
