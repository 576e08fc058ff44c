//! Sliding windows over call outcomes (pure logic, no atomics, no futures).
//!
//! The count window never sees plain successes one by one: they are counted
//! per thread outside the lock (see `core.rs`), and the window is handed their
//! running total (`fast`) whenever it records something else. Because every
//! failure and slow call is stamped with its position in the call sequence
//! (`fast successes so far + locked records so far`), the window can tell
//! exactly which failures are among the last N calls without ever having seen
//! the successes between them.

use std::collections::VecDeque;

use tokio::time::Instant;

use super::config::Window;

/// What a window holds right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Figures {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Figures {
    pub(crate) fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    pub(crate) fn slow_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[derive(Debug)]
pub(crate) enum WindowState {
    Count(CountWindow),
    Time(TimeWindow),
}

impl WindowState {
    pub(crate) fn new(kind: Window, fast: u64, now: Instant) -> Self {
        match kind {
            Window::Count { calls } => WindowState::Count(CountWindow {
                size: u64::from(calls),
                baseline: fast,
                locked: 0,
                failures: VecDeque::new(),
                slow: VecDeque::new(),
            }),
            Window::Time { span, buckets } => WindowState::Time(TimeWindow {
                width: (span / buckets).as_nanos(),
                origin: now,
                buckets: vec![Bucket::EMPTY; buckets as usize],
                next: 0,
            }),
        }
    }

    /// Empties the window; `fast` is the running total of fast successes now.
    pub(crate) fn reset(&mut self, fast: u64, now: Instant) {
        match self {
            WindowState::Count(w) => {
                w.baseline = fast;
                w.locked = 0;
                w.failures.clear();
                w.slow.clear();
            }
            WindowState::Time(w) => {
                w.origin = now;
                w.buckets.fill(Bucket::EMPTY);
                w.next = 0;
            }
        }
    }

    /// Records one outcome and returns its position in the call sequence.
    pub(crate) fn record(&mut self, failure: bool, slow: bool, fast: u64, now: Instant) -> u64 {
        match self {
            WindowState::Count(w) => w.record(failure, slow, fast),
            WindowState::Time(w) => w.record(failure, slow, now),
        }
    }

    /// The position the next call will take.
    pub(crate) fn next_position(&self, fast: u64) -> u64 {
        match self {
            WindowState::Count(w) => w.next_position(fast),
            WindowState::Time(w) => w.next,
        }
    }

    pub(crate) fn figures(&self, fast: u64, now: Instant) -> Figures {
        match self {
            WindowState::Count(w) => w.figures(fast),
            WindowState::Time(w) => w.figures(now),
        }
    }
}

/// The last `size` calls.
#[derive(Debug)]
pub(crate) struct CountWindow {
    size: u64,
    /// Fast successes counted before this window started.
    baseline: u64,
    /// Outcomes recorded under the lock (failures, slow successes).
    locked: u64,
    /// Positions of failures, ascending, none older than `size` calls.
    failures: VecDeque<u64>,
    /// Positions of slow calls, ascending, none older than `size` calls.
    slow: VecDeque<u64>,
}

impl CountWindow {
    fn next_position(&self, fast: u64) -> u64 {
        fast.saturating_sub(self.baseline) + self.locked
    }

    fn record(&mut self, failure: bool, slow: bool, fast: u64) -> u64 {
        let pos = self.next_position(fast);
        self.locked += 1;
        if failure {
            self.failures.push_back(pos);
        }
        if slow {
            self.slow.push_back(pos);
        }
        // Housekeeping only: `figures` filters by position itself, so an
        // off-by-one here (a mutant of `pos + 1`) keeps one entry longer
        // and changes no answer.
        let oldest = (pos + 1).saturating_sub(self.size);
        for queue in [&mut self.failures, &mut self.slow] {
            while queue.front().is_some_and(|&p| p < oldest) {
                queue.pop_front();
            }
        }
        pos
    }

    fn figures(&self, fast: u64) -> Figures {
        let next = self.next_position(fast);
        let oldest = next.saturating_sub(self.size);
        let within = |q: &VecDeque<u64>| (q.len() - q.partition_point(|&p| p < oldest)) as u64;
        Figures {
            calls: next - oldest,
            failures: within(&self.failures),
            slow: within(&self.slow),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Which bucket of time (since `origin`) this slot holds; `u64::MAX` when
    /// it holds none.
    index: u64,
    calls: u64,
    failures: u64,
    slow: u64,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        index: u64::MAX,
        calls: 0,
        failures: 0,
        slow: 0,
    };
}

/// The calls of the current bucket and the `buckets - 1` before it.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    width: u128,
    origin: Instant,
    buckets: Vec<Bucket>,
    next: u64,
}

