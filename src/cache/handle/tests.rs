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
    /// What `GetWithTtl` says is left of every key (`None`: no expiry).
    ttl_left: Arc<Mutex<Option<Duration>>>,
    /// How many `GetWithTtl` calls came.
    reads_with_ttl: Arc<AtomicUsize>,
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
                self.reads_with_ttl.fetch_add(1, SeqCst);
                let ttl = match *self.ttl_left.lock().unwrap() {
                    Some(left) => Ttl::After(left),
                    None => Ttl::Never,
                };
                CacheResponse::ValueWithTtl(map.get(&key).map(|v| (v.clone(), ttl)))
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

mod edges;
mod load;
