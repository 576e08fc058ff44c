//! Recovery after an outage of any length: hits resume within about the
//! breaker's open period (0.4–0.5 s, not growing) of Redis answering again,
//! not after a back-off that grew during the outage; meanwhile Redis sees a
//! few connection attempts per second.
//!
//! The outage lasts `FUSEBOX_OUTAGE_SECS` seconds (default 3). For the
//! figures in the README:
//!
//! ```sh
//! FUSEBOX_OUTAGE_SECS=20 cargo test --all-features --test cache recovery -- --nocapture
//! FUSEBOX_OUTAGE_SECS=180 cargo test --all-features --test cache recovery -- --nocapture
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusebox::cache::{Cache, Write};
use fusebox::telemetry::REDIS_CONNECT_ERRORS_TOTAL;

use crate::common::{counter, metrics, RedisServer};

fn outage() -> Duration {
    let secs = std::env::var("FUSEBOX_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    Duration::from_secs(secs)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGSTOP: connections hang.
    Paused,
    /// Killed and restarted on the same port: connections refused.
    Down,
}

async fn hits_resume_after(fault: Fault) {
    metrics();
    let mut redis = RedisServer::start(&[]);
    let name = format!("recovery-{fault:?}");
    // The production defaults (50 ms deadlines, the cache's own breaker):
    // recovery time is what is measured.
    let cache = Cache::builder()
        .name(name.as_str())
        .redis_url(redis.url())
        .build()
        .unwrap();
    assert_eq!(cache.set("k", "v").await, Write::Done);
    let addr = format!("127.0.0.1:{}", redis.port());
    let attempts = || counter(REDIS_CONNECT_ERRORS_TOTAL, &[("addr", &addr)]);

    // Readers keep the cache busy throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (cache, stop, reads) = (cache.clone(), stop.clone(), reads.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(SeqCst) {
                let _ = cache.get("k").await;
                reads.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }

    let outage = outage();
    match fault {
        Fault::Paused => redis.pause(),
        Fault::Down => redis.kill(),
    }
    let before = attempts();
    // The outage itself: time passing is what is tested.
    tokio::time::sleep(outage).await;
    let during = attempts() - before;
    match fault {
        Fault::Paused => redis.resume(),
        Fault::Down => {
            redis.restart();
            // A restarted Redis lost the key (no persistence): put it back
            // behind the cache's back.
            redis.cmd(&["SET", "k", "v"]);
        }
    }
    let answering = Instant::now();
    let mut first_hit = None;
    while answering.elapsed() < Duration::from_secs(10) {
        if cache.get("k").await.is_some() {
            first_hit = Some(answering.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    let per_second = during as f64 / outage.as_secs_f64();
    println!(
        "{fault:?} for {outage:?}: first hit {first_hit:?} after Redis answered; \
         {during} connect attempts ({per_second:.1}/s) during the outage; {} reads",
        reads.load(SeqCst)
    );
    let first_hit = first_hit.expect("hits resume");
    // The mechanism gives ~0.5 s; the bound leaves room for a loaded machine.
    assert!(first_hit < Duration::from_secs(2), "{first_hit:?}");
    assert!(
        per_second < 20.0,
        "{per_second:.1} connect attempts per second"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_resume_soon_after_a_hung_redis_answers_again() {
    hits_resume_after(Fault::Paused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_resume_soon_after_a_redis_that_was_down_restarts() {
    hits_resume_after(Fault::Down).await;
}