impl TimeWindow {
    fn index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        // Past u64::MAX buckets (584 years at 1 ns): unreachable, so the
        // mutants of this fallback are equivalent.
        u64::try_from(elapsed.as_nanos() / self.width).unwrap_or(u64::MAX - 1)
    }

    fn record(&mut self, failure: bool, slow: bool, now: Instant) -> u64 {
        let index = self.index(now);
        let len = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(index % len) as usize];
        if bucket.index != index {
            *bucket = Bucket {
                index,
                ..Bucket::EMPTY
            };
        }
        bucket.calls += 1;
        bucket.failures += u64::from(failure);
        bucket.slow += u64::from(slow);
        self.next += 1;
        self.next - 1
    }

    fn figures(&self, now: Instant) -> Figures {
        let index = self.index(now);
        let len = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.index <= index && index - b.index < len)
            .fold(Figures::default(), |acc, b| Figures {
                calls: acc.calls + b.calls,
                failures: acc.failures + b.failures,
                slow: acc.slow + b.slow,
            })
    }
}

/// Bucket width of a time window, for documentation and tests.
#[cfg(test)]
pub(crate) fn bucket_width(span: std::time::Duration, buckets: u32) -> std::time::Duration {
    span / buckets
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn count(calls: u32) -> WindowState {
        WindowState::new(Window::Count { calls }, 0, Instant::now())
    }

    #[test]
    fn count_window_sees_successes_it_never_recorded() {
        let now = Instant::now();
        let mut w = count(4);
        // F at 0, then 2 fast successes, F at 3.
        assert_eq!(w.record(true, false, 0, now), 0);
        assert_eq!(w.record(true, false, 2, now), 3);
        let f = w.figures(2, now);
        assert_eq!((f.calls, f.failures), (4, 2));
        // Two more successes push the first failure out of the window.
        let f = w.figures(4, now);
        assert_eq!((f.calls, f.failures), (4, 1));
        assert_eq!(w.next_position(4), 6);
    }

    #[test]
    fn a_full_count_window_holds_exactly_its_size() {
        let now = Instant::now();
        let mut w = count(2);
        for (fast, pos) in [(0, 0), (0, 1), (0, 2)] {
            assert_eq!(w.record(true, true, fast, now), pos);
        }
        let f = w.figures(0, now);
        assert_eq!(
            (f.calls, f.failures, f.slow),
            (2, 2, 2),
            "the oldest is out"
        );
    }

    #[test]
    fn time_window_positions_follow_one_another() {
        let now = Instant::now();
        let window = Window::Time {
            span: Duration::from_secs(10),
            buckets: 5,
        };
        let mut w = WindowState::new(window, 0, now);
        assert_eq!(w.record(true, false, 0, now), 0);
        assert_eq!(w.record(true, false, 0, now), 1);
        assert_eq!(w.next_position(0), 2);
    }

    #[test]
    fn count_window_reset_uses_a_baseline() {
        let now = Instant::now();
        let mut w = count(10);
        w.record(true, true, 7, now);
        w.reset(9, now);
        assert_eq!(w.figures(9, now), Figures::default());
        assert_eq!(w.record(true, false, 11, now), 2);
        let f = w.figures(11, now);
        assert_eq!((f.calls, f.failures, f.slow), (3, 1, 0));
    }

    #[test]
    fn time_window_drops_whole_buckets() {
        let start = Instant::now();
        let span = Duration::from_secs(10);
        let mut w = WindowState::new(Window::Time { span, buckets: 5 }, 0, start);
        let width = bucket_width(span, 5);
        w.record(true, false, 0, start);
        w.record(false, true, 0, start + width);
        let f = w.figures(0, start + width * 4);
        assert_eq!((f.calls, f.failures, f.slow), (2, 1, 1));
        // The first bucket leaves once five newer buckets have begun.
        let f = w.figures(0, start + width * 5);
        assert_eq!((f.calls, f.failures, f.slow), (1, 0, 1));
        let f = w.figures(0, start + width * 6);
        assert_eq!(f, Figures::default());
        // A slot is reused for a later bucket without leaking old counts.
        w.record(false, false, 0, start + width * 6);
        let f = w.figures(0, start + width * 6);
        assert_eq!((f.calls, f.failures), (1, 0));
    }
}
