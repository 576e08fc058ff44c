//! The guard's plans, and its script before Redis 7.

use super::*;

#[test]
fn versions_are_read_and_added_replies_taken_out() {
    let info = "# Server\r\nredis_version:7.2.4\r\nredis_mode:standalone\r\n";
    assert_eq!(version_major(info), Some(7));
    assert_eq!(version_major("redis_version:6.0.16\n"), Some(6));
    assert_eq!(version_major("nothing"), None);
    let v = |i| Value::Int(i);
    let kept = without(vec![v(0), v(1), v(2), v(3), v(4)], &[1, 3]);
    assert_eq!(kept, [v(0), v(2), v(4)]);
}

#[test]
fn sets_without_ttl_are_given_px_and_other_writes_followed() {
    let guard = ExpiryGuard {
        inner: (),
        rules: vec![ExpiryRule {
            pattern: "jobs:*".into(),
            ttl: Duration::from_secs(60),
        }]
        .into(),
        nx: Arc::default(),
        in_multi: false,
    };
    let plan = |c: &Cmd| guard.plan(c);
    let set = redis::cmd("SET").arg("jobs:1").arg("v").arg("NX").clone();
    let rewritten = plan(&set).unwrap().rewritten.unwrap();
    let args: Vec<_> = (0..6).filter_map(|i| arg(&rewritten, i)).collect();
    assert_eq!(args, [&b"SET"[..], b"jobs:1", b"v", b"NX", b"PX", b"60000"]);
    assert!(plan(
        &redis::cmd("SET")
            .arg("jobs:1")
            .arg("v")
            .arg("EX")
            .arg(5)
            .clone()
    )
    .is_none());
    assert!(plan(&redis::cmd("SET").arg("other").arg("v").clone()).is_none());
    assert!(plan(&redis::cmd("GET").arg("jobs:1").clone()).is_none());
    let keep = plan(
        &redis::cmd("SET")
            .arg("jobs:1")
            .arg("v")
            .arg("keepttl")
            .clone(),
    )
    .unwrap();
    assert!(keep.rewritten.is_none());
    assert_eq!(keep.follow, [(b"jobs:1".to_vec(), Duration::from_secs(60))]);
    let mset = redis::cmd("MSET")
        .arg("jobs:1")
        .arg(1)
        .arg("x")
        .arg(2)
        .arg("jobs:2")
        .arg(3)
        .clone();
    let keys: Vec<_> = plan(&mset)
        .unwrap()
        .follow
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(keys, [b"jobs:1".to_vec(), b"jobs:2".to_vec()]);
}

/// Redis before 7 (no `EXPIRE … NX`): the script, alone and in a
/// transaction, keeps a TTL the key had.
#[tokio::test]
async fn the_script_stands_in_for_nx_before_redis_7() {
    let redis = fusebox_testkit::RedisServer::start(&[]);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut bare = client.get_multiplexed_async_connection().await.unwrap();
    let mut guard = ExpiryGuard::builder()
        .expire("jobs:*", Duration::from_secs(60))
        .wrap(bare.clone())
        .unwrap();
    guard.nx.store(2, Relaxed);
    let mut pipe = redis::pipe();
    pipe.cmd("HSET").arg("jobs:kept").arg("f").arg(1).ignore();
    pipe.cmd("EXPIRE").arg("jobs:kept").arg(99_999).ignore();
    pipe.exec_async(&mut bare).await.unwrap();
    let n: i64 = redis::cmd("HSET")
        .arg("jobs:a")
        .arg("f")
        .arg(1)
        .query_async(&mut guard)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let mut tx = redis::pipe();
    tx.atomic()
        .cmd("LPUSH")
        .arg("jobs:b")
        .arg(1)
        .cmd("HSET")
        .arg("jobs:kept")
        .arg("g")
        .arg(2);
    let got: (i64, i64) = tx.query_async(&mut guard).await.unwrap();
    assert_eq!(got, (1, 1));
    for (key, lo, hi) in [
        ("jobs:a", 1, 60),
        ("jobs:b", 1, 60),
        ("jobs:kept", 60_000, 99_999),
    ] {
        let t: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut bare)
            .await
            .unwrap();
        assert!((lo..=hi).contains(&t), "{key}: {t}");
    }
    assert_eq!(guard.nx.load(Relaxed), 2, "no probe once known");
}
