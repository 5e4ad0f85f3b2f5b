//! Per-sample threshold estimators and the percentile machinery
//! (spec §3.3.2 - §3.3.4, `cali_math.py`).
//!
//! Precision: sums and means are accumulated in f64 (NumPy uses float32
//! pairwise sums); the results differ from NumPy's by float32 rounding only.

use crate::conv::{f64_trunc_usize, usize_f64};
use std::cmp::Ordering;

/// ACIQ Gauss constant alpha for 8 bits.
pub const ACIQ_GAUSS_ALPHA_8: f64 = 3.92403337;
/// ACIQ Gauss constant alpha for 4 bits.
pub const ACIQ_GAUSS_ALPHA_4: f64 = 2.55913642;
/// ACIQ Laplace constant beta for 8 bits.
pub const ACIQ_LAPLACE_BETA_8: f64 = 9.89675982;
/// ACIQ Laplace constant beta for 4 bits.
pub const ACIQ_LAPLACE_BETA_4: f64 = 5.02864014;

/// OCTAV mse threshold of one sample (`threshold_mse`):
/// `unsigned = 4` if `|min x| < 1e-6` else 1; \(s_0 = \sum a / \#\{a>0\}\);
/// \[ s_{n+1} = \frac{\sum_{a>s_n} a}{4^{-b}/3/\text{unsigned}\cdot\#\{a\le s_n\} + \#\{a>s_n\}} \]
/// for at most 20 steps, stopping (and keeping \(s_n\)) when
/// \(|s_{n+1}-s_n| < 10^{-6}\). A sample without non-zero values gives 1.0.
/// NaN elements never compare greater or smaller and are ignored.
pub fn threshold_mse(x: &[f32], bits: u32) -> f64 {
    let (min, max) = min_max(x);
    let unsigned = if f64::from(min).abs() < 1e-6 {
        4.0
    } else {
        1.0
    };
    let bins = MseBins::new(x, min, max);
    let (total, nonzero, _) = bins.split(0.0);
    if nonzero == 0.0 {
        return 1.0;
    }
    let factor = 1.0 / 4f64.powi(i32::try_from(bits).unwrap_or(8)) / 3.0 / unsigned;
    let mut s = total / nonzero;
    for _ in 0..20 {
        let (above_sum, above, below) = bins.split(s);
        let next = above_sum / (factor * below + above);
        if (next - s).abs() < 1e-6 {
            break;
        }
        s = next;
    }
    s
}

/// `|x|` grouped into bins of equal width over `[0, max|x|]`, with each
/// bin's sum and count, so that one OCTAV iteration reads the bin totals
/// and scans only the bin holding the threshold, instead of all the data.
/// The bin of a value is a monotone function of it, so every value of a
/// lower bin is below the threshold's bin and every value of a higher bin
/// above it. NaNs are left out (they count on neither side).
struct MseBins {
    /// `MSE_BINS / max|x|` (0 when every value is 0).
    scale: f64,
    /// Per bin: `(sum, count)` in f64, summed in data order.
    totals: Vec<(f64, f64)>,
    /// Start of each bin in `values` (plus the end).
    starts: Vec<usize>,
    /// `|x|` grouped by bin, in data order within a bin.
    values: Vec<f32>,
}

const MSE_BINS: usize = 4096;
const MSE_BINS_F64: f64 = 4096.0;
const MSE_LAST_BIN_F64: f64 = 4095.0;

impl MseBins {
    /// `floor(a * MSE_BINS / amax)` clamped to the last bin (`scale` is
    /// `MSE_BINS / amax`): monotone in `a`.
    fn bin_of(scale: f64, a: f64) -> usize {
        let b = a * scale;
        if b >= MSE_LAST_BIN_F64 {
            MSE_BINS - 1
        } else if b > 0.0 {
            // Truncation of a value in (0, MSE_BINS - 1): exact.
            #[allow(
                clippy::as_conversions,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let b = b as usize;
            b
        } else {
            0
        }
    }

