//! Transitions and outcomes reach `metrics` and `tracing`.
//!
//! A test binary of its own: the metrics recorder is process-global, and
//! tracing caches per-callsite interest process-wide, so tests running in
//! parallel in one binary would race with the subscriber installed here.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fusebox::breaker::Breaker;
use fusebox::telemetry::{BREAKER_CALLS_TOTAL, BREAKER_STATE, BREAKER_TRANSITIONS_TOTAL};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

async fn advance(d: Duration) {
    tokio::time::advance(d).await;
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

fn exact() -> fusebox::breaker::ConfigBuilder {
    fusebox::breaker::Config::builder().open_jitter(0.0)
}

/// Held by each test: a snapshot resets every counter to zero, so tests
/// reading metrics must not run at once.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("no other recorder in this test binary");
        snapshotter
    })
}

/// The metrics of one breaker, as `(name, sorted labels, value)`.
/// A metric's name, labels and value.
type Row = (String, Vec<(String, String)>, DebugValue);

fn metrics_of(breaker: &str) -> Vec<Row> {
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels
                .iter()
                .any(|(k, v)| k == "breaker" && v == breaker)
                .then(|| (key.name().to_owned(), labels, value))
        })
        .collect()
}

/// A counter's or gauge's value, as f64.
fn value(metrics: &[Row], name: &str, label: (&str, &str)) -> Option<f64> {
    metrics
        .iter()
        .find(|(n, labels, _)| {
            n == name && labels.iter().any(|(k, v)| k == label.0 && v == label.1)
        })
        .and_then(|(_, _, v)| match v {
            DebugValue::Counter(c) => Some(*c as f64),
            DebugValue::Gauge(g) => Some(g.into_inner()),
            DebugValue::Histogram(_) => None,
        })
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn transitions_and_outcomes_are_counted_and_traced() {
    let _serial = SERIAL.lock().await;
    snapshotter();
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let breaker = Breaker::new(
        exact()
            .name("telemetry-test")
            .consecutive_failures(2)
            .build()
            .unwrap(),
    );
    let mut svc = breaker.layer().layer(service_fn(|ok: bool| async move {
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("down".into())
        }
    }));
    for _ in 0..300 {
        svc.ready().await.unwrap().call(true).await.unwrap();
    }
    for _ in 0..2 {
        svc.ready().await.unwrap().call(false).await.unwrap_err();
    }
    for _ in 0..3 {
        svc.ready().await.unwrap().call(true).await.unwrap_err();
    }
    advance(Duration::from_secs(5)).await;
    svc.ready().await.unwrap().call(true).await.unwrap();

    let m = metrics_of("telemetry-test");
    assert_eq!(
        value(&m, BREAKER_CALLS_TOTAL, ("outcome", "failure")),
        Some(2.0)
    );
    assert_eq!(
        value(&m, BREAKER_CALLS_TOTAL, ("outcome", "rejected")),
        Some(3.0)
    );
    // Published on the last transition: 300 before, 1 probe.
    assert_eq!(
        value(&m, BREAKER_CALLS_TOTAL, ("outcome", "success")),
        Some(301.0)
    );
    for to in ["open", "half_open", "closed"] {
        assert_eq!(
            value(&m, BREAKER_TRANSITIONS_TOTAL, ("to", to)),
            Some(1.0),
            "{to}"
        );
    }
    // One circuit of this name, closed again.
    assert_eq!(value(&m, BREAKER_STATE, ("state", "closed")), Some(1.0));
    assert_eq!(value(&m, BREAKER_STATE, ("state", "open")), Some(0.0));

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("telemetry-test"))
        .collect();
    assert_eq!(
        lines.len(),
        3,
        "one event per transition, none per call:\n{log}"
    );
    assert!(
        lines[0].contains("WARN") && lines[0].contains("reason=\"consecutive_failures\""),
        "{}",
        lines[0]
    );
    assert!(lines[2].contains("to=\"closed\""), "{}", lines[2]);
}

/// Waits (in real time, at most 5 s) until `breaker`'s successes counter
/// reads `expected`; the value it last read.
async fn successes_reach(breaker: &str, expected: f64) -> Option<f64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = value(
            &metrics_of(breaker),
            BREAKER_CALLS_TOTAL,
            ("outcome", "success"),
        );
        if seen == Some(expected) || std::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A breaker named `name` that has let `calls` successful calls through,
