//! Response caching in a real axum server, with a real redis-server and a
//! real HTTP/1.1 client on loopback.

#[path = "../cache/common.rs"]
mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::header;
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
}

async fn page(State(calls): State<Calls>, Path(id): Path<String>) -> impl IntoResponse {
    calls.page.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
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

/// Serves the router on a free port; returns the address.
async fn serve(cache: Cache, calls: Calls) -> std::net::SocketAddr {
    let app = Router::new()
        .route("/page/{id}", get(page))
        .route("/private", get(private))
        .route("/no-store", get(no_store))
        .with_state(calls)
        .layer(HttpCacheLayer::new(cache).vary(["accept-language"]));
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
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .expect("a bounded answer")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
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
        .cmd(&["PTTL", "http:GET /page/1\naccept-language="])
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
    assert_eq!(
        redis.cmd(&["EXISTS", "http:GET /private\naccept-language="]),
        ":0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_reach_the_handler_once() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("http-flight")
        .redis_url(redis.url())
        .unwrap();
    let calls = Calls::default();
    let addr = serve(cache, calls.clone()).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        tasks.push(tokio::spawn(fetch(addr, "GET", "/page/hot", "")));
    }
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "page hot"));
    }
    assert_eq!(
        calls.page.load(SeqCst),
        1,
        "one request reached the handler"
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
        .unwrap();
    let breaker = cache.breaker().unwrap().clone();
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
