//! Tests for what mutation testing (`cargo mutants`, issue 24) found the
//! other tests would not notice in the breaker's service, futures and core.

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use fusebox::breaker::{Breaker, State};
use tokio_test::assert_ready_ok;
use tower::{BoxError, Layer, Service};
use tower_test::mock;

use crate::common::{advance, exact, is_open};

/// Polls `f` once with a no-op waker: for futures that are ready at once,
/// outside any runtime.
fn now<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("not ready at once"),
    }
}

/// Answers `Ok` to `true`, an error to `false`, at once.
#[derive(Clone, Debug)]
struct Answer;

impl Service<bool> for Answer {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ok: bool) -> Self::Future {
        std::future::ready(if ok { Ok(()) } else { Err("x".into()) })
    }
}

fn failing_unless_true() -> Answer {
    Answer
}

/// Opens at the first failure, for an hour.
fn trips_for_an_hour() -> Breaker {
    let config = exact()
        .consecutive_failures(1)
        .open_for(Duration::from_secs(3600));
    Breaker::new(config.build().unwrap())
}

#[test]
fn tripped_outside_any_runtime_it_rejects_until_its_period_ends() {
    let breaker = trips_for_an_hour();
    let mut svc = breaker.layer().layer(failing_unless_true());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    now(svc.call(false)).unwrap_err();
    assert_eq!(breaker.state(), State::Open);
    // No timer task could be spawned: rejections check the clock.
    assert!(svc.poll_ready(&mut cx).is_ready());
    let err = now(svc.call(true)).unwrap_err();
    assert!(is_open(&err), "rejected, not let through");
}

/// Trips its breaker when dropped: by a task, while its runtime shuts down.
struct TripOnDrop<S: Service<bool>>(Option<S>);

impl<S: Service<bool>> Drop for TripOnDrop<S> {
    fn drop(&mut self) {
        let mut svc = self.0.take().unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        if svc.poll_ready(&mut cx).is_ready() {
            let _ = now(svc.call(false));
        }
    }
}

#[test]
fn tripped_while_its_runtime_shuts_down_it_still_rejects() {
    let breaker = trips_for_an_hour();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let guard = TripOnDrop(Some(breaker.layer().layer(failing_unless_true())));
    runtime.spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    // Let the task start, then shut the runtime down: the guard trips the
    // breaker from inside the dying runtime, whose new tasks never run.
    runtime.block_on(tokio::task::yield_now());
    drop(runtime);
    assert_eq!(breaker.state(), State::Open);
    let mut svc = breaker.layer().layer(failing_unless_true());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    assert!(is_open(&now(svc.call(true)).unwrap_err()));
}