/// and the service that made them.
async fn after_successes(
    name: &str,
    calls: usize,
) -> (
    Breaker,
    impl Service<(), Error = fusebox::breaker::Error<BoxError>>,
) {
    let breaker = Breaker::new(exact().name(name).build().unwrap());
    let mut svc = breaker
        .layer()
        .layer(service_fn(|()| async { Ok::<(), BoxError>(()) }));
    for _ in 0..calls {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    (breaker, svc)
}

#[tokio::test]
async fn successes_are_published_without_a_transition() {
    let _serial = SERIAL.lock().await;
    snapshotter();
    let _live = after_successes("telemetry-quiet", 5).await;
    // No transition and far fewer calls than any batch: only the periodic
    // publisher (every second) can have sent these.
    assert_eq!(successes_reach("telemetry-quiet", 5.0).await, Some(5.0));
}

#[tokio::test]
async fn a_flush_publishes_every_count_at_once() {
    let _serial = SERIAL.lock().await;
    snapshotter();
    let _live = after_successes("telemetry-flushed", 6).await;
    // What a `/metrics` handler does before rendering: the scrape then
    // holds every call made before it, not those of a second ago.
    fusebox::breaker::publish_counts();
    let seen = value(
        &metrics_of("telemetry-flushed"),
        BREAKER_CALLS_TOTAL,
        ("outcome", "success"),
    );
    assert_eq!(seen, Some(6.0));
}

#[tokio::test]
async fn dropping_a_breaker_publishes_its_last_totals() {
    let _serial = SERIAL.lock().await;
    snapshotter();
    drop(after_successes("telemetry-dropped", 3).await);
    let seen = value(
        &metrics_of("telemetry-dropped"),
        BREAKER_CALLS_TOTAL,
        ("outcome", "success"),
    );
    assert_eq!(seen, Some(3.0));
}

#[tokio::test]
async fn breakers_sharing_a_name_add_up() {
    let _serial = SERIAL.lock().await;
    snapshotter();
    let first = after_successes("telemetry-twins", 3).await;
    let second = after_successes("telemetry-twins", 4).await;
    let m = metrics_of("telemetry-twins");
    assert_eq!(value(&m, BREAKER_STATE, ("state", "closed")), Some(2.0));
    drop(first);
    drop(second);
    let m = metrics_of("telemetry-twins");
    assert_eq!(
        value(&m, BREAKER_CALLS_TOTAL, ("outcome", "success")),
        Some(7.0)
    );
    // The snapshot drains what it read: since the last one, both left.
    assert_eq!(value(&m, BREAKER_STATE, ("state", "closed")), Some(-2.0));
    // A new breaker under the old name counts from zero at once.
    drop(after_successes("telemetry-twins", 2).await);
    let m = metrics_of("telemetry-twins");
    assert_eq!(
        value(&m, BREAKER_CALLS_TOTAL, ("outcome", "success")),
        Some(2.0)
    );
}

/// Errors named "ignored" say nothing about health.
fn classify(r: Result<&(), &BoxError>) -> fusebox::breaker::Outcome {
    use fusebox::breaker::Outcome;
    match r {
        Ok(_) => Outcome::Success,
        Err(e) if e.to_string() == "ignored" => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    }
}

/// Answers `Ok`, or the error named by the request, at once.
#[derive(Clone)]
struct Answer;

impl Service<Option<&'static str>> for Answer {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, e: Option<&'static str>) -> Self::Future {
        std::future::ready(e.map_or(Ok(()), |e| Err(e.into())))
    }
}

