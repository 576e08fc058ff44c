//! What the layer stores beyond a plain `200` (issue 21): every final
//! status with a lifetime, targeted cache control (RFC 9213), and stale
//! copies served on a handler's failure by the layer's own policy. Each
//! through a real axum server, a real redis-server and raw HTTP/1.1.

use std::time::Duration;

use fusebox::http::HttpCacheLayer;

use super::common::RedisServer;
use super::rfc9111::{cache, get, serve, Origin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_final_status_with_a_lifetime_is_stored_and_partial_content_never() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let layer = HttpCacheLayer::new(cache(&redis, "statuses")).heuristic_freshness(10);
    let addr = serve(layer, o.clone()).await;
    for status in [
        200, 203, 204, 299, 301, 302, 307, 400, 404, 410, 500, 503, 599,
    ] {
        let path = format!("/o/explicit/{status}");
        let ask = [
            format!("x-status: {status}"),
            "x-respond: cache-control: max-age=60".to_owned(),
        ];
        let ask: Vec<&str> = ask.iter().map(String::as_str).collect();
        let first = get(addr, &path, &ask).await;
        assert_eq!((first.status, first.x_cache()), (status, "miss"));
        let second = get(addr, &path, &ask).await;
        assert_eq!(
            (second.status, second.x_cache(), second.body.as_str()),
            (status, "hit", first.body.as_str()),
            "{status}"
        );
    }
    // Heuristics only for the statuses RFC 9110 names; never a `206`.
    let modified = "x-respond: last-modified: Mon, 01 Jan 2024 00:00:00 GMT";
    for (status, stored) in [(404, true), (410, true), (302, false), (500, false)] {
        let path = format!("/o/heuristic/{status}");
        let ask = [format!("x-status: {status}")];
        let ask = [ask[0].as_str(), modified];
        get(addr, &path, &ask).await;
        let again = get(addr, &path, &ask).await;
        assert_eq!(again.x_cache() == "hit", stored, "{status}");
    }
    let ask = ["x-status: 206", "x-respond: cache-control: max-age=60"];
    get(addr, "/o/partial", &ask).await;
    assert_eq!(get(addr, "/o/partial", &ask).await.x_cache(), "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_kept_no_longer_than_the_layers_cap() {
    let redis = RedisServer::start(&[]);
    let layer =
        HttpCacheLayer::new(cache(&redis, "error-cap")).max_error_freshness(Duration::from_secs(2));
    let addr = serve(layer, Origin::default()).await;
    // Five seconds old on arrival: past the cap for an error, well within
    // `max-age` for a success.
    let old = ["x-respond: cache-control: max-age=60", "x-respond: age: 5"];
    for (status, stored) in [("200", true), ("404", false), ("503", false)] {
        let path = format!("/o/old/{status}");
        let ask = [format!("x-status: {status}")];
        let ask = [ask[0].as_str(), old[0], old[1]];
        get(addr, &path, &ask).await;
        let again = get(addr, &path, &ask).await;
        assert_eq!(again.x_cache() == "hit", stored, "{status}");
    }
    // A zero cap stores no error at all.
    let layer =
        HttpCacheLayer::new(cache(&redis, "error-cap-0")).max_error_freshness(Duration::ZERO);
    let addr = serve(layer, Origin::default()).await;
    let ask = ["x-status: 404", "x-respond: cache-control: max-age=60"];
    get(addr, "/o/none", &ask).await;
    assert_eq!(get(addr, "/o/none", &ask).await.x_cache(), "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targeted_field_replaces_cache_control_and_expires_when_valid() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "targeted")), o.clone()).await;
    let future = "x-respond: expires: Fri, 01 Jan 2100 00:00:00 GMT";
    let cases: [(&[&str], bool); 8] = [
        // The targeted field wins either way.
        (
            &[
                "x-respond: cdn-cache-control: max-age=60",
                "x-respond: cache-control: no-store",
            ],
            true,
        ),
        (
            &[
                "x-respond: cdn-cache-control: no-store",
                "x-respond: cache-control: max-age=60",
            ],
            false,
        ),
        (
            &[
                "x-respond: cdn-cache-control: private",
                "x-respond: cache-control: max-age=60",
            ],
            false,
        ),
        (
            &[
                "x-respond: cdn-cache-control: no-cache",
                "x-respond: cache-control: max-age=60",
            ],
            false,
        ),
        (&["x-respond: cdn-cache-control: max-age=0", future], false),
        // Not a valid dictionary, or a directive of the wrong type: the
        // field is ignored, and `Cache-Control` decides.
        (
            &[
                "x-respond: cdn-cache-control: max-age=60, &&&",
                "x-respond: cache-control: no-store",
            ],
            false,
        ),
        (
            &[
                "x-respond: cdn-cache-control: max-age=\"60\"",
                "x-respond: cache-control: no-store",
            ],
            false,
        ),
        (
            &[
                "x-respond: cdn-cache-control: max-age =60",
                "x-respond: cache-control: max-age=60",
            ],
            true,
        ),
    ];
    for (i, (ask, stored)) in cases.iter().enumerate() {
        let path = format!("/o/t{i}");
        get(addr, &path, ask).await;
        assert_eq!(
            get(addr, &path, ask).await.x_cache() == "hit",
            *stored,
            "{ask:?}"
        );
    }
    // A field of the user's choosing, and `CDN-Cache-Control` no longer
    // read; an empty list reads none.
    let layer = HttpCacheLayer::new(cache(&redis, "targeted-own"))
        .targeted_cache_control(["fusebox-cache-control"]);
    let addr = serve(layer, o.clone()).await;
    let own = [
        "x-respond: fusebox-cache-control: max-age=60",
        "x-respond: cache-control: no-store",
    ];
    get(addr, "/o/own", &own).await;
    assert_eq!(get(addr, "/o/own", &own).await.x_cache(), "hit");
    let cdn = [
        "x-respond: cdn-cache-control: max-age=60",
        "x-respond: cache-control: no-store",
    ];
    get(addr, "/o/cdn", &cdn).await;
    assert_eq!(get(addr, "/o/cdn", &cdn).await.x_cache(), "miss");
    let layer = HttpCacheLayer::new(cache(&redis, "targeted-off")).targeted_cache_control([""; 0]);
    let addr = serve(layer, o).await;
    get(addr, "/o/cdn", &cdn).await;
    assert_eq!(get(addr, "/o/cdn", &cdn).await.x_cache(), "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layers_stale_on_error_policy_serves_a_copy_unless_a_directive_forbids_it() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let policy = HttpCacheLayer::new(cache(&redis, "stale-policy"))
        .serve_stale_on_error(Duration::from_secs(600));
    let addr = serve(policy, o.clone()).await;
    let plain = serve(HttpCacheLayer::new(cache(&redis, "stale-none")), o.clone()).await;
    // Stored already stale (two seconds old, fresh for one).
    let stale = |cc: &'static str| [cc, "x-respond: age: 2"];
    let ok = stale("x-respond: cache-control: max-age=1");
    let first = get(addr, "/o/p", &ok).await;
    assert_eq!(first.x_cache(), "miss");
    // The handler answers again: its answer, not the copy.
    let renders = o.renders();
    let fine = get(addr, "/o/p", &ok).await;
    assert_eq!((fine.status, fine.x_cache()), (200, "miss"));
    assert_eq!(o.renders(), renders + 1);
    // It fails: the copy, labelled stale, and the 5xx stored over nothing.
    let failing = [ok[0], ok[1], "x-status: 503"];
    let served = get(addr, "/o/p", &failing).await;
    assert_eq!((served.status, served.x_cache()), (200, "stale"));
    assert_eq!(served.body, fine.body);
    let again = get(addr, "/o/p", &failing).await;
    assert_eq!((again.status, again.x_cache()), (200, "stale"));
    assert_eq!(again.body, fine.body);
    // Without the policy, the failure reaches the caller.
    get(plain, "/o/plain", &ok).await;
    assert_eq!(get(plain, "/o/plain", &failing).await.status, 503);
    // Directives that forbid serving stale win over the policy.
    for cc in [
        "x-respond: cache-control: max-age=1, must-revalidate",
        "x-respond: cache-control: max-age=1, proxy-revalidate",
        "x-respond: cache-control: max-age=1, s-maxage=1",
    ] {
        let path = format!("/o/forbid{}", cc.len());
        let ask = stale(cc);
        get(addr, &path, &ask).await;
        let failed = get(addr, &path, &[ask[0], ask[1], "x-status: 503"]).await;
        assert_eq!((failed.status, failed.x_cache()), (503, "miss"), "{cc}");
    }
}

/// The `If-None-Match` the origin saw last.
fn validated_with(o: &Origin) -> Option<String> {
    o.last_if_none_match.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_with_a_validator_is_revalidated_and_a_304_freshens_it() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "validate")), o.clone()).await;
    for (path, cc) in [
        ("/o/v", "max-age=1"),
        ("/o/must", "max-age=1, must-revalidate"),
    ] {
        // Stored already stale: two seconds old, fresh for one.
        let first = [
            format!("x-respond: cache-control: {cc}"),
            "x-respond: age: 2".to_owned(),
            "x-respond: etag: \"v1\"".to_owned(),
            "x-respond: x-test: one".to_owned(),
        ];
        let first: Vec<&str> = first.iter().map(String::as_str).collect();
        let stored = get(addr, path, &first).await;
        assert_eq!(stored.x_cache(), "miss");
        assert_eq!(validated_with(&o), None);
        // The handler says it has not changed, with new headers.
        let renders = o.renders();
        let second = [
            "x-respond: cache-control: max-age=60",
            "x-respond: etag: \"v1\"",
            "x-respond: x-test: two",
        ];
        let revalidated = get(addr, path, &second).await;
        assert_eq!(validated_with(&o).as_deref(), Some("\"v1\""), "{cc}");
        assert_eq!(o.renders(), renders + 1);
        assert_eq!(
            (revalidated.status, revalidated.x_cache()),
            (200, "revalidated")
        );
        assert_eq!(revalidated.body, stored.body, "the stored body");
        assert_eq!(revalidated.header("x-test"), Some("two"), "headers updated");
        // Freshened: a hit now, with the new headers.
        let hit = get(addr, path, &second).await;
        assert_eq!(
            (hit.x_cache(), hit.body.as_str()),
            ("hit", stored.body.as_str())
        );
        assert_eq!(hit.header("x-test"), Some("two"));
        assert_eq!(o.renders(), renders + 1);
    }
    // A validation answered with a new response: that one is served and
    // stored.
    let old = [
        "x-respond: cache-control: max-age=1",
        "x-respond: age: 2",
        "x-respond: etag: \"a\"",
    ];
    get(addr, "/o/changed", &old).await;
    let new = [
        "x-respond: cache-control: max-age=60",
        "x-respond: etag: \"b\"",
    ];
    let changed = get(addr, "/o/changed", &new).await;
    assert_eq!(validated_with(&o).as_deref(), Some("\"a\""));
    assert_eq!((changed.status, changed.x_cache()), (200, "miss"));
    let hit = get(addr, "/o/changed", &new).await;
    assert_eq!(hit.x_cache(), "hit");
    assert_eq!(hit.body, changed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_responses_are_stored_only_with_a_validator_and_validated_on_every_use() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "no-cache")), o.clone()).await;
    let ask = [
        "x-respond: cache-control: no-cache",
        "x-respond: etag: \"n\"",
    ];
    let first = get(addr, "/o/nc", &ask).await;
    for _ in 0..3 {
        let renders = o.renders();
        let again = get(addr, "/o/nc", &ask).await;
        assert_eq!(o.renders(), renders + 1, "the handler is asked every time");
        assert_eq!(validated_with(&o).as_deref(), Some("\"n\""));
        assert_eq!(
            (again.x_cache(), again.body.as_str()),
            ("revalidated", first.body.as_str())
        );
    }
    // Without a validator, nothing to validate: not stored.
    let bare = ["x-respond: cache-control: no-cache"];
    let one = get(addr, "/o/bare", &bare).await;
    let two = get(addr, "/o/bare", &bare).await;
    assert_eq!(two.x_cache(), "miss");
    assert_ne!(one.body, two.body);
    // Nor with validation turned off.
    let off =
        HttpCacheLayer::new(cache(&redis, "no-cache-off")).keep_for_validation(Duration::ZERO);
    let addr = serve(off, o.clone()).await;
    get(addr, "/o/off", &ask).await;
    assert_eq!(get(addr, "/o/off", &ask).await.x_cache(), "miss");
    assert_eq!(validated_with(&o), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_conditional_request_is_answered_304_from_a_stored_copy() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "conditional")), o.clone()).await;
    let ask = [
        "x-respond: cache-control: max-age=60",
        "x-respond: etag: W/\"e1\"",
        "x-respond: last-modified: Mon, 01 Jan 2024 00:00:00 GMT",
        "x-respond: x-other: dropped",
        "x-respond: cache-status: origin-cdn; fwd=uri-miss",
    ];
    let stored = get(addr, "/o/c", &ask).await;
    assert_eq!(stored.x_cache(), "miss");
    let renders = o.renders();
    let with = |extra: &'static str| {
        let mut h = ask.to_vec();
        h.push(extra);
        h
    };
    let not_modified = get(addr, "/o/c", &with("if-none-match: \"e0\", \"e1\"")).await;
    assert_eq!((not_modified.status, not_modified.x_cache()), (304, "hit"));
    assert_eq!(not_modified.body, "");
    assert_eq!(not_modified.header("etag"), Some("w/\"e1\""));
    assert_eq!(not_modified.header("x-other"), None);
    // The caches' members stay, this layer's last (RFC 9211).
    let members: Vec<_> = not_modified
        .head
        .lines()
        .filter_map(|l| l.strip_prefix("cache-status: "))
        .collect();
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!(members[0], "origin-cdn; fwd=uri-miss");
    assert!(members[1].starts_with("fusebox; hit; ttl="), "{members:?}");
    let other = get(addr, "/o/c", &with("if-none-match: \"e2\"")).await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (200, stored.body.as_str())
    );
    let since = get(
        addr,
        "/o/c",
        &with("if-modified-since: Tue, 02 Jan 2024 00:00:00 GMT"),
    )
    .await;
    assert_eq!(since.status, 304);
    let before = get(
        addr,
        "/o/c",
        &with("if-modified-since: Sun, 31 Dec 2023 00:00:00 GMT"),
    )
    .await;
    assert_eq!(before.status, 200);
    assert_eq!(o.renders(), renders, "all answered from the cache");
}

