//! The entry format and lifetimes, and arbitrary bytes fed to the decoder.
use super::*;
use http::header;
use proptest::prelude::*;

fn lifetime() -> Lifetime {
    Lifetime {
        requested: 990,
        stored: 1_000,
        age: 5,
        fresh: 10,
        revalidate: 20,
        if_error: 40,
    }
}

fn entry() -> Entry {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    headers.append("x-multi", HeaderValue::from_static("a"));
    headers.append("x-multi", HeaderValue::from_static("b"));
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    Entry {
        status: StatusCode::OK,
        headers,
        body: Bytes::from_static(b"<html>"),
        trailers: Some(trailers),
        lifetime: lifetime(),
        variant: None,
    }
}

#[test]
fn entries_round_trip_and_garbage_is_refused() {
    let e = entry();
    let bytes = e.encode();
    assert_eq!(Entry::decode(&bytes), Some(e.clone()));
    for cut in 0..bytes.len() {
        assert!(Entry::decode(&bytes.slice(..cut)).is_none());
    }
    // A variant's identity follows; anything else after the trailers is
    // refused.
    let variant = Entry {
        variant: Some([7; 32]),
        ..e
    };
    let long = variant.encode();
    assert_eq!(long.len(), bytes.len() + 32);
    assert_eq!(Entry::decode(&long), Some(variant));
    for cut in bytes.len() + 1..long.len() {
        assert!(Entry::decode(&long.slice(..cut)).is_none(), "{cut}");
    }
    assert!(Entry::decode(&Bytes::from_static(b"garbage")).is_none());
    let mut extra = bytes.to_vec();
    extra.push(0);
    assert!(Entry::decode(&Bytes::from(extra)).is_none());
    // An earlier format is a miss, not a fresh hit without a lifetime.
    let mut old = bytes.to_vec();
    old[..4].copy_from_slice(b"FBH1");
    assert!(Entry::decode(&Bytes::from(old)).is_none());
}

#[test]
fn hop_by_hop_headers_and_age_are_not_stored() {
    let mut e = entry();
    for (name, value) in [
        ("connection", "close, X-Hop"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-authenticate", "Basic"),
        ("age", "30"),
        ("x-kept", "yes"),
    ] {
        e.headers.append(name, HeaderValue::from_static(value));
    }
    let back = Entry::decode(&e.encode()).unwrap();
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "proxy-authenticate",
        "age",
    ] {
        assert!(!back.headers.contains_key(gone), "{gone} stored");
    }
    assert_eq!(back.headers["x-kept"], "yes");
}

#[test]
fn a_hit_says_its_current_age_and_head_its_length() {
    // Stored 5 ms old at 1 000; served at 4 000: 3.005 s old.
    let res = entry().into_response::<()>(false, 4_000);
    assert_eq!(res.headers()[header::AGE], "3");
    let res = entry().into_response::<()>(true, 1_000);
    assert_eq!(res.headers()[header::AGE], "0");
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "6");
}

/// An entry whose header block says `count` lines of `a: b`.
fn with_header_lines(count: u32) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(MAGIC);
    for _ in 0..6 {
        out.put_u64(0);
    }
    out.put_u16(200);
    out.put_u32(count);
    for _ in 0..count {
        out.put_u32(1);
        out.put_slice(b"a");
        out.put_u32(1);
        out.put_slice(b"b");
    }
    out.put_u64(0);
    out.put_u32(u32::MAX);
    out.freeze()
}

#[test]
fn up_to_max_headers_lines_are_read_and_one_more_is_refused() {
    let read = Entry::decode(&with_header_lines(MAX_HEADERS)).expect("the limit itself is read");
    assert_eq!(
        read.headers.get_all("a").iter().count(),
        MAX_HEADERS as usize
    );
    assert!(Entry::decode(&with_header_lines(MAX_HEADERS + 1)).is_none());
}

