//! Growth-rate estimation and the time until memory is full: pure.
//!
//! The rate is a Theil–Sen slope (the median of the slopes between pairs
//! of samples) taken only over pairs at least a third of the observed span
//! apart. The median ignores a one-off spike (it touches few pairs); the
//! long baselines average over the sawtooth of keys expiring in batches
//! (each pair spans several teeth), where short pairs would see the steep
//! climb between two expiries.

use std::collections::VecDeque;
use std::time::Duration;

/// What the samples say about growth.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Growth {
    /// Bytes per second (negative when shrinking).
    pub bytes_per_sec: f64,
    /// The fitted usage at the last sample, in bytes (robust to a spike in
    /// that very sample).
    pub fitted_used: f64,
    /// Over how long the samples run.
    pub span: Duration,
}

impl Growth {
    /// How long until the fitted usage reaches `limit` bytes at this rate:
    /// `None` if not growing.
    pub fn time_to(&self, limit: u64) -> Option<Duration> {
        if self.bytes_per_sec <= 0.0 {
            return None;
        }
        let left = (limit as f64 - self.fitted_used).max(0.0);
        let secs = left / self.bytes_per_sec;
        (secs.is_finite() && secs < 1e12).then(|| Duration::from_secs_f64(secs))
    }
}

/// A window of `(time, used bytes)` samples over a horizon.
#[derive(Clone, Debug)]
pub(crate) struct Forecaster {
    horizon: Duration,
    min_span: Duration,
    /// Seconds since an arbitrary origin, and bytes.
    samples: VecDeque<(f64, f64)>,
}

/// At most this many samples are kept (older ones are thinned out), so an
/// estimate costs at most about 16 k slope computations.
const MAX_SAMPLES: usize = 256;
/// No estimate from fewer samples than this.
const MIN_SAMPLES: usize = 6;

impl Forecaster {
    /// Keeps samples for `horizon`; estimates once they span `min_span`.
    pub(crate) fn new(horizon: Duration, min_span: Duration) -> Self {
        Forecaster {
            horizon,
            min_span,
            samples: VecDeque::new(),
        }
    }

