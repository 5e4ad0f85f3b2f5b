//! TPU-MLIR's growing absolute-value histogram (spec §3.2.1,
//! `cali_math.py: CaliMathCpu.histogram, combine_histogram`).
//!
//! Precision: the Python code works on float32 arrays and float32 scalars
//! (`abs_value` is a NumPy float32). All range, width and index arithmetic is
//! done here in `f32`, which is what NumPy >= 2 (NEP 50) computes for those
//! operands. Counts are `u64` (the Python code uses int32, which would wrap
//! past 2^31 counts per bin).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::conv::{
    f32_index_i32, f32_trunc_usize, f64_f32, index_i32_usize, index_u32_usize, usize_f32, usize_f64,
};
use crate::simd::dispatch;

/// Above this many bins the growth rule gives up and restarts from the
/// current sample (spec §3.2.1).
pub const MAX_HISTOGRAM_BINS: usize = 8_000_000;

/// The warning TPU-MLIR issues when the histogram would exceed
/// [`MAX_HISTOGRAM_BINS`] (translated from the Chinese original).
pub const HISTOGRAM_RESET_WARNING: &str = "calibration images differ too much: the histogram would exceed 8,000,000 bins and was restarted from the current sample; if possible reorder or replace the calibration images";

/// Range and bin count of a histogram: enough to decide whether two
/// histograms share a layout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistogramLayout {
    /// `T`, the covered absolute range.
    pub range: f32,
    /// Number of bins.
    pub bins: usize,
    /// `width` as stored by TPU-MLIR (`T/(B-1)` of the histogram that set it).
    pub width: f32,
}

/// A histogram of `|x|` over `[0, range]`, grown as the running abs-max grows.
#[derive(Clone, Debug, PartialEq)]
pub struct GrowingHistogram {
    counts: Vec<u64>,
    range: f32,
    width: f32,
    /// Number of times the 8,000,000-bin reset discarded the old counts.
    resets: u32,
}

impl GrowingHistogram {
    /// First sample: `bins` bins over `[0, abs_max]`.
    pub fn first(x: &[f32], abs_max: f32, bins: usize) -> Self {
        let (counts, width) = bin_abs_values(x, abs_max, bins);
        GrowingHistogram {
            counts,
            range: abs_max,
            width,
            resets: 0,
        }
    }

    /// Adds one later sample, `running_abs_max` being the abs-max over all
    /// samples including this one. Returns a warning text when the histogram
    /// had to be restarted.
    pub fn add(&mut self, x: &[f32], running_abs_max: f32, initial_bins: usize) -> Option<String> {
        let t_new = running_abs_max;
        let t_old = self.range;
        if t_new <= t_old {
            let (h, _) = bin_abs_values(x, t_old, self.counts.len());
            for (c, v) in self.counts.iter_mut().zip(h) {
                *c += v;
            }
            return None;
        }
        match grown_layout(t_old, self.counts.len(), t_new) {
            Growth::Extend { bins, range } => {
                let (mut h, width) = bin_abs_values(x, range, bins);
                for (c, old) in h.iter_mut().zip(&self.counts) {
                    *c += *old;
                }
                self.counts = h;
                self.range = range;
                self.width = width;
                None
            }
            Growth::Reset => {
                let (h, width) = bin_abs_values(x, t_new, initial_bins);
                self.counts = h;
                self.range = t_new;
                self.width = width;
                self.resets += 1;
                Some(HISTOGRAM_RESET_WARNING.to_string())
            }
        }
    }

    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn range(&self) -> f32 {
        self.range
    }

    pub fn width(&self) -> f32 {
        self.width
    }

    pub fn layout(&self) -> HistogramLayout {
        HistogramLayout {
            range: self.range,
            bins: self.counts.len(),
            width: self.width,
        }
    }

    pub(crate) fn resets(&self) -> u32 {
        self.resets
    }

    /// An empty histogram with the same layout (used by `TensorStats::fork`).
    pub(crate) fn empty_like(&self) -> Self {
        GrowingHistogram {
            counts: vec![0; self.counts.len()],
            range: self.range,
            width: self.width,
            resets: self.resets,
        }
    }

    /// Exact merge of `later` (forked from a state whose layout is still
    /// `self`'s) into `self`: `later` only ever extended that layout, so the
    /// bins line up index by index, exactly as the sequential rule keeps old
    /// counts at their indices.
    pub(crate) fn merge_aligned(&self, later: &GrowingHistogram) -> GrowingHistogram {
        let mut counts = later.counts.clone();
        if later.resets == self.resets {
            for (c, v) in counts.iter_mut().zip(&self.counts) {
                *c += *v;
            }
        }
        // After a reset in `later`, the sequential pass would also have
        // discarded everything before it, `self`'s counts included.
        GrowingHistogram {
            counts,
            range: later.range,
            width: later.width,
            resets: later.resets,
        }
    }

