//! `fusebox-doctor`: a one-screen memory check-up of any Redis, read-only
//! unless told to apply an expiry policy.
//!
//! ```sh
//! cargo install --path . --features doctor
//! fusebox-doctor redis://127.0.0.1:6379            # 5 s of watching, then the report
//! fusebox-doctor --json --seconds 10 redis://…     # the same as JSON, for scripts
//! fusebox-doctor --expire 'jobs:done:*=72h' redis://…          # what the policy would do
//! fusebox-doctor --expire 'jobs:done:*=72h' --apply redis://…  # do it (EXPIRE … NX)
//! fusebox-doctor --seconds 60 --svg memory.svg redis://…       # and a chart of the watch
//! ```
//!
//! `--svg FILE` also writes the watch as an SVG timeline: memory against
//! `maxmemory` with the 20/50/90 % levels, the forecast time until full
//! with the 48 h leeway line, and each alert marked where it fired.
//!
//! `--expire PATTERN=TTL` (repeatable; TTL as `90s`, `30m`, `72h` or `3d`)
//! holds the keys the watch's `SCAN` meets that match `PATTERN` and have no
//! TTL to the policy, as the watchdog's [`expire`] does: a dry run that
//! only counts them, unless `--apply` is given. Keys with a TTL, and keys
//! matching no pattern, are never touched.
//!
//! [`expire`]: fusebox::watchdog::WatchdogBuilder::expire
//!
//! Watches for a few seconds (`INFO` every 500 ms, a paced `SCAN` sample of
//! at most 500 keys per round at 5 000 keys/s — `SCAN`, `TTL` and
//! `MEMORY USAGE` only, nothing is written), then prints usage, growth,
//! dangerous settings, the key patterns holding memory without a TTL, and
//! the `maxmemory` that would give 48 h and 72 h of leeway at the measured
//! growth. Given a node of a Redis Cluster, it watches every primary and
//! prints one line per node, the one that will fill first deciding; given
//! `redis+sentinel://host:port,…/service`, the primary the sentinels name.
//! It ends with a verdict, how urgent things are, which is also the exit
//! code: `clear` 0, `warning` 1, `critical` 2 (3: bad arguments). The
//! report's `status` says what the watchdog sees (`healthy`, `degraded`:
//! an alert or a warning stands, `down`); the JSON uses the same words.
//! An unreachable Redis is reported as soon as it is seen to be down, not
//! after the whole watch. The URL is never printed (it may hold a
//! password).

use std::process::ExitCode;
use std::time::Duration;

use fusebox::watchdog::{Chart, Panel, Report, Severity, Status, Watchdog};

const USAGE: &str =
    "usage: fusebox-doctor [--json] [--seconds N] [--expire PATTERN=TTL]… [--apply] [--svg FILE] [URL [N]]
  URL: redis://[:password@]host:port[/db], rediss://…, or redis+sentinel://host:port,…/service
       (default redis://127.0.0.1:6379)
  N:   seconds to watch, 1 to 3600 (default 5)
  --expire PATTERN=TTL: keys matching PATTERN without a TTL get TTL (90s, 30m, 72h, 3d);
       a dry run (counted, nothing changed) unless --apply
  --svg FILE: also write the watch as an SVG chart (memory, forecast, alerts)";

struct Args {
    url: String,
    seconds: u64,
    json: bool,
    expire: Vec<(String, Duration)>,
    apply: bool,
    svg: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        url: "redis://127.0.0.1:6379".into(),
        seconds: 5,
        json: false,
        expire: Vec::new(),
        apply: false,
        svg: None,
    };
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => out.json = true,
            "--apply" => out.apply = true,
            "--expire" => {
                let rule = args.next().ok_or("--expire needs PATTERN=TTL")?;
                out.expire.push(expire_rule(&rule)?);
            }
            "--svg" => out.svg = Some(args.next().ok_or("--svg needs a file")?),
            "--seconds" => {
                let n = args.next().ok_or("--seconds needs a number")?;
                out.seconds = seconds(&n)?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ => positional.push(arg),
        }
    }
    // Also the example's form: URL [seconds].
    let mut positional = positional.into_iter();
    if let Some(url) = positional.next() {
        out.url = url;
    }
    if let Some(n) = positional.next() {
        out.seconds = seconds(&n)?;
    }
    if positional.next().is_some() {
        return Err("too many arguments".into());
    }
    if out.apply && out.expire.is_empty() {
        return Err("--apply applies --expire policies: none given".into());
    }
    Ok(out)
}

/// `PATTERN=TTL`, the TTL as a number of `s`, `m`, `h` or `d`.
fn expire_rule(s: &str) -> Result<(String, Duration), String> {
    let bad = || format!("not PATTERN=TTL (TTL as 90s, 30m, 72h or 3d): {s}");
    let (pattern, ttl) = s.rsplit_once('=').ok_or_else(bad)?;
    let unit = match ttl.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = ttl[..ttl.len() - 1].parse().map_err(|_| bad())?;
    Ok((
        pattern.to_owned(),
        Duration::from_secs(n.saturating_mul(unit)),
    ))
}

fn seconds(s: &str) -> Result<u64, String> {
    match s.parse() {
        Ok(n) if (1..=3600).contains(&n) => Ok(n),
        _ => Err(format!("not a number of seconds in 1..=3600: {s}")),
    }
}

