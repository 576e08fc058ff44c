//! `ExpiryGuard` over redis-rs's cluster connection: policy keys on every
//! shard get a TTL, alone, in a pipeline and in a transaction (each on one
//! slot).

use std::time::Duration;

use fusebox::watchdog::ExpiryGuard;
use fusebox_testkit::RedisCluster;
use redis::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_every_shard_get_a_ttl_through_a_cluster_connection() {
    let cluster = RedisCluster::start(3, 0, &[]);
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let conn = client.get_async_connection().await.unwrap();
    let mut bare = conn.clone();
    let mut guard = ExpiryGuard::builder()
        .expire("jobs:*", Duration::from_secs(600))
        .wrap(conn)
        .unwrap();
    // Keys spread over the slots, so every shard holds some.
    let keys: Vec<String> = (0..30).map(|i| format!("jobs:{i}")).collect();
    let shards: std::collections::HashSet<_> =
        keys.iter().filter_map(|k| cluster.primary_of(k)).collect();
    assert_eq!(shards.len(), 3, "every shard has a key");
    for key in &keys[..10] {
        let _: i64 = redis::cmd("HSET")
            .arg(key)
            .arg("f")
            .arg(1)
            .query_async(&mut guard)
            .await
            .unwrap();
    }
    // A pipeline is on one slot (redis-rs refuses crossed slots).
    for key in &keys[10..20] {
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(format!("jobs:{{{key}}}")).arg("v");
        pipe.cmd("LPUSH").arg(format!("jobs:{{{key}}}:list")).arg(1);
        let replies: Vec<Value> = pipe.query_async(&mut guard).await.unwrap();
        assert_eq!(replies.len(), 2, "only the caller's replies");
    }
    for key in &keys[20..] {
        let tag = format!("jobs:{{{key}}}");
        let mut tx = redis::pipe();
        tx.atomic()
            .cmd("SADD")
            .arg(format!("{tag}:a"))
            .arg(1)
            .cmd("ZADD")
            .arg(format!("{tag}:b"))
            .arg(1)
            .arg("m");
        let got: (i64, i64) = tx.query_async(&mut guard).await.unwrap();
        assert_eq!(got, (1, 1));
    }
    let mut held: Vec<String> = keys[..10].to_vec();
    for key in &keys[10..20] {
        held.push(format!("jobs:{{{key}}}"));
        held.push(format!("jobs:{{{key}}}:list"));
    }
    for key in &keys[20..] {
        held.push(format!("jobs:{{{key}}}:a"));
        held.push(format!("jobs:{{{key}}}:b"));
    }
    for key in held {
        let t: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut bare)
            .await
            .unwrap();
        assert!(t > 0 && t <= 600, "{key}: {t}");
    }
}
