use std::time::{Duration, Instant};

use fusebox::backend::ClientBackend;
use fusebox::breaker::State;
use fusebox::cache::{Cache, Write};
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
        .backend(ClientBackend::new(manager, Duration::from_millis(100)))
        .build()
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
        .backend(ClientBackend::new(conn, Duration::from_millis(100)))
        .build()
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
    use fusebox::backend::Bb8Backend;

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
        .backend(Bb8Backend::new(pool, Duration::from_millis(300)))
        .build()
        .unwrap();
    round_trip_outage_and_back(&cache, &mut redis).await;
}

/// The other common pool: deadpool-redis.
#[cfg(feature = "deadpool")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn and_a_deadpool_redis_pool() {
    use fusebox::backend::DeadpoolBackend;

    let mut redis = RedisServer::start(&[]);
    let pool = deadpool_redis::Config::from_url(redis.url())
        .builder()
        .unwrap()
        .max_size(4)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .unwrap();
    let cache = Cache::builder()
        .name("deadpool")
        .backend(DeadpoolBackend::new(pool, Duration::from_millis(300)))
        .build()
        .unwrap();
    // More callers than connections: they queue on the pool, all answered.
    cache.set("k", "v").await;
    let gets = (0..64).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get("k").await })
    });
    for get in gets {
        assert_eq!(get.await.unwrap().as_deref(), Some(&b"v"[..]));
    }
    round_trip_outage_and_back(&cache, &mut redis).await;
}

/// Through `cache`: a round trip, misses within the deadline once `redis`
/// is killed (and the breaker open), hits again once it is back.
#[cfg(any(feature = "bb8", feature = "deadpool"))]
async fn round_trip_outage_and_back<B: fusebox::cache::Backend>(
    cache: &Cache<B>,
    redis: &mut RedisServer,
) {
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

/// Callers queueing for a pool's connections are overloaded, not failing:
/// misses, but the breaker stays closed, and hits return with a free
/// connection.
#[cfg(all(feature = "deadpool", feature = "bb8"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_pool_sheds_without_tripping_the_breaker() {
    use fusebox::backend::{Bb8Backend, DeadpoolBackend};

    let redis = RedisServer::start(&[]);
    redis.cmd(&["SET", "k", "v"]);
    let deadline = Duration::from_millis(100);
    let deadpool = deadpool_redis::Config::from_url(redis.url())
        .builder()
        .unwrap()
        .max_size(1)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .unwrap();
    let cache = Cache::builder()
        .name("saturated-deadpool")
        .backend(DeadpoolBackend::new(deadpool.clone(), deadline))
        .build()
        .unwrap();
    let held = deadpool.get().await.unwrap();
    saturated(&cache).await;
    drop(held);
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v"[..]));

    {
        let manager = bb8_redis::RedisConnectionManager::new(redis.url()).unwrap();
        let bb8 = bb8::Pool::builder()
            .max_size(1)
            .build(manager)
            .await
            .unwrap();
        let cache = Cache::builder()
            .name("saturated-bb8")
            .backend(Bb8Backend::new(bb8.clone(), deadline))
            .build()
            .unwrap();
        let held = bb8.get().await.unwrap();
        saturated(&cache).await;
        drop(held);
        assert_eq!(cache.get("k").await.as_deref(), Some(&b"v"[..]));
    }
}

#[cfg(all(feature = "deadpool", feature = "bb8"))]
async fn saturated<B: fusebox::cache::Backend>(cache: &Cache<B>) {
    for _ in 0..10 {
        let start = Instant::now();
        assert_eq!(cache.get("k").await, None, "no connection free");
        assert!(start.elapsed() < Duration::from_millis(1000), "bounded");
    }
    assert_eq!(
        cache.breaker().state(),
        State::Closed,
        "overload never trips it"
    );
}
