use std::time::Duration;

use fusebox::breaker::State;
use fusebox::cache::{Cache, Reason, Write};
use fusebox::telemetry::CACHE_FAIL_OPEN_TOTAL;

use crate::common::{counter, metrics, RedisServer};

fn pttl(redis: &RedisServer, key: &str) -> i64 {
    redis
        .cmd(&["PTTL", key])
        .trim_start_matches(':')
        .parse()
        .expect("PTTL reply")
}

#[tokio::test]
async fn round_trip_applies_prefix_and_ttls() {
    metrics();
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("healthy")
        .prefix("app:")
        .default_ttl(Duration::from_secs(60))
        .max_ttl(Duration::from_secs(3600))
        .redis_url(redis.url())
        .build()
        .unwrap();

    assert_eq!(cache.get("k").await, None);
    assert_eq!(cache.set("k", "v1").await, Write::Done);
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"v1"[..]));
    // Stored under the prefix, with the default TTL.
    assert_eq!(redis.cmd(&["GET", "app:k"]), "v1");
    assert_eq!(redis.cmd(&["GET", "k"]), "(nil)");
    let ttl = pttl(&redis, "app:k");
    assert!(ttl > 50_000 && ttl <= 60_000, "default TTL applied: {ttl}");

    // Longer TTLs are clamped; no expiry only when asked for.
    let week = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(cache.set_with_ttl("long", "x", week).await, Write::Done);
    let ttl = pttl(&redis, "app:long");
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "clamped: {ttl}");
    assert_eq!(cache.set_without_ttl("kept", "x").await, Write::Done);
    assert_eq!(pttl(&redis, "app:kept"), -1);

    assert_eq!(cache.set_if_absent("k", "v2").await, Write::Unchanged);
    assert_eq!(cache.set_if_absent("new", "n").await, Write::Done);
    assert!(pttl(&redis, "app:new") > 0);
    assert_eq!(
        cache.get_many(["k", "missing", "new"]).await,
        vec![Some("v1".into()), None, Some("n".into())]
    );

    assert_eq!(cache.expire("k", Duration::from_secs(5)).await, Write::Done);
    assert!(pttl(&redis, "app:k") <= 5_000);
    assert_eq!(
        cache.expire("missing", Duration::from_secs(5)).await,
        Write::Unchanged
    );

    assert_eq!(cache.delete("k").await, Write::Done);
    assert_eq!(cache.delete("k").await, Write::Unchanged);
    assert_eq!(cache.get("k").await, None);

    // Binary keys and values pass through untouched.
    let bin = [0u8, 255, 13, 10, 0];
    assert_eq!(cache.set(&bin[..], bin.to_vec()).await, Write::Done);
    assert_eq!(cache.get(&bin[..]).await.as_deref(), Some(&bin[..]));

    assert_eq!(cache.breaker().state(), State::Closed);
    assert_eq!(counter(CACHE_FAIL_OPEN_TOTAL, &[("cache", "healthy")]), 0);
}

#[tokio::test]
async fn oversize_values_are_skipped_locally() {
    metrics();
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("oversize")
        .max_value_size(1024)
        .redis_url(redis.url())
        .build()
        .unwrap();
    assert_eq!(
        cache.set("big", vec![7u8; 1025]).await,
        Write::Skipped(Reason::TooLarge)
    );
    assert_eq!(redis.cmd(&["EXISTS", "big"]), ":0");
    assert_eq!(cache.set("fits", vec![7u8; 1024]).await, Write::Done);
    assert_eq!(
        counter(
            CACHE_FAIL_OPEN_TOTAL,
            &[("cache", "oversize"), ("reason", "too_large")]
        ),
        1
    );
}

