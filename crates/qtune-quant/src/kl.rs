//! KLD threshold (spec §3.2.2): `ActivationCalibrator.find_threshold` and the
//! C function `kl_diversity_hist` of `lib/calibration_math.so`.
//!
//! For each candidate length \(i = m\cdot B\), \(m = 1, 2, \dots\):
//! \[ P_j = h_j/\text{count}\ (j < i-1),\quad P_{i-1} = \textstyle\sum_{j\ge i-1} h_j/\text{count} \]
//! \[ Q_j = [h_j \ne 0]\; s_g / n_g / \textstyle\sum_{j<i} h_j \]
//! with groups \(g\) of \(i/B\) consecutive bins, \(s_g\) their sum and
//! \(n_g\) their non-zero count (1 if none), and
//! \[ KL_m = \sum_{j<i} P_j (\log_{10}(P_j + 10^{-30}) - \log_{10}(Q_j + 10^{-30})). \]
//! The threshold is \(\text{width}\cdot(m^*+1)\cdot B\) for the first minimum.
//!
//! Precision: float32 throughout, the sum accumulated sequentially, as in
//! the C code. The logarithm is evaluated in f64 and rounded to f32 (the C
//! code calls `log10` on floats; this is within one ulp of `log10f` and
//! identical on every platform).

use crate::conv::{f64_f32, u64_f32, usize_f32};

/// Target bins for 8-bit quantization.
pub const KL_BINS_INT8: usize = 128;
/// Target bins for 4-bit quantization.
pub const KL_BINS_INT4: usize = 8;
/// Histograms longer than this are halved before the search.
pub const KL_MAX_BINS: usize = 64 * 2048;

/// The Python side: pad to a multiple of `dst_bins`, halve while longer than
/// 131072 bins (doubling the width), then run the C search. Returns the raw
/// threshold (before clipping to the abs-max). `dst_bins` must be 128 or 8.
pub fn kl_threshold(hist: &[u64], width: f32, dst_bins: usize) -> f32 {
    let mut h: Vec<u64> = hist.to_vec();
    let mut width = width;
    pad_to_multiple(&mut h, dst_bins);
    while h.len() > KL_MAX_BINS {
        h = h.chunks(2).map(|c| c.iter().sum()).collect();
        pad_to_multiple(&mut h, dst_bins);
        width *= 2.0;
    }
    kl_diversity_hist(&h, width, dst_bins)
}

fn pad_to_multiple(h: &mut Vec<u64>, m: usize) {
    let rem = h.len() % m;
    if rem != 0 {
        h.resize(h.len() + m - rem, 0);
    }
}

fn log10_f32(x: f32) -> f32 {
    f64_f32(f64::from(x).log10())
}

/// `kl_diversity_hist(hist, width, N=len, BINS)`. `hist.len()` must be a
/// multiple of `bins`.
pub fn kl_diversity_hist(hist: &[u64], width: f32, bins: usize) -> f32 {
    let n = hist.len();
    if bins == 0 || n < bins {
        return width * usize_f32(n);
    }
    let count: u64 = hist.iter().sum();
    let count_f = u64_f32(count);
    let eps = 1e-30f32;
    let mut best_m = 0usize;
    let mut best_kl = f32::INFINITY;
    let mut first = true;
    // P and log10(P) do not depend on the candidate except for the folded
    // last bin, so they are computed once.
    let p_all: Vec<f32> = hist.iter().map(|&h| u64_f32(h) / count_f).collect();
    let logq_zero = log10_f32(eps);
    let logp_all: Vec<f32> = p_all.iter().map(|&p| log10_f32(p + eps)).collect();
    let mut m = 0usize;
    let mut i = bins;
    while i <= n {
        let expand = i / bins;
        let tail: u64 = hist[i - 1..].iter().sum();
        let sum: u64 = hist[..i].iter().sum();
        let sum_f = u64_f32(sum);
        let mut kl = 0.0f32;
        for g in 0..bins {
            let group = &hist[g * expand..(g + 1) * expand];
            let s_g: u64 = group.iter().sum();
            let nz = group.iter().filter(|&&v| v != 0).count();
            let n_g = if nz == 0 { 1 } else { nz };
            let q_val = u64_f32(s_g) / usize_f32(n_g) / sum_f;
            let logq_nonzero = log10_f32(q_val + eps);
            for (k, &hv) in group.iter().enumerate() {
                let j = g * expand + k;
                let (p, logp) = if j == i - 1 {
                    let p = u64_f32(tail) / count_f;
                    (p, log10_f32(p + eps))
                } else {
                    (p_all[j], logp_all[j])
                };
                let logq = if hv != 0 { logq_nonzero } else { logq_zero };
                kl += p * (logp - logq);
            }
        }
        // `kl < best` keeps the first minimum; NaN never wins, as in C.
        if first || kl < best_kl {
            best_kl = kl;
            best_m = m;
            first = false;
        }
        m += 1;
        i += bins;
    }
    width * usize_f32((best_m + 1) * bins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_histogram_keeps_full_range() {
        // A flat histogram is represented exactly only by the full range.
        let hist = vec![10u64; 512];
        assert_eq!(kl_threshold(&hist, 0.5, 128), 0.5 * 512.0);
    }

    #[test]
    fn concentrated_histogram_picks_first_block() {
        // Everything in the first 128 bins: m* = 0.
        let mut hist = vec![0u64; 1024];
        for (j, h) in hist.iter_mut().enumerate().take(128) {
            *h = u64::try_from(j % 7 + 1).unwrap();
        }
        assert_eq!(kl_threshold(&hist, 1.0, 128), 128.0);
    }

    #[test]
    fn long_histograms_are_halved() {
        let mut hist = vec![1u64; 200_000];
        hist[199_999] = 5;
        // Halved once to 100,000 bins, padded to 100,096; width doubles.
        let th = kl_threshold(&hist, 1.0, 128);
        assert_eq!(th % 256.0, 0.0);
    }
}
