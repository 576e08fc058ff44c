//! The cache over a real Sentinel set on loopback (one primary, one
//! replica, three sentinels counting the primary down after 500 ms): the
//! primary found through a `redis+sentinel://` URL, a failover by kill and
//! a graceful one, a sentinel that hangs.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fusebox::backend::{RedisBackend, RedisConfig};
use fusebox::cache::{Cache, Reason, Write};
use fusebox_testkit::RedisSentinel;

/// Every deadline, roomy for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_millis(200);

fn cache(set: &RedisSentinel) -> Cache<RedisBackend> {
    let config = RedisConfig::builder(set.url())
        .connect_timeout(DEADLINE)
        .checkout_timeout(DEADLINE)
        .response_timeout(DEADLINE)
        .build()
        .unwrap();
    Cache::builder()
        .name("sentinel")
        .redis(config)
        .build()
        .unwrap()
}

/// The longest a call may take: a checkout, then a response, plus room
/// for a busy machine.
fn bound() -> Duration {
    DEADLINE * 2 + Duration::from_millis(300)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sentinels_primary_is_the_one_written_and_read() {
    let set = RedisSentinel::start(1, 3);
    let cache = cache(&set);
    assert_eq!(cache.set("k", "v").await, Write::Done);
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v"[..]));
    let primary = set.primary().unwrap();
    assert_eq!(primary, 0);
    let stored = set.nodes()[primary].cmd(&["GET", "k"]);
    assert!(stored.contains('v'), "on the primary: {stored}");
}

/// One call: when it was made, a read or a write, its outcome, how long.
struct Call {
    at: Instant,
    write: bool,
    ok: bool,
    reason: Option<Reason>,
    took: Duration,
}

/// Readers and one writer over keys written (and replicated) first,
/// recording every call until [`finish`](Load::finish).
struct Load {
    cache: Cache<RedisBackend>,
    stop: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<Call>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(set: &RedisSentinel) -> Load {
        let cache = cache(set);
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        for key in &keys {
            assert_eq!(cache.set(key, "v").await, Write::Done);
        }
        // Replicated before any failover, so that the promoted replica has
        // them.
        set.nodes()[0].cmd(&["WAIT", "1", "2000"]);
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..5)
            .map(|t| {
                let (cache, keys) = (cache.clone(), keys.clone());
                let (stop, calls) = (stop.clone(), calls.clone());
                tokio::spawn(async move {
                    let write = t == 0;
                    let mut i = t * 37;
                    while !stop.load(Relaxed) {
                        let key = &keys[i % keys.len()];
                        let at = Instant::now();
                        let (ok, reason) = if write {
                            match cache.set(key, "v").await {
                                Write::Done | Write::Unchanged => (true, None),
                                Write::Skipped(r) => (false, Some(r)),
                            }
                        } else {
                            (cache.get(key).await.is_some(), None)
                        };
                        let took = at.elapsed();
                        calls.lock().unwrap().push(Call {
                            at,
                            write,
                            ok,
                            reason,
                            took,
                        });
                        i += 1;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        Load {
            cache,
            stop,
            calls,
            tasks,
        }
    }

    /// Two more seconds of load, then every call made.
    async fn finish(self) -> Vec<Call> {
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.stop.store(true, Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

/// Waits (off the runtime) until the sentinels name node 1 primary and it
/// says it is one; when that was seen.
async fn promotion(set: RedisSentinel) -> (Instant, RedisSentinel) {
    tokio::task::spawn_blocking(move || {
        let new = set.wait_failover(0, Duration::from_secs(20));
        assert_eq!(new, Some(1), "the replica promoted within 20 s");
        (Instant::now(), set)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_killed_reads_miss_fast_then_hit_on_the_promoted_replica() {
    let mut set = RedisSentinel::start(1, 3);
    let load = Load::start(&set).await;
    let cache = load.cache.clone();
    let killed = Instant::now();
    set.node_mut(0).kill();
    let (promoted_at, set) = promotion(set).await;
    let calls = load.finish().await;
    // The writes after the promotion go to the new primary.
    assert_eq!(cache.set("after", "new").await, Write::Done);
    assert!(set.nodes()[1].cmd(&["GET", "after"]).contains("new"));

    let reads = || calls.iter().filter(|c| !c.write);
    let slowest = calls.iter().map(|c| c.took).max().unwrap();
    let down: Vec<&Call> = reads()
        .filter(|c| c.at > killed && c.at + c.took < promoted_at)
        .collect();
    let fast = down
        .iter()
        .filter(|c| c.took < Duration::from_millis(5))
        .count();
    let first_hit = reads()
        .filter(|c| c.ok && c.at > promoted_at)
        .map(|c| c.at + c.took)
        .min()
        .expect("hits resume");
    let first_write = calls
        .iter()
        .filter(|c| c.write && c.ok && c.at > promoted_at)
        .map(|c| c.at + c.took)
        .min()
        .expect("writes resume");
    println!(
        "{} calls; slowest {slowest:?}; promotion {:?} after the kill; {fast} of {} reads while down answered in < 5 ms; \
         first hit {:?}, first write {:?} after the promotion was seen",
        calls.len(),
        promoted_at - killed,
        down.len(),
        first_hit.saturating_duration_since(promoted_at),
        first_write.saturating_duration_since(promoted_at),
    );
    assert!(slowest < bound(), "no call past the deadline: {slowest:?}");
    assert!(
        fast * 10 >= down.len() * 9,
        "while no primary answers, misses are fast ({fast} of {})",
        down.len()
    );
    assert!(
        first_hit.saturating_duration_since(promoted_at) < Duration::from_secs(1),
        "hits resume within 1 s of the promotion"
    );
    assert!(
        first_write.saturating_duration_since(promoted_at) < Duration::from_secs(1),
        "writes resume within 1 s of the promotion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_failover_sends_few_commands_to_the_demoted_primary() {
    let set = RedisSentinel::start(1, 3);
    let load = Load::start(&set).await;
    // The old primary stays up, demoted to a replica of the new one.
    let asked = set.sentinels()[0].cmd(&["SENTINEL", "FAILOVER", "fusebox"]);
    assert!(asked.contains("OK"), "{asked}");
    let (switched, set) = promotion(set).await;
    let calls = load.finish().await;
    let read_only = calls
        .iter()
        .filter(|c| c.reason == Some(Reason::ReadOnly))
        .count();
    let after: Vec<&Call> = calls
        .iter()
        .filter(|c| c.at > switched + Duration::from_secs(1))
        .collect();
    let after_ok = after.iter().filter(|c| c.ok).count();
    // What reached the demoted node: READONLY errors it answered.
    let errors = set.nodes()[0].cmd(&["INFO", "errorstats"]);
    let refused: u64 = errors
        .lines()
        .find_map(|l| l.strip_prefix("errorstat_READONLY:count="))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0);
    println!(
        "{} calls; {read_only} writes answered read_only; the demoted node answered READONLY {refused} times; \
         {after_ok}/{} calls ok from 1 s after the switch",
        calls.len(),
        after.len()
    );
    assert!(refused <= 5, "no READONLY storm: {refused}");
    assert!(
        after_ok * 100 >= after.len() * 99,
        "the new primary serves everything"
    );
    assert!(set.nodes()[1].cmd(&["ROLE"]).starts_with("master"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sentinel_does_not_hold_up_connecting() {
    let mut set = RedisSentinel::start(1, 3);
    // The first sentinel of the URL stops answering (SIGSTOP: it still
    // accepts connections).
    set.sentinel_mut(0).pause();
    let cache = cache(&set);
    let start = Instant::now();
    assert_eq!(cache.set("k", "v").await, Write::Done);
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v"[..]));
    let took = start.elapsed();
    set.sentinel_mut(0).resume();
    assert!(took < bound(), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sentinel_answering_is_a_fast_counted_miss() {
    let mut set = RedisSentinel::start(0, 1);
    set.sentinel_mut(0).kill();
    let cache = cache(&set);
    let start = Instant::now();
    assert_eq!(cache.get("k").await, None);
    assert!(start.elapsed() < bound());
    let Write::Skipped(reason) = cache.set("k", "v").await else {
        panic!("a write with no sentinel done");
    };
    assert!(
        matches!(reason, Reason::Io | Reason::NoPrimary | Reason::Unavailable),
        "{reason:?}"
    );
}

#[test]
fn sentinel_urls_are_checked_at_build() {
    for bad in [
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/",
        "redis+sentinel://127.0.0.1:0/svc",
        "redis+sentinel://:26379/svc",
        "redis+sentinel://h:notaport/svc",
    ] {
        let e = RedisConfig::builder(bad).build().unwrap_err();
        assert_eq!(e.field(), "url", "{bad}");
        assert!(!e.to_string().contains("26379/"), "never echoes the URL");
    }
    let ok = RedisConfig::builder("redis+sentinel://:s3cret@a,b:26380,[::1]:26381/svc/2")
        .build()
        .unwrap();
    assert_eq!(ok.addr(), "svc via a:26379,b:26380,::1:26381");
    assert!(!format!("{ok:?}").contains("s3cret"));
}
