//! `ExpiryGuard` against a real redis-server: every write family it claims,
//! as single commands, in pipelines and in transactions; keys outside the
//! policy and keys with a TTL untouched; callers see only their replies.

use std::time::Duration;

use fusebox::watchdog::ExpiryGuard;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Value};

use crate::common::RedisServer;

const TTL: u64 = 3600;

/// Every write the guard claims, each creating the key `{prefix}{name}`
/// (two for `MSET`/`MSETNX`), from the sources [`sources`] makes.
fn writes(prefix: &str) -> Vec<(Cmd, Vec<String>)> {
    let k = |name: &str| format!("{prefix}{name}");
    let mut out = Vec::new();
    let mut w = |cmd: &mut Cmd, keys: &[&str]| {
        out.push((cmd.clone(), keys.iter().map(|n| k(n)).collect()));
    };
    let c = redis::cmd;
    // Strings, bitmaps, counters.
    w(c("SET").arg(k("set")).arg("v"), &["set"]);
    w(
        c("set").arg(k("set-nx")).arg("v").arg("NX").arg("GET"),
        &["set-nx"],
    );
    w(
        c("SET").arg(k("keepttl")).arg("v").arg("KEEPTTL"),
        &["keepttl"],
    );
    w(c("SETNX").arg(k("setnx")).arg("v"), &["setnx"]);
    w(c("GETSET").arg(k("getset")).arg("v"), &["getset"]);
    w(c("APPEND").arg(k("append")).arg("v"), &["append"]);
    w(
        c("SETRANGE").arg(k("setrange")).arg(2).arg("v"),
        &["setrange"],
    );
    w(c("INCR").arg(k("incr")), &["incr"]);
    w(c("INCRBY").arg(k("incrby")).arg(2), &["incrby"]);
    w(
        c("INCRBYFLOAT").arg(k("incrbyfloat")).arg(1.5),
        &["incrbyfloat"],
    );
    w(c("DECR").arg(k("decr")), &["decr"]);
    w(c("DECRBY").arg(k("decrby")).arg(2), &["decrby"]);
    w(c("SETBIT").arg(k("setbit")).arg(7).arg(1), &["setbit"]);
    w(
        c("BITFIELD")
            .arg(k("bitfield"))
            .arg("SET")
            .arg("u8")
            .arg(0)
            .arg(1),
        &["bitfield"],
    );
    w(
        c("BITOP").arg("OR").arg(k("bitop")).arg("src:str"),
        &["bitop"],
    );
    w(
        c("MSET").arg(k("mset1")).arg(1).arg(k("mset2")).arg(2),
        &["mset1", "mset2"],
    );
    w(
        c("MSETNX")
            .arg(k("msetnx1"))
            .arg(1)
            .arg(k("msetnx2"))
            .arg(2),
        &["msetnx1", "msetnx2"],
    );
    // Hashes.
    w(c("HSET").arg(k("hset")).arg("f").arg("v"), &["hset"]);
    w(c("HSETNX").arg(k("hsetnx")).arg("f").arg("v"), &["hsetnx"]);
    w(c("HMSET").arg(k("hmset")).arg("f").arg("v"), &["hmset"]);
    w(c("HINCRBY").arg(k("hincrby")).arg("f").arg(1), &["hincrby"]);
    w(
        c("HINCRBYFLOAT").arg(k("hincrbyfloat")).arg("f").arg(1.5),
        &["hincrbyfloat"],
    );
    // Lists.
    w(c("LPUSH").arg(k("lpush")).arg("a"), &["lpush"]);
    w(c("RPUSH").arg(k("rpush")).arg("a"), &["rpush"]);
    w(
        c("LMOVE")
            .arg("src:list")
            .arg(k("lmove"))
            .arg("LEFT")
            .arg("RIGHT"),
        &["lmove"],
    );
    w(
        c("BLMOVE")
            .arg("src:list")
            .arg(k("blmove"))
            .arg("LEFT")
            .arg("RIGHT")
            .arg(1),
        &["blmove"],
    );
    w(
        c("RPOPLPUSH").arg("src:list").arg(k("rpoplpush")),
        &["rpoplpush"],
    );
    w(
        c("BRPOPLPUSH").arg("src:list").arg(k("brpoplpush")).arg(1),
        &["brpoplpush"],
    );
    // Sets.
    w(c("SADD").arg(k("sadd")).arg("a"), &["sadd"]);
    w(
        c("SMOVE").arg("src:set").arg(k("smove")).arg(k("member")),
        &["smove"],
    );
    w(
        c("SUNIONSTORE").arg(k("sunionstore")).arg("src:set"),
        &["sunionstore"],
    );
    w(
        c("SINTERSTORE").arg(k("sinterstore")).arg("src:set"),
        &["sinterstore"],
    );
    w(
        c("SDIFFSTORE").arg(k("sdiffstore")).arg("src:set"),
        &["sdiffstore"],
    );
    // Sorted sets and geo.
    w(c("ZADD").arg(k("zadd")).arg(1).arg("a"), &["zadd"]);
    w(c("ZINCRBY").arg(k("zincrby")).arg(1).arg("a"), &["zincrby"]);
    w(
        c("ZUNIONSTORE")
            .arg(k("zunionstore"))
            .arg(1)
            .arg("src:zset"),
        &["zunionstore"],
    );
    w(
        c("ZINTERSTORE")
            .arg(k("zinterstore"))
            .arg(1)
            .arg("src:zset"),
        &["zinterstore"],
    );
    w(
        c("ZDIFFSTORE").arg(k("zdiffstore")).arg(1).arg("src:zset"),
        &["zdiffstore"],
    );
    w(
        c("ZRANGESTORE")
            .arg(k("zrangestore"))
            .arg("src:zset")
            .arg(0)
            .arg(-1),
        &["zrangestore"],
    );
    w(
        c("GEOADD")
            .arg(k("geoadd"))
            .arg(13.36)
            .arg(38.11)
            .arg("palermo"),
        &["geoadd"],
    );
    w(
        c("GEOSEARCHSTORE")
            .arg(k("geosearchstore"))
            .arg("src:geo")
            .arg("FROMLONLAT")
            .arg(15)
            .arg(37)
            .arg("BYRADIUS")
            .arg(200)
            .arg("km"),
        &["geosearchstore"],
    );
    // Streams.
    w(
        c("XADD").arg(k("xadd")).arg("*").arg("f").arg("v"),
        &["xadd"],
    );
    w(
        c("XGROUP")
            .arg("CREATE")
            .arg(k("xgroup"))
            .arg("g")
            .arg("$")
            .arg("MKSTREAM"),
        &["xgroup"],
    );
    // HyperLogLogs.
    w(c("PFADD").arg(k("pfadd")).arg("a"), &["pfadd"]);
    w(c("PFMERGE").arg(k("pfmerge")).arg("src:hll"), &["pfmerge"]);
    // Keys made from others.
    w(c("COPY").arg("src:str").arg(k("copy")), &["copy"]);
    w(
        c("RENAME").arg(k("rename-src")).arg(k("rename")),
        &["rename"],
    );
    w(
        c("RENAMENX").arg(k("renamenx-src")).arg(k("renamenx")),
        &["renamenx"],
    );
    w(
        c("SORT").arg("src:nums").arg("STORE").arg(k("sort")),
        &["sort"],
    );
    out
}

