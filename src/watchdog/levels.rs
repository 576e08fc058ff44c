//! Usage levels that fire once on the way up and clear with hysteresis on
//! the way down: pure.

/// A level crossed, up (`raised`) or down.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Crossing {
    /// The level, as a fraction of the limit (0.5 for 50 %).
    pub level: f64,
    /// `true` when raised, `false` when cleared.
    pub raised: bool,
}

/// The state of every configured level.
#[derive(Clone, Debug)]
pub(crate) struct Levels {
    /// Ascending.
    levels: Vec<f64>,
    hysteresis: f64,
    raised: Vec<bool>,
}

impl Levels {
    /// `levels` (fractions, any order) clear once usage falls `hysteresis`
    /// below them.
    pub(crate) fn new(levels: &[f64], hysteresis: f64) -> Self {
        let mut levels = levels.to_vec();
        levels.sort_by(f64::total_cmp);
        levels.dedup();
        Levels {
            raised: vec![false; levels.len()],
            levels,
            hysteresis,
        }
    }

    /// Feeds the current usage ratio; returns the crossings, raised ones in
    /// ascending order, cleared ones in descending order.
    pub(crate) fn update(&mut self, ratio: f64) -> Vec<Crossing> {
        let mut out = Vec::new();
        if !ratio.is_finite() {
            return out;
        }
        for (level, raised) in self.levels.iter().zip(self.raised.iter_mut()) {
            if !*raised && ratio >= *level {
                *raised = true;
                out.push(Crossing {
                    level: *level,
                    raised: true,
                });
            }
        }
        for (level, raised) in self.levels.iter().zip(self.raised.iter_mut()).rev() {
            if *raised && ratio < *level - self.hysteresis {
                *raised = false;
                out.push(Crossing {
                    level: *level,
                    raised: false,
                });
            }
        }
        out
    }

    /// Every raised level, ascending.
    pub(crate) fn raised(&self) -> Vec<f64> {
        self.levels
            .iter()
            .zip(&self.raised)
            .filter(|(_, r)| **r)
            .map(|(l, _)| *l)
            .collect()
    }

    /// The highest raised level, if any.
    #[cfg(test)]
    pub(crate) fn highest(&self) -> Option<f64> {
        self.levels
            .iter()
            .zip(&self.raised)
            .rev()
            .find(|(_, r)| **r)
            .map(|(l, _)| *l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raised(c: &[Crossing]) -> Vec<(f64, bool)> {
        c.iter().map(|c| (c.level, c.raised)).collect()
    }

    #[test]
    fn each_level_fires_once_up_and_clears_below_the_hysteresis() {
        let mut l = Levels::new(&[0.9, 0.2, 0.5], 0.05);
        assert!(l.update(0.1).is_empty());
        assert_eq!(raised(&l.update(0.25)), [(0.2, true)]);
        assert!(l.update(0.3).is_empty(), "once");
        assert!(l.update(0.17).is_empty(), "within the hysteresis");
        assert_eq!(raised(&l.update(0.14)), [(0.2, false)]);
        assert_eq!(
            raised(&l.update(0.95)),
            [(0.2, true), (0.5, true), (0.9, true)]
        );
        assert_eq!(l.highest(), Some(0.9));
        assert!(l.update(0.88).is_empty());
        assert_eq!(raised(&l.update(0.3)), [(0.9, false), (0.5, false)]);
        assert_eq!(l.highest(), Some(0.2));
        assert!(l.update(f64::NAN).is_empty());
    }
}
