//! What the layer forwards to the handler when it cannot answer from a
//! stored response alone (a validation with the stored validators, or the
//! client's own conditions untouched), what the client then gets, and how
//! a forwarded request is counted. Each case through a real axum server, a
//! real redis-server and raw HTTP/1.1 on loopback. And what a hit costs
//! Redis with a near cache: nothing.

use std::time::Duration;

use fusebox::cache::{Cache, NearCache};
use fusebox::http::HttpCacheLayer;

use super::common::{calls, counter, eventually, metrics, RedisServer};
use super::rfc9111::{cache, get, send, serve, Origin};

/// The `If-None-Match` the origin saw last.
fn asked(o: &Origin) -> Option<String> {
    o.last_if_none_match.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_kept_for_errors_is_validated_with_its_etag() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "fwd-sie")), o.clone()).await;
    // Stale at once, kept a minute in case the handler fails, with a
    // validator: the next request validates it.
    let respond = [
        "x-respond: cache-control: max-age=0, stale-if-error=60",
        "x-respond: etag: \"v1\"",
    ];
    assert_eq!(get(addr, "/o/sie", &respond).await.x_cache(), "miss");
    assert_eq!(asked(&o), None);
    let again = get(addr, "/o/sie", &respond).await;
    assert_eq!(asked(&o).as_deref(), Some("\"v1\""), "validated");
    assert_eq!(
        (again.status, again.x_cache(), again.body.as_str()),
        (200, "revalidated", "render 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_stored_validator_the_clients_own_conditions_reach_the_handler() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "fwd-own")), o.clone()).await;
    // The client's condition, and the origin's ETag that matches it: the
    // origin answers 304 when the condition reaches it.
    let conditional = ["if-none-match: \"c1\"", "x-respond: etag: \"c1\""];

    // A copy kept for errors, without a validator of its own.
    let sie = "x-respond: cache-control: max-age=0, stale-if-error=60";
    assert_eq!(get(addr, "/o/sie", &[sie]).await.x_cache(), "miss");
    let res = get(addr, "/o/sie", &[conditional[0], conditional[1], sie]).await;
    assert_eq!(asked(&o).as_deref(), Some("\"c1\""));
    assert_eq!(
        res.status, 304,
        "the origin's answer to the client's condition"
    );

    // A fresh copy without a validator that the client will not take (it
    // is 5 s old, the client asks for at most 0 s).
    let fresh = ["x-respond: cache-control: max-age=60", "x-respond: age: 5"];
    assert_eq!(get(addr, "/o/fresh", &fresh).await.x_cache(), "miss");
    *o.last_if_none_match.lock().unwrap() = None;
    let res = get(
        addr,
        "/o/fresh",
        &["cache-control: max-age=0", conditional[0], conditional[1]],
    )
    .await;
    assert_eq!(asked(&o).as_deref(), Some("\"c1\""));
    assert_eq!(res.status, 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revalidated_copy_answers_the_clients_condition() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "fwd-304")), o.clone()).await;
    let stored = [
        "x-respond: cache-control: max-age=60",
        "x-respond: age: 5",
        "x-respond: etag: \"v1\"",
    ];
    assert_eq!(get(addr, "/o/p", &stored).await.x_cache(), "miss");
    // Too old for this client: validated with the origin (a 304), and the
    // client, which has the same version, gets a 304 too.
    let mut headers = stored.to_vec();
    headers.extend(["cache-control: max-age=0", "if-none-match: \"v1\""]);
    let res = get(addr, "/o/p", &headers).await;
    assert_eq!(asked(&o).as_deref(), Some("\"v1\""));
    assert_eq!((res.status, res.x_cache()), (304, "revalidated"));
    assert_eq!(res.body, "");
    // A client without the version gets the page.
    headers.pop();
    let res = get(addr, "/o/p", &headers).await;
    assert_eq!(
        (res.status, res.x_cache(), res.body.as_str()),
        (200, "revalidated", "render 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_counted_by_outcome_and_bypasses_by_method_or_request() {
    metrics();
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "fwd-count")), o.clone()).await;
    // A miss, then a hit.
    let fresh = "x-respond: cache-control: max-age=600";
    assert_eq!(get(addr, "/o/h", &[fresh]).await.x_cache(), "miss");
    assert_eq!(get(addr, "/o/h", &[]).await.x_cache(), "hit");
    // A stale copy served while it is revalidated (a second miss stores
    // it), and one revalidated before it is served.
    let swr = [
        "x-respond: cache-control: max-age=1, stale-while-revalidate=600",
        "x-respond: age: 5",
    ];
    assert_eq!(get(addr, "/o/s", &swr).await.x_cache(), "miss");
    assert_eq!(get(addr, "/o/s", &swr).await.x_cache(), "stale");
    // (Five seconds old when stored: a request's `max-age=0` refuses it
    // however soon it comes. Stored as new, a request within the same
    // millisecond could take it, age 0, as a hit.)
    let validator = [fresh, "x-respond: etag: \"v\"", "x-respond: age: 5"];
    assert_eq!(get(addr, "/o/v", &validator).await.x_cache(), "miss");
    let mut again = validator.to_vec();
    again.push("cache-control: max-age=0");
    assert_eq!(get(addr, "/o/v", &again).await.x_cache(), "revalidated");
    // Methods the layer does not answer.
    for method in ["POST", "OPTIONS", "PUT"] {
        assert_eq!(send(addr, method, "/o/m", &[]).await.x_cache(), "bypass");
    }
    // GET and HEAD the request itself keeps from the cache.
    for (method, header) in [
        ("GET", "authorization: Bearer x"),
        ("HEAD", "authorization: Bearer x"),
        ("GET", "cache-control: no-store"),
    ] {
        let res = send(addr, method, "/o/r", &[header]).await;
        assert_eq!(res.x_cache(), "bypass", "{method} with {header}");
    }
    let responses = |outcome, reason: Option<&'static str>| {
        let mut labels = vec![("cache", "fwd-count"), ("outcome", outcome)];
        labels.extend(reason.map(|r| ("reason", r)));
        counter("fusebox_http_responses_total", &labels)
    };
    assert_eq!(responses("hit", None), 1);
    assert_eq!(responses("stale", None), 1);
    assert_eq!(responses("revalidated", None), 1);
    assert_eq!(responses("miss", None), 3);
    assert_eq!(responses("bypass", Some("method")), 3);
    assert_eq!(responses("bypass", Some("request")), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_near_cache_hits_ask_redis_nothing() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("fwd-near")
        .near_cache(NearCache::new())
        .redis_url(redis.url())
        .build()
        .unwrap();
    let tracking = eventually(Duration::from_secs(5), || async {
        cache.near_stats().is_some_and(|s| s.fresh)
    });
    assert!(tracking.await);
    let addr = serve(HttpCacheLayer::new(cache.clone()), Origin::default()).await;
    let respond = "x-respond: cache-control: max-age=600";
    assert_eq!(get(addr, "/o/n", &[respond]).await.x_cache(), "miss");
    // The page and its URL's purge marker ("never purged", written with
    // the page: an absent key is not kept in L1) come into L1.
    let in_l1 = eventually(Duration::from_secs(5), || async {
        let before = reads(&redis);
        get(addr, "/o/n", &[]).await.x_cache() == "hit" && reads(&redis) == before
    });
    assert!(in_l1.await, "a hit served from L1 alone");
    let before = reads(&redis);
    for _ in 0..5 {
        assert_eq!(get(addr, "/o/n", &[]).await.x_cache(), "hit");
    }
    assert_eq!(reads(&redis), before, "5 hits, no read of Redis");
}

/// Reads Redis has run, of every kind a cache sends.
fn reads(redis: &RedisServer) -> u64 {
    ["get", "mget", "pttl"]
        .iter()
        .map(|c| calls(redis, c))
        .sum()
}
