//! The cases compared by the breaker benchmarks, all driven the same way.
//!
//! Each case is built once, outside any timed loop, and then `call`ed: a
//! tower service is polled ready, called, and its future polled in place
//! with a no-op waker until it completes (inside an entered, not running,
//! tokio runtime); a future-based breaker's future is polled the same way; a
//! synchronous breaker is simply called. One call = one request through the
//! breaker to an inner operation that does nothing.

pub mod redis_info;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tower::Service;

/// One way of making a guarded call.
pub trait Case: Clone + Send + 'static {
    /// Makes one call; `true` if it succeeded, `false` if rejected or failed.
    fn call(&mut self) -> bool;
}

/// Polls `fut` in place to completion with a no-op waker.
#[inline(always)]
pub fn complete<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Drives one request through a tower service.
#[inline(always)]
pub fn drive<S: Service<bool>>(svc: &mut S, fail: bool) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    while svc.poll_ready(&mut cx).is_pending() {}
    complete(svc.call(fail)).is_ok()
}

/// The floor: a plain tower service answering `ready(Ok(()))`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Baseline;

impl Service<bool> for Baseline {
    type Response = ();
    type Error = &'static str;
    type Future = std::future::Ready<Result<(), &'static str>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, fail: bool) -> Self::Future {
        std::future::ready(if fail { Err("fail") } else { Ok(()) })
    }
}

/// A tower service (baseline or a breaker layer over it).
#[derive(Clone)]
pub struct TowerCase<S>(pub S);

impl<S: Service<bool> + Clone + Send + 'static> Case for TowerCase<S> {
    #[inline(always)]
    fn call(&mut self) -> bool {
        drive(&mut self.0, false)
    }
}

const LONG: Duration = Duration::from_secs(3600);

/// The baseline service, unguarded.
pub fn baseline() -> impl Case {
    TowerCase(Baseline)
}

/// fusebox with its default configuration; `open` trips it first.
pub fn fusebox(open: bool) -> impl Case {
    use fusebox::breaker::{CircuitBreakerLayer, Config};
    use tower::Layer;
    let config = if open {
        Config::builder()
            .consecutive_failures(1)
            .open_for(LONG)
            .open_backoff(1.0, LONG)
    } else {
        Config::builder()
    };
    let mut svc = CircuitBreakerLayer::new(config.build().unwrap()).layer(Baseline);
    if open {
        drive(&mut svc, true);
        assert!(!drive(&mut svc, false), "fusebox should be open");
    }
    TowerCase(svc)
}

/// tower-resilience's circuit breaker with its defaults; `open` trips it.
pub fn tower_resilience(open: bool) -> impl Case {
    use tower::Layer;
    use tower_resilience_circuitbreaker::CircuitBreakerLayer;
    let mut builder = CircuitBreakerLayer::builder();
    if open {
        builder = builder
            .sliding_window_size(2)
            .minimum_number_of_calls(2)
            .wait_duration_in_open(LONG);
    }
    let mut svc = builder.build().unwrap().layer(Baseline);
    if open {
        drive(&mut svc, true);
        drive(&mut svc, true);
        assert!(!drive(&mut svc, false), "tower-resilience should be open");
    }
    TowerCase(svc)
}

#[derive(Clone)]
struct Failsafe<B>(B);

impl<B: failsafe::futures::CircuitBreaker + Clone + Send + 'static> Case for Failsafe<B> {
    #[inline(always)]
    fn call(&mut self) -> bool {
        complete(self.0.call(std::future::ready(Ok::<(), ()>(())))).is_ok()
    }
}

/// failsafe's future-aware breaker with its default configuration (a
/// success rate over a time window, or consecutive failures).
pub fn failsafe_closed() -> impl Case {
    Failsafe(failsafe::Config::new().build())
}

/// failsafe tripped by one failure, open for an hour.
pub fn failsafe_open() -> impl Case {
    use failsafe::futures::CircuitBreaker;
    use failsafe::{backoff, failure_policy, Config};
    let policy = failure_policy::consecutive_failures(1, backoff::constant(LONG));
    let breaker = Config::new().failure_policy(policy).build();
    let _ = complete(breaker.call(std::future::ready(Err::<(), ()>(()))));
    let mut case = Failsafe(breaker);
    assert!(!case.call(), "failsafe should be open");
    case
}

/// recloser (synchronous) with its defaults; `open` trips it.
pub fn recloser(open: bool) -> impl Case {
    #[derive(Clone)]
    struct Recloser(Arc<recloser::Recloser>);
    impl Case for Recloser {
        #[inline(always)]
        fn call(&mut self) -> bool {
            self.0.call(|| Ok::<(), ()>(())).is_ok()
        }
    }
    let r = if open {
        recloser::Recloser::custom()
            .closed_len(1)
            .open_wait(LONG)
            .build()
    } else {
        recloser::Recloser::default()
    };
    if open {
        for _ in 0..2 {
            let _ = r.call(|| Err::<(), ()>(()));
        }
    }
    let mut case = Recloser(Arc::new(r));
    if open {
        assert!(!case.call(), "recloser should be open");
    }
    case
}

/// Runs `f` with a current-thread tokio runtime entered (not running), as
/// every case is driven.
pub fn with_runtime<R>(f: impl FnOnce() -> R) -> R {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    f()
}

/// Every case by name, for the command-line tools.
pub fn run_named(name: &str, n: u64) -> Option<u64> {
    fn go(mut case: impl Case, n: u64) -> u64 {
        let mut ok = 0;
        for _ in 0..n {
            ok += u64::from(std::hint::black_box(case.call()));
        }
        ok
    }
    Some(match name {
        "baseline" => go(baseline(), n),
        "fusebox" => go(fusebox(false), n),
        "fusebox-open" => go(fusebox(true), n),
        "recloser" => go(recloser(false), n),
        "recloser-open" => go(recloser(true), n),
        "failsafe" => go(failsafe_closed(), n),
        "failsafe-open" => go(failsafe_open(), n),
        "tower-resilience" => go(tower_resilience(false), n),
        "tower-resilience-open" => go(tower_resilience(true), n),
        _ => return None,
    })
}
