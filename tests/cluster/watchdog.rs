//! The watchdog over every primary of a real cluster: a hash-tagged
//! prefix that fills one shard while the others stay flat is found, named
//! with its node, and decides the forecast.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusebox::watchdog::{Alert, Report, Status, Watchdog};
use fusebox_testkit::RedisCluster;

fn addr(cluster: &RedisCluster, i: usize) -> String {
    format!("127.0.0.1:{}", cluster.nodes()[i].port())
}

/// Polls the report until `done` holds (at most 20 s); the last report.
async fn until(watchdog: &Watchdog, done: impl Fn(&Report) -> bool) -> Report {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = watchdog.report();
        if done(&report) || Instant::now() > deadline {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_that_fills_first_is_named_with_the_pattern_filling_it() {
    let cluster = RedisCluster::start(
        3,
        0,
        &[
            "--cluster-require-full-coverage",
            "no",
            "--maxmemory",
            "64mb",
        ],
    );
    let filling = cluster.primary_of("{jobs}").unwrap();
    // Steady keys with a TTL on every node, so that none is empty.
    for i in 0..cluster.nodes().len() {
        for k in 0..50 {
            let key = format!("cache:{i}:{k}");
            if cluster.primary_of(&key) == Some(i) {
                cluster.nodes()[i].cmd(&["SET", &key, "v", "EX", "600"]);
            }
        }
    }
    // Given one other node: the rest is found.
    let watchdog = Watchdog::builder()
        .name("jobs")
        .interval(Duration::from_millis(100))
        .min_span(Duration::from_secs(1))
        .horizon(Duration::from_secs(60))
        .samples_per_round(200)
        .keys_per_second(10_000)
        .redis_cluster([cluster.nodes()[(filling + 1) % 3].url()])
        .build()
        .unwrap();
    let mut subscribed = watchdog.subscribe();
    // A job queue leaking 8 KiB jobs without TTL onto one shard.
    let stop = Arc::new(AtomicBool::new(false));
    let port = cluster.nodes()[filling].port();
    let writer = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let value = "x".repeat(8192);
            let mut n = 0u64;
            // About 3 MB/s: 64 MB would be full in about 20 s.
            while !stop.load(Relaxed) {
                let key = format!("{{jobs}}:job:{n}");
                fusebox_testkit::command(port, &["SET", &key, &value]).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let report = until(&watchdog, |r| {
        r.node.as_deref() == Some(addr(&cluster, filling).as_str())
            && r.seconds_to_full.is_some()
            && r.no_ttl_prefixes
                .first()
                .is_some_and(|p| p.pattern.starts_with("{jobs}"))
            && r.nodes.len() == 3
    })
    .await;
    stop.store(true, Relaxed);
    writer.join().unwrap();
    println!("{report}");
    assert_eq!(report.nodes.len(), 3, "every primary watched");
    assert_eq!(
        report.node.as_deref(),
        Some(addr(&cluster, filling).as_str()),
        "the filling node decides"
    );
    assert!(report.seconds_to_full.is_some(), "a forecast");
    let pattern = &report.no_ttl_prefixes[0].pattern;
    assert!(pattern.starts_with("{jobs}"), "{pattern}");
    for node in &report.nodes {
        let this = node.node.as_deref().unwrap();
        if this != addr(&cluster, filling) {
            assert!(
                node.no_ttl_prefixes
                    .iter()
                    .all(|p| !p.pattern.starts_with("{jobs}")),
                "{this} holds no jobs"
            );
        }
    }
    // A leeway alert came from that node, and says so (an idle node's
    // memory wobbles, and may raise one of its own for a moment).
    let mut leeway_from = Vec::new();
    while let Ok(alert) = subscribed.try_recv() {
        if let Alert::Node { node, alert } = alert {
            if matches!(*alert, Alert::Leeway { raised: true, .. }) {
                leeway_from.push(node);
            }
        }
    }
    assert!(
        leeway_from.contains(&addr(&cluster, filling)),
        "{leeway_from:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_primary_is_reported_down_then_its_replica_is_watched() {
    let mut cluster = RedisCluster::start(3, 1, &["--cluster-require-full-coverage", "no"]);
    let watchdog = Watchdog::builder()
        .interval(Duration::from_millis(100))
        .redis_cluster(cluster.urls())
        .build()
        .unwrap();
    let healthy = until(&watchdog, |r| {
        r.nodes.len() == 3 && r.nodes.iter().all(|n| n.status != Status::Starting)
    })
    .await;
    assert_eq!(healthy.nodes.len(), 3, "{healthy}");
    let victim = cluster.primary_of("k").unwrap();
    let victim_addr = addr(&cluster, victim);
    cluster.node_mut(victim).kill();
    let down = until(&watchdog, |r| r.status == Status::Down).await;
    assert_eq!(down.status, Status::Down, "{down}");
    let after = until(&watchdog, |r| {
        r.nodes.len() == 3
            && r.nodes
                .iter()
                .all(|n| n.status != Status::Down && n.status != Status::Starting)
            && r.nodes
                .iter()
                .all(|n| n.node.as_deref() != Some(victim_addr.as_str()))
    })
    .await;
    println!("{after}");
    assert!(
        after
            .nodes
            .iter()
            .all(|n| n.node.as_deref() != Some(victim_addr.as_str())),
        "the promoted replica is watched instead: {after}"
    );
    assert_ne!(after.status, Status::Down, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_policy_holds_every_primarys_keys() {
    // 3 primaries and 3 replicas: the replicas are never written to (they
    // would refuse), and take the TTLs from their primaries.
    let cluster = RedisCluster::start(3, 1, &["--cluster-require-full-coverage", "no"]);
    // Completed jobs without TTL on every shard (each key written to the
    // primary that owns it), and a user record that must keep none.
    let mut on = [0u64; 3];
    for k in 0..150 {
        let key = format!("jobs:done:{k}");
        let node = cluster.primary_of(&key).unwrap();
        cluster.nodes()[node].cmd(&["SET", &key, "x"]);
        on[node] += 1;
    }
    assert!(on.iter().all(|&n| n > 0), "keys on every shard: {on:?}");
    let user = cluster.primary_of("user:1").unwrap();
    cluster.nodes()[user].cmd(&["SET", "user:1", "x"]);
    let watchdog = Watchdog::builder()
        .interval(Duration::from_millis(100))
        .samples_per_round(500)
        .keys_per_second(10_000)
        .expire("jobs:done:*", Duration::from_secs(3600))
        .redis_cluster(cluster.urls())
        .build()
        .unwrap();
    let report = until(&watchdog, |r| {
        r.expiry.first().is_some_and(|p| p.expired == 150)
    })
    .await;
    assert_eq!(report.expiry[0].expired, 150, "{:?}", report.expiry);
    for node in &report.nodes {
        assert!(
            node.expiry[0].expired > 0,
            "{:?}: {:?}",
            node.node,
            node.expiry
        );
    }
    for k in [0, 75, 149] {
        let key = format!("jobs:done:{k}");
        let node = cluster.primary_of(&key).unwrap();
        let ttl: i64 = cluster.nodes()[node]
            .cmd(&["TTL", &key])
            .trim()
            .trim_start_matches(':')
            .parse()
            .unwrap();
        assert!(ttl > 3500 && ttl <= 3600, "{key}: {ttl}");
    }
    let ttl = cluster.nodes()[user].cmd(&["TTL", "user:1"]);
    assert!(ttl.contains("-1"), "{ttl}");
}
