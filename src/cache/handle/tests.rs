//! Tests of the cache handle over an in-memory backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::{oneshot, watch};

use crate::flight::{Coalesced, MIN_CAPACITY};
use std::convert::Infallible;

use super::*;
use crate::breaker::State;

/// A backend that keeps values in memory (no expiry), and fails or is not
/// ready on demand.
#[derive(Clone, Default)]
struct Memory {
    map: Arc<Mutex<HashMap<Bytes, Bytes>>>,
    /// Every call fails, for this reason.
    fail: Arc<Mutex<Option<Reason>>>,
    /// The next `poll_ready` (of any clone) is pending, and wakes at once.
    pending_next: Arc<AtomicBool>,
}

impl Service<CacheRequest> for Memory {
    type Response = CacheResponse;
    type Error = Down;
    type Future = std::future::Ready<Result<CacheResponse, Down>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Down>> {
        if self.pending_next.swap(false, Relaxed) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: CacheRequest) -> Self::Future {
        if let Some(reason) = *self.fail.lock().unwrap() {
            return std::future::ready(Err(Down(reason)));
        }
        let mut map = self.map.lock().unwrap();
        std::future::ready(Ok(match req {
            CacheRequest::Get(key) => CacheResponse::Value(map.get(&key).cloned()),
            CacheRequest::Delete(keys) => CacheResponse::Deleted(
                keys.iter().filter(|k| map.remove(*k).is_some()).count() as u64,
            ),
            CacheRequest::GetWithTtl(key) => {
                CacheResponse::ValueWithTtl(map.get(&key).map(|v| (v.clone(), Ttl::Never)))
            }
            CacheRequest::Set { key, value, .. } => {
                map.insert(key, value);
                CacheResponse::Written(true)
            }
            _ => CacheResponse::Written(false),
        }))
    }
}

/// The memory backend's failure, with its reason.
#[derive(Debug)]
struct Down(Reason);

impl Fault for Down {
    fn reason(&self) -> Reason {
        self.0
    }
}

impl Memory {
    fn fail(&self, reason: Option<Reason>) {
        *self.fail.lock().unwrap() = reason;
    }
}

fn memory_cache() -> Cache<Memory> {
    Cache::builder()
        .name("memory")
        .backend(Memory::default())
        .build()
        .unwrap()
}

/// Yields until `key`'s flight has `n` followers waiting (for 0: until it
/// has a leader).
async fn followers<B: Backend>(cache: &Cache<B>, key: &[u8], n: usize) {
    let full = cache.key(key);
    for _ in 0..100_000 {
        let waiting = cache.shared.flights.followers(&full);
        if waiting >= Some(n) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{n} followers never joined");
}

#[tokio::test]
async fn a_load_behind_a_leader_that_would_not_share_loads_itself() {
    let cache = memory_cache();
    let (entered, started) = oneshot::channel();
    let (release, released) = oneshot::channel::<()>();
    // An HTTP layer leads on this key with a response it may not share.
    let leader = tokio::spawn({
        let cache = cache.clone();
        async move {
            let led = cache
                .coalesce(b"k", (), |()| async move {
                    let _ = entered.send(());
                    let _ = released.await;
                    Ok::<_, Infallible>(("private", None))
                })
                .await;
            matches!(led, Ok(Coalesced::Led("private")))
        }
    });
    started.await.unwrap();
    let user = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load("k", || async { Ok::<_, Infallible>("mine") })
                .await
        }
    });
    followers(&cache, b"k", 1).await;
    release.send(()).unwrap();
    assert!(leader.await.unwrap());
    assert_eq!(user.await.expect("no panic").unwrap(), "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_load() {
    let cache = memory_cache();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (release, gate) = watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (cache, calls, mut gate) = (cache.clone(), calls.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load("slow", || async move {
                    calls.fetch_add(1, Relaxed);
                    let _ = gate.wait_for(|open| *open).await;
                    Ok::<_, Infallible>("loaded")
                })
                .await
        }));
    }
    // Every other caller waits on the one load before it may finish.
    followers(&cache, b"slow", 19).await;
    release.send_replace(true);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), "loaded");
    }
    assert_eq!(calls.load(Relaxed), 1);
    assert_eq!(cache.get("slow").await.as_deref(), Some(&b"loaded"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_the_load_to_a_follower() {
    let cache = memory_cache();
    let leader = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load("k", std::future::pending::<Result<&str, Infallible>>)
                .await
        }
    });
    followers(&cache, b"k", 0).await;
    let follower = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load("k", || async { Ok::<_, Infallible>("from follower") })
                .await
        }
    });
    followers(&cache, b"k", 1).await;
    leader.abort();
    assert_eq!(follower.await.unwrap().unwrap(), "from follower");
}