    /// Approximate merge: `later`'s counts are re-binned by bin centre into the
    /// layout the growth rule gives for `later`'s abs-max. Each count may land
    /// up to about two bins away from where the sequential pass would put it.
    pub(crate) fn merge_rebinned(
        &self,
        later: &GrowingHistogram,
        later_abs_max: f32,
    ) -> (GrowingHistogram, Option<String>) {
        let (bins, range, width, keep_old, warning) = if later_abs_max <= self.range {
            (self.counts.len(), self.range, self.width, true, None)
        } else {
            match grown_layout(self.range, self.counts.len(), later_abs_max) {
                Growth::Extend { bins, range } => {
                    let width = range / usize_f32(bins - 1);
                    (bins, range, width, true, None)
                }
                Growth::Reset => (
                    later.counts.len(),
                    later.range,
                    later.width,
                    false,
                    Some(HISTOGRAM_RESET_WARNING.to_string()),
                ),
            }
        };
        let mut counts = vec![0u64; bins];
        if keep_old {
            for (c, v) in counts.iter_mut().zip(&self.counts) {
                *c += *v;
            }
        }
        let last = bins - 1;
        for (j, &v) in later.counts.iter().enumerate() {
            if v == 0 {
                continue;
            }
            let centre = usize_f64(j) * f64::from(later.width);
            let idx = (centre / f64::from(width) + 0.5).floor();
            let idx = crate::conv::f64_trunc_usize(idx).unwrap_or(0).min(last);
            counts[idx] += v;
        }
        let resets = self.resets.max(later.resets) + u32::from(!keep_old);
        (
            GrowingHistogram {
                counts,
                range,
                width,
                resets,
            },
            warning,
        )
    }
}

enum Growth {
    Extend { bins: usize, range: f32 },
    Reset,
}

/// The growth rule: `old_step = T_old/len` (not `/(len-1)`, as in the
/// Python code), `extra = int((T_new - T_old) // old_step + 1)`,
/// `T' = extra*old_step + T_old`.
fn grown_layout(t_old: f32, len: usize, t_new: f32) -> Growth {
    let old_step = t_old / usize_f32(len);
    let extra = f32_trunc_usize(floor_divide_f32(t_new - t_old, old_step) + 1.0);
    let Some(extra) = extra else {
        return Growth::Reset;
    };
    let bins = len + extra;
    if bins > MAX_HISTOGRAM_BINS {
        return Growth::Reset;
    }
    Growth::Extend {
        bins,
        range: usize_f32(extra) * old_step + t_old,
    }
}

/// NumPy's float floor division (`npy_divmodf`), which is not always
/// `floor(a/b)`.
pub(crate) fn floor_divide_f32(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return a / b;
    }
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut f = div.floor();
        if div - f > 0.5 {
            f += 1.0;
        }
        f
    } else {
        0.0f32.copysign(a / b)
    }
}

