//! Per-call cost of a breaker's closed and open states, fusebox against the
//! other Rust breakers and a plain tower service, in one run.
//!
//! `cargo bench -p fusebox-benches --bench breaker`

use criterion::{criterion_group, criterion_main, Criterion};
use fusebox_benches::{
    baseline, failsafe_closed, failsafe_open, fusebox, recloser, tower_resilience, with_runtime,
    Case,
};
use std::hint::black_box;

fn bench_case(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut case: impl Case,
) {
    c.bench_function(name, |b| b.iter(|| black_box(case.call())));
}

fn closed(c: &mut Criterion) {
    with_runtime(|| {
        let mut g = c.benchmark_group("closed");
        bench_case(&mut g, "baseline", baseline());
        bench_case(&mut g, "fusebox", fusebox(false));
        bench_case(&mut g, "recloser", recloser(false));
        bench_case(&mut g, "failsafe", failsafe_closed());
        bench_case(&mut g, "tower-resilience", tower_resilience(false));
        g.finish();
    });
}

fn open(c: &mut Criterion) {
    with_runtime(|| {
        let mut g = c.benchmark_group("open");
        bench_case(&mut g, "fusebox", fusebox(true));
        bench_case(&mut g, "recloser", recloser(true));
        bench_case(&mut g, "failsafe", failsafe_open());
        bench_case(&mut g, "tower-resilience", tower_resilience(true));
        g.finish();
    });
}

criterion_group!(benches, closed, open);
criterion_main!(benches);
