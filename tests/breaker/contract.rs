//! The layer never calls an inner service that was not made ready.

use std::task::{Context, Poll};
use std::time::Duration;

use fusebox::breaker::{Breaker, State};
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::common::{advance, exact};

/// Ready on every other poll; panics if called unready. Fails on request.
struct Strict {
    polls: u32,
    ready: bool,
    calls: u32,
}

impl Service<bool> for Strict {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.polls += 1;
        if !self.polls.is_multiple_of(2) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, fail: bool) -> Self::Future {
        assert!(
            std::mem::take(&mut self.ready),
            "called without being made ready"
        );
        self.calls += 1;
        std::future::ready(if fail { Err("fail".into()) } else { Ok(()) })
    }
}

#[tokio::test(start_paused = true)]
async fn inner_is_only_called_when_ready_in_every_state() {
    let breaker = Breaker::new(
        exact()
            .consecutive_failures(3)
            .open_for(Duration::from_millis(10))
            .half_open_probes(2)
            .build()
            .unwrap(),
    );
    let strict = Strict {
        polls: 0,
        ready: false,
        calls: 0,
    };
    let mut svc = breaker.layer().layer(strict);
    let mut seen = std::collections::HashSet::new();
    // A fixed pseudo-random walk through every state.
    let mut x: u32 = 12345;
    for step in 0..2_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        match (x >> 8) % 61 {
            0 => breaker.force_open(),
            1 => breaker.disable(),
            2 => breaker.close(),
            3 => breaker.reset(),
            4..=12 => advance(Duration::from_millis(5)).await,
            _ => {}
        }
        seen.insert(breaker.state());
        let fail = !(x >> 20).is_multiple_of(3) || step % 50 < 10;
        let _ = svc.ready().await.unwrap().call(fail).await;
        seen.insert(breaker.state());
    }
    for state in [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
    ] {
        assert!(seen.contains(&state), "walk never reached {state}");
    }
    assert!(svc.get_ref().calls > 100);
}
