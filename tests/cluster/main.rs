//! The cache over a real Redis Cluster on loopback (3 primaries, each with
//! a replica, `cluster-node-timeout 1000`): every shard reached, one
//! primary killed under load, its replica promoted.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fusebox::backend::ClusterBackend;
use fusebox::breaker::State;
use fusebox::cache::{Cache, Write};
use fusebox_testkit::RedisCluster;

mod coverage;
mod edges;
mod guard;
mod watchdog;

const DEADLINE: Duration = Duration::from_millis(200);

fn cluster() -> RedisCluster {
    RedisCluster::start(3, 1, &["--cluster-require-full-coverage", "no"])
}

fn cache(cluster: &RedisCluster) -> (Cache<ClusterBackend>, ClusterBackend) {
    let backend = ClusterBackend::new(cluster.urls(), DEADLINE).unwrap();
    let cache = Cache::builder()
        .name("cluster")
        .backend(backend.clone())
        .build()
        .unwrap();
    (cache, backend)
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_reaches_every_shard_and_multi_key_calls_split_by_slot() {
    let cluster = cluster();
    let (cache, backend) = cache(&cluster);
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    for key in &keys {
        assert_eq!(cache.set(key, key.clone()).await, Write::Done, "{key}");
    }
    // Every primary holds some, and the backend's map agrees with Redis
    // on who owns each key (slot computation and map alike).
    let mut owners = std::collections::HashSet::new();
    for key in &keys {
        let redis_says = cluster.primary_of(key).expect("an owner");
        let ours = backend.primary_of(key.as_bytes()).expect("mapped");
        assert_eq!(port_of(&ours), cluster.nodes()[redis_says].port(), "{key}");
        owners.insert(redis_says);
        assert_eq!(cache.get(key).await.as_deref(), Some(key.as_bytes()));
    }
    assert_eq!(owners.len(), 3, "keys on every primary");
    // Keys of many slots in one call: split, answered, in order.
    let mut asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    asked.push("absent");
    let values = cache.get_many(&asked).await;
    assert_eq!(values.len(), 101);
    for (key, value) in asked.iter().zip(&values) {
        let expected = (*key != "absent").then_some(key.as_bytes());
        assert_eq!(value.as_deref(), expected, "{key}");
    }
    assert_eq!(cache.delete_many(&asked).await, Write::Done);
    assert_eq!(cache.get("k1").await, None);
    assert_eq!(cache.breaker().state(), State::Closed);
}

/// One read: when it was made, on which shard, a hit or not, how long.
struct Read {
    at: Instant,
    victim: bool,
    hit: bool,
    took: Duration,
}

/// 300 keys written, and the primary of `k0`, to be killed.
struct Seeded {
    keys: Vec<String>,
    victim: usize,
    victim_slot: u16,
    /// Whether each key lives on the victim.
    on_victim: Vec<bool>,
}

async fn seed(cluster: &RedisCluster, cache: &Cache<ClusterBackend>) -> Seeded {
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for key in &keys {
        assert_eq!(cache.set(key, "v").await, Write::Done);
    }
    let victim = cluster.primary_of("k0").unwrap();
    let on_victim = keys
        .iter()
        .map(|k| cluster.primary_of(k) == Some(victim))
        .collect();
    Seeded {
        keys,
        victim,
        victim_slot: cluster.slot_of("k0"),
        on_victim,
    }
}

/// Eight readers of `keys` (`on_victim` says which live on the shard to be
/// killed), recording every read until `stop`.
fn readers(
    cache: &Cache<ClusterBackend>,
    keys: &[String],
    on_victim: &[bool],
    stop: &Arc<AtomicBool>,
    reads: &Arc<Mutex<Vec<Read>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|r| {
            let (cache, keys, on_victim) = (cache.clone(), keys.to_vec(), on_victim.to_vec());
            let (stop, reads) = (stop.clone(), reads.clone());
            tokio::spawn(async move {
                let mut i = r * 37;
                while !stop.load(Relaxed) {
                    let k = i % keys.len();
                    let start = Instant::now();
                    let hit = cache.get(&keys[k]).await.is_some();
                    let read = Read {
                        at: start,
                        victim: on_victim[k],
                        hit,
                        took: start.elapsed(),
                    };
                    reads.lock().unwrap().push(read);
                    i += 1;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_primary_killed_only_its_keys_miss_and_they_hit_again_after_promotion() {
    let mut cluster = cluster();
    let (cache, backend) = cache(&cluster);
    let Seeded {
        keys,
        victim,
        victim_slot,
        on_victim,
    } = seed(&cluster, &cache).await;
    let victim_addr = backend.primary_of(b"k0").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(Mutex::new(Vec::new()));
    let readers = readers(&cache, &keys, &on_victim, &stop, &reads);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    cluster.node_mut(victim).kill();
    // Wait for a replica to take the slot over, as the live nodes see it.
    let promoted = tokio::task::spawn_blocking({
        move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(owner) = cluster.primary_of_slot(victim_slot) {
                    if owner != victim {
                        return (Instant::now(), cluster);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("no replica promoted within 20 s");
        }
    })
    .await
    .unwrap();
    let (promoted_at, _cluster) = promoted;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }

    let reads = reads.lock().unwrap();
    let others: Vec<&Read> = reads.iter().filter(|r| !r.victim).collect();
    let other_hits = others.iter().filter(|r| r.hit).count();
    let slowest = reads.iter().map(|r| r.took).max().unwrap();
    let fast_misses = reads
        .iter()
        .filter(|r| r.victim && r.at > killed && r.at < promoted_at && !r.hit)
        .filter(|r| r.took < Duration::from_millis(5))
        .count();
    let back = reads
        .iter()
        .filter(|r| r.victim && r.hit && r.at > promoted_at)
        .map(|r| r.at + r.took)
        .min()
        .expect("the victim's keys hit again");
    println!(
        "{} reads; other shards {other_hits}/{} hits; slowest {slowest:?}; promotion {:?} after the kill; \
         victim's keys: {fast_misses} fast misses while down, first hit {:?} after the promotion was seen",
        reads.len(),
        others.len(),
        promoted_at - killed,
        back.saturating_duration_since(promoted_at),
    );
    assert!(
        other_hits * 100 >= others.len() * 99,
        "other shards keep hitting"
    );
    assert!(
        slowest < DEADLINE * 2 + Duration::from_millis(300),
        "{slowest:?}"
    );
    assert!(fast_misses > 0, "the victim's breaker opened");
    assert!(
        back.saturating_duration_since(promoted_at) < Duration::from_secs(1),
        "hits resume within 1 s of the promotion"
    );
    assert_eq!(
        cache.breaker().state(),
        State::Closed,
        "one shard never opens the cache"
    );
    // The old primary's circuit stays with the old primary.
    assert_ne!(backend.primary_of(b"k0").unwrap(), victim_addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_down_every_call_misses_in_bounded_time_then_hits_resume() {
    let mut cluster = cluster();
    let (cache, _backend) = cache(&cluster);
    assert_eq!(cache.set("k", "v").await, Write::Done);
    for i in 0..cluster.nodes().len() {
        cluster.node_mut(i).kill();
    }
    let mut fast = 0;
    for i in 0..50 {
        let start = Instant::now();
        assert_eq!(cache.get(format!("k{i}")).await, None);
        let took = start.elapsed();
        assert!(took < DEADLINE * 2 + Duration::from_millis(300), "{took:?}");
        if took < Duration::from_millis(5) {
            fast += 1;
        }
    }
    assert!(
        fast > 25,
        "open shard breakers answer at once ({fast} of 50)"
    );
    // Every node back on its port, with its nodes.conf: the same cluster.
    for i in 0..cluster.nodes().len() {
        cluster.node_mut(i).restart();
    }
    assert!(
        cluster.wait_ok(Duration::from_secs(20)),
        "the cluster reforms"
    );
    let mut back = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !back && Instant::now() < deadline {
        back = cache.set("k", "v").await == Write::Done && cache.get("k").await.is_some();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "hits resume once the cluster is back");
}

/// The setting that turns one shard's failure into the whole cluster's is
/// named by the watchdog, and the warning clears once it is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_warns_while_full_coverage_is_required() {
    use fusebox::watchdog::{Warning, Watchdog};

    let cluster = RedisCluster::start(3, 0, &[]);
    let node = &cluster.nodes()[0];
    let watchdog = Watchdog::builder()
        .interval(Duration::from_millis(50))
        .redis_url(node.url())
        .build()
        .unwrap();
    let warned = |want: bool| {
        let watchdog = &watchdog;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let has = watchdog
                    .report()
                    .warnings
                    .contains(&Warning::FullCoverageRequired);
                if has == want {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    };
    assert!(warned(true).await, "the default `yes` is warned about");
    node.cmd(&["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
    assert!(warned(false).await, "and `no` is not");
}

/// A slot moved with `CLUSTER SETSLOT` and `MIGRATE` while readers read
/// it: the `ASK` window and the `MOVED` after it are the client's to
/// follow; callers see no wrong value and (almost) no miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migrated_under_load_serves_no_wrong_value() {
    let cluster = RedisCluster::start(3, 0, &["--cluster-require-full-coverage", "no"]);
    let (cache, backend) = cache(&cluster);
    // Keys sharing one slot (a hash tag), and keys elsewhere.
    let keys: Vec<String> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                format!("{{moving}}:{i}")
            } else {
                format!("k{i}")
            }
        })
        .collect();
    for key in &keys {
        assert_eq!(cache.set(key, key.clone()).await, Write::Done);
    }
    let slot = cluster.slot_of("{moving}");
    let source = cluster.primary_of_slot(slot).unwrap();
    let target = (source + 1) % 3;
    let id = |i: usize| cluster.nodes()[i].cmd(&["CLUSTER", "MYID"]);
    let (source_id, target_id) = (id(source), id(target));

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new((0usize, 0usize, Vec::new())));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (cache, keys, stop, tally) =
                (cache.clone(), keys.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let mut i = r;
                while !stop.load(Relaxed) {
                    let key = &keys[i % keys.len()];
                    let got = cache.get(key).await;
                    {
                        let mut t = tally.lock().unwrap();
                        t.0 += 1;
                        match got {
                            Some(v) if v == key.as_bytes() => {}
                            Some(v) => t.2.push(format!("{key} read {v:?}")),
                            None => t.1 += 1,
                        }
                    }
                    i += 1;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slot_arg = slot.to_string();
    let (s, t) = (&cluster.nodes()[source], &cluster.nodes()[target]);
    t.cmd(&["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &source_id]);
    s.cmd(&["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &target_id]);
    let target_port = t.port().to_string();
    loop {
        let batch = s.cmd(&["CLUSTER", "GETKEYSINSLOT", &slot_arg, "10"]);
        let moving: Vec<&str> = batch.lines().filter(|l| !l.is_empty()).collect();
        if moving.is_empty() {
            break;
        }
        let mut migrate = vec![
            "MIGRATE",
            "127.0.0.1",
            &target_port,
            "",
            "0",
            "5000",
            "KEYS",
        ];
        migrate.extend(&moving);
        assert!(s.cmd(&migrate).contains("OK"), "MIGRATE");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for node in cluster.nodes() {
        node.cmd(&["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target_id]);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let (reads, misses, wrong) = std::mem::take(&mut *tally.lock().unwrap());
    println!("{reads} reads across the migration, {misses} misses");
    assert!(wrong.is_empty(), "wrong values: {wrong:?}");
    assert!(misses * 100 <= reads, "{misses} misses of {reads}");
    // Our map follows the slot to its new owner.
    let owner = backend.primary_of(b"{moving}").unwrap();
    assert_eq!(port_of(&owner), cluster.nodes()[target].port());
    assert_eq!(cache.breaker().state(), State::Closed);
}

/// The deadline at its extremes: zero is refused when built, and
/// `Duration::MAX` builds and still answers a refused connection at once.
#[tokio::test]
async fn the_deadline_at_its_extremes() {
    let err = ClusterBackend::new(["redis://127.0.0.1:1"], Duration::ZERO).unwrap_err();
    assert_eq!((err.builder(), err.field()), ("cluster", "deadline"));
    let err = ClusterBackend::new(Vec::<String>::new(), DEADLINE).unwrap_err();
    assert_eq!(err.field(), "nodes");
    let port = fusebox_testkit::free_port();
    let backend =
        ClusterBackend::new([format!("redis://127.0.0.1:{port}")], Duration::MAX).unwrap();
    let cache = Cache::builder().backend(backend).build().unwrap();
    for _ in 0..3 {
        let start = Instant::now();
        assert_eq!(cache.get("k").await, None);
        assert!(start.elapsed() < Duration::from_secs(5), "refused at once");
    }
}

/// One shard full under `noeviction`: its writes are refused, then shed
/// unsent for the hold-down; the other shards keep taking theirs (a
/// cache-wide hold-down would shed every shard's writes for one shard's
/// `OOM`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_full_shard_holds_down_its_own_writes_only() {
    let cluster = RedisCluster::start(3, 0, &["--cluster-require-full-coverage", "no"]);
    let (cache, _backend) = cache(&cluster);
    // Filled well past a limit then set below it: every write is refused.
    let full = cluster.primary_of("{full}").unwrap();
    let value = "x".repeat(64 * 1024);
    for i in 0..32 {
        cluster.nodes()[full].cmd(&["SET", &format!("{{full}}:{i}"), &value]);
    }
    cluster.nodes()[full].cmd(&["CONFIG", "SET", "maxmemory", "1mb"]);
    let keys: Vec<(String, bool)> = (0..300)
        .map(|i| {
            let key = format!("w{i}");
            let on_full = cluster.primary_of(&key) == Some(full);
            (key, on_full)
        })
        .collect();
    let (mut refused, mut others_done, mut others) = (0, 0, 0);
    for (key, on_full) in &keys {
        match (cache.set(key, "v").await, on_full) {
            (Write::Skipped(fusebox::cache::Reason::OutOfMemory), true) => refused += 1,
            (Write::Done, false) => others_done += 1,
            (outcome, on_full) => panic!("{key} (on the full shard: {on_full}): {outcome:?}"),
        }
        others += usize::from(!on_full);
    }
    let stats = cluster.nodes()[full].cmd(&["INFO", "errorstats"]);
    let sent_and_refused: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("errorstat_OOM:count="))
        .map_or(0, |n| n.trim().parse().unwrap());
    println!(
        "{refused} writes to the full shard skipped (OOM answered {sent_and_refused} times, the fill's own included); {others_done}/{others} to the others done"
    );
    assert_eq!(others_done, others, "the other shards take every write");
    assert!(refused > 50);
    assert!(
        sent_and_refused <= 3,
        "the full shard's writes were held down, not sent: {sent_and_refused}"
    );
    // Reads of every shard go on.
    assert_eq!(cache.get("w1").await.is_some(), !keys[1].1);
}

/// A primary that hangs (SIGSTOP: connections accepted, nothing answered)
/// and then resumes: its keys miss within the deadline, the other shards
/// keep hitting, and its keys hit again once it answers (the deadline is
/// the only timer: redis-rs's own per-call timeouts are off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_primary_misses_within_the_deadline_then_hits_when_it_resumes() {
    let mut cluster = RedisCluster::start(3, 0, &["--cluster-require-full-coverage", "no"]);
    let (cache, _backend) = cache(&cluster);
    let seeded = seed(&cluster, &cache).await;
    let other = seeded.on_victim.iter().position(|v| !v).unwrap();
    cluster.node_mut(seeded.victim).pause();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let start = Instant::now();
        assert_eq!(cache.get(&seeded.keys[0]).await, None);
        slowest = slowest.max(start.elapsed());
        assert!(
            cache.get(&seeded.keys[other]).await.is_some(),
            "another shard"
        );
    }
    assert!(
        slowest < DEADLINE * 2 + Duration::from_millis(300),
        "{slowest:?}"
    );
    cluster.node_mut(seeded.victim).resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.get(&seeded.keys[0]).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the resumed primary's keys hit again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