/// `CaliMathCpu.histogram`: drop zeros of `|x|`, index
/// `q = floor(t/width + 0.5)` with `width = T/(B-1)`, then
/// `numpy.histogram(q, bins=B, range=(0, B-1))`.
///
/// Fast form of [`bin_abs_values_reference`], equal to it count for count:
/// 1. `q` is computed exactly as the reference does (f32 division, f32
///    `+ 0.5`) in a vectorised, run-time dispatched loop. For `t > 0`,
///    `y = t/width + 0.5 >= 0.5`, so `floor(y)` is the truncation `trunc(y)`,
///    and NumPy keeps `q` iff `q <= B-1`, i.e. iff `y < B` (`B` and `B-1` are
///    exact in f32 for `B <= 2^24`). Dropped values (zero, NaN, `y >= B`,
///    also `inf` and NaN `y`) go to a sentinel index `B`.
/// 2. The integer `q` are counted (scalar; four interleaved count arrays so
///    runs of equal indices, e.g. the zeros of a ReLU, do not serialise on
///    one counter).
/// 3. Each distinct `q` is re-binned once with NumPy's float rule
///    ([`NumpyUniformBins::bin`] on the f32 value `q`), the same call the
///    reference makes per element.
pub(crate) fn bin_abs_values(x: &[f32], range: f32, bins: usize) -> (Vec<u64>, f32) {
    /// Elements per index buffer (16 KiB on the stack).
    const CHUNK: usize = 4096;
    /// Interleaved count arrays (runs of one index, e.g. the saturated
    /// values of a ReLU6, then chain only every `WAYS` elements).
    const WAYS: usize = 4;
    // The fast path's unchecked index conversion (`f32_index_i32`) relies on
    // `bins <= 2^24` and a width that is not negative (a kept `y` is then in
    // [0.5, bins)): anything else goes through the checked reference.
    if !(2..=(1 << 24)).contains(&bins)
        || u32::try_from(x.len()).is_err()
        || range.is_nan()
        || range < 0.0
    {
        return bin_abs_values_reference(x, range, bins);
    }
    let width = range / usize_f32(bins - 1);
    let bins_f = usize_f32(bins);
    let stride = bins + 1;
    let mut local = vec![0u32; WAYS * stride];
    let mut idx = [0i32; CHUNK];
    {
        let mut ways: [&mut [u32]; WAYS] = {
            let mut rest = local.as_mut_slice();
            std::array::from_fn(|_| {
                let (w, r) = std::mem::take(&mut rest).split_at_mut(stride);
                rest = r;
                w
            })
        };
        // Indices are at most `bins` (the sentinel); the `min` only lets the
        // compiler drop the bounds checks.
        let at = |q: i32| index_i32_usize(q).min(bins);
        for xs in x.chunks(CHUNK) {
            let kept = bin_indices(xs, width, bins_f, &mut idx[..xs.len()]);
            let mut groups = idx[..kept].chunks_exact(WAYS);
            for g in &mut groups {
                for (w, &q) in ways.iter_mut().zip(g) {
                    w[at(q)] += 1;
                }
            }
            for &q in groups.remainder() {
                ways[0][at(q)] += 1;
            }
        }
    }
    let mut counts = vec![0u64; bins];
    let map = numpy_bin_map(bins);
    for (q, &b) in map.iter().enumerate() {
        let c: u64 = (0..WAYS).map(|w| u64::from(local[w * stride + q])).sum();
        if c != 0 && b != NO_BIN {
            counts[index_u32_usize(b)] += c;
        }
    }
    (counts, width)
}

/// Step 1 of [`bin_abs_values`]: writes the indices `q` to count to the
/// front of `out` and returns how many there are. The AVX-512 form writes
/// only the kept values' indices; [`abs_bin_indices`] writes one per
/// element, dropped ones as the sentinel `bins_f`.
fn bin_indices(x: &[f32], width: f32, bins_f: f32, out: &mut [i32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if qtune_simd::has_avx512()
        && std::arch::is_x86_feature_detected!("popcnt")
        && bins_f <= avx512::MAX_BINS
    {
        // SAFETY: the CPU supports AVX-512 F and POPCNT (checked above).
        return unsafe { avx512::kept_bin_indices(x, width, bins_f, out) };
    }
    abs_bin_indices(x, width, bins_f, out);
    x.len()
}

/// The AVX-512 form of step 1, without a division per element: `q` is first
/// estimated as `trunc(fma(t, 1/width, 0.5))`, which is within
/// `bins * 2^-22` of the exact `t/width + 0.5` (four f32 roundings of
/// relative size at most `2^-24` of a value below `bins`). When every lane's
/// estimate lies more than twice that from an integer, the truncations
/// agree; otherwise the 16 values are recomputed with the division, as the
/// reference does. Kept indices are compressed to the front of the output,
/// so dropped values (zeros, the ReLU's many) cost no counting.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::index_u32_usize;
    use std::arch::x86_64::*;

    /// Bins up to which the estimate's margin (`bins * 2^-21`) stays small.
    pub(super) const MAX_BINS: f32 = 65_536.0;

    /// # Safety
    /// The CPU must support AVX-512 F and POPCNT; `out` is at least as long
    /// as `x`.
    #[target_feature(enable = "avx512f,popcnt")]
    pub(super) unsafe fn kept_bin_indices(
        x: &[f32],
        width: f32,
        bins_f: f32,
        out: &mut [i32],
    ) -> usize {
        assert!(out.len() >= x.len());
        let eps = bins_f * (1.0 / 2_097_152.0);
        let inv = _mm512_set1_ps(1.0 / width);
        let w = _mm512_set1_ps(width);
        let half = _mm512_set1_ps(0.5);
        let lo = _mm512_set1_ps(eps);
        let hi = _mm512_set1_ps(1.0 - eps);
        let b = _mm512_set1_ps(bins_f);
        let zero = _mm512_setzero_ps();
        let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
        let mut n = 0usize;
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            // SAFETY: `c` holds 16 f32.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            let t = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask));
            let mut y = _mm512_fmadd_ps(t, inv, half);
            let k = _mm512_cvttps_epi32(y);
            let f = _mm512_sub_ps(y, _mm512_cvtepi32_ps(k));
            let near =
                _mm512_cmp_ps_mask::<_CMP_LT_OQ>(f, lo) | _mm512_cmp_ps_mask::<_CMP_GT_OQ>(f, hi);
            let mut k = k;
            if near != 0 {
                y = _mm512_add_ps(_mm512_div_ps(t, w), half);
                k = _mm512_cvttps_epi32(y);
            }
            let keep =
                _mm512_cmp_ps_mask::<_CMP_GT_OQ>(t, zero) & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(y, b);
            // SAFETY: n + 16 <= x.len() <= out.len(): n counts kept lanes
            // of the chunks before this one.
            unsafe {
                _mm512_storeu_si512(
                    out.as_mut_ptr().add(n).cast(),
                    _mm512_maskz_compress_epi32(keep, k),
                );
            }
            n += index_u32_usize(keep.count_ones());
        }
        for &v in chunks.remainder() {
            let t = v.abs();
            let y = t / width + 0.5;
            if t > 0.0 && y < bins_f {
                // SAFETY: `y < bins_f <= 2^24` and `y >= 0.5` since `t > 0`
                // and the width is not negative (both checked by
                // `bin_abs_values`); neither comparison holds for NaN.
                out[n] = unsafe { super::f32_index_i32(y) };
                n += 1;
            }
        }
        n
    }
}

