//! The whole fail-open stack against a real Redis, in one run with the
//! clients it replaces: GET and SET throughput and p50/p99 latency with 64
//! concurrent tasks; the same on a 3-primary Redis Cluster against a raw
//! redis-rs cluster connection; a hot key through the near cache, and how
//! soon another client's write reaches it; and the cost of a `get` once Redis (or one
//! shard) is down and its breaker open.
//!
//! `cargo bench -p fusebox-benches --bench redis`
//!
//! `FUSEBOX_BENCH_ONLY=<text>[,<text>…]` keeps the clients whose label has
//! one of them; `FUSEBOX_BENCH_TASKS=1,4,64` runs the single-server table at
//! each of those concurrencies (default 64); `FUSEBOX_BENCH_OPS=N` makes its
//! rounds N operations (default 200 000).
//!
//! Starts its own `redis-server` on a free port (`--save ''`), never 6379.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fusebox::backend::{Bb8Backend, ClientBackend, ClusterBackend, DeadpoolBackend};
use fusebox::cache::{Backend, Cache, NearCache};
use fusebox_benches::redis_info::{command_stat, redis_process_cpu};
use redis::AsyncCommands;

const TASKS: usize = 64;
const OPS: usize = 200_000;

/// Operations per round of the single-server table (`FUSEBOX_BENCH_OPS`).
fn ops() -> usize {
    std::env::var("FUSEBOX_BENCH_OPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(OPS)
}
const WARMUP: usize = 20_000;
const ROUNDS: usize = 5;
const VALUE: [u8; 100] = [b'v'; 100];
/// The near cache's hot key.
const HOT: &str = "hot";
/// Invalidations timed.
const INVALIDATIONS: usize = 1000;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Set,
}

/// One way of talking to Redis, cloned into every task.
#[derive(Clone)]
enum Client {
    Fusebox(Cache),
    Manager(Cache<ClientBackend<redis::aio::ConnectionManager>>),
    Multiplexed(Cache<ClientBackend<redis::aio::MultiplexedConnection>>),
    OverBb8(Cache<Bb8Backend>),
    OverDeadpool(Cache<DeadpoolBackend>),
    OverCluster(Cache<ClusterBackend>),
    RawCluster(redis::cluster_async::ClusterConnection),
    OverClusterConn(Cache<ClientBackend<redis::cluster_async::ClusterConnection>>),
    Bb8(bb8::Pool<bb8_redis::RedisConnectionManager>),
    Raw(redis::aio::MultiplexedConnection),
    /// The raw connection behind an `ExpiryGuard` holding `key:*` to 1 h:
    /// its `SET key value` goes out as `SET key value PX 3600000`, the raw
    /// client's command; `GET` passes through, inspected.
    Guarded(fusebox::watchdog::ExpiryGuard<redis::aio::MultiplexedConnection>),
}

impl Client {
    /// One operation; `true` if Redis answered as expected.
    async fn run(&mut self, op: Op, key: &str) -> bool {
        match (self, op) {
            (Client::Fusebox(c), op) => cache_op(c, op, key).await,
            (Client::Manager(c), op) => cache_op(c, op, key).await,
            (Client::Multiplexed(c), op) => cache_op(c, op, key).await,
            (Client::OverBb8(c), op) => cache_op(c, op, key).await,
            (Client::OverDeadpool(c), op) => cache_op(c, op, key).await,
            (Client::OverCluster(c), op) => cache_op(c, op, key).await,
            (Client::OverClusterConn(c), op) => cache_op(c, op, key).await,
            (Client::RawCluster(conn), Op::Get) => conn
                .get::<_, Option<Vec<u8>>>(key)
                .await
                .is_ok_and(|v| v.is_some()),
            (Client::RawCluster(conn), Op::Set) => set_px(conn, key).await,
            (Client::Bb8(pool), op) => {
                let Ok(mut conn) = pool.get().await else {
                    return false;
                };
                match op {
                    Op::Get => conn
                        .get::<_, Option<Vec<u8>>>(key)
                        .await
                        .is_ok_and(|v| v.is_some()),
                    Op::Set => set_px(&mut *conn, key).await,
                }
            }
            (Client::Raw(conn), Op::Get) => conn
                .get::<_, Option<Vec<u8>>>(key)
                .await
                .is_ok_and(|v| v.is_some()),
            (Client::Raw(conn), Op::Set) => set_px(conn, key).await,
            (Client::Guarded(conn), Op::Get) => conn
                .get::<_, Option<Vec<u8>>>(key)
                .await
                .is_ok_and(|v| v.is_some()),
            (Client::Guarded(conn), Op::Set) => redis::cmd("SET")
                .arg(key)
                .arg(&VALUE[..])
                .query_async::<()>(conn)
                .await
                .is_ok(),
        }
    }
}

