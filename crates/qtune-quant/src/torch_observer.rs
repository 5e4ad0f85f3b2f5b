//! PyTorch's `HistogramObserver` for `debug_cmd use_torch_observer_for_cali`
//! (spec §3.3.7), written from a reading of
//! `torch/ao/quantization/observer.py` (pytorch/pytorch at commit
//! 004ebd57ec20c456e63075fffac9e1852231b58e).
//!
//! Its histogram is *not* TPU-MLIR's: it covers `[min, max]` (signed
//! values), and when the range grows the old histogram is up-sampled by
//! `upsample_rate` onto a fine grid and summed back into the new bins
//! (`_adjust_min_max` + `_combine_histograms`). `calculate_qparams` runs the
//! greedy `_non_linear_param_search` (shrink the range from the end that
//! removes fewer quantiles, stop as soon as the L2 quantization-error
//! estimate `_compute_quantization_error` grows) and then affine qint8
//! parameters. TPU-MLIR turns them into `th = scale*max(128 + zp, 127 - zp)`.
//!
//! Precision follows torch's default float32 tensors: Python scalars that
//! meet a float32 tensor are rounded to float32 first. Two deviations, both
//! documented where they happen: reductions (`sum`, `cumsum`) accumulate in
//! f64 and round the result to f32; NaN elements are ignored like infinities.

use crate::conv::{f32_trunc_i64, f32_trunc_usize, f64_f32, i64_f32, usize_f32, usize_f64};
use crate::histogram::floor_divide_f32;

/// PyTorch's default `upsample_rate`.
pub const TORCH_UPSAMPLE_RATE: usize = 128;
const MAX_HISTOGRAM_SIZE: f64 = 1e9;

/// The observer state: a `bins`-bin histogram over `[min_val, max_val]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchHistogramObserver {
    bins: usize,
    upsample_rate: usize,
    histogram: Vec<f32>,
    min_val: f32,
    max_val: f32,
}

impl TorchHistogramObserver {
    pub fn new(bins: usize) -> Self {
        TorchHistogramObserver {
            bins,
            upsample_rate: TORCH_UPSAMPLE_RATE,
            histogram: vec![0.0; bins],
            min_val: f32::INFINITY,
            max_val: f32::NEG_INFINITY,
        }
    }

    pub fn is_initialized(&self) -> bool {
        !(self.min_val == f32::INFINITY && self.max_val == f32::NEG_INFINITY)
    }

    pub fn histogram(&self) -> &[f32] {
        &self.histogram
    }

    pub fn min_val(&self) -> f32 {
        self.min_val
    }

    pub fn max_val(&self) -> f32 {
        self.max_val
    }

    /// `HistogramObserver.forward`.
    pub fn observe(&mut self, x: &[f32]) {
        // torch drops +-inf with a warning; we drop NaN too (torch would
        // propagate it into min/max and break the observer).
        let x: Vec<f32> = x.iter().copied().filter(|v| v.is_finite()).collect();
        if x.is_empty() {
            return;
        }
        let mut x_min = f32::INFINITY;
        let mut x_max = f32::NEG_INFINITY;
        for &v in &x {
            x_min = x_min.min(v);
            x_max = x_max.max(v);
        }
        let same_values = self.min_val == self.max_val;
        let close_values = self.max_val - self.min_val < 1e-6;
        if !self.is_initialized() || same_values || close_values {
            self.reset_histogram(&x, x_min, x_max);
            return;
        }
        let combined_min = x_min.min(self.min_val);
        let combined_max = x_max.max(self.max_val);
        let (combined_min, combined_max, downsample_rate, start_idx) =
            self.adjust_min_max(combined_min, combined_max);
        let mut combined = histc(&x, self.bins, combined_min, combined_max);
        if combined_min == self.min_val && combined_max == self.max_val {
            for (c, h) in combined.iter_mut().zip(&self.histogram) {
                *c += *h;
            }
            self.histogram = combined;
            return;
        }
        let histogram_size = usize_f64(self.bins) * usize_f64(downsample_rate) * 4.0;
        if histogram_size > MAX_HISTOGRAM_SIZE {
            self.reset_histogram(&x, x_min, x_max);
            return;
        }
        self.histogram = self.combine_histograms(combined, downsample_rate, start_idx);
        self.min_val = combined_min;
        self.max_val = combined_max;
    }

    fn reset_histogram(&mut self, x: &[f32], min: f32, max: f32) {
        self.min_val = min;
        self.max_val = max;
        self.histogram = histc(x, self.bins, min, max);
    }

