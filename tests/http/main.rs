//! Response caching in a real axum server, with a real redis-server and a
//! real HTTP/1.1 client on loopback.

mod breadth;
mod client;
#[path = "../cache/common.rs"]
mod common;
mod forwarding;
mod rfc9111;
mod stale;
mod variants;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use fusebox::cache::Cache;
use fusebox::http::HttpCacheLayer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{eventually, RedisServer};

/// Handler calls, by route.
#[derive(Clone, Default)]
struct Calls {
    page: Arc<AtomicU32>,
    private: Arc<AtomicU32>,
    /// Requests that reached the cache layer.
    arrived: Arc<AtomicU32>,
}

/// Requests for `/page/hot` that the handler waits for.
const HOT: u32 = 20;

async fn page(State(calls): State<Calls>, Path(id): Path<String>) -> impl IntoResponse {
    calls.page.fetch_add(1, SeqCst);
    if id == "hot" {
        // Answers once every concurrent request has reached the cache layer.
        let all = eventually(Duration::from_secs(5), || async {
            calls.arrived.load(SeqCst) >= HOT
        });
        assert!(all.await, "{HOT} requests arrive");
    } else {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        format!("page {id}"),
    )
}

async fn private(State(calls): State<Calls>) -> impl IntoResponse {
    calls.private.fetch_add(1, SeqCst);
    (
        [(header::CACHE_CONTROL, "private, max-age=60")],
        "yours only",
    )
}

async fn no_store() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], "never kept")
}

/// Says whom it answered: the host (URI authority or `Host`) and the
/// caller's cookie or credentials. Shareable, for a minute.
async fn whoami(State(calls): State<Calls>, uri: Uri, headers: HeaderMap) -> impl IntoResponse {
    calls.page.fetch_add(1, SeqCst);
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    };
    let host = uri
        .authority()
        .map(|a| a.as_str())
        .unwrap_or(text(header::HOST));
    let body = format!(
        "host {host} cookie {} auth {}",
        text(header::COOKIE),
        text(header::AUTHORIZATION)
    );
    ([(header::CACHE_CONTROL, "public, max-age=60")], body)
}

/// A shareable response that says `Vary: {names}` (`star` for `*`).
async fn vary(Path(names): Path<String>) -> impl IntoResponse {
    let names = if names == "star" { "*".into() } else { names };
    (
        [
            (header::CACHE_CONTROL, "public, max-age=60".to_owned()),
            (header::VARY, names),
        ],
        "varies",
    )
}

/// What static-file handlers send: a `Last-Modified`, no lifetime.
async fn last_modified() -> impl IntoResponse {
    (
        [(header::LAST_MODIFIED, "Wed, 21 Oct 2015 07:28:00 GMT")],
        "file",
    )
}

/// Serves the router on a free port; returns the address.
async fn serve(cache: Cache, calls: Calls) -> std::net::SocketAddr {
    serve_with(HttpCacheLayer::new(cache).vary(["accept-language"]), calls).await
}