async fn cache_op<B: Backend>(cache: &Cache<B>, op: Op, key: &str) -> bool {
    match op {
        Op::Get => cache.get(key).await.is_some(),
        Op::Set => cache.set(key, &VALUE[..]).await.is_done(),
    }
}

/// The same command the cache sends: `SET key value PX 3600000`.
async fn set_px(conn: &mut impl redis::aio::ConnectionLike, key: &str) -> bool {
    redis::cmd("SET")
        .arg(key)
        .arg(&VALUE[..])
        .arg("PX")
        .arg(3_600_000)
        .query_async::<()>(conn)
        .await
        .is_ok()
}

struct Figures {
    ops_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    failed: usize,
    /// Redis's CPU per operation, in µs, when measured: in its commands
    /// (`INFO commandstats`), and in all (`INFO cpu`: parsing, replies,
    /// system calls too); and operations per command Redis ran.
    redis_us: Option<(f64, f64, f64)>,
}

/// `ops` operations spread over `tasks` tasks; latencies of every one.
async fn drive(client: &Client, op: Op, ops: usize, tasks: usize) -> Figures {
    let keys: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    drive_keys(client, op, ops, &keys, tasks).await
}

/// As [`drive`], over `keys`.
async fn drive_keys(client: &Client, op: Op, ops: usize, keys: &[&str], n: usize) -> Figures {
    let keys: Arc<Vec<String>> = Arc::new(keys.iter().map(|k| k.to_string()).collect());
    let per_task = ops / n;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for t in 0..n {
        let (mut client, keys) = (client.clone(), keys.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            let mut failed = 0;
            for i in 0..per_task {
                let key = &keys[(t * per_task + i) % keys.len()];
                let s = Instant::now();
                if !client.run(op, key).await {
                    failed += 1;
                }
                lat.push(s.elapsed().as_nanos() as u64);
            }
            (lat, failed)
        }));
    }
    let mut all = Vec::with_capacity(ops);
    let mut failed = 0;
    for t in tasks {
        let (lat, f) = t.await.expect("task");
        all.extend(lat);
        failed += f;
    }
    let wall = start.elapsed();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize] as f64 / 1e3;
    Figures {
        ops_per_s: all.len() as f64 / wall.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        failed,
        redis_us: None,
    }
}

/// Redis's CPU time in its key commands (`GET`, `MGET`, `SET`), in µs,
/// and how many of them it ran, from `INFO commandstats`.
async fn redis_cpu(admin: &mut redis::aio::MultiplexedConnection) -> (f64, f64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap_or_default();
    ["get", "mget", "set"]
        .iter()
        .fold((0.0, 0.0), |(usec, calls), command| {
            (
                usec + command_stat(&info, command, "usec"),
                calls + command_stat(&info, command, "calls"),
            )
        })
}

/// One round of `drive` with Redis's CPU per operation measured around it.
async fn measured(
    client: &Client,
    op: Op,
    tasks: usize,
    admin: &mut redis::aio::MultiplexedConnection,
) -> Figures {
    let _: Result<(), _> = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(admin)
        .await;
    let before = redis_process_cpu(admin).await;
    let mut f = drive(client, op, ops(), tasks).await;
    let all = redis_process_cpu(admin).await - before;
    let n = ops() as f64;
    let (usec, commands) = redis_cpu(admin).await;
    f.redis_us = Some((usec / n, all / n, n / commands.max(1.0)));
    f
}

