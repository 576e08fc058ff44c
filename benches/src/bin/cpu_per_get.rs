//! Where the CPU of a `GET` goes: tasks sending `GET`s for a few seconds
//! through one client, and the CPU this process and Redis each spent per
//! key (from `/proc/self/stat` and `INFO cpu`). The criterion-free
//! companion of `cargo bench --bench redis`, for profiling one client at a
//! time (`perf record -- target/release/cpu_per_get fusebox`).
//!
//! ```sh
//! cargo build --release -p fusebox-benches --bin cpu_per_get
//! target/release/cpu_per_get <raw|mget10|fusebox|unbatched|stack|rawset|set> [seconds=5] [tasks=64]
//! ```
//!
//! - `raw`: one redis-rs `MultiplexedConnection`, one `GET` per call;
//! - `mget10`: the same connection, each task sending `MGET`s of 10 keys
//!   (one wake-up per 10 keys: what batching cannot give a caller);
//! - `fusebox`: the cache with its defaults (concurrent `get`s batched);
//! - `unbatched`: the cache with `max_batch(1)`;
//! - `stack`: the cache over a backend that answers every `GET` at once,
//!   with no I/O: the cost of the call's own path (Redis idles);
//! - `rawset` and `set`: `SET`s of 100 bytes with a TTL, raw and through
//!   the cache.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusebox::backend::RedisConfig;
use fusebox::cache::{Cache, CacheRequest, CacheResponse, Fault, Reason};
use fusebox_benches::redis_info::{command_stat, redis_process_cpu};

/// A backend that answers every call at once, with a 100-byte value.
#[derive(Clone)]
struct Instant100;

/// Never returned.
#[derive(Debug)]
struct Never;

impl Fault for Never {
    fn reason(&self) -> Reason {
        Reason::Io
    }
}

impl tower::Service<CacheRequest> for Instant100 {
    type Response = CacheResponse;
    type Error = Never;
    type Future = std::future::Ready<Result<CacheResponse, Never>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Never>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: CacheRequest) -> Self::Future {
        std::future::ready(Ok(CacheResponse::Value(Some(bytes::Bytes::from_static(
            &[b'v'; 100],
        )))))
    }
}

/// This process's user and system CPU so far, in seconds.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which may hold spaces).
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, in clock ticks (100 a second on Linux).
    (ticks(11) + ticks(12)) / 100.0
}

fn key(task: usize, n: usize) -> String {
    format!("key:{}", (task * 7919 + n) % 1000)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "fusebox".into());
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let tasks: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let server = match fusebox_testkit::RedisServer::try_start(&[]) {
        Ok(server) => server,
        Err(why) => return eprintln!("{why}"),
    };
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let client = redis::Client::open(url.as_str()).expect("url");
        let raw = client.get_multiplexed_async_connection().await.expect("connect");
        let batch = if mode == "unbatched" { 1 } else { 128 };
        // `CONNECTIONS=n` spreads the cache's reads (and writes) over n
        // connections instead of the default.
        let mut config = RedisConfig::builder(&url).max_batch(batch);
        if let Ok(n) = std::env::var("CONNECTIONS") {
            config = config.connections(n.parse().expect("CONNECTIONS"));
        }
        let config = config.build().expect("config");
        let cache = Cache::builder().name("cpu").redis(config).build().expect("cache");
        for i in 0..1000 {
            cache.set(format!("key:{i}"), vec![b'v'; 100]).await;
        }
        let stack = Cache::builder().name("stack").backend(Instant100).build().expect("cache");
        let mut admin = raw.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut admin).await.expect("RESETSTAT");
        let redis_before = redis_process_cpu(&mut admin).await / 1e6;
        let (cpu_before, start) = (process_cpu(), Instant::now());
        let mut handles = Vec::with_capacity(tasks);
        for task in 0..tasks {
            let (mut raw, stop, mode) = (raw.clone(), stop.clone(), mode.clone());
            let cache = if mode == "stack" { None } else { Some(cache.clone()) };
            let stack = stack.clone();
            handles.push(tokio::spawn(async move {
                let mut keys = 0usize;
                while !stop.load(Relaxed) {
                    match mode.as_str() {
                        "raw" => {
                            let v: Option<Vec<u8>> = redis::cmd("GET")
                                .arg(key(task, keys))
                                .query_async(&mut raw)
                                .await
                                .expect("GET");
                            assert!(v.is_some());
                            keys += 1;
                        }
                        "rawset" => {
                            let _: () = redis::cmd("SET")
                                .arg(key(task, keys))
                                .arg(&[b'v'; 100][..])
                                .arg("PX")
                                .arg(3_600_000)
                                .query_async(&mut raw)
                                .await
                                .expect("SET");
                            keys += 1;
                        }
                        "set" => {
                            let cache = cache.as_ref().expect("a cache");
                            assert!(cache.set(key(task, keys), vec![b'v'; 100]).await.is_done());
                            keys += 1;
                        }
                        "mget10" => {
                            let mut mget = redis::cmd("MGET");
                            for j in 0..10 {
                                mget.arg(key(task, keys + j));
                            }
                            let v: Vec<Option<Vec<u8>>> =
                                mget.query_async(&mut raw).await.expect("MGET");
                            assert!(v.iter().all(Option::is_some));
                            keys += 10;
                        }
                        _ => {
                            let found = match &cache {
                                Some(cache) => cache.get(key(task, keys)).await,
                                None => stack.get(key(task, keys)).await,
                            };
                            assert!(found.is_some());
                            keys += 1;
                            if cache.is_none() {
                                // Nothing to wait for: let the other tasks run.
                                tokio::task::yield_now().await;
                            }
                        }
                    }
                }
                keys
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Relaxed);
        let mut total = 0;
        for handle in handles {
            total += handle.await.expect("task");
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = process_cpu() - cpu_before;
        let redis = redis_process_cpu(&mut admin).await / 1e6 - redis_before;
        let per_key = |s: f64| s * 1e6 / total as f64;
        let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut admin).await.expect("INFO");
        let calls = |name: &str| command_stat(&stats, name, "calls");
        println!(
            "{mode}: {:.0} keys/s; client {:.2} cores, {:.2} µs a key; Redis {:.2} cores, {:.2} µs a key; {} GET, {} MGET, {} batch connections",
            total as f64 / wall,
            cpu / wall,
            per_key(cpu),
            redis / wall,
            per_key(redis),
            calls("get"),
            calls("mget"),
            calls("client|setname"),
        );
    });
}