    fn new(x: &[f32], min: f32, max: f32) -> Self {
        let amax = f64::from(min.abs().max(max.abs()));
        let scale = if amax > 0.0 { MSE_BINS_F64 / amax } else { 0.0 };
        let mut totals = vec![(0.0f64, 0.0f64); MSE_BINS];
        let mut counts = vec![0usize; MSE_BINS];
        let mut index: Vec<u16> = Vec::with_capacity(x.len());
        for &v in x {
            if v.is_nan() {
                index.push(u16::MAX);
                continue;
            }
            let a = f64::from(v.abs());
            let b = Self::bin_of(scale, a);
            totals[b].0 += a;
            totals[b].1 += 1.0;
            counts[b] += 1;
            index.push(u16::try_from(b).unwrap_or(0)); // b < MSE_BINS < u16::MAX
        }
        let mut starts = Vec::with_capacity(MSE_BINS + 1);
        let mut acc = 0usize;
        for &c in &counts {
            starts.push(acc);
            acc += c;
        }
        starts.push(acc);
        let mut fill = starts.clone();
        let mut values = vec![0.0f32; acc];
        for (&v, &b) in x.iter().zip(&index) {
            if b == u16::MAX {
                continue;
            }
            let b = usize::from(b);
            values[fill[b]] = v.abs();
            fill[b] += 1;
        }
        MseBins {
            scale,
            totals,
            starts,
            values,
        }
    }

    /// `(sum of |v| > s, count of |v| > s, count of |v| <= s)`.
    fn split(&self, s: f64) -> (f64, f64, f64) {
        let b = Self::bin_of(self.scale, s.max(0.0));
        let (mut above_sum, mut above, mut below) = (0.0, 0.0, 0.0);
        for &(_, c) in &self.totals[..b] {
            below += c;
        }
        for &v in &self.values[self.starts[b]..self.starts[b + 1]] {
            let a = f64::from(v);
            if a > s {
                above_sum += a;
                above += 1.0;
            } else {
                below += 1.0;
            }
        }
        for &(sum, c) in &self.totals[b + 1..] {
            above_sum += sum;
            above += c;
        }
        (above_sum, above, below)
    }
}

/// ACIQ Gauss (`threshold_aciq_gauss`):
/// \(c = 0.5\cdot0.35\,(1+\sqrt{\pi\ln 4})\),
/// \(\hat\sigma = (\max x - \min x)\,c/\sqrt{2\ln N}\), threshold
/// \(\alpha\hat\sigma\). One element gives \(+\infty\) (`ln 1 = 0`), later
/// clipped to the abs-max.
pub fn threshold_aciq_gauss(x: &[f32], bits: u32) -> f64 {
    let alpha = if bits == 8 {
        ACIQ_GAUSS_ALPHA_8
    } else {
        ACIQ_GAUSS_ALPHA_4
    };
    let c = 0.5 * 0.35 * (1.0 + (std::f64::consts::PI * 4f64.ln()).sqrt());
    let (mn, mx) = min_max(x);
    let sigma = (f64::from(mx) - f64::from(mn)) * c / (2.0 * usize_f64(x.len()).ln()).sqrt();
    alpha * sigma
}

/// ACIQ Laplace (`threshold_aciq_laplace`): \(b = \text{mean}|x - \text{mean}\,x|\),
/// threshold \(\beta b\).
pub fn threshold_aciq_laplace(x: &[f32], bits: u32) -> f64 {
    let beta = if bits == 8 {
        ACIQ_LAPLACE_BETA_8
    } else {
        ACIQ_LAPLACE_BETA_4
    };
    let n = usize_f64(x.len());
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let b = x.iter().map(|&v| (f64::from(v) - mean).abs()).sum::<f64>() / n;
    beta * b
}

/// Min and max with NumPy's NaN propagation.
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let mut mn = f32::INFINITY;
    let mut mx = f32::NEG_INFINITY;
    for &v in x {
        if v.is_nan() {
            return (f32::NAN, f32::NAN);
        }
        mn = mn.min(v);
        mx = mx.max(v);
    }
    (mn, mx)
}

