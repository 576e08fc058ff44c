//! Every cache setting at its extremes is either refused by the
//! builder, naming the field, or gives a cache whose every call answers
//! without a panic: writes with TTLs from zero to `Duration::MAX`,
//! reads, loads, a breaker trip and years of paused time.

use proptest::prelude::*;

use super::*;
use crate::cache::Ttl;

// Valid values are weighted up, so that most cases build a cache whose
// other settings sit at their extremes.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        1 => Just(Duration::ZERO),
        1 => Just(Duration::from_nanos(1)),
        2 => Just(Duration::from_millis(1)),
        2 => Just(Duration::from_secs(3600)),
        2 => Just(Duration::from_secs(u64::MAX / 4)),
        2 => Just(Duration::MAX),
    ]
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0),
        2 => Just(1),
        2 => Just(100),
        4 => Just(512 << 20),
        1 => Just(usize::MAX),
    ]
}

fn ratio() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => Just(0.0),
        1 => Just(0.5),
        1 => Just(0.999_999),
        1 => Just(1.0),
        1 => Just(-1.0),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NAN),
    ]
}

#[derive(Debug, Clone)]
struct Settings {
    default_ttl: Option<Duration>,
    max_ttl: Duration,
    jitter: f64,
    max_value: usize,
    max_key: usize,
    hold_down: Duration,
    prefix: usize,
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        proptest::option::of(duration()),
        duration(),
        ratio(),
        size(),
        size(),
        duration(),
        prop_oneof![Just(0usize), Just(3), Just(10_000)],
    )
        .prop_map(
            |(default_ttl, max_ttl, jitter, max_value, max_key, hold_down, prefix)| Settings {
                default_ttl,
                max_ttl,
                jitter,
                max_value,
                max_key,
                hold_down,
                prefix,
            },
        )
}

const FIELDS: [&str; 6] = [
    "default_ttl",
    "max_ttl",
    "ttl_jitter",
    "max_value_size",
    "max_key_size",
    "write_hold_down",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_setting_is_refused_by_name_or_works(s in settings()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let memory = Memory::default();
            let builder = Cache::builder()
                .name("extremes")
                .prefix("p".repeat(s.prefix))
                .default_ttl(s.default_ttl.map_or(Ttl::Never, Ttl::After))
                .max_ttl(s.max_ttl)
                .ttl_jitter(s.jitter)
                .max_value_size(s.max_value)
                .max_key_size(s.max_key)
                .write_hold_down(s.hold_down);
            let cache = match builder.backend(memory.clone()).build() {
                Ok(cache) => cache,
                Err(e) => {
                    assert!(FIELDS.contains(&e.field()), "{e}");
                    return;
                }
            };
            for ttl in [Duration::ZERO, Duration::from_nanos(1), Duration::from_secs(1), Duration::MAX] {
                let _ = cache.set_with_ttl("k", "v", ttl).await;
                let _ = cache.expire("k", ttl).await;
            }
            let _ = cache.set("k", "v").await;
            let _ = cache.set_if_absent("k2", "v").await;
            let _ = cache.set_without_ttl("k3", "v").await;
            let _ = cache.get("k").await;
            let _ = cache.get_many(["k", "k2"]).await;
            let loaded = cache.get_or_load("k4", || async { Ok::<_, Infallible>("x") }).await;
            assert_eq!(loaded.unwrap(), "x");
            // Trip the breaker, wait years, and come back.
            memory.fail(Some(Reason::Other));
            for _ in 0..10 {
                assert_eq!(cache.get("k").await.filter(|_| false), None);
            }
            memory.fail(None);
            tokio::time::advance(Duration::from_secs(10 * 365 * 86_400)).await;
            for _ in 0..1_000 {
                if cache.breaker().state() == crate::breaker::State::Closed {
                    break;
                }
                let _ = cache.get("k").await;
                tokio::task::yield_now().await;
            }
            assert_eq!(cache.breaker().state(), crate::breaker::State::Closed);
            // Writes refused (OOM, READONLY): shed for the hold-down,
            // however long.
            for refusal in [Reason::OutOfMemory, Reason::ReadOnly] {
                memory.fail(Some(refusal));
                let _ = cache.set("k", "v").await;
                memory.fail(None);
                let _ = cache.set("k", "v").await;
                let _ = cache.delete("k3").await;
            }
            let k4_fits = s.prefix + 2 <= s.max_key;
            assert_eq!(cache.get("k4").await.is_some(), k4_fits, "the loaded value was stored");
        });
    }
}
