//! Vary variants (RFC 9111 §4.1) and `Cache-Status` (RFC 9211), issue 21:
//! through a real axum server, a real redis-server and raw HTTP/1.1. The
//! origin answers with the headers each request asks for (`x-respond`), so
//! a response that says whose it is (`x-for`) shows at once when a request
//! is given another's.

use std::collections::HashMap;
use std::time::Duration;

use fusebox::http::HttpCacheLayer;

use super::common::{eventually, RedisServer};
use super::rfc9111::{cache, get, send, serve, Origin, Reply};

const CC: &str = "x-respond: cache-control: max-age=600";

/// A request with `foo: <value>` (none for `None`) to a URL whose
/// responses say `Vary: Foo`; the response says which value it was for.
async fn foo(addr: std::net::SocketAddr, path: &str, value: Option<&str>) -> Reply {
    let (line, mark);
    let mut headers = vec![CC, "x-respond: vary: Foo"];
    if let Some(v) = value {
        line = format!("foo: {v}");
        mark = format!("x-respond: x-for: {v}");
        headers.push(&line);
        if !v.is_empty() {
            headers.push(&mark);
        }
    }
    get(addr, path, &headers).await
}

/// This layer's `Cache-Status` member: the last.
fn status(r: &Reply) -> &str {
    let mut members = r
        .head
        .lines()
        .filter_map(|l| l.strip_prefix("cache-status: "));
    members.next_back().unwrap_or("")
}

