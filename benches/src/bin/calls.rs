//! `calls <case> <n>`: makes `n` calls through one case, for counting
//! instructions with `valgrind --tool=callgrind` (see `callgrind.sh`).
//!
//! `calls <case> <n> <rounds>`: times `rounds` runs of `n` calls and prints
//! the fastest run's time per call. The minimum is the figure least
//! disturbed by other work on a shared machine, for comparing two builds
//! run alternately.

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(case), Some(n)) = (args.next(), args.next().and_then(|n| n.parse().ok())) else {
        eprintln!("usage: calls <case> <n> [rounds]");
        std::process::exit(2);
    };
    let rounds: Option<u32> = args.next().and_then(|r| r.parse().ok());
    let ok = fusebox_benches::with_runtime(|| match rounds {
        None => fusebox_benches::run_named(&case, n),
        Some(rounds) => {
            let mut best = f64::INFINITY;
            for _ in 0..rounds {
                let start = Instant::now();
                fusebox_benches::run_named(&case, n)?;
                best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
            }
            println!("{case}: {best:.2} ns/call (fastest of {rounds} runs of {n})");
            Some(n)
        }
    });
    match ok {
        Some(ok) if rounds.is_none() => println!("{case}: {ok} of {n} calls succeeded"),
        Some(_) => {}
        None => {
            eprintln!("unknown case {case}");
            std::process::exit(2);
        }
    }
}
