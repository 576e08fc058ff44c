//! Concurrent `get`s gathered into one `MGET` (and `set`s into one
//! pipeline) while their connection is busy: each caller gets its own
//! answer within its own deadline, through cancellation, faults and keys
//! of every size, and a failed batch counts once against the breaker.

use std::time::Duration;

use bytes::Bytes;
use fusebox::backend::{RedisConfig, RedisConfigBuilder};
use fusebox::breaker::State;
use fusebox::cache::Cache;

use crate::common::{calls, counter, metrics, RedisServer};

/// Deadlines that fit a loaded machine (what is tested is which answer
/// each caller gets, not speed).
fn builder(redis: &RedisServer) -> RedisConfigBuilder {
    RedisConfig::builder(redis.url())
        .connect_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(2))
}

fn cache(redis: &RedisServer, name: &str, max_batch: usize) -> Cache {
    let config = builder(redis).max_batch(max_batch).build().unwrap();
    Cache::builder().name(name).redis(config).build().unwrap()
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("value of k{i}"))
}

/// `n` tasks spawned at once, each getting `k{i}`; their answers in order.
async fn burst(cache: &Cache, keys: impl Iterator<Item = String>) -> Vec<Option<Bytes>> {
    let tasks: Vec<_> = keys
        .map(|key| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(key).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        let answer = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("no caller waits past its deadline")
            .unwrap();
        answers.push(answer);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_of_a_batch_gets_its_own_answer() {
    let redis = RedisServer::start(&[]);
    let cache = cache(&redis, "batch-own", 128);
    // 64 writers at once: their sets go out as pipelines, each lands.
    let sets: Vec<_> = (0..512)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.set(format!("k{i}"), value(i)).await.is_done() })
        })
        .collect();
    for t in sets {
        assert!(t.await.unwrap(), "every set is done");
    }
    for i in [0, 77, 511] {
        let stored = redis.cmd(&["GET", &format!("k{i}")]);
        assert!(stored.contains(&format!("value of k{i}")), "{stored}");
        let ttl: i64 = redis
            .cmd(&["PTTL", &format!("k{i}")])
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap();
        assert!(ttl > 0, "a batched set keeps its TTL: {ttl}");
    }
    // 64 readers, 40 rounds, every third key absent: each caller gets the
    // value of its own key, or none where there is none.
    let mut tasks = Vec::new();
    for t in 0..64usize {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            let mut wrong = 0;
            for round in 0..40usize {
                let i = (t * 40 + round) % 768;
                let got = cache.get(format!("k{i}")).await;
                let expected = (i < 512).then(|| value(i));
                wrong += usize::from(got != expected);
            }
            wrong
        }));
    }
    let mut wrong = 0;
    for t in tasks {
        wrong += tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(wrong, 0, "answers that were not the caller's own");
    assert!(
        calls(&redis, "mget") > 0,
        "64 concurrent callers were batched"
    );
    assert!(
        calls(&redis, "get") > 0,
        "calls that found the connection free went out alone"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_caller_cancelled_inside_a_batch_costs_the_others_nothing() {
    let mut redis = RedisServer::start(&[]);
    let cache = cache(&redis, "batch-cancel", 128);
    for i in 0..40 {
        assert!(cache.set(format!("k{i}"), value(i)).await.is_done());
    }
    redis.pause();
    // Every task runs to its first await, and queues for a batch (Redis,
    // stopped, answers nothing yet).
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(format!("k{i}")).await })
        })
        .collect();
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    // Cancelled: every third.
    for (i, t) in tasks.iter().enumerate() {
        if i % 3 == 0 {
            t.abort();
        }
    }
    redis.resume();
    for (i, t) in tasks.into_iter().enumerate() {
        match tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("bounded")
        {
            Ok(got) => assert_eq!(got, Some(value(i)), "k{i}"),
            Err(e) => assert!(e.is_cancelled() && i % 3 == 0, "k{i}: {e}"),
        }
    }
    assert!(
        calls(&redis, "mget") > 0,
        "the queued calls went out as a batch"
    );
    // A lone call goes out at once, as a `GET` of its own.
    let gets = calls(&redis, "get");
    assert_eq!(cache.get("k1").await, Some(value(1)));
    assert_eq!(calls(&redis, "get"), gets + 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_that_fails_counts_once_against_the_breaker() {
    metrics();
    let redis = RedisServer::start(&[]);
    let cache = cache(&redis, "batch-echo", 128);
    for i in 0..64 {
        assert!(cache.set(format!("k{i}"), value(i)).await.is_done());
    }
    // `MGET` refused (NOPERM), `GET` not: a call that goes out alone (as a
    // `GET`) hits, every batch fails as one round trip.
    redis.cmd(&["ACL", "SETUSER", "default", "-mget"]);
    let answers = burst(&cache, (0..64).map(|i| format!("k{i}"))).await;
    let hits = answers.iter().flatten().count();
    let refused = counter(
        "fusebox_cache_fail_open_total",
        &[("cache", "batch-echo"), ("reason", "auth")],
    );
    assert!(refused >= 32, "{hits} hits, {refused} refused");
    assert_eq!(hits as u64 + refused, 64);
    // Counted once per failed batch, the breaker (5 failures in a row, or
    // half of 20 calls) stays closed; counted per caller it would open.
    assert_eq!(cache.breaker().state(), State::Closed);
    redis.cmd(&["ACL", "SETUSER", "default", "+mget"]);
    let answers = burst(&cache, (0..64).map(|i| format!("k{i}"))).await;
    assert!(answers
        .iter()
        .enumerate()
        .all(|(i, a)| a.as_ref() == Some(&value(i))));
}

#[tokio::test(flavor = "current_thread")]
async fn sets_of_one_batch_refused_one_by_one_count_once_against_the_breaker() {
    metrics();
    let redis = RedisServer::start(&[]);
    let config = builder(&redis).build().unwrap();
    // A breaker that never opens here: every failure it hears is counted.
    let cache = Cache::builder()
        .name("batch-set-echo")
        .redis(config)
        .breaker(|b| {
            b.consecutive_failures(10_000)
                .count_window(10_000)
                .minimum_calls(10_000)
        })
        .build()
        .unwrap();
    assert!(cache.set("first", value(0)).await.is_done());
    // `SET` refused (NOPERM): each `SET` of a batch's pipeline is refused
    // on its own, all in one round trip.
    redis.cmd(&["ACL", "SETUSER", "default", "-set"]);
    let sets: Vec<_> = (0..64)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.set(format!("k{i}"), value(i)).await })
        })
        .collect();
    for t in sets {
        let written = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("no caller waits past its deadline")
            .unwrap();
        assert!(!written.is_done());
    }
    let refused = counter(
        "fusebox_cache_fail_open_total",
        &[("cache", "batch-set-echo"), ("reason", "auth")],
    );
    assert_eq!(refused, 64, "every caller hears its refusal");
    // Each batch counts once (the calls queued while the first was
    // connecting go out together); counted per caller it would be 64.
    let failures = counter(
        "fusebox_breaker_calls_total",
        &[("breaker", "batch-set-echo"), ("outcome", "failure")],
    );
    assert!((1..=8).contains(&failures), "{failures} failures counted");
    redis.cmd(&["ACL", "SETUSER", "default", "+set"]);
    assert!(cache.set("k1", value(1)).await.is_done());
}

