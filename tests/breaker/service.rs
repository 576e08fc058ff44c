//! Step-by-step transitions through the service, with mocks and paused time.

use std::time::Duration;

use fusebox::breaker::{Breaker, Cause, CircuitBreakerLayer, Error, State};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_test::mock;

use crate::common::{
    advance, classify_boxed as classify, exact, is_open, BoxedClassifyFn as ClassifyFn,
};

type Mock = mock::Mock<&'static str, &'static str>;
type Handle = mock::Handle<&'static str, &'static str>;

fn mocked(
    layer: &CircuitBreakerLayer<ClassifyFn>,
) -> (
    mock::Spawn<fusebox::breaker::CircuitBreaker<Mock, ClassifyFn>>,
    Handle,
) {
    let (svc, handle) = mock::pair::<&'static str, &'static str>();
    (mock::Spawn::new(layer.layer(svc)), handle)
}

fn layer(b: fusebox::breaker::ConfigBuilder) -> CircuitBreakerLayer<ClassifyFn> {
    CircuitBreakerLayer::new(b.build().unwrap()).classifier(classify as ClassifyFn)
}

/// Makes one call through `svc`, answered by `handle` with `answer`.
async fn call(
    svc: &mut mock::Spawn<fusebox::breaker::CircuitBreaker<Mock, ClassifyFn>>,
    handle: &mut Handle,
    answer: Result<&'static str, &'static str>,
) -> Result<&'static str, Error<BoxError>> {
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("req");
    if let std::task::Poll::Ready(Some((_, respond))) =
        tokio_test::task::spawn(handle.next_request()).poll()
    {
        match answer {
            Ok(v) => respond.send_response(v),
            Err(e) => respond.send_error(e),
        }
    }
    fut.await
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_and_rejections_skip_the_inner_service() {
    let layer = layer(
        exact()
            .consecutive_failures(2)
            .open_for(Duration::from_secs(3)),
    );
    let breaker = layer.breaker().clone();
    let (mut svc, mut handle) = mocked(&layer);

    assert_eq!(call(&mut svc, &mut handle, Ok("a")).await.unwrap(), "a");
    assert!(call(&mut svc, &mut handle, Err("boom")).await.is_err());
    assert_eq!(breaker.state(), State::Closed);
    let err = call(&mut svc, &mut handle, Err("boom")).await.unwrap_err();
    assert!(
        !is_open(&err),
        "the tripping call's own error is the inner one"
    );
    assert_eq!(breaker.state(), State::Open);

    // The inner service is not ready, and is not even asked.
    handle.allow(0);
    let opened = Instant::now();
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("req").await.unwrap_err();
    let open = err.as_open().unwrap();
    assert_eq!(open.state(), State::Open);
    assert_eq!(open.retry_at(), Some(opened + Duration::from_secs(3)));
    assert_eq!(open.to_string(), "circuit breaker is open");
    assert_pending!(tokio_test::task::spawn(handle.next_request()).poll());
}

