//! The watchdog against a real redis-server with a small `maxmemory`,
//! filled by a job queue that leaks keys without TTL.

#[path = "../cache/common.rs"]
mod common;
mod expiry;
mod guard;
#[cfg(feature = "webhook")]
mod webhook;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusebox::cache::{Cache, Reason, Write};
use fusebox::watchdog::{Alert, Status, Warning, Watchdog};
use tokio::sync::broadcast;

use common::{counter, eventually, gauge, RedisServer};

/// Everything that happened, in order: alerts and the writer's first OOM.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    Alert(Alert),
    WriterOom,
}

/// Appends the alerts sent so far to `log`, on the caller's task: an
/// alert sent before the caller saw something is logged before it.
fn drain(alerts: &mut broadcast::Receiver<Alert>, log: &Mutex<Vec<Event>>) {
    loop {
        match alerts.try_recv() {
            Ok(a) => log.lock().unwrap().push(Event::Alert(a)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => panic!("{n} alerts lost"),
            Err(_) => return,
        }
    }
}

fn quick() -> fusebox::watchdog::WatchdogBuilder {
    Watchdog::builder()
        .name("test")
        .interval(Duration::from_millis(100))
        .timeout(Duration::from_millis(500))
        .horizon(Duration::from_secs(60))
        .min_span(Duration::from_secs(1))
        .leeway(Duration::from_secs(3600))
        .samples_per_round(300)
        .keys_per_second(100_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaking_queue_raises_every_alert_before_redis_is_full() {
    let mut redis = RedisServer::start(&["--maxmemory", "6mb", "--maxmemory-policy", "noeviction"]);
    let watchdog = quick().redis_url(redis.url()).build().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut alerts = watchdog.subscribe();

    // The leaking job queue (no TTL) and a well-behaved cache (with TTL).
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let value = vec![b'j'; 1000];
    let mut i = 0u64;
    let full = loop {
        let mut pipe = redis::pipe();
        for _ in 0..50 {
            pipe.cmd("SET")
                .arg(format!("queue:todo:completed:{i}"))
                .arg(&value[..])
                .ignore();
            if i.is_multiple_of(10) {
                pipe.cmd("SET")
                    .arg(format!("cache:page:{i}"))
                    .arg(&value[..])
                    .arg("EX")
                    .arg(600)
                    .ignore();
            }
            i += 1;
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(
                    fusebox::backend::RedisError::from(e).reason(),
                    Reason::OutOfMemory
                );
                drain(&mut alerts, &log);
                log.lock().unwrap().push(Event::WriterOom);
                break true;
            }
        }
        if i > 200_000 {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(full, "the writer filled Redis");
    // Until the watchdog has polled the full Redis (its alerts go out in
    // the same poll as the report).
    let seen_full = eventually(Duration::from_secs(10), || {
        drain(&mut alerts, &log);
        let report = watchdog.report();
        let alerted = log.lock().unwrap().iter().any(|e| {
            matches!(e, Event::Alert(Alert::Usage { level, raised: true, .. }) if *level > 0.89)
        });
        let ready =
            report.ratio.is_some_and(|r| r > 0.9) && report.levels_raised.contains(&0.9) && alerted;
        async move { ready }
    })
    .await;
    assert!(
        seen_full,
        "the watchdog saw Redis full: {:?}",
        watchdog.report()
    );

    let events = log.lock().unwrap().clone();
    let position = |f: &dyn Fn(&Event) -> bool| events.iter().position(f);
    let level = |l: f64| {
        position(
            &|e| matches!(e, Event::Alert(Alert::Usage { level, raised: true, .. }) if (*level - l).abs() < 1e-9),
        )
    };
    let (l20, l50, l90) = (
        level(0.2).unwrap(),
        level(0.5).unwrap(),
        level(0.9).unwrap(),
    );
    assert!(l20 < l50 && l50 < l90, "levels in order: {events:#?}");
    let leeway = position(&|e| {
        matches!(
            e,
            Event::Alert(Alert::Leeway {
                raised: true,
                time_to_full: Some(_)
            })
        )
    })
    .expect("a leeway alert");
    let oom = position(&|e| *e == Event::WriterOom).unwrap();
    assert!(
        leeway < oom,
        "the leeway alert came before Redis was full: {events:#?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Alert(Alert::Warning(Warning::KeysWithoutTtlNeverEvicted { .. }))
        )),
        "noeviction with mostly no-TTL keys is flagged"
    );

    let report = watchdog.report();
    assert_eq!(report.status, Status::Degraded);
    assert!(report.ratio.unwrap() > 0.9);
    assert_eq!(report.levels_raised, vec![0.2, 0.5, 0.9]);
    let top = &report.no_ttl_prefixes[0];
    assert_eq!(
        top.pattern, "queue:todo:completed:*",
        "{:#?}",
        report.no_ttl_prefixes
    );
    assert!(top.share > 0.9, "{top:?}");
    assert!(report.info.as_ref().unwrap().keys_without_ttl() > 1000);
    let text = report.to_string();
    assert!(text.contains("queue:todo:completed:*"), "{text}");

    // Redis killed mid-run: reported, then recovered.
    redis.kill();
    let down = eventually(Duration::from_secs(5), || async {
        watchdog.report().status == Status::Down
    })
    .await;
    assert!(down, "the watchdog reports Redis down");
    assert!(
        watchdog.report().info.is_some(),
        "the last figures are kept"
    );
    redis.restart();
    // The report, and the alert (delivered to the recorder on its own
    // task).
    let up = eventually(Duration::from_secs(5), || {
        drain(&mut alerts, &log);
        let alerted = log.lock().unwrap().contains(&Event::Alert(Alert::Up));
        let ready = watchdog.report().status != Status::Down && alerted;
        async move { ready }
    })
    .await;
    assert!(up, "and recovers");
    let events = log.lock().unwrap().clone();
    let down_at = events
        .iter()
        .position(|e| matches!(e, Event::Alert(Alert::Down { .. })))
        .unwrap();
    let up_at = events
        .iter()
        .position(|e| *e == Event::Alert(Alert::Up))
        .unwrap();
    assert!(down_at < up_at);
}

#[tokio::test]
async fn maxmemory_zero_is_a_warning_and_a_budget_is_used_instead() {
    let redis = RedisServer::start(&[]);
    let plain = quick().redis_url(redis.url()).build().unwrap();
    let budget = quick()
        .memory_budget(100 << 20)
        .redis_url(redis.url())
        .build()
        .unwrap();
    let ready = eventually(Duration::from_secs(5), || async {
        plain.report().status != Status::Starting && budget.report().status != Status::Starting
    })
    .await;
    assert!(ready);
    let report = plain.report();
    assert_eq!(report.warnings, vec![Warning::NoMaxmemory]);
    assert_eq!(report.status, Status::Degraded);
    assert_eq!((report.limit, report.ratio), (None, None));
    let report = budget.report();
    assert_eq!(report.limit, Some(100 << 20));
    assert!(report.ratio.unwrap() < 0.05);
    assert!(report.to_string().contains("budget"));
}

#[tokio::test]
async fn dropping_the_handle_stops_the_task_and_a_down_redis_is_reported() {
    let port = common::free_port();
    let watchdog = quick()
        .redis_url(format!("redis://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let mut alerts = watchdog.subscribe();
    let alert = tokio::time::timeout(Duration::from_secs(5), alerts.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(alert, Alert::Down { .. }), "{alert:?}");
    assert_eq!(watchdog.report().status, Status::Down);
    drop(watchdog);
    // The task ends: the channel closes.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match alerts.recv().await {
                Err(broadcast::error::RecvError::Closed) => return true,
                _ => continue,
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_sheds_writes_before_redis_is_full_when_asked() {
    let redis = RedisServer::start(&["--maxmemory", "6mb", "--maxmemory-policy", "noeviction"]);
    let cache = Cache::builder()
        .name("shed")
        .watchdog(quick().shed_writes_above(0.5))
        .redis_url(redis.url())
        .build()
        .unwrap();
    assert_eq!(cache.set("before", "v").await, Write::Done);
    let value = vec![b'x'; 4000];
    let mut shed = None;
    for i in 0..5000u32 {
        match cache.set(format!("k:{i}"), value.clone()).await {
            Write::Done => {}
            other => {
                shed = Some(other);
                break;
            }
        }
        if i.is_multiple_of(50) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        shed,
        Some(Write::Skipped(Reason::MemoryPressure)),
        "shed before OOM"
    );
    let report = cache.watchdog().unwrap().report();
    assert!(report.shedding_writes);
    assert!(report.ratio.unwrap() < 0.95);
    // Reads still hit.
    assert_eq!(cache.get("before").await.as_deref(), Some(&b"v"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_evictions_and_expiries_and_forecast_in_seconds() {
    common::metrics();
    let redis = RedisServer::start(&["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"]);
    let watchdog = quick()
        .name("metrics")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let labels = [("watchdog", "metrics")];
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let value = vec![b'v'; 1000];
    // A steady growth (about 0.5 MB/s) until Redis evicts, and keys that
    // expire at once. While memory grows, the forecast is in seconds, like
    // the report's (not hours).
    let (mut i, mut forecast) = (0u64, None);
    let counted = eventually(Duration::from_secs(30), || {
        let mut pipe = redis::pipe();
        for _ in 0..10 {
            pipe.cmd("SET")
                .arg(format!("grow:{i}"))
                .arg(&value[..])
                .ignore();
            pipe.cmd("SET")
                .arg(format!("brief:{i}"))
                .arg("x")
                .arg("PX")
                .arg(1)
                .ignore();
            i += 1;
        }
        let report = watchdog.report().seconds_to_full;
        let gauge = gauge("fusebox_redis_seconds_to_full", &labels);
        if let (Some(r), Some(g)) = (report, gauge) {
            if g.is_finite() && g / r < 2.0 && r / g < 2.0 {
                forecast = Some((r, g));
            }
        }
        let mut conn = conn.clone();
        let forecast_seen = forecast.is_some();
        async move {
            pipe.query_async::<()>(&mut conn).await.unwrap();
            forecast_seen
                && counter("fusebox_redis_evicted_keys_total", &labels) > 0
                && counter("fusebox_redis_expired_keys_total", &labels) > 0
        }
    })
    .await;
    assert!(
        counted,
        "a forecast in seconds ({forecast:?}), and evictions and expiries in their _total counters"
    );
    // Counted as Redis counts them, whatever the poll spacing.
    let evicted: u64 = redis
        .cmd(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(counter("fusebox_redis_evicted_keys_total", &labels) <= evicted);
}

/// The watchdog's builder ends like the others: `build()`, refusing what is
/// missing or wrong by name, never quoting the URL's password.
#[tokio::test]
async fn the_builder_names_what_is_missing_or_wrong() {
    use fusebox::cache::Cache;
    use fusebox::watchdog::Watchdog;

    let err = Watchdog::builder().build().unwrap_err();
    assert_eq!((err.builder(), err.field()), ("watchdog", "redis_url"));
    let err = Watchdog::builder()
        .redis_url("redis://:hunter2@127.0.0.1:1/not-a-db")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "url");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let builder = Watchdog::builder().redis_url("redis://:hunter2@127.0.0.1:1");
    assert!(!format!("{builder:?}").contains("hunter2"));
    // A cache's watchdog watches the cache's Redis, not a URL of its own.
    let err = Cache::builder()
        .watchdog(builder)
        .redis_url("redis://127.0.0.1:1")
        .build()
        .unwrap_err();
    assert_eq!((err.builder(), err.field()), ("cache", "watchdog"));
}
