//! `cluster-require-full-coverage yes` (Redis' default): while the killed
//! primary is flagged failed and not yet replaced, every node refuses
//! every key (`CLUSTERDOWN`). Outside those seconds, the other shards'
//! keys must keep hitting.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fusebox_testkit::RedisCluster;

use super::{cache, readers, seed, Read, Seeded};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_full_coverage_required_other_shards_hit_outside_the_refusal() {
    let mut cluster = RedisCluster::start(3, 1, &[]);
    let (cache, _backend) = cache(&cluster);
    let Seeded {
        keys,
        victim,
        victim_slot,
        on_victim,
    } = seed(&cluster, &cache).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(Mutex::new(Vec::new()));
    let tasks = readers(&cache, &keys, &on_victim, &stop, &reads);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.node_mut(victim).kill();
    // When the surviving nodes say the cluster is down, and when no longer.
    let (refused, cluster) = tokio::task::spawn_blocking(move || {
        let survivors: Vec<usize> = (0..cluster.nodes().len())
            .filter(|&i| i != victim)
            .collect();
        let (mut first, mut last) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let now = Instant::now();
            let down = survivors.iter().any(|&i| {
                cluster.nodes()[i]
                    .try_cmd(&["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:fail"))
            });
            if down {
                first.get_or_insert(now);
                last = Some(Instant::now());
            }
            let promoted = cluster
                .primary_of_slot(victim_slot)
                .is_some_and(|p| p != victim);
            if promoted && first.is_some() && !down {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (
            (first.expect("the cluster refused keys"), last.unwrap()),
            cluster,
        )
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    drop(cluster);
    let reads = reads.lock().unwrap();
    let (from, to) = refused;
    let outside: Vec<&Read> = reads
        .iter()
        .filter(|r| !r.victim && (r.at + r.took < from || r.at > to))
        .collect();
    let hits = outside.iter().filter(|r| r.hit).count();
    let after: Vec<&Read> = reads.iter().filter(|r| !r.victim && r.at > to).collect();
    let first_hit_after = after.iter().find(|r| r.hit).map(|r| r.at - to);
    println!(
        "the cluster refused every key for {:?}; outside it, the other shards' keys: {hits}/{} hits; first hit {first_hit_after:?} after",
        to - from,
        outside.len()
    );
    let start = reads[0].at;
    let mut buckets = std::collections::BTreeMap::new();
    for r in reads.iter().filter(|r| !r.victim) {
        let b = (r.at - start).as_millis() / 250;
        let e = buckets.entry(b).or_insert((0, 0));
        e.0 += usize::from(r.hit);
        e.1 += 1;
    }
    println!("from {:?} to {:?}", from - start, to - start);
    for (b, (h, n)) in &buckets {
        println!("  {:>5} ms: {h}/{n}", b * 250);
    }
    assert!(
        hits * 100 >= outside.len() * 99,
        "{hits}/{} hits outside the refusal",
        outside.len()
    );
}