/// The single flight's sharing and hand-over are tested on an in-memory
/// backend (`src/cache/handle/tests.rs`), where every waiter can be seen;
/// here, what reaches Redis.
#[tokio::test]
async fn get_or_load_stores_what_it_loads_and_never_an_error() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("flight")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let v = cache
        .get_or_load("slow", || async { Ok::<_, std::io::Error>("loaded") })
        .await
        .unwrap();
    assert_eq!(v, "loaded");
    assert_eq!(redis.cmd(&["GET", "slow"]), "loaded");
    assert!(
        pttl(&redis, "slow") > 3_500_000,
        "with the default TTL (1 h)"
    );
    // Stored: the next call does not load.
    let v = cache
        .get_or_load("slow", || async {
            Err::<&str, _>(std::io::Error::other("not called"))
        })
        .await
        .unwrap();
    assert_eq!(v, "loaded");
    // A loader error reaches the caller; nothing is stored.
    let err = cache
        .get_or_load("bad", || async {
            Err::<&str, _>(std::io::Error::other("db down"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "db down");
    assert_eq!(redis.cmd(&["EXISTS", "bad"]), ":0");
}

#[cfg(feature = "serde")]
#[tokio::test]
async fn undecodable_values_are_counted_misses() {
    use fusebox::cache::JsonCodec;
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Page {
        title: String,
        views: u32,
    }
    metrics();
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("json")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let page = Page {
        title: "home".into(),
        views: 3,
    };
    let pages = cache.typed(JsonCodec);
    assert_eq!(pages.set("page", &page).await, Write::Done);
    assert_eq!(pages.get::<Page>("page").await, Some(page));

    // Garbage, or another shape: a miss, counted, never a panic.
    redis.cmd(&["SET", "page", "\u{0}\u{ff}not json"]);
    assert_eq!(pages.get::<Page>("page").await, None);
    redis.cmd(&["SET", "page", "{\"title\": 5}"]);
    assert_eq!(pages.get::<Page>("page").await, None);
    assert_eq!(
        counter(
            CACHE_FAIL_OPEN_TOTAL,
            &[("cache", "json"), ("reason", "undecodable")]
        ),
        2
    );
    // And get_or_load replaces it.
    let loaded = pages
        .get_or_load("page", || async {
            Ok::<_, std::io::Error>(Page {
                title: "fresh".into(),
                views: 1,
            })
        })
        .await
        .unwrap();
    assert_eq!(loaded.title, "fresh");
    assert_eq!(pages.get::<Page>("page").await.map(|p| p.views), Some(1));
}

#[tokio::test]
async fn acl_user_database_and_unix_socket() {
    let socket = std::env::temp_dir().join(format!("fusebox-test-{}.sock", std::process::id()));
    let socket_str = socket.to_str().unwrap().to_owned();
    let redis = RedisServer::start(&[
        "--unixsocket",
        &socket_str,
        "--unixsocketperm",
        "700",
        "--user",
        "alice",
        "on",
        ">alice-pw",
        "~*",
        "&*",
        "+@all",
    ]);
    // An ACL user and database 2, over TCP.
    let tcp = Cache::builder()
        .name("acl")
        .redis_url(format!(
            "redis://alice:alice-pw@127.0.0.1:{}/2",
            redis.port()
        ))
        .build()
        .unwrap();
    assert_eq!(tcp.set("k", "in db 2").await, Write::Done);
    assert_eq!(redis.cmd(&["GET", "k"]), "(nil)", "not in db 0");
    let db2 = redis.cmd(&["INFO", "keyspace"]);
    assert!(db2.contains("db2:keys=1"), "{db2}");

    // The same over the unix socket.
    let unix = Cache::builder()
        .name("unix")
        .redis_url(format!("unix://{socket_str}?db=2&user=alice&pass=alice-pw"))
        .build()
        .unwrap();
    assert_eq!(unix.get("k").await.as_deref(), Some(&b"in db 2"[..]));
    drop(redis);
    let _ = std::fs::remove_file(socket);
}

#[test]
fn building_needs_no_runtime_and_never_panics() {
    // No tokio runtime here: building must neither spawn nor connect.
    let cache = Cache::builder()
        .name("no-runtime")
        .redis_url("redis://127.0.0.1:1")
        .build()
        .unwrap();
    assert_eq!(cache.breaker().state(), State::Closed);
    // A watchdog does need one, and says so instead of panicking.
    let err = Cache::builder()
        .watchdog(fusebox::watchdog::Watchdog::builder())
        .redis_url("redis://127.0.0.1:1")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "watchdog");
    // Bad settings are typed errors naming the setter; the URL (and its
    // password) is never quoted.
    let err = Cache::builder()
        .redis_url("http://user:s3cret@host")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "url");
    assert!(!err.to_string().contains("s3cret"));
    for (builder, field) in [
        (Cache::builder().name(""), "name"),
        (Cache::builder().ttl_jitter(1.5), "ttl_jitter"),
        (Cache::builder().max_value_size(0), "max_value_size"),
        (Cache::builder().max_key_size(0), "max_key_size"),
        (Cache::builder().default_ttl(Duration::ZERO), "default_ttl"),
        (Cache::builder().max_ttl(Duration::ZERO), "max_ttl"),
        (
            Cache::builder().write_hold_down(Duration::ZERO),
            "write_hold_down",
        ),
    ] {
        assert_eq!(
            builder
                .redis_url("redis://127.0.0.1:1")
                .build()
                .unwrap_err()
                .field(),
            field
        );
    }
    // A bad port or database is named as such (the password is not).
    for (url, says) in [
        (
            "redis://:pw@127.0.0.1:99999",
            "the port `99999` is not a number",
        ),
        (
            "redis://:pw@127.0.0.1:63x9/0",
            "the port `63x9` is not a number",
        ),
        (
            "redis://:pw@127.0.0.1:6379/zero",
            "the database `zero` is not a number",
        ),
    ] {
        let err = Cache::builder().redis_url(url).build().unwrap_err();
        assert_eq!(err.field(), "url", "{url}");
        assert!(err.to_string().contains(says), "{url}: {err}");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
}

#[tokio::test]
async fn ttl_jitter_spreads_expiries_within_bounds() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("jitter")
        .default_ttl(Duration::from_secs(100))
        .ttl_jitter(0.5)
        .redis_url(redis.url())
        .build()
        .unwrap();
    let mut ttls = Vec::new();
    for i in 0..20 {
        assert_eq!(cache.set(format!("k{i}"), "v").await, Write::Done);
        ttls.push(pttl(&redis, &format!("k{i}")));
    }
    assert!(
        ttls.iter().all(|t| (49_000..=100_000).contains(t)),
        "{ttls:?}"
    );
    ttls.sort_unstable();
    ttls.dedup_by(|a, b| (*a - *b).abs() < 1000);
    assert!(ttls.len() > 5, "spread, not lock-step: {ttls:?}");
}