    /// `_adjust_min_max`: widen the combined range so that the old bins are
    /// an integer number (`downsample_rate`) of fine-grid cells of the new
    /// bins, the fine grid being the old bins split `upsample_rate` times.
    fn adjust_min_max(&self, combined_min: f32, combined_max: f32) -> (f32, f32, usize, i64) {
        let up = usize_f32(self.upsample_rate);
        let old_range = self.max_val - self.min_val;
        let ratio = (combined_max - combined_min) / old_range * up;
        let downsample_rate = f32_trunc_usize(ratio.ceil()).unwrap_or(self.upsample_rate);
        let scale = f64_f32(usize_f64(downsample_rate) / usize_f64(self.upsample_rate));
        let e = scale * old_range - (combined_max - combined_min);
        let start = (self.min_val - combined_min) / old_range * usize_f32(self.bins) * up;
        let start_idx = f32_trunc_i64(start.round_ties_even());
        (combined_min, combined_max + e, downsample_rate, start_idx)
    }

    /// `_combine_histograms(new_data_hist, self.histogram, ...)`: up-sample
    /// the old histogram (each bin repeated `upsample_rate` times), place it
    /// at `start_idx` on a grid of `bins*downsample_rate` cells, integrate,
    /// take every `downsample_rate`-th value, difference and divide by
    /// `upsample_rate`. The integral is evaluated in closed form instead of
    /// materialising the grid (up to 250M cells in torch); cells beyond the
    /// grid, which make torch raise a shape error, are dropped.
    fn combine_histograms(&self, mut orig: Vec<f32>, down: usize, start_idx: i64) -> Vec<f32> {
        let up = self.upsample_rate;
        let bins = self.bins;
        let mut prefix = Vec::with_capacity(bins + 1);
        let mut acc = 0.0f64;
        prefix.push(0.0);
        for &h in &self.histogram {
            acc += f64::from(h);
            prefix.push(acc);
        }
        let grid_len = i64::try_from(bins * down).unwrap_or(i64::MAX);
        let placed_end = (start_idx + i64::try_from(bins * up).unwrap_or(i64::MAX)).min(grid_len);
        // Cumulative count of the placed grid up to and including cell p.
        let cumulative = |p: i64| -> f64 {
            let upto = (p + 1).min(placed_end) - start_idx;
            if upto <= 0 {
                return 0.0;
            }
            let upto = usize::try_from(upto).unwrap_or(0);
            let full = upto / up;
            let rem = upto % up;
            let partial = if rem > 0 && full < bins {
                usize_f64(rem) * f64::from(self.histogram[full])
            } else {
                0.0
            };
            // Each old bin occupies `up` cells, each holding its count.
            usize_f64(up) * prefix[full.min(bins)] + partial
        };
        let down_i = i64::try_from(down).unwrap_or(1);
        let mut previous_f32 = 0.0f32;
        for (j, o) in orig.iter_mut().enumerate() {
            let p = i64::try_from(j + 1).unwrap_or(0) * down_i - 1;
            let integral = cumulative(p);
            // torch stores the shifted integral in a float32 tensor.
            let interpolated = (integral - f64::from(previous_f32)) / usize_f64(up);
            *o += f64_f32(interpolated);
            previous_f32 = f64_f32(integral);
        }
        orig
    }

    /// `_non_linear_param_search`: the range `[new_min, new_max]`.
    pub fn non_linear_param_search(&self) -> (f32, f32) {
        let bins = self.bins;
        let bin_width = (self.max_val - self.min_val) / usize_f32(bins);
        let total = f64::from(f64_f32(self.histogram.iter().map(|&h| f64::from(h)).sum()));
        let mut c_sum = Vec::with_capacity(bins);
        let mut acc = 0.0f64;
        for &h in &self.histogram {
            acc += f64::from(h);
            c_sum.push(f64_f32(acc));
        }
        let stepsize = 1e-5f64;
        let mut alpha = 0.0f64;
        let mut beta = 1.0f64;
        let mut start_bin = 0usize;
        let mut end_bin = bins - 1;
        let mut norm_min = f64::INFINITY;
        while alpha < beta {
            let next_alpha = alpha + stepsize;
            let next_beta = beta - stepsize;
            let lo_limit = f64_f32(next_alpha * total);
            let hi_limit = f64_f32(next_beta * total);
            let mut l = start_bin;
            let mut r = end_bin;
            while l < end_bin && c_sum[l] < lo_limit {
                l += 1;
            }
            while r > start_bin && c_sum[r] > hi_limit {
                r -= 1;
            }
            let mut next_start = start_bin;
            let mut next_end = end_bin;
            if (l - start_bin) > (end_bin - r) {
                next_start = l;
                alpha = next_alpha;
            } else {
                next_end = r;
                beta = next_beta;
            }
            if next_start == start_bin && next_end == end_bin {
                continue;
            }
            let norm = self.compute_quantization_error(next_start, next_end);
            if norm > norm_min {
                break;
            }
            norm_min = norm;
            start_bin = next_start;
            end_bin = next_end;
        }
        let new_min = self.min_val + bin_width * usize_f32(start_bin);
        let new_max = self.min_val + bin_width * usize_f32(end_bin + 1);
        (new_min, new_max)
    }