/// The keys the writes read from, and the sources `RENAME`s consume.
async fn sources(conn: &mut MultiplexedConnection, prefixes: &[String]) {
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg("src:str").arg("abc").ignore();
    pipe.cmd("RPUSH").arg("src:list").arg(&[0; 64]).ignore();
    pipe.cmd("RPUSH").arg("src:nums").arg(&[3, 1, 2]).ignore();
    pipe.cmd("SADD").arg("src:set").arg("x").ignore();
    pipe.cmd("ZADD").arg("src:zset").arg(1).arg("x").ignore();
    pipe.cmd("GEOADD")
        .arg("src:geo")
        .arg(15.08)
        .arg(37.5)
        .arg("catania")
        .ignore();
    pipe.cmd("PFADD").arg("src:hll").arg("x").ignore();
    for p in prefixes {
        pipe.cmd("SADD")
            .arg("src:set")
            .arg(format!("{p}member"))
            .ignore();
        pipe.cmd("SET")
            .arg(format!("{p}rename-src"))
            .arg("v")
            .ignore();
        pipe.cmd("SET")
            .arg(format!("{p}renamenx-src"))
            .arg("v")
            .ignore();
    }
    pipe.exec_async(conn).await.unwrap();
}

async fn ttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query_async(conn).await.unwrap()
}