#[test]
fn more_headers_than_a_header_map_holds_are_refused_not_a_panic() {
    assert!(Entry::decode(&with_header_lines(40_000)).is_none());
}

#[test]
fn a_lifetime_says_fresh_then_revalidate_then_if_error_then_expired() {
    // 5 ms old when stored at 1 000, fresh for 10: fresh until 1 005.
    let l = lifetime();
    assert_eq!(l.at(0), Use::Fresh, "a clock gone back");
    assert_eq!(l.at(1_004), Use::Fresh);
    assert_eq!(l.at(1_005), Use::Revalidate);
    assert_eq!(l.at(1_024), Use::Revalidate);
    assert_eq!(l.at(1_025), Use::IfError);
    assert_eq!(l.at(1_044), Use::IfError);
    assert_eq!(l.at(1_045), Use::Expired);
    assert_eq!(l.kept(), 5 + 40);
    // Already older than its lifetime when stored: never fresh.
    let old = Lifetime {
        age: 7_200_000,
        fresh: 3_600_000,
        revalidate: 0,
        if_error: 0,
        ..l
    };
    assert_eq!(old.at(1_000), Use::Expired);
    assert_eq!(old.kept(), 0);
    let max = Lifetime {
        requested: u64::MAX,
        stored: u64::MAX,
        age: u64::MAX,
        fresh: u64::MAX,
        revalidate: u64::MAX,
        if_error: u64::MAX,
    };
    assert_eq!(
        max.at(u64::MAX),
        Use::Revalidate,
        "an age of u64::MAX is not under it"
    );
    assert_eq!(max.kept(), u64::MAX);
}

#[test]
fn requests_bound_the_age_they_accept() {
    let l = Lifetime::fresh_for(1_000, 60_000);
    let d = |max_age, min_fresh| Directives {
        max_age,
        min_fresh,
        ..Directives::default()
    };
    use super::super::directives::Delta::Secs;
    assert_eq!(l.for_request(3_000, &d(Some(Secs(5)), None)), Use::Fresh);
    assert_eq!(l.for_request(7_000, &d(Some(Secs(5)), None)), Use::Expired);
    assert_eq!(l.for_request(3_000, &d(None, Some(Secs(50)))), Use::Fresh);
    assert_eq!(
        l.for_request(30_000, &d(None, Some(Secs(50)))),
        Use::Expired
    );
    // At the boundaries, to the millisecond: an age equal to `max-age`
    // is accepted (RFC 9111 §5.2.1.1), and so is time left equal to
    // `min-fresh` (§5.2.1.3); one more millisecond is not.
    assert_eq!(l.for_request(6_000, &d(Some(Secs(5)), None)), Use::Fresh);
    assert_eq!(l.for_request(6_001, &d(Some(Secs(5)), None)), Use::Expired);
    assert_eq!(l.for_request(11_000, &d(None, Some(Secs(50)))), Use::Fresh);
    assert_eq!(
        l.for_request(11_001, &d(None, Some(Secs(50)))),
        Use::Expired
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]
    /// Bytes from Redis are untrusted: anything decodes or is refused,
    /// never panics, and what decodes can be served.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Some(e) = Entry::decode(&Bytes::from(bytes)) {
            let _ = e.into_response::<()>(true, u64::MAX);
        }
    }

    /// Arbitrary bytes after a valid magic and lifetime reach the
    /// header and body parsers, not just the magic check.
    #[test]
    fn arbitrary_bodies_of_an_entry_never_panic(
        figures in proptest::array::uniform6(any::<u64>()),
        rest in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut out = BytesMut::new();
        out.put_slice(MAGIC);
        for f in figures {
            out.put_u64(f);
        }
        out.put_slice(&rest);
        if let Some(e) = Entry::decode(&out.freeze()) {
            let now = figures[0];
            let _ = e.lifetime.at(now);
            let _ = e.into_response::<()>(false, now);
        }
    }
}
