//! Two threads on one breaker: total calls per second with two threads
//! against one, every case measured in the same run.
//!
//! `cargo bench -p fusebox-benches --bench scaling`
//!
//! Each thread holds a clone of one service (sharing the circuit), waits on
//! a barrier, then makes the same number of calls. The CPU column is summed
//! thread CPU time over wall time: near 2.0 means both threads really ran at
//! once; a run near 1.0 had a core taken by something else and says nothing
//! about contention.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fusebox_benches::{baseline, failsafe_closed, fusebox, recloser, tower_resilience, Case};

const CALLS: u64 = 4_000_000;
const ROUNDS: usize = 5;

/// This thread's CPU time, from the scheduler's own accounting.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Runs `threads` threads of `CALLS` calls each; returns (calls/s, cpu/wall).
fn measure(case: &impl Case, threads: usize, handle: &tokio::runtime::Handle) -> (f64, f64) {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (mut case, barrier, handle) = (case.clone(), barrier.clone(), handle.clone());
            std::thread::spawn(move || {
                let _rt = handle.enter();
                case.call();
                barrier.wait();
                let cpu = thread_cpu();
                for _ in 0..CALLS {
                    std::hint::black_box(case.call());
                }
                (Instant::now(), thread_cpu() - cpu)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let end = results.iter().map(|r| r.0).max().unwrap();
    let wall = end - start;
    let cpu: Duration = results.iter().map(|r| r.1).sum();
    (
        (threads as u64 * CALLS) as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64(),
    )
}

fn median(mut v: Vec<(f64, f64)>) -> (f64, f64) {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v[v.len() / 2]
}

fn row(name: &str, case: impl Case, handle: &tokio::runtime::Handle) {
    let one = median((0..ROUNDS).map(|_| measure(&case, 1, handle)).collect());
    let two = median((0..ROUNDS).map(|_| measure(&case, 2, handle)).collect());
    println!(
        "| {name} | {:.1} | {:.1} | ×{:.2} | {:.2} |",
        one.0 / 1e6,
        two.0 / 1e6,
        two.0 / one.0,
        two.1
    );
}

fn main() {
    // Criterion's flags (`--bench`) are not ours; ignore them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let _guard = rt.enter();
    println!("closed state, {CALLS} calls per thread, median of {ROUNDS} rounds");
    println!("| case | 1 thread Mcalls/s | 2 threads Mcalls/s | 2 vs 1 | CPU/wall (2 threads) |");
    println!("|---|---|---|---|---|");
    row("baseline (plain tower service)", baseline(), &handle);
    row("fusebox", fusebox(false), &handle);
    row("recloser", recloser(false), &handle);
    row("failsafe", failsafe_closed(), &handle);
    row("tower-resilience", tower_resilience(false), &handle);
}
