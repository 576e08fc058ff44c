//! Which responses a shared cache may store, and for how long, decided
//! without a server (the integration tests in `tests/http` check the same
//! rules through a real one).

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;

use super::*;
use crate::http::key::tests::headers;

const NOW: u64 = 1_800_000_000_000;

fn request(pairs: &[(&'static str, &'static str)]) -> Request<()> {
    let mut req = Request::new(());
    *req.headers_mut() = headers(pairs);
    req
}

/// The lifetime `config` gives a response of `status` with `pairs`, to a
/// plain request.
fn life(config: &Config, status: u16, pairs: &[(&'static str, &'static str)]) -> Option<Lifetime> {
    let status = StatusCode::from_u16(status).unwrap();
    lifetime_of(config, &request(&[]), status, &headers(pairs), NOW, NOW)
}

fn fresh(config: &Config, status: u16, pairs: &[(&'static str, &'static str)]) -> Option<u64> {
    life(config, status, pairs).map(|l| l.fresh)
}

#[test]
fn final_statuses_with_a_lifetime_are_stored_but_never_206_304_or_interim() {
    let c = Config::new();
    let cc = [("cache-control", "max-age=60")];
    for status in [200, 203, 301, 404, 410, 500, 599] {
        assert!(fresh(&c, status, &cc).is_some(), "{status}");
    }
    for status in [100, 103, 206, 304] {
        assert_eq!(fresh(&c, status, &cc), None, "{status}");
    }
    assert_eq!(fresh(&c, 200, &cc), Some(60_000));
    // Errors are capped by the layer.
    let day = [("cache-control", "max-age=86400")];
    assert_eq!(fresh(&c, 404, &day), Some(300_000));
    assert_eq!(fresh(&c, 503, &day), Some(300_000));
    assert_eq!(fresh(&c, 399, &day), Some(86_400_000));
}

#[test]
fn cookies_star_and_variants_decide_storing() {
    let mut c = Config::new();
    let cc = ("cache-control", "max-age=60");
    assert_eq!(fresh(&c, 200, &[cc, ("set-cookie", "a=1")]), None);
    assert_eq!(fresh(&c, 200, &[cc, ("vary", "*")]), None);
    assert_eq!(fresh(&c, 200, &[cc, ("vary", "foo")]), Some(60_000));
    assert_eq!(fresh(&c, 200, &[cc, ("vary", "host")]), Some(60_000));
    c.max_variants = 0;
    assert_eq!(fresh(&c, 200, &[cc, ("vary", "foo")]), None);
    assert_eq!(fresh(&c, 200, &[cc, ("vary", "host")]), Some(60_000));
}

#[test]
fn private_no_store_and_no_cache_without_a_validator_are_not_stored() {
    let c = Config::new();
    for cc in ["private", "no-store", "no-cache", "max-age=60, Private"] {
        assert_eq!(fresh(&c, 200, &[("cache-control", cc)]), None, "{cc}");
    }
    let tagged = [("cache-control", "no-cache, max-age=60"), ("etag", "\"a\"")];
    assert_eq!(fresh(&c, 200, &tagged), Some(0));
    // A request that says no-store is never stored.
    let store = |req: &[(&'static str, &'static str)]| {
        let res = headers(&[("cache-control", "max-age=60")]);
        lifetime_of(&c, &request(req), StatusCode::OK, &res, NOW, NOW).is_some()
    };
    assert!(store(&[]));
    assert!(!store(&[("cache-control", "no-store")]));
    // With credentials, only what says it may be shared.
    assert!(!store(&[("authorization", "Bearer x")]));
    for cc in [
        "public, max-age=60",
        "s-maxage=60",
        "must-revalidate, max-age=60",
    ] {
        let res = headers(&[("cache-control", cc)]);
        let req = request(&[("authorization", "Bearer x")]);
        assert!(
            lifetime_of(&c, &req, StatusCode::OK, &res, NOW, NOW).is_some(),
            "{cc}"
        );
    }
}

#[test]
fn freshness_comes_from_s_maxage_max_age_expires_or_a_heuristic() {
    let mut c = Config::new();
    let cc = |v| [("cache-control", v)];
    assert_eq!(fresh(&c, 200, &cc("max-age=10, s-maxage=20")), Some(20_000));
    let dated = [
        ("date", "Fri, 15 Jan 2027 08:00:00 GMT"),
        ("expires", "Fri, 15 Jan 2027 08:01:00 GMT"),
    ];
    assert_eq!(fresh(&c, 200, &dated), Some(60_000));
    let modified = [
        ("date", "Fri, 15 Jan 2027 08:00:00 GMT"),
        ("last-modified", "Fri, 15 Jan 2027 07:00:00 GMT"),
    ];
    assert_eq!(fresh(&c, 200, &modified), None, "no heuristic unless asked");
    c.heuristic = 0.1;
    assert_eq!(fresh(&c, 200, &modified), Some(360_000));
    assert_eq!(
        fresh(&c, 302, &modified),
        None,
        "not heuristically cacheable"
    );
}