    /// `_compute_quantization_error`: the L2 error of quantizing the
    /// histogram, taken as piecewise-uniform, with 256 levels over
    /// `[start_bin, end_bin]`.
    fn compute_quantization_error(&self, next_start: usize, next_end: usize) -> f64 {
        let bins = self.bins;
        let dst_nbins = 256.0f64;
        let bin_width64 = (f64::from(self.max_val) - f64::from(self.min_val)) / usize_f64(bins);
        let dst_w64 = bin_width64 * usize_f64(next_end - next_start + 1) / dst_nbins;
        if dst_w64 == 0.0 {
            return 0.0;
        }
        let bin_width = f64_f32(bin_width64);
        let dst_w = f64_f32(dst_w64);
        let half = f64_f32(dst_w64 / 2.0);
        let neg_half = f64_f32(-dst_w64 / 2.0);
        let get_norm = |b: f32, e: f32, density: f32| density * ((e * e * e - b * b * b) / 3.0);
        let start = i64::try_from(next_start).unwrap_or(0);
        let mut total = 0.0f64;
        for (src, &h) in self.histogram.iter().enumerate() {
            let rel = i64::try_from(src).unwrap_or(0) - start;
            let src_begin = i64_f32(rel) * bin_width;
            let src_end = src_begin + bin_width;
            let dob = floor_divide_f32(src_begin, dst_w).clamp(0.0, 255.0);
            let dob_center = (dob + 0.5) * dst_w;
            let doe = floor_divide_f32(src_end, dst_w).clamp(0.0, 255.0);
            let density = h / bin_width;
            let mut norm = 0.0f32;
            norm += get_norm(src_begin - dob_center, half, density);
            norm += (doe - dob - 1.0) * get_norm(neg_half, half, density);
            let doe_center = doe * dst_w + half;
            norm += get_norm(neg_half, src_end - doe_center, density);
            total += f64::from(norm);
        }
        f64::from(f64_f32(total))
    }

    /// `calculate_qparams` for qint8 `per_tensor_affine`
    /// (quant range [-128, 127], `eps` = float32 epsilon):
    /// `(scale, zero_point)`.
    pub fn calculate_qparams(&self) -> (f32, i64) {
        if !self.is_initialized() {
            return (1.0, 0);
        }
        let (new_min, new_max) = self.non_linear_param_search();
        let min_neg = new_min.min(0.0);
        let max_pos = new_max.max(0.0);
        let scale = ((max_pos - min_neg) / 255.0).max(f32::EPSILON);
        let zp = -128 - f32_trunc_i64((min_neg / scale).round_ties_even());
        (scale, zp.clamp(-128, 127))
    }

    /// TPU-MLIR's threshold from the qparams:
    /// `th = scale*max(-(-128 - zp), 127 - zp)`, at least 1e-5.
    pub fn threshold(&self) -> f64 {
        let (scale, zp) = self.calculate_qparams();
        let levels = (128 + zp).max(127 - zp);
        let th = f64::from(scale * i64_f32(levels));
        th.max(1e-5)
    }
}

/// `torch.histc(x, bins, min, max)`: equal-width bins, values outside
/// `[min, max]` ignored, `max` itself in the last bin, an empty range widened
/// by 1 on each side. Index `(x - min)*bins/(max - min)` in float32.
pub(crate) fn histc(x: &[f32], bins: usize, min: f32, max: f32) -> Vec<f32> {
    let (mut lo, mut hi) = (min, max);
    if lo == hi {
        lo -= 1.0;
        hi += 1.0;
    }
    let mut h = vec![0.0f32; bins];
    let nb = usize_f32(bins);
    for &v in x {
        if !(v >= lo && v <= hi) {
            continue;
        }
        let pos = (v - lo) * nb / (hi - lo);
        let idx = f32_trunc_usize(pos).unwrap_or(0).min(bins - 1);
        h[idx] += 1.0;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_uniform_data_keeps_most_of_the_range() {
        let x: Vec<f32> = (0..4001).map(|i| usize_f32(i) / 1000.0 - 2.0).collect();
        let mut obs = TorchHistogramObserver::new(2048);
        obs.observe(&x);
        let th = obs.threshold();
        assert!(th > 1.5 && th <= 2.1, "th = {th}");
    }

    #[test]
    fn growing_range_conserves_counts() {
        let mut obs = TorchHistogramObserver::new(64);
        obs.observe(&[0.0, 0.5, 1.0]);
        obs.observe(&[-2.0, 3.0]);
        let total: f32 = obs.histogram().iter().sum();
        assert!((total - 5.0).abs() < 1e-4, "total = {total}");
        assert!(obs.min_val() <= -2.0 && obs.max_val() >= 3.0);
    }
}