/// The stated rule for ranges: a `206` is passed through and never
/// stored; a request with `Range` may be answered with a stored whole
/// `200` (RFC 9110 §14.2 lets a server ignore `Range`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_content_passes_through_and_a_range_request_may_get_the_stored_whole() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(HttpCacheLayer::new(cache(&redis, "ranges")), o.clone()).await;
    let cc = "x-respond: cache-control: max-age=60";
    let whole = get(addr, "/o/r", &[cc]).await;
    let ranged = get(addr, "/o/r", &[cc, "range: bytes=0-1"]).await;
    assert_eq!((ranged.status, ranged.x_cache()), (200, "hit"));
    assert_eq!(ranged.body, whole.body);
    let partial = ["x-status: 206", cc, "range: bytes=0-1"];
    let first = get(addr, "/o/p206", &partial).await;
    assert_eq!((first.status, first.x_cache()), (206, "miss"));
    let renders = o.renders();
    let next = get(addr, "/o/p206", &[cc]).await;
    assert_eq!(
        (next.status, next.x_cache()),
        (200, "miss"),
        "the 206 was not stored"
    );
    assert_eq!(o.renders(), renders + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_naming_another_entity_tag_is_not_stored_over_the_copy() {
    let redis = RedisServer::start(&[]);
    let o = Origin::default();
    let addr = serve(
        HttpCacheLayer::new(cache(&redis, "etag-mismatch")),
        o.clone(),
    )
    .await;
    let old = [
        "x-respond: cache-control: max-age=1",
        "x-respond: age: 2",
        "x-respond: etag: \"a\"",
    ];
    let stored = get(addr, "/o/m", &old).await;
    // The origin answers 304 to the validation, but its `ETag` says "b".
    let contradicting = [
        "x-status: 304",
        "x-respond: cache-control: max-age=60",
        "x-respond: etag: \"b\"",
    ];
    let served = get(addr, "/o/m", &contradicting).await;
    assert_eq!(validated_with(&o).as_deref(), Some("\"a\""));
    assert_eq!(
        (served.x_cache(), served.body.as_str()),
        ("revalidated", stored.body.as_str())
    );
    // Not freshened: the next request validates again.
    let renders = o.renders();
    get(addr, "/o/m", &old).await;
    assert_eq!(o.renders(), renders + 1);
    assert_eq!(validated_with(&o).as_deref(), Some("\"a\""));
}
