//! A wrong password: classified as an authentication failure, and the
//! password appears in no log line, no `Debug`, no error and no metric;
//! and an outage does not flood the logs.
//!
//! A binary of its own: it installs a global tracing subscriber and metrics
//! recorder.

#[path = "../cache/common.rs"]
mod common;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusebox::backend::{RedisBackend, RedisConfig};
use fusebox::breaker::State;
use fusebox::cache::{Cache, Reason};
use tower::{Service, ServiceExt};

use common::{metrics, RedisServer};

const RIGHT: &str = "right-pass-7f3a";
const WRONG: &str = "wrong-pass-9c1e";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_wrong_password_is_classified_and_never_revealed() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    metrics();

    let redis = RedisServer::start(&["--requirepass", RIGHT]);
    assert!(redis.cmd_auth(RIGHT, &["PING"]).contains("PONG"));
    let url = format!("redis://:{WRONG}@127.0.0.1:{}", redis.port());

    // The backend says why it has no connection.
    let config = RedisConfig::builder(&url).build().unwrap();
    let mut seen = Vec::new();
    seen.push(format!("{config:?}"));
    let mut backend = RedisBackend::new(config.clone());
    let mut reason = None;
    for _ in 0..50 {
        let err = backend
            .ready()
            .await
            .unwrap()
            .call(fusebox::cache::CacheRequest::Get("k".into()))
            .await
            .unwrap_err();
        seen.push(err.to_string());
        seen.push(format!("{err:?}"));
        // The refusal itself, at once: never a wait for the deadline.
        reason = Some(err.reason());
        if reason == Some(Reason::Auth) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reason, Some(Reason::Auth), "the connect error is named");

    // Through the cache: misses, and the breaker opens.
    let cache = Cache::builder()
        .name("secrets")
        .redis(config)
        .build()
        .unwrap();
    for _ in 0..10 {
        assert_eq!(cache.get("k").await, None);
    }
    assert_eq!(cache.breaker().state(), State::Open);
    // An outage does not flood the logs: 500 more failed-open calls.
    for _ in 0..500 {
        assert_eq!(cache.get("k").await, None);
    }
    seen.push(format!("{cache:?}"));
    seen.push(format!("{backend:?}"));

    // A bad URL's error does not quote it either.
    let bad = RedisConfig::builder(format!("redis://:{WRONG}@127.0.0.1:notaport"))
        .build()
        .unwrap_err();
    seen.push(bad.to_string());
    seen.push(format!("{bad:?}"));
    let builder = RedisConfig::builder(&url);
    seen.push(format!("{builder:?}"));

    let _ = std::io::stderr().flush();
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("redis connect failed") && logs.contains("auth"),
        "connect errors are logged with their reason:\n{logs}"
    );
    let lines = |needle: &str| logs.lines().filter(|l| l.contains(needle)).count();
    let summaries = lines("cache failing open");
    assert!(
        (1..=3).contains(&summaries),
        "rate-limited summaries, not a line per call: {summaries}"
    );
    assert!(logs
        .lines()
        .any(|l| l.contains("cache failing open") && l.contains("count=")));
    assert_eq!(
        lines("circuit breaker opened"),
        1,
        "one line per transition"
    );
    for text in seen.iter().chain([&logs]) {
        assert!(!text.contains(WRONG), "password leaked into: {text}");
        assert!(!text.contains(RIGHT), "password leaked into: {text}");
    }
    for name in common::metric_keys() {
        assert!(!name.contains(WRONG), "password leaked into metric {name}");
    }
}
