//! An axum service behind fusebox, showing what a cache outage looks like
//! from the outside: nothing.
//!
//! ```sh
//! cargo run --example axum --features http            # a scripted demo, then exits
//! cargo run --example axum --features http -- serve   # keeps serving on 127.0.0.1:3000
//! ```
//!
//! Starts its own `redis-server` on a free port if one is on `PATH`
//! (otherwise uses `REDIS_URL`, or an address where nothing listens, and
//! shows the fail-open path only). Routes:
//!
//! * `GET /page/{id}`: a slow handler (50 ms) whose responses say
//!   `Cache-Control: public, max-age=60`: cached.
//! * `GET /health`: the breaker's state and the watchdog's report — degraded
//!   under alerts, never failing (a cache is optional).

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use fusebox::cache::Cache;
use fusebox::http::HttpCacheLayer;
use fusebox::watchdog::Watchdog;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn page(Path(id): Path<String>) -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(50)).await;
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        format!("page {id}\n"),
    )
}

async fn health(State(cache): State<Cache>) -> impl IntoResponse {
    let breaker = cache.breaker().state().to_string();
    let (status, detail) = match cache.watchdog() {
        Some(w) => {
            let r = w.report();
            (format!("{:?}", r.status).to_lowercase(), r.to_string())
        }
        None => ("unknown".into(), String::new()),
    };
    // Always 200: the cache is optional, so its state degrades, never fails.
    format!("cache breaker: {breaker}\nwatchdog: {status}\n{detail}")
}

async fn get_once(addr: std::net::SocketAddr, path: &str) -> (String, Duration, String) {
    let start = Instant::now();
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return ("connect failed".into(), start.elapsed(), String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n");
    let mut raw = Vec::new();
    if s.write_all(req.as_bytes()).await.is_err() || s.read_to_end(&mut raw).await.is_err() {
        return ("request failed".into(), start.elapsed(), String::new());
    }
    let text = String::from_utf8_lossy(&raw);
    let status = text.get(9..12).unwrap_or("???").to_owned();
    let x = text
        .lines()
        .find_map(|l| l.strip_prefix("x-cache: "))
        .unwrap_or("-")
        .to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (format!("{status} x-cache: {x:<6}"), start.elapsed(), body)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let serve_forever = std::env::args().nth(1).as_deref() == Some("serve");
    // A redis-server of our own on a free port, if one is installed.
    let mut own = fusebox_testkit::RedisServer::try_start(&[]).ok();
    let url = match (&own, std::env::var("REDIS_URL")) {
        (Some(redis), _) => redis.url(),
        (None, Ok(url)) => url,
        (None, Err(_)) => {
            eprintln!(
                "redis-server not found ({}):",
                fusebox_testkit::INSTALL_HINT
            );
            eprintln!("showing the fail-open path against an address where nothing listens");
            format!("redis://127.0.0.1:{}", fusebox_testkit::free_port())
        }
    };
    let cache = Cache::builder()
        .name("axum-demo")
        .watchdog(Watchdog::builder().interval(Duration::from_secs(1)))
        .redis_url(&url)
        .build()?;
    let app = Router::new()
        .route("/page/{id}", get(page))
        .layer(HttpCacheLayer::new(cache.clone()))
        .route("/health", get(health))
        .with_state(cache.clone());

    let bind = if serve_forever {
        "127.0.0.1:3000"
    } else {
        "127.0.0.1:0"
    };
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    if serve_forever {
        println!("serving on http://{addr} (try /page/1 twice, and /health)");
        axum::serve(listener, app).await?;
        return Ok(());
    }
    tokio::spawn(async move { axum::serve(listener, app).await });
    let show = |label: &'static str| async move {
        let (line, took, _) = get_once(addr, "/page/1").await;
        println!(
            "{label:<32} GET /page/1 -> {line} in {:>6.1} ms",
            took.as_secs_f64() * 1e3
        );
    };
    show("first request").await;
    show("second request").await;
    if let Some(redis) = own.take() {
        drop(redis);
        println!("-- redis-server killed --");
        for i in 1..=7 {
            show(if i == 1 { "redis down" } else { "" }).await;
        }
        let breaker = cache.breaker().state().to_string();
        println!("breaker: {breaker}; every request above answered by the handler");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _, body) = get_once(addr, "/health").await;
    println!("GET /health -> {}\n{body}", &status[..3]);
    Ok(())
}
