//! The near cache's L1 store, chosen by measurement: quick_cache against
//! moka, both bounded in bytes by the same weigher, measured in one run.
//!
//! `cargo bench -p fusebox-benches --bench l1`
//!
//! Cases, each on 1 and 2 threads (total operations per second):
//! * `hot`: `get` of one key, always present (a hot key served from L1);
//! * `mix`: 90 % `get`, 10 % `insert` over 200 000 keys of 100 bytes into
//!   a 4 MiB bound, so that the store evicts all the time.

use std::sync::{Arc, Barrier};
use std::time::Instant;

use bytes::Bytes;

const OPS: u64 = 2_000_000;
const KEYS: u64 = 200_000;
const BOUND: u64 = 4 << 20;

trait Store: Clone + Send + 'static {
    fn get(&self, key: &Bytes) -> Option<Bytes>;
    fn insert(&self, key: Bytes, value: Bytes);
}

#[derive(Clone)]
struct Weight;
impl quick_cache::Weighter<Bytes, Bytes> for Weight {
    fn weight(&self, key: &Bytes, value: &Bytes) -> u64 {
        (key.len() + value.len() + 64) as u64
    }
}

#[derive(Clone)]
struct Quick(Arc<quick_cache::sync::Cache<Bytes, Bytes, Weight>>);
impl Store for Quick {
    fn get(&self, key: &Bytes) -> Option<Bytes> {
        self.0.get(key)
    }
    fn insert(&self, key: Bytes, value: Bytes) {
        self.0.insert(key, value)
    }
}

#[derive(Clone)]
struct Moka(moka::sync::Cache<Bytes, Bytes>);
impl Store for Moka {
    fn get(&self, key: &Bytes) -> Option<Bytes> {
        self.0.get(key)
    }
    fn insert(&self, key: Bytes, value: Bytes) {
        self.0.insert(key, value)
    }
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("page:{i:012}"))
}

fn run(store: &impl Store, threads: usize, mix: bool) -> f64 {
    let value = Bytes::from(vec![7u8; 100]);
    let hot = key(0);
    store.insert(hot.clone(), value.clone());
    let keys: Arc<Vec<Bytes>> = Arc::new((0..KEYS).map(key).collect());
    let barrier = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (store, barrier, keys, hot, value) = (
                store.clone(),
                barrier.clone(),
                keys.clone(),
                hot.clone(),
                value.clone(),
            );
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                barrier.wait();
                for _ in 0..OPS {
                    if !mix {
                        std::hint::black_box(store.get(&hot));
                        continue;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = &keys[(x % KEYS) as usize];
                    if x.is_multiple_of(10) {
                        store.insert(k.clone(), value.clone());
                    } else {
                        std::hint::black_box(store.get(k));
                    }
                }
                Instant::now()
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let end = workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .max()
        .unwrap();
    (threads as u64 * OPS) as f64 / (end - start).as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    println!("| case | threads | quick_cache (Mops/s) | moka (Mops/s) |");
    println!("|---|---|---|---|");
    for mix in [false, true] {
        for threads in [1, 2] {
            let quick = Quick(Arc::new(quick_cache::sync::Cache::with_weighter(
                (BOUND / 164) as usize,
                BOUND,
                Weight,
            )));
            let moka = Moka(
                moka::sync::Cache::builder()
                    .max_capacity(BOUND)
                    .weigher(|k: &Bytes, v: &Bytes| (k.len() + v.len() + 64) as u32)
                    .build(),
            );
            let q = run(&quick, threads, mix);
            let m = run(&moka, threads, mix);
            let name = if mix { "mix" } else { "hot" };
            println!("| {name} | {threads} | {:.1} | {:.1} |", q / 1e6, m / 1e6);
        }
    }
}
