//! A one-screen memory check-up of any Redis, read-only:
//!
//! ```sh
//! cargo run --example doctor -- redis://127.0.0.1:6379 [seconds]
//! ```
//!
//! Watches for a few seconds (default 5: `INFO` every 500 ms, a paced
//! `SCAN` sample of at most 500 keys per round at 5 000 keys/s — `SCAN`,
//! `TTL` and `MEMORY USAGE` only, nothing is written), then prints usage,
//! growth, dangerous settings and the key patterns holding memory without a
//! TTL. Exit code: 0 healthy, 1 warning, 2 critical, 3 bad arguments.

use std::time::Duration;

use fusebox::watchdog::{Severity, Watchdog};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let seconds: u64 = match args.next().map(|s| s.parse()) {
        None => 5,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            eprintln!("usage: doctor [redis://host:port] [seconds ≥ 1]");
            std::process::exit(3);
        }
    };
    let watchdog = Watchdog::builder()
        .name("doctor")
        .interval(Duration::from_millis(500))
        .timeout(Duration::from_secs(1))
        .min_span(Duration::from_secs(seconds.clamp(2, 60) * 2 / 3))
        .horizon(Duration::from_secs(3600))
        .samples_per_round(500)
        .keys_per_second(5000)
        .start(&url);
    let watchdog = match watchdog {
        Ok(w) => w,
        Err(e) => {
            eprintln!("doctor: {e}");
            std::process::exit(3);
        }
    };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let report = watchdog.report();
    // Never print the URL: it may hold a password.
    println!("fusebox doctor — {} s of watching\n", seconds);
    print!("{report}");
    let severity = report.severity();
    println!("\nverdict: {severity:?}");
    std::process::exit(match severity {
        Severity::Ok => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    });
}