/// Depth schedule of the percentile method (spec §3.1):
/// `per = 99.99 + i*step`, `step = (99.999999 - 99.99)/op_count`,
/// `res_length = int(N*size*(1 - per/100)) + 1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PercentileSchedule {
    /// Index `i` of the tensor's op in the op list.
    pub op_index: usize,
    /// Number of ops (`#ops`).
    pub op_count: usize,
    /// Total number of calibration batches `N`.
    pub batch_count: usize,
}

impl PercentileSchedule {
    pub fn new(op_index: usize, op_count: usize, batch_count: usize) -> Self {
        PercentileSchedule {
            op_index,
            op_count,
            batch_count,
        }
    }

    /// The percentile `per` (e.g. 99.99).
    pub fn percentile(&self) -> f64 {
        let step = (99.999999 - 99.99) / usize_f64(self.op_count.max(1));
        99.99 + usize_f64(self.op_index) * step
    }

    /// `res_length` for samples of `size` elements.
    pub fn res_length(&self, size: usize) -> usize {
        let n = usize_f64(self.batch_count) * usize_f64(size);
        f64_trunc_usize(n * (1.0 - self.percentile() / 100.0)).unwrap_or(0) + 1
    }

    /// `ratio = frac(per/100 * (N*size - 1))`.
    pub fn ratio(&self, size: usize) -> f64 {
        let inter = usize_f64(self.batch_count) * usize_f64(size) - 1.0;
        let v = self.percentile() / 100.0 * inter;
        v - v.floor()
    }
}

/// NumPy's sort order for floats: NaN after everything.
pub(crate) fn numpy_cmp(a: &f32, b: &f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
    }
}

/// NumPy's order with ties broken by the bit pattern: a total order, so the
/// `k` smallest or largest values of a list are one multiset of bit patterns
/// whatever the list's order (`+0.0` and `-0.0`, or NaNs with different
/// payloads, are equal for [`numpy_cmp`] and would otherwise be picked by the
/// selection's internal permutation). Numerically it is NumPy's order.
pub(crate) fn total_cmp(a: &f32, b: &f32) -> Ordering {
    numpy_cmp(a, b).then_with(|| a.to_bits().cmp(&b.to_bits()))
}

/// Keeps the `k` smallest values of `v` (unordered).
pub(crate) fn keep_smallest(v: &mut Vec<f32>, k: usize) {
    if v.len() > k {
        if k == 0 {
            v.clear();
            return;
        }
        v.select_nth_unstable_by(k - 1, total_cmp);
        v.truncate(k);
    }
}

/// Keeps the `k` largest values of `v` (unordered).
pub(crate) fn keep_largest(v: &mut Vec<f32>, k: usize) {
    if v.len() > k {
        if k == 0 {
            v.clear();
            return;
        }
        let drop = v.len() - k;
        v.select_nth_unstable_by(drop, total_cmp);
        v.drain(..drop);
    }
}

/// Subsample size of [`tail_of`]'s threshold estimate.
const TAIL_SUBSAMPLE: usize = 4096;

/// The `k` largest (`largest`) or smallest values of `x`: the multiset
/// `keep_largest` / `keep_smallest` leave from a copy of all of `x`, found by
/// copying only the values beyond a threshold `t` estimated from a strided
/// subsample (about `2k + 64` of them) and selecting among those. Exact:
/// when at least `k` values of `x` lie beyond `t`, the `k` extremes of `x`
/// all do. Falls back to selecting over a full copy when `k` is not small
/// against `x.len()`, when the estimate leaves fewer than `k` values, or when
/// `t` is zero or NaN (where `<=` and the total order disagree on ties).
fn tail_of(x: &[f32], k: usize, largest: bool) -> Vec<f32> {
    let full = || {
        let mut v = x.to_vec();
        if largest {
            keep_largest(&mut v, k);
        } else {
            keep_smallest(&mut v, k);
        }
        v
    };
    let n = x.len();
    if k == 0 || k.saturating_mul(8) > n {
        return full();
    }
    let stride = (n / TAIL_SUBSAMPLE).max(1);
    let mut sample: Vec<f32> = x.iter().step_by(stride).copied().collect();
    let m = sample.len();
    // Rank (from the extreme end) of the subsample value expected to leave
    // about 2k + 64 values of x beyond it, with a margin for sampling error.
    let rank = (2 * k + 64).saturating_mul(m).div_ceil(n) + 8;
    if rank >= m {
        return full();
    }
    let idx = if largest { m - rank } else { rank - 1 };
    let (_, &mut t, _) = sample.select_nth_unstable_by(idx, total_cmp);
    if t == 0.0 || t.is_nan() {
        return full();
    }
    // For a non-zero, non-NaN t these are exactly the values at or beyond t
    // in the total order (NaN is the largest value).
    let mut beyond: Vec<f32> = if largest {
        x.iter()
            .copied()
            .filter(|&v| v >= t || v.is_nan())
            .collect()
    } else {
        x.iter().copied().filter(|&v| v <= t).collect()
    };
    if beyond.len() < k {
        return full();
    }
    if largest {
        keep_largest(&mut beyond, k);
    } else {
        keep_smallest(&mut beyond, k);
    }
    beyond
}

