//! A burst of concurrent calls far beyond what one connection answers
//! within its deadline. In a test binary of its own: 20 000 runnable tasks
//! starve every other test of the process.
//!
//! `cargo test --all-features --test burst -- --nocapture` prints what the
//! burst got.

#[path = "../cache/common.rs"]
mod common;

use std::time::Duration;

use fusebox::breaker::State;
use fusebox::cache::{Cache, Write};

use common::{counter, RedisServer};

fn fail_open(reason: &str) -> u64 {
    counter(
        "fusebox_cache_fail_open_total",
        &[("cache", "burst"), ("reason", reason)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_in_flight_limit_is_shed_at_once_and_hits_go_on() {
    common::metrics();
    let redis = RedisServer::start(&[]);
    // The production deadlines (50 ms) and one connection: the burst is
    // what is tested.
    let cache = Cache::builder()
        .name("burst")
        .redis_url(redis.url())
        .build()
        .unwrap();
    assert_eq!(cache.set("k", "v").await, Write::Done);
    let breaker = cache.breaker().clone();

    let mut tasks = Vec::new();
    for _ in 0..20_000 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move { cache.get("k").await.is_some() }));
    }
    let mut hits = 0u64;
    for t in tasks {
        let hit = tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("every caller is answered")
            .unwrap();
        hits += u64::from(hit);
    }
    let (overloaded, timeouts) = (fail_open("overloaded"), fail_open("timeout"));
    let rejected = fail_open("breaker_open");
    println!(
        "20000 calls: {hits} hits, {overloaded} overloaded, {timeouts} timed out, \
         {rejected} rejected; breaker {:?}",
        breaker.state()
    );
    // Calls beyond the in-flight limit were never sent: shed at once as
    // overloaded (without the limit, all 20 000 queue on the connection,
    // time out together and open the breaker).
    assert!(overloaded > 0, "calls beyond the limit are shed");
    assert!(hits > 0);
    // Timeouts noticed while this process was behind (its runtime
    // backlogged, or noticed well past their deadline) count as overload
    // too, never against Redis. A debug build on two loaded cores can still
    // starve the connection's reader beyond the deadline with no sign of
    // it: the breaker may then open for its half-second, and closes on the
    // next probe.
    let closed = common::eventually(Duration::from_secs(5), || async {
        cache.get("k").await.is_some() && breaker.state() == State::Closed
    })
    .await;
    assert!(closed, "hits resume, the breaker closed");
}
