//! The handle's edges, each found by mutation testing: bounds, caps, what
//! is timed and counted, a near cache's own writes, partial answers.

use super::*;

#[tokio::test]
async fn debug_shows_the_name_and_breaker_and_a_builders_settings() {
    let text = format!("{:?}", memory_cache());
    assert!(
        text.starts_with("Cache {")
            && text.contains("name: \"memory\"")
            && text.contains("breaker:"),
        "{text}"
    );
    let builder = Cache::builder().name("dbg").breaker(|b| b);
    let text = format!("{builder:?}");
    assert!(text.contains("BreakerSettings(..)"), "{text}");
}

#[tokio::test]
async fn a_key_at_the_cap_with_its_prefix_is_written_and_one_byte_more_is_not() {
    let cache = Cache::builder()
        .name("key-cap")
        .prefix("p:")
        .max_key_size(10)
        .backend(Memory::default())
        .build()
        .unwrap();
    assert_eq!(cache.set("12345678", "v").await, Write::Done);
    assert_eq!(
        cache.set("123456789", "v").await,
        Write::Skipped(Reason::TooLarge)
    );
    assert_eq!(cache.get("12345678").await.as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn each_call_is_timed_under_its_own_operation() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The histograms are registered when the cache is built.
    let cache = metrics::with_local_recorder(&recorder, || {
        Cache::builder()
            .name("timed")
            .backend(Memory::default())
            .build()
            .unwrap()
    });
    cache.set("k", "v").await;
    for _ in 0..3 {
        cache.get("k").await;
    }
    let snapshot = snapshotter.snapshot().into_vec();
    let timed = |op: &str| {
        snapshot
            .iter()
            .filter(|(key, ..)| {
                let key = key.key();
                key.name() == crate::telemetry::CACHE_CALL_DURATION_SECONDS
                    && key.labels().any(|l| l.key() == "op" && l.value() == op)
            })
            .map(|(.., value)| match value {
                DebugValue::Histogram(v) => v.len(),
                _ => 0,
            })
            .sum::<usize>()
    };
    assert_eq!((timed("set"), timed("get"), timed("delete")), (1, 3, 0));
}

#[tokio::test]
async fn a_near_cache_is_there_when_asked_for_and_tracking_needs_resp3() {
    use crate::near::{Invalidation, NearCache};
    let plain = memory_cache();
    assert!(plain.near_stats().is_none());
    assert_eq!(plain.name(), "memory");
    let near = Cache::builder()
        .name("near")
        .near_cache(NearCache::new().invalidation(Invalidation::Lifetime))
        .backend(Memory::default())
        .build()
        .unwrap();
    assert_eq!(near.set("k", "v").await, Write::Done);
    assert!(near.get("k").await.is_some() && near.get("k").await.is_some());
    let stats = near.near_stats().expect("a near cache");
    assert!(stats.l1_hits >= 1 && stats.entries == 1, "{stats:?}");
    #[cfg(feature = "http")]
    assert!(near.has_near() && !plain.has_near());

    let tracked = |url: &str| {
        Cache::builder()
            .name("tracked")
            .near_cache(NearCache::new().invalidation(Invalidation::TrackingUrl(url.into())))
            .backend(Memory::default())
            .build()
    };
    // (Nothing listens there: the tracking task only tries to connect.)
    assert!(tracked("redis://127.0.0.1:1/").is_ok());
    let err = tracked("redis://127.0.0.1:1/?protocol=resp2").unwrap_err();
    assert_eq!(err.field(), "near_cache");
    assert!(err.to_string().contains("RESP3"), "{err}");
}

#[tokio::test]
async fn a_backend_answering_too_few_values_is_a_miss_for_every_key() {
    // One value short when asked for several: no value may land on
    // another key's place.
    let backend = tower::service_fn(|req: CacheRequest| {
        std::future::ready(Ok::<_, Down>(match req {
            CacheRequest::GetMany(keys) => {
                let short = keys.len() - usize::from(keys.len() > 1);
                CacheResponse::Values(vec![Some(Bytes::from_static(b"x")); short])
            }
            _ => CacheResponse::Written(false),
        }))
    });
    let cache = Cache::builder()
        .name("short")
        .backend(backend)
        .build()
        .unwrap();
    assert_eq!(cache.get_many(["a", "b"]).await, vec![None, None]);
    assert_eq!(
        cache.get_many(["a"]).await,
        vec![Some(Bytes::from_static(b"x"))]
    );
}

#[test]
fn ttls_are_capped_and_counted_and_jittered_within_their_bound() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use std::time::Duration;
    let sent = Arc::new(Mutex::new(Vec::<Ttl>::new()));
    let backend = tower::service_fn({
        let sent = sent.clone();
        move |req: CacheRequest| {
            if let CacheRequest::Set { ttl, .. } = &req {
                sent.lock().unwrap().push(*ttl);
            }
            std::future::ready(Ok::<_, Down>(CacheResponse::Written(true)))
        }
    });
    let secs = Duration::from_secs;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let cache = Cache::builder()
                .name("ttl-cap")
                .max_ttl(secs(10))
                .default_ttl(secs(5))
                .max_value_size(4)
                .backend(backend.clone())
                .build()
                .unwrap();
            assert_eq!(cache.set("a", "v").await, Write::Done);
            assert_eq!(cache.set_with_ttl("b", "v", secs(10)).await, Write::Done);
            assert_eq!(cache.set_with_ttl("c", "v", secs(20)).await, Write::Done);
            // The value cap: at it, written; one byte more, not sent.
            assert_eq!(cache.set("d", "abcd").await, Write::Done);
            assert_eq!(
                cache.set("e", "abcde").await,
                Write::Skipped(Reason::TooLarge)
            );
            let jittered = Cache::builder()
                .name("ttl-jitter")
                .default_ttl(secs(5))
                .ttl_jitter(0.5)
                .backend(backend)
                .build()
                .unwrap();
            for _ in 0..20 {
                jittered.set("j", "v").await;
            }
        })
    });
    let sent = sent.lock().unwrap().clone();
    let after = |d| Ttl::After(d);
    assert_eq!(
        sent[..4],
        [
            after(secs(5)),
            after(secs(10)),
            after(secs(10)),
            after(secs(5))
        ]
    );
    let jittered: Vec<Duration> = sent[4..]
        .iter()
        .map(|t| match t {
            Ttl::After(d) => *d,
            Ttl::Never => panic!("a TTL is always sent"),
        })
        .collect();
    assert_eq!(jittered.len(), 20);
    assert!(
        jittered.iter().all(|d| *d > secs(5) / 2 && *d <= secs(5)),
        "{jittered:?}"
    );
    assert!(
        jittered.iter().any(|d| *d != jittered[0]),
        "jittered apart: {jittered:?}"
    );
    // Only the TTL over the cap is counted (not the one at it).
    let capped: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == crate::telemetry::CACHE_TTL_CAPPED_TOTAL)
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum();
    assert_eq!(capped, 1);
}

