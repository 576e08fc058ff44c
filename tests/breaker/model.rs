//! The real breaker against a small, obviously-correct reference model, on
//! the same random sequence of calls, outcomes, cancellations, time steps
//! and manual overrides.

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use fusebox::breaker::{Breaker, CircuitBreaker, Config, State};
use proptest::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service};

use crate::common::{classify, is_open, settle, ClassifyFn};

#[derive(Clone, Debug)]
struct Params {
    window: usize,
    min_calls: usize,
    rate: f64,
    consecutive: u32,
    slow: Option<(u64, f64)>,
    open_ms: u64,
    max_ms: u64,
    probes: u32,
    successes: u32,
    half_max_ms: u64,
}

impl Params {
    fn config(&self) -> Config {
        let mut b = Config::builder()
            .count_window(self.window as u32)
            .minimum_calls(self.min_calls as u32)
            .failure_rate(self.rate)
            .consecutive_failures(self.consecutive)
            .open_for(Duration::from_millis(self.open_ms))
            .open_backoff(2.0, Duration::from_millis(self.max_ms))
            .open_jitter(0.0)
            .half_open_probes(self.probes)
            .half_open_successes(self.successes)
            .half_open_max_duration(Duration::from_millis(self.half_max_ms));
        if let Some((ms, rate)) = self.slow {
            b = b.slow_calls(Duration::from_millis(ms), rate);
        }
        b.build().unwrap()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Ok,
    Fail,
    Ignored,
}

#[derive(Clone, Debug)]
enum Op {
    Start,
    Complete(usize, Answer),
    Cancel(usize),
    Advance(u64),
    ForceOpen,
    Disable,
    Close,
    Reset,
}

/// A call as the model sees it.
#[derive(Clone, Copy, Debug)]
struct Token {
    epoch: u64,
    probe: bool,
    pass: bool,
    start: Instant,
}

/// The documented semantics, written as plainly as possible: every closed
/// call is kept in a list, in completion order.
struct Model {
    p: Params,
    state: State,
    epoch: u64,
    calls: Vec<(bool, bool)>,
    trips: u32,
    open_until: Instant,
    half_until: Instant,
    probes: u32,
    probe_successes: u32,
}

impl Model {
    fn admit(&mut self, now: Instant) -> Option<Token> {
        let token = |probe, pass| Token {
            epoch: self.epoch,
            probe,
            pass,
            start: now,
        };
        match self.state {
            State::Closed => Some(token(false, false)),
            State::Disabled => Some(token(false, true)),
            State::HalfOpen if self.probes < self.p.probes => {
                self.probes += 1;
                Some(token(true, false))
            }
            _ => None,
        }
    }

    fn complete(&mut self, t: Token, answer: Answer, now: Instant) {
        if t.pass || t.epoch != self.epoch {
            return;
        }
        let slow = self
            .p
            .slow
            .is_some_and(|(ms, _)| now - t.start >= Duration::from_millis(ms));
        if t.probe {
            self.probes -= 1;
            match (answer, slow) {
                (Answer::Ignored, _) => {}
                (Answer::Ok, false) => {
                    self.probe_successes += 1;
                    if self.probe_successes >= self.p.successes {
                        self.trips = 0;
                        self.close();
                    }
                }
                _ => self.trip(now),
            }
            return;
        }
        if answer == Answer::Ignored {
            return;
        }
        let failure = answer == Answer::Fail;
        self.calls.push((failure, slow));
        let run = self.calls.iter().rev().take_while(|c| c.0).count() as u32;
        if failure && self.p.consecutive > 0 && run >= self.p.consecutive {
            return self.trip(now);
        }
        if !(failure || slow) {
            return;
        }
        let last = &self.calls[self.calls.len().saturating_sub(self.p.window)..];
        if last.len() < self.p.min_calls {
            return;
        }
        let n = last.len() as f64;
        let failures = last.iter().filter(|c| c.0).count() as f64;
        let slows = last.iter().filter(|c| c.1).count() as f64;
        if failures / n >= self.p.rate || self.p.slow.is_some_and(|(_, r)| slows / n >= r) {
            self.trip(now);
        }
    }

    fn cancel(&mut self, t: Token) {
        if t.probe && t.epoch == self.epoch && self.state == State::HalfOpen {
            self.probes -= 1;
        }
    }

    fn advance(&mut self, now: Instant) {
        if self.state == State::Open && now >= self.open_until {
            self.enter(State::HalfOpen);
            self.probes = 0;
            self.probe_successes = 0;
            self.half_until = now + Duration::from_millis(self.p.half_max_ms);
        } else if self.state == State::HalfOpen && now >= self.half_until {
            self.trip(now);
        }
    }

    fn trip(&mut self, now: Instant) {
        self.trips += 1;
        let ms = (self.p.open_ms << (self.trips - 1).min(40)).min(self.p.max_ms);
        self.open_until = now + Duration::from_millis(ms);
        self.enter(State::Open);
    }

    fn close(&mut self) {
        self.calls.clear();
        self.enter(State::Closed);
    }

    fn enter(&mut self, state: State) {
        self.epoch += 1;
        self.state = state;
    }

    fn force(&mut self, target: State) {
        // Closing empties the window from any state, closed included.
        if target == State::Closed {
            return self.close();
        }
        if target == self.state {
            return;
        }
        self.enter(target);
    }

