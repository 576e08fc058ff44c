use std::time::Duration;

use fusebox::backend::RedisConfig;
use fusebox::cache::{Cache, Write};

use crate::common::RedisServer;

async fn burst(cache: &Cache, callers: usize) -> usize {
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move { cache.get("k").await.is_some() }));
    }
    let mut hits = 0;
    for t in tasks {
        let hit = tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("no caller is stuck")
            .unwrap();
        hits += usize::from(hit);
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_callers_than_connections_neither_wait_long_nor_deadlock() {
    let mut redis = RedisServer::start(&[]);
    // Deadlines that fit a loaded machine: what is tested is sharing one
    // connection and never deadlocking, not speed.
    let config = RedisConfig::builder(redis.url())
        .connections(1)
        .connect_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let cache = Cache::builder().name("pool").redis(config).build().unwrap();
    assert_eq!(cache.set("k", "v").await, Write::Done);

    // One multiplexed connection serves 500 concurrent callers.
    assert_eq!(burst(&cache, 500).await, 500);

    // Hung Redis: every caller still comes back (a miss), none deadlocks.
    redis.pause();
    assert_eq!(burst(&cache, 500).await, 0);
    redis.resume();
}
