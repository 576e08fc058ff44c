use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::request::{Reason, Ttl};

fn get(key: &str) -> CacheRequest {
    CacheRequest::Get(Bytes::copy_from_slice(key.as_bytes()))
}

fn written(kind: Kind, requests: &[CacheRequest]) -> Vec<u8> {
    let mut out = Vec::new();
    put_batch(&mut out, kind, requests.iter());
    out
}

#[test]
fn batches_are_written_as_redis_reads_them() {
    assert_eq!(
        written(Kind::Get, &[get("a"), get("bc")]),
        b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbc\r\n"
    );
    // One key alone goes as a `GET`.
    assert_eq!(
        written(Kind::Get, &[get("a")]),
        b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
    );
    let ttl = |k: &'static [u8]| CacheRequest::GetWithTtl(Bytes::from_static(k));
    assert_eq!(
        written(Kind::GetWithTtl, &[ttl(b"k")]),
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$4\r\nPTTL\r\n$1\r\nk\r\n"
    );
    assert_eq!(
        written(Kind::GetWithTtl, &[ttl(b"k"), ttl(b"l")]),
        b"*3\r\n$4\r\nMGET\r\n$1\r\nk\r\n$1\r\nl\r\n\
          *2\r\n$4\r\nPTTL\r\n$1\r\nk\r\n*2\r\n$4\r\nPTTL\r\n$1\r\nl\r\n"
    );
    let set = |ttl| CacheRequest::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"\r\n"),
        ttl,
    };
    assert_eq!(
        written(
            Kind::Set,
            &[
                set(Ttl::After(Duration::from_millis(1500))),
                set(Ttl::Never)
            ]
        ),
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\r\n\r\n$2\r\nPX\r\n$4\r\n1500\r\n\
          *3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\r\n\r\n"
    );
    // A TTL below a millisecond is one; `Duration::MAX` is Redis's largest.
    let extreme = written(
        Kind::Set,
        &[
            set(Ttl::After(Duration::ZERO)),
            set(Ttl::After(Duration::MAX)),
        ],
    );
    let text = String::from_utf8_lossy(&extreme);
    assert!(text.contains("$1\r\n1\r\n") && text.contains(&format!("\r\n{}\r\n", 1u64 << 62)));
}