fn median(mut v: Vec<Figures>) -> Figures {
    v.sort_by(|a, b| a.ops_per_s.total_cmp(&b.ops_per_s));
    v.swap_remove(v.len() / 2)
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing.
    let server = match fusebox_testkit::RedisServer::try_start(&[]) {
        Ok(server) => server,
        Err(why) => return eprintln!("{why}"),
    };
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fusebox = Client::Fusebox(Cache::builder().name("bench").redis_url(&url)
.build().unwrap());
        let deadline = Duration::from_millis(250);
        let redis_client = redis::Client::open(url.as_str()).unwrap();
        let over_manager = Client::Manager(
            Cache::builder()
                .name("manager")
                .backend(ClientBackend::new(
                    redis::aio::ConnectionManager::new(redis_client.clone())
                        .await
                        .unwrap(),
                    deadline,
                ))
.build()
                .unwrap(),
        );
        let over_multiplexed = Client::Multiplexed(
            Cache::builder()
                .name("multiplexed")
                .backend(ClientBackend::new(
                    redis_client.get_multiplexed_async_connection().await.unwrap(),
                    deadline,
                ))
.build()
                .unwrap(),
        );
        let over_bb8 = Client::OverBb8(
            Cache::builder()
                .name("bb8")
                .backend(Bb8Backend::new(
                    bb8::Pool::builder()
                        .build(bb8_redis::RedisConnectionManager::new(url.as_str()).unwrap())
                        .await
                        .unwrap(),
                    deadline,
                ))
.build()
                .unwrap(),
        );
        let over_deadpool = Client::OverDeadpool(
            Cache::builder()
                .name("deadpool")
                .backend(DeadpoolBackend::new(
                    deadpool_redis::Config::from_url(url.as_str())
                        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                        .unwrap(),
                    deadline,
                ))
.build()
                .unwrap(),
        );
        let bb8 = Client::Bb8(
            bb8::Pool::builder()
                .build(bb8_redis::RedisConnectionManager::new(url.as_str()).unwrap())
                .await
                .unwrap(),
        );
        let raw_conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let guarded = Client::Guarded(
            fusebox::watchdog::ExpiryGuard::builder()
                .expire("key:*", Duration::from_secs(3600))
                .wrap(raw_conn.clone())
                .unwrap(),
        );
        let raw = Client::Raw(raw_conn);
        let clients = [
            ("raw redis MultiplexedConnection (one, shared)", raw),
            ("raw MultiplexedConnection in an ExpiryGuard (SET given PX)", guarded),
            ("fusebox Cache (defaults: breaker, fail-open, deadlines)", fusebox),
            ("fusebox Cache over ClientBackend<ConnectionManager>", over_manager),
            ("fusebox Cache over ClientBackend<MultiplexedConnection>", over_multiplexed),
            ("fusebox Cache over Bb8Backend (bb8-redis defaults)", over_bb8),
            ("fusebox Cache over DeadpoolBackend (deadpool-redis defaults)", over_deadpool),
            ("stock bb8-redis 0.26 (defaults)", bb8),
        ];
        let mut admin = redis_client.get_multiplexed_async_connection().await.unwrap();
        let concurrency = std::env::var("FUSEBOX_BENCH_TASKS").unwrap_or_else(|_| TASKS.to_string());
        for tasks in concurrency.split(',').filter_map(|t| t.trim().parse::<usize>().ok()) {
            println!(
                "{tasks} concurrent tasks, {} ops per round, median of {ROUNDS} interleaved rounds (by throughput), 100-byte values, 1000 keys; Redis µs: Redis's CPU per operation, in its commands (INFO commandstats) and in all (INFO cpu)",
                ops()
            );
            println!("| client | op | ops/s | p50 µs | p99 µs | Redis µs (commands) | Redis µs (all) | ops per command | failed |");
            println!("|---|---|---|---|---|---|---|---|---|");
            table(&clients, tasks.max(1), Some(&mut admin)).await;
            println!();
        }
    });
    drop(server);
    near(&rt);
    cluster(&rt);
    open_breaker_get();
}

