//! Every setting at its extremes (0, 1 ns, `Duration::MAX`, …) is either
//! refused by `build()` with the field named, or gives a breaker that trips,
//! waits, probes and closes without a panic or a wedge.

use std::time::Duration;

use fusebox::breaker::{Breaker, Config, State};
use proptest::prelude::*;
use tower::{service_fn, Layer, Service, ServiceExt};

use crate::common::advance;

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_millis(1)),
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(3600)),
        Just(Duration::from_secs(u64::MAX / 2)),
        Just(Duration::MAX),
    ]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(1), Just(2), Just(100), Just(u32::MAX)]
}

fn ratio() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(1e-9),
        Just(0.5),
        Just(0.999),
        Just(1.0),
        Just(f64::INFINITY),
        Just(f64::NAN),
        Just(f64::MAX)
    ]
}

#[derive(Debug, Clone)]
struct Settings {
    open_for: Duration,
    backoff: Option<(f64, Duration)>,
    jitter: f64,
    half_open_max: Duration,
    probes: u32,
    successes: u32,
    consecutive: u32,
    window: u32,
    minimum: u32,
    slow: Option<(Duration, f64)>,
    time_window: Option<(Duration, u32)>,
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        (
            duration(),
            proptest::option::of((ratio(), duration())),
            ratio(),
        ),
        (duration(), count(), count(), count()),
        (count(), count()),
        proptest::option::of((duration(), ratio())),
        proptest::option::of((duration(), count())),
    )
        .prop_map(
            |(
                (open_for, backoff, jitter),
                (half_open_max, probes, successes, consecutive),
                (window, minimum),
                slow,
                time_window,
            )| Settings {
                open_for,
                backoff,
                jitter,
                half_open_max,
                probes,
                successes,
                consecutive,
                window,
                minimum,
                slow,
                time_window,
            },
        )
}

fn build(s: &Settings) -> Result<Config, fusebox::ConfigError> {
    let mut b = Config::builder()
        .name("extremes")
        .open_for(s.open_for)
        .open_jitter(s.jitter)
        .half_open_max_duration(s.half_open_max)
        .half_open_probes(s.probes)
        .half_open_successes(s.successes)
        .consecutive_failures(s.consecutive)
        .count_window(s.window)
        .minimum_calls(s.minimum);
    if let Some((m, max)) = s.backoff {
        b = b.open_backoff(m, max);
    }
    if let Some((t, r)) = s.slow {
        b = b.slow_calls(t, r);
    }
    if let Some((span, buckets)) = s.time_window {
        b = b.time_window(span, buckets);
    }
    b.build()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_setting_is_refused_or_works(s in settings()) {
        let config = match build(&s) {
            Ok(c) => c,
            Err(e) => {
                // Refused: a named field, said in the message.
                prop_assert!(!e.field().is_empty());
                prop_assert!(e.to_string().contains(e.field()), "{}", e);
                return Ok(());
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let breaker = Breaker::new(config);
            let mut svc = breaker.layer().layer(service_fn(|fail: bool| async move {
                if fail { Err("down") } else { Ok(()) }
            }));
            // Trip it by hand-free means where it can trip: many failures.
            for _ in 0..300 {
                let _ = svc.ready().await.unwrap().call(true).await;
            }
            // Through every stage of time: the open period ends when it
            // says it does, probes pass, nothing panics.
            for step in [1u64, 1_000, 3_600_000, 100 * 86_400_000] {
                advance(Duration::from_millis(step)).await;
                for _ in 0..4 {
                    let _ = svc.ready().await.unwrap().call(false).await;
                }
            }
            let state = breaker.state();
            if s.open_for <= Duration::from_secs(3600) && s.successes <= 4 {
                // Open periods that end within the time advanced (back-off
                // notwithstanding: its cap may be MAX, and then a long one
                // is what was asked for) leave the breaker able to close.
                let capped = s.backoff.is_none_or(|(_, max)| max <= Duration::from_secs(3600));
                if capped {
                    assert_ne!(state, State::Open, "wedged open: {s:?}");
                }
            }
            drop(svc);
            drop(breaker);
        });
    }
}
