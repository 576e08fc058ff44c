//! The breaker config builder: defaults, and every refusal.

use super::*;

#[test]
fn defaults_are_valid() {
    let c = Config::default();
    assert_eq!(c.window(), Window::Count { calls: 100 });
    assert!(c.slow.is_none());
}

#[test]
fn a_long_open_period_alone_raises_the_cap() {
    let c = Config::builder()
        .open_for(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert_eq!(c.open_max(), Duration::from_secs(3600));
    let c = Config::builder().open_for(Duration::MAX).build().unwrap();
    assert_eq!(c.open_max(), Duration::MAX);
}

#[test]
fn each_bad_field_is_named() {
    let b = Config::builder;
    let cases: Vec<(ConfigBuilder, &str)> = vec![
        (b().name(""), "name"),
        (b().failure_rate(0.0), "failure_rate"),
        (b().failure_rate(f64::NAN), "failure_rate"),
        (b().failure_rate(1.5), "failure_rate"),
        (b().minimum_calls(0), "minimum_calls"),
        (b().count_window(0), "count_window"),
        (b().count_window(10).minimum_calls(11), "minimum_calls"),
        (b().time_window(Duration::from_secs(1), 0), "time_window"),
        (b().time_window(Duration::from_millis(5), 10), "time_window"),
        (b().slow_calls(Duration::ZERO, 0.5), "slow_calls"),
        (b().slow_calls(Duration::from_millis(1), 0.0), "slow_calls"),
        (b().open_for(Duration::ZERO), "open_for"),
        (
            b().open_backoff(0.5, Duration::from_secs(60)),
            "open_backoff",
        ),
        (
            b().open_backoff(2.0, Duration::from_secs(1)),
            "open_backoff",
        ),
        (b().open_jitter(1.0), "open_jitter"),
        (
            b().open_for(Duration::from_secs(3600))
                .open_backoff(2.0, Duration::from_secs(60)),
            "open_backoff",
        ),
        (b().half_open_probes(0), "half_open_probes"),
        (b().half_open_successes(0), "half_open_successes"),
        (
            b().half_open_max_duration(Duration::ZERO),
            "half_open_max_duration",
        ),
    ];
    for (builder, field) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        assert!(err.to_string().contains(field));
    }
}
