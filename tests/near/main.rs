//! The near cache against real redis-server processes: invalidation by
//! another client's writes, a lost tracking connection, stale hits while
//! Redis is down (and never while it is up), and the build-time refusals.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fusebox::backend::{RedisBackend, RedisConfig};
use fusebox::cache::{Cache, Invalidation, NearCache, NearStats, Write};
use fusebox_testkit::RedisServer;

mod trust;

/// Every deadline, roomy for a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_millis(200);
/// The longest any awaited condition may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// `server` with [`DEADLINE`] for every wait.
fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig::builder(server.url())
        .connect_timeout(DEADLINE)
        .checkout_timeout(DEADLINE)
        .response_timeout(DEADLINE)
        .build()
        .unwrap()
}

fn near_cache(server: &RedisServer, near: NearCache) -> Cache<RedisBackend> {
    let config = config(server);
    Cache::builder()
        .name("near")
        .prefix("n:")
        .near_cache(near)
        .redis(config)
        .build()
        .unwrap()
}

fn stats(cache: &Cache<RedisBackend>) -> NearStats {
    cache.near_stats().expect("a near cache")
}

/// Waits (bounded) until `done` holds of the cache's stats.
async fn until(cache: &Cache<RedisBackend>, what: &str, done: impl Fn(&NearStats) -> bool) {
    let start = Instant::now();
    while !done(&stats(cache)) {
        assert!(
            start.elapsed() < PATIENCE,
            "waited {PATIENCE:?} for {what}: {:?}",
            stats(cache)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reads `key` until it is `want` (bounded); how long that took.
async fn read_until(cache: &Cache<RedisBackend>, key: &str, want: Option<&str>) -> Duration {
    let start = Instant::now();
    loop {
        let got = cache.get(key).await;
        if got.as_deref() == want.map(str::as_bytes) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{key}: still {got:?}, not {want:?}"
        );
        tokio::task::yield_now().await;
    }
}

/// Another client's command, answered `OK` or with an integer.
async fn send(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(conn).await.unwrap();
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Reads `key` until a read comes from L1 (bounded), each read `want`.
/// (Right after this cache's own write, the invalidation Redis sends for
/// it may land after the first read filled L1, and take that entry.)
async fn in_l1(cache: &Cache<RedisBackend>, key: &str, want: &str) {
    let start = Instant::now();
    loop {
        let before = stats(cache).l1_hits;
        assert_eq!(cache.get(key).await.as_deref(), Some(want.as_bytes()));
        if stats(cache).l1_hits > before {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{key} never from L1: {:?}",
            stats(cache)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_set_and_del_remove_the_l1_copy() {
    let server = RedisServer::start(&[]);
    let cache = near_cache(&server, NearCache::new());
    until(&cache, "tracking", |s| s.fresh).await;
    assert_eq!(cache.set("k", "v1").await, Write::Done);
    in_l1(&cache, "k", "v1").await;

    let mut other = raw(&server).await;
    send(&mut other, &["SET", "n:k", "v2"]).await;
    let took = read_until(&cache, "k", Some("v2")).await;
    in_l1(&cache, "k", "v2").await;
    send(&mut other, &["DEL", "n:k"]).await;
    let gone = read_until(&cache, "k", None).await;
    assert!(stats(&cache).invalidations >= 2, "{:?}", stats(&cache));
    eprintln!("SET seen after {took:?}, DEL after {gone:?}");

    // Written again and read into L1: the next change removes it again.
    send(&mut other, &["SET", "n:k", "v3"]).await;
    read_until(&cache, "k", Some("v3")).await;
    in_l1(&cache, "k", "v3").await;
    let before = stats(&cache).invalidations;
    send(&mut other, &["SET", "n:k", "v4"]).await;
    until(&cache, "the n:k invalidation", |s| s.invalidations > before).await;
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v4"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_tracking_connection_is_killed_no_entry_is_served_as_fresh() {
    let server = RedisServer::start(&[]);
    let cache = near_cache(&server, NearCache::new());
    until(&cache, "tracking", |s| s.fresh).await;
    assert_eq!(cache.set("k", "old").await, Write::Done);
    in_l1(&cache, "k", "old").await;

    // Kill the tracking connection and change the key in one pipeline: the
    // change comes after the kill, so its invalidation reaches nobody.
    let list = server.cmd(&["CLIENT", "LIST"]);
    let id = list
        .lines()
        .find(|l| l.contains("name=fusebox-tracking"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|f| f.strip_prefix("id="))
        .unwrap_or_else(|| panic!("no tracking connection in {list}"))
        .to_owned();
    let mut other = raw(&server).await;
    let (killed, ()): (u64, ()) = redis::pipe()
        .cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .cmd("SET")
        .arg("n:k")
        .arg("new")
        .query_async(&mut other)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    until(&cache, "the loss to be seen", |s| s.tracking_lost >= 1).await;
    // The very first read after the loss is the new value, whether or not
    // tracking is back already.
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"new"[..]));

    // Once tracking is back, L1 serves again, and invalidations work.
    until(&cache, "tracking again", |s| s.fresh).await;
    in_l1(&cache, "k", "new").await;
    send(&mut other, &["SET", "n:k", "newer"]).await;
    read_until(&cache, "k", Some("newer")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_l1_serves_stale_within_its_limit_and_says_so() {
    let mut server = RedisServer::start(&[]);
    let cache = near_cache(&server, NearCache::new());
    let strict = near_cache(&server, NearCache::new().stale_for(Duration::ZERO));
    until(&cache, "tracking", |s| s.fresh).await;
    until(&strict, "tracking", |s| s.fresh).await;
    // One key for both (one prefix): written once, then read into each L1.
    assert_eq!(cache.set("page", "<html>").await, Write::Done);
    for c in [&cache, &strict] {
        in_l1(c, "page", "<html>").await;
    }
    server.kill();
    until(&cache, "the loss to be seen", |s| !s.fresh).await;
    until(&strict, "the loss to be seen", |s| !s.fresh).await;
    for _ in 0..50 {
        let start = Instant::now();
        assert_eq!(cache.get("page").await.as_deref(), Some(&b"<html>"[..]));
        assert!(start.elapsed() < DEADLINE * 2 + Duration::from_millis(300));
        assert_eq!(
            strict.get("page").await,
            None,
            "stale_for(0) serves nothing stale"
        );
    }
    assert_eq!(stats(&cache).stale, 50, "{:?}", stats(&cache));
    assert_eq!(stats(&strict).stale, 0);
    // A loader that fails too: the stale value, not the error.
    let loaded = cache
        .get_or_load("page", || async { Err::<&str, _>("database down") })
        .await;
    assert_eq!(loaded.as_deref(), Ok(&b"<html>"[..]));

    // Back, empty (it kept nothing): Redis' answer wins, never the stale copy.
    server.restart();
    read_until(&cache, "page", None).await;
    assert_eq!(cache.get("page").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_value_is_never_served_while_redis_is_healthy() {
    let server = RedisServer::start(&[]);
    let cache = near_cache(
        &server,
        NearCache::new().lifetime(Duration::from_millis(50)),
    );
    until(&cache, "tracking", |s| s.fresh).await;
    const KEYS: u64 = 8;
    let mut other = raw(&server).await;
    for k in 0..KEYS {
        send(&mut other, &["SET", &format!("n:{k}"), "0"]).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(0));
    // Another client rewrites every key, with a rising version.
    let writer = {
        let (stop, last, mut other) = (stop.clone(), last.clone(), other.clone());
        tokio::spawn(async move {
            let mut v = 0u64;
            while !stop.load(Relaxed) {
                v += 1;
                for k in 0..KEYS {
                    send(&mut other, &["SET", &format!("n:{k}"), &v.to_string()]).await;
                }
                last.store(v, Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (cache, stop) = (cache.clone(), stop.clone());
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(Relaxed) {
                    let k = (reads + r) % KEYS;
                    let v = cache.get(k.to_string()).await.expect("every key is there");
                    let v: u64 = std::str::from_utf8(&v).unwrap().parse().unwrap();
                    assert!(v <= u64::MAX / 2);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Relaxed);
    writer.await.unwrap();
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    let s = stats(&cache);
    assert_eq!(s.stale, 0, "{s:?}");
    assert_eq!(s.misses, 0, "{s:?}");
    assert!(s.l1_hits > 0 && s.hits > 0, "{s:?}");
    // Writes stopped: every key reads its last version.
    let final_version = last.load(Relaxed).to_string();
    for k in 0..KEYS {
        read_until(&cache, &k.to_string(), Some(&final_version)).await;
    }
    eprintln!("{reads} reads: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caches_own_writes_never_leave_the_old_value_in_l1() {
    let server = RedisServer::start(&[]);
    let cache = near_cache(&server, NearCache::new());
    until(&cache, "tracking", |s| s.fresh).await;
    assert_eq!(cache.set("k", "1").await, Write::Done);
    in_l1(&cache, "k", "1").await;
    assert_eq!(cache.set("k", "2").await, Write::Done);
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"2"[..]));
    assert_eq!(cache.delete("k").await, Write::Done);
    assert_eq!(cache.get("k").await, None);
    assert_eq!(
        cache.set_with_ttl("k", "3", Duration::from_secs(60)).await,
        Write::Done
    );
    in_l1(&cache, "k", "3").await;
    assert_eq!(
        cache.expire("k", Duration::from_millis(1)).await,
        Write::Done
    );
    read_until(&cache, "k", None).await;
    // get_many: fresh entries from L1, the rest from Redis.
    assert_eq!(cache.set("a", "A").await, Write::Done);
    assert_eq!(cache.set("b", "B").await, Write::Done);
    in_l1(&cache, "a", "A").await;
    let many = cache.get_many(["a", "b", "c"]).await;
    assert_eq!(
        many,
        vec![Some(Bytes::from("A")), Some(Bytes::from("B")), None]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_lives_in_l1_no_longer_than_in_redis() {
    let server = RedisServer::start(&[]);
    let cache = near_cache(
        &server,
        NearCache::new().invalidation(Invalidation::Lifetime),
    );
    assert_eq!(
        cache
            .set_with_ttl("k", "v", Duration::from_millis(300))
            .await,
        Write::Done
    );
    in_l1(&cache, "k", "v").await;
    // No tracking: only its Redis TTL (read with the value) ends it.
    let gone = read_until(&cache, "k", None).await;
    assert!(gone < Duration::from_secs(2), "{gone:?}");
}

#[tokio::test]
async fn tracking_that_cannot_work_is_refused_at_build() {
    let refused = |b: fusebox::cache::CacheBuilder<_>| b.build().map(|_| ()).unwrap_err();
    let resp2 = Cache::builder()
        .near_cache(NearCache::new())
        .redis_url("redis://127.0.0.1:6379/?protocol=resp2");
    let e = refused(resp2);
    assert_eq!(e.field(), "near_cache");
    assert!(e.to_string().contains("RESP3"), "{e}");
    let bad = Cache::builder()
        .near_cache(NearCache::new().max_bytes(0))
        .redis_url("redis://127.0.0.1:1");
    assert_eq!(refused(bad).field(), "near_cache");
    // An explicit choice without tracking builds over RESP2.
    let lifetime = Cache::builder()
        .near_cache(NearCache::new().invalidation(Invalidation::Lifetime))
        .redis_url("redis://127.0.0.1:1/?protocol=resp2")
        .build();
    assert!(lifetime.is_ok());
}

#[test]
fn tracking_needs_a_runtime_and_a_redis_to_track() {
    let e = Cache::builder()
        .near_cache(NearCache::new())
        .redis_url("redis://127.0.0.1:1")
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("runtime"), "{e}");
    let backend = RedisBackend::new(RedisConfig::builder("redis://127.0.0.1:1").build().unwrap());
    let e = Cache::builder()
        .near_cache(NearCache::new())
        .backend(backend)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("TrackingUrl"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refresh_loads_a_hot_key_before_it_expires_once_at_a_time() {
    let server = RedisServer::start(&[]);
    let config = RedisConfig::builder(server.url())
        .connect_timeout(DEADLINE)
        .checkout_timeout(DEADLINE)
        .response_timeout(DEADLINE)
        .build()
        .unwrap();
    // A 1 s TTL, refreshed in its last half: with 8 callers reading all
    // the time, the key never expires, and loads never overlap.
    let cache = Cache::builder()
        .prefix("early:")
        .default_ttl(Duration::from_secs(1))
        .early_refresh(0.5)
        .redis(config)
        .build()
        .unwrap();
    let loads = Arc::new(AtomicU64::new(0));
    // Loads that found the key gone from Redis: callers that missed.
    let after_expiry = Arc::new(AtomicU64::new(0));
    let loading = Arc::new(AtomicBool::new(false));
    let overlapped = Arc::new(AtomicBool::new(false));
    let conn = raw(&server).await;
    let load = {
        let (loads, after_expiry, loading, overlapped) = (
            loads.clone(),
            after_expiry.clone(),
            loading.clone(),
            overlapped.clone(),
        );
        move || {
            let (loads, after_expiry, loading, overlapped, mut conn) = (
                loads.clone(),
                after_expiry.clone(),
                loading.clone(),
                overlapped.clone(),
                conn.clone(),
            );
            async move {
                if loading.swap(true, Relaxed) {
                    overlapped.store(true, Relaxed);
                }
                let n = loads.fetch_add(1, Relaxed);
                let exists: u64 = redis::cmd("EXISTS")
                    .arg("early:hot")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                if n > 0 && exists == 0 {
                    after_expiry.fetch_add(1, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                loading.store(false, Relaxed);
                Ok::<_, std::io::Error>("page")
            }
        }
    };
    // The first load, alone: every load after it should be a refresh.
    assert_eq!(
        cache.get_or_load("hot", load.clone()).await.unwrap(),
        "page"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (cache, load, stop) = (cache.clone(), load.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    let v = cache.get_or_load("hot", load.clone()).await.unwrap();
                    assert_eq!(v, "page");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    let loads = loads.load(Relaxed);
    assert!(!overlapped.load(Relaxed), "two loads at once");
    // 3 s of a 1 s TTL refreshed in its last 0.5 s: one first load, then a
    // refresh every 0.5-1 s.
    assert!((3..=8).contains(&loads), "{loads} loads");
    // No caller missed: every load after the first found the key still
    // there (a refresh), none found it expired (a stampede's load).
    assert_eq!(
        after_expiry.load(Relaxed),
        0,
        "loads after the key expired ({loads} loads)"
    );
    let ttl = server.cmd(&["PTTL", "early:hot"]);
    assert!(!ttl.contains('-'), "the key is still there: {ttl}");
}