/// The same on a 3-primary Redis Cluster: through the cache over
/// `ClusterBackend`, and a raw redis-rs cluster connection.
fn cluster(rt: &tokio::runtime::Runtime) {
    let cluster = match fusebox_testkit::RedisCluster::try_start(
        3,
        0,
        &["--cluster-require-full-coverage", "no"],
    ) {
        Ok(cluster) => cluster,
        Err(why) => return eprintln!("no cluster: {why}"),
    };
    rt.block_on(async {
        let urls = cluster.urls();
        let raw = redis::cluster::ClusterClient::new(urls.clone())
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();
        let backend = ClusterBackend::new(&urls, Duration::from_millis(250)).unwrap();
        let cache = Cache::builder()
            .name("cluster")
            .backend(backend.clone())
            .build()
            .unwrap();
        println!();
        println!("Redis Cluster, 3 primaries on this machine:");
        println!("| client | op | ops/s | p50 µs | p99 µs | Redis µs (commands) | Redis µs (all) | ops per command | failed |");
        println!("|---|---|---|---|---|---|---|---|---|");
        table(&[
            ("raw redis-rs ClusterConnection (one, shared)", Client::RawCluster(raw.clone())),
            ("fusebox Cache over ClusterBackend", Client::OverCluster(cache.clone())),
            (
                "fusebox Cache over ClientBackend<ClusterConnection> (one breaker)",
                Client::OverClusterConn(
                    Cache::builder()
                        .name("cluster-client")
                        .backend(ClientBackend::new(raw.clone(), Duration::from_millis(250)))
                        .build()
                        .unwrap(),
                ),
            ),
        ], TASKS, None)
        .await;
        // One shard's breaker open: what a `get` of its keys costs then.
        // (Its breaker exists once the key was used: not when
        // FUSEBOX_BENCH_ONLY left the cluster's clients out.)
        let _ = cache.get("key:1").await;
        let Some(breaker) = backend.primary_of(b"key:1").and_then(|a| backend.shard_breaker(&a)) else {
            return println!("(the cluster's map was not loaded: no open-shard figure)");
        };
        breaker.force_open();
        let (best, n) = open_get_ns(&cache).await;
        println!();
        println!("Cluster, one shard's breaker open: `Cache::get` of its key = {best:.0} ns per call (best of 5 × {n})");
    });
}

/// Each op on each client: warm-up, then interleaved rounds; one table row
/// per client and op, with the median round. With `admin`, a connection to
/// the one Redis the clients use, Redis's own CPU per operation too.
async fn table(
    clients: &[(&str, Client)],
    tasks: usize,
    mut admin: Option<&mut redis::aio::MultiplexedConnection>,
) {
    let only = std::env::var("FUSEBOX_BENCH_ONLY").unwrap_or_default();
    for op in [Op::Set, Op::Get] {
        let name = if op == Op::Get { "GET" } else { "SET" };
        let chosen: Vec<_> = clients
            .iter()
            .filter(|(l, _)| only.split(',').any(|o| l.contains(o)))
            .collect();
        for (_, client) in &chosen {
            drive(client, op, WARMUP, tasks).await;
        }
        // Rounds interleave the clients, so that a slow spell of this
        // noisy machine hits them all alike.
        let mut rounds: Vec<Vec<Figures>> = chosen.iter().map(|_| Vec::new()).collect();
        for _ in 0..ROUNDS {
            for (i, (_, client)) in chosen.iter().enumerate() {
                rounds[i].push(match admin.as_deref_mut() {
                    Some(admin) => measured(client, op, tasks, admin).await,
                    None => drive(client, op, OPS, tasks).await,
                });
            }
        }
        for ((label, _), figures) in chosen.iter().zip(rounds) {
            let f = median(figures);
            let cpu = f
                .redis_us
                .map_or("– | – | –".to_string(), |(cmd, all, per)| {
                    format!("{cmd:.2} | {all:.2} | {per:.1}")
                });
            println!(
                "| {label} | {name} | {:.0} | {:.0} | {:.0} | {cpu} | {} |",
                f.ops_per_s, f.p50_us, f.p99_us, f.failed
            );
        }
    }
}

/// The best of 5 × 1 M `get`s of `key:1`, in ns per call.
async fn open_get_ns<B: Backend>(cache: &Cache<B>) -> (f64, u32) {
    let n = 1_000_000u32;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(cache.get(std::hint::black_box("key:1")).await);
        }
        best = best.min(start.elapsed().as_nanos() as f64 / f64::from(n));
    }
    (best, n)
}