/// Whether `r` is a hit with about `ttl` seconds of freshness left (a
/// loaded machine may take a few seconds between store and hit).
fn hit_with_ttl(r: &Reply, ttl: i64) -> bool {
    status(r)
        .strip_prefix("fusebox; hit; ttl=")
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|t| t <= ttl && t > ttl - 5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_set_of_values_gets_its_own_variant_and_only_its_own() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "variants")), o.clone()).await;
    let one = foo(addr, "/o/v", Some("1")).await;
    assert_eq!(one.x_cache(), "miss");
    assert_eq!(
        status(&one),
        "fusebox; fwd=uri-miss; fwd-status=200; stored"
    );
    let again = foo(addr, "/o/v", Some("1")).await;
    assert_eq!((again.x_cache(), again.body.as_str()), ("hit", "render 1"));
    assert!(hit_with_ttl(&again, 600), "{}", status(&again));
    // Another value: a miss, stored beside the first.
    let two = foo(addr, "/o/v", Some("2")).await;
    assert_eq!((two.x_cache(), two.body.as_str()), ("miss", "render 2"));
    assert_eq!(
        status(&two),
        "fusebox; fwd=vary-miss; fwd-status=200; stored"
    );
    for (value, body) in [("1", "render 1"), ("2", "render 2")] {
        let r = foo(addr, "/o/v", Some(value)).await;
        assert_eq!((r.x_cache(), r.body.as_str()), ("hit", body), "{value}");
        assert_eq!(r.header("x-for"), Some(value));
    }
    // A request without the header is a variant of its own (and so is one
    // with it empty); the stored ones are not for it.
    let none = foo(addr, "/o/v", None).await;
    assert_eq!((none.x_cache(), none.body.as_str()), ("miss", "render 3"));
    assert_eq!(foo(addr, "/o/v", None).await.body, "render 3");
    let empty = foo(addr, "/o/v", Some("")).await;
    assert_eq!((empty.x_cache(), empty.body.as_str()), ("miss", "render 4"));
    // A stored request without the header does not serve one with it.
    let absent_first = foo(addr, "/o/w", None).await;
    assert_eq!(absent_first.body, "render 5");
    assert_eq!(foo(addr, "/o/w", Some("1")).await.body, "render 6");
    assert_eq!(o.renders(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_compared_with_lines_combined_and_spaces_around_commas_dropped() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(
        HttpCacheLayer::new(cache(&redis, "variants-norm")),
        o.clone(),
    )
    .await;
    let vary = "x-respond: vary: Foo, Bar";
    let first = get(addr, "/o/n", &[CC, vary, "foo: 1, 2", "bar: x"]).await;
    assert_eq!(first.x_cache(), "miss");
    for same in [
        &["foo: 1", "foo: 2", "bar: x"][..],
        &["foo:  1 ,2 ", "BAR: x"],
        &["bar: x", "foo: 1,2"],
    ] {
        let mut headers = vec![CC, vary];
        headers.extend_from_slice(same);
        let r = get(addr, "/o/n", &headers).await;
        assert_eq!(
            (r.x_cache(), r.body.as_str()),
            ("hit", "render 1"),
            "{same:?}"
        );
    }
    for other in [
        &["foo: 1, 2"][..],
        &["foo: 2, 1", "bar: x"],
        &["foo: 12", "bar: x"],
        &["foo: 1, 2", "bar: y"],
        &["bar: 1, 2", "foo: x"],
    ] {
        let mut headers = vec![CC, vary];
        headers.extend_from_slice(other);
        let r = get(addr, "/o/n", &headers).await;
        assert_eq!(r.x_cache(), "miss", "{other:?}");
    }
    // A secret among the values never reaches Redis in clear.
    get(addr, "/o/n", &[CC, vary, "foo: s3cret", "bar: x"]).await;
    let keys = redis.cmd(&["KEYS", "*"]);
    assert!(keys.contains("variant="), "{keys}");
    assert!(!keys.contains("s3cret"), "{keys}");
    let dump = redis.cmd(&["EVAL", "local o='' for _,k in ipairs(redis.call('KEYS','*')) do o=o..redis.call('GET',k) end return o", "0"]);
    assert!(!dump.contains("s3cret"), "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_star_is_never_served_and_variants_per_url_are_bounded() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let layer = HttpCacheLayer::new(cache(&redis, "variants-bound")).max_variants(3);
    let addr = serve(layer, o.clone()).await;
    for vary in ["*", "Foo, *", ", *"] {
        let respond = format!("x-respond: vary: {vary}");
        for _ in 0..2 {
            let r = get(addr, "/o/star", &[CC, &respond, "foo: 1"]).await;
            assert_eq!(r.x_cache(), "miss", "{vary}");
        }
    }
    // Forty values through three slots: each answer is its own, hit or not.
    let mut bodies = HashMap::new();
    for round in 0..3 {
        for i in 0..40 {
            let value = i.to_string();
            let r = foo(addr, "/o/b", Some(&value)).await;
            assert_eq!(r.header("x-for"), Some(value.as_str()), "round {round}");
            let first = bodies.entry(i).or_insert_with(|| r.body.clone());
            if r.x_cache() == "hit" {
                assert_eq!(&r.body, first, "{i}: another value's response");
            }
        }
    }
    let keys = redis.cmd(&["KEYS", "*variant=*"]);
    assert_eq!(keys.matches("variant=").count(), 3, "{keys}");

    // With no variants, a response varying outside the key is not stored.
    let none = HttpCacheLayer::new(cache(&redis, "variants-none"))
        .max_variants(0)
        .status_header(axum::http::HeaderName::from_static("x-none"));
    let addr = serve(none, o.clone()).await;
    for _ in 0..2 {
        let r = foo(addr, "/o/zero", Some("1")).await;
        assert_eq!(r.header("x-none"), Some("miss"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_other_values_never_take_the_leaders_response() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(
        HttpCacheLayer::new(cache(&redis, "variants-flight")),
        o.clone(),
    )
    .await;
    // The first render for the URL is held; requests for it pile up in its
    // flight, two for the leader's value and the rest for others.
    let values = ["1", "1", "2", "3", "1", "4", "2", "5"];
    let leader = tokio::spawn(async move {
        let h = [
            "x-hold: 1",
            CC,
            "x-respond: vary: Foo",
            "foo: 1",
            "x-respond: x-for: 1",
        ];
        get(addr, "/o/c", &h).await
    });
    assert!(eventually(Duration::from_secs(5), || async { o.renders() == 1 }).await);
    let mut followers = Vec::new();
    for v in values {
        followers.push(tokio::spawn(async move {
            (v, foo(addr, "/o/c", Some(v)).await)
        }));
    }
    // (Give them time to join the flight; the checks hold either way.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    o.gate.add_permits(1);
    let leader = leader.await.unwrap();
    assert_eq!(leader.header("x-for"), Some("1"));
    assert_eq!(
        status(&leader),
        "fusebox; fwd=uri-miss; fwd-status=200; stored"
    );
    for f in followers {
        let (v, r) = f.await.unwrap();
        assert_eq!(
            r.header("x-for"),
            Some(v),
            "a request for {v} given another's"
        );
        let s = status(&r);
        if v == "1" {
            assert!(
                s == "fusebox; fwd=uri-miss; fwd-status=200; collapsed" || hit_with_ttl(&r, 600),
                "{s}"
            );
        } else {
            assert!(
                !s.contains("; collapsed;") && !s.ends_with("; collapsed"),
                "{s}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_status_says_what_the_layer_did_after_the_caches_behind_it() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(
        HttpCacheLayer::new(cache(&redis, "cache-status")),
        o.clone(),
    )
    .await;
    // The origin's own member comes first.
    let behind = "x-respond: cache-status: origin-cdn; fwd=uri-miss";
    let r = get(addr, "/o/s", &[CC, behind]).await;
    let members: Vec<_> = r
        .head
        .lines()
        .filter_map(|l| l.strip_prefix("cache-status: "))
        .collect();
    assert_eq!(
        members,
        [
            "origin-cdn; fwd=uri-miss",
            "fusebox; fwd=uri-miss; fwd-status=200; stored"
        ]
    );
    let hit = get(addr, "/o/s", &[CC]).await;
    assert!(hit_with_ttl(&hit, 600), "{}", status(&hit));
    for (headers, method, member) in [
        (
            &[CC, "authorization: Bearer x"][..],
            "GET",
            "fusebox; fwd=bypass; detail=bypass-credentials",
        ),
        (
            &[CC, "cache-control: no-cache"],
            "GET",
            "fusebox; fwd=request",
        ),
        (&[CC], "OPTIONS", "fusebox; fwd=method"),
    ] {
        let r = send(addr, method, "/o/s", headers).await;
        assert_eq!(status(&r), member, "{headers:?} {method}");
    }
    // A label the handler's response carries (a CDN's behind this one) is
    // replaced by the layer's own.
    let r = get(addr, "/o/labelled", &[CC, "x-respond: x-cache: HIT"]).await;
    assert_eq!(r.x_cache(), "miss");
    assert_eq!(status(&r), "fusebox; fwd=uri-miss; fwd-status=200; stored");
    // Not stored: no `stored`.
    let r = get(addr, "/o/not", &["x-respond: cache-control: no-store"]).await;
    assert_eq!(status(&r), "fusebox; fwd=uri-miss; fwd-status=200");
    // A copy past its freshness, kept for errors: served when the handler
    // fails, saying so.
    let kept = [
        "x-respond: cache-control: max-age=600, stale-if-error=3600",
        "x-respond: age: 700",
    ];
    assert_eq!(get(addr, "/o/e", &kept).await.x_cache(), "miss");
    let failed = get(addr, "/o/e", &["x-status: 500"]).await;
    assert_eq!((failed.status, failed.x_cache()), (200, "stale"));
    let s = status(&failed);
    assert!(
        s.starts_with("fusebox; fwd=stale; fwd-status=500; ttl=-10"),
        "{s}"
    );
    assert!(s.ends_with("; detail=stale-if-error"), "{s}");
    // A POST answered 2xx: forwarded for its method.
    let post = send(addr, "POST", "/o/s", &[]).await;
    assert_eq!(status(&post), "fusebox; fwd=method");
    // After the POST the page is stale: fetched again.
    let r = get(addr, "/o/s", &[CC]).await;
    assert_eq!(status(&r), "fusebox; fwd=uri-miss; fwd-status=200; stored");

    // Another name; or none at all (x-cache stays).
    let named = HttpCacheLayer::new(cache(&redis, "cache-status-2")).cache_status("edge 1");
    let addr = serve(named, o.clone()).await;
    // (Caches over one Redis share entries unless their prefixes differ.)
    let r = get(addr, "/o/edge", &[CC]).await;
    assert_eq!(
        status(&r),
        "\"edge 1\"; fwd=uri-miss; fwd-status=200; stored"
    );
    let off = HttpCacheLayer::new(cache(&redis, "cache-status-3")).cache_status("");
    let addr = serve(off, o.clone()).await;
    let r = get(addr, "/o/off", &[CC]).await;
    assert_eq!((status(&r), r.x_cache()), ("", "miss"));
}

/// A purge at the very millisecond an entry's request was sent hides it
/// ("a purge at or after this moment"): the marker is set, in Redis, to
/// the time the stored entry records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_at_the_millisecond_an_entry_was_requested_hides_it() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "purge-ms")), o.clone()).await;
    assert_eq!(get(addr, "/o/m", &[CC]).await.x_cache(), "miss");
    assert_eq!(get(addr, "/o/m", &[CC]).await.x_cache(), "hit");
    // The entry's request time is the 8 bytes after the format's magic.
    let script = "local s = string.sub(redis.call('GET', KEYS[1]), 5, 12) \
                  local n = 0 for i = 1, 8 do n = n * 256 + string.byte(s, i) end \
                  return redis.call('SET', KEYS[2], string.format('%.0f', n))";
    let set = redis.cmd(&[
        "EVAL",
        script,
        "2",
        "http:GET //test/o/m",
        "http:purge //test/o/m",
    ]);
    assert!(set.contains("OK"), "{set}");
    let after = get(addr, "/o/m", &[CC]).await;
    assert_eq!((after.x_cache(), after.body.as_str()), ("miss", "render 2"));
}
