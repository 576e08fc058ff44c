//! A circuit breaker around a flaky backend: watch it trip, reject fast,
//! probe, and recover.
//!
//! ```text
//! cargo run --example breaker
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fusebox::breaker::{CircuitBreakerLayer, Config, Error};
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let layer = CircuitBreakerLayer::new(
        Config::builder()
            .name("backend")
            .count_window(20)
            .minimum_calls(10)
            .failure_rate(0.5)
            .open_for(Duration::from_millis(300))
            .open_backoff(2.0, Duration::from_secs(2))
            .build()?,
    );
    let breaker = layer.breaker().clone();

    // The backend: takes 5 ms per call, and fails while `down` is set.
    let down = Arc::new(AtomicBool::new(false));
    let backend = {
        let down = down.clone();
        service_fn(move |n: u32| {
            let down = down.load(Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if down {
                    Err::<u32, BoxError>("backend unavailable".into())
                } else {
                    Ok(n)
                }
            }
        })
    };
    let mut svc = layer.layer(backend);

    let start = Instant::now();
    let mut events = breaker.subscribe();
    tokio::spawn(async move {
        while let Ok(t) = events.recv().await {
            let ms = t.at.duration_since(start).as_millis();
            println!(
                "{ms:>5} ms  {} -> {}  ({})",
                t.from,
                t.to,
                t.reason.as_str()
            );
        }
    });

    println!("   time  transition (reason)");
    let (mut ok, mut failed, mut rejected) = (0, 0, 0);
    for n in 0.. {
        let elapsed = start.elapsed();
        // Down between 0.5 s and 1.5 s.
        down.store(
            elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(1500),
            Ordering::Relaxed,
        );
        match svc.ready().await?.call(n).await {
            Ok(_) => ok += 1,
            Err(Error::Open(_)) => {
                rejected += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(_) => failed += 1,
        }
        if elapsed > Duration::from_millis(3500) {
            break;
        }
    }
    tokio::task::yield_now().await;
    println!();
    println!("calls that succeeded:                  {ok}");
    println!("calls that reached the failing backend: {failed}");
    println!("calls rejected at once by the breaker:  {rejected}");
    println!("final state: {}", breaker.state());
    Ok(())
}
