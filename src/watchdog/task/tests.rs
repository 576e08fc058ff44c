//! The assessment, fed INFO texts on paused time.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use super::*;

const MB: u64 = 1 << 20;

/// INFO text as redis-server 7.0 writes it, with these figures.
fn info_text(used: u64, max: u64, keys: u64, expires: u64) -> String {
    format!(
        "# Memory\r\nused_memory:{used}\r\nused_memory_human:x\r\nmaxmemory:{max}\r\nmaxmemory_policy:noeviction\r\n\r\n# Keyspace\r\ndb0:keys={keys},expires={expires},avg_ttl=0\r\n\r\n# Stats\r\nexpired_keys:0\r\nevicted_keys:0\r\ntotal_error_replies:0\r\n"
    )
}

fn harness() -> (State, Shared, broadcast::Receiver<Alert>) {
    let config = Watchdog::builder()
        .interval(Duration::from_secs(60))
        .horizon(Duration::from_secs(6 * 3600))
        .min_span(Duration::from_secs(600))
        .config()
        .unwrap();
    let shared = Shared {
        report: Mutex::new(Report::starting("t")),
        alerts: broadcast::channel(1024).0,
        pressure: Arc::new(AtomicBool::new(false)),
    };
    let rx = shared.alerts.subscribe();
    (State::new(config), shared, rx)
}

