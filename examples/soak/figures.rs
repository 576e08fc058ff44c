//! The soak's figures: sampled every 5 s, printed as one row a minute
//! (each minute's peak), and the verdict on whether any grew.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusebox_testkit::command;

use crate::faults::Servers;
use crate::service::Service;
use crate::Soak;

/// One sample of everything that could leak.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Sample {
    rss_mib: f64,
    fds: u64,
    tasks: u64,
    conns: u64,
    l1_kib: f64,
    flight_keys: u64,
    flight_capacity: u64,
}

impl Sample {
    fn merge(self, o: Sample, f: fn(f64, f64) -> f64) -> Sample {
        let u = |a: u64, b: u64| f(a as f64, b as f64) as u64;
        Sample {
            rss_mib: f(self.rss_mib, o.rss_mib),
            fds: u(self.fds, o.fds),
            tasks: u(self.tasks, o.tasks),
            conns: u(self.conns, o.conns),
            l1_kib: f(self.l1_kib, o.l1_kib),
            flight_keys: u(self.flight_keys, o.flight_keys),
            flight_capacity: u(self.flight_capacity, o.flight_capacity),
        }
    }

    fn peak(self, o: Sample) -> Sample {
        self.merge(o, f64::max)
    }

    fn floor(self, o: Sample) -> Sample {
        self.merge(o, f64::min)
    }

    /// Each figure: name, value, and how far above the middle third's the
    /// last third's may go (the figures move with load and faults; a leak
    /// goes on).
    fn figures(&self) -> [(&'static str, f64, f64); 7] {
        [
            ("resident MiB", self.rss_mib, self.rss_mib * 0.05 + 2.0),
            ("file descriptors", self.fds as f64, 4.0),
            (
                "tokio tasks",
                self.tasks as f64,
                self.tasks as f64 * 0.10 + 8.0,
            ),
            ("Redis connections", self.conns as f64, 2.0),
            ("L1 KiB", self.l1_kib, self.l1_kib * 0.10 + 256.0),
            ("flight keys", self.flight_keys as f64, 16.0),
            ("flight capacity", self.flight_capacity as f64, 16.0),
        ]
    }
}

/// One minute of the soak: each figure's peak, and its floor (what stays
/// once the faults' transients have passed: connections opened to a
/// paused server and abandoned at their deadline, say).
#[derive(Clone, Debug)]
pub(crate) struct Row {
    peak: Sample,
    floor: Sample,
}

pub(crate) struct Sampler {
    soak: Arc<Soak>,
    pages: fusebox::cache::Cache,
    shards: fusebox::cache::Cache<fusebox::backend::ClusterBackend>,
    ports: Vec<u16>,
}

/// Resident memory, from `/proc/self/statm` (pages of 4 KiB).
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / f64::from(1 << 20)
}

fn fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Clients connected to the servers at `ports`, other than replicas,
/// primaries and the connection asking.
fn connections(ports: &[u16]) -> Option<u64> {
    let mut n = 0;
    for port in ports {
        let list = command(*port, &["CLIENT", "LIST"]).ok()?;
        n += list
            .lines()
            .filter(|l| l.starts_with("id="))
            .filter(|l| !l.contains("cmd=client|list"))
            .filter(|l| {
                let flags = l.split_whitespace().find_map(|f| f.strip_prefix("flags="));
                !flags.is_some_and(|f| f.contains('S') || f.contains('M'))
            })
            .count() as u64;
    }
    Some(n)
}

impl Sampler {
    pub(crate) fn new(soak: &Arc<Soak>, service: &Service, redis: &Servers) -> Sampler {
        let mut ports = vec![redis.port];
        ports.extend(&redis.cluster_ports);
        Sampler {
            soak: soak.clone(),
            pages: service.pages.clone(),
            shards: service.shards.clone(),
            ports,
        }
    }

    async fn sample(&self, last_conns: u64) -> Sample {
        let ports = self.ports.clone();
        // A paused or killed server has no say: the last count stands.
        let conns = tokio::task::spawn_blocking(move || connections(&ports))
            .await
            .ok()
            .flatten()
            .unwrap_or(last_conns);
        let near = self.pages.near_stats().unwrap_or_default();
        let (a, b) = (self.pages.in_flight(), self.shards.in_flight());
        Sample {
            rss_mib: rss_mib(),
            fds: fds(),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks() as u64,
            conns,
            l1_kib: near.bytes as f64 / 1024.0,
            flight_keys: (a.keys + b.keys) as u64,
            flight_capacity: (a.capacity + b.capacity) as u64,
        }
    }

