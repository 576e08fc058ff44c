//! A soak: a service like the incident replay's, run for as long as asked
//! (30 minutes by default) through a cycle of real faults, with a figure
//! for everything that could leak printed every minute.
//!
//! ```sh
//! bash scripts/soak.sh            # 30 minutes
//! bash scripts/soak.sh 5          # any length, in minutes
//! cargo run --release --example soak --features http,cluster -- --minutes 30
//! ```
//!
//! The service: product pages and a per-user page behind fusebox's HTTP
//! cache, over a cache with a near cache (L1 kept fresh by client tracking)
//! and a watchdog, on a Redis of its own; clients that also use the cache
//! directly (reads, writes, single-flight loads); a second client writing
//! keys the first one reads; and a cache over a Redis Cluster of 3
//! primaries with a replica each.
//!
//! The faults, in a cycle: Redis killed and restarted, paused with
//! `SIGSTOP`, out of memory (`CONFIG SET maxmemory`), read-only (made a
//! replica of an empty server), its tracking connection killed
//! (`CLIENT KILL`), and a cluster primary killed, its replica promoted and
//! the old primary brought back as a replica.
//!
//! Every minute: resident memory, file descriptors, tokio tasks, Redis
//! connections, L1 bytes, single-flight keys and capacity, requests, wrong
//! values and errors surfaced. Wrong values are a page for another product
//! or user, a value for another key, an older value than this client's own
//! confirmed write or than another client's write confirmed 2 s before the
//! read while Redis was healthy, or an old page after a `POST`. The run
//! fails (exit 1) on any wrong value, any error surfaced to a client, or a
//! figure that grows without bound: the last third of the run's peak above
//! the middle third's by more than its tolerance.
//!
//! Starts its own `redis-server` processes on free ports.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod faults;
mod figures;
mod service;

/// What every task of the soak counts.
pub(crate) struct Soak {
    pub(crate) start: Instant,
    /// HTTP requests and direct cache calls answered.
    pub(crate) calls: AtomicU64,
    /// Answers from a cache (HTTP `x-cache: hit|stale`, a cache read with
    /// a value).
    pub(crate) cached: AtomicU64,
    /// Requests that failed or were answered with an unexpected status.
    pub(crate) errors: AtomicU64,
    /// Values that must not have been served.
    pub(crate) wrong: AtomicU64,
    /// Confirmed cluster writes the cluster lost in a failover (Redis
    /// replicates asynchronously): told, not counted as wrong.
    pub(crate) lost: AtomicU64,
    /// Values checked, by what they were checked for.
    pub(crate) checked: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Wrong values and errors by kind: how many, and the first few.
    pub(crate) examples: Mutex<std::collections::BTreeMap<&'static str, (u64, Vec<String>)>>,
    /// When Redis (the single one) was last seen healthy from: `None`
    /// during a fault.
    pub(crate) healthy_since: Mutex<Option<Instant>>,
    /// The faults of the current minute.
    pub(crate) faults: Mutex<Vec<String>>,
}

impl Soak {
    fn new() -> Arc<Soak> {
        Arc::new(Soak {
            start: Instant::now(),
            calls: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            examples: Mutex::default(),
            checked: Mutex::default(),
            healthy_since: Mutex::new(Some(Instant::now())),
            faults: Mutex::new(Vec::new()),
        })
    }

    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn note(&self, kind: &'static str, what: String) {
        println!("[{:>7.1} s] {what}", self.t());
        let mut examples = self.examples.lock().unwrap();
        let (n, first) = examples.entry(kind).or_default();
        *n += 1;
        if first.len() < 3 {
            first.push(format!("[{:.1} s] {what}", self.t()));
        }
    }

    /// A value was checked against the rule of `kind`.
    pub(crate) fn checked(&self, kind: &'static str) {
        *self.checked.lock().unwrap().entry(kind).or_default() += 1;
    }

    /// A value that must not have been served, of a `kind`.
    pub(crate) fn wrong(&self, kind: &'static str, what: String) {
        self.wrong.fetch_add(1, Relaxed);
        self.note(kind, format!("WRONG: {what}"));
    }

    /// An error a client saw.
    pub(crate) fn error(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        self.note("error surfaced", format!("ERROR: {what}"));
    }

    /// Redis has been healthy since long enough that every cache should
    /// see any write confirmed `settle` before now.
    pub(crate) fn settled(&self, settle: Duration) -> bool {
        self.healthy_since
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() >= settle)
    }

    /// A fault begins (`None` until `healed`).
    pub(crate) fn fault(&self, what: &str) {
        *self.healthy_since.lock().unwrap() = None;
        println!("[{:>7.1} s] fault: {what}", self.t());
        self.faults.lock().unwrap().push(what.to_owned());
    }

    /// The fault is over.
    pub(crate) fn healed(&self, what: &str) {
        *self.healthy_since.lock().unwrap() = Some(Instant::now());
        println!("[{:>7.1} s] healed: {what}", self.t());
    }
}

/// `--minutes N` (default 30; fractions allowed).
fn minutes() -> Result<f64, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--minutes") {
        None => Ok(30.0),
        Some(i) => args
            .get(i + 1)
            .and_then(|m| m.parse::<f64>().ok())
            .filter(|m| *m > 0.0 && m.is_finite())
            .ok_or_else(|| "--minutes takes a positive number".to_owned()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let minutes = minutes()?;
    let soak = Soak::new();
    let redis = match faults::Servers::start() {
        Ok(servers) => servers,
        Err(e) => {
            eprintln!("the soak needs redis-server: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "fusebox soak — {minutes} min; Redis on port {}, a spare on {}, a cluster on {:?}\n",
        redis.port, redis.spare_port, redis.cluster_ports
    );
    let service = service::start(&soak, &redis).await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = service::clients(&soak, &service, &stop);
    let cycle = tokio::spawn(faults::cycle(soak.clone(), redis.clone(), stop.clone()));
    // Ctrl-C or SIGTERM end the run early, and the servers still go.
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (stop, interrupted) = (stop.clone(), interrupted.clone());
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            println!("stopping early: the servers are being shut down");
            interrupted.store(true, Relaxed);
            stop.store(true, Relaxed);
        });
    }
    let sampler = figures::Sampler::new(&soak, &service, &redis);
    let rows = sampler
        .run(Duration::from_secs_f64(minutes * 60.0), &stop)
        .await;
    stop.store(true, Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let _ = cycle.await;
    let verdict = figures::verdict(&rows);
    let (wrong, errors) = (soak.wrong.load(Relaxed), soak.errors.load(Relaxed));
    println!("\nvalues checked, by rule:");
    for (kind, n) in soak.checked.lock().unwrap().iter() {
        println!("  {kind}: {n}");
    }
    println!();
    for (kind, (n, first)) in soak.examples.lock().unwrap().iter() {
        println!("{kind}: {n}");
        for e in first {
            println!("  {e}");
        }
    }
    println!(
        "\nwrong values: {wrong}; errors surfaced: {errors}; confirmed cluster writes lost in failovers (Redis replicates asynchronously): {}",
        soak.lost.load(Relaxed)
    );
    for line in &verdict.lines {
        println!("{line}");
    }
    drop(service);
    drop(redis);
    if wrong > 0 || errors > 0 || !verdict.flat {
        println!("\nsoak FAILED");
        std::process::exit(1);
    }
    if interrupted.load(Relaxed) {
        println!("\nsoak stopped early: nothing wrong so far, but not a full run");
        std::process::exit(130);
    }
    println!("\nsoak passed: every figure flat, 0 wrong values, 0 errors surfaced");
    Ok(())
}
