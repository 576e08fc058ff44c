//! The outage fusebox exists for, replayed in about a minute.
//!
//! ```sh
//! cargo run --example incident_replay --features http
//! cargo run --example incident_replay --features http,cluster -- --cluster
//! ```
//!
//! A small Redis (32 MiB, `noeviction`) is shared by a web service that uses
//! it as a page cache (through fusebox) and by a job queue that, by mistake,
//! writes every completed job without a TTL. Memory climbs; in real life it
//! took three weeks and nobody noticed until customers did. Here it takes
//! half a minute, and the watchdog says so from the first seconds: usage
//! alerts at 20 / 50 / 90 %, the forecast time until full, the leaking key
//! prefix. Redis fills and answers `OOM`: the cache sheds its writes and
//! keeps serving reads. An operator restarts Redis: the breaker opens, the
//! service keeps answering from its source of truth, the breaker closes,
//! hits resume. Later Redis goes down for 20 s (a host lost): the service
//! renders from its source of truth meanwhile, or, with `--near`, keeps
//! serving its pages from the near cache. Through all of it, clients see
//! no error.
//!
//! With `--cluster` the same runs on a Redis Cluster of 3 primaries with a
//! replica each: the leak fills one shard, the watchdog names that node,
//! then one primary is killed mid-run: its keys miss while the others keep
//! hitting, its replica is promoted, and hits resume.
//!
//! With `--near` the page cache has a near cache (an in-process L1 kept
//! consistent by Redis' client tracking): while Redis is down, pages are
//! served from it, stale, instead of from the source of truth.
//!
//! With `--policy` the watchdog holds the job queue's completed jobs to an
//! expiry policy (`expire("queue:todo:completed:*", 8 s)`, 8 h at this
//! replay's scale): the queue still writes them without a TTL, the
//! watchdog's `SCAN` gives each one, and memory levels off instead of
//! reaching `OOM`.
//!
//! ```sh
//! cargo run --release --example incident_replay --features http -- --near
//! cargo run --release --example incident_replay --features http -- --policy
//! ```
//!
//! Time is compressed: the watchdog's leeway budget of 48 h becomes 48 s.
//! Starts its own `redis-server` on a free port; without one, says how to
//! get it and shows the fail-open path against an unreachable address.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use fusebox::breaker::Breaker;
use fusebox::cache::{Backend, Cache, NearCache, NearStats, Reason, Write};
use fusebox::http::HttpCacheLayer;
use fusebox::watchdog::{Alert, Watchdog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[cfg(feature = "cluster")]
mod cluster;
mod picture;

const MAXMEMORY: &str = "32mb";
const CLIENTS: usize = 12;
const PRODUCTS: u64 = 1000;

/// The phases of the replay, in order.
const PHASES: [&str; 7] = [
    "healthy",
    "filling",
    "full (OOM)",
    "redis restarted",
    "recovered",
    "redis down (20 s)",
    "back",
];

/// The phases with the expiry policy on: Redis never fills.
const POLICY_PHASES: [&str; 7] = [
    "healthy",
    "leaking",
    "leak held by the policy",
    "redis restarted",
    "recovered",
    "redis down (20 s)",
    "back",
];

/// How long the policy keeps a completed job (8 h at this replay's scale).
const JOB_RETENTION: Duration = Duration::from_secs(8);

/// How long Redis stays down in the replay.
const DOWN_FOR: Duration = Duration::from_secs(20);

struct Replay {
    start: Instant,
    phases: &'static [&'static str],
    phase: AtomicUsize,
    /// Per phase: latencies (µs), hits, errors.
    stats: Mutex<Vec<PhaseStats>>,
    writes_shed: AtomicU64,
    first_alert: Mutex<Option<Duration>>,
    oom_at: Mutex<Option<Duration>>,
    /// The near cache's figures as each phase began, and at the end.
    near: Mutex<Vec<NearStats>>,
    /// Where they are read from: the cache's near cache, if it has one.
    near_source: Mutex<Option<NearSource>>,
    /// For the picture: the load since the last sample, when each phase
    /// began, and the alerts.
    window: Mutex<picture::Window>,
    phase_starts: Mutex<Vec<(f64, &'static str)>>,
    marks: Mutex<Vec<(f64, String)>>,
}

type NearSource = Box<dyn Fn() -> Option<NearStats> + Send>;

#[derive(Default, Clone)]
struct PhaseStats {
    latencies_us: Vec<u64>,
    hits: u64,
    errors: u64,
    shed: u64,
    /// Pages rendered by the source of truth.
    loads: u64,
}

impl Replay {
    fn new(phases: &'static [&'static str]) -> Arc<Replay> {
        Arc::new(Replay {
            start: Instant::now(),
            phases,
            phase: AtomicUsize::new(0),
            stats: Mutex::new(vec![PhaseStats::default(); phases.len()]),
            writes_shed: AtomicU64::new(0),
            first_alert: Mutex::new(None),
            oom_at: Mutex::new(None),
            near: Mutex::new(Vec::new()),
            near_source: Mutex::new(None),
            window: Mutex::default(),
            phase_starts: Mutex::default(),
            marks: Mutex::default(),
        })
    }

    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn say(&self, what: impl AsRef<str>) {
        println!("[{:>5.1} s] {}", self.t(), what.as_ref());
    }

    /// Until the leak has met `OOM`, at most 60 s.
    async fn until_full(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.oom_at.lock().unwrap().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Notes the near cache's figures at a phase's start (or the end).
    fn mark_near(&self) {
        let source = self.near_source.lock().unwrap();
        if let Some(stats) = source.as_ref().and_then(|f| f()) {
            self.near.lock().unwrap().push(stats);
        }
    }

    fn enter(&self, phase: usize) {
        self.mark_near();
        self.phase.store(phase, Relaxed);
        let start = (self.t(), self.phases[phase]);
        self.phase_starts.lock().unwrap().push(start);
        println!("[{:>5.1} s] ── phase: {} ──", self.t(), self.phases[phase]);
    }
}

/// The service's source of truth: slow-ish, always right. Its pages are
/// fresh for 8 s, then served stale for 30 s more while revalidated in the
/// background (RFC 5861).
async fn product<B: Backend + Sync>(
    State(app): State<AppState<B>>,
    Path(id): Path<u64>,
) -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(8)).await;
    {
        let phase = app.replay.phase.load(Relaxed);
        app.replay.stats.lock().unwrap()[phase].loads += 1;
    }
    let page = format!("<html>product {id}: {}</html>", "·".repeat(800));
    // A typical extra write: "recently viewed", 30 s.
    if let Write::Skipped(Reason::OutOfMemory) = app
        .cache
        .set_with_ttl(
            format!("recent:{id}"),
            id.to_string(),
            Duration::from_secs(30),
        )
        .await
    {
        app.replay.writes_shed.fetch_add(1, Relaxed);
        let phase = app.replay.phase.load(Relaxed);
        app.replay.stats.lock().unwrap()[phase].shed += 1;
    }
    (
        [(
            header::CACHE_CONTROL,
            "public, max-age=8, stale-while-revalidate=30",
        )],
        page,
    )
}