#[tokio::test(flavor = "current_thread")]
async fn an_oversized_key_or_a_large_value_among_small_ones_harms_none() {
    let redis = RedisServer::start(&[]);
    let cache = cache(&redis, "batch-sizes", 128);
    for i in 0..32 {
        assert!(cache.set(format!("k{i}"), value(i)).await.is_done());
    }
    let large = Bytes::from(vec![b'x'; 900 << 10]);
    assert!(cache.set("large", large.clone()).await.is_done());
    let oversized = "o".repeat((8 << 10) + 1);
    let keys = (0..32)
        .map(|i| format!("k{i}"))
        .chain([oversized.clone(), "large".into(), "absent".into()])
        .chain((0..32).map(|i| format!("k{i}")));
    let answers = burst(&cache, keys).await;
    for (n, answer) in answers.iter().enumerate() {
        let expected = match n {
            0..32 => Some(value(n)),
            32 | 34 => None,
            33 => Some(large.clone()),
            _ => Some(value(n - 35)),
        };
        assert_eq!(
            answer.as_ref().map(Bytes::len),
            expected.as_ref().map(Bytes::len),
            "answer {n}"
        );
        assert!(*answer == expected, "answer {n}");
    }
    assert!(calls(&redis, "mget") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_when_redis_dies_answer_in_time_and_hits_return() {
    let mut redis = RedisServer::start(&[]);
    let cache = cache(&redis, "batch-kill", 128);
    for i in 0..256 {
        assert!(cache.set(format!("k{i}"), value(i)).await.is_done());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..64usize {
        let (cache, stop, done) = (cache.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let (mut wrong, mut slowest) = (0, Duration::ZERO);
            let mut n = t;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let i = n % 256;
                let start = tokio::time::Instant::now();
                let got = cache.get(format!("k{i}")).await;
                slowest = slowest.max(start.elapsed());
                wrong += usize::from(got.is_some_and(|v| v != value(i)));
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                n += 64;
                tokio::task::yield_now().await;
            }
            (wrong, slowest)
        }));
    }
    let wait_for = |count: u64| {
        let done = done.clone();
        async move {
            let start = tokio::time::Instant::now();
            while done.load(std::sync::atomic::Ordering::Relaxed) < count {
                assert!(start.elapsed() < Duration::from_secs(30), "callers stuck");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(5_000).await;
    // Killed with batches in flight and queued.
    redis.kill();
    let seen = done.load(std::sync::atomic::Ordering::Relaxed);
    wait_for(seen + 5_000).await;
    redis.restart();
    // Hits come back (the restarted Redis starts empty: the keys are
    // written again as soon as it takes writes).
    let start = tokio::time::Instant::now();
    while cache.set("k1", value(1)).await != fusebox::cache::Write::Done
        || cache.get("k1").await != Some(value(1))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no hit after the restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..256 {
        assert!(cache.set(format!("k{i}"), value(i)).await.is_done());
    }
    let seen = done.load(std::sync::atomic::Ordering::Relaxed);
    wait_for(seen + 5_000).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let (wrong, slowest) = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(wrong, 0, "a wrong value");
        // The response deadline (2 s) and the checkout's (0.5 s), with
        // room for a loaded machine: no caller waits on a dead batch.
        assert!(slowest < Duration::from_secs(5), "a call took {slowest:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_batch_of_one_sends_every_call_alone() {
    let redis = RedisServer::start(&[]);
    let cache = cache(&redis, "batch-off", 1);
    for i in 0..64 {
        assert!(cache.set(format!("k{i}"), value(i)).await.is_done());
    }
    for _ in 0..20 {
        let answers = burst(&cache, (0..64).map(|i| format!("k{i}"))).await;
        assert!(answers
            .iter()
            .enumerate()
            .all(|(i, a)| a.as_ref() == Some(&value(i))));
    }
    assert_eq!(calls(&redis, "mget"), 0);
    assert_eq!(calls(&redis, "get"), 20 * 64);
    for bad in [0, 10_001] {
        let e = RedisConfig::builder(redis.url())
            .max_batch(bad)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("max_batch"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_cache_batches_only_the_reads_that_miss_it() {
    let redis = RedisServer::start(&[]);
    let config = builder(&redis).build().unwrap();
    let cache = Cache::builder()
        .name("batch-near")
        .near_cache(fusebox::cache::NearCache::new())
        .redis(config)
        .build()
        .unwrap();
    for i in 0..256 {
        assert!(cache.set(format!("k{i}"), value(i)).await.is_done());
    }
    let start = tokio::time::Instant::now();
    while !cache.near_stats().is_some_and(|s| s.fresh) {
        assert!(start.elapsed() < Duration::from_secs(10), "no tracking");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // 256 concurrent first reads miss L1: they go to Redis, gathered into
    // `MGET`s with their `PTTL`s, and each caller gets its own value.
    let answers = burst(&cache, (0..256).map(|i| format!("k{i}"))).await;
    assert!(answers
        .iter()
        .enumerate()
        .all(|(i, a)| a.as_ref() == Some(&value(i))));
    let (mgets, pttls) = (calls(&redis, "mget"), calls(&redis, "pttl"));
    assert!(mgets > 0, "the misses were batched");
    // The same reads again are L1 hits: nothing more reaches Redis.
    let answers = burst(&cache, (0..256).map(|i| format!("k{i}"))).await;
    assert!(answers
        .iter()
        .enumerate()
        .all(|(i, a)| a.as_ref() == Some(&value(i))));
    assert_eq!(
        (calls(&redis, "mget"), calls(&redis, "pttl")),
        (mgets, pttls)
    );
    assert!(cache.near_stats().unwrap().l1_hits >= 256);
}