    /// Samples every 5 s for `length`, printing a row a minute.
    pub(crate) async fn run(&self, length: Duration, stop: &AtomicBool) -> Vec<Row> {
        println!("| min | calls | from cache | wrong | errors | resident MiB | fds | tokio tasks (min–max) | Redis conns (min–max) | L1 KiB | flight keys / capacity | faults |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        let start = Instant::now();
        let mut rows = Vec::new();
        let mut minute_end = start + Duration::from_secs(60).min(length);
        let mut peak = Sample::default();
        let mut floor: Option<Sample> = None;
        let mut last_conns = 0;
        let (mut calls0, mut cached0) = (0, 0);
        loop {
            let now = Instant::now();
            let s = self.sample(last_conns).await;
            last_conns = s.conns;
            peak = peak.peak(s);
            floor = Some(floor.map_or(s, |f| f.floor(s)));
            if now >= minute_end {
                let floor = floor.take().unwrap_or(s);
                let soak = &self.soak;
                let (calls, cached) = (soak.calls.load(Relaxed), soak.cached.load(Relaxed));
                let faults = std::mem::take(&mut *soak.faults.lock().unwrap());
                println!(
                    "| {} | {} | {:.0} % | {} | {} | {:.1} | {} | {}–{} | {}–{} | {:.0} | {} / {} | {} |",
                    rows.len() + 1,
                    calls - calls0,
                    (cached - cached0) as f64 / (calls - calls0).max(1) as f64 * 100.0,
                    soak.wrong.load(Relaxed),
                    soak.errors.load(Relaxed),
                    peak.rss_mib,
                    peak.fds,
                    floor.tasks,
                    peak.tasks,
                    floor.conns,
                    peak.conns,
                    peak.l1_kib,
                    peak.flight_keys,
                    peak.flight_capacity,
                    faults.len()
                );
                (calls0, cached0) = (calls, cached);
                rows.push(Row { peak, floor });
                peak = Sample::default();
                if now >= start + length {
                    break;
                }
                minute_end = (minute_end + Duration::from_secs(60)).min(start + length);
            }
            if stop.load(Relaxed) {
                break;
            }
            let next = (now + Duration::from_secs(5)).min(minute_end);
            tokio::time::sleep_until(next.into()).await;
        }
        rows
    }
}

/// Whether every figure stayed flat: the last third's peak against the
/// middle third's (the first third is warm-up).
pub(crate) struct Verdict {
    pub(crate) flat: bool,
    pub(crate) lines: Vec<String>,
}

pub(crate) fn verdict(rows: &[Row]) -> Verdict {
    let n = rows.len();
    if n < 3 {
        return Verdict {
            flat: true,
            lines: vec![format!(
                "{n} minute(s): too short to judge growth (3 or more)"
            )],
        };
    }
    let third = n / 3;
    // Peaks for what faults do not inflate; for tasks, connections and
    // flights, the highest floor (a leak raises the floor, a fault's
    // transient does not).
    let high = |r: &[Row]| {
        let peak = r.iter().fold(Sample::default(), |a, r| a.peak(r.peak));
        let floor = r.iter().fold(Sample::default(), |a, r| a.peak(r.floor));
        Sample {
            tasks: floor.tasks,
            conns: floor.conns,
            flight_keys: floor.flight_keys,
            ..peak
        }
    };
    let middle = high(&rows[third..n - third]);
    let last = high(&rows[n - third..]);
    let mut flat = true;
    let mut lines = vec![format!(
        "growth: minutes {}–{} against {}–{} (peaks; for tasks, connections and flight keys, floors)",
        third + 1,
        n - third,
        n - third + 1,
        n
    )];
    for ((name, before, slack), (_, after, _)) in middle.figures().into_iter().zip(last.figures()) {
        let grew = after > before + slack;
        flat &= !grew;
        lines.push(format!(
            "  {name}: {before:.1} → {after:.1} (allowed up to {:.1}){}",
            before + slack,
            if grew { "  GREW" } else { "" }
        ));
    }
    Verdict { flat, lines }
}