dispatch! {
    /// Step 1 of [`bin_abs_values`]: `out[i] = floor(|x[i]|/width + 0.5)`
    /// when `|x[i]| > 0` and the index is below `bins_f`, else `bins_f`.
    fn abs_bin_indices(x: &[f32], width: f32, bins_f: f32, out: &mut [i32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            let t = v.abs();
            let y = t / width + 0.5;
            let keep = (t > 0.0) & (y < bins_f);
            // SAFETY: a kept `y` is in [0.5, bins_f) (the width is not
            // negative and NaN fails both tests); `bins_f` is an integer in
            // [2, 2^24]; both checked by `bin_abs_values` before any binning.
            *o = unsafe { f32_index_i32(if keep { y } else { bins_f }) };
        }
    }
}

/// The element-by-element form of [`bin_abs_values`], as the Python code
/// reads; kept as the reference the fast form is tested against.
pub(crate) fn bin_abs_values_reference(x: &[f32], range: f32, bins: usize) -> (Vec<u64>, f32) {
    let mut counts = vec![0u64; bins];
    let bins_minus_1 = usize_f32(bins.saturating_sub(1));
    let width = range / bins_minus_1;
    let binner = NumpyUniformBins::new(bins);
    for &v in x {
        let t = v.abs();
        if t == 0.0 || t.is_nan() {
            continue;
        }
        let q = (t / width + 0.5).floor();
        if let Some(b) = binner.bin(q) {
            counts[b] += 1;
        }
    }
    (counts, width)
}

/// [`numpy_bin_map`] entry of an index NumPy drops.
const NO_BIN: u32 = u32::MAX;

/// `map[q]` = the NumPy bin of the integer index `q < bins`
/// ([`NumpyUniformBins::bin`]), computed once per bin count and shared.
fn numpy_bin_map(bins: usize) -> Arc<[u32]> {
    static MAPS: OnceLock<Mutex<HashMap<usize, Arc<[u32]>>>> = OnceLock::new();
    let maps = MAPS.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(m) = maps
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&bins)
    {
        return Arc::clone(m);
    }
    let binner = NumpyUniformBins::new(bins);
    let map: Arc<[u32]> = (0..bins)
        .map(|q| {
            binner
                .bin(usize_f32(q))
                .and_then(|b| u32::try_from(b).ok())
                .unwrap_or(NO_BIN)
        })
        .collect();
    let mut maps = maps.lock().unwrap_or_else(PoisonError::into_inner);
    // Grown histograms make many bin counts: keep the map small.
    if maps.len() > 256 {
        maps.clear();
    }
    maps.insert(bins, Arc::clone(&map));
    map
}

