//! `get_or_load`'s early refresh and its stale fallback, over the memory
//! backend: the shape of the refresh probability, what a refresh returns,
//! and how stale a value a failed load may be answered with.

use super::*;
use crate::near::{Invalidation, NearCache};

/// A cache that refreshes in the last half of a 100 s default TTL.
fn early(memory: Memory) -> Cache<Memory> {
    Cache::builder()
        .name("early")
        .default_ttl(Duration::from_secs(100))
        .early_refresh(0.5)
        .backend(memory)
        .build()
        .unwrap()
}

/// The share of `n` draws of `refresh_due(left)` that say due.
fn due_share(cache: &Cache<Memory>, left: Option<Duration>, n: u32) -> f64 {
    let due = (0..n).filter(|_| cache.refresh_due(left)).count();
    due as f64 / f64::from(n)
}

#[tokio::test]
async fn a_refresh_is_due_with_a_probability_rising_linearly_to_one_at_expiry() {
    let cache = early(Memory::default());
    // The window is the last 50 s. Each share is within 0.03 of its
    // expectation: for 20 000 draws that is over 7 standard deviations.
    let n = 20_000;
    for (left_ms, expected) in [(40_000, 0.2), (25_000, 0.5), (5_000, 0.9)] {
        let share = due_share(&cache, Some(Duration::from_millis(left_ms)), n);
        assert!(
            (share - expected).abs() < 0.03,
            "{left_ms} ms left: due {share}, expected {expected}"
        );
    }
    // Certain at expiry, never at or before the window, never for a key
    // without expiry.
    assert_eq!(due_share(&cache, Some(Duration::ZERO), n), 1.0);
    for left in [50, 51, 1_000_000] {
        let left = Some(Duration::from_secs(left));
        assert_eq!(due_share(&cache, left, n), 0.0, "{left:?} left");
    }
    assert_eq!(due_share(&cache, None, n), 0.0);
    // Nor when the default TTL is no expiry, or early refresh is off.
    let never = Cache::builder()
        .name("never")
        .default_ttl(Ttl::Never)
        .early_refresh(0.5)
        .backend(Memory::default())
        .build()
        .unwrap();
    assert_eq!(due_share(&never, Some(Duration::ZERO), 100), 0.0);
    let off = memory_cache();
    assert_eq!(due_share(&off, Some(Duration::ZERO), 100), 0.0);
}

#[tokio::test]
async fn a_due_refresh_returns_and_stores_the_new_value() {
    let memory = Memory::default();
    let cache = early(memory.clone());
    assert_eq!(cache.set("k", "old").await, Write::Done);
    *memory.ttl_left.lock().unwrap() = Some(Duration::ZERO);
    let value = cache
        .get_or_load("k", || async { Ok::<_, Infallible>("new") })
        .await;
    assert_eq!(value.unwrap(), "new");
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"new"[..]));
    // A refresh whose load fails keeps the current value.
    let value = cache
        .get_or_load("k", || async { Err::<&str, _>("down") })
        .await;
    assert_eq!(value.unwrap(), "new");
    // Outside the window, the value read is returned and `load` not run.
    *memory.ttl_left.lock().unwrap() = Some(Duration::from_secs(60));
    let value = cache
        .get_or_load("k", || async { Ok::<_, Infallible>("newer") })
        .await;
    assert_eq!(value.unwrap(), "new");
}

#[tokio::test]
async fn without_early_refresh_or_a_near_cache_a_load_reads_no_ttl() {
    // Early refresh costs a PTTL with every read; off, none is sent.
    let memory = Memory::default();
    let off = Cache::builder()
        .name("off")
        .backend(memory.clone())
        .build()
        .unwrap();
    off.set("k", "v").await;
    let loaded = off.get_or_load("k", || async { Ok::<_, Infallible>("x") });
    assert_eq!(loaded.await.unwrap(), "v");
    assert_eq!(memory.reads_with_ttl.load(SeqCst), 0);
    let on = early(memory.clone());
    let loaded = on.get_or_load("k", || async { Ok::<_, Infallible>("x") });
    assert_eq!(loaded.await.unwrap(), "v");
    assert_eq!(memory.reads_with_ttl.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_load_is_answered_from_l1_while_not_too_stale() {
    let memory = Memory::default();
    let cache = Cache::builder()
        .name("stale")
        .near_cache(
            NearCache::new()
                .invalidation(Invalidation::Lifetime)
                .lifetime(Duration::from_secs(1))
                .stale_for(Duration::from_secs(10)),
        )
        .backend(memory.clone())
        .build()
        .unwrap();
    for key in ["a", "b"] {
        assert_eq!(cache.set(key, "v").await, Write::Done);
        // Read into L1, then gone from Redis behind this process's back.
        assert_eq!(cache.get(key).await.as_deref(), Some(&b"v"[..]));
        memory.map.lock().unwrap().remove(key.as_bytes());
    }
    let failing = || async { Err::<&str, _>("loader down") };
    // Past its lifetime, within stale_for: the stale value.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(cache.get_or_load("a", failing).await.unwrap(), "v");
    assert_eq!(cache.near_stats().unwrap().stale, 1);
    // Past stale_for too: the loader's error.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(cache.get_or_load("b", failing).await, Err("loader down"));
    assert_eq!(cache.near_stats().unwrap().stale, 1);
}