fn drain(rx: &mut broadcast::Receiver<Alert>) -> Vec<Alert> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// Feeds one INFO per minute for `minutes`, usage by `used(minute)`.
async fn feed(
    state: &mut State,
    shared: &Shared,
    minutes: u64,
    max: u64,
    used: impl Fn(u64) -> u64,
) {
    for m in 0..minutes {
        assert!(state.ingest(&info_text(used(m), max, 1000, 100), shared));
        tokio::time::advance(Duration::from_secs(60)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn steady_growth_raises_levels_in_order_and_forecasts_within_15_percent() {
    let (mut state, shared, mut rx) = harness();
    // 1 GiB limit, 100 MiB used, +1 MiB a minute, for 3 hours.
    feed(&mut state, &shared, 180, 1024 * MB, |m| 100 * MB + m * MB).await;
    let alerts = drain(&mut rx);
    let levels: Vec<f64> = alerts
        .iter()
        .filter_map(|a| match a {
            Alert::Usage {
                level,
                raised: true,
                ..
            } => Some(*level),
            _ => None,
        })
        .collect();
    assert_eq!(levels, vec![0.2]);
    // Full in (1024 - 279) min = 12.4 h: under the 48 h leeway.
    let report = lock(&shared.report).clone();
    let truth = (1024.0 - 279.0) * 60.0;
    let got = report.seconds_to_full.unwrap();
    assert!(
        (got - truth).abs() / truth < 0.15,
        "forecast {got} s, truth {truth} s"
    );
    assert!(report.leeway_alert);
    assert!(alerts
        .iter()
        .any(|a| matches!(a, Alert::Leeway { raised: true, .. })));
    assert_eq!(report.status, Status::Degraded);
    // Mostly keys without TTL under noeviction: warned once.
    let warnings = alerts
        .iter()
        .filter(|a| matches!(a, Alert::Warning(_)))
        .count();
    assert_eq!(warnings, 1);
    assert_eq!(report.warnings.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn sawtooth_spike_flat_and_shrinking_usage() {
    // Sawtooth: +3.5 MiB/min for 20 min, then 60 MiB expire: net
    // +0.5 MiB/min. The forecast follows the net growth.
    let (mut state, shared, _rx) = harness();
    feed(&mut state, &shared, 360, 1024 * MB, |m| {
        200 * MB + (m / 20) * 10 * MB + (m % 20) * 7 * MB / 2
    })
    .await;
    let rate = lock(&shared.report).growth_bytes_per_sec.unwrap() * 60.0 / MB as f64;
    assert!((0.35..0.75).contains(&rate), "net {rate} MiB/min");

    // A one-off spike of 500 MiB raises and clears the 50 % level but
    // leaves the forecast alone.
    let (mut state, shared, mut rx) = harness();
    feed(&mut state, &shared, 120, 1024 * MB, |m| {
        if m == 100 {
            700 * MB
        } else {
            150 * MB + m * MB / 10
        }
    })
    .await;
    let alerts = drain(&mut rx);
    assert!(alerts.contains(&Alert::Usage {
        level: 0.5,
        ratio: 700.0 / 1024.0,
        raised: true
    }));
    assert!(alerts
        .iter()
        .any(|a| matches!(a, Alert::Usage { level, raised: false, .. } if *level == 0.5)));
    let rate = lock(&shared.report).growth_bytes_per_sec.unwrap() * 60.0 / MB as f64;
    assert!((rate - 0.1).abs() < 0.02, "{rate} MiB/min");

    // Flat, then shrinking: never a leeway alert.
    for used in [|_m: u64| 300 * MB, |m: u64| 600 * MB - m * MB] {
        let (mut state, shared, mut rx) = harness();
        feed(&mut state, &shared, 120, 1024 * MB, used).await;
        assert!(!drain(&mut rx)
            .iter()
            .any(|a| matches!(a, Alert::Leeway { .. })));
        let report = lock(&shared.report).clone();
        assert_eq!(report.seconds_to_full, None);
        assert!(!report.leeway_alert);
    }
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn the_report_serializes_for_a_health_endpoint() {
    let (mut state, shared, _rx) = harness();
    feed(&mut state, &shared, 20, 1024 * MB, |m| 300 * MB + m * MB).await;
    let json = serde_json::to_value(lock(&shared.report).clone()).unwrap();
    assert_eq!(json["status"], "degraded");
    assert_eq!(json["info"]["keyspace"][0]["keys"], 1000);
    assert_eq!(json["levels_raised"][0], 0.2);
    assert!(json["seconds_to_full"].is_number());
}

#[tokio::test(start_paused = true)]
async fn the_sizing_gives_the_maxmemory_for_a_leeway() {
    let (mut state, shared, _rx) = harness();
    // 1 MiB a minute.
    feed(&mut state, &shared, 20, 1024 * MB, |m| 300 * MB + m * MB).await;
    let report = lock(&shared.report).clone();
    let used = report.info.as_ref().unwrap().used_memory;
    let day = Duration::from_secs(24 * 3600);
    let for_48h = report.maxmemory_for(2 * day).unwrap();
    let expected = used as f64 + 2.0 * 24.0 * 60.0 * MB as f64;
    assert!(
        (for_48h as f64 / expected - 1.0).abs() < 0.15,
        "{for_48h} vs {expected}"
    );
    assert!(report.maxmemory_for(3 * day).unwrap() > for_48h);
    // Not growing: no sizing.
    let (mut flat, shared, _rx) = harness();
    feed(&mut flat, &shared, 20, 1024 * MB, |_| 300 * MB).await;
    assert_eq!(lock(&shared.report).maxmemory_for(day), None);
}

#[tokio::test(start_paused = true)]
async fn maxmemory_zero_and_unusable_text() {
    let (mut state, shared, mut rx) = harness();
    feed(&mut state, &shared, 30, 0, |m| 100 * MB + m * MB).await;
    let report = lock(&shared.report).clone();
    assert!(report.warnings.contains(&Warning::NoMaxmemory));
    assert_eq!(
        (report.limit, report.ratio, report.seconds_to_full),
        (None, None, None)
    );
    assert!(drain(&mut rx).contains(&Alert::Warning(Warning::NoMaxmemory)));

    // Garbage, truncation, another version's layout: reported, the
    // previous figures kept, nothing panics.
    let before = report.info.clone();
    let good = info_text(5 * MB, 0, 10, 0);
    for bad in [
        "",
        "garbage\u{0}\u{ff}",
        &good[..good.find("maxmemory:").unwrap()],
        "used_memory:x\nmaxmemory:0",
    ] {
        assert!(!state.ingest(bad, &shared));
        let report = lock(&shared.report).clone();
        assert!(report.last_error.is_some());
        assert_eq!(report.info, before);
    }
}
