//! Redis refusing writes while it serves reads — a replica (`READONLY`), a
//! failed save (`MISCONF`), a write pause (`CLIENT PAUSE … WRITE`) — under
//! concurrent load: reads keep hitting, the breaker stays closed, writes
//! are skipped with their own reason, and recover by themselves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use fusebox::cache::{Cache, Reason, Write};

use crate::common::{eventually, roomy, RedisServer};

const KEYS: usize = 100;

/// Deadlines that fit a loaded 2-core machine: what is tested here is which
/// calls fail, not how fast.
fn cache(name: &str, url: &str) -> Cache {
    Cache::builder()
        .name(name)
        .write_hold_down(Duration::from_millis(200))
        .redis(roomy(url))
        .build()
        .unwrap()
}

async fn fill(cache: &Cache) {
    for i in 0..KEYS {
        assert_eq!(cache.set(format!("present:{i}"), "v").await, Write::Done);
    }
}

/// What 8 readers of present keys and 4 writers saw over `span`.
#[derive(Debug)]
struct Load {
    reads: u64,
    hits: u64,
    writes: Vec<Write>,
}

async fn under_load(cache: &Cache, span: Duration) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, hits) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut readers = Vec::new();
    for r in 0..8 {
        let (cache, stop, reads, hits) = (cache.clone(), stop.clone(), reads.clone(), hits.clone());
        readers.push(tokio::spawn(async move {
            let mut i = r;
            while !stop.load(SeqCst) {
                let hit = cache.get(format!("present:{}", i % KEYS)).await.is_some();
                reads.fetch_add(1, SeqCst);
                hits.fetch_add(u64::from(hit), SeqCst);
                i += 7;
            }
        }));
    }
    let mut writers = Vec::new();
    for w in 0..4 {
        let (cache, stop) = (cache.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0;
            while !stop.load(SeqCst) {
                seen.push(cache.set(format!("written:{w}:{i}"), "w").await);
                i += 1;
                tokio::task::yield_now().await;
            }
            seen
        }));
    }
    tokio::time::sleep(span).await;
    stop.store(true, SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    let mut writes = Vec::new();
    for w in writers {
        writes.extend(w.await.unwrap());
    }
    Load {
        reads: reads.load(SeqCst),
        hits: hits.load(SeqCst),
        writes,
    }
}

/// The promise under a write-only refusal, checked on `load`.
fn assert_reads_kept(load: &Load, reason: Reason) {
    assert!(load.reads > 100, "readers ran: {load:?}");
    let ratio = load.hits as f64 / load.reads as f64;
    assert!(
        ratio >= 0.99,
        "{} of {} reads hit ({ratio:.3})",
        load.hits,
        load.reads
    );
    assert!(!load.writes.is_empty());
    for w in &load.writes {
        assert!(
            *w == Write::Skipped(reason),
            "every write skipped as {reason}: saw {w:?}"
        );
    }
}

/// Writes are done again, within a bounded wait.
async fn writes_recover(cache: &Cache) {
    let recovered = eventually(Duration::from_secs(10), || async {
        cache.set("after", "ok").await == Write::Done
    })
    .await;
    assert!(recovered, "writes recover by themselves");
    assert_eq!(cache.get("after").await.as_deref(), Some(&b"ok"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_keeps_reads_and_writes_return_after_promotion() {
    let primary = RedisServer::start(&[]);
    let replica = RedisServer::start(&[]);
    fill(&cache("replica-fill", &primary.url())).await;
    replica.cmd(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()]);
    let synced = eventually(Duration::from_secs(10), || async {
        replica
            .cmd(&["INFO", "replication"])
            .contains("master_link_status:up")
            && replica.cmd(&["DBSIZE"]).contains(&KEYS.to_string())
    })
    .await;
    assert!(synced, "the replica synced");

    let cache = cache("replica", &replica.url());
    let mut transitions = cache.breaker().subscribe();
    let load = under_load(&cache, Duration::from_millis(1500)).await;
    assert_reads_kept(&load, Reason::ReadOnly);
    assert!(transitions.try_recv().is_err(), "the breaker stayed closed");

    // A failover promotes it: writes resume with no restart.
    replica.cmd(&["REPLICAOF", "NO", "ONE"]);
    writes_recover(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_save_keeps_reads_and_writes_return_after_a_good_one() {
    let redis = RedisServer::start(&["--save", "3600 1", "--enable-protected-configs", "yes"]);
    let cache = cache("misconf", &redis.url());
    fill(&cache).await;
    // A save that cannot write its file: `stop-writes-on-bgsave-error`.
    redis.cmd(&["CONFIG", "SET", "dir", "/proc"]);
    redis.cmd(&["BGSAVE"]);
    let failed = eventually(Duration::from_secs(10), || async {
        redis
            .cmd(&["INFO", "persistence"])
            .contains("rdb_last_bgsave_status:err")
    })
    .await;
    assert!(failed, "the save failed");

    let mut transitions = cache.breaker().subscribe();
    let load = under_load(&cache, Duration::from_millis(1500)).await;
    assert_reads_kept(&load, Reason::WritesStopped);
    assert!(transitions.try_recv().is_err(), "the breaker stayed closed");

    let dir = std::env::temp_dir();
    redis.cmd(&["CONFIG", "SET", "dir", dir.to_str().unwrap()]);
    redis.cmd(&["BGSAVE"]);
    writes_recover(&cache).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_pause_keeps_reads_on_their_own_connection() {
    let redis = RedisServer::start(&[]);
    let cache = cache("paused-writes", &redis.url());
    fill(&cache).await;
    let mut transitions = cache.breaker().subscribe();
    redis.cmd(&["CLIENT", "PAUSE", "60000", "WRITE"]);
    let load = under_load(&cache, Duration::from_millis(1500)).await;
    assert_reads_kept(&load, Reason::WriteTimeout);
    assert!(transitions.try_recv().is_err(), "the breaker stayed closed");

    redis.cmd(&["CLIENT", "UNPAUSE"]);
    writes_recover(&cache).await;
}
