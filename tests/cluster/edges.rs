//! A shard that refuses writes by not answering them: a write pause on
//! one primary.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fusebox::breaker::State;
use fusebox::cache::{Reason, Write};
use fusebox_testkit::RedisCluster;

use super::cache;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_pause_on_one_shard_holds_down_its_writes_and_keeps_its_reads() {
    let cluster = RedisCluster::start(3, 0, &["--cluster-require-full-coverage", "no"]);
    let (cache, backend) = cache(&cluster);
    let paused = cluster.primary_of("{p}").unwrap();
    for i in 0..20 {
        assert_eq!(cache.set(format!("{{p}}:{i}"), "v").await, Write::Done);
    }
    cluster.nodes()[paused].cmd(&["CLIENT", "PAUSE", "60000", "WRITE"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, hits) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (cache, stop, reads, hits) = (cache.clone(), stop.clone(), reads.clone(), hits.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Relaxed) {
                let hit = cache.get(format!("{{p}}:{}", i % 20)).await.is_some();
                reads.fetch_add(1, Relaxed);
                hits.fetch_add(u64::from(hit), Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (cache, stop) = (cache.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut i = 0;
                while !stop.load(Relaxed) {
                    seen.push(cache.set(format!("{{p}}:w{w}:{i}"), "v").await);
                    i += 1;
                    tokio::task::yield_now().await;
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Relaxed);
    reader.await.unwrap();
    let mut writes = Vec::new();
    for w in writers {
        writes.extend(w.await.unwrap());
    }
    let (reads, hits) = (reads.load(Relaxed), hits.load(Relaxed));
    let held = writes
        .iter()
        .filter(|w| **w == Write::Skipped(Reason::WriteTimeout))
        .count();
    let mut outcomes = std::collections::BTreeMap::new();
    for w in &writes {
        *outcomes.entry(format!("{w:?}")).or_insert(0) += 1;
    }
    println!(
        "{hits}/{reads} reads hit; {held} of {} writes held down: {outcomes:?}",
        writes.len()
    );
    assert_eq!(hits, reads, "the paused shard's reads keep hitting");
    assert!(reads > 100, "{reads}");
    // Most writes are shed at once rather than each waiting the deadline
    // out (2 writers for 2 s at 200 ms would be about 20).
    assert!(held > 100, "{held} of {}: {writes:?}", writes.len());
    // (On a loaded machine a timeout noticed late counts as this process
    // being behind: `overloaded`. None is done, none fails otherwise.)
    assert!(
        writes
            .iter()
            .all(|w| matches!(w, Write::Skipped(Reason::WriteTimeout | Reason::Overloaded))),
        "{outcomes:?}"
    );
    let addr = format!("127.0.0.1:{}", cluster.nodes()[paused].port());
    let breaker = backend
        .shard_breaker(&addr)
        .expect("the paused shard's breaker");
    assert_eq!(breaker.state(), State::Closed);
    // Other shards take writes all along; the paused one once it is over.
    let other = (0..100)
        .map(|i| format!("o{i}"))
        .find(|k| cluster.primary_of(k) != Some(paused))
        .unwrap();
    assert_eq!(cache.set(&other, "v").await, Write::Done);
    cluster.nodes()[paused].cmd(&["CLIENT", "UNPAUSE"]);
    let start = std::time::Instant::now();
    while cache.set("{p}:after", "v").await != Write::Done {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "writes to the paused shard resume"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_a_failed_shard_did_not_do_never_reads_as_done() {
    let mut cluster = RedisCluster::start(3, 0, &["--cluster-require-full-coverage", "no"]);
    let (cache, _backend) = cache(&cluster);
    let keys: Vec<String> = (0..60).map(|i| format!("d{i}")).collect();
    for key in &keys {
        assert_eq!(cache.set(key, "old").await, Write::Done);
    }
    let down = cluster.primary_of("d0").unwrap();
    let on_down: Vec<usize> = (0..keys.len())
        .filter(|&i| cluster.primary_of(&keys[i]) == Some(down))
        .collect();
    assert!(!on_down.is_empty() && on_down.len() < keys.len());
    cluster.node_mut(down).pause();
    let deletion = cache.delete_many_detailed(&keys).await;
    assert!(
        matches!(deletion.write, Write::Skipped(_)),
        "{:?}",
        deletion.write
    );
    assert_eq!(deletion.skipped, on_down, "exactly the hung shard's keys");
    assert!(matches!(cache.delete_many(&keys).await, Write::Skipped(_)));
    cluster.node_mut(down).resume();
    // The keys not reported skipped are gone. (A skipped delete is not
    // known to be done: one that timed out may still run once the shard
    // resumes.)
    for (i, key) in keys.iter().enumerate() {
        if !on_down.contains(&i) {
            assert_eq!(cache.get(key).await, None, "{key}");
        }
    }
    // A key too large to send is a skip too, never a silent success.
    let huge = "k".repeat(10_000);
    let deletion = cache
        .delete_many_detailed([keys[1].as_str(), huge.as_str()])
        .await;
    assert_eq!(deletion.write, Write::Skipped(Reason::TooLarge));
    assert_eq!(deletion.skipped, [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_call_cancelled_mid_await_still_leaves_a_slot_map() {
    let mut cluster = RedisCluster::start(3, 0, &["--cluster-require-full-coverage", "no"]);
    let (cache, backend) = cache(&cluster);
    // The very first call, dropped at its first await (an outer timeout,
    // a select!, a client gone).
    tokio::select! {
        biased;
        _ = cache.get("first") => {}
        _ = std::future::ready(()) => {}
    }
    let start = std::time::Instant::now();
    while backend.primary_of(b"k").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a slot map is read"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // With a map, one hung primary costs only its own keys.
    let keys: Vec<String> = (0..60).map(|i| format!("c{i}")).collect();
    for key in &keys {
        assert_eq!(cache.set(key, "v").await, Write::Done, "{key}");
    }
    let hung = cluster.primary_of("c0").unwrap();
    cluster.node_mut(hung).pause();
    let others: Vec<&String> = keys
        .iter()
        .filter(|k| cluster.primary_of(k) != Some(hung))
        .collect();
    let mut hits = 0;
    for _ in 0..3 {
        for key in &others {
            hits += usize::from(cache.get(key).await.is_some());
        }
    }
    cluster.node_mut(hung).resume();
    assert_eq!(hits, 3 * others.len(), "the other shards' keys all hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_hung_from_the_start_fails_fast_once_the_breaker_opens() {
    let mut cluster = RedisCluster::start(3, 0, &["--cluster-require-full-coverage", "no"]);
    for i in 0..3 {
        cluster.node_mut(i).pause();
    }
    let (cache, _backend) = cache(&cluster);
    let deadline = Duration::from_millis(200);
    let (mut slow, mut calls) = (0, 0);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let call = std::time::Instant::now();
        assert_eq!(cache.get(format!("h{calls}")).await, None);
        // The first call waits out one deadline, not two (with room for a
        // loaded machine).
        assert!(
            calls > 0 || call.elapsed() < deadline * 3,
            "{:?}",
            call.elapsed()
        );
        slow += usize::from(call.elapsed() >= deadline);
        calls += 1;
    }
    println!("{slow} of {calls} calls waited out the deadline");
    assert_ne!(cache.breaker().state(), State::Closed);
    assert!(
        // A handful at first, then a half-open probe per 0.4-0.5 s (200 of
        // 424 before the cache's breaker counted this).
        slow <= 40,
        "{slow} of {calls} calls waited out the deadline"
    );
    for i in 0..3 {
        cluster.node_mut(i).resume();
    }
    let start = std::time::Instant::now();
    while cache.set("back", "v").await != Write::Done {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the cluster answers again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pause of the whole host (this process and Redis alike, as a VM pause
/// is): the calls in flight time out together, noticed late. One event,
/// not one failure each: the healthy shard's breaker stays closed.
#[tokio::test]
async fn timeouts_one_stall_caused_together_count_once() {
    let mut cluster = RedisCluster::start(3, 0, &["--cluster-require-full-coverage", "no"]);
    let deadline = Duration::from_millis(50);
    let backend = fusebox::backend::ClusterBackend::new(cluster.urls(), deadline).unwrap();
    let cache = fusebox::cache::Cache::builder()
        .name("stall")
        .backend(backend.clone())
        .build()
        .unwrap();
    let node = cluster.primary_of("{s}").unwrap();
    for i in 0..6 {
        assert_eq!(cache.set(format!("{{s}}:{i}"), "v").await, Write::Done);
    }
    let addr = format!("127.0.0.1:{}", cluster.nodes()[node].port());
    let breaker = backend.shard_breaker(&addr).unwrap();
    for round in 0..3 {
        // The host stops: Redis first, then (with the reads sent and
        // waiting) this process, for three deadlines; then both go on.
        cluster.node_mut(node).pause();
        let reads: Vec<_> = (0..6)
            .map(|i| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(format!("{{s}}:{i}")).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        std::thread::sleep(deadline * 3);
        cluster.node_mut(node).resume();
        let mut missed = 0;
        for read in reads {
            missed += usize::from(read.await.unwrap().is_none());
        }
        println!("round {round}: {missed} of 6 reads missed");
        assert_eq!(breaker.state(), State::Closed, "round {round}");
        // The shard answers again.
        let start = std::time::Instant::now();
        while cache.get("{s}:0").await.is_none() {
            assert!(start.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_whole_cluster_hung_hits_return_with_the_shards() {
    let mut cluster = RedisCluster::start(3, 0, &["--cluster-require-full-coverage", "no"]);
    // Shard breakers that stay open 5 s: hits must come back with the
    // shards answering, not with the breakers' next probe.
    let config = fusebox::breaker::Config::builder()
        .name("hung")
        .open_for(Duration::from_secs(5))
        .build()
        .unwrap();
    let backend = fusebox::backend::ClusterBackend::with_breaker(
        cluster.urls(),
        Duration::from_millis(200),
        config,
    )
    .unwrap();
    let cache = fusebox::cache::Cache::builder()
        .name("hung")
        .backend(backend)
        .build()
        .unwrap();
    let keys: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    for key in &keys {
        assert_eq!(cache.set(key, "v").await, Write::Done);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (cache, stop, keys) = (cache.clone(), stop.clone(), keys.clone());
            tokio::spawn(async move {
                let mut i = r;
                while !stop.load(Relaxed) {
                    cache.get(&keys[i % keys.len()]).await;
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        cluster.node_mut(i).pause();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        cluster.node_mut(i).resume();
    }
    let resumed = std::time::Instant::now();
    // Every key hits again.
    let mut back = Vec::new();
    for key in &keys {
        while cache.get(key).await.is_none() {
            assert!(
                resumed.elapsed() < Duration::from_secs(10),
                "{key} never hit again"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        back.push(resumed.elapsed());
    }
    stop.store(true, Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let last = back.iter().max().unwrap();
    println!("every key hit again {last:?} after the cluster resumed");
    // Seen answering (a `PING` to each open shard's primary every 50 ms),
    // not waited out: the open period had 2 s to go.
    assert!(*last < Duration::from_millis(1500), "{last:?}");
}