struct AppState<B> {
    cache: Cache<B>,
    replay: Arc<Replay>,
}

impl<B: Clone> Clone for AppState<B> {
    fn clone(&self) -> Self {
        AppState {
            cache: self.cache.clone(),
            replay: self.replay.clone(),
        }
    }
}

/// The web service: product pages behind fusebox's HTTP cache.
async fn serve<B: Backend + Sync>(
    cache: &Cache<B>,
    replay: &Arc<Replay>,
) -> std::io::Result<std::net::SocketAddr> {
    let state = AppState {
        cache: cache.clone(),
        replay: replay.clone(),
    };
    let app = Router::new()
        .route("/product/{id}", get(product::<B>))
        .with_state(state)
        .layer(HttpCacheLayer::new(cache.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// One HTTP/1.1 request on a kept-alive connection: status, and whether
/// the cache answered it (`x-cache: hit` or `stale`).
async fn request(
    conn: &mut Option<tokio::net::TcpStream>,
    addr: std::net::SocketAddr,
    path: &str,
) -> Option<(u16, bool)> {
    if conn.is_none() {
        *conn = tokio::net::TcpStream::connect(addr).await.ok();
    }
    let s = conn.as_mut()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: replay\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        *conn = None;
        return None;
    }
    // Read the head, then exactly content-length bytes.
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                *conn = None;
                return None;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                *conn = None;
                return None;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    // Answered from the cache: fresh, or stale (RFC 5861).
    let cached = head.contains("x-cache: hit") || head.contains("x-cache: stale");
    Some((status, cached))
}

/// Clients browsing products until `stop`.
fn load(
    addr: std::net::SocketAddr,
    replay: Arc<Replay>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|c| {
            let (replay, stop) = (replay.clone(), stop.clone());
            tokio::spawn(async move {
                let mut conn = None;
                let mut n = c as u64 * 7919;
                while !stop.load(Relaxed) {
                    // Popular products are asked for more often.
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let id = ((n >> 33) % PRODUCTS).min((n >> 40) % PRODUCTS);
                    let t = Instant::now();
                    let answer = request(&mut conn, addr, &format!("/product/{id}")).await;
                    let us = t.elapsed().as_micros() as u64;
                    let phase = replay.phase.load(Relaxed);
                    {
                        let mut stats = replay.stats.lock().unwrap();
                        let s = &mut stats[phase];
                        s.latencies_us.push(us);
                        match answer {
                            Some((200, hit)) => s.hits += u64::from(hit),
                            _ => s.errors += 1,
                        }
                    }
                    {
                        let mut w = replay.window.lock().unwrap();
                        w.latencies_us.push(us);
                        match answer {
                            Some((200, hit)) => w.cached += u64::from(hit),
                            _ => w.errors += 1,
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect()
}

/// The watchdog of the replay: time compressed, 48 h of leeway are 48 s.
fn watchdog() -> fusebox::watchdog::WatchdogBuilder {
    Watchdog::builder()
        .name("redis")
        .interval(Duration::from_millis(500))
        .min_span(Duration::from_secs(3))
        .horizon(Duration::from_secs(60))
        .leeway(Duration::from_secs(48))
        .samples_per_round(200)
        .keys_per_second(4000)
}

/// The watchdog with the expiry policy: a sampler fast enough to pass over
/// the keyspace well within the jobs' retention (the queue writes ~1 200
/// jobs a second).
fn policy_watchdog() -> fusebox::watchdog::WatchdogBuilder {
    watchdog()
        .samples_per_round(2000)
        .keys_per_second(20_000)
        .expire("queue:todo:completed:*", JOB_RETENTION)
}

/// Prints the watchdog's alerts as they come, with the forecast and the
/// leaking pattern (and, on a cluster, the node).
fn timeline(replay: &Arc<Replay>, watchdog: &Watchdog, stop: &Arc<AtomicBool>) {
    let (replay, watchdog2, done) = (replay.clone(), watchdog.clone(), stop.clone());
    let mut alerts = watchdog.subscribe();
    tokio::spawn(async move {
        while let Ok(alert) = alerts.recv().await {
            if done.load(Relaxed) {
                break;
            }
            replay
                .first_alert
                .lock()
                .unwrap()
                .get_or_insert(replay.start.elapsed());
            let at = replay.t();
            replay.marks.lock().unwrap().push((at, alert.to_string()));
            let mut line = format!("watchdog: {alert}");
            // A cluster node's alert: that node's own figures.
            let (inner, node) = match &alert {
                Alert::Node { alert, node } => (&**alert, Some(node)),
                other => (other, None),
            };
            if matches!(
                inner,
                Alert::Usage { raised: true, .. } | Alert::Leeway { raised: true, .. }
            ) {
                let mut report = watchdog2.report();
                if let Some(n) = node {
                    let mine = report.nodes.iter().find(|r| r.node.as_ref() == Some(n));
                    report = mine.cloned().unwrap_or(report);
                }
                if let (Some(s), Alert::Usage { .. }) = (report.seconds_to_full, inner) {
                    line.push_str(&format!(" — forecast: full in {s:.0} s"));
                }
                if let Some(p) = report.no_ttl_prefixes.first() {
                    line.push_str(&format!(
                        " — `{}` holds {:.0} % of no-TTL bytes",
                        p.pattern,
                        p.share * 100.0
                    ));
                }
            }
            replay.say(line);
        }
    });
}

/// Prints a breaker's transitions as they happen.
fn breaker_timeline(replay: &Arc<Replay>, breaker: &Breaker, name: &str, stop: &Arc<AtomicBool>) {
    let (replay, done, name) = (replay.clone(), stop.clone(), name.to_owned());
    let mut transitions = breaker.subscribe();
    tokio::spawn(async move {
        while let Ok(t) = transitions.recv().await {
            if done.load(Relaxed) {
                break;
            }
            replay.say(format!(
                "{name}: {} → {} ({})",
                t.from,
                t.to,
                t.reason.as_str()
            ));
        }
    });
}

/// The leaky job queue: jobs without TTL under `prefix`, pipelined to the
/// node at `url`, until `stop`; at the first `OOM` it says `oom_line` and
/// enters the phase after "filling".
fn leak(
    replay: &Arc<Replay>,
    url: &str,
    prefix: &'static str,
    oom_line: &'static str,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (replay, stop, url) = (replay.clone(), stop.clone(), url.to_owned());
    tokio::spawn(async move {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = None;
        let job = vec![b'j'; 1000];
        let mut id = 0u64;
        while !stop.load(Relaxed) {
            if conn.is_none() {
                conn = client.get_multiplexed_async_connection().await.ok();
            }
            if let Some(c) = conn.as_mut() {
                let mut pipe = redis::pipe();
                for _ in 0..60 {
                    pipe.cmd("SET")
                        .arg(format!("{prefix}:{id}"))
                        .arg(&job[..])
                        .ignore();
                    id += 1;
                }
                if let Err(e) = pipe.query_async::<()>(c).await {
                    if e.code() == Some("OOM") || format!("{e}").contains("OOM") {
                        let mut oom = replay.oom_at.lock().unwrap();
                        if oom.is_none() {
                            *oom = Some(replay.start.elapsed());
                            drop(oom);
                            replay.say(oom_line);
                            replay.enter(2);
                        }
                    } else {
                        conn = None;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--cluster") {
        #[cfg(feature = "cluster")]
        return cluster::run().await;
        #[cfg(not(feature = "cluster"))]
        {
            eprintln!("--cluster needs the cluster feature: cargo run --example incident_replay --features http,cluster -- --cluster");
            std::process::exit(2);
        }
    }
    let Ok(mut redis) = fusebox_testkit::RedisServer::try_start(&[
        "--maxmemory",
        MAXMEMORY,
        "--maxmemory-policy",
        "noeviction",
    ]) else {
        return without_redis().await;
    };
    let (port, url) = (redis.port(), redis.url());
    let policy = std::env::args().any(|a| a == "--policy");
    let replay = Replay::new(if policy { &POLICY_PHASES } else { &PHASES });
    println!("fusebox incident replay — Redis {MAXMEMORY}, noeviction, on port {port}; time compressed (48 h of leeway = 48 s)\n");

    let near = std::env::args().any(|a| a == "--near");
    // The cache's own breaker: open 0.4-0.5 s however long the outage, so
    // hits resume within half a second of Redis answering again.
    let mut builder = Cache::builder().name("pages").watchdog(match policy {
        true => {
            println!("expiry policy on: the watchdog gives completed jobs without a TTL one of {} s (8 h at this scale)\n", JOB_RETENTION.as_secs());
            policy_watchdog()
        }
        false => watchdog(),
    });
    if near {
        // 32 MiB of L1, entries served stale for up to 10 minutes.
        builder = builder.near_cache(NearCache::new());
        println!("near cache on: L1 of 32 MiB, kept fresh by client tracking, stale for 10 min while Redis fails\n");
    }
    let cache = builder.redis_url(&url).build()?;
    let source = cache.clone();
    *replay.near_source.lock().unwrap() = Some(Box::new(move || source.near_stats()));
    let addr = serve(&cache, &replay).await?;

    let stop = Arc::new(AtomicBool::new(false));
    // The timeline: watchdog alerts and breaker transitions as they happen.
    let watchdog = cache.watchdog().expect("started with the cache").clone();
    timeline(&replay, &watchdog, &stop);
    breaker_timeline(&replay, cache.breaker(), "breaker", &stop);
    let recorder = picture::record(&replay, &watchdog, &stop);

    let clients = load(addr, replay.clone(), stop.clone());
    replay.enter(0);
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The leaky job queue starts.
    replay.enter(1);
    replay.say("job queue starts writing completed jobs WITHOUT a TTL (queue:todo:completed:<id>)");
    let leak_stop = Arc::new(AtomicBool::new(false));
    let leak = leak(
        &replay,
        &url,
        "queue:todo:completed",
        "Redis answers OOM: command not allowed when used memory > 'maxmemory'",
        &leak_stop,
    );

    // Until OOM (at most 60 s), then the full state for a while.
    if policy {
        // As long as the leak took to fill Redis without the policy.
        tokio::time::sleep(Duration::from_secs(30)).await;
        replay.enter(2);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let report = watchdog.report();
        let used = report.info.as_ref().map_or(0, |i| i.used_memory);
        replay.say(format!(
            "the leak goes on, held: Redis at {:.1} MiB of {MAXMEMORY} ({}), {} completed jobs given a TTL by the policy; {} of the app's writes shed",
            used as f64 / f64::from(1 << 20),
            if replay.oom_at.lock().unwrap().is_some() { "it did reach OOM" } else { "never OOM" },
            report.expiry.first().map_or(0, |p| p.expired),
            replay.writes_shed.load(Relaxed),
        ));
    } else {
        replay.until_full().await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        replay.say(format!(
            "while full: {} of the app's cache writes skipped as out-of-memory (then shed without asking Redis); reads kept hitting; breaker {}",
            replay.writes_shed.load(Relaxed),
            cache.breaker().state()
        ));
    }

    // An operator restarts Redis; the leak gets fixed.
    leak_stop.store(true, Relaxed);
    let _ = leak.await;
    replay.enter(3);
    replay.say(match policy {
        true => "operator restarts Redis (an upgrade, say)",
        false => "operator restarts Redis (memory freed; the job queue now sets a TTL)",
    });
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    replay.say("Redis is back, empty");
    tokio::time::sleep(Duration::from_secs(4)).await;
    replay.enter(4);
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Later, Redis goes down for longer: a host lost, say.
    replay.enter(5);
    replay.say(format!("Redis goes down for {} s", DOWN_FOR.as_secs()));
    redis.kill();
    tokio::time::sleep(DOWN_FOR).await;
    redis.restart();
    replay.enter(6);
    replay.say("Redis is back, empty");
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Relaxed);
    replay.mark_near();
    for c in clients {
        let _ = c.await;
    }
    drop(redis);
    summary(&replay, PHASES.len());
    let points = recorder.await?;
    let (default, title) = match (near, policy) {
        (_, true) => (
            "target/incident_replay-policy.svg",
            "fusebox incident replay, with the expiry policy",
        ),
        (true, _) => (
            "target/incident_replay-near.svg",
            "fusebox incident replay, with the near cache",
        ),
        _ => ("target/incident_replay.svg", "fusebox incident replay"),
    };
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .iter()
        .position(|a| a == "--svg")
        .and_then(|i| args.get(i + 1))
        .map_or(default, String::as_str);
    picture::draw(&replay, &points, title, path)?;
    println!("\nthe timeline: {path}");
    Ok(())
}

fn percentile(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize] as f64 / 1000.0
}

fn summary(replay: &Replay, phases: usize) {
    let stats = replay.stats.lock().unwrap().clone();
    let near = replay.near.lock().unwrap().clone();
    println!("\n| phase | requests | errors surfaced | answered from cache | p50 ms | p99 ms | writes shed | pages rendered | near cache: L1 fresh / stale |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let (mut total, mut errors) = (0, 0);
    for (i, (name, mut s)) in replay.phases.iter().zip(stats).enumerate().take(phases) {
        let n = s.latencies_us.len() as u64;
        total += n;
        errors += s.errors;
        let ratio = if n == 0 {
            0.0
        } else {
            s.hits as f64 / n as f64 * 100.0
        };
        let rendered = if n == 0 {
            0.0
        } else {
            s.loads as f64 / n as f64 * 100.0
        };
        let l1 = match (near.get(i), near.get(i + 1)) {
            (Some(a), Some(b)) if b.reads() > a.reads() => {
                let reads = (b.reads() - a.reads()) as f64;
                format!(
                    "{:.0} % / {:.0} %",
                    (b.l1_hits - a.l1_hits) as f64 / reads * 100.0,
                    (b.stale - a.stale) as f64 / reads * 100.0
                )
            }
            _ => "off".to_owned(),
        };
        println!(
            "| {name} | {n} | {} | {ratio:.0} % | {:.1} | {:.1} | {} | {rendered:.0} % | {l1} |",
            s.errors,
            percentile(&mut s.latencies_us, 0.5),
            percentile(&mut s.latencies_us, 0.99),
            s.shed
        );
    }
    println!("| **all** | **{total}** | **{errors}** | | | | | | |");
    let first = *replay.first_alert.lock().unwrap();
    let oom = *replay.oom_at.lock().unwrap();
    match (first, oom) {
        (_, None) => {}
        (Some(a), Some(o)) if a < o => println!(
            "\nfirst watchdog alert {:.1} s before Redis was full (at this replay's scale, {:.0} hours of warning)",
            (o - a).as_secs_f64(),
            (o - a).as_secs_f64()
        ),
        _ => println!("\nno watchdog alert before Redis was full"),
    }
    println!("errors surfaced to clients: {errors}");
}

/// Without a redis-server: the fail-open path alone.
pub(crate) async fn without_redis() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "redis-server was not found on PATH ({}) to replay the full incident.",
        fusebox_testkit::INSTALL_HINT
    );
    println!("Meanwhile, the fail-open path against an address where nothing listens:\n");
    let cache = Cache::builder()
        .name("pages")
        .redis_url(format!(
            "redis://127.0.0.1:{}",
            fusebox_testkit::free_port()
        ))
        .build()?;
    let replay = Replay::new(&PHASES);
    let addr = serve(&cache, &replay).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(addr, replay.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Relaxed);
    for c in clients {
        let _ = c.await;
    }
    replay.say(format!("breaker: {}", cache.breaker().state()));
    summary(&replay, 1);
    Ok(())
}