/// The tails of the percentile method, with bounded memory.
///
/// TPU-MLIR appends, per sample, the `k = res_length` smallest and `k`
/// largest values to a list `D` and in the end only uses the `R = k` smallest
/// and `R` largest of `D`. Keeping just those (`bottom`, `top`) is exactly
/// equivalent and needs `2R` values instead of `2RN`. `R` itself is
/// proportional to `N*size*(1-per/100)`, so this memory still grows with the
/// number of batches `N` (by definition of the method).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tails {
    pub(crate) k: usize,
    pub(crate) size: usize,
    pub(crate) top: Vec<f32>,
    pub(crate) bottom: Vec<f32>,
    /// `len(D)`, needed when `D` is shorter than `2R`.
    pub(crate) d_len: usize,
}

impl Tails {
    pub(crate) fn new(k: usize, size: usize) -> Self {
        Tails {
            k,
            size,
            top: Vec::new(),
            bottom: Vec::new(),
            d_len: 0,
        }
    }

    pub(crate) fn observe(&mut self, x: &[f32]) {
        let kk = self.k.min(x.len());
        let small = tail_of(x, kk, false);
        let large = tail_of(x, kk, true);
        self.d_len += 2 * kk;
        self.push(&small, &large);
    }

    fn push(&mut self, small: &[f32], large: &[f32]) {
        self.top.extend_from_slice(large);
        self.top.extend_from_slice(small);
        keep_largest(&mut self.top, self.k);
        self.bottom.extend_from_slice(small);
        self.bottom.extend_from_slice(large);
        keep_smallest(&mut self.bottom, self.k);
    }

    pub(crate) fn merge(&mut self, other: &Tails) {
        // `other`'s buffers hold its extremes; the multiset union of the two
        // D lists has the same R extremes as the union of the extremes, but
        // when D is short the buffers overlap, so rebuild from the exact D.
        let other_d = other.sorted_d_extremes();
        let mine = self.sorted_d_extremes();
        let mut all = mine;
        all.extend_from_slice(&other_d);
        let mut top = all.clone();
        keep_largest(&mut top, self.k);
        keep_smallest(&mut all, self.k);
        self.top = top;
        self.bottom = all;
        self.d_len += other.d_len;
    }

    /// A multiset holding exactly `D` when `len(D) <= 2R`, else the
    /// disjoint union of its `R` smallest and `R` largest values; sorted.
    pub(crate) fn sorted_d_extremes(&self) -> Vec<f32> {
        let mut bottom = self.bottom.clone();
        bottom.sort_by(total_cmp);
        let mut top = self.top.clone();
        top.sort_by(total_cmp);
        if self.d_len <= bottom.len() + top.len() {
            let rest = self.d_len.saturating_sub(bottom.len());
            let skip = top.len().saturating_sub(rest);
            bottom.extend_from_slice(&top[skip..]);
        } else {
            bottom.extend_from_slice(&top);
        }
        bottom
    }
}