#[tokio::test]
async fn ttls_at_their_extremes_are_kept_or_refused_never_silently_lost() {
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("ttl-extremes")
        .max_ttl(Duration::MAX)
        .default_ttl(Duration::from_secs(u64::MAX / 4))
        .redis_url(redis.url())
        .build()
        .unwrap();
    // A TTL far beyond what Redis' clock holds is still a write that lives.
    assert_eq!(cache.set("long", "v").await, Write::Done);
    assert_eq!(cache.get("long").await.as_deref(), Some(&b"v"[..]));
    // Zero is refused, not reported done for a key that lives 1 ms.
    assert_eq!(
        cache.set_with_ttl("zero", "v", Duration::ZERO).await,
        Write::Skipped(fusebox::cache::Reason::Rejected)
    );
    assert_eq!(
        cache.expire("long", Duration::ZERO).await,
        Write::Skipped(fusebox::cache::Reason::Rejected)
    );
    assert_eq!(cache.get("long").await.as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn a_ttl_over_max_ttl_is_cut_to_it_and_counted() {
    crate::common::metrics();
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("ttl-capped")
        .prefix("c:")
        .redis_url(redis.url())
        .build()
        .unwrap();
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    assert_eq!(cache.set_with_ttl("k", "v", century).await, Write::Done);
    let ttl: u64 = redis
        .cmd(&["TTL", "c:k"])
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    let week = 7 * 24 * 3600;
    assert!((week - 60..=week).contains(&ttl), "{ttl}");
    let capped = || {
        crate::common::counter(
            fusebox::telemetry::CACHE_TTL_CAPPED_TOTAL,
            &[("cache", "ttl-capped")],
        )
    };
    assert_eq!(capped(), 1);
    assert_eq!(
        cache.set_with_ttl("k", "v", Duration::from_secs(60)).await,
        Write::Done
    );
    assert_eq!(capped(), 1, "a TTL within the cap is not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_over_the_cap_are_never_sent_and_hold_nothing_up() {
    crate::common::metrics();
    let redis = RedisServer::start(&[]);
    let cache = Cache::builder()
        .name("key-cap")
        .prefix("p:")
        .redis_url(redis.url())
        .build()
        .unwrap();
    assert_eq!(cache.set("small", "v").await, Write::Done);
    let huge = "k".repeat(1 << 20);
    // Sixteen callers with 1 MiB keys, and readers of a small key meanwhile.
    let mut big = Vec::new();
    for _ in 0..16 {
        let (cache, huge) = (cache.clone(), huge.clone());
        big.push(tokio::spawn(async move {
            (cache.get(&huge).await, cache.set(&huge, "v").await)
        }));
    }
    for _ in 0..50 {
        assert_eq!(cache.get("small").await.as_deref(), Some(&b"v"[..]));
    }
    for t in big {
        let (read, write) = t.await.unwrap();
        assert_eq!(read, None);
        assert_eq!(write, Write::Skipped(fusebox::cache::Reason::TooLarge));
    }
    assert_eq!(
        cache.delete(&huge).await,
        Write::Skipped(fusebox::cache::Reason::TooLarge)
    );
    // In a batch, only the long key is left out.
    let values = cache.get_many(["small", huge.as_str(), "absent"]).await;
    assert_eq!(values, vec![Some("v".into()), None, None]);
    // The cap counts the prefix: 8 KiB in all.
    let edge = "e".repeat((8 << 10) - 2);
    assert_eq!(cache.set(&edge, "v").await, Write::Done);
    assert_eq!(
        cache.set(format!("{edge}x"), "v").await,
        Write::Skipped(fusebox::cache::Reason::TooLarge)
    );
    assert_eq!(cache.breaker().state(), State::Closed);
    assert_eq!(redis.cmd(&["DBSIZE"]), ":2");
    // No connect failed, so none is counted.
    let addr = format!("127.0.0.1:{}", redis.port());
    let errors = crate::common::counter(
        fusebox::telemetry::REDIS_CONNECT_ERRORS_TOTAL,
        &[("addr", &addr)],
    );
    assert_eq!(errors, 0);
}

/// What a tonic service caches: its own prost messages, stored as their
/// wire bytes (readable by any other protobuf client of the same Redis).
#[cfg(feature = "prost")]
#[tokio::test]
async fn prost_messages_round_trip_as_their_wire_bytes() {
    use fusebox::cache::ProstCodec;
    use prost::Message;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Reply {
        #[prost(string, tag = "1")]
        message: String,
        #[prost(uint32, tag = "2")]
        count: u32,
    }
    let redis = RedisServer::start(&[]);
    let replies = Cache::builder()
        .name("prost")
        .redis_url(redis.url())
        .build()
        .unwrap()
        .typed(ProstCodec);
    let reply = Reply {
        message: "hello ada".into(),
        count: 2,
    };
    let loaded = replies
        .get_or_load("hello:ada", || async {
            Ok::<_, std::io::Error>(reply.clone())
        })
        .await
        .unwrap();
    assert_eq!(loaded, reply);
    assert_eq!(replies.get::<Reply>("hello:ada").await, Some(reply.clone()));
    // Stored as the message's own encoding, nothing around it.
    let stored = redis.cmd(&["STRLEN", "hello:ada"]);
    assert_eq!(stored, format!(":{}", reply.encoded_len()));
    // Not a Reply: a miss (counted), then replaced by the loader.
    redis.cmd(&["SET", "hello:ada", "\u{ff}\u{ff}\u{ff}"]);
    assert_eq!(replies.get::<Reply>("hello:ada").await, None);
}
