//! The watchdog's alerts delivered to a webhook, for teams without
//! Prometheus: see [`Webhook`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use super::Alert;
use crate::error::ConfigError;
use crate::telemetry;

mod payload;

/// Where the watchdog's alerts are posted, and how hard it tries
/// ([`WatchdogBuilder::webhook`](super::WatchdogBuilder::webhook)).
///
/// Each alert is posted once per change: when it fires and when it is
/// resolved (usage levels, the leeway forecast, dangerous settings, Redis
/// down and up, keys an expiry policy had to give a TTL; a cluster's per
/// node). The body is one JSON document that both kinds of receiver read:
///
/// * a Slack-style incoming webhook (Slack, Mattermost, Rocket.Chat, …)
///   reads its `text`: `FIRING [fusebox watchdog redis] memory above 50 %
///   of the limit (now 61.2 %)`;
/// * an Alertmanager-style receiver reads the rest, in the format of
///   Alertmanager's webhook (version 4): `status`, `alerts[]` with
///   `labels` (`alertname`, `watchdog`, `severity`, and `level`, `node`,
///   `setting` or `pattern`), `annotations.summary`, `startsAt`, `endsAt`
///   and a `fingerprint` the firing and the resolution share.
///
/// Delivery never blocks the watchdog: alerts wait in a queue of their own
/// (bounded, [`queue`](Self::queue); when full, the oldest is dropped and
/// counted), posted one at a time in order. An attempt that fails (no
/// connection, no answer within [`timeout`](Self::timeout), a status other
/// than 2xx) is retried after an exponential back-off with jitter
/// ([`backoff`](Self::backoff)) until it succeeds: nothing queued is lost
/// while the receiver is down or failing. Delivery is at least once: a
/// receiver that answers after the timeout sees that alert again. When the
/// watchdog is dropped, what is queued is still posted, until the first
/// failure.
///
/// Bodies hold the watchdog's name, node addresses (`ip:port`), patterns
/// and figures, never a Redis URL or password. The webhook's own URL (often
/// a secret, as Slack's are) is never logged: logs name its host.
/// Outcomes are counted in
/// [`WATCHDOG_WEBHOOK_TOTAL`](crate::telemetry::WATCHDOG_WEBHOOK_TOTAL).
///
/// `https://` URLs need the `tls` feature.
#[derive(Clone)]
#[must_use]
pub struct Webhook {
    url: String,
    timeout: Duration,
    queue: usize,
    backoff: (Duration, Duration),
    /// Built by [`check`](Self::check).
    client: Option<reqwest::Client>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("host", &host(&self.url))
            .field("timeout", &self.timeout)
            .field("queue", &self.queue)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// The longest wait or deadline used: settings above it (up to
/// `Duration::MAX`) mean "practically never".
const FAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// `wait` from now, or [`FAR`] from now if `wait` is longer.
fn after(wait: Duration) -> Instant {
    Instant::now() + wait.min(FAR)
}

/// The most alerts a webhook's queue may hold.
const MAX_QUEUE: usize = 1 << 16;

impl Webhook {
    /// Posts to `url` (`http://` or `https://`). Checked when the watchdog
    /// is built.
    pub fn new(url: impl Into<String>) -> Self {
        Webhook {
            url: url.into(),
            timeout: Duration::from_secs(5),
            queue: 256,
            backoff: (Duration::from_millis(500), Duration::from_secs(60)),
            client: None,
        }
    }

    /// Deadline of each attempt, from connecting to the answer's status.
    /// Defaults to 5 s; must be more than zero.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// How many alerts wait for delivery at most; past it, the oldest is
    /// dropped. Defaults to 256; 1 to 65 536.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// The wait before the first retry, doubled at each failure up to
    /// `max` (each wait is jittered down by up to a half). Defaults to
    /// 500 ms and 60 s; `first` must be more than zero and at most `max`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max);
        self
    }