/// Serves the routes behind `layer` on a free port, for HTTP/1.1 and
/// HTTP/2 (prior knowledge); returns the address.
async fn serve_with(layer: HttpCacheLayer, calls: Calls) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/page/{id}", get(page))
        .route("/private", get(private))
        .route("/no-store", get(no_store))
        .route("/whoami", get(whoami))
        .route("/vary/{names}", get(vary))
        .route("/static", get(last_modified))
        .with_state(calls.clone())
        .layer(layer)
        .layer(tower::util::MapRequestLayer::new(
            move |req: axum::extract::Request| {
                calls.arrived.fetch_add(1, SeqCst);
                req
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// One request with a fresh connection: status, the `x-cache` header, body.
async fn fetch(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    extra: &str,
) -> (u16, String, String) {
    fetch_from(addr, "test", method, path, extra).await
}

/// [`fetch`] with the given `Host`.
async fn fetch_from(
    addr: std::net::SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    extra: &str,
) -> (u16, String, String) {
    let req =
        format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n{extra}\r\n");
    let text = exchange(addr, &req).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head[9..12].parse().unwrap();
    let x_cache = head
        .lines()
        .find_map(|l| l.strip_prefix("x-cache: "))
        .unwrap_or("")
        .to_owned();
    (status, x_cache, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_misses_bypasses_and_cache_control() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("http")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let calls = Calls::default();
    let addr = serve(cache, calls.clone()).await;

    assert_eq!(
        fetch(addr, "GET", "/page/1", "").await,
        (200, "miss".into(), "page 1".into())
    );
    assert_eq!(
        fetch(addr, "GET", "/page/1", "").await,
        (200, "hit".into(), "page 1".into())
    );
    assert_eq!(calls.page.load(SeqCst), 1);
    // Stored with the response's max-age.
    let ttl: i64 = redis
        .cmd(&["PTTL", "http:GET //test/page/1"])
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "{ttl}");
    // HEAD is answered from the cached GET, without a body.
    let (status, x, body) = fetch(addr, "HEAD", "/page/1", "").await;
    assert_eq!((status, x.as_str(), body.as_str()), (200, "hit", ""));
    // The query and the configured Vary header are part of the key.
    assert_eq!(fetch(addr, "GET", "/page/1?v=2", "").await.1, "miss");
    assert_eq!(
        fetch(addr, "GET", "/page/1", "accept-language: fr\r\n")
            .await
            .1,
        "miss"
    );
    assert_eq!(
        fetch(addr, "GET", "/page/1", "accept-language: fr\r\n")
            .await
            .1,
        "hit"
    );
    // The client can ask for a fresh answer; credentials are never shared.
    assert_eq!(
        fetch(addr, "GET", "/page/1", "cache-control: no-cache\r\n")
            .await
            .1,
        "bypass"
    );
    assert_eq!(
        fetch(addr, "GET", "/page/1", "authorization: Bearer x\r\n")
            .await
            .1,
        "bypass"
    );
    // private and no-store are never cached.
    for _ in 0..2 {
        assert_eq!(fetch(addr, "GET", "/private", "").await.1, "miss");
        assert_eq!(fetch(addr, "GET", "/no-store", "").await.1, "miss");
    }
    assert_eq!(calls.private.load(SeqCst), 2);
    assert_eq!(redis.cmd(&["EXISTS", "http:GET //test/private"]), ":0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_reach_the_handler_once() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("http-flight")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let calls = Calls::default();
    let addr = serve(cache, calls.clone()).await;
    let mut tasks = Vec::new();
    for _ in 0..HOT {
        tasks.push(tokio::spawn(fetch(addr, "GET", "/page/hot", "")));
    }
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "page hot"));
    }
    // The handler answers only once all 20 are in the layer, so without
    // coalescing it would see all 20. (That exactly one caller loads is
    // tested on an in-memory backend, where every waiter can be seen: here
    // a request may still be on its way from Redis' miss to the flight
    // when the first lands.)
    let handled = calls.page.load(SeqCst);
    assert!(
        handled < HOT / 2,
        "{handled} of {HOT} requests reached the handler"
    );
    // Unshareable responses are not serialised behind one another.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.push(tokio::spawn(fetch(addr, "GET", "/private", "")));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 200);
    }
    assert_eq!(calls.private.load(SeqCst), 10);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_every_request_still_answered_then_hits_resume() {
    let mut redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("http-down")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let breaker = cache.breaker().clone();
    let calls = Calls::default();
    let addr = serve(cache, calls.clone()).await;
    assert_eq!(fetch(addr, "GET", "/page/a", "").await.1, "miss");
    assert_eq!(fetch(addr, "GET", "/page/a", "").await.1, "hit");

    redis.kill();
    for i in 0..20 {
        let start = Instant::now();
        let (status, x, body) = fetch(addr, "GET", "/page/a", "").await;
        assert_eq!(
            (status, x.as_str(), body.as_str()),
            (200, "miss", "page a"),
            "request {i}"
        );
        // The handler's 50 ms plus at most the cache's deadline.
        assert!(
            start.elapsed() < Duration::from_millis(1000),
            "request {i}: {:?}",
            start.elapsed()
        );
    }
    assert_ne!(breaker.state(), fusebox::breaker::State::Closed);

    redis.restart();
    let hits = eventually(Duration::from_secs(10), || async {
        fetch(addr, "GET", "/page/a", "").await.1 == "hit"
    })
    .await;
    assert!(hits, "hits resume once Redis is back");
}

/// One HTTP/2 request (prior knowledge, no `Host` header: the host is the
/// URI's authority) with `headers`: status, `x-cache`, body.
async fn fetch_h2(
    addr: std::net::SocketAddr,
    uri: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), async {
        let res = send.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let x = res
            .headers()
            .get("x-cache")
            .map_or("", |v| v.to_str().unwrap());
        let x = x.to_owned();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, x, String::from_utf8_lossy(&body).into_owned())
    });
    res.await.expect("a bounded answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_never_share_a_response_over_http1_or_http2() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("http-hosts")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let calls = Calls::default();
    let addr = serve(cache, calls.clone()).await;
    let h1 = |host: &'static str| fetch_from(addr, host, "GET", "/whoami", "");
    let a = "host a.test cookie - auth -";
    let b = "host b.test cookie - auth -";
    assert_eq!(h1("a.test").await, (200, "miss".into(), a.into()));
    assert_eq!(h1("b.test").await, (200, "miss".into(), b.into()));
    assert_eq!(
        h1("A.TEST").await,
        (200, "hit".into(), a.into()),
        "hosts ignore case"
    );
    assert_eq!(h1("b.test").await, (200, "hit".into(), b.into()));
    // A Host that reads as a host and a path is never cached.
    assert_eq!(h1("a.test/whoami").await.1, "bypass");

    // HTTP/2 has no Host header: the authority is the URI's.
    let h2 = |uri: &'static str, headers: &'static [(&'static str, &'static str)]| {
        fetch_h2(addr, uri, headers)
    };
    let c = "host c.test cookie - auth -";
    let d = "host d.test cookie - auth -";
    assert_eq!(
        h2("http://c.test/whoami", &[]).await,
        (200, "miss".into(), c.into())
    );
    assert_eq!(
        h2("http://d.test/whoami", &[]).await,
        (200, "miss".into(), d.into())
    );
    assert_eq!(
        h2("http://c.test/whoami", &[]).await,
        (200, "hit".into(), c.into())
    );
    assert_eq!(
        h2("http://d.test/whoami", &[]).await,
        (200, "hit".into(), d.into())
    );
    // An authority and a Host that disagree: either may be what the handler
    // reads, so the request is not cached.
    let (_, x, _) = h2("http://c.test/whoami", &[("host", "d.test")]).await;
    assert_eq!(x, "bypass");
    // Headers a proxy sets are keyed: forging one gets its own entry.
    let forged = fetch_from(
        addr,
        "a.test",
        "GET",
        "/whoami",
        "x-forwarded-host: evil\r\n",
    );
    assert_eq!(forged.await.1, "miss");
    assert_eq!(calls.page.load(SeqCst), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_never_share_a_response() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("http-users")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let calls = Calls::default();
    let get = |addr, extra: &'static str| fetch(addr, "GET", "/whoami", extra);

    // By default, a cookie or credentials keep the request out of the
    // cache, though the response says public.
    let addr = serve(cache.clone(), calls.clone()).await;
    for _ in 0..2 {
        for (extra, body) in [
            (
                "cookie: session=alice\r\n",
                "host test cookie session=alice auth -",
            ),
            (
                "cookie: session=bob\r\n",
                "host test cookie session=bob auth -",
            ),
            (
                "authorization: Bearer alice\r\n",
                "host test cookie - auth Bearer alice",
            ),
            (
                "authorization: Bearer bob\r\n",
                "host test cookie - auth Bearer bob",
            ),
        ] {
            assert_eq!(get(addr, extra).await, (200, "bypass".into(), body.into()));
        }
    }
    assert_eq!(calls.page.load(SeqCst), 8, "every one reached the handler");
    // So does a header the layer is told identifies the caller.
    let layer = HttpCacheLayer::new(cache.clone()).credential_headers(["x-api-key"]);
    let keyed = serve_with(layer, calls.clone()).await;
    assert_eq!(get(keyed, "x-api-key: k1\r\n").await.1, "bypass");
    assert_eq!(redis.cmd(&["DBSIZE"]), ":0", "nothing stored");

    // Varying on the cookie: one entry per cookie, under a hashed key.
    let layer = HttpCacheLayer::new(cache.clone()).vary(["cookie"]);
    let per_user = serve_with(layer, calls.clone()).await;
    let alice = "host test cookie session=alice auth -";
    let bob = "host test cookie session=bob auth -";
    let (a, b) = ("cookie: session=alice\r\n", "cookie: session=bob\r\n");
    assert_eq!(get(per_user, a).await, (200, "miss".into(), alice.into()));
    assert_eq!(get(per_user, b).await, (200, "miss".into(), bob.into()));
    assert_eq!(get(per_user, a).await, (200, "hit".into(), alice.into()));
    assert_eq!(get(per_user, b).await, (200, "hit".into(), bob.into()));
    let keys = redis.cmd(&["KEYS", "*"]);
    assert!(!keys.contains("alice") && !keys.contains("bob"), "{keys}");
    assert!(keys.contains("http:#"), "{keys}");

    // A public layer shares whatever the cookie says.
    let layer = HttpCacheLayer::new(cache).public();
    let public = serve_with(layer, calls.clone()).await;
    let path = "/whoami?public";
    let (_, x, first) = fetch(public, "GET", path, a).await;
    assert_eq!(x, "miss");
    assert_eq!(
        fetch(public, "GET", path, b).await,
        (200, "hit".into(), first)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_vary_on_unkeyed_headers_are_stored_as_variants_but_star_never() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("http-vary")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let addr = serve(cache, Calls::default()).await;
    // The layer keys on accept-language (and the host); responses varying
    // on other headers are variants (see `variants.rs`), `*` never stored.
    for (names, stored) in [
        ("accept-language", true),
        ("Accept-Language,%20Host", true),
        ("cookie", true),
        ("accept-encoding", true),
        ("accept-language,%20user-agent", true),
        ("star", false),
    ] {
        let path = format!("/vary/{names}");
        assert_eq!(fetch(addr, "GET", &path, "").await.1, "miss", "{names}");
        let second = if stored { "hit" } else { "miss" };
        assert_eq!(fetch(addr, "GET", &path, "").await.1, second, "{names}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_modified_alone_is_not_a_lifetime_unless_asked_for() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("http-heuristic")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let addr = serve(cache.clone(), Calls::default()).await;
    for _ in 0..2 {
        assert_eq!(fetch(addr, "GET", "/static", "").await.1, "miss");
    }
    assert_eq!(redis.cmd(&["DBSIZE"]), ":0");

    let layer = HttpCacheLayer::new(cache).heuristic_freshness(10);
    let addr = serve_with(layer, Calls::default()).await;
    assert_eq!(fetch(addr, "GET", "/static", "").await.1, "miss");
    assert_eq!(fetch(addr, "GET", "/static", "").await.1, "hit");
    // A tenth of the ~11 years since 2015, capped by the cache's max_ttl
    // (7 days, less its jitter).
    let ttl: i64 = redis
        .cmd(&["PTTL", "http:GET //test/static"])
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(ttl > 5 * 86_400_000, "{ttl}");
}

/// Sends `request` on a fresh connection; the whole answer, as text.
async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .expect("a bounded answer")
        .unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

/// One GET with a fresh connection: status and the response head.
async fn head_of(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    let text = exchange(addr, &req).await;
    let head = text.split_once("\r\n\r\n").map_or(&*text, |(h, _)| h);
    (head[9..12].parse().unwrap(), head.to_ascii_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_fails_trips_its_breaker_answers_503_and_recovers() {
    use fusebox::breaker::{Config, State};
    use fusebox::http::HttpBreakerLayer;

    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let handled = Arc::new(AtomicU32::new(0));
    let flaky = {
        let (down, handled) = (down.clone(), handled.clone());
        move || async move {
            handled.fetch_add(1, SeqCst);
            if down.load(SeqCst) {
                axum::http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                axum::http::StatusCode::OK
            }
        }
    };
    let layer = HttpBreakerLayer::new(
        Config::builder()
            .name("reports")
            .consecutive_failures(3)
            .open_for(Duration::from_millis(1500))
            .open_jitter(0.0)
            .build()
            .unwrap(),
    );
    let breaker = layer.breaker().clone();
    let mut transitions = breaker.subscribe();
    let app = Router::new()
        .route("/report", get(flaky))
        .route_layer(layer)
        .route("/other", get(|| async { "fine" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    for _ in 0..3 {
        assert_eq!(head_of(addr, "/report").await.0, 500);
    }
    assert_eq!(breaker.state(), State::Open);
    // Open: 503 with the seconds left, and the handler is not called.
    let (status, head) = head_of(addr, "/report").await;
    assert_eq!(status, 503);
    assert!(
        head.contains("retry-after: 2") || head.contains("retry-after: 1"),
        "{head}"
    );
    assert_eq!(handled.load(SeqCst), 3);
    // Only the route behind the layer is guarded.
    assert_eq!(head_of(addr, "/other").await.0, 200);

    down.store(false, SeqCst);
    assert_eq!(transitions.recv().await.unwrap().to, State::Open);
    let half_open = tokio::time::timeout(Duration::from_secs(5), transitions.recv()).await;
    assert_eq!(half_open.unwrap().unwrap().to, State::HalfOpen);
    assert_eq!(head_of(addr, "/report").await.0, 200);
    assert_eq!(breaker.state(), State::Closed);
}

/// A tiny HTTP/1.1 client for absolute URIs: one connection per request.
async fn client_get(
    req: http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let authority = req.uri().authority().ok_or("no host")?.to_string();
    let stream = tokio::net::TcpStream::connect(authority).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    Ok(send.send_request(req).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_breaker_keeps_a_circuit_per_host() {
    use fusebox::breaker::{Config, KeyedBreakerLayer, State};
    use fusebox::http::ServerErrors;
    use tower::{Layer, ServiceExt};

    // Two downstream hosts: one failing, one healthy.
    let mut hosts = Vec::new();
    for status in [500u16, 200] {
        let app = Router::new().route(
            "/",
            get(move || async move { axum::http::StatusCode::from_u16(status).unwrap() }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        hosts.push(listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    let (failing, healthy) = (hosts[0], hosts[1]);
    let config = Config::builder()
        .name("outbound")
        .consecutive_failures(3)
        .build()
        .unwrap();
    let host = |req: &http::Request<http_body_util::Empty<bytes::Bytes>>| {
        req.uri()
            .authority()
            .map_or(String::new(), |a| a.to_string())
    };
    let layer = KeyedBreakerLayer::new(config, host).classifier(ServerErrors::new());
    let client = layer.layer(tower::service_fn(client_get));
    let get = |addr: std::net::SocketAddr| {
        let req = http::Request::get(format!("http://{addr}/"))
            .body(http_body_util::Empty::new())
            .unwrap();
        client.clone().oneshot(req)
    };
    for _ in 0..5 {
        let _ = get(failing).await;
        assert_eq!(get(healthy).await.unwrap().status(), 200);
    }
    let circuit = |addr: std::net::SocketAddr| layer.breaker(&addr.to_string()).unwrap();
    assert_eq!(circuit(failing).state(), State::Open);
    assert_eq!(circuit(healthy).state(), State::Closed);
    assert_eq!(circuit(failing).name(), format!("outbound:{failing}"));
    // The failing host's calls are now rejected without a connection.
    let err = get(failing).await.unwrap_err();
    assert!(err.is_open(), "rejected by its own circuit");
    assert_eq!(layer.len(), 2);
}
