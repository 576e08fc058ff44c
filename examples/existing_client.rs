//! The fail-open stack over a redis client you already have.
//!
//! ```sh
//! redis-server --port 6390 --save '' --daemonize yes
//! cargo run --example existing_client -- redis://127.0.0.1:6390
//! redis-cli -p 6390 shutdown nosave
//! ```
//!
//! Builds the `Cache` over your `ConnectionManager` (with a deadline per
//! call), writes and reads through it, then shows what callers see when
//! the client points at a Redis that stops answering: misses, in bounded
//! time, and then none at all once the breaker opens.

use std::time::{Duration, Instant};

use fusebox::backend::ClientBackend;
use fusebox::cache::Cache;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url.as_str())?;
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_millis(100)))
        .set_response_timeout(Some(Duration::from_millis(100)));
    // Your client, as your service already makes it.
    let manager = match ConnectionManager::new_with_config(client, config).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("cannot reach Redis at {url} ({e}); start one with:");
            eprintln!("  redis-server --port 6390 --save '' --daemonize yes");
            eprintln!("  cargo run --example existing_client -- redis://127.0.0.1:6390");
            std::process::exit(2);
        }
    };

    let cache = Cache::builder()
        .name("example")
        .prefix("fusebox-example:")
        .default_ttl(Duration::from_secs(60))
        .backend(ClientBackend::new(manager, Duration::from_millis(100)))
        .build()?;

    println!(
        "set greeting  -> {:?}",
        cache.set("greeting", "hello").await
    );
    let got = cache.get("greeting").await;
    println!(
        "get greeting  -> {:?}",
        got.as_deref().map(String::from_utf8_lossy)
    );
    let loaded = cache
        .get_or_load("answer", || async { Ok::<_, std::io::Error>("42") })
        .await?;
    println!("get_or_load   -> {}", String::from_utf8_lossy(&loaded));
    println!("breaker       -> {}", cache.breaker().state());

    // The same calls against an address where nothing answers in time.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dead = format!("redis://{}", hole.local_addr()?);
    let dead_client = redis::Client::open(dead.as_str())?;
    let dead_manager = ConnectionManager::new_lazy_with_config(
        dead_client,
        ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(Duration::from_millis(50)))
            .set_response_timeout(Some(Duration::from_millis(50))),
    )?;
    let down = Cache::builder()
        .name("example-down")
        .backend(ClientBackend::new(dead_manager, Duration::from_millis(100)))
        .build()?;
    println!("\nagainst a Redis that never answers:");
    for i in 1..=8 {
        let start = Instant::now();
        let v = down.get("greeting").await;
        println!(
            "  get #{i}: {:?} in {:>6.1} ms, breaker {}",
            v,
            start.elapsed().as_secs_f64() * 1e3,
            down.breaker().state()
        );
    }
    drop(hole);
    Ok(())
}
