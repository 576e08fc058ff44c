use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusebox::backend::RedisConfig;
use fusebox::breaker::State;
use fusebox::cache::{Cache, Reason, Write};
use fusebox::telemetry::{CACHE_FAIL_OPEN_TOTAL, REDIS_CONNECT_ERRORS_TOTAL};

use crate::common::{counter, eventually, free_port, metrics, roomy, RedisServer};

/// Far above the default deadlines (checkout 50 ms + response 50 ms), far
/// below anything a caller would notice as a hang.
const BOUND: Duration = Duration::from_millis(500);

async fn timed_get(cache: &Cache, key: &str) -> (Option<bytes::Bytes>, Duration) {
    let start = Instant::now();
    let v = cache.get(key).await;
    (v, start.elapsed())
}

#[tokio::test]
async fn redis_never_started_misses_then_fails_fast() {
    metrics();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let start = Instant::now();
    let cache = Cache::builder()
        .name("never")
        .redis_url(&url)
        .build()
        .unwrap();
    assert!(start.elapsed() < BOUND, "building does not wait on Redis");

    // Five consecutive failures (the default) open the circuit; each is
    // the refusal itself (`io`), answered at once, not a wait for the
    // checkout deadline (`unavailable`).
    assert_eq!(cache.set("k", "v").await, Write::Skipped(Reason::Io));
    for _ in 0..4 {
        let (v, took) = timed_get(&cache, "k").await;
        assert_eq!(v, None);
        assert!(took < BOUND, "a miss within the deadline, took {took:?}");
    }
    assert_eq!(
        counter(
            CACHE_FAIL_OPEN_TOTAL,
            &[("cache", "never"), ("reason", "io")]
        ),
        5
    );
    assert_eq!(cache.breaker().state(), State::Open);

    // Open: answered without the network.
    let addr = format!("127.0.0.1:{port}");
    let connects = counter(REDIS_CONNECT_ERRORS_TOTAL, &[("addr", &addr)]);
    assert!(connects > 0, "the refused connects were counted");
    for _ in 0..100 {
        assert_eq!(cache.get("k").await, None);
        assert_eq!(
            cache.set("k", "v").await,
            Write::Skipped(Reason::BreakerOpen)
        );
    }
    assert_eq!(
        counter(REDIS_CONNECT_ERRORS_TOTAL, &[("addr", &addr)]),
        connects
    );
    assert_eq!(
        counter(
            CACHE_FAIL_OPEN_TOTAL,
            &[("cache", "never"), ("reason", "breaker_open")]
        ),
        200
    );
}