#[tokio::test]
async fn a_burst_of_distinct_keys_leaves_no_peak_table_behind() {
    let cache = memory_cache();
    let (release, released) = watch::channel(false);
    let mut loads = Vec::new();
    for i in 0..5_000u32 {
        let (cache, mut released) = (cache.clone(), released.clone());
        loads.push(tokio::spawn(async move {
            cache
                .get_or_load(i.to_be_bytes(), || async move {
                    let _ = released.wait_for(|r| *r).await;
                    Ok::<_, Infallible>(Bytes::new())
                })
                .await
        }));
    }
    drop(released);
    for _ in 0..100_000 {
        if cache.shared.flights.size().keys == 5_000 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(cache.shared.flights.size().capacity >= 5_000);
    release.send_replace(true);
    for load in loads {
        load.await.unwrap().unwrap();
    }
    let capacity = cache.shared.flights.size().capacity;
    assert!(capacity <= 2 * MIN_CAPACITY, "{capacity}");
}

#[cfg(feature = "serde")]
#[tokio::test]
async fn a_loaded_value_that_does_not_encode_is_returned_and_not_stored() {
    use std::collections::BTreeMap;
    let cache = memory_cache();
    // JSON objects need string keys: this map does not encode.
    let value = BTreeMap::from([(vec![1u8], 1u8)]);
    let loaded = cache
        .typed(crate::cache::JsonCodec)
        .get_or_load("k", || async { Ok::<_, Infallible>(value.clone()) })
        .await;
    assert_eq!(loaded.unwrap(), value);
    assert_eq!(cache.get("k").await, None, "nothing stored");
}

#[tokio::test(start_paused = true)]
async fn a_stack_clone_left_not_ready_gives_back_its_probe_permit() {
    let memory = Memory::default();
    let cache = Cache::builder()
        .name("memory")
        .breaker(|b| b.consecutive_failures(1).open_for(Duration::from_secs(1)))
        .backend(memory.clone())
        .build()
        .unwrap();
    assert!(cache.set("k", "v").await.is_done());
    memory.fail(Some(Reason::Other));
    assert_eq!(cache.get("k").await, None);
    let breaker = cache.breaker().clone();
    assert_eq!(breaker.state(), State::Open);

    // Redis is back; the thread's stack clone takes the one probe permit,
    // then finds the backend not ready at once: the call goes to another
    // clone, which must get the permit.
    memory.fail(None);
    tokio::time::advance(Duration::from_secs(2)).await;
    // The breaker's timer task ends the open period.
    for _ in 0..1_000 {
        if breaker.state() != State::Open {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(breaker.state(), State::HalfOpen);
    memory.pending_next.store(true, Relaxed);
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v"[..]));
    assert_eq!(breaker.state(), State::Closed);
}

mod extremes;

/// A codec that counts its calls.
#[derive(Clone, Default)]
struct Counting(Arc<(AtomicUsize, AtomicUsize)>);

impl crate::cache::Codec<u64> for Counting {
    type Error = &'static str;

    fn encode(&self, value: &u64) -> Result<Bytes, &'static str> {
        self.0 .0.fetch_add(1, SeqCst);
        Ok(Bytes::copy_from_slice(&value.to_le_bytes()))
    }

    fn decode(&self, bytes: Bytes) -> Result<u64, &'static str> {
        self.0 .1.fetch_add(1, SeqCst);
        Ok(u64::from_le_bytes(
            (&bytes[..]).try_into().map_err(|_| "not 8 bytes")?,
        ))
    }
}

#[tokio::test]
async fn a_typed_load_encodes_once_and_the_loader_never_decodes() {
    let cache = memory_cache();
    let codec = Counting::default();
    let typed = cache.typed(codec.clone());
    let (release, wait) = tokio::sync::watch::channel(false);
    let leader = {
        let (typed, mut wait) = (typed.clone(), wait.clone());
        tokio::spawn(async move {
            typed
                .get_or_load("n", || async move {
                    let _ = wait.wait_for(|r| *r).await;
                    Ok::<u64, Infallible>(7)
                })
                .await
        })
    };
    followers(&cache, b"n", 0).await;
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let typed = typed.clone();
            tokio::spawn(async move {
                typed
                    .get_or_load("n", || async { Ok::<u64, Infallible>(0) })
                    .await
            })
        })
        .collect();
    followers(&cache, b"n", 3).await;
    drop(wait);
    release.send_replace(true);
    assert_eq!(leader.await.unwrap(), Ok(7));
    for w in waiters {
        assert_eq!(w.await.unwrap(), Ok(7), "the leader's value");
    }
    // One encode, for the store; one decode per waiter, none for the leader
    // (the three misses before the flight found nothing to decode).
    assert_eq!(codec.0 .0.load(SeqCst), 1);
    assert_eq!(codec.0 .1.load(SeqCst), 3);
    assert_eq!(typed.get::<u64>("n").await, Some(7));
}

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