    /// Adds a sample taken `at` (seconds since any fixed origin).
    pub(crate) fn push(&mut self, at: f64, used: u64) {
        if self.samples.back().is_some_and(|(t, _)| at <= *t) {
            return;
        }
        self.samples.push_back((at, used as f64));
        let horizon = self.horizon.as_secs_f64();
        while self.samples.front().is_some_and(|(t, _)| at - t > horizon) {
            self.samples.pop_front();
        }
        if self.samples.len() > MAX_SAMPLES {
            // Drop every other sample of the older half: the window keeps
            // its span with fewer points.
            let half = self.samples.len() / 2;
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i > half || i % 2 == 1
            });
        }
    }

    /// Forgets every sample (e.g. after Redis restarted: its memory started
    /// over).
    pub(crate) fn clear(&mut self) {
        self.samples.clear();
    }

    /// How many samples are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// The growth, once there are enough samples over a long enough span.
    pub(crate) fn growth(&self) -> Option<Growth> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let span = last.0 - first.0;
        if self.samples.len() < MIN_SAMPLES || span < self.min_span.as_secs_f64() || span <= 0.0 {
            return None;
        }
        let min_gap = span / 3.0;
        let points: Vec<(f64, f64)> = self.samples.iter().copied().collect();
        let mut slopes = Vec::with_capacity(points.len() * points.len() / 4);
        for (i, a) in points.iter().enumerate() {
            for b in &points[i + 1..] {
                let dt = b.0 - a.0;
                if dt >= min_gap {
                    slopes.push((b.1 - a.1) / dt);
                }
            }
        }
        let slope = median(&mut slopes)?;
        // The line through the samples with that slope: median intercept.
        let mut intercepts: Vec<f64> = points.iter().map(|(t, y)| y - slope * t).collect();
        let intercept = median(&mut intercepts)?;
        Some(Growth {
            bytes_per_sec: slope,
            fitted_used: intercept + slope * last.0,
            span: Duration::from_secs_f64(span),
        })
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    Some(*m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1024.0 * 1024.0;
    const LIMIT: u64 = 1 << 30; // 1 GiB

    /// A series sampled every `step` seconds for `secs`, by `f(t)`.
    fn series(f: impl Fn(f64) -> f64, secs: u64, step: u64) -> Forecaster {
        let mut fc = Forecaster::new(Duration::from_secs(secs + 1), Duration::from_secs(60));
        for t in (0..=secs).step_by(step as usize) {
            fc.push(t as f64, f(t as f64).max(0.0) as u64);
        }
        fc
    }

    fn hours(d: Duration) -> f64 {
        d.as_secs_f64() / 3600.0
    }

    #[test]
    fn steady_growth_is_forecast_within_15_percent() {
        // 100 MB used, +1 MB per minute: 924 min to 1 GiB from t=0,
        // observed for 6 hours (360 min) with ±0.5 MB of noise.
        let noise = |t: f64| ((t * 7.3).sin() * 0.5) * MB;
        let fc = series(|t| 100.0 * MB + t / 60.0 * MB + noise(t), 6 * 3600, 60);
        let g = fc.growth().unwrap();
        let truth = (1024.0 - 100.0 - 360.0) / 60.0; // hours left at the last sample
        let got = hours(g.time_to(LIMIT).unwrap());
        assert!(
            (got - truth).abs() / truth < 0.15,
            "forecast {got:.2} h, truth {truth:.2} h"
        );
    }

    #[test]
    fn a_one_off_spike_does_not_move_the_forecast() {
        let steady = |t: f64| 100.0 * MB + t / 60.0 * MB;
        let fc = series(
            |t| {
                if (3000.0..3600.0).contains(&t) {
                    steady(t) + 400.0 * MB
                } else {
                    steady(t)
                }
            },
            6 * 3600,
            60,
        );
        let truth = (1024.0 - 100.0 - 360.0) / 60.0;
        let got = hours(fc.growth().unwrap().time_to(LIMIT).unwrap());
        assert!(
            (got - truth).abs() / truth < 0.15,
            "forecast {got:.2} h, truth {truth:.2} h"
        );
        // A spike in the very last sample does not either.
        let mut fc = series(steady, 6 * 3600, 60);
        fc.push(6.0 * 3600.0 + 60.0, (steady(21_660.0) + 500.0 * MB) as u64);
        let got = hours(fc.growth().unwrap().time_to(LIMIT).unwrap());
        assert!(
            (got - truth).abs() / truth < 0.15,
            "forecast {got:.2} h, truth {truth:.2} h"
        );
    }

    #[test]
    fn the_sawtooth_of_expiring_keys_is_averaged_out() {
        // Net +0.5 MB/min, but within each 20-min tooth it climbs 3.5 MB/min
        // and then drops 60 MB as a batch of keys expires.
        let tooth = 1200.0;
        let f = |t: f64| {
            let n = (t / tooth).floor();
            let within = t - n * tooth;
            200.0 * MB + n * 10.0 * MB + within / 60.0 * 3.5 * MB
        };
        let fc = series(f, 8 * 3600, 60);
        let rate = fc.growth().unwrap().bytes_per_sec * 60.0 / MB;
        assert!(
            (0.35..0.75).contains(&rate),
            "net rate {rate:.2} MB/min, true 0.5"
        );
    }

    #[test]
    fn flat_and_shrinking_usage_never_fill() {
        let flat = series(|_| 300.0 * MB, 3 * 3600, 60);
        assert!(flat.growth().unwrap().time_to(LIMIT).is_none());
        let shrinking = series(|t| 600.0 * MB - t / 60.0 * MB, 3 * 3600, 60);
        let g = shrinking.growth().unwrap();
        assert!(g.bytes_per_sec < 0.0);
        assert!(g.time_to(LIMIT).is_none());
    }

    #[test]
    fn no_estimate_before_enough_samples_or_span() {
        let mut fc = Forecaster::new(Duration::from_secs(3600), Duration::from_secs(60));
        for t in 0..5 {
            fc.push(f64::from(t) * 30.0, 1000);
        }
        assert!(fc.growth().is_none(), "five samples");
        let short = series(|t| t * 1000.0, 50, 5);
        assert!(short.growth().is_none(), "50 s span");
    }

    #[test]
    fn the_window_stays_bounded_and_keeps_its_span() {
        let fc = series(|t| 100.0 * MB + t * 1000.0, 24 * 3600, 10);
        assert!(fc.len() <= MAX_SAMPLES + 1);
        let g = fc.growth().unwrap();
        assert!(g.span > Duration::from_secs(23 * 3600));
        assert!((g.bytes_per_sec - 1000.0).abs() < 1.0);
    }
}