    fn reset(&mut self) {
        self.trips = 0;
        self.close();
    }

    /// Calls and failures in the window, as a snapshot shows them.
    fn figures(&self) -> (u64, u64) {
        let last = &self.calls[self.calls.len().saturating_sub(self.p.window)..];
        (
            last.len() as u64,
            last.iter().filter(|c| c.0).count() as u64,
        )
    }
}

fn params() -> impl Strategy<Value = Params> {
    (
        1usize..8,
        0.2f64..1.0,
        0u32..4,
        proptest::option::of((5u64..60, 0.3f64..1.0)),
        (1u64..100, 1u64..4),
        (1u32..4, 1u32..4),
        1u64..200,
    )
        .prop_flat_map(
            |(window, rate, consecutive, slow, (open_ms, f), (probes, successes), half_max_ms)| {
                (1..=window).prop_map(move |min_calls| Params {
                    window,
                    min_calls,
                    rate,
                    consecutive,
                    slow,
                    open_ms,
                    max_ms: open_ms * f,
                    probes,
                    successes,
                    half_max_ms,
                })
            },
        )
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let answer = prop_oneof![
        3 => Just(Answer::Fail),
        3 => Just(Answer::Ok),
        1 => Just(Answer::Ignored),
    ];
    let op = prop_oneof![
        8 => Just(Op::Start),
        8 => (any::<usize>(), answer).prop_map(|(i, a)| Op::Complete(i, a)),
        1 => any::<usize>().prop_map(Op::Cancel),
        4 => (1u64..150).prop_map(Op::Advance),
        1 => prop_oneof![Just(Op::ForceOpen), Just(Op::Disable), Just(Op::Close), Just(Op::Reset)],
    ];
    proptest::collection::vec(op, 1..250)
}

type Reply = Result<&'static str, &'static str>;

fn run(p: Params, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let breaker = Breaker::new(p.config());
        let inner =
            service_fn(
                |rx: oneshot::Receiver<Reply>| async move { rx.await.unwrap_or(Err("dropped")) },
            );
        let mut svc: CircuitBreaker<_, ClassifyFn> = breaker
            .layer()
            .classifier(classify as ClassifyFn)
            .layer(inner);
        let mut model = Model {
            p: p.clone(),
            state: State::Closed,
            epoch: 0,
            calls: vec![],
            trips: 0,
            open_until: Instant::now(),
            half_until: Instant::now(),
            probes: 0,
            probe_successes: 0,
        };
        let mut in_flight = vec![];
        let mut cx = Context::from_waker(Waker::noop());
        for (step, op) in ops.into_iter().enumerate() {
            let now = Instant::now();
            match op {
                Op::Start => {
                    assert!(svc.poll_ready(&mut cx).is_ready());
                    let (tx, rx) = oneshot::channel::<Reply>();
                    let mut fut = tokio_test::task::spawn(svc.call(rx));
                    let admitted = model.admit(now);
                    match (fut.poll(), admitted) {
                        (Poll::Pending, Some(token)) => in_flight.push((fut, tx, token)),
                        (Poll::Ready(Err(e)), None) if is_open(&e) => {}
                        (real, model) => {
                            return Err(TestCaseError::fail(format!(
                                "step {step}: real {:?}, model {model:?}",
                                real.map(|r| r.map_err(|e| e.to_string()))
                            )))
                        }
                    }
                }
                Op::Complete(i, answer) if !in_flight.is_empty() => {
                    let (mut fut, tx, token) = in_flight.remove(i % in_flight.len());
                    let reply = match answer {
                        Answer::Ok => Ok("ok"),
                        Answer::Fail => Err("fail"),
                        Answer::Ignored => Err("ignored"),
                    };
                    tx.send(reply).unwrap();
                    prop_assert!(fut.poll().is_ready());
                    model.complete(token, answer, now);
                }
                Op::Cancel(i) if !in_flight.is_empty() => {
                    let (_, _, token) = in_flight.remove(i % in_flight.len());
                    model.cancel(token);
                }
                Op::Complete(..) | Op::Cancel(_) => {}
                Op::Advance(ms) => {
                    tokio::time::advance(Duration::from_millis(ms)).await;
                    settle().await;
                    model.advance(Instant::now());
                }
                Op::ForceOpen => {
                    breaker.force_open();
                    model.force(State::ForcedOpen);
                }
                Op::Disable => {
                    breaker.disable();
                    model.force(State::Disabled);
                }
                Op::Close => {
                    breaker.close();
                    model.force(State::Closed);
                }
                Op::Reset => {
                    breaker.reset();
                    model.reset();
                }
            }
            let snap = breaker.snapshot();
            prop_assert_eq!(snap.state, model.state, "step {}", step);
            prop_assert_eq!(snap.trips, model.trips, "step {}", step);
            match model.state {
                State::HalfOpen => prop_assert_eq!(snap.probes_in_flight, model.probes),
                State::Closed => prop_assert_eq!((snap.calls, snap.failures), model.figures()),
                State::Open => prop_assert_eq!(snap.open_until, Some(model.open_until)),
                _ => {}
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn breaker_matches_the_reference_model(p in params(), ops in ops()) {
        run(p, ops)?;
    }
}