/// A refused connect is answered at once, whatever the deadlines: with a
/// 10 s checkout and connect deadline, 50 concurrent callers all get the
/// refusal (never a timeout), before the breaker opens and through its
/// probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_answer_at_once_not_at_the_deadline() {
    metrics();
    let addr = format!("127.0.0.1:{}", free_port());
    let url = format!("redis://{addr}");
    let config = RedisConfig::builder(&url)
        .checkout_timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(10))
        // One connection of each kind: connects are paced per connection.
        .connections(1)
        .build()
        .unwrap();
    let cache = Cache::builder()
        .name("refused")
        .redis(config)
        .build()
        .unwrap();
    // Every call reaches the backend, as calls do before a breaker opens.
    cache.breaker().disable();
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{i}");
            let mut slowest = Duration::ZERO;
            for _ in 0..4 {
                let t = Instant::now();
                assert_eq!(cache.set(&key, "v").await, Write::Skipped(Reason::Io));
                slowest = slowest.max(t.elapsed());
            }
            slowest
        }));
    }
    for t in tasks {
        slowest = slowest.max(t.await.unwrap());
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "200 refused calls took {:?}: someone waited for a deadline",
        start.elapsed()
    );
    println!("slowest refused call: {slowest:?}");
    // One connect attempt per 100 ms for the write connection, each a
    // connect error; the refused calls in between are not.
    let (elapsed, attempts) = (
        start.elapsed(),
        counter(REDIS_CONNECT_ERRORS_TOTAL, &[("addr", &addr)]),
    );
    let most = elapsed.as_millis() as u64 / 100 + 1;
    assert!(
        (1..=most).contains(&attempts),
        "{attempts} connect errors in {elapsed:?}"
    );
    // Through the breaker: it opens, and its probe is refused at once too.
    let breaker = cache.breaker();
    breaker.close();
    for _ in 0..5 {
        assert_eq!(cache.set("k", "v").await, Write::Skipped(Reason::Io));
    }
    assert_eq!(breaker.state(), State::Open);
    let mut transitions = breaker.subscribe();
    let half_open = tokio::time::timeout(Duration::from_secs(5), transitions.recv()).await;
    assert_eq!(half_open.unwrap().unwrap().to, State::HalfOpen);
    let t = Instant::now();
    assert_eq!(cache.set("k", "v").await, Write::Skipped(Reason::Io));
    assert!(t.elapsed() < Duration::from_secs(5), "the probe waited");
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test]
async fn paused_redis_costs_each_call_its_deadline_then_recovers() {
    let mut redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("paused")
        .redis_url(redis.url())
        .build()
        .unwrap();
    assert_eq!(cache.set("k", "v").await, Write::Done);
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v"[..]));

    redis.pause();
    for _ in 0..8 {
        let (v, took) = timed_get(&cache, "k").await;
        assert_eq!(v, None);
        assert!(took < BOUND, "bounded by the deadline, took {took:?}");
    }
    assert_eq!(cache.breaker().state(), State::Open);

    redis.resume();
    let recovered = eventually(Duration::from_secs(10), || async {
        cache.get("k").await.as_deref() == Some(&b"v"[..])
    })
    .await;
    assert!(recovered, "hits resume after SIGCONT");
    assert_eq!(cache.breaker().state(), State::Closed);
    // No connection is left wedged: a burst all hits.
    for _ in 0..50 {
        assert_eq!(cache.get("k").await.as_deref(), Some(&b"v"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_under_load_and_restarted_on_the_same_port() {
    metrics();
    let mut redis = RedisServer::start(&[]);
    // Deadlines that fit a loaded machine: the deadline is not what is
    // tested here.
    let cache = Cache::builder()
        .name("restart")
        .redis(roomy(&redis.url()))
        .build()
        .unwrap();
    assert_eq!(cache.set("k", "v").await, Write::Done);

    let stop = Arc::new(AtomicBool::new(false));
    let (hits, misses) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (cache, stop, hits, misses) =
            (cache.clone(), stop.clone(), hits.clone(), misses.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(SeqCst) {
                match cache.get("k").await {
                    Some(_) => hits.fetch_add(1, SeqCst),
                    None => misses.fetch_add(1, SeqCst),
                };
                if i == 0 {
                    // Keeps the key there across the restart.
                    let _ = cache.set("k", "v").await;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let hitting = eventually(Duration::from_secs(5), || async { hits.load(SeqCst) > 0 }).await;
    assert!(hitting);

    redis.kill();
    let opened = eventually(Duration::from_secs(5), || async {
        cache.breaker().state() != State::Closed
    })
    .await;
    assert!(opened, "the breaker opens while Redis is down");
    redis.restart();
    let closed = eventually(Duration::from_secs(10), || async {
        cache.breaker().state() == State::Closed && cache.get("k").await.is_some()
    })
    .await;
    assert!(closed, "the breaker closes through probes and hits resume");

    // Recovered: no dead connection is handed out any more, over the
    // next few hundred reads.
    let io_before = counter(
        CACHE_FAIL_OPEN_TOTAL,
        &[("cache", "restart"), ("reason", "io")],
    );
    let hits_before = hits.load(SeqCst);
    let more = eventually(Duration::from_secs(10), || async {
        hits.load(SeqCst) > hits_before + 500
    })
    .await;
    stop.store(true, SeqCst);
    assert!(more, "hits after recovery");
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("no task is wedged")
            .expect("no task panicked: no error surfaced");
    }
    assert_eq!(
        counter(
            CACHE_FAIL_OPEN_TOTAL,
            &[("cache", "restart"), ("reason", "io")]
        ),
        io_before,
        "no broken connection after recovery"
    );
}

/// A TCP proxy that accepts connections and, until told to forward, never
/// answers them (holding them open).
struct BlackHole {
    port: u16,
    forward_to: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let forward_to = Arc::new(AtomicU64::new(0));
        let target = forward_to.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = target.load(SeqCst);
                if to == 0 {
                    held.push(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut out) =
                        tokio::net::TcpStream::connect(("127.0.0.1", to as u16)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        BlackHole {
            port,
            forward_to,
            task,
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_black_hole_costs_each_call_its_deadline_then_recovers() {
    let redis = RedisServer::start(&[]);
    let hole = BlackHole::start().await;
    let cache = Cache::builder()
        .name("blackhole")
        .redis_url(format!("redis://127.0.0.1:{}", hole.port))
        .build()
        .unwrap();
    for _ in 0..8 {
        let (v, took) = timed_get(&cache, "k").await;
        assert_eq!(v, None);
        assert!(took < BOUND, "bounded by the deadline, took {took:?}");
    }
    assert_eq!(cache.breaker().state(), State::Open);

    redis.cmd(&["SET", "k", "v"]);
    hole.forward_to.store(u64::from(redis.port()), SeqCst);
    let recovered = eventually(Duration::from_secs(10), || async {
        cache.get("k").await.as_deref() == Some(&b"v"[..])
    })
    .await;
    assert!(recovered, "hits once the path answers");
    assert_eq!(cache.breaker().state(), State::Closed);
}

#[tokio::test]
async fn out_of_memory_sheds_writes_and_keeps_reads() {
    metrics();
    let redis = RedisServer::start(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    // Deadlines that fit a loaded machine: the deadline is not what is
    // tested here.
    let cache = Cache::builder()
        .name("oom")
        .write_hold_down(Duration::from_secs(60))
        .redis(roomy(&redis.url()))
        .build()
        .unwrap();
    assert_eq!(cache.set("hot", "still here").await, Write::Done);

    let value = vec![b'x'; 64 * 1024];
    let mut oom = None;
    for i in 0..200 {
        match cache.set(format!("fill:{i}"), value.clone()).await {
            Write::Done => {}
            other => {
                oom = Some(other);
                break;
            }
        }
    }
    assert_eq!(
        oom,
        Some(Write::Skipped(Reason::OutOfMemory)),
        "Redis filled up"
    );
    let errors_at_oom = redis.cmd(&["INFO", "stats"]);

    // Writes are now shed locally, reads keep hitting, the breaker stays
    // closed.
    let shedding = std::time::Instant::now();
    for i in 0..50 {
        assert_eq!(
            cache.set(format!("more:{i}"), "v").await,
            Write::Skipped(Reason::OutOfMemory)
        );
        assert_eq!(cache.get("hot").await.as_deref(), Some(&b"still here"[..]));
    }
    assert_eq!(cache.breaker().state(), State::Closed);
    assert_eq!(
        counter(
            CACHE_FAIL_OPEN_TOTAL,
            &[("cache", "oom"), ("reason", "out_of_memory")]
        ),
        51
    );
    // Shed locally: Redis saw no further OOM error replies but those of
    // the probes, one per 250 ms at most (none in the first interval).
    let field = |info: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("total_error_replies:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let probes = field(&redis.cmd(&["INFO", "stats"])) - field(&errors_at_oom);
    let intervals = shedding.elapsed().as_millis() as u64 / 250;
    assert!(
        probes <= intervals,
        "{probes} probes in {intervals} intervals"
    );
    // Deletes still work (they free memory).
    assert_eq!(cache.delete("fill:0").await, Write::Done);

    // Inside a pipeline the client's error has no code of its own; the
    // classification looks through it.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let err = redis::pipe()
        .get("hot")
        .set("p1", &value[..])
        .set("p2", &value[..])
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(
        fusebox::backend::RedisError::from(err).reason(),
        Reason::OutOfMemory
    );
}

#[tokio::test]
async fn the_write_hold_down_ends_while_writes_keep_coming() {
    let redis = RedisServer::start(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    // Deadlines that fit a loaded machine: the deadline is not what is
    // tested here.
    let cache = Cache::builder()
        .name("hold-down")
        .write_hold_down(Duration::from_millis(300))
        .redis(roomy(&redis.url()))
        .build()
        .unwrap();
    let value = vec![b'x'; 64 * 1024];
    let mut i = 0;
    while cache.set(format!("fill:{i}"), value.clone()).await == Write::Done {
        i += 1;
        assert!(i < 500, "Redis never filled");
    }
    // Memory is freed; writes keep coming, shed at first...
    redis.cmd(&["FLUSHALL"]);
    assert_eq!(
        cache.set("k", "v").await,
        Write::Skipped(Reason::OutOfMemory)
    );
    // ...and written again once the hold-down is over, however many were
    // shed meanwhile.
    let resumed = eventually(Duration::from_secs(3), || async {
        cache.set("k", "v").await == Write::Done
    })
    .await;
    assert!(resumed, "the hold-down ended");
}
