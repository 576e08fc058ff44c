//! The machine alone, on a clock the tests move.

use super::*;
use Outcome::{Failure, Ignored, Success};

fn machine(b: crate::breaker::ConfigBuilder) -> (Machine, Instant) {
    let now = Instant::now();
    let cfg = b.open_jitter(0.0).build().unwrap();
    (Machine::new(cfg, 0, Ctx { now, fast: 0 }), now)
}

fn at(now: Instant, fast: u64) -> Ctx {
    Ctx { now, fast }
}

#[test]
fn failure_rate_trips_only_after_minimum_calls() {
    let b = Config::builder()
        .count_window(10)
        .minimum_calls(4)
        .consecutive_failures(0);
    let (mut m, now) = machine(b);
    assert!(m.on_call(0, Failure, false, at(now, 0)).is_none());
    assert!(m.on_call(0, Failure, false, at(now, 0)).is_none());
    // F, F, two fast successes, F: 5 calls, 3 failures.
    let t = m.on_call(0, Failure, false, at(now, 2)).unwrap();
    assert_eq!(
        (t.from, t.to, t.reason),
        (State::Closed, State::Open, Cause::FailureRate)
    );
    assert_eq!(t.failure_rate, 0.6);
    assert_eq!(t.open_until, Some(now + Duration::from_secs(5)));
    assert_eq!(m.epoch(), 1);
}

#[test]
fn successes_never_trip_and_dilute_the_rate() {
    let b = Config::builder()
        .count_window(10)
        .minimum_calls(2)
        .failure_rate(0.5);
    let (mut m, now) = machine(b.consecutive_failures(0));
    assert!(m.on_call(0, Failure, false, at(now, 0)).is_none());
    // 1 failure, 3 successes, 1 failure: 2 / 5 < 0.5.
    assert!(m.on_call(0, Failure, false, at(now, 3)).is_none());
    assert_eq!(m.snapshot(at(now, 3)).failures, 2);
    assert_eq!(m.snapshot(at(now, 3)).calls, 5);
}

#[test]
fn consecutive_failures_trip_and_a_success_breaks_the_run() {
    let b = Config::builder().consecutive_failures(3);
    let (mut m, now) = machine(b);
    m.on_call(0, Failure, false, at(now, 0));
    m.on_call(0, Failure, false, at(now, 0));
    assert_eq!(m.snapshot(at(now, 0)).consecutive_failures, 2);
    // A success in between restarts the run.
    assert!(m.on_call(0, Failure, false, at(now, 1)).is_none());
    assert_eq!(m.snapshot(at(now, 1)).consecutive_failures, 1);
    m.on_call(0, Failure, false, at(now, 1));
    let t = m.on_call(0, Failure, false, at(now, 1)).unwrap();
    assert_eq!(t.reason, Cause::ConsecutiveFailures);
}

#[test]
fn slow_calls_trip_on_their_own_rate() {
    let b = Config::builder()
        .count_window(4)
        .minimum_calls(4)
        .slow_calls(Duration::from_millis(10), 0.5);
    let (mut m, now) = machine(b);
    assert!(m.on_call(0, Success, true, at(now, 0)).is_none());
    assert!(m.on_call(0, Success, true, at(now, 1)).is_none());
    let t = m.on_call(0, Success, false, at(now, 2));
    assert!(t.is_none(), "a plain success never trips");
    // 4 calls: slow, fast, slow, (locked success) -> now a 4th slow one.
    let t = m.on_call(0, Success, true, at(now, 2)).unwrap();
    assert_eq!(t.reason, Cause::SlowCallRate);
}

#[test]
fn open_half_open_closed_with_probe_limits() {
    let b = Config::builder()
        .consecutive_failures(1)
        .half_open_probes(2)
        .half_open_successes(2);
    let (mut m, now) = machine(b);
    m.on_call(0, Failure, false, at(now, 0)).unwrap();
    assert!(!m.try_acquire_probe(1), "no probes while open");
    let early = now + Duration::from_millis(4999);
    assert!(m.on_deadline(1, at(early, 0)).is_none());
    let later = now + Duration::from_secs(5);
    let t = m.on_deadline(1, at(later, 0)).unwrap();
    assert_eq!((t.to, t.reason), (State::HalfOpen, Cause::OpenElapsed));
    assert!(m.try_acquire_probe(2));
    assert!(m.try_acquire_probe(2));
    assert!(!m.try_acquire_probe(2), "only two probes at once");
    m.release_probe(2);
    assert!(m.try_acquire_probe(2), "a cancelled probe frees its slot");
    assert!(m.on_probe(2, Success, false, at(later, 0)).is_none());
    assert!(m.on_probe(2, Ignored, false, at(later, 0)).is_none());
    assert_eq!(m.snapshot(at(later, 0)).probes_in_flight, 0);
    assert!(m.try_acquire_probe(2));
    let t = m.on_probe(2, Success, false, at(later, 0)).unwrap();
    assert_eq!((t.to, t.reason), (State::Closed, Cause::ProbesSucceeded));
    assert_eq!(m.snapshot(at(later, 0)).trips, 0);
}

