#![cfg(feature = "tls")]

use std::time::Duration;

use fusebox::backend::RedisConfig;
use fusebox::cache::{Cache, Write};

use crate::common::{free_port, RedisServer};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls");

fn tls_server() -> (RedisServer, u16) {
    let port = free_port().to_string();
    let file = |name: &str| format!("{DIR}/{name}");
    let (cert, key, ca) = (file("server.crt"), file("server.key"), file("ca.crt"));
    let args = [
        "--tls-port",
        &port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ];
    (RedisServer::start(&args), port.parse().unwrap())
}

#[tokio::test]
async fn rediss_round_trip_trusting_a_given_ca() {
    let (redis, tls_port) = tls_server();
    let ca = std::fs::read(format!("{DIR}/ca.crt")).unwrap();
    let config = RedisConfig::builder(format!("rediss://localhost:{tls_port}"))
        .tls_root_cert(ca)
        .connect_timeout(Duration::from_millis(500))
        .checkout_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let cache = Cache::builder().name("tls").redis(config).build().unwrap();
    assert_eq!(cache.set("k", "over tls").await, Write::Done);
    assert_eq!(cache.get("k").await.as_deref(), Some(&b"over tls"[..]));
    // Written to the real server (read back over its plain port).
    assert_eq!(redis.cmd(&["GET", "k"]), "over tls");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_miss_not_an_error() {
    let (redis, tls_port) = tls_server();
    redis.cmd(&["SET", "k", "v"]);
    // The system's roots do not know the test CA.
    let cache = Cache::builder()
        .name("tls-untrusted")
        .redis_url(format!("rediss://localhost:{tls_port}"))
        .build()
        .unwrap();
    for _ in 0..6 {
        assert_eq!(cache.get("k").await, None);
    }
    assert_ne!(cache.breaker().state(), fusebox::breaker::State::Closed);
}
