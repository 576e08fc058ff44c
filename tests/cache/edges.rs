//! The edges of one Redis: prefixes that would collide, and the counts a
//! cache keeps.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusebox::cache::{Cache, Reason, Write};

use crate::common::{eventually, roomy, RedisServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nesting_prefixes_on_one_redis_are_refused_and_the_docs_promise_holds() {
    let redis = RedisServer::start(&[]);
    let build = |name: &str, prefix: &str, db: u8| {
        Cache::builder()
            .name(name)
            .prefix(prefix)
            .redis_url(format!("{}/{db}", redis.url()))
            .build()
    };
    let app = build("app", "app:", 0).unwrap();
    let err = build("app-v2", "app:v2:", 0).unwrap_err();
    assert_eq!(err.field(), "prefix");
    assert!(
        err.to_string().contains("\"app\""),
        "names the other cache: {err}"
    );
    // Another database of the same server is another keyspace.
    let other_db = build("app-v2", "app:v2:", 1).unwrap();
    // Siblings never collide: what one writes, the other does not read.
    let sibling = build("apq", "apq:", 0).unwrap();
    assert_eq!(app.set("k", "a").await, Write::Done);
    assert_eq!(sibling.set("k", "b").await, Write::Done);
    assert_eq!(app.get("k").await.as_deref(), Some(&b"a"[..]));
    assert_eq!(sibling.get("k").await.as_deref(), Some(&b"b"[..]));
    // Once the first is gone, its prefix is free to nest with.
    drop(app);
    let v2 = build("app-v2", "app:v2:", 0).expect("app: is gone");
    drop((v2, other_db, sibling));
}

/// Readers and writers that run until `stop`: what the writers saw.
fn load(cache: &Cache, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<Write>>> {
    let mut tasks = Vec::new();
    for t in 0..6 {
        let (cache, stop) = (cache.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut writes = Vec::new();
            let mut i = 0u64;
            while !stop.load(SeqCst) {
                if t % 2 == 0 {
                    writes.push(cache.set(format!("w:{t}:{i}"), "v").await);
                } else {
                    cache.get(format!("w:0:{i}")).await;
                }
                i += 1;
                tokio::task::yield_now().await;
            }
            writes
        }));
    }
    tasks
}

/// How long after `from` a write is done again (bounded by `limit`).
async fn writes_back(cache: &Cache, from: Instant, limit: Duration) -> Duration {
    let back = eventually(limit, || async {
        cache.set("probe", "v").await == Write::Done
    });
    assert!(back.await, "writes back within {limit:?}");
    from.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_of_redis_reads_and_writes_alike_holds_no_write_down() {
    let mut redis = RedisServer::start(&[]);
    // The default hold-down (5 s): writes must not wait it out.
    let cache = Cache::builder()
        .name("stall")
        .redis(roomy(&redis.url()))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&cache, &stop);
    // Longer than the response deadline (300 ms): everything in flight
    // times out together, reads as much as writes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.pause();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.resume();
    let resumed = Instant::now();
    let took = writes_back(&cache, resumed, Duration::from_secs(3)).await;
    stop.store(true, SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("writes back {took:?} after the stall");
    // Nothing held down: the next writes are done too.
    for i in 0..20 {
        assert_eq!(cache.set(format!("after:{i}"), "v").await, Write::Done);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_within_a_second_of_redis_taking_them_again() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("pause-then-writes")
        .redis(roomy(&redis.url()))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&cache, &stop);
    redis.cmd(&["CLIENT", "PAUSE", "60000", "WRITE"]);
    // Held down: most writes are shed at once, not after the deadline.
    let held = eventually(Duration::from_secs(5), || async {
        cache.set("held", "v").await == Write::Skipped(Reason::WriteTimeout)
    });
    assert!(held.await, "a write pause holds writes down");
    redis.cmd(&["CLIENT", "UNPAUSE"]);
    let unpaused = Instant::now();
    // The default hold-down is 5 s; a probe ends it as soon as Redis
    // takes writes.
    let took = writes_back(&cache, unpaused, Duration::from_secs(2)).await;
    stop.store(true, SeqCst);
    let mut writes = Vec::new();
    for t in tasks {
        writes.extend(t.await.unwrap());
    }
    // (On a loaded machine some of these time out late and count as
    // `overloaded`: what is asserted is the return of writes.)
    let shed = writes
        .iter()
        .filter(|w| **w == Write::Skipped(Reason::WriteTimeout))
        .count();
    eprintln!(
        "writes back {took:?} after UNPAUSE; {shed} of {} writes held down",
        writes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_free_connection_slot_serves_reads_and_writes_alike() {
    let redis = RedisServer::start(&[]);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut control = client.get_multiplexed_async_connection().await.unwrap();
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .query_async(&mut control)
            .await
            .unwrap();
    }
    // This connection and one more: the cache's second connection (reads
    // and writes have one each) is refused with `max_clients`.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(2)
        .query_async(&mut control)
        .await
        .unwrap();
    let cache = Cache::builder()
        .name("one-slot")
        .redis(roomy(&redis.url()))
        .build()
        .unwrap();
    let mut transitions = cache.breaker().subscribe();
    let (mut hits, mut done) = (0, 0);
    for i in 0..200 {
        hits += usize::from(cache.get(format!("k{}", i % 50)).await.is_some());
        done += usize::from(cache.set(format!("w{i}"), "v").await == Write::Done);
    }
    assert!(transitions.try_recv().is_err(), "the breaker stayed closed");
    assert_eq!(hits, 200, "every read hit");
    assert_eq!(done, 200, "every write done, on the shared connection");
}