fn answering() -> Answer {
    Answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_is_counted_exactly_from_more_threads_than_stripes() {
    let _serial = SERIAL.lock().await;
    snapshotter();
    let name = "telemetry-threads";
    let breaker = Breaker::new(exact().name(name).consecutive_failures(1).build().unwrap());
    let layer = breaker
        .layer()
        .classifier(classify as fn(Result<&(), &BoxError>) -> fusebox::breaker::Outcome);
    // More threads alive at once than there are owned stripes (64): the
    // last ones count on the shared stripe, at the same time.
    // (A bounded wait, not a barrier: a thread that panics must fail the
    // test, not hang it.)
    let arrived = Arc::new([
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ]);
    let all_here = |arrived: &std::sync::atomic::AtomicUsize| {
        arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while arrived.load(std::sync::atomic::Ordering::SeqCst) < 72
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let threads: Vec<_> = (0..72)
        .map(|_| {
            let mut svc = layer.layer(answering());
            let arrived = arrived.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                // Each takes its stripe (or the shared one) first.
                rt.block_on(async { svc.ready().await.unwrap().call(None).await.unwrap() });
                all_here(&arrived[0]);
                rt.block_on(async {
                    for i in 0..2000 {
                        let e = (i % 4 == 0).then_some("ignored");
                        let _ = svc.ready().await.unwrap().call(e).await;
                    }
                });
                all_here(&arrived[1]);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut svc = layer.layer(answering());
    svc.ready()
        .await
        .unwrap()
        .call(Some("down"))
        .await
        .unwrap_err();
    for _ in 0..3 {
        svc.ready().await.unwrap().call(None).await.unwrap_err();
    }
    fusebox::breaker::publish_counts();
    let m = metrics_of(name);
    let outcome = |o| value(&m, BREAKER_CALLS_TOTAL, ("outcome", o));
    assert_eq!(outcome("success"), Some(72.0 * 1501.0));
    assert_eq!(outcome("ignored"), Some(72.0 * 500.0));
    assert_eq!(outcome("failure"), Some(1.0));
    assert_eq!(outcome("rejected"), Some(3.0));
}

#[tokio::test(start_paused = true)]
async fn locked_calls_probes_and_durations_are_counted() {
    let _serial = SERIAL.lock().await;
    snapshotter();
    let name = "telemetry-locked";
    // A time window: every closed call's outcome goes through the lock;
    // durations recorded.
    let breaker = Breaker::new(
        exact()
            .name(name)
            .time_window(Duration::from_secs(10), 10)
            .minimum_calls(4)
            .failure_rate(0.5)
            .half_open_probes(3)
            .half_open_successes(2)
            .record_latency(true)
            .build()
            .unwrap(),
    );
    let layer = breaker
        .layer()
        .classifier(classify as fn(Result<&(), &BoxError>) -> fusebox::breaker::Outcome);
    let mut svc = layer.layer(answering());
    for e in [
        None,
        None,
        Some("ignored"),
        Some("down"),
        Some("down"),
        Some("down"),
    ] {
        let _ = svc.ready().await.unwrap().call(e).await;
    }
    assert_eq!(breaker.state(), fusebox::breaker::State::Open);
    advance(Duration::from_secs(5)).await;
    // Probes: one ignored, one failed (reopens).
    let _ = svc.ready().await.unwrap().call(Some("ignored")).await;
    let _ = svc.ready().await.unwrap().call(Some("down")).await;
    assert_eq!(breaker.state(), fusebox::breaker::State::Open);
    advance(Duration::from_secs(60)).await;
    for _ in 0..2 {
        svc.ready().await.unwrap().call(None).await.unwrap();
    }
    assert_eq!(breaker.state(), fusebox::breaker::State::Closed);
    fusebox::breaker::publish_counts();
    let m = metrics_of(name);
    let outcome = |o| value(&m, BREAKER_CALLS_TOTAL, ("outcome", o));
    assert_eq!(outcome("success"), Some(4.0), "2 closed, 2 probes");
    assert_eq!(outcome("ignored"), Some(2.0), "1 closed, 1 probe");
    // The second closed failure trips it (2 of 4); the third is rejected.
    assert_eq!(outcome("failure"), Some(3.0), "2 closed, 1 probe");
    assert_eq!(outcome("rejected"), Some(1.0));
    let durations = m
        .iter()
        .find(|(n, _, _)| n == fusebox::telemetry::BREAKER_CALL_DURATION_SECONDS)
        .map(|(_, _, v)| match v {
            DebugValue::Histogram(h) => h.len(),
            _ => 0,
        });
    assert_eq!(durations, Some(9), "every admitted call timed");
}

#[tokio::test(start_paused = true)]
async fn a_disabled_circuit_counts_no_failure() {
    let _serial = SERIAL.lock().await;
    snapshotter();
    let name = "telemetry-disabled";
    let breaker = Breaker::new(exact().name(name).build().unwrap());
    breaker.disable();
    let (inner, mut handle) = tower_test::mock::pair::<(), ()>();
    let mut svc = tower_test::mock::Spawn::new(breaker.layer().layer(inner));
    handle.send_error("not ready");
    assert!(svc.poll_ready().is_ready());
    fusebox::breaker::publish_counts();
    let m = metrics_of(name);
    assert_eq!(value(&m, BREAKER_CALLS_TOTAL, ("outcome", "failure")), None);
}
