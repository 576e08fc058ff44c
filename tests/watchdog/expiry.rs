//! The expiry policy held on the server side: keys another client wrote
//! without TTL, matching a policy, are given its TTL; nothing else is
//! touched; a dry run only counts.

use std::time::Duration;

use fusebox::watchdog::Watchdog;

use crate::common::{calls, counter, eventually, RedisServer};
use crate::quick;

/// What another client (a job queue) left in Redis: 300 completed jobs
/// without TTL, 50 with a TTL of their own, 100 user records without TTL.
async fn fill(redis: &RedisServer) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.cmd("SET")
            .arg(format!("jobs:done:{i}"))
            .arg("x")
            .ignore();
    }
    for i in 0..50 {
        pipe.cmd("SET")
            .arg(format!("jobs:done:kept{i}"))
            .arg("x")
            .arg("EX")
            .arg(1000)
            .ignore();
    }
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("user:{i}")).arg("x").ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
}

fn ttl(redis: &RedisServer, key: &str) -> i64 {
    redis
        .cmd(&["TTL", key])
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_matching_a_policy_without_ttl_are_given_it_and_nothing_else_is_touched() {
    crate::common::metrics();
    let redis = RedisServer::start(&[]);
    fill(&redis).await;
    let watchdog = quick()
        .name("expiry-applied")
        .expire("jobs:done:*", Duration::from_secs(72 * 3600))
        .redis_url(redis.url())
        .build()
        .unwrap();
    let done = eventually(Duration::from_secs(20), || {
        let report = watchdog.report();
        async move { report.expiry.first().is_some_and(|p| p.expired == 300) }
    })
    .await;
    let report = watchdog.report();
    assert!(done, "{:?}", report.expiry);
    assert_eq!(report.expiry[0].pattern, "jobs:done:*");
    assert_eq!(report.expiry[0].ttl_secs, 72 * 3600);
    for i in [0, 150, 299] {
        let t = ttl(&redis, &format!("jobs:done:{i}"));
        assert!(t > 72 * 3600 - 60 && t <= 72 * 3600, "jobs:done:{i}: {t}");
    }
    // A key with a TTL of its own keeps it; a key matching no policy
    // keeps none.
    for i in [0, 49] {
        let t = ttl(&redis, &format!("jobs:done:kept{i}"));
        assert!(t > 0 && t <= 1000, "jobs:done:kept{i}: {t}");
    }
    for i in [0, 99] {
        assert_eq!(ttl(&redis, &format!("user:{i}")), -1);
    }
    assert_eq!(
        counter(
            "fusebox_watchdog_keys_expired_total",
            &[
                ("watchdog", "expiry-applied"),
                ("pattern", "jobs:done:*"),
                ("mode", "applied")
            ]
        ),
        300
    );
    // The next pass finds nothing more to do.
    let passes = report.keys_sampled;
    eventually(Duration::from_secs(20), || {
        let report = watchdog.report();
        async move { report.keys_sampled != passes }
    })
    .await;
    assert_eq!(watchdog.report().expiry[0].expired, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_counts_what_it_would_expire_and_expires_nothing() {
    let redis = RedisServer::start(&[]);
    fill(&redis).await;
    let watchdog = quick()
        .name("expiry-dry")
        .expire("jobs:done:*", Duration::from_secs(3600))
        .expire("user:*", Duration::from_secs(60))
        .expire_dry_run(true)
        .redis_url(redis.url())
        .build()
        .unwrap();
    // A whole pass: each key without TTL counted once per pass.
    let done = eventually(Duration::from_secs(20), || {
        let report = watchdog.report();
        async move {
            report.expiry.len() == 2
                && report.expiry[0].would_expire >= 300
                && report.expiry[1].would_expire >= 100
        }
    })
    .await;
    let report = watchdog.report();
    assert!(done, "{:?}", report.expiry);
    assert_eq!((report.expiry[0].expired, report.expiry[1].expired), (0, 0));
    for key in ["jobs:done:0", "jobs:done:299", "user:0"] {
        assert_eq!(ttl(&redis, key), -1, "{key}");
    }
}

#[test]
fn a_policy_that_cannot_work_is_refused_at_build() {
    let refused = |b: fusebox::watchdog::WatchdogBuilder| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        b.redis_url("redis://127.0.0.1:1").build().unwrap_err()
    };
    let cases = [
        Watchdog::builder().expire("", Duration::from_secs(60)),
        Watchdog::builder().expire("jobs:*", Duration::ZERO),
        Watchdog::builder().expire("jobs:*", Duration::MAX),
        Watchdog::builder().expire("x".repeat(1025), Duration::from_secs(60)),
        Watchdog::builder()
            .samples_per_round(0)
            .expire("jobs:*", Duration::from_secs(60)),
    ];
    for builder in cases {
        let e = refused(builder);
        assert_eq!(e.field(), "expire", "{e}");
    }
    // Sub-second TTLs are whole seconds for EXPIRE: 1 ms is refused too
    // (it would be 1 s, not what was asked).
    assert_eq!(
        refused(Watchdog::builder().expire("a", Duration::from_millis(1))).field(),
        "expire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_100k_keys_the_policy_keeps_to_its_budget() {
    let redis = RedisServer::start(&[]);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for chunk in 0..10 {
        let mut pipe = redis::pipe();
        for i in 0..10_000 {
            pipe.cmd("SET")
                .arg(format!("jobs:done:{chunk}:{i}"))
                .arg("x")
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .unwrap();
    // At most 2 000 keys a second, 500 a poll.
    let start = std::time::Instant::now();
    let watchdog = quick()
        .name("expiry-budget")
        .samples_per_round(500)
        .keys_per_second(2_000)
        .expire("jobs:done:*", Duration::from_secs(3600))
        .redis_url(redis.url())
        .build()
        .unwrap();
    eventually(Duration::from_secs(20), || {
        let report = watchdog.report();
        async move { report.expiry.first().is_some_and(|p| p.expired >= 2_000) }
    })
    .await;
    let (expired, scans, expires) = (
        watchdog.report().expiry[0].expired,
        calls(&redis, "scan"),
        calls(&redis, "expire"),
    );
    let elapsed = start.elapsed().as_secs_f64();
    drop(watchdog);
    assert!(expired >= 2_000, "{expired}");
    // Never more than the pace allows (a slow machine does less, never
    // more): keys examined, and so expired, at most 2 000 a second, and
    // the last step's keys, not yet paid for (a SCAN step returns about
    // its COUNT of 100: `COUNT` is a hint, a bucket's chain can add a few,
    // so a round's budget of 500 is the slack).
    let allowed = (2_000.0 * elapsed + 500.0) as u64;
    assert!(expires <= allowed, "{expires} EXPIREs in {elapsed:.1} s");
    // Small SCAN steps, never a `KEYS`-like sweep: at most twice the COUNT
    // of 100 keys a step.
    assert!(
        scans * 200 >= expires,
        "{scans} SCAN steps for {expires} keys"
    );
    // Every one expired was a key without TTL, given exactly the policy's.
    let ttl: i64 = redis
        .cmd(&["TTL", "jobs:done:0:0"])
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(ttl == -1 || (3500..=3600).contains(&ttl), "{ttl}");
}