/// Every key the writes made: in the policy with a TTL of at most `TTL`,
/// outside it with none.
async fn check(conn: &mut MultiplexedConnection, prefix: &str, held: bool) {
    for (cmd, keys) in writes(prefix) {
        for key in keys {
            let t = ttl(conn, &key).await;
            match held {
                true => assert!(t > 0 && t <= TTL as i64, "{key} ({cmd:?}): TTL {t}"),
                false => assert_eq!(t, -1, "{key} outside the policy was touched"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_claimed_write_gets_a_ttl_alone_in_a_pipeline_and_in_a_transaction() {
    let redis = RedisServer::start(&[]);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut bare = client.get_multiplexed_async_connection().await.unwrap();
    let mut guard = ExpiryGuard::builder()
        .expire("jobs:done:*", Duration::from_secs(TTL))
        .wrap(bare.clone())
        .unwrap();
    let modes = ["alone", "pipe", "tx"];
    let prefixes: Vec<String> = modes
        .iter()
        .flat_map(|m| [format!("jobs:done:{m}:"), format!("other:{m}:")])
        .collect();
    sources(&mut bare, &prefixes).await;
    for mode in modes {
        for prefix in [format!("jobs:done:{mode}:"), format!("other:{mode}:")] {
            let writes = writes(&prefix);
            match mode {
                "alone" => {
                    for (cmd, _) in &writes {
                        let reply = guard.req_packed_command(cmd).await;
                        assert!(reply.is_ok(), "{cmd:?}: {reply:?}");
                    }
                }
                _ => {
                    let mut pipe = redis::pipe();
                    if mode == "tx" {
                        pipe.atomic();
                    }
                    for (cmd, _) in &writes {
                        pipe.add_command(cmd.clone());
                    }
                    let replies: Vec<Value> = pipe.query_async(&mut guard).await.unwrap();
                    assert_eq!(replies.len(), writes.len(), "only the caller's replies");
                }
            }
            check(&mut bare, &prefix, prefix.starts_with("jobs:done:")).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_a_ttl_keeps_it_and_replies_are_the_callers() {
    let redis = RedisServer::start(&[]);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut bare = client.get_multiplexed_async_connection().await.unwrap();
    let manager = client.get_connection_manager().await.unwrap();
    let mut guard = ExpiryGuard::builder()
        .expire("jobs:done:*", Duration::from_secs(TTL))
        .wrap(manager)
        .unwrap();
    // A hash and a string given a longer TTL by their writer.
    let mut pipe = redis::pipe();
    pipe.cmd("HSET").arg("jobs:done:h").arg("f").arg(1).ignore();
    pipe.cmd("EXPIRE").arg("jobs:done:h").arg(99_999).ignore();
    pipe.exec_async(&mut bare).await.unwrap();
    redis::cmd("HSET")
        .arg("jobs:done:h")
        .arg("g")
        .arg(2)
        .exec_async(&mut guard)
        .await
        .unwrap();
    assert!(
        ttl(&mut bare, "jobs:done:h").await > TTL as i64,
        "NX kept the writer's TTL"
    );
    redis::cmd("SET")
        .arg("jobs:done:s")
        .arg("v")
        .arg("EX")
        .arg(99_999)
        .exec_async(&mut guard)
        .await
        .unwrap();
    assert!(ttl(&mut bare, "jobs:done:s").await > TTL as i64);
    // RESTORE with no TTL of its own (0) is held too.
    let dump: Vec<u8> = redis::cmd("DUMP")
        .arg("jobs:done:h")
        .query_async(&mut bare)
        .await
        .unwrap();
    redis::cmd("RESTORE")
        .arg("jobs:done:restored")
        .arg(0)
        .arg(dump)
        .exec_async(&mut guard)
        .await
        .unwrap();
    let t = ttl(&mut bare, "jobs:done:restored").await;
    assert!(t > 0 && t <= TTL as i64, "{t}");

    // Typed replies, in a pipeline and a transaction, as without the guard.
    for atomic in [false, true] {
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        let key = format!("jobs:done:n{atomic}");
        pipe.cmd("INCR")
            .arg(&key)
            .cmd("HSET")
            .arg("jobs:done:hh")
            .arg("f")
            .arg(1)
            .ignore();
        pipe.cmd("INCR").arg(&key).cmd("GET").arg(&key);
        let got: (i64, i64, String) = pipe.query_async(&mut guard).await.unwrap();
        assert_eq!(got, (1, 2, "2".to_owned()));
        assert!(ttl(&mut bare, &key).await > 0);
    }
    // An error reply stays the caller's, and the write around it is held.
    let err = redis::cmd("INCR")
        .arg("jobs:done:s")
        .query_async::<i64>(&mut guard)
        .await;
    assert!(err.is_err(), "INCR of a non-number: {err:?}");
    let got: i64 = redis::cmd("HINCRBY")
        .arg("jobs:done:c")
        .arg("f")
        .arg(5)
        .query_async(&mut guard)
        .await
        .unwrap();
    assert_eq!(got, 5);
    assert!(ttl(&mut bare, "jobs:done:c").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_of_separate_commands_gets_no_extra_reply() {
    let redis = RedisServer::start(&[]);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut bare = client.get_multiplexed_async_connection().await.unwrap();
    let mut guard = ExpiryGuard::builder()
        .expire("jobs:*", Duration::from_secs(TTL))
        .wrap(bare.clone())
        .unwrap();
    let () = redis::cmd("MULTI").query_async(&mut guard).await.unwrap();
    for cmd in [
        redis::cmd("SET").arg("jobs:a").arg("v").clone(),
        redis::cmd("HSET").arg("jobs:b").arg("f").arg("v").clone(),
    ] {
        let queued: String = cmd.query_async(&mut guard).await.unwrap();
        assert_eq!(queued, "QUEUED");
    }
    let replies: Vec<Value> = redis::cmd("EXEC").query_async(&mut guard).await.unwrap();
    assert_eq!(replies.len(), 2);
    assert!(
        ttl(&mut bare, "jobs:a").await > 0,
        "the SET was given PX in place"
    );
    assert_eq!(
        ttl(&mut bare, "jobs:b").await,
        -1,
        "documented: left to the watchdog"
    );
    // After EXEC, writes are followed again.
    let _: i64 = redis::cmd("HSET")
        .arg("jobs:c")
        .arg("f")
        .arg("v")
        .query_async(&mut guard)
        .await
        .unwrap();
    assert!(ttl(&mut bare, "jobs:c").await > 0);
}
