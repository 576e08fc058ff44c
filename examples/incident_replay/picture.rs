//! The replay as a picture: an SVG timeline of Redis memory against
//! `maxmemory` (with the 20/50/90 % levels), the forecast time until full
//! (with the 48 h leeway), the page hit ratio, p99 latency and errors, the
//! phases shaded and each watchdog alert marked where it fired.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fusebox::watchdog::{Chart, Panel, Watchdog};

use crate::Replay;

/// What the load saw since the last sample.
#[derive(Default)]
pub(crate) struct Window {
    pub(crate) latencies_us: Vec<u64>,
    pub(crate) cached: u64,
    pub(crate) errors: u64,
}

/// One sample, every half second.
pub(crate) struct Point {
    t: f64,
    used_mib: f64,
    limit_mib: Option<f64>,
    to_full_s: Option<f64>,
    hit_pct: f64,
    p99_ms: f64,
    errors: u64,
}

/// Samples the watchdog's report and the load's window until `stop`.
pub(crate) fn record(
    replay: &Arc<Replay>,
    watchdog: &Watchdog,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Point>> {
    let (replay, watchdog, stop) = (replay.clone(), watchdog.clone(), stop.clone());
    tokio::spawn(async move {
        let mut points = Vec::new();
        let mut ticks = tokio::time::interval(Duration::from_millis(500));
        while !stop.load(Relaxed) {
            ticks.tick().await;
            let window = std::mem::take(&mut *replay.window.lock().unwrap());
            let report = watchdog.report();
            let mib = |b: u64| b as f64 / f64::from(1 << 20);
            let mut lat = window.latencies_us;
            let n = lat.len() as f64;
            points.push(Point {
                t: replay.t(),
                used_mib: report
                    .info
                    .as_ref()
                    .map_or(f64::NAN, |i| mib(i.used_memory)),
                limit_mib: report.limit.map(mib),
                to_full_s: report.seconds_to_full,
                hit_pct: if n > 0.0 {
                    window.cached as f64 * 100.0 / n
                } else {
                    f64::NAN
                },
                p99_ms: if n > 0.0 {
                    crate::percentile(&mut lat, 0.99)
                } else {
                    f64::NAN
                },
                errors: window.errors,
            });
        }
        points
    })
}

/// Draws `points`, the phases and the alerts of `replay` to `path`.
pub(crate) fn draw(
    replay: &Replay,
    points: &[Point],
    title: &str,
    path: &str,
) -> std::io::Result<()> {
    let series = |f: &dyn Fn(&Point) -> f64| points.iter().map(|p| (p.t, f(p))).collect::<Vec<_>>();
    let limit = points
        .iter()
        .rev()
        .find_map(|p| p.limit_mib)
        .unwrap_or(32.0);
    let mut memory = Panel::new("Redis memory, MiB")
        .series("used", series(&|p| p.used_mib))
        .y_max(limit * 1.08);
    for level in [0.2, 0.5, 0.9] {
        memory = memory.rule(limit * level, format!("{:.0} %", level * 100.0));
    }
    memory = memory.rule(limit, "maxmemory");
    let forecast = Panel::new("forecast: time until full, s (1 s = 1 h here)")
        .series("time to full", series(&|p| p.to_full_s.unwrap_or(f64::NAN)))
        .rule(48.0, "48 h leeway")
        .y_max(150.0);
    let hits = Panel::new("pages answered from cache, %")
        .series("hit ratio", series(&|p| p.hit_pct))
        .y_max(100.0);
    let latency = Panel::new("p99 latency, ms · errors surfaced")
        .series("p99 ms", series(&|p| p.p99_ms))
        .series("errors", series(&|p| p.errors as f64));
    let mut chart = Chart::new(title)
        .panel(memory)
        .panel(forecast)
        .panel(hits)
        .panel(latency);
    let starts = replay.phase_starts.lock().unwrap().clone();
    let end = points.last().map_or(0.0, |p| p.t);
    for (i, (at, name)) in starts.iter().enumerate() {
        let to = starts.get(i + 1).map_or(end, |s| s.0);
        chart = chart.span(*at, to, *name);
    }
    for (at, label) in replay.marks.lock().unwrap().iter() {
        chart = chart.mark(*at, label.clone());
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, chart.to_svg())
}