#[tokio::test]
async fn a_watchdog_is_started_on_the_caches_own_redis_only() {
    use crate::watchdog::Watchdog;
    // (Nothing listens there: the watchdog only tries to connect.)
    let url = "redis://127.0.0.1:1/";
    let cache = Cache::builder()
        .name("watched")
        .redis_url(url)
        .watchdog(Watchdog::builder())
        .build()
        .unwrap();
    assert!(cache.watchdog().is_some());
    assert!(memory_cache().watchdog().is_none());
    let err = Cache::builder()
        .name("watched-elsewhere")
        .redis_url(url)
        .watchdog(Watchdog::builder().redis_url(url))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "watchdog");
    assert!(err.to_string().contains("own Redis"), "{err}");
}

#[tokio::test]
async fn get_many_sends_nothing_when_no_key_may_go() {
    let calls = Arc::new(AtomicUsize::new(0));
    let backend = tower::service_fn({
        let calls = calls.clone();
        move |_: CacheRequest| {
            calls.fetch_add(1, SeqCst);
            std::future::ready(Err::<CacheResponse, _>(Down(Reason::Other)))
        }
    });
    let cache = Cache::builder()
        .name("none-go")
        .max_key_size(2)
        .backend(backend)
        .build()
        .unwrap();
    assert_eq!(cache.get_many(["long", "longer"]).await, vec![None, None]);
    assert_eq!(cache.get_many(Vec::<&str>::new()).await, vec![]);
    assert_eq!(calls.load(SeqCst), 0, "an empty MGET is not sent");
}

#[tokio::test]
async fn a_delete_says_which_keys_it_could_not_remove() {
    let memory = Memory::default();
    let cache = Cache::builder()
        .name("deletes")
        .max_key_size(4)
        .backend(memory.clone())
        .build()
        .unwrap();
    cache.set("a", "v").await;
    let done = cache.delete_many_detailed(["a", "b"]).await;
    assert_eq!((done.write, done.skipped), (Write::Done, vec![]));
    let none = cache.delete_many_detailed(["a"]).await;
    assert_eq!((none.write, none.skipped), (Write::Unchanged, vec![]));
    // A key over the cap is not sent; the others are.
    cache.set("c", "v").await;
    let part = cache.delete_many_detailed(["c", "too-long"]).await;
    assert_eq!(
        (part.write, part.skipped),
        (Write::Skipped(Reason::TooLarge), vec![1])
    );
    assert_eq!(cache.get("c").await, None);
    // The call failed: every key it carried may still be there.
    memory.fail(Some(Reason::Io));
    let failed = cache.delete_many_detailed(["d", "too-long", "e"]).await;
    assert_eq!(failed.write, Write::Skipped(Reason::Io));
    assert_eq!(failed.skipped, vec![0, 1, 2]);
}

#[tokio::test]
async fn with_a_near_cache_this_process_reads_its_own_writes_and_get_many_uses_l1() {
    use crate::near::{Invalidation, NearCache};
    // Without tracking: only this process's own writes take entries out
    // of L1 before their lifetime ends.
    let cache = Cache::builder()
        .name("own-writes")
        .near_cache(NearCache::new().invalidation(Invalidation::Lifetime))
        .backend(Memory::default())
        .build()
        .unwrap();
    cache.set("k", "v1").await;
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v1"[..]));
    cache.set("k", "v2").await;
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v2"[..]));
    cache.delete("k").await;
    assert_eq!(cache.get("k").await, None);
    cache.set("k", "v3").await;
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v3"[..]));
    let before = cache.near_stats().unwrap().l1_hits;
    // (The memory backend does not answer MGET: only L1 can.)
    assert_eq!(
        cache.get_many(["k"]).await,
        vec![Some(Bytes::from_static(b"v3"))]
    );
    assert_eq!(cache.near_stats().unwrap().l1_hits, before + 1);
}