#[tokio::test(start_paused = true)]
async fn open_half_open_closed_through_probes() {
    let layer = layer(exact().consecutive_failures(1).half_open_successes(2));
    let breaker = layer.breaker().clone();
    let (mut svc, mut handle) = mocked(&layer);
    call(&mut svc, &mut handle, Err("boom")).await.unwrap_err();
    assert_eq!(breaker.state(), State::Open);

    advance(Duration::from_millis(4999)).await;
    assert_eq!(breaker.state(), State::Open);
    advance(Duration::from_millis(1)).await;
    assert_eq!(breaker.state(), State::HalfOpen);

    // One probe at a time: a second service is rejected meanwhile.
    let (mut other, _h2) = mocked(&layer);
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    assert_ready_ok!(other.poll_ready());
    let err = other.call("req").await.unwrap_err();
    assert_eq!(err.as_open().unwrap().state(), State::HalfOpen);
    let fut = svc.call("probe");
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response("ok");
    fut.await.unwrap();
    assert_eq!(breaker.state(), State::HalfOpen, "two successes are needed");

    call(&mut svc, &mut handle, Ok("ok")).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().trips, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_longer() {
    let b = exact()
        .consecutive_failures(1)
        .open_for(Duration::from_secs(1))
        .open_backoff(2.0, Duration::from_secs(3));
    let layer = layer(b);
    let breaker = layer.breaker().clone();
    let mut events = breaker.subscribe();
    let (mut svc, mut handle) = mocked(&layer);
    call(&mut svc, &mut handle, Err("boom")).await.unwrap_err();
    for expected in [2, 3, 3] {
        advance(breaker.snapshot().open_until.unwrap() - Instant::now()).await;
        assert_eq!(breaker.state(), State::HalfOpen);
        call(&mut svc, &mut handle, Err("still down"))
            .await
            .unwrap_err();
        let until = breaker.snapshot().open_until.unwrap();
        assert_eq!(until - Instant::now(), Duration::from_secs(expected));
    }
    let reasons: Vec<Cause> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|t| t.reason)
        .collect();
    use Cause::*;
    assert_eq!(
        reasons,
        [
            ConsecutiveFailures,
            OpenElapsed,
            ProbeFailed,
            OpenElapsed,
            ProbeFailed,
            OpenElapsed,
            ProbeFailed
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_frees_its_slot() {
    let layer = layer(exact().consecutive_failures(1));
    let breaker = layer.breaker().clone();
    let (mut svc, mut handle) = mocked(&layer);
    call(&mut svc, &mut handle, Err("boom")).await.unwrap_err();
    advance(Duration::from_secs(5)).await;

    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let probe = svc.call("probe");
    assert_eq!(breaker.snapshot().probes_in_flight, 1);
    drop(probe);
    assert_eq!(breaker.snapshot().probes_in_flight, 0);
    let _cancelled = handle.next_request().await.unwrap();

    // A slot held by a service whose inner service never became ready is
    // freed when that service is dropped.
    let (mut waiting, mut idle) = mocked(&layer);
    idle.allow(0);
    assert_pending!(waiting.poll_ready());
    assert_eq!(breaker.snapshot().probes_in_flight, 1);
    drop(waiting);
    assert_eq!(breaker.snapshot().probes_in_flight, 0);

    call(&mut svc, &mut handle, Ok("ok")).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_never_completes_cannot_wedge_the_breaker() {
    let b = exact()
        .consecutive_failures(1)
        .open_for(Duration::from_secs(1))
        .half_open_max_duration(Duration::from_secs(2));
    let layer = layer(b);
    let breaker = layer.breaker().clone();
    let (mut svc, mut handle) = mocked(&layer);
    call(&mut svc, &mut handle, Err("boom")).await.unwrap_err();
    advance(Duration::from_secs(1)).await;
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let _hung = svc.call("hangs");
    let _unanswered = handle.next_request().await.unwrap();
    advance(Duration::from_secs(2)).await;
    let snap = breaker.snapshot();
    assert_eq!(snap.state, State::Open);
    assert_eq!(snap.trips, 2);
    // The next half-open period admits a probe again.
    advance(Duration::from_secs(2)).await;
    assert_eq!(breaker.state(), State::HalfOpen);
    call(&mut svc, &mut handle, Ok("ok")).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_count_window() {
    let b = exact()
        .count_window(4)
        .minimum_calls(4)
        .failure_rate(0.5)
        .consecutive_failures(0);
    let layer = layer(b);
    let breaker = layer.breaker().clone();
    let (mut svc, mut handle) = mocked(&layer);
    for answer in [Ok("a"), Err("x"), Ok("b"), Ok("c"), Ok("d"), Err("x")] {
        let _ = call(&mut svc, &mut handle, answer).await;
    }
    // Last four: b c d x -> 25 %.
    let snap = breaker.snapshot();
    assert_eq!(
        (snap.calls, snap.failures, snap.state),
        (4, 1, State::Closed)
    );
    let _ = call(&mut svc, &mut handle, Err("x")).await;
    assert_eq!(breaker.state(), State::Open, "c d x x -> 50 %");
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_are_not_recorded() {
    let layer = layer(exact().consecutive_failures(2));
    let breaker = layer.breaker().clone();
    let (mut svc, mut handle) = mocked(&layer);
    for _ in 0..5 {
        let _ = call(&mut svc, &mut handle, Err("ignored")).await;
    }
    let _ = call(&mut svc, &mut handle, Err("x")).await;
    let snap = breaker.snapshot();
    assert_eq!(
        (snap.calls, snap.failures, snap.consecutive_failures),
        (1, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let b = exact()
        .time_window(Duration::from_secs(10), 10)
        .minimum_calls(3)
        .failure_rate(0.6)
        .consecutive_failures(0);
    let layer = layer(b);
    let breaker = layer.breaker().clone();
    let (mut svc, mut handle) = mocked(&layer);
    let _ = call(&mut svc, &mut handle, Err("x")).await;
    let _ = call(&mut svc, &mut handle, Err("x")).await;
    advance(Duration::from_secs(10)).await;
    let _ = call(&mut svc, &mut handle, Ok("a")).await;
    let _ = call(&mut svc, &mut handle, Err("x")).await;
    let snap = breaker.snapshot();
    assert_eq!(
        (snap.calls, snap.failures, snap.state),
        (2, 1, State::Closed)
    );
    let _ = call(&mut svc, &mut handle, Err("x")).await;
    assert_eq!(breaker.state(), State::Open, "2 of 3 within the last 10 s");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_breaker() {
    let b = exact()
        .slow_calls(Duration::from_millis(100), 0.5)
        .count_window(2)
        .minimum_calls(2);
    let breaker = Breaker::new(b.build().unwrap());
    let slow = service_fn(|delay: u64| async move {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Ok::<_, BoxError>(())
    });
    let mut svc = breaker.layer().layer(slow);
    svc.ready().await.unwrap().call(10).await.unwrap();
    svc.ready().await.unwrap().call(100).await.unwrap();
    let snap = breaker.snapshot();
    assert_eq!(snap.state, State::Open, "{snap:?}");
}

#[tokio::test(start_paused = true)]
async fn poll_ready_errors_are_recorded() {
    let b = exact().consecutive_failures(2);
    let breaker = Breaker::new(b.build().unwrap());
    let mut svc = breaker.layer().layer(Failing);
    for _ in 0..2 {
        let err = svc.ready().await.unwrap_err();
        assert_eq!(err.to_string(), "not ready");
    }
    assert_eq!(breaker.state(), State::Open);
    // Open: ready at once, without polling the failing inner service.
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(is_open(&err));
}

#[derive(Clone, Debug)]
struct Failing;

impl Service<()> for Failing {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Err("not ready".into()))
    }
    fn call(&mut self, _: ()) -> Self::Future {
        unreachable!("never ready")
    }
}

#[tokio::test(start_paused = true)]
async fn forced_states_disabled_and_reset() {
    let layer = layer(exact().consecutive_failures(1));
    let breaker = layer.breaker().clone();
    let (mut svc, mut handle) = mocked(&layer);

    breaker.force_open();
    handle.allow(0);
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("req").await.unwrap_err();
    let open = err.as_open().unwrap();
    assert_eq!((open.state(), open.retry_at()), (State::ForcedOpen, None));
    advance(Duration::from_secs(3600)).await;
    assert_eq!(
        breaker.state(),
        State::ForcedOpen,
        "only a handle closes it"
    );

    breaker.disable();
    for _ in 0..3 {
        let _ = call(&mut svc, &mut handle, Err("x")).await;
    }
    assert_eq!(breaker.state(), State::Disabled, "nothing is recorded");

    breaker.close();
    assert_eq!(breaker.state(), State::Closed);
    let _ = call(&mut svc, &mut handle, Err("x")).await;
    assert_eq!(breaker.state(), State::Open);
    breaker.reset();
    let snap = breaker.snapshot();
    assert_eq!((snap.state, snap.trips, snap.calls), (State::Closed, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn clones_and_layers_share_one_circuit() {
    let layer = layer(exact().consecutive_failures(2));
    let (mut a, mut ha) = mocked(&layer);
    let (mut b, mut hb) = mocked(&layer);
    let _ = call(&mut a, &mut ha, Err("x")).await;
    let _ = call(&mut b, &mut hb, Err("x")).await;
    assert_eq!(layer.breaker().state(), State::Open);

    // An explicitly shared handle, on a separately built layer.
    let shared = layer.breaker().clone();
    let other = CircuitBreakerLayer::with_breaker(shared)
        .layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    let mut other = other;
    let err = other.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(is_open(&err));
}

#[test]
fn trips_without_a_runtime_and_recovers_in_another() {
    // Tripped in a runtime that then shuts down: the timer task dies, and the
    // breaker falls back to checking the clock on rejection.
    let breaker = Breaker::new(
        exact()
            .consecutive_failures(1)
            .open_for(Duration::from_secs(5))
            .build()
            .unwrap(),
    );
    let failing = service_fn(|ok: bool| async move {
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("x".into())
        }
    });
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let mut svc = breaker.layer().layer(failing);
    first.block_on(async { svc.ready().await.unwrap().call(false).await.unwrap_err() });
    drop(first);
    assert_eq!(breaker.state(), State::Open);

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    second.block_on(async {
        let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
        assert!(is_open(&err));
        tokio::time::advance(Duration::from_secs(6)).await;
        svc.ready().await.unwrap().call(true).await.unwrap();
        assert_eq!(breaker.state(), State::Closed);
    });
}

#[tokio::test(start_paused = true)]
async fn readiness_is_not_cloned() {
    let inner = service_fn(|()| async { Ok::<_, BoxError>(()) });
    let mut svc = Breaker::new(exact().build().unwrap()).layer().layer(inner);
    svc.ready().await.unwrap();
    let mut clone = svc.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        drop(clone.call(()));
    }));
    assert!(result.is_err(), "a clone must be made ready itself");
    svc.call(()).await.unwrap();
}

/// Makes ready, lets `between` change the circuit, then calls and answers.
async fn call_across(
    svc: &mut mock::Spawn<fusebox::breaker::CircuitBreaker<Mock, ClassifyFn>>,
    handle: &mut Handle,
    between: impl FnOnce(),
    answer: Result<&'static str, &'static str>,
) -> Result<&'static str, Error<BoxError>> {
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    between();
    let fut = svc.call("req");
    let (_, respond) = handle
        .next_request()
        .await
        .expect("the inner service is called");
    match answer {
        Ok(v) => respond.send_response(v),
        Err(e) => respond.send_error(e),
    }
    fut.await
}

#[tokio::test(start_paused = true)]
async fn a_call_made_ready_before_a_change_is_not_counted_after_it() {
    let layer = layer(exact().consecutive_failures(2));
    let breaker = layer.breaker().clone();
    let (mut svc, mut handle) = mocked(&layer);

    // Ready while closed; the circuit is reset (a new period) before the
    // call. The call still goes through, but counts for neither period.
    let reset = || breaker.reset();
    for answer in [Err("x"), Ok("ok")] {
        let _ = call_across(&mut svc, &mut handle, reset, answer).await;
        let snap = breaker.snapshot();
        assert_eq!(
            (snap.state, snap.calls, snap.failures),
            (State::Closed, 0, 0),
            "{answer:?}"
        );
    }

    // Ready while closed, and the circuit trips before the call: the call
    // was admitted, so it is made; its success does not count for the
    // open period, nor for the closed one after it.
    let trip = || breaker.force_open();
    call_across(&mut svc, &mut handle, trip, Ok("ok"))
        .await
        .unwrap();
    breaker.close();
    let _ = call(&mut svc, &mut handle, Err("x")).await;
    let snap = breaker.snapshot();
    assert_eq!(
        (snap.state, snap.calls, snap.failures),
        (State::Closed, 1, 1)
    );
    let _ = call(&mut svc, &mut handle, Err("x")).await;
    assert_eq!(
        breaker.state(),
        State::Open,
        "two failures of its own trip it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shadow_circuit_goes_through_its_states_and_never_rejects() {
    let layer = layer(
        exact()
            .consecutive_failures(2)
            .open_for(Duration::from_secs(3))
            .shadow(true),
    );
    let breaker = layer.breaker().clone();
    let mut transitions = breaker.subscribe();
    let (mut svc, mut handle) = mocked(&layer);
    for _ in 0..2 {
        call(&mut svc, &mut handle, Err("boom")).await.unwrap_err();
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(transitions.recv().await.unwrap().to, State::Open);

    // Open, yet every call reaches the service and gets its own answer;
    // their outcomes are not recorded (the circuit stays open for its
    // period, as a real one would).
    for _ in 0..5 {
        assert_eq!(
            call(&mut svc, &mut handle, Ok("served")).await.unwrap(),
            "served"
        );
        let err = call(&mut svc, &mut handle, Err("boom")).await.unwrap_err();
        assert!(!is_open(&err), "the service's own error, never a rejection");
    }
    assert_eq!(breaker.state(), State::Open);

    // The period ends as it would; a probe closes the circuit.
    advance(Duration::from_secs(3)).await;
    assert_eq!(breaker.state(), State::HalfOpen);
    call(&mut svc, &mut handle, Ok("probe")).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
    let reasons: Vec<State> = std::iter::from_fn(|| transitions.try_recv().ok())
        .map(|t| t.to)
        .collect();
    assert_eq!(reasons, vec![State::HalfOpen, State::Closed]);
}