#[test]
fn failed_probes_back_off_up_to_the_cap() {
    let b = Config::builder()
        .consecutive_failures(1)
        .open_for(Duration::from_secs(1))
        .open_backoff(3.0, Duration::from_secs(5));
    let (mut m, mut now) = machine(b);
    m.on_call(0, Failure, false, at(now, 0)).unwrap();
    let mut durations = vec![];
    for _ in 0..4 {
        let until = m.open_until().unwrap();
        durations.push(until - now);
        now = until;
        m.on_deadline(m.epoch(), at(now, 0)).unwrap();
        assert!(m.try_acquire_probe(m.epoch()));
        let t = m.on_probe(m.epoch(), Failure, false, at(now, 0)).unwrap();
        assert_eq!(t.reason, Cause::ProbeFailed);
    }
    let secs: Vec<u64> = durations.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [1, 3, 5, 5]);
}

#[test]
fn half_open_times_out_and_reopens() {
    let b = Config::builder()
        .consecutive_failures(1)
        .half_open_max_duration(Duration::from_secs(2));
    let (mut m, now) = machine(b);
    m.on_call(0, Failure, false, at(now, 0)).unwrap();
    let t1 = now + Duration::from_secs(5);
    m.on_deadline(1, at(t1, 0)).unwrap();
    assert!(m.try_acquire_probe(2));
    assert!(m
        .on_deadline(2, at(t1 + Duration::from_millis(1999), 0))
        .is_none());
    let t = m
        .on_deadline(2, at(t1 + Duration::from_secs(2), 0))
        .unwrap();
    assert_eq!((t.to, t.reason), (State::Open, Cause::HalfOpenTimedOut));
    // The hung probe's late outcome belongs to an old epoch.
    assert!(m.on_probe(2, Success, false, at(t1, 0)).is_none());
    assert_eq!(m.state(), State::Open);
}

#[test]
fn stale_outcomes_are_discarded() {
    let (mut m, now) = machine(Config::builder().consecutive_failures(1));
    m.on_call(0, Failure, false, at(now, 0)).unwrap();
    assert!(m.on_call(0, Failure, false, at(now, 0)).is_none());
    m.force(State::Closed, at(now, 0)).unwrap();
    assert!(m.on_call(1, Failure, false, at(now, 0)).is_none());
    assert_eq!(m.state(), State::Closed);
}

#[test]
fn forced_states_and_reset() {
    let (mut m, now) = machine(Config::builder().consecutive_failures(1));
    let t = m.force(State::ForcedOpen, at(now, 0)).unwrap();
    assert_eq!((t.from, t.to), (State::Closed, State::ForcedOpen));
    assert!(m.force(State::ForcedOpen, at(now, 0)).is_none());
    assert!(m
        .on_deadline(m.epoch(), at(now + Duration::from_secs(999), 0))
        .is_none());
    m.force(State::Disabled, at(now, 0)).unwrap();
    assert!(m.on_call(m.epoch(), Failure, false, at(now, 0)).is_none());
    assert_eq!(m.state(), State::Disabled);
    let t = m.reset(at(now, 0)).unwrap();
    assert_eq!((t.to, t.reason), (State::Closed, Cause::Reset));
    assert!(
        m.reset(at(now, 0)).is_none(),
        "closed to closed is no transition"
    );
}

#[test]
fn closing_a_closed_circuit_empties_its_window() {
    let b = Config::builder().consecutive_failures(2);
    let (mut m, now) = machine(b);
    m.on_call(0, Failure, false, at(now, 0));
    assert_eq!(m.snapshot(at(now, 0)).failures, 1);
    assert!(
        m.force(State::Closed, at(now, 0)).is_none(),
        "no transition"
    );
    let s = m.snapshot(at(now, 0));
    assert_eq!((s.failures, s.consecutive_failures), (0, 0));
    // One failure after the close does not complete the old run.
    let epoch = m.epoch();
    assert!(m.on_call(epoch, Failure, false, at(now, 0)).is_none());
    assert_eq!(m.state(), State::Closed);
}

#[test]
fn durations_at_their_maximum_never_overflow() {
    let b = Config::builder()
        .consecutive_failures(1)
        .open_for(Duration::MAX)
        .half_open_max_duration(Duration::MAX);
    let (mut m, now) = machine(b);
    let t = m.on_call(0, Failure, false, at(now, 0)).unwrap();
    assert!(t.open_until.unwrap() > now + Duration::from_secs(3600));
    let (b, _) = machine(
        Config::builder()
            .consecutive_failures(1)
            .open_for(Duration::from_millis(1))
            .half_open_max_duration(Duration::MAX),
    );
    let mut m = b;
    m.on_call(0, Failure, false, at(now, 0)).unwrap();
    let later = now + Duration::from_millis(1);
    let t = m.on_deadline(m.epoch(), at(later, 0)).unwrap();
    assert_eq!(t.to, State::HalfOpen);
    assert!(m.deadline().unwrap() > later + Duration::from_secs(3600));
}

#[test]
fn jitter_shortens_within_bounds() {
    let cfg = Config::builder()
        .open_jitter(0.5)
        .jitter_seed(7)
        .build()
        .unwrap();
    let now = Instant::now();
    let mut m = Machine::new(cfg, 0, Ctx { now, fast: 0 });
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        m.trips = 1;
        let d = m.open_duration();
        assert!(
            d >= Duration::from_millis(2500) && d <= Duration::from_secs(5),
            "{d:?}"
        );
        seen.insert(d);
    }
    assert!(seen.len() > 10, "jitter varies: {seen:?}");
}
