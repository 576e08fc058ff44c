use std::time::{Duration, Instant};

use fusebox::breaker::State;
use fusebox::cache::{Cache, Write};
use fusebox::redis::ClientBackend;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::common::RedisServer;

#[tokio::test]
async fn the_same_stack_wraps_an_existing_connection_manager() {
    let mut redis = RedisServer::start(&[]);
    let client = redis::Client::open(redis.url()).unwrap();
    // The user's own client, with the user's own settings.
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_millis(100)))
        .set_response_timeout(Some(Duration::from_millis(100)));
    let manager = ConnectionManager::new_with_config(client, config)
        .await
        .unwrap();
    let cache = Cache::builder()
        .name("manager")
        .prefix("m:")
        .service(ClientBackend::new(manager, Duration::from_millis(100)))
        .unwrap();

    assert_eq!(cache.set("k", "v").await, Write::Done);
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v"[..]));
    assert_eq!(redis.cmd(&["GET", "m:k"]), "v");

    redis.kill();
    for _ in 0..8 {
        let start = Instant::now();
        assert_eq!(cache.get("k").await, None);
        assert!(start.elapsed() < Duration::from_millis(500), "bounded");
    }
    assert_eq!(cache.breaker().state(), State::Open);
}

#[tokio::test]
async fn and_a_multiplexed_connection() {
    let redis = RedisServer::start(&[]);
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let cache = Cache::builder()
        .name("multiplexed")
        .service(ClientBackend::new(conn, Duration::from_millis(100)))
        .unwrap();
    assert_eq!(cache.set_if_absent("k", "v").await, Write::Done);
    assert_eq!(cache.set_if_absent("k", "w").await, Write::Unchanged);
    assert_eq!(
        cache.get_many(["k", "x"]).await,
        vec![Some("v".into()), None]
    );
}

/// What most axum services hold already: a bb8-redis pool.
#[cfg(feature = "bb8")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn and_a_bb8_redis_pool() {
    use fusebox::redis::Bb8Backend;

    let mut redis = RedisServer::start(&[]);
    let manager = bb8_redis::RedisConnectionManager::new(redis.url()).unwrap();
    let pool = bb8::Pool::builder()
        .connection_timeout(Duration::from_millis(200))
        .build(manager)
        .await
        .unwrap();
    // One line: the pool becomes a fail-open cache.
    let cache = Cache::builder()
        .name("bb8")
        .service(Bb8Backend::new(pool, Duration::from_millis(300)))
        .unwrap();
    assert_eq!(cache.set("k", "v").await, Write::Done);
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v"[..]));
    assert_eq!(redis.cmd(&["GET", "k"]), "v");

    // Redis gone: misses within the deadline, and the breaker opens.
    redis.kill();
    for _ in 0..8 {
        let start = Instant::now();
        assert_eq!(cache.get("k").await, None);
        assert!(start.elapsed() < Duration::from_millis(1000), "bounded");
    }
    assert_eq!(cache.breaker().state(), State::Open);
    // Back: hits resume.
    redis.restart();
    redis.cmd(&["SET", "k", "v"]);
    let back = crate::common::eventually(Duration::from_secs(10), || async {
        cache.get("k").await.is_some()
    })
    .await;
    assert!(back, "hits resume through the pool");
}
