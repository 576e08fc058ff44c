//! A million distinct keys read through a near cache bounded at 8 MiB: the
//! L1 stays within its bound, and so does the process (its resident memory
//! grows by a small multiple of the bound, not by the ~200 MB the keys and
//! values would take unbounded). Its own test binary, so that no other
//! test's memory is counted.

use std::task::{Context, Poll};

use bytes::Bytes;
use fusebox::cache::{Cache, CacheRequest, CacheResponse, Invalidation, NearCache, Reason, Ttl};

/// A backend that has every key: the value is 100 bytes, without expiry.
#[derive(Clone)]
struct Everything(Bytes);

#[derive(Debug)]
struct Never;

impl fusebox::cache::Fault for Never {
    fn reason(&self) -> Reason {
        Reason::Other
    }
}

impl tower::Service<CacheRequest> for Everything {
    type Response = CacheResponse;
    type Error = Never;
    type Future = std::future::Ready<Result<CacheResponse, Never>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Never>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: CacheRequest) -> Self::Future {
        std::future::ready(Ok(match request {
            CacheRequest::GetWithTtl(_) => {
                CacheResponse::ValueWithTtl(Some((self.0.clone(), Ttl::Never)))
            }
            _ => CacheResponse::Written(true),
        }))
    }
}

/// This process's resident memory, from `/proc/self/statm`.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test]
async fn a_million_distinct_keys_stay_within_the_bound() {
    const BOUND: u64 = 8 << 20;
    let cache = Cache::builder()
        .near_cache(
            NearCache::new()
                .max_bytes(BOUND)
                .invalidation(Invalidation::Lifetime),
        )
        .backend(Everything(Bytes::from(vec![b'v'; 100])))
        .build()
        .unwrap();
    let before = resident_bytes();
    let mut peak = 0u64;
    for i in 0..1_000_000u32 {
        let value = cache.get(format!("user:{i:08}")).await;
        assert_eq!(value.map(|v| v.len()), Some(100));
        if i % 100_000 == 0 {
            let stats = cache.near_stats().unwrap();
            assert!(stats.bytes <= BOUND, "over the bound at key {i}: {stats:?}");
            peak = peak.max(resident_bytes());
        }
    }
    let stats = cache.near_stats().unwrap();
    assert!(stats.bytes <= BOUND, "{stats:?}");
    assert!(stats.entries > 20_000, "the bound is used: {stats:?}");
    assert_eq!(stats.hits, 1_000_000);
    let grown = peak.max(resident_bytes()).saturating_sub(before);
    eprintln!("{stats:?}; resident memory grew by {} KiB", grown >> 10);
    assert!(grown < 4 * BOUND, "resident memory grew by {grown} bytes");
}