    /// Checks the settings and builds the HTTP client.
    pub(super) fn check(&mut self) -> Result<(), ConfigError> {
        let refuse = |why: &str| Err(ConfigError::new("watchdog", "webhook", why));
        let url = match reqwest::Url::parse(&self.url) {
            Ok(url) => url,
            // The parser's message may quote the URL: not repeated.
            Err(_) => return refuse("not a URL"),
        };
        match url.scheme() {
            "http" => {}
            "https" if cfg!(feature = "tls") => {}
            "https" => return refuse("https:// URLs need the `tls` feature"),
            _ => return refuse("must be an http:// or https:// URL"),
        }
        if self.timeout.is_zero() {
            return refuse("the timeout must be more than zero");
        }
        if self.queue == 0 || self.queue > MAX_QUEUE {
            return refuse("the queue must hold 1 to 65536 alerts");
        }
        let (first, max) = self.backoff;
        if first.is_zero() || first > max {
            return refuse("the back-off must start above zero and at most at its maximum");
        }
        // `Duration::MAX` means "practically never": a far deadline, not an
        // overflow.
        let timeout = self.timeout.min(FAR);
        match reqwest::Client::builder().timeout(timeout).build() {
            Ok(client) => self.client = Some(client),
            Err(_) => return refuse("no HTTP client could be built"),
        }
        Ok(())
    }
}

/// The host of `url`, for logs.
fn host(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Starts delivering `alerts` to each (checked) webhook.
pub(super) fn spawn(hooks: &[Webhook], watchdog: &str, alerts: &broadcast::Sender<Alert>) {
    for hook in hooks {
        let Some(client) = &hook.client else { continue };
        let courier = Courier {
            url: hook.url.clone(),
            host: host(&hook.url),
            client: client.clone(),
            watchdog: watchdog.to_owned(),
            backoff: hook.backoff,
            queue: Queue::new(hook.queue),
        };
        tokio::spawn(courier.run(alerts.subscribe()));
    }
}

type Attempt = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One webhook's delivery task.
struct Courier {
    url: String,
    host: String,
    client: reqwest::Client,
    watchdog: String,
    backoff: (Duration, Duration),
    queue: Queue,
}

impl Courier {
    async fn run(mut self, mut alerts: broadcast::Receiver<Alert>) {
        let mut open = true;
        let mut failures = 0u32;
        let mut retry_at: Option<Instant> = None;
        let mut attempt: Option<Attempt> = None;
        loop {
            if attempt.is_none() && retry_at.is_none() {
                match self.queue.front() {
                    Some(body) => attempt = Some(Box::pin(post(&self.client, &self.url, body))),
                    None if !open => return,
                    None => {}
                }
            }
            tokio::select! {
                got = alerts.recv(), if open => match got {
                    Ok(alert) => {
                        let dropped = self.queue.push(&self.watchdog, &alert);
                        self.count("dropped", dropped);
                    }
                    Err(RecvError::Lagged(n)) => self.count("dropped", n),
                    Err(RecvError::Closed) => open = false,
                },
                result = async { attempt.as_mut().expect("guarded").await }, if attempt.is_some() => {
                    attempt = None;
                    match result {
                        Ok(()) => {
                            self.queue.pop();
                            failures = 0;
                            self.count("sent", 1);
                        }
                        Err(_) if !open => {
                            // The watchdog is gone: no retries.
                            self.count("dropped", self.queue.len() as u64);
                            return;
                        }
                        Err(why) => {
                            failures = failures.saturating_add(1);
                            let wait = backoff(self.backoff, failures);
                            tracing::warn!(target: "fusebox::watchdog", watchdog = &*self.watchdog, host = &*self.host, error = &*why, retry_in = ?wait, "webhook delivery failed");
                            self.count("retried", 1);
                            retry_at = Some(after(wait));
                        }
                    }
                }
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    retry_at = None;
                }
            }
        }
    }

    fn count(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            telemetry::webhook(&self.watchdog, outcome, n);
        }
    }
}

/// One attempt: a 2xx answer within the client's timeout.
fn post(client: &reqwest::Client, url: &str, body: Bytes) -> Attempt {
    let request = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send();
    Box::pin(async move {
        match request.await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(e.without_url().to_string()),
        }
    })
}

