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

/// Mutation testing found these gaps (issue 24): each test below fails
/// under a mutant the others let live.
mod mutants {
    use super::*;

    #[test]
    fn the_machine_keeps_the_config_it_was_given() {
        let (m, _) = machine(Config::builder().name("payments").half_open_probes(7));
        assert_eq!(m.config().name(), "payments");
        assert_eq!(m.config().half_open_probes, 7);
    }

    #[test]
    fn a_failure_under_both_rates_trips_neither_way() {
        let b = Config::builder()
            .count_window(4)
            .minimum_calls(2)
            .consecutive_failures(0)
            .failure_rate(0.9)
            .slow_calls(Duration::from_millis(10), 0.9);
        let (mut m, now) = machine(b);
        // 3 fast successes, then a failure: 25 % failed, 0 % slow.
        assert!(m.on_call(0, Failure, false, at(now, 3)).is_none());
        assert_eq!(m.state(), State::Closed);
    }

    /// A half-open circuit reopened and half-open again: slots and
    /// outcomes of the earlier period's probes count for nothing.
    fn half_open_twice() -> (Machine, Instant, u64, u64) {
        let b = Config::builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .open_backoff(1.0, Duration::from_secs(5));
        let (mut m, now) = machine(b);
        m.on_call(0, Failure, false, at(now, 0)).unwrap();
        let t1 = now + Duration::from_secs(5);
        m.on_deadline(1, at(t1, 0)).unwrap();
        let first = m.epoch();
        assert!(m.try_acquire_probe(first));
        m.on_probe(first, Failure, false, at(t1, 0)).unwrap();
        let t2 = t1 + Duration::from_secs(5);
        m.on_deadline(m.epoch(), at(t2, 0)).unwrap();
        assert_eq!(m.state(), State::HalfOpen);
        let second = m.epoch();
        (m, t2, first, second)
    }

    #[test]
    fn a_stale_probe_frees_no_slot_of_a_later_half_open_period() {
        let (mut m, _, first, now_epoch) = half_open_twice();
        assert!(m.try_acquire_probe(now_epoch));
        m.release_probe(first);
        assert!(
            !m.try_acquire_probe(now_epoch),
            "the one slot is still taken"
        );
    }

    #[test]
    fn a_stale_probe_success_closes_no_later_half_open_period() {
        let (mut m, at2, first, _) = half_open_twice();
        assert!(m.on_probe(first, Success, false, at(at2, 0)).is_none());
        assert_eq!(m.state(), State::HalfOpen);
    }

    #[test]
    fn snapshots_say_what_each_state_has() {
        let b = Config::builder()
            .consecutive_failures(2)
            .half_open_probes(3);
        let (mut m, now) = machine(b);
        m.on_call(0, Failure, false, at(now, 0));
        let closed = m.snapshot(at(now, 0));
        assert_eq!((closed.consecutive_failures, closed.open_until), (1, None));
        m.on_call(0, Failure, false, at(now, 0)).unwrap();
        let open = m.snapshot(at(now, 0));
        assert_eq!(open.state, State::Open);
        assert_eq!(open.open_until, Some(now + Duration::from_secs(5)));
        assert_eq!((open.consecutive_failures, open.probes_in_flight), (0, 0));
        let later = now + Duration::from_secs(5);
        m.on_deadline(m.epoch(), at(later, 0)).unwrap();
        assert!(m.try_acquire_probe(m.epoch()));
        assert!(m.try_acquire_probe(m.epoch()));
        let half = m.snapshot(at(later, 0));
        assert_eq!(
            (half.state, half.open_until, half.probes_in_flight),
            (State::HalfOpen, None, 2)
        );
    }

    #[test]
    fn practically_never_is_decades_away() {
        let now = Instant::now();
        let far = later(now, Duration::MAX);
        assert!(far >= now + Duration::from_secs(29 * 365 * 24 * 3600));
        // Where `now + 30 years` overflowed, `now + 1 day` would stand
        // instead; no monotonic clock is that close to its end, so that
        // branch cannot be reached by a test (the mutants of its `24 *
        // 3600` are equivalent here).
    }

    #[test]
    fn the_jitter_generator_is_splitmix64() {
        let mut state = 0;
        let first: Vec<u64> = (0..3).map(|_| splitmix64(&mut state)).collect();
        assert_eq!(
            first,
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
    }

    #[test]
    fn breakers_without_a_seed_jitter_differently() {
        let seeds: Vec<u64> = (0..3).map(|_| random_seed()).collect();
        assert!(seeds.iter().all(|s| *s > 1), "{seeds:?}");
        assert!(seeds[0] != seeds[1] && seeds[1] != seeds[2], "{seeds:?}");
    }
}
