//! Outbound calls behind a circuit breaker, with the HTTP clients people
//! use: hyper-util's `Client` and reqwest's, each as it is. An upstream on
//! loopback answers, then fails with `500`s, then hangs; the breakers trip,
//! answer at once with an error the caller falls back on, and close again
//! once the upstream recovers.
//!
//! ```text
//! cargo run --example outbound --features http,reqwest
//! ```

use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use fusebox::breaker::Config;
use fusebox::http::HttpClientBreakerLayer;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, Layer, Service, ServiceExt};

/// What the upstream does now.
const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const HUNG: u8 = 2;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mode = Arc::new(AtomicU8::new(HEALTHY));
    let addr = upstream(mode.clone()).await?;
    let config = |name: &str| {
        Config::builder()
            .name(name)
            .consecutive_failures(3)
            .open_for(Duration::from_millis(500))
            .open_backoff(1.0, Duration::from_millis(500))
            .build()
    };

    // hyper-util's client, as built for any other use.
    let hyper_layer = HttpClientBreakerLayer::new(config("inventory (hyper-util)")?)
        .deadline(Duration::from_millis(200));
    let mut inventory = hyper_layer.layer(Client::builder(TokioExecutor::new()).build_http());
    // reqwest's client, likewise.
    let reqwest_layer = HttpClientBreakerLayer::new(config("prices (reqwest)")?)
        .deadline(Duration::from_millis(200));
    let mut prices = reqwest_layer.layer(reqwest::Client::new());

    for (phase, next) in [
        ("healthy", FAILING),
        ("failing with 500", HUNG),
        ("hung", HEALTHY),
        ("recovered", HEALTHY),
    ] {
        println!("-- upstream {phase}");
        if phase != "healthy" {
            // Past any open period: the next call is a probe.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        for _ in 0..5 {
            let start = Instant::now();
            let req = http::Request::get(format!("http://{addr}/stock"))
                .body(Empty::<bytes::Bytes>::new())?;
            let stock = match inventory.ready().await?.call(req).await {
                Ok(res) if res.status().is_success() => format!("{}", res.status()),
                Ok(res) => format!("{} (a failure)", res.status()),
                Err(e) if e.is_open() => "rejected: fallback, cached stock".to_owned(),
                Err(e) => format!("error: {e}"),
            };
            let hyper_took = start.elapsed();
            let start = Instant::now();
            let req = reqwest::Request::new(
                reqwest::Method::GET,
                format!("http://{addr}/price").parse()?,
            );
            let price = match prices.ready().await?.call(req).await {
                Ok(res) if res.status().is_success() => format!("{}", res.status()),
                Ok(res) => format!("{} (a failure)", res.status()),
                Err(e) if e.is_open() => "rejected: fallback, last known price".to_owned(),
                Err(e) => format!("error: {e}"),
            };
            println!(
                "  hyper-util: {stock} ({hyper_took:.1?}, {}) | reqwest: {price} ({:.1?}, {})",
                hyper_layer.breaker().state(),
                start.elapsed(),
                reqwest_layer.breaker().state(),
            );
        }
        mode.store(next, SeqCst);
    }
    Ok(())
}

/// The upstream: `/stock` and `/price` answer, fail or hang with `mode`.
async fn upstream(mode: Arc<AtomicU8>) -> Result<std::net::SocketAddr, BoxError> {
    let handler = move || {
        let mode = mode.clone();
        async move {
            match mode.load(SeqCst) {
                FAILING => Err(StatusCode::INTERNAL_SERVER_ERROR),
                HUNG => std::future::pending().await,
                _ => Ok("42"),
            }
        }
    };
    let app = Router::new()
        .route("/stock", get(handler.clone()))
        .route("/price", get(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}