/// The wait after `failures` failures in a row: `first` doubled each time
/// up to `max`, less a jitter of up to a half.
fn backoff((first, max): (Duration, Duration), failures: u32) -> Duration {
    let doubled = first.saturating_mul(1 << failures.saturating_sub(1).min(20));
    let wait = doubled.min(max);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    // A cheap spread, enough to keep many watchdogs from retrying together.
    let jitter = f64::from(nanos.wrapping_mul(2_654_435_761) >> 8) / f64::from(1u32 << 24);
    wait.mul_f64(1.0 - jitter / 2.0)
}

/// The bodies waiting for delivery, oldest first, and when each firing
/// alert began (for its resolution's `startsAt`).
struct Queue {
    bodies: VecDeque<Bytes>,
    cap: usize,
    firing: HashMap<u64, SystemTime>,
}

impl Queue {
    fn new(cap: usize) -> Self {
        Queue {
            bodies: VecDeque::new(),
            cap,
            firing: HashMap::new(),
        }
    }

    /// Queues `alert`'s body; returns how many were dropped for it.
    fn push(&mut self, watchdog: &str, alert: &Alert) -> u64 {
        let described = payload::describe(watchdog, alert);
        let now = SystemTime::now();
        let key = described.fingerprint();
        let started = match described.firing {
            true => *self.firing.entry(key).or_insert(now),
            false => self.firing.remove(&key).unwrap_or(now),
        };
        let body = payload::body(&described, started, now);
        self.bodies.push_back(body.into());
        let mut dropped = 0;
        while self.bodies.len() > self.cap {
            self.bodies.pop_front();
            dropped += 1;
        }
        dropped
    }

    fn front(&self) -> Option<Bytes> {
        self.bodies.front().cloned()
    }

    fn pop(&mut self) {
        self.bodies.pop_front();
    }

    fn len(&self) -> usize {
        self.bodies.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_range_are_refused_and_the_url_is_never_quoted() {
        let secret = "http://hooks.example/T000/B000/s3cr3t";
        let ok = Webhook::new(secret);
        assert!(ok.clone().check().is_ok());
        assert!(!format!("{ok:?}").contains("s3cr3t"));
        for bad in [
            Webhook::new("ftp://hooks.example/s3cr3t"),
            Webhook::new("not a url s3cr3t"),
            ok.clone().timeout(Duration::ZERO),
            ok.clone().queue(0),
            ok.clone().queue(MAX_QUEUE + 1),
            ok.clone().backoff(Duration::ZERO, Duration::from_secs(1)),
            ok.clone()
                .backoff(Duration::from_secs(2), Duration::from_secs(1)),
        ] {
            let e = bad.clone().check().expect_err("refused");
            assert_eq!(e.field(), "webhook");
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
        }
        assert!(ok.clone().timeout(Duration::MAX).check().is_ok());
        assert!(ok.backoff(Duration::MAX, Duration::MAX).check().is_ok());
        let https = Webhook::new("https://hooks.example/s3cr3t").check();
        assert_eq!(https.is_ok(), cfg!(feature = "tls"));
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_with_at_most_half_off() {
        let b = (Duration::from_millis(100), Duration::from_secs(1));
        for (failures, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (99, 1000),
        ] {
            let wait = backoff(b, failures);
            let full = Duration::from_millis(full);
            assert!(wait <= full && wait >= full / 2, "{failures}: {wait:?}");
        }
        let longest = backoff((Duration::MAX, Duration::MAX), u32::MAX);
        assert!(longest > Duration::ZERO);
        assert!(
            after(longest) > Instant::now(),
            "no overflow at the extreme"
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_a_resolution_keeps_its_start() {
        let mut q = Queue::new(2);
        let usage = |raised| Alert::Usage {
            level: 0.2,
            ratio: 0.3,
            raised,
        };
        assert_eq!(q.push("w", &usage(true)), 0);
        assert_eq!(q.push("w", &Alert::Up), 0);
        assert_eq!(q.push("w", &usage(false)), 1);
        assert_eq!(q.len(), 2);
        let up: serde_json::Value = serde_json::from_slice(&q.front().unwrap()).unwrap();
        assert_eq!(up["alerts"][0]["labels"]["alertname"], "RedisDown");
        q.pop();
        let resolved: serde_json::Value = serde_json::from_slice(&q.front().unwrap()).unwrap();
        assert_eq!(resolved["status"], "resolved");
        assert!(q.firing.is_empty());
    }
}