/// Redis down, breaker open: what a `get` costs then.
fn open_breaker_get() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let port = fusebox_testkit::free_port();
        let cache = Cache::builder()
            .name("down")
            .redis_url(format!("redis://127.0.0.1:{port}"))
            .build()
            .unwrap();
        while cache.breaker().state() == fusebox::breaker::State::Closed {
            cache.get("k").await;
        }
        cache.breaker().force_open();
        let (best, n) = open_get_ns(&cache).await;
        println!();
        println!(
            "Redis down, breaker open: `Cache::get` = {best:.0} ns per call (best of 5 × {n})"
        );
    });
}

/// The near cache: a hot key's GET through it against a raw multiplexed
/// connection (64 tasks, one key), and how long another client's write
/// takes to stop the old value being served.
fn near(rt: &tokio::runtime::Runtime) {
    let server = match fusebox_testkit::RedisServer::try_start(&[]) {
        Ok(server) => server,
        Err(why) => return eprintln!("{why}"),
    };
    let url = server.url();
    rt.block_on(async {
        let near = Cache::builder()
            .name("near")
            .prefix("near:")
            .near_cache(NearCache::new())
            .redis_url(&url)
            .build()
            .unwrap();
        let start = Instant::now();
        while !near.near_stats().is_some_and(|s| s.fresh) {
            assert!(start.elapsed() < Duration::from_secs(10), "no tracking");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        let () = raw.set(HOT, &VALUE[..]).await.unwrap();
        let () = raw.set(format!("near:{HOT}"), &VALUE[..]).await.unwrap();
        println!();
        println!("A hot key (one key, {TASKS} tasks), through the near cache and raw:");
        println!("| client | op | ops/s | p50 µs | p99 µs | failed |");
        println!("|---|---|---|---|---|---|");
        hot_table(&[
            ("raw redis MultiplexedConnection (one, shared)", Client::Raw(raw.clone())),
            ("fusebox Cache with NearCache (tracking on)", Client::Fusebox(near.clone())),
        ])
        .await;
        let s = near.near_stats().unwrap();
        println!("near cache after the runs: {} L1 hits, {} Redis hits, {} misses", s.l1_hits, s.hits, s.misses);

        // Invalidation: another client writes; how long until the cache
        // stops serving the old value (from sending the write).
        let mut took = Vec::with_capacity(INVALIDATIONS);
        for i in 0..INVALIDATIONS {
            let old = near.get(HOT).await;
            assert!(near.get(HOT).await == old);
            let new = format!("v{i}");
            let t = Instant::now();
            let () = raw.set(format!("near:{HOT}"), &new).await.unwrap();
            loop {
                if near.get(HOT).await.as_deref() == Some(new.as_bytes()) {
                    break;
                }
                assert!(t.elapsed() < Duration::from_secs(5), "never invalidated");
                tokio::task::yield_now().await;
            }
            took.push(t.elapsed().as_nanos() as u64);
        }
        took.sort_unstable();
        let pct = |p: f64| took[((took.len() - 1) as f64 * p) as usize] as f64 / 1e3;
        println!(
            "Invalidation (another client's SET until the new value is read, {INVALIDATIONS} times): p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    });
    drop(server);
}

/// `hot` GETs of one key per client, in interleaved rounds.
async fn hot_table(clients: &[(&str, Client)]) {
    for (_, client) in clients {
        drive_keys(client, Op::Get, WARMUP, &[HOT], TASKS).await;
    }
    let mut rounds: Vec<Vec<Figures>> = clients.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (i, (_, client)) in clients.iter().enumerate() {
            rounds[i].push(drive_keys(client, Op::Get, OPS, &[HOT], TASKS).await);
        }
    }
    for ((label, _), figures) in clients.iter().zip(rounds) {
        let f = median(figures);
        println!(
            "| {label} | GET (hot key) | {:.0} | {:.1} | {:.1} | {} |",
            f.ops_per_s, f.p50_us, f.p99_us, f.failed
        );
    }
}