/// `numpy.histogram(a, bins=B, range=(0, B-1))` for float32 input, bin by
/// bin as NumPy does it: a float32 first guess
/// `(a - 0)/(B-1)*B`, then one correction step against the float32 edges
/// `linspace(0, B-1, B+1)` (computed in float64 and rounded).
struct NumpyUniformBins {
    bins: usize,
    last_edge: f32,
    step: f64,
}

impl NumpyUniformBins {
    fn new(bins: usize) -> Self {
        let last = usize_f64(bins.saturating_sub(1));
        NumpyUniformBins {
            bins,
            last_edge: f64_f32(last),
            step: last / usize_f64(bins),
        }
    }

    fn edge(&self, k: usize) -> f32 {
        if k >= self.bins {
            self.last_edge
        } else {
            f64_f32(usize_f64(k) * self.step)
        }
    }

    fn bin(&self, a: f32) -> Option<usize> {
        if !(a >= 0.0 && a <= self.last_edge) || self.bins == 0 {
            return None;
        }
        let guess = a / self.last_edge * usize_f32(self.bins);
        let mut idx = f32_trunc_usize(guess).unwrap_or(0);
        if idx >= self.bins {
            idx = self.bins - 1;
        }
        if a < self.edge(idx) {
            idx = idx.saturating_sub(1);
        }
        if idx != self.bins - 1 && a >= self.edge(idx + 1) {
            idx += 1;
        }
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_histogram_by_hand() {
        // T = 3, B = 4: width = 1, q = round-half-up(|x|), numpy bins over
        // [0, 3] with edges 0, .75, 1.5, 2.25, 3: q=0->0, 1->1, 2->2, 3->3.
        let x = [0.0, 0.4, -0.6, 1.2, 2.5, -3.0, 1.5];
        let (h, w) = bin_abs_values(&x, 3.0, 4);
        assert_eq!(w, 1.0);
        // |x| without zeros: .4->0, .6->1, 1.2->1, 2.5->3, 3->3, 1.5->2
        assert_eq!(h, vec![1, 2, 1, 2]);
    }

    #[test]
    #[allow(clippy::as_conversions)] // test data generation only
    fn fast_binning_equals_reference() {
        // splitmix64: deterministic, no dependency.
        let mut state = 7u64;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for &bins in &[2usize, 3, 7, 128, 2048, 2049, 5000, 65_537] {
            for &range in &[1.0f32, 6.0, 0.013, 3.7e5, 1e-30] {
                let mut x: Vec<f32> = (0..10_003)
                    .map(|i| {
                        let r = next();
                        match i % 9 {
                            0 => 0.0,
                            1 => -0.0,
                            // exact bin centres and half-way points
                            2 => range / usize_f32(bins - 1) * usize_f32((r % 64) as usize),
                            3 => range / usize_f32(bins - 1) * (usize_f32((r % 64) as usize) + 0.5),
                            4 => range,
                            // one ulp either side of half-way points, where
                            // an estimate without the division can be off
                            5 | 6 => {
                                let k = usize_f32((r % (bins as u64)) as usize);
                                let h = range / usize_f32(bins - 1) * (k + 0.5);
                                if i % 9 == 5 {
                                    h.next_up()
                                } else {
                                    h.next_down()
                                }
                            }
                            _ => {
                                let u = f64_f32((r >> 11) as f64 / (1u64 << 53) as f64);
                                if r & 1 == 0 { u * range } else { -u * range }
                            }
                        }
                    })
                    .collect();
                x.extend([f32::NAN, f32::INFINITY, -f32::INFINITY, range * 1.5]);
                assert_eq!(
                    bin_abs_values(&x, range, bins),
                    bin_abs_values_reference(&x, range, bins),
                    "bins {bins} range {range}"
                );
            }
        }
    }

    #[test]
    fn growth_rule_by_hand() {
        let mut h = GrowingHistogram::first(&[1.0, 2.0], 2.0, 4);
        // old_step = 0.5, extra = int((3.1-2)//0.5 + 1) = 3, B' = 7, T' = 3.5
        assert!(h.add(&[3.1], 3.1, 4).is_none());
        assert_eq!(h.counts().len(), 7);
        assert_eq!(h.range(), 3.5);
        assert_eq!(h.counts().iter().sum::<u64>(), 3);
    }

    #[test]
    fn floor_divide_matches_numpy_cases() {
        assert_eq!(floor_divide_f32(7.0, 2.0), 3.0);
        assert_eq!(floor_divide_f32(-7.0, 2.0), -4.0);
        assert_eq!(floor_divide_f32(1.0, 0.1), 9.0); // numpy: 1.0 // 0.1 == 9.0
    }
}
