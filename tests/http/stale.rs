//! RFC 5861: `stale-while-revalidate` and `stale-if-error`, with a real
//! redis-server and an axum server on loopback.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use fusebox::cache::Cache;
use fusebox::http::HttpCacheLayer;

use super::common::{eventually, RedisServer};
use super::fetch;

/// The handler's state: renders so far, whether it fails, how slow it is.
#[derive(Clone, Default)]
struct Origin {
    renders: Arc<AtomicU32>,
    failing: Arc<AtomicBool>,
}

async fn page(State(origin): State<Origin>, cache_control: &'static str) -> impl IntoResponse {
    if origin.failing.load(SeqCst) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CACHE_CONTROL, "no-store")],
            "down".to_owned(),
        );
    }
    let n = origin.renders.fetch_add(1, SeqCst) + 1;
    // Slow enough for concurrent requests to overlap a render.
    tokio::time::sleep(Duration::from_millis(50)).await;
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, cache_control)],
        format!("render {n}"),
    )
}

async fn serve(server: &RedisServer, origin: Origin) -> std::net::SocketAddr {
    let cache = Cache::builder()
        .name("stale")
        .redis_url(server.url())
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/swr",
            get(|s| page(s, "public, max-age=1, stale-while-revalidate=30")),
        )
        .route(
            "/sie",
            get(|s| page(s, "public, max-age=1, stale-if-error=30")),
        )
        .route("/plain", get(|s| page(s, "public, max-age=1")))
        .with_state(origin)
        .layer(HttpCacheLayer::new(cache));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Past `max-age=1`: the entry was stored over a second ago.
async fn past_max_age() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_revalidates_once_in_the_background() {
    let server = RedisServer::start(&[]);
    let origin = Origin::default();
    let addr = serve(&server, origin.clone()).await;
    assert_eq!(
        fetch(addr, "GET", "/swr", "").await,
        (200, "miss".into(), "render 1".into())
    );
    assert_eq!(
        fetch(addr, "GET", "/swr", "").await,
        (200, "hit".into(), "render 1".into())
    );
    past_max_age().await;
    // Ten callers at once, past freshness: all get the stale copy at once,
    // and one revalidation runs.
    let callers: Vec<_> = (0..10)
        .map(|_| tokio::spawn(async move { fetch(addr, "GET", "/swr", "").await }))
        .collect();
    for c in callers {
        assert_eq!(c.await.unwrap(), (200, "stale".into(), "render 1".into()));
    }
    let revalidated = eventually(Duration::from_secs(5), || async {
        fetch(addr, "GET", "/swr", "").await == (200, "hit".into(), "render 2".into())
    });
    assert!(revalidated.await, "the revalidated copy is served");
    assert_eq!(
        origin.renders.load(SeqCst),
        2,
        "one render for the revalidation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_stale_only_when_the_handler_fails() {
    let server = RedisServer::start(&[]);
    let origin = Origin::default();
    let addr = serve(&server, origin.clone()).await;
    for path in ["/sie", "/plain"] {
        assert_eq!(fetch(addr, "GET", path, "").await.1, "miss");
    }
    past_max_age().await;
    // The handler answers: its new render, not the stale copy.
    assert_eq!(
        fetch(addr, "GET", "/sie", "").await,
        (200, "miss".into(), "render 3".into())
    );
    past_max_age().await;
    origin.failing.store(true, SeqCst);
    assert_eq!(
        fetch(addr, "GET", "/sie", "").await,
        (200, "stale".into(), "render 3".into())
    );
    assert_eq!(fetch(addr, "HEAD", "/sie", "").await.1, "stale");
    // Without stale-if-error, the failure is the answer.
    assert_eq!(fetch(addr, "GET", "/plain", "").await.0, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_near_cache_and_redis_down_stale_pages_are_served_without_rendering() {
    use fusebox::cache::NearCache;
    let mut server = RedisServer::start(&[]);
    let origin = Origin::default();
    let cache = Cache::builder()
        .name("stale-near")
        .near_cache(NearCache::new())
        .redis_url(server.url())
        .build()
        .unwrap();
    let tracking = eventually(Duration::from_secs(5), || async {
        cache.near_stats().is_some_and(|s| s.fresh)
    });
    assert!(tracking.await);
    let app = Router::new()
        .route(
            "/swr",
            get(|s| page(s, "public, max-age=1, stale-while-revalidate=30")),
        )
        .with_state(origin.clone())
        .layer(HttpCacheLayer::new(cache.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    assert_eq!(fetch(addr, "GET", "/swr", "").await.1, "miss");
    let in_l1 = eventually(Duration::from_secs(5), || async {
        fetch(addr, "GET", "/swr", "").await.1 == "hit"
            && cache.near_stats().is_some_and(|s| s.l1_hits > 0)
    });
    assert!(in_l1.await, "the page is in L1");
    server.kill();
    let open = eventually(Duration::from_secs(5), || async {
        let _ = cache.get("anything").await;
        cache.breaker().state().is_rejecting()
    });
    assert!(open.await, "the breaker opens");
    past_max_age().await;
    let renders = origin.renders.load(SeqCst);
    for _ in 0..5 {
        assert_eq!(
            fetch(addr, "GET", "/swr", "").await,
            (200, "stale".into(), "render 1".into())
        );
    }
    assert_eq!(
        origin.renders.load(SeqCst),
        renders,
        "no revalidation while Redis is down"
    );
    assert!(cache.near_stats().unwrap().stale >= 5);
}