const DAY: Duration = Duration::from_secs(24 * 3600);

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fusebox-doctor: {e}");
            eprintln!("{USAGE}");
            return ExitCode::from(3);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (report, watched) = match runtime.block_on(watch(&args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fusebox-doctor: {e}");
            return ExitCode::from(3);
        }
    };
    if let Some(path) = &args.svg {
        if let Err(e) = std::fs::write(path, watched.chart(args.seconds).to_svg()) {
            eprintln!("fusebox-doctor: cannot write {path}: {e}");
            return ExitCode::from(3);
        }
    }
    let severity = report.severity();
    let sizing = [2 * DAY, 3 * DAY].map(|d| report.maxmemory_for(d));
    if args.json {
        let json = serde_json::json!({
            "seconds_watched": args.seconds,
            "expiry_applied": args.apply,
            "verdict": severity.as_str(),
            "maxmemory_for_48h": sizing[0],
            "maxmemory_for_72h": sizing[1],
            "report": report,
        });
        println!("{json:#}");
    } else {
        println!("fusebox doctor — {} s of watching\n", args.seconds);
        print!("{report}");
        match sizing {
            [Some(h48), Some(h72)] => println!(
                "sizing: at this growth, maxmemory {} gives 48 h of leeway, {} gives 72 h",
                mib(h48),
                mib(h72)
            ),
            _ => println!("sizing: memory is not growing (or not measured yet): no sizing"),
        }
        println!(
            "\nverdict: {} (exit code {})",
            severity.as_str(),
            code(severity)
        );
    }
    ExitCode::from(code(severity))
}

fn code(severity: Severity) -> u8 {
    match severity {
        Severity::Clear => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

/// One sample of the watch: seconds since it began, bytes used, the
/// limit, seconds to full.
type Sample = (f64, Option<u64>, Option<u64>, Option<f64>);

/// What the watch saw, for `--svg`: a sample every 250 ms, and the alerts.
#[derive(Default)]
struct Watched {
    samples: Vec<Sample>,
    alerts: Vec<(f64, String)>,
}

impl Watched {
    fn chart(&self, seconds: u64) -> Chart {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let limit = self.samples.iter().rev().find_map(|s| s.2).map(mib);
        let used = self
            .samples
            .iter()
            .map(|s| (s.0, s.1.map_or(f64::NAN, mib)));
        let mut memory = Panel::new("Redis memory, MiB").series("used", used.collect());
        if let Some(limit) = limit {
            for level in [0.2, 0.5, 0.9] {
                memory = memory.rule(limit * level, format!("{:.0} %", level * 100.0));
            }
            memory = memory.rule(limit, "maxmemory").y_max(limit * 1.08);
        }
        let hours = self
            .samples
            .iter()
            .map(|s| (s.0, s.3.map_or(f64::NAN, |t| t / 3600.0)));
        let forecast = Panel::new("forecast: time until full, h")
            .series("time to full", hours.collect())
            .rule(48.0, "48 h leeway")
            .y_max(144.0);
        let mut chart = Chart::new(format!("fusebox doctor: {seconds} s of watching"))
            .panel(memory)
            .panel(forecast);
        for (at, alert) in &self.alerts {
            chart = chart.mark(*at, alert.clone());
        }
        chart
    }
}

async fn watch(args: &Args) -> Result<(Report, Watched), fusebox::ConfigError> {
    let mut builder = Watchdog::builder()
        .name("doctor")
        .interval(Duration::from_millis(500))
        .timeout(Duration::from_secs(1))
        .min_span(Duration::from_secs(args.seconds.clamp(2, 60) * 2 / 3))
        .horizon(Duration::from_secs(3600))
        .samples_per_round(500)
        .keys_per_second(5000)
        .expire_dry_run(!args.apply);
    for (pattern, ttl) in &args.expire {
        builder = builder.expire(pattern, *ttl);
    }
    // A node of a cluster: every primary is watched, one line each.
    let watchdog = match cluster_node(&args.url).await {
        true => builder.redis_cluster([&args.url]),
        false => builder.redis_url(&args.url),
    }
    .build()?;
    let mut alerts = watchdog.subscribe();
    let mut watched = Watched::default();
    // The whole watch, unless Redis is seen to be down first: nothing more
    // to learn by waiting.
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let report = watchdog.report();
        let t = start.elapsed().as_secs_f64();
        while let Ok(alert) = alerts.try_recv() {
            watched.alerts.push((t, alert.to_string()));
        }
        let used = report.info.as_ref().map(|i| i.used_memory);
        watched
            .samples
            .push((t, used, report.limit, report.seconds_to_full));
        if report.status == Status::Down {
            break;
        }
    }
    Ok((watchdog.report(), watched))
}

/// Whether the Redis at `url` says it is a node of a cluster (`INFO
/// cluster`); `false` when it cannot say (the watchdog reports why).
async fn cluster_node(url: &str) -> bool {
    if !url.starts_with("redis://") && !url.starts_with("rediss://") {
        return false;
    }
    let ask = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("INFO")
            .arg("cluster")
            .query_async::<String>(&mut conn)
            .await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), ask).await,
        Ok(Ok(info)) if info.contains("cluster_enabled:1")
    )
}

/// Rounded up, so the advice is never short.
fn mib(bytes: u64) -> String {
    let mib = (bytes as f64 / (1u64 << 20) as f64).ceil();
    if mib >= 10.0 * 1024.0 {
        format!("{:.0} GiB", (mib / 1024.0).ceil())
    } else {
        format!("{mib:.0} MiB")
    }
}