#[test]
fn reply_heads_are_read_whole_or_not_at_all() {
    let full: &[u8] = b"$5\r\nhello\r\n";
    for cut in 0..full.len() {
        assert_eq!(head(&full[..cut]), Ok(None), "cut at {cut}");
    }
    assert_eq!(
        head(full),
        Ok(Some((Head::Bulk(Some(b"hello")), full.len())))
    );
    assert_eq!(head(b"$-1\r\nrest"), Ok(Some((Head::Bulk(None), 5))));
    assert_eq!(head(b"+OK\r\n"), Ok(Some((Head::Simple, 5))));
    assert_eq!(head(b":-2\r\n"), Ok(Some((Head::Int(-2), 5))));
    assert_eq!(head(b"*3\r\n"), Ok(Some((Head::Array(Some(3)), 4))));
    // Up to 18 digits, so that no number read can overflow.
    assert_eq!(
        head(b":-999999999999999999\r\n"),
        Ok(Some((Head::Int(-999_999_999_999_999_999), 22)))
    );
    assert_eq!(
        head(b"-ERR no\r\n"),
        Ok(Some((Head::Error(b"-ERR no\r\n"), 9)))
    );
    for bad in [
        &b"?x\r\n"[..],
        b"$abc\r\n",
        b"$3\r\nabcd\r\n",
        b":\r\n",
        b":12345678901234567890\r\n",
        b"*-2\r\n",
        b"$-5\r\n",
        b"\r\n",
        b"+OK\rx",
    ] {
        assert_eq!(
            head(bad),
            Err(Malformed),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

fn answers(read: Result<Read, Malformed>) -> (Vec<Answer>, usize) {
    match read {
        Ok(Read::Answers(a, used)) => (a, used),
        Ok(Read::Failed(e, _)) => panic!("failed: {e}"),
        Ok(Read::Partial) => panic!("partial"),
        Err(Malformed) => panic!("malformed"),
    }
}

#[test]
fn a_batch_is_answered_only_once_all_its_replies_are_here() {
    let reply: &[u8] = b"*3\r\n$1\r\na\r\n$-1\r\n$0\r\n\r\n+OK\r\n";
    let whole = reply.len() - 5;
    for cut in 0..whole {
        assert!(
            matches!(read_batch(Kind::Get, 3, &reply[..cut]), Ok(Read::Partial)),
            "cut at {cut}"
        );
    }
    let (got, used) = answers(read_batch(Kind::Get, 3, reply));
    assert_eq!(used, whole, "what follows is the next batch's");
    let values: Vec<_> = got
        .into_iter()
        .map(|a| match a {
            Ok(CacheResponse::Value(v)) => v,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        values,
        [Some(Bytes::from_static(b"a")), None, Some(Bytes::new())]
    );
    // A reply of another length or shape puts the connection out of step.
    assert!(read_batch(Kind::Get, 2, reply).is_err());
    assert!(read_batch(Kind::Get, 1, b"+OK\r\n").is_err());
    assert!(read_batch(Kind::Set, 1, b"*1\r\n").is_err());
}

#[test]
fn one_key_alone_is_answered_from_its_get() {
    let (got, used) = answers(read_batch(Kind::Get, 1, b"$1\r\na\r\n*1\r\n"));
    assert_eq!(used, 7);
    assert!(matches!(&got[..], [Ok(CacheResponse::Value(Some(v)))] if v == "a"));
    let (got, _) = answers(read_batch(Kind::Get, 1, b"$-1\r\n"));
    assert!(matches!(&got[..], [Ok(CacheResponse::Value(None))]));
    let reply: &[u8] = b"$1\r\nv\r\n:1500\r\n";
    for cut in 0..reply.len() {
        assert!(
            matches!(
                read_batch(Kind::GetWithTtl, 1, &reply[..cut]),
                Ok(Read::Partial)
            ),
            "cut at {cut}"
        );
    }
    let (got, used) = answers(read_batch(Kind::GetWithTtl, 1, reply));
    assert_eq!(used, reply.len());
    assert!(matches!(
        &got[..],
        [Ok(CacheResponse::ValueWithTtl(Some((v, Ttl::After(d)))))]
            if v == "v" && *d == Duration::from_millis(1500)
    ));
    match read_batch(Kind::Get, 1, b"-NOPERM no get\r\n") {
        Ok(Read::Failed(e, 16)) => assert_eq!(e.reason(), Reason::Auth),
        _ => panic!("one failure"),
    }
    // An array is the reply of an `MGET`: not of this batch.
    assert!(read_batch(Kind::Get, 1, b"*1\r\n$1\r\na\r\n").is_err());
    // A bulk string is not the reply of an `MGET` of two.
    assert!(read_batch(Kind::Get, 2, b"$1\r\na\r\n").is_err());
}

#[test]
fn an_error_fails_its_batch_or_its_own_call() {
    match read_batch(Kind::Get, 2, b"-NOPERM no mget\r\n") {
        Ok(Read::Failed(e, 17)) => assert_eq!(e.reason(), Reason::Auth),
        _ => panic!("one failure for the batch"),
    }
    let (got, used) = answers(read_batch(Kind::Set, 2, b"+OK\r\n-OOM no room\r\n"));
    assert_eq!(used, 19);
    assert!(matches!(got[0], Ok(CacheResponse::Written(true))));
    assert_eq!(got[1].as_ref().unwrap_err().reason(), Reason::OutOfMemory);
    // With TTLs: a `PTTL` error fails its own call; an `MGET` error all,
    // once the `PTTL`s that follow it are read too.
    let reply = b"*2\r\n$1\r\nv\r\n$-1\r\n:1500\r\n:-2\r\n";
    let (got, _) = answers(read_batch(Kind::GetWithTtl, 2, reply));
    match &got[0] {
        Ok(CacheResponse::ValueWithTtl(Some((v, Ttl::After(d))))) => {
            assert_eq!((&v[..], *d), (&b"v"[..], Duration::from_millis(1500)))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(got[1], Ok(CacheResponse::ValueWithTtl(None))));
    let reply: &[u8] = b"-LOADING wait\r\n:1\r\n:2\r\n";
    assert!(matches!(
        read_batch(Kind::GetWithTtl, 2, &reply[..18]),
        Ok(Read::Partial)
    ));
    match read_batch(Kind::GetWithTtl, 2, reply) {
        Ok(Read::Failed(e, used)) => assert_eq!((e.reason(), used), (Reason::Busy, reply.len())),
        _ => panic!("one failure for the batch"),
    }
}

proptest::proptest! {
    /// Whatever arrives, reading it panics on nothing and takes no more
    /// than it was given.
    #[test]
    fn any_bytes_are_read_without_panicking(bytes: Vec<u8>, n in 0usize..4, kind in 0u8..3) {
        let kind = [Kind::Get, Kind::Set, Kind::GetWithTtl][kind as usize];
        match read_batch(kind, n, &bytes) {
            Ok(Read::Answers(a, used)) => {
                proptest::prop_assert_eq!(a.len(), n);
                proptest::prop_assert!(used <= bytes.len());
            }
            Ok(Read::Failed(_, used)) => proptest::prop_assert!(used <= bytes.len()),
            Ok(Read::Partial) | Err(Malformed) => {}
        }
    }
}