#[test]
fn ages_and_stale_windows_are_read_from_the_response() {
    let mut c = Config::new();
    let l = life(
        &c,
        200,
        &[
            (
                "cache-control",
                "max-age=60, stale-while-revalidate=5, stale-if-error=7",
            ),
            ("age", "3"),
        ],
    )
    .unwrap();
    assert_eq!((l.age, l.revalidate, l.if_error), (3_000, 5_000, 7_000));
    c.stale_on_error = 9_000;
    let l = life(
        &c,
        200,
        &[("cache-control", "max-age=60, stale-if-error=7")],
    )
    .unwrap();
    assert_eq!(l.if_error, 9_000);
    let l = life(&c, 200, &[("cache-control", "max-age=60, must-revalidate")]).unwrap();
    assert_eq!((l.revalidate, l.if_error), (0, 0));
    // Already older than every window, and no validator: nothing to keep.
    let old = [("cache-control", "max-age=60"), ("age", "61")];
    assert!(
        life(&c, 200, &old).is_some(),
        "within the layer's stale window"
    );
    c.stale_on_error = 0;
    assert_eq!(life(&c, 200, &old), None);
    // With a validator, kept for validation (then not, when that is off).
    let tagged = [
        ("cache-control", "max-age=60"),
        ("age", "61"),
        ("etag", "\"a\""),
    ];
    assert!(life(&c, 200, &tagged).is_some());
    c.keep_for_validation = 0;
    assert!(life(&c, 200, &tagged).is_none());
}

fn body(n: usize) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(vec![b'x'; n])));
    res.headers_mut()
        .insert("cache-control", HeaderValue::from_static("max-age=60"));
    res
}

#[tokio::test]
async fn bodies_up_to_the_cap_are_stored_and_variants_placed_in_their_slot() {
    let mut c = Config::new();
    c.max_body = 10;
    let req = request(&[("foo", "1")]);
    let (_, stored) = buffer_if_cacheable(&c, &req, b"k", NOW, body(10)).await;
    let (bytes, placed) = stored.expect("a body at the cap is stored");
    assert_eq!(
        (placed.at.as_slice(), placed.index.is_none()),
        (&b"k"[..], true)
    );
    assert_eq!(Entry::decode(&bytes).unwrap().variant, None);
    let (_, over) = buffer_if_cacheable(&c, &req, b"k", NOW, body(11)).await;
    assert!(over.is_none(), "a body over the cap is not");
    let mut varies = body(3);
    varies
        .headers_mut()
        .insert("vary", HeaderValue::from_static("Foo"));
    let (_, stored) = buffer_if_cacheable(&c, &req, b"k", NOW, varies).await;
    let (bytes, placed) = stored.unwrap();
    let names = vec!["foo".to_owned()];
    let id = variant::id(&names, req.headers());
    assert_eq!(placed.at, variant::slot(b"k", &id, c.max_variants));
    assert_eq!(placed.index, Some((b"k".to_vec(), variant::index(&names))));
    assert_eq!(Entry::decode(&bytes).unwrap().variant, Some(id));
}

#[test]
fn no_cache_is_stored_with_a_validator_and_a_lifetime_or_a_heuristic_status() {
    let c = Config::new();
    let tagged = |cc| [("cache-control", cc), ("etag", "\"a\"")];
    assert_eq!(fresh(&c, 200, &tagged("no-cache")), Some(0), "200 may be");
    assert_eq!(fresh(&c, 302, &tagged("no-cache")), None, "302 may not");
    assert_eq!(fresh(&c, 302, &tagged("no-cache, max-age=60")), Some(0));
}

#[test]
fn the_apparent_age_is_counted_in_whole_seconds_of_date() {
    let c = Config::new();
    let cc = ("cache-control", "max-age=60");
    let age = |date, received| {
        let res = headers(&[cc, ("date", date)]);
        let l = lifetime_of(&c, &request(&[]), StatusCode::OK, &res, received, received);
        l.map(|l| l.age)
    };
    assert_eq!(age("Fri, 15 Jan 2027 07:59:50 GMT", NOW), Some(10_000));
    assert_eq!(
        age("Fri, 15 Jan 2027 07:59:50 GMT", NOW + 999),
        Some(10_000)
    );
    // Dated this second: not yet old.
    assert_eq!(age("Fri, 15 Jan 2027 08:00:00 GMT", NOW + 999), Some(0));
    // Dated in the future: no age.
    assert_eq!(age("Fri, 15 Jan 2027 08:00:30 GMT", NOW), Some(0));
}

#[test]
fn the_corrected_age_adds_the_time_the_handler_took() {
    let c = Config::new();
    let res = headers(&[("cache-control", "max-age=60"), ("age", "3")]);
    let l = lifetime_of(&c, &request(&[]), StatusCode::OK, &res, NOW - 2_000, NOW).unwrap();
    assert_eq!((l.age, l.requested, l.stored), (5_000, NOW - 2_000, NOW));
}