/// Interpolated upper and lower percentile (spec §3.3.3) from sorted `d`:
/// `hi` = last `R` values ascending, `lo` = first `R` reversed,
/// `v = x[0] + ratio*(x[1]-x[0])` (just `x[0]` when `R == 1`).
pub(crate) fn interpolate_tails(d: &[f32], r: usize, ratio: f64) -> Option<(f64, f64)> {
    if d.is_empty() || r == 0 {
        return None;
    }
    let r = r.min(d.len());
    let hi = &d[d.len() - r..];
    let lo: Vec<f32> = d[..r].iter().rev().copied().collect();
    let interp = |x: &[f32]| {
        let x0 = f64::from(x[0]);
        if x.len() >= 2 {
            x0 + ratio * (f64::from(x[1]) - x0)
        } else {
            x0
        }
    };
    Some((interp(&lo), interp(hi)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_by_hand() {
        let s = PercentileSchedule::new(0, 10, 2);
        assert_eq!(s.percentile(), 99.99);
        // int(2*10000*1e-4 ) + 1 = 3 (1e-4 is not exact: 1.9999.. -> 1 + 1 = 2?)
        let expected = f64_trunc_usize(2.0 * 10000.0 * (1.0 - 99.99 / 100.0)).unwrap() + 1;
        assert_eq!(s.res_length(10000), expected);
    }

    #[test]
    fn tails_match_full_list() {
        let mut t = Tails::new(3, 5);
        let samples = [[5.0, 1.0, 3.0, 2.0, 4.0], [9.0, -1.0, 0.0, 7.0, 8.0]];
        for s in &samples {
            t.observe(s);
        }
        // D = [1,2,3, 3,4,5, -1,0,7, 7,8,9]; sorted extremes
        let d = t.sorted_d_extremes();
        assert_eq!(d, vec![-1.0, 0.0, 1.0, 7.0, 8.0, 9.0]);
    }

    /// The full-copy selection `tail_of` replaces (the reference).
    fn tail_reference(x: &[f32], k: usize, largest: bool) -> Vec<u32> {
        let mut v = x.to_vec();
        if largest {
            keep_largest(&mut v, k);
        } else {
            keep_smallest(&mut v, k);
        }
        v.sort_by(total_cmp);
        v.iter().map(|f| f.to_bits()).collect()
    }

    #[test]
    fn tail_of_is_the_full_selection() {
        // Values drawn from a few regimes: spread out, heavy ties (a handful
        // of distinct values), both zeros, NaNs with two payloads, a long
        // tail; sizes around the subsample size and k from 1 to above n/8.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut cases = 0;
        for &n in &[1usize, 7, 64, 1000, 4096, 5000, 20_000, 100_003] {
            for regime in 0..5 {
                let x: Vec<f32> = (0..n)
                    .map(|_| {
                        let r = next();
                        let u = f32::from(u16::try_from(r >> 48).unwrap()) / 65536.0;
                        match regime {
                            0 => u * 2.0 - 1.0,
                            1 => f32::from(u8::try_from(r >> 56).unwrap() % 5) - 2.0,
                            2 => match r % 4 {
                                0 => 0.0,
                                1 => -0.0,
                                _ => u - 0.5,
                            },
                            3 => match r % 50 {
                                0 => f32::NAN,
                                1 => f32::from_bits(0x7fc0_0001),
                                _ => u,
                            },
                            _ => (u * 20.0).exp() * if r % 2 == 0 { 1.0 } else { -1.0 },
                        }
                    })
                    .collect();
                for k in [1, 2, 3, n / 10_000 + 1, n / 100 + 1, n / 9 + 1, n / 4, n] {
                    let k = k.min(n);
                    for largest in [false, true] {
                        let mut got = tail_of(&x, k, largest);
                        got.sort_by(total_cmp);
                        let got: Vec<u32> = got.iter().map(|f| f.to_bits()).collect();
                        assert_eq!(
                            got,
                            tail_reference(&x, k, largest),
                            "n {n} regime {regime} k {k} largest {largest}"
                        );
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 8 * 5 * 8 * 2);
    }

    #[test]
    fn mse_all_zero_is_one() {
        assert_eq!(threshold_mse(&[0.0, 0.0], 8), 1.0);
    }
}