#[tokio::test(start_paused = true)]
async fn a_probe_made_ready_twice_keeps_its_one_slot() {
    let breaker = Breaker::new(
        exact()
            .consecutive_failures(1)
            .half_open_probes(1)
            .build()
            .unwrap(),
    );
    let (inner, mut handle) = mock::pair::<&'static str, &'static str>();
    let mut svc = mock::Spawn::new(breaker.layer().layer(inner));
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("fail");
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error("boom");
    fut.await.unwrap_err();
    advance(Duration::from_secs(5)).await;
    assert_eq!(breaker.state(), State::HalfOpen);
    // poll_ready may be called again before call: the slot it took is
    // still this service's.
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("probe");
    let (req, respond) = handle
        .next_request()
        .await
        .expect("the probe reaches the service");
    assert_eq!(req, "probe");
    respond.send_response("ok");
    fut.await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_readiness_error_on_the_timed_path_counts_as_a_failure() {
    // Slow-call detection on: closed calls take the recorded path.
    let breaker = Breaker::new(
        exact()
            .consecutive_failures(1)
            .slow_calls(Duration::from_secs(10), 1.0)
            .build()
            .unwrap(),
    );
    let (inner, mut handle) = mock::pair::<&'static str, &'static str>();
    let mut svc = mock::Spawn::new(breaker.layer().layer(inner));
    handle.send_error("not ready");
    assert!(svc.poll_ready().is_ready());
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_circuit_records_nothing_not_even_readiness_errors() {
    let breaker = Breaker::new(exact().consecutive_failures(1).build().unwrap());
    breaker.disable();
    let (inner, mut handle) = mock::pair::<&'static str, &'static str>();
    let mut svc = mock::Spawn::new(breaker.layer().layer(inner));
    handle.send_error("not ready");
    assert!(svc.poll_ready().is_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("x");
    assert_eq!(
        format!("{fut:?}"),
        "ResponseFuture { kind: \"unrecorded\" }"
    );
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error("boom");
    fut.await.unwrap_err();
    breaker.reset();
    let snap = breaker.snapshot();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!((snap.failures, snap.trips), (0, 0), "{snap:?}");
}

#[tokio::test(start_paused = true)]
async fn futures_and_services_say_what_they_are() {
    let breaker = Breaker::new(exact().consecutive_failures(1).name("dbg").build().unwrap());
    let mut svc = breaker.layer().layer(failing_unless_true());
    assert!(
        format!("{svc:?}").starts_with("CircuitBreaker { inner: "),
        "{svc:?}"
    );
    assert!(format!("{svc:?}").contains("dbg"), "{svc:?}");
    tower::ServiceExt::ready(&mut svc).await.unwrap();
    let fut = svc.call(false);
    assert_eq!(format!("{fut:?}"), "ResponseFuture { kind: \"closed\" }");
    fut.await.unwrap_err();
    tower::ServiceExt::ready(&mut svc).await.unwrap();
    let fut = svc.call(true);
    assert_eq!(format!("{fut:?}"), "ResponseFuture { kind: \"rejected\" }");
    // A probe is tracked.
    advance(Duration::from_secs(5)).await;
    tower::ServiceExt::ready(&mut svc).await.unwrap();
    let fut = svc.call(true);
    assert_eq!(format!("{fut:?}"), "ResponseFuture { kind: \"tracked\" }");
    fut.await.unwrap();
}

#[test]
fn a_breaker_tells_its_config() {
    let config = exact()
        .name("configured")
        .consecutive_failures(7)
        .build()
        .unwrap();
    let breaker = Breaker::new(config.clone());
    let told = breaker.config();
    assert_eq!(told.name(), "configured");
    assert_eq!(format!("{told:?}"), format!("{config:?}"));
}

/// A half-open period with every probe slot held ends at its maximum
/// duration even with no timer task to end it: the next caller turned away
/// checks the clock and trips the circuit (`HalfOpenTimedOut`), so a probe
/// that never finishes cannot hold the circuit half-open for good.
#[test]
fn a_lazy_half_open_period_ends_at_its_maximum_with_its_slot_held() {
    let open_for = Duration::from_millis(5);
    let max = Duration::from_millis(20);
    let breaker = Breaker::new(
        exact()
            .consecutive_failures(1)
            .half_open_probes(1)
            .open_for(open_for)
            .half_open_max_duration(max)
            .build()
            .unwrap(),
    );
    let mut cx = Context::from_waker(Waker::noop());
    // Outside any runtime: no timer task, every deadline is checked lazily.
    let mut holder = breaker.layer().layer(failing_unless_true());
    assert!(holder.poll_ready(&mut cx).is_ready());
    now(holder.call(false)).unwrap_err();
    assert_eq!(breaker.state(), State::Open);
    // Real time is what this tests: a sleep only ever lasts at least as
    // long as asked, so the deadline has passed after it.
    std::thread::sleep(open_for * 2);
    // Made ready, the holder takes the one probe slot and keeps it.
    assert!(holder.poll_ready(&mut cx).is_ready());
    assert_eq!(breaker.state(), State::HalfOpen);
    std::thread::sleep(max * 2);
    let mut other = breaker.layer().layer(failing_unless_true());
    assert!(other.poll_ready(&mut cx).is_ready());
    assert!(is_open(&now(other.call(true)).unwrap_err()));
    assert_eq!(breaker.state(), State::Open, "the period timed out");
    assert_eq!(breaker.snapshot().trips, 2);
}
