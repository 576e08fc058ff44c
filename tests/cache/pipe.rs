//! Batches over the connection of their own (`fusebox-batch` in `CLIENT
//! LIST`): it logs in as the shared one does, and when it is killed,
//! stopped, refused or its runtime dropped, every caller is answered in
//! time and hits come back.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fusebox::backend::{RedisConfig, RedisConfigBuilder};
use fusebox::cache::Cache;

use crate::common::{calls, RedisServer};

/// What each call is given to be answered in.
const DEADLINE: Duration = Duration::from_secs(1);

/// One connection of each kind, deadlines that fit a loaded machine.
fn builder(url: String) -> RedisConfigBuilder {
    RedisConfig::builder(url)
        .connect_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_millis(500))
        .response_timeout(DEADLINE)
        .connections(1)
}

fn config(url: String) -> RedisConfig {
    builder(url).build().unwrap()
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("value of k{i}"))
}

/// The `CLIENT LIST` lines of the batch connections.
fn pipes(list: &str) -> Vec<String> {
    list.lines()
        .filter(|l| l.contains("name=fusebox-batch "))
        .map(str::to_owned)
        .collect()
}

/// The `id=` of a `CLIENT LIST` line.
fn id(line: &str) -> String {
    line.split(' ')
        .find_map(|f| f.strip_prefix("id="))
        .expect("an id")
        .to_owned()
}

/// 128 tasks at once, each getting `k{i}`: whether each got its value.
async fn all_hit(cache: &Cache) -> bool {
    let tasks: Vec<_> = (0..128)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(format!("k{i}")).await == Some(value(i)) })
        })
        .collect();
    let mut all = true;
    for t in tasks {
        all &= tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("no caller waits past its deadline")
            .unwrap();
    }
    all
}

