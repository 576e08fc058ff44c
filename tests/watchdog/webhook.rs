//! The watchdog's alerts posted to a real local HTTP receiver that is
//! down, failing with 5xx, or slow; nothing lost once it recovers, and no
//! Redis password in any body.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use fusebox::watchdog::{Alert, Status, Webhook};
use serde_json::Value;
use tokio::sync::broadcast;

use super::quick;
use crate::common::{eventually, free_port, RedisServer};

const PASSWORD: &str = "pw-s3cr3t-9d1f";

/// A webhook receiver: logs every request's body and the status it gave.
#[derive(Default)]
struct Receiver {
    log: Mutex<Vec<(Value, u16)>>,
    /// Requests answered 503 before the receiver works.
    failing: AtomicUsize,
    /// Requests answered only after 3 s before the receiver is fast.
    slow: AtomicUsize,
}

impl Receiver {
    /// The summaries it accepted, in order.
    fn accepted(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        let ok = log.iter().filter(|(_, status)| *status == 200);
        ok.map(|(body, _)| summary(body)).collect()
    }

    fn requests(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

fn summary(body: &Value) -> String {
    body["alerts"][0]["annotations"]["summary"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn receive(State(r): State<Arc<Receiver>>, body: Bytes) -> StatusCode {
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains(PASSWORD), "the password was posted: {text}");
    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
    let taken = |n: &AtomicUsize| n.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok();
    if taken(&r.slow) {
        // Logged as unanswered: the client gives up before the answer.
        r.log.lock().unwrap().push((body, 0));
        tokio::time::sleep(Duration::from_secs(3)).await;
        return StatusCode::OK;
    }
    let status = match taken(&r.failing) {
        true => StatusCode::SERVICE_UNAVAILABLE,
        false => StatusCode::OK,
    };
    r.log.lock().unwrap().push((body, status.as_u16()));
    status
}

/// Serves `receiver` on `port` from now on.
async fn serve(port: u16, receiver: Arc<Receiver>) {
    let app = axum::Router::new()
        .route("/hook/T000/secret-path", post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

fn hook(port: u16) -> Webhook {
    Webhook::new(format!("http://127.0.0.1:{port}/hook/T000/secret-path"))
        .timeout(Duration::from_millis(500))
        .backoff(Duration::from_millis(20), Duration::from_millis(300))
}

/// Everything the watchdog's subscribers saw, as summaries.
fn seen(rx: &mut broadcast::Receiver<Alert>, into: &mut Vec<String>) {
    while let Ok(a) = rx.try_recv() {
        into.push(a.to_string());
    }
}

/// A watchdog over a Redis with a password and no `maxmemory`, measured
/// against a budget it is far over: every level and the warning fire at
/// the first poll.
fn over_budget(redis: &RedisServer, hook: Webhook) -> fusebox::watchdog::Watchdog {
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port());
    quick()
        // No forecast (and no leeway alert) within a test.
        .horizon(Duration::from_secs(3600))
        .min_span(Duration::from_secs(3000))
        .memory_budget(1000)
        .webhook(hook)
        .redis_url(url)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_through_firing_down_up_and_resolved_gets_all_in_order_once_up() {
    let mut redis = RedisServer::start(&["--requirepass", PASSWORD]);
    let port = free_port();
    let watchdog = over_budget(&redis, hook(port));
    let mut rx = watchdog.subscribe();
    let mut expected = Vec::new();
    let firing = eventually(Duration::from_secs(10), || {
        seen(&mut rx, &mut expected);
        std::future::ready(expected.len() >= 4)
    })
    .await;
    assert!(firing, "three levels and the warning: {expected:?}");

    // Redis down and up again, then given a limit it is far under.
    redis.kill();
    let down = eventually(Duration::from_secs(10), || {
        std::future::ready(watchdog.report().status == Status::Down)
    });
    assert!(down.await);
    redis.restart();
    redis.cmd_auth(PASSWORD, &["CONFIG", "SET", "maxmemory", "1gb"]);
    let resolved = eventually(Duration::from_secs(10), || {
        seen(&mut rx, &mut expected);
        std::future::ready(expected.len() >= 10)
    });
    assert!(
        resolved.await,
        "down, up, three levels and the warning resolved: {expected:?}"
    );
    assert!(expected[4].starts_with("redis unreachable"), "{expected:?}");

    // The receiver comes up: all of it arrives, in order, once.
    let receiver = Arc::new(Receiver::default());
    serve(port, receiver.clone()).await;
    let all = eventually(Duration::from_secs(10), || {
        seen(&mut rx, &mut expected);
        std::future::ready(receiver.accepted().len() >= expected.len())
    });
    assert!(all.await, "{:?}", receiver.accepted());
    assert_eq!(receiver.accepted(), expected);
    let log = receiver.log.lock().unwrap();
    let statuses: Vec<_> = log.iter().map(|(b, _)| b["status"].clone()).collect();
    assert_eq!(&statuses[..4], ["firing"; 4]);
    assert_eq!(&statuses[4..6], ["firing", "resolved"], "down, then up");
    assert_eq!(&statuses[6..], ["resolved"; 4]);
    // Each resolution is its firing's: one fingerprint, its start kept.
    for (fired, _) in &log[..4] {
        let fired = &fired["alerts"][0];
        assert_eq!(fired["endsAt"], "0001-01-01T00:00:00Z");
        let ended = log[6..]
            .iter()
            .map(|(b, _)| &b["alerts"][0])
            .find(|a| a["fingerprint"] == fired["fingerprint"])
            .expect("resolved");
        assert_eq!(fired["startsAt"], ended["startsAt"]);
        assert_ne!(ended["endsAt"], "0001-01-01T00:00:00Z");
    }
    assert!(log[0].0["text"]
        .as_str()
        .unwrap()
        .starts_with("FIRING [fusebox watchdog test]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_5xx_gets_every_alert_once_it_recovers() {
    let redis = RedisServer::start(&["--requirepass", PASSWORD]);
    let port = free_port();
    let receiver = Arc::new(Receiver {
        failing: AtomicUsize::new(5),
        ..Receiver::default()
    });
    serve(port, receiver.clone()).await;
    let watchdog = over_budget(&redis, hook(port));
    let mut rx = watchdog.subscribe();
    let mut expected = Vec::new();
    let all = eventually(Duration::from_secs(10), || {
        seen(&mut rx, &mut expected);
        std::future::ready(expected.len() >= 4 && receiver.accepted().len() >= 4)
    });
    assert!(all.await, "{:?}", receiver.accepted());
    assert_eq!(receiver.accepted(), expected);
    assert_eq!(receiver.requests(), 4 + 5, "each 503 retried once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_never_holds_the_watchdog_back() {
    let mut redis = RedisServer::start(&["--requirepass", PASSWORD]);
    let port = free_port();
    let receiver = Arc::new(Receiver {
        slow: AtomicUsize::new(1),
        ..Receiver::default()
    });
    serve(port, receiver.clone()).await;
    let watchdog = over_budget(&redis, hook(port));
    let mut rx = watchdog.subscribe();
    let mut expected = Vec::new();
    let first = eventually(Duration::from_secs(10), || {
        std::future::ready(receiver.requests() >= 1)
    });
    assert!(first.await);
    // While the receiver sits on the first alert, the watchdog sees Redis
    // go down and says so.
    redis.kill();
    let down = eventually(Duration::from_secs(10), || {
        seen(&mut rx, &mut expected);
        std::future::ready(expected.iter().any(|a| a.starts_with("redis unreachable")))
    });
    assert!(down.await, "{expected:?}");
    assert_eq!(watchdog.report().status, Status::Down);
    let all = eventually(Duration::from_secs(10), || {
        seen(&mut rx, &mut expected);
        std::future::ready(receiver.accepted().len() >= expected.len())
    });
    assert!(all.await, "{:?} of {expected:?}", receiver.accepted());
    // At least once: the alert it sat on came again after the timeout.
    let mut accepted = receiver.accepted();
    accepted.dedup();
    assert_eq!(accepted, expected);
}
