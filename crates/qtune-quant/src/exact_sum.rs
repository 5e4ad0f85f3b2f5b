//! Order-independent exact summation (Shewchuk's non-overlapping partials,
//! the algorithm behind Python's `math.fsum`).
//!
//! Per-sample mse and ACIQ values are averaged at the end. Keeping their sum
//! as an exact expansion instead of a list keeps memory bounded (at most a few
//! dozen partials) *and* makes merging exact: the rounded result is the
//! correctly rounded sum of all values, whatever the order of additions.

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ExactSum {
    partials: Vec<f64>,
    count: usize,
    nan: bool,
    pos_inf: bool,
    neg_inf: bool,
}

impl ExactSum {
    pub(crate) fn add(&mut self, x: f64) {
        self.count += 1;
        if x.is_nan() {
            self.nan = true;
            return;
        }
        if x.is_infinite() {
            if x > 0.0 {
                self.pos_inf = true;
            } else {
                self.neg_inf = true;
            }
            return;
        }
        self.add_finite(x);
    }

    fn add_finite(&mut self, mut x: f64) {
        let mut kept = 0;
        for idx in 0..self.partials.len() {
            let mut y = self.partials[idx];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        self.partials.push(x);
    }

    pub(crate) fn merge(&mut self, other: &ExactSum) {
        for &p in &other.partials {
            self.add_finite(p);
        }
        self.count += other.count;
        self.nan |= other.nan;
        self.pos_inf |= other.pos_inf;
        self.neg_inf |= other.neg_inf;
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The correctly rounded sum (round half to even), as `math.fsum`.
    pub(crate) fn sum(&self) -> f64 {
        if self.nan || (self.pos_inf && self.neg_inf) {
            return f64::NAN;
        }
        if self.pos_inf {
            return f64::INFINITY;
        }
        if self.neg_inf {
            return f64::NEG_INFINITY;
        }
        let p = &self.partials;
        let Some(mut n) = p.len().checked_sub(1) else {
            return 0.0;
        };
        let mut hi = p[n];
        let mut lo = 0.0;
        while n > 0 {
            n -= 1;
            let x = hi;
            let y = p[n];
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        // Half-way case: make the rounding of the remaining partials decide.
        if n > 0 && ((lo < 0.0 && p[n - 1] < 0.0) || (lo > 0.0 && p[n - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            let yr = x - hi;
            if y == yr {
                hi = x;
            }
        }
        hi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_independent() {
        let values = [1e16, 1.0, -1e16, 3.5e-3, 7.25, -2.0e10, 1e-300];
        let mut a = ExactSum::default();
        for v in values {
            a.add(v);
        }
        let mut b = ExactSum::default();
        for v in values.iter().rev() {
            b.add(*v);
        }
        assert_eq!(a.sum(), b.sum());
        assert_eq!(a.sum(), 1.0 + 3.5e-3 + 7.25 - 2.0e10);
    }
}
