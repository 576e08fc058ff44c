//! The replay on a Redis Cluster: 3 primaries with a replica each. The
//! leak fills one shard (and the watchdog names that node); then another
//! primary is killed mid-run: its keys miss, fast, while the other shards'
//! keys keep hitting; its replica is promoted and hits resume.

use fusebox::backend::ClusterBackend;
use fusebox_testkit::RedisCluster;

use super::*;

const PHASES: [&str; 5] = [
    "healthy",
    "filling one shard",
    "one shard full (OOM)",
    "primary killed",
    "failed over",
];

/// Direct reads of keys of known shards, counted per phase: the killed
/// shard's keys, and everyone else's.
#[derive(Default)]
struct Probes {
    /// Per phase: (hits, reads) of the killed shard's keys, of the others'.
    counts: Mutex<Vec<[(u64, u64); 2]>>,
}

pub(crate) async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(mut cluster) = RedisCluster::try_start(
        3,
        1,
        &[
            "--maxmemory",
            "16mb",
            "--maxmemory-policy",
            "noeviction",
            "--cluster-require-full-coverage",
            "no",
        ],
    ) else {
        return without_redis().await;
    };
    let replay = Replay::new(&PHASES);
    let primary = |c: &RedisCluster, i: usize| format!("127.0.0.1:{}", c.nodes()[i].port());
    println!(
        "fusebox incident replay on a Redis Cluster — 3 primaries ({}, {}, {}) with a replica each, 16 MiB each, noeviction; time compressed (48 h of leeway = 48 s)\n",
        primary(&cluster, 0),
        primary(&cluster, 1),
        primary(&cluster, 2)
    );
    let backend = ClusterBackend::new(cluster.urls(), Duration::from_millis(100))?;
    let cache = Cache::builder()
        .name("pages")
        .backend(backend.clone())
        .build()?;
    let watchdog = watchdog().redis_cluster(cluster.urls()).build()?;
    let addr = serve(&cache, &replay).await?;
    let stop = Arc::new(AtomicBool::new(false));
    timeline(&replay, &watchdog, &stop);

    // The leak goes to one shard (a hash tag); another shard is killed.
    let filling = cluster.primary_of("{queue}").expect("a primary");
    let victim = (filling + 1) % 3;
    let victim_slot = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| cluster.primary_of(k) == Some(victim))
        .map(|k| cluster.slot_of(&k))
        .expect("a key on the victim");

    // Probe keys, half on the victim, half elsewhere.
    let mut probe_keys: Vec<(String, bool)> = Vec::new();
    for i in 0.. {
        let key = format!("probe:{i}");
        let on_victim = cluster.primary_of(&key) == Some(victim);
        let wanted = probe_keys.iter().filter(|(_, v)| *v == on_victim).count() < 30;
        if wanted {
            cache
                .set_with_ttl(&key, "p", Duration::from_secs(3600))
                .await;
            probe_keys.push((key, on_victim));
        }
        if probe_keys.len() == 60 {
            break;
        }
    }
    let probes = Arc::new(Probes {
        counts: Mutex::new(vec![[(0, 0); 2]; PHASES.len()]),
    });
    let prober = {
        let (cache, probes, replay, stop) =
            (cache.clone(), probes.clone(), replay.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                for (key, on_victim) in &probe_keys {
                    let hit = cache.get(key).await.is_some();
                    let phase = replay.phase.load(Relaxed);
                    let c = &mut probes.counts.lock().unwrap()[phase][usize::from(!on_victim)];
                    c.0 += u64::from(hit);
                    c.1 += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let clients = load(addr, replay.clone(), stop.clone());
    replay.enter(0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        if let Some(b) = backend.shard_breaker(&primary(&cluster, i)) {
            breaker_timeline(
                &replay,
                &b,
                &format!("breaker of {}", primary(&cluster, i)),
                &stop,
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(4)).await;

    replay.enter(1);
    replay.say(format!(
        "job queue starts writing completed jobs WITHOUT a TTL ({{queue}}:todo:completed:<id>): one hash tag, so all on {}",
        primary(&cluster, filling)
    ));
    let leak_stop = Arc::new(AtomicBool::new(false));
    let leak = leak(
        &replay,
        &cluster.nodes()[filling].url(),
        "{queue}:todo:completed",
        "that shard answers OOM",
        &leak_stop,
    );
    replay.until_full().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let report = watchdog.report();
    replay.say(format!(
        "watchdog report: fills first {}, `{}` filling it; {} of the app's cache writes skipped as out-of-memory",
        report.node.as_deref().unwrap_or("-"),
        report.no_ttl_prefixes.first().map(|p| p.pattern.as_str()).unwrap_or("-"),
        replay.writes_shed.load(Relaxed),
    ));
    leak_stop.store(true, Relaxed);
    let _ = leak.await;

    replay.enter(3);
    replay.say(format!(
        "primary {} killed (SIGKILL)",
        primary(&cluster, victim)
    ));
    let killed = Instant::now();
    cluster.node_mut(victim).kill();
    let cluster = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if cluster
                .primary_of_slot(victim_slot)
                .is_some_and(|p| p != victim)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster
    })
    .await?;
    let Some(promoted) = cluster
        .primary_of_slot(victim_slot)
        .filter(|p| *p != victim)
    else {
        return Err("no replica promoted within 30 s".into());
    };
    replay.enter(4);
    replay.say(format!(
        "replica {} promoted {:.1} s after the kill",
        primary(&cluster, promoted),
        killed.elapsed().as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    if let Some(b) = backend.shard_breaker(&primary(&cluster, promoted)) {
        breaker_timeline(
            &replay,
            &b,
            &format!("breaker of {}", primary(&cluster, promoted)),
            &stop,
        );
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let _ = prober.await;
    summary(&replay, PHASES.len());
    println!("\n| phase | the killed shard's keys: hits | the other shards' keys: hits |");
    println!("|---|---|---|");
    let counts = probes.counts.lock().unwrap();
    for (name, [mine, others]) in PHASES.iter().zip(counts.iter()) {
        let pct = |(h, n): (u64, u64)| match n {
            0 => "-".to_owned(),
            n => format!("{h}/{n} ({:.0} %)", h as f64 / n as f64 * 100.0),
        };
        println!("| {name} | {} | {} |", pct(*mine), pct(*others));
    }
    Ok(())
}
