//! The HTTP response cache's hit path, end to end: an axum server with
//! `HttpCacheLayer` over a real Redis, one cached page, and 64 HTTP/1.1
//! keep-alive connections from a hyper client in the same process, each
//! sending its next request as soon as the last answer's body is read.
//! Rounds of the layer alternate with rounds of the same handler without
//! it (what the server and client cost alone); each reports requests per
//! second and p50/p99 latency, and every response the layer gave is checked
//! to be a hit.
//!
//! `cargo bench -p fusebox-benches --bench http`
//!
//! `FUSEBOX_BENCH_SECONDS=N` makes each round N seconds (default 3);
//! `FUSEBOX_BENCH_ROUNDS=N` runs N rounds of each (default 5);
//! `FUSEBOX_BENCH_CONNS=N` opens N connections (default 64);
//! `FUSEBOX_BENCH_ONLY=fusebox` runs only the layer. `scripts/bench-http.sh`
//! runs this bench at an earlier commit and at the work tree's, alternately.
//!
//! Starts its own `redis-server` on a free port (`--save ''`), never 6379.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use fusebox::cache::Cache;
use fusebox::http::HttpCacheLayer;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// The page: about the size of a small HTML document.
const PAGE: &str = concat!(
    "<!doctype html><html><head><title>bench</title></head><body>",
    "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.</p>",
    "<p>Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat.</p>",
    "<p>Duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur.</p>",
    "<p>Excepteur sint occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum.</p>",
    "</body></html>\n"
);

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Serves `app` on a free port of the loopback interface.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|s| {
            let _ = s.set_nodelay(true);
        });
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

fn app() -> Router {
    Router::new().route(
        "/page",
        get(|| async { ([("cache-control", "public, max-age=3600")], PAGE) }),
    )
}

/// One round's figures.
struct Round {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// Responses without `x-cache: hit` (the layer's rounds only).
    not_hits: u64,
}

/// `conns` connections to `addr`, each requesting the page back to back
/// for `length`; `layer`: whether to count responses that are not hits.
async fn round(addr: SocketAddr, conns: usize, length: Duration, layer: bool) -> Round {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let (mut latencies, mut not_hits) = (Vec::with_capacity(1 << 16), 0u64);
            while !stop.load(Ordering::Relaxed) {
                send.ready().await.unwrap();
                let req = http::Request::get("/page")
                    .header("host", "bench.example")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let start = Instant::now();
                let res = send.send_request(req).await.unwrap();
                let hit = res.headers().get("x-cache").map(|v| v.as_bytes()) == Some(b"hit");
                let body = res.into_body().collect().await.unwrap().to_bytes();
                latencies.push(start.elapsed());
                assert_eq!(body.len(), PAGE.len());
                not_hits += u64::from(layer && !hit);
            }
            (latencies, not_hits)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut not_hits = 0;
    for task in tasks {
        let (latencies, misses) = task.await.unwrap();
        all.extend(latencies);
        not_hits += misses;
    }
    let elapsed = started.elapsed();
    assert!(!all.is_empty(), "no request completed in {length:?}");
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Round {
        per_second: all.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        not_hits,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let server = match fusebox_testkit::RedisServer::try_start(&[]) {
        Ok(server) => server,
        Err(why) => return eprintln!("{why}"),
    };
    let seconds = Duration::from_secs(env("FUSEBOX_BENCH_SECONDS", 3));
    let rounds = env("FUSEBOX_BENCH_ROUNDS", 5) as usize;
    let conns = env("FUSEBOX_BENCH_CONNS", 64) as usize;
    let only = std::env::var("FUSEBOX_BENCH_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = Cache::builder()
            .name("bench")
            .redis_url(server.url())
            .build()
            .unwrap();
        let layered = serve(app().layer(HttpCacheLayer::new(cache))).await;
        let plain = serve(app()).await;
        // The page stored, and both servers warm.
        round(layered, conns, Duration::from_secs(1), false).await;
        round(plain, conns, Duration::from_secs(1), false).await;
        let mut cases = vec![("fusebox HttpCacheLayer, Redis hit", layered, true)];
        if !only.contains("fusebox") {
            cases.push(("the handler alone (no cache)", plain, false));
        }
        let mut figures = vec![(Vec::new(), Vec::new(), Vec::new()); cases.len()];
        for r in 0..rounds {
            for (i, &(name, addr, layer)) in cases.iter().enumerate() {
                let got = round(addr, conns, seconds, layer).await;
                assert_eq!(got.not_hits, 0, "{name}: responses that were not hits");
                println!(
                    "round {r} {name}: {:.0} req/s, p50 {:?}, p99 {:?}",
                    got.per_second, got.p50, got.p99
                );
                figures[i].0.push(got.per_second);
                figures[i].1.push(got.p50.as_secs_f64() * 1e6);
                figures[i].2.push(got.p99.as_secs_f64() * 1e6);
            }
        }
        println!("\n{conns} connections, {rounds} rounds of {seconds:?}; medians:\n");
        println!("| case | req/s | p50 µs | p99 µs |\n|---|---|---|---|");
        for ((name, _, _), (rps, p50, p99)) in cases.iter().zip(figures) {
            println!(
                "| {name} | {:.0} | {:.0} | {:.0} |",
                median(rps),
                median(p50),
                median(p99)
            );
        }
    });
}
