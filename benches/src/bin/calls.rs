//! `calls <case> <n>`: makes `n` calls through one case, for counting
//! instructions with `valgrind --tool=callgrind` (see `callgrind.sh`).

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(case), Some(n)) = (args.next(), args.next().and_then(|n| n.parse().ok())) else {
        eprintln!("usage: calls <case> <n>");
        std::process::exit(2);
    };
    let ok = fusebox_benches::with_runtime(|| fusebox_benches::run_named(&case, n));
    match ok {
        Some(ok) => println!("{case}: {ok} of {n} calls succeeded"),
        None => {
            eprintln!("unknown case {case}");
            std::process::exit(2);
        }
    }
}