/// Waits (10 s at most) until a burst of gets all hit.
async fn until_all_hit(cache: &Cache, when: &str) {
    let start = tokio::time::Instant::now();
    while !all_hit(cache).await {
        assert!(start.elapsed() < Duration::from_secs(10), "no hits {when}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fill(cache: &Cache) {
    for i in 0..128 {
        assert!(cache.set(format!("k{i}"), value(i)).await.is_done());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_log_in_and_select_the_database_as_the_shared_connection_does() {
    let redis = RedisServer::start(&["--requirepass", "admin-secret"]);
    let admin = |args: &[&str]| redis.cmd_auth("admin-secret", args);
    admin(&["ACL", "SETUSER", "app", "on", ">app-secret", "~*", "+@all"]);
    let url = format!("redis://app:app-secret@127.0.0.1:{}/5", redis.port());
    let cache = Cache::builder()
        .name("pipe-login")
        .redis(config(url))
        .build()
        .unwrap();
    fill(&cache).await;
    for _ in 0..5 {
        assert!(all_hit(&cache).await);
    }
    let list = admin(&["CLIENT", "LIST"]);
    let batch = pipes(&list);
    // One for the reads (the sets, one at a time, went alone).
    assert_eq!(batch.len(), 1, "{list}");
    for line in &batch {
        assert!(
            line.contains(" db=5 ") && line.contains(" user=app "),
            "{line}"
        );
    }
    assert!(admin(&["INFO", "commandstats"]).contains("cmdstat_mget:calls="));
    assert!(admin(&["INFO", "keyspace"]).contains("db5:keys=128"));
    // Dropped with the cache: no task or socket outlives it (the batch
    // connections, nor the connections beside them, which the batch
    // connections hold to fall back on).
    drop(cache);
    let start = std::time::Instant::now();
    loop {
        let list = admin(&["CLIENT", "LIST"]);
        // Only this `CLIENT LIST`'s own connection is left.
        if list.lines().filter(|l| l.starts_with("id=")).count() == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "left open: {list}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn under_steady_load_calls_join_the_next_batch_rather_than_go_alone() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("pipe-steady")
        .redis(config(redis.url()))
        .build()
        .unwrap();
    fill(&cache).await;
    // 64 callers, 50 gets each, one after another.
    let tasks: Vec<_> = (0..64usize)
        .map(|t| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for n in 0..50 {
                    let i = (t + 64 * n) % 128;
                    assert_eq!(cache.get(format!("k{i}")).await, Some(value(i)));
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("bounded")
            .unwrap();
    }
    // The first few go alone, while the batch connection is idle; after
    // that a caller finds it busy and joins the next batch. (Were the
    // callers that went alone to keep finding a turn free, they would go
    // alone every time: 4 × 50.)
    let alone = calls(&redis, "get");
    assert!(alone < 64, "{alone} of 3 200 gets went alone");
    assert!(calls(&redis, "mget") > 0);
}

/// How long Redis is stopped (`SIGSTOP`).
const STOPPED: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_connection_killed_or_stopped_mid_batch_answers_in_time_and_hits_return() {
    let mut redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("pipe-kill")
        .redis(config(redis.url()))
        .build()
        .unwrap();
    fill(&cache).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..64usize)
        .map(|t| {
            let (cache, stop, done) = (cache.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let (mut wrong, mut slowest, mut n) = (0, Duration::ZERO, t);
                while !stop.load(Relaxed) {
                    let i = n % 128;
                    let start = tokio::time::Instant::now();
                    let got = cache.get(format!("k{i}")).await;
                    slowest = slowest.max(start.elapsed());
                    wrong += usize::from(got.is_some_and(|v| v != value(i)));
                    done.fetch_add(1, Relaxed);
                    n += 64;
                    tokio::task::yield_now().await;
                }
                (wrong, slowest)
            })
        })
        .collect();
    let progress = |count: u64| {
        let done = done.clone();
        async move {
            let start = tokio::time::Instant::now();
            while done.load(Relaxed) < count {
                assert!(start.elapsed() < Duration::from_secs(30), "callers stuck");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    progress(5_000).await;
    // Killed by Redis with batches in flight: the one the reads go on.
    let list = redis.cmd(&["CLIENT", "LIST"]);
    let first: Vec<String> = pipes(&list)
        .into_iter()
        .filter(|l| l.contains(" cmd=mget ") || l.contains(" cmd=get "))
        .collect();
    assert_eq!(first.len(), 1, "{list}");
    let others: Vec<String> = list
        .lines()
        .filter(|l| l.contains(" name= ") && !l.contains(" cmd=client|list "))
        .map(id)
        .collect();
    assert_eq!(others.len(), 2, "the read and write connections: {list}");
    redis.cmd(&["CLIENT", "KILL", "ID", &id(&first[0])]);
    progress(done.load(Relaxed) + 5_000).await;
    // The connection beside it is not trusted either (Redis may have
    // restarted): replaced too.
    let start = tokio::time::Instant::now();
    loop {
        let list = redis.cmd(&["CLIENT", "LIST"]);
        if others.iter().any(|o| !list.contains(&format!("id={o} "))) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stopped well past the deadline with batches in flight and queued.
    redis.pause();
    tokio::time::sleep(STOPPED).await;
    redis.resume();
    progress(done.load(Relaxed) + 5_000).await;
    stop.store(true, Relaxed);
    for t in tasks {
        let (wrong, slowest) = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(wrong, 0, "a wrong value");
        // Within the deadline, with room for a loaded machine, and well
        // before Redis answered again.
        assert!(slowest < STOPPED - DEADLINE, "a call took {slowest:?}");
    }
    // Hits come back once the breaker, opened by the stop, lets calls
    // through again.
    until_all_hit(&cache, "after the stop").await;
    let last = pipes(&redis.cmd(&["CLIENT", "LIST"]));
    assert!(last.len() <= 2, "no batch connection left behind: {last:?}");
    assert!(last.iter().all(|l| id(l) != id(&first[0])), "remade");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_room_for_a_batch_connection_calls_go_over_the_shared_one() {
    let redis = RedisServer::start(&[]);
    // Room for one connection: the cache's for writes. Its batch
    // connection is refused, and so is the one for reads (whose calls then
    // share the other).
    redis.cmd(&["CONFIG", "SET", "maxclients", "1"]);
    let cache = Cache::builder()
        .name("pipe-full")
        .redis(config(redis.url()))
        .build()
        .unwrap();
    // Even the calls queued on the batch connection while it was refused
    // go out: none misses, none counts against the breaker.
    fill(&cache).await;
    for _ in 0..5 {
        assert!(all_hit(&cache).await, "calls over the shared connection");
    }
    assert_eq!(cache.breaker().state(), fusebox::breaker::State::Closed);
    drop(cache);
    // No batch connection got past its handshake.
    let start = std::time::Instant::now();
    let stats = loop {
        let stats = redis.cmd(&["INFO", "commandstats"]);
        if stats.contains("cmdstat_") {
            break stats;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no room");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!stats.contains("cmdstat_client|setname"), "{stats}");
    assert!(stats.contains("cmdstat_set:calls=128"), "{stats}");
}

#[test]
fn a_runtime_dropped_with_batches_in_flight_leaves_the_next_one_working() {
    let mut redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("pipe-runtime")
        .redis(config(redis.url()))
        .build()
        .unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    first.block_on(fill(&cache));
    first.block_on(async {
        assert!(all_hit(&cache).await);
    });
    let batches = calls(&redis, "mget");
    assert!(batches > 0);
    // Calls queued and in flight on a stopped Redis when their runtime goes.
    redis.pause();
    let queued = Arc::new(AtomicU64::new(0));
    for i in 0..128 {
        let (cache, queued) = (cache.clone(), queued.clone());
        first.spawn(async move {
            // Polled once: sent, or queued for a batch, by then.
            let mut get = std::pin::pin!(cache.get(format!("k{i}")));
            let mut answered = false;
            std::future::poll_fn(|cx| {
                answered = get.as_mut().poll(cx).is_ready();
                std::task::Poll::Ready(())
            })
            .await;
            queued.fetch_add(1, Relaxed);
            if !answered {
                get.await;
            }
        });
    }
    let start = std::time::Instant::now();
    while queued.load(Relaxed) < 128 {
        assert!(start.elapsed() < Duration::from_secs(10), "calls not made");
        std::thread::sleep(Duration::from_millis(1));
    }
    first.shutdown_timeout(Duration::from_secs(1));
    redis.resume();
    let second = runtime();
    second.block_on(until_all_hit(&cache, "on the next runtime"));
    assert!(
        calls(&redis, "mget") > batches,
        "batched on the next runtime too"
    );
    // The first runtime's connections closed with it.
    let start = std::time::Instant::now();
    loop {
        let list = redis.cmd(&["CLIENT", "LIST"]);
        if pipes(&list).len() <= 1 && list.lines().count() <= 4 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "left open: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_through_the_batch_connection_fill_its_socket_and_buffer_and_arrive_whole() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("pipe-large")
        .redis(config(redis.url()))
        .build()
        .unwrap();
    // 64 writers of 200 KiB at once (13 MiB: more than a socket's buffer
    // takes at once), then 64 readers of them (replies that straddle the
    // end of the reply buffer, and outgrow it).
    let large = |i: usize| Bytes::from(vec![b'a' + (i % 26) as u8; 200 << 10]);
    let sets: Vec<_> = (0..64)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.set(format!("L{i}"), large(i)).await.is_done() })
        })
        .collect();
    for t in sets {
        assert!(tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("bounded")
            .unwrap());
    }
    let gets: Vec<_> = (0..64)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(format!("L{i}")).await == Some(large(i)) })
        })
        .collect();
    for t in gets {
        assert!(tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("bounded")
            .unwrap());
    }
    assert!(calls(&redis, "mget") > 0, "read in batches");
    assert_eq!(
        pipes(&redis.cmd(&["CLIENT", "LIST"])).len(),
        2,
        "reads and writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_of_every_size_end_anywhere_in_the_reply_buffer_and_arrive_whole() {
    let redis = RedisServer::start(&[]);
    // Batches of two values of 1 to 30 KiB: no reply outgrows the 64 KiB
    // reply buffer, and the replies of the batches in flight end anywhere
    // in it, so one often runs past its end after others were answered
    // from its start (the unread tail is then moved to the front).
    let config = builder(redis.url()).max_batch(2).build().unwrap();
    let cache = Cache::builder()
        .name("pipe-sizes")
        .redis(config)
        .build()
        .unwrap();
    let sized = |i: usize| {
        let len = 1024 + (i * 7919) % (29 << 10);
        Bytes::from(vec![b'a' + (i % 26) as u8; len])
    };
    for i in 0..32 {
        assert!(cache.set(format!("S{i}"), sized(i)).await.is_done());
    }
    let readers: Vec<_> = (0..16)
        .map(|t| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for n in 0..500 {
                    let i = (t * 7 + n) % 32;
                    assert_eq!(
                        cache.get(format!("S{i}")).await,
                        Some(sized(i)),
                        "S{i}, read {n} of task {t}"
                    );
                }
            })
        })
        .collect();
    for t in readers {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("bounded")
            .unwrap();
    }
    assert!(calls(&redis, "mget") > 0, "read in batches");
}
