//! Per-tensor statistics (spec §3.1) and the thresholds derived from them
//! (spec §3.2.2, §3.3).

use crate::conv::usize_f64;
use crate::error::QuantError;
use crate::exact_sum::ExactSum;
use crate::histogram::{GrowingHistogram, HistogramLayout};
use crate::kl::{KL_BINS_INT4, KL_BINS_INT8, kl_threshold};
use crate::methods::{
    PercentileSchedule, Tails, interpolate_tails, numpy_cmp, threshold_aciq_gauss,
    threshold_aciq_laplace, threshold_mse,
};
use crate::simd::dispatch;
use crate::torch_observer::TorchHistogramObserver;

/// Threshold methods (`--cali_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CalibrationMethod {
    Kl,
    Max,
    Mse,
    Percentile9999,
    AciqGauss,
    AciqLaplace,
}

impl CalibrationMethod {
    pub const ALL: [CalibrationMethod; 6] = [
        CalibrationMethod::Kl,
        CalibrationMethod::Max,
        CalibrationMethod::Mse,
        CalibrationMethod::Percentile9999,
        CalibrationMethod::AciqGauss,
        CalibrationMethod::AciqLaplace,
    ];

    /// The TPU-MLIR spelling, as written in the table header.
    pub fn name(self) -> &'static str {
        match self {
            CalibrationMethod::Kl => "kl",
            CalibrationMethod::Max => "max",
            CalibrationMethod::Mse => "mse",
            CalibrationMethod::Percentile9999 => "percentile9999",
            CalibrationMethod::AciqGauss => "aciq_gauss",
            CalibrationMethod::AciqLaplace => "aciq_laplace",
        }
    }

    /// Parses a method name as `run_calibration` does: lowercased, `use_X`
    /// normalised to `X`. `None` for unknown names.
    pub fn parse(name: &str) -> Option<Self> {
        let lower = name.trim().to_lowercase();
        let base = lower.strip_prefix("use_").unwrap_or(&lower);
        CalibrationMethod::ALL
            .into_iter()
            .find(|m| m.name() == base)
    }
}

impl std::fmt::Display for CalibrationMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to collect. Statistics no requested method needs are skipped.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct StatsConfig {
    /// `--histogram_bin_num` (2048): initial bins of the KLD histogram and
    /// `bins` of the torch observer.
    pub histogram_bin_num: usize,
    /// Methods whose statistics are collected.
    pub methods: Vec<CalibrationMethod>,
    /// Collect percentile tails even without `percentile9999`: TPU-MLIR does
    /// this for the last five tensors (special cases, §3.3.5).
    pub collect_tails: bool,
    /// Also compute the 4-bit variants (`debug_cmd int4`).
    pub int4: bool,
    /// Feed a PyTorch `HistogramObserver` (`debug_cmd use_torch_observer_for_cali`).
    pub torch_observer: bool,
    /// Also keep the mean over samples of each sample's min and max
    /// ([`Thresholds::mean_range`]; NNCF's activation range estimator).
    pub mean_range: bool,
}

impl Default for StatsConfig {
    fn default() -> Self {
        StatsConfig {
            histogram_bin_num: 2048,
            methods: vec![CalibrationMethod::Kl],
            collect_tails: false,
            int4: false,
            torch_observer: false,
            mean_range: false,
        }
    }
}

impl StatsConfig {
    pub fn with_methods(methods: &[CalibrationMethod]) -> Self {
        StatsConfig {
            methods: methods.to_vec(),
            ..StatsConfig::default()
        }
    }

    fn wants(&self, m: CalibrationMethod) -> bool {
        self.methods.contains(&m)
    }

    fn wants_tails(&self) -> bool {
        self.collect_tails || self.wants(CalibrationMethod::Percentile9999)
    }
}

/// Per-sample estimates kept as exact sums (8 and 4 bits).
#[derive(Clone, Debug, Default, PartialEq)]
struct SampleMeans {
    mse: [ExactSum; 2],
    aciq_gauss: [ExactSum; 2],
    aciq_laplace: [ExactSum; 2],
    /// Each sample's min and max (samples with a non-NaN element).
    min: ExactSum,
    max: ExactSum,
}

/// Min and max of one sample's non-NaN elements (`+inf`/`-inf` when there
/// are none) and which special values occur, from one vectorised pass
/// ([`TensorStats::observe`] takes it first).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleSummary {
    len: usize,
    min: f32,
    max: f32,
    has_nan: bool,
    pos_zero: bool,
    neg_zero: bool,
}

impl SampleSummary {
    pub fn of(x: &[f32]) -> SampleSummary {
        let mut s = SampleSummary {
            len: x.len(),
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            has_nan: false,
            pos_zero: false,
            neg_zero: false,
        };
        summarize(x, &mut s);
        s
    }

    /// The largest `|v|` over the non-NaN elements (0 when there are none).
    pub fn abs_max(&self) -> f32 {
        if self.min <= self.max {
            self.min.abs().max(self.max.abs())
        } else {
            0.0
        }
    }
}

dispatch! {
    /// [`SampleSummary::of`]: 16 independent lanes (selects, not
    /// `f32::min`, so the loop vectorises), combined at the end. Min and max
    /// are exact; among equal values only the sign of a zero can differ
    /// from a sequential fold, which the caller handles.
    fn summarize(x: &[f32], out: &mut SampleSummary) {
        const L: usize = 16;
        let mut mn = [f32::INFINITY; L];
        let mut mx = [f32::NEG_INFINITY; L];
        let mut nan = [0u32; L];
        let mut pz = [0u32; L];
        let mut nz = [0u32; L];
        let mut chunks = x.chunks_exact(L);
        for c in &mut chunks {
            for i in 0..L {
                let v = c[i];
                mn[i] = if v < mn[i] { v } else { mn[i] };
                mx[i] = if v > mx[i] { v } else { mx[i] };
                nan[i] |= u32::from(v.is_nan());
                pz[i] |= u32::from(v.to_bits() == 0);
                nz[i] |= u32::from(v.to_bits() == 0x8000_0000);
            }
        }
        let mut acc = (f32::INFINITY, f32::NEG_INFINITY, 0u32, 0u32, 0u32);
        let mut take = |v_mn: f32, v_mx: f32, n: u32, p: u32, z: u32| {
            acc.0 = if v_mn < acc.0 { v_mn } else { acc.0 };
            acc.1 = if v_mx > acc.1 { v_mx } else { acc.1 };
            acc.2 |= n;
            acc.3 |= p;
            acc.4 |= z;
        };
        for i in 0..L {
            take(mn[i], mx[i], nan[i], pz[i], nz[i]);
        }
        for &v in chunks.remainder() {
            take(
                v,
                v,
                u32::from(v.is_nan()),
                u32::from(v.to_bits() == 0),
                u32::from(v.to_bits() == 0x8000_0000),
            );
        }
        *out = SampleSummary {
            len: x.len(),
            min: acc.0,
            max: acc.1,
            has_nan: acc.2 != 0,
            pos_zero: acc.3 != 0,
            neg_zero: acc.4 != 0,
        };
    }
}

/// Statistics of one tensor, fed one sample (batch) at a time.
///
/// Memory does not grow with the number of samples, except for the
/// percentile tails: they hold `2R` values with
/// `R = int(N*size*(1 - per/100)) + 1`, proportional to the number of
/// batches `N` by definition of the method.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorStats {
    name: String,
    config: StatsConfig,
    schedule: PercentileSchedule,
    samples: usize,
    min: f32,
    max: f32,
    abs_max: f32,
    histogram: Option<GrowingHistogram>,
    /// The histogram layout this state was forked from (see [`TensorStats::fork`]).
    fork_origin: Option<(HistogramLayout, u32)>,
    histogram_exact: bool,
    histogram_warnings: Vec<String>,
    tails: Option<Tails>,
    means: SampleMeans,
    torch: Option<TorchHistogramObserver>,
}

impl TensorStats {
    /// `schedule` gives the tensor's op index, the op count and the total
    /// number of batches N, needed by the percentile tails.
    pub fn new(
        name: impl Into<String>,
        config: &StatsConfig,
        schedule: PercentileSchedule,
    ) -> Result<Self, QuantError> {
        if config.histogram_bin_num < 2 {
            return Err(QuantError::InvalidConfig(format!(
                "histogram_bin_num must be at least 2, got {}",
                config.histogram_bin_num
            )));
        }
        if schedule.batch_count == 0 {
            return Err(QuantError::InvalidConfig(
                "the number of calibration batches must be at least 1".to_string(),
            ));
        }
        Ok(TensorStats {
            name: name.into(),
            config: config.clone(),
            schedule,
            samples: 0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            abs_max: 0.0,
            histogram: None,
            fork_origin: None,
            histogram_exact: true,
            histogram_warnings: Vec::new(),
            tails: None,
            means: SampleMeans::default(),
            torch: config
                .torch_observer
                .then(|| TorchHistogramObserver::new(config.histogram_bin_num)),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Global min (NaN elements ignored); `+inf` before any sample.
    pub fn min(&self) -> f32 {
        self.min
    }

    pub fn max(&self) -> f32 {
        self.max
    }

    /// Running `max(|min|, |max|)`.
    pub fn abs_max(&self) -> f32 {
        self.abs_max
    }

    pub fn histogram(&self) -> Option<&GrowingHistogram> {
        self.histogram.as_ref()
    }

    /// False once an approximate histogram merge happened.
    pub fn histogram_is_exact(&self) -> bool {
        self.histogram_exact
    }

    /// Observes one sample (the flattened tensor of one batch).
    pub fn observe(&mut self, x: &[f32]) -> Result<(), QuantError> {
        let summary = SampleSummary::of(x);
        if x.is_empty() {
            return Err(QuantError::EmptySample {
                tensor: self.name.clone(),
            });
        }
        if self.config.wants_tails() {
            let k = self.schedule.res_length(x.len());
            let tails = self.tails.get_or_insert_with(|| Tails::new(k, x.len()));
            if tails.size != x.len() {
                return Err(QuantError::SampleSizeChanged {
                    tensor: self.name.clone(),
                    expected: tails.size,
                    actual: x.len(),
                });
            }
            tails.observe(x);
        }
        self.samples += 1;
        // f32::min/max ignore NaN. Folding the sample's min into the running
        // one equals folding its elements one by one, except for which zero
        // wins a tie between +0 and -0: when the sample has both and its min
        // (max) is zero, fold element by element as before.
        let zero_tie = summary.pos_zero && summary.neg_zero;
        if zero_tie && summary.min == 0.0 {
            self.min = x.iter().fold(self.min, |m, &v| m.min(v));
        } else {
            self.min = self.min.min(summary.min);
        }
        if zero_tie && summary.max == 0.0 {
            self.max = x.iter().fold(self.max, |m, &v| m.max(v));
        } else {
            self.max = self.max.max(summary.max);
        }
        self.abs_max = self.min.abs().max(self.max.abs());
        if self.config.mean_range && summary.min <= summary.max {
            self.means.min.add(f64::from(summary.min));
            self.means.max.add(f64::from(summary.max));
        }
        let bits: &[(usize, u32)] = if self.config.int4 {
            &[(0, 8), (1, 4)]
        } else {
            &[(0, 8)]
        };
        for &(slot, b) in bits {
            if self.config.wants(CalibrationMethod::Mse) {
                self.means.mse[slot].add(threshold_mse(x, b));
            }
            if self.config.wants(CalibrationMethod::AciqGauss) {
                self.means.aciq_gauss[slot].add(threshold_aciq_gauss(x, b));
            }
            if self.config.wants(CalibrationMethod::AciqLaplace) {
                self.means.aciq_laplace[slot].add(threshold_aciq_laplace(x, b));
            }
        }
        if self.config.wants(CalibrationMethod::Kl) {
            // max |v| over the non-NaN elements (0 when there are none).
            let sample_abs = summary.abs_max();
            let all_zero = sample_abs < 1e-8 && !summary.has_nan;
            if !all_zero {
                let bins = self.config.histogram_bin_num;
                match &mut self.histogram {
                    None => {
                        self.histogram = Some(GrowingHistogram::first(x, self.abs_max, bins));
                    }
                    Some(h) => {
                        if let Some(w) = h.add(x, self.abs_max, bins) {
                            self.histogram_warnings.push(w);
                        }
                    }
                }
            }
        }
        if let Some(t) = &mut self.torch {
            t.observe(x);
        }
        Ok(())
    }

    /// An empty state that continues this one: same running min/max/abs-max
    /// and the same histogram layout with zero counts.
    ///
    /// Parallel calibration: process a first chunk into `s`, then
    /// `a = s; b = s.fork()`, feed the rest split between `a` (earlier
    /// samples) and `b` (later samples). `TensorStats::merge(a, b)` then
    /// equals the sequential pass exactly as long as `a`'s histogram layout
    /// did not grow after the fork (its samples stayed within `s`'s range).
    pub fn fork(&self) -> TensorStats {
        TensorStats {
            name: self.name.clone(),
            config: self.config.clone(),
            schedule: self.schedule,
            samples: 0,
            min: self.min,
            max: self.max,
            abs_max: self.abs_max,
            histogram: self.histogram.as_ref().map(GrowingHistogram::empty_like),
            fork_origin: self.histogram.as_ref().map(|h| (h.layout(), h.resets())),
            histogram_exact: self.histogram_exact,
            histogram_warnings: Vec::new(),
            tails: self.tails.as_ref().map(|t| Tails::new(t.k, t.size)),
            means: SampleMeans::default(),
            torch: self
                .config
                .torch_observer
                .then(|| TorchHistogramObserver::new(self.config.histogram_bin_num)),
        }
    }

    /// Merges the statistics of two consecutive parts of the samples,
    /// `earlier` before `later`.
    ///
    /// Exact (equal to one sequential pass, bit for bit): min, max, abs-max,
    /// sample count, the mse and ACIQ means (kept as exact sums), the
    /// percentile tails.
    ///
    /// The histogram depends on sample order (its range grows), and the
    /// individual values of `later` are gone. It is exact when
    /// - either side has no histogram (all its samples were all-zero), or
    /// - `later` was made by [`TensorStats::fork`] from a state whose
    ///   histogram layout `earlier` still has (`earlier` did not grow its
    ///   range after the fork point).
    ///
    /// Otherwise `later`'s counts are re-binned by bin centre into the
    /// layout the growth rule gives for `later`'s abs-max: the total count
    /// and the covered range are right, each count may sit up to about two
    /// bins from its sequential position, and [`Self::histogram_is_exact`]
    /// becomes false.
    ///
    /// The torch observer cannot be merged (PyTorch's histogram combination
    /// is order dependent and lossy): an error if both sides observed data.
    pub fn merge(earlier: TensorStats, later: TensorStats) -> Result<TensorStats, QuantError> {
        if earlier.config != later.config || earlier.schedule != later.schedule {
            return Err(QuantError::Merge {
                tensor: earlier.name.clone(),
                reason: "the two parts were collected with different settings".to_string(),
            });
        }
        let mut out = earlier;
        let later_initialized_torch = later.torch.as_ref().is_some_and(|t| t.is_initialized());
        if later_initialized_torch {
            if out.torch.as_ref().is_some_and(|t| t.is_initialized()) {
                return Err(QuantError::Merge {
                    tensor: out.name.clone(),
                    reason: "the torch HistogramObserver state cannot be merged".to_string(),
                });
            }
            out.torch = later.torch.clone();
        }
        out.tails = match (out.tails.take(), later.tails) {
            (Some(mut a), Some(b)) => {
                if a.size != b.size {
                    return Err(QuantError::SampleSizeChanged {
                        tensor: out.name.clone(),
                        expected: a.size,
                        actual: b.size,
                    });
                }
                a.merge(&b);
                Some(a)
            }
            (a, b) => a.or(b),
        };
        out.samples += later.samples;
        out.min = out.min.min(later.min);
        out.max = out.max.max(later.max);
        out.abs_max = out.abs_max.max(later.abs_max);
        for i in 0..2 {
            out.means.mse[i].merge(&later.means.mse[i]);
            out.means.aciq_gauss[i].merge(&later.means.aciq_gauss[i]);
            out.means.aciq_laplace[i].merge(&later.means.aciq_laplace[i]);
        }
        out.means.min.merge(&later.means.min);
        out.means.max.merge(&later.means.max);
        out.histogram_warnings.extend(later.histogram_warnings);
        out.histogram_exact &= later.histogram_exact;
        out.histogram = match (out.histogram.take(), later.histogram) {
            (None, b) => b,
            (a, None) => a,
            (Some(a), Some(b)) => {
                let aligned = later
                    .fork_origin
                    .is_some_and(|(layout, resets)| layout == a.layout() && resets == a.resets());
                if aligned {
                    Some(a.merge_aligned(&b))
                } else {
                    let (h, warning) = a.merge_rebinned(&b, later.abs_max);
                    out.histogram_warnings.extend(warning);
                    out.histogram_exact = false;
                    Some(h)
                }
            }
        };
        Ok(out)
    }

    /// All thresholds of the configured methods (spec §3.3).
    pub fn thresholds(&self) -> Result<Thresholds, QuantError> {
        if self.samples == 0 {
            return Err(QuantError::NoSamples {
                tensor: self.name.clone(),
            });
        }
        let mut warnings = self.histogram_warnings.clone();
        let mut min = f64::from(self.min);
        let mut max = f64::from(self.max);
        let mut abs_max = f64::from(self.abs_max);
        // §3.3.6 near-zero tensors.
        if abs_max <= 1e-5 {
            min = if min < 0.0 { -1e-5 } else { 0.0 };
            max = 1e-5;
            abs_max = 1e-5;
            warnings.push(format!(
                "WARNING: layer {} is all zeros (abs-max <= 1e-5); its range is set to 1e-5",
                self.name
            ));
        }
        let clip = |v: f64| if v > abs_max { abs_max } else { v };
        let mean = |s: &ExactSum| s.sum() / usize_f64(s.count());
        let wants = |m| self.config.wants(m);
        let int4 = self.config.int4;

        let mut t = Thresholds {
            min,
            max,
            abs_max,
            ..Thresholds::default()
        };
        if self.config.mean_range && abs_max > 1e-5 && self.means.min.count() > 0 {
            t.mean_range = Some((mean(&self.means.min), mean(&self.means.max)));
        }
        if wants(CalibrationMethod::Max) {
            t.max_method = Some(abs_max);
        }
        if wants(CalibrationMethod::Kl) {
            match &self.histogram {
                Some(h) => {
                    let kl = |bins| clip(f64::from(kl_threshold(h.counts(), h.width(), bins)));
                    t.kl = Some(kl(KL_BINS_INT8));
                    if int4 {
                        t.kl_int4 = Some(kl(KL_BINS_INT4));
                    }
                }
                None => {
                    warnings.push(format!(
                        "WARNING: layer {} has no histogram (all samples are zero); kl threshold set to 1.0",
                        self.name
                    ));
                    t.kl = Some(1.0);
                    if int4 {
                        t.kl_int4 = Some(1.0);
                    }
                }
            }
        }
        if wants(CalibrationMethod::Mse) {
            t.mse = Some(clip(mean(&self.means.mse[0])));
            if int4 {
                t.mse_int4 = Some(clip(mean(&self.means.mse[1])));
            }
        }
        if wants(CalibrationMethod::AciqGauss) {
            t.aciq_gauss = Some(clip(mean(&self.means.aciq_gauss[0])));
            if int4 {
                t.aciq_gauss_int4 = Some(clip(mean(&self.means.aciq_gauss[1])));
            }
        }
        if wants(CalibrationMethod::AciqLaplace) {
            t.aciq_laplace = Some(clip(mean(&self.means.aciq_laplace[0])));
            if int4 {
                t.aciq_laplace_int4 = Some(clip(mean(&self.means.aciq_laplace[1])));
            }
        }
        if let Some(tails) = &self.tails {
            let d = tails.sorted_d_extremes();
            let ratio = self.schedule.ratio(tails.size);
            if wants(CalibrationMethod::Percentile9999)
                && let Some((v_min, v_max)) = interpolate_tails(&d, tails.k, ratio)
            {
                let p99 = v_max.abs().max(v_min.abs());
                // canonicalize(): clamp into the observed range.
                t.percentile = Some(PercentileThreshold {
                    threshold: clip(p99),
                    v_min: v_min.max(min),
                    v_max: v_max.min(max),
                });
            }
            let mut abs_d: Vec<f32> = d.iter().map(|v| v.abs()).collect();
            abs_d.sort_by(numpy_cmp);
            t.abs_percentile = interpolate_tails(&abs_d, tails.k, ratio).map(|(_, hi)| hi);
        }
        if let Some(obs) = &self.torch
            && obs.is_initialized()
        {
            t.torch_observer = Some(obs.threshold());
        }
        // Final rule: a threshold <= 1e-5 or NaN becomes 1e-5.
        for method in CalibrationMethod::ALL {
            for slot in t.slots_mut(method) {
                if let Some(v) = slot
                    && (v.is_nan() || *v <= 1e-5)
                {
                    *v = 1e-5;
                    warnings.push(zero_threshold_warning(&self.name));
                }
            }
        }
        if let Some(p) = &mut t.percentile
            && (p.threshold.is_nan() || p.threshold <= 1e-5)
        {
            p.threshold = 1e-5;
            warnings.push(zero_threshold_warning(&self.name));
        }
        warnings.dedup();
        t.warnings = warnings;
        Ok(t)
    }
}

/// The warning TPU-MLIR prints when a threshold is forced to 1e-5.
pub fn zero_threshold_warning(name: &str) -> String {
    format!("WARNING: layer {name} threshold is zero. Please check the input data correctness.")
}

/// Percentile threshold with the interpolated range written to the table.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PercentileThreshold {
    pub threshold: f64,
    pub v_min: f64,
    pub v_max: f64,
}

/// Thresholds of one tensor. `None` for methods that were not configured.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Thresholds {
    /// Global min and max after the near-zero rule.
    pub min: f64,
    pub max: f64,
    pub abs_max: f64,
    pub kl: Option<f64>,
    pub kl_int4: Option<f64>,
    pub max_method: Option<f64>,
    pub mse: Option<f64>,
    pub mse_int4: Option<f64>,
    pub percentile: Option<PercentileThreshold>,
    pub aciq_gauss: Option<f64>,
    pub aciq_gauss_int4: Option<f64>,
    pub aciq_laplace: Option<f64>,
    pub aciq_laplace_int4: Option<f64>,
    /// Upper interpolated percentile of `|D|` (`pct[t]` of §3.3.5), when
    /// tails were collected.
    pub abs_percentile: Option<f64>,
    /// PyTorch HistogramObserver threshold (stored by TPU-MLIR in the kl slot).
    pub torch_observer: Option<f64>,
    /// The means over samples of each sample's min and max, when
    /// [`StatsConfig::mean_range`] asked for them (and the tensor is not
    /// near zero): they replace the min/max columns of every method's row.
    pub mean_range: Option<(f64, f64)>,
    /// Warnings, in the order TPU-MLIR would print them.
    pub warnings: Vec<String>,
}

impl Thresholds {
    /// The 8-bit threshold of `method`.
    pub fn get(&self, method: CalibrationMethod) -> Option<f64> {
        match method {
            CalibrationMethod::Kl => self.kl,
            CalibrationMethod::Max => self.max_method,
            CalibrationMethod::Mse => self.mse,
            CalibrationMethod::Percentile9999 => self.percentile.map(|p| p.threshold),
            CalibrationMethod::AciqGauss => self.aciq_gauss,
            CalibrationMethod::AciqLaplace => self.aciq_laplace,
        }
    }

    /// The 4-bit threshold of `method` (`debug_cmd int4`).
    pub fn get_int4(&self, method: CalibrationMethod) -> Option<f64> {
        match method {
            CalibrationMethod::Kl => self.kl_int4,
            CalibrationMethod::Max => self.max_method,
            CalibrationMethod::Mse => self.mse_int4,
            CalibrationMethod::Percentile9999 => self.percentile.map(|p| p.threshold),
            CalibrationMethod::AciqGauss => self.aciq_gauss_int4,
            CalibrationMethod::AciqLaplace => self.aciq_laplace_int4,
        }
    }

    /// `(threshold, min, max)` as written to the calibration table: the
    /// percentile method writes its interpolated range, the others the
    /// observed one; [`Self::mean_range`] replaces either.
    pub fn table_row(&self, method: CalibrationMethod) -> Option<(f64, f64, f64)> {
        let row = match method {
            CalibrationMethod::Percentile9999 => {
                self.percentile.map(|p| (p.threshold, p.v_min, p.v_max))
            }
            m => self.get(m).map(|th| (th, self.min, self.max)),
        };
        match (row, self.mean_range) {
            (Some((th, _, _)), Some((lo, hi))) => Some((th, lo, hi)),
            (row, _) => row,
        }
    }

    /// The min and max columns of a row whose threshold comes from
    /// elsewhere (the torch observer's): [`Self::mean_range`] when it was
    /// asked for, else the observed range.
    pub fn range(&self) -> (f64, f64) {
        self.mean_range.unwrap_or((self.min, self.max))
    }

    fn slots_mut(&mut self, method: CalibrationMethod) -> Vec<&mut Option<f64>> {
        match method {
            CalibrationMethod::Kl => vec![&mut self.kl, &mut self.kl_int4],
            CalibrationMethod::Max => vec![&mut self.max_method],
            CalibrationMethod::Mse => vec![&mut self.mse, &mut self.mse_int4],
            CalibrationMethod::Percentile9999 => Vec::new(),
            CalibrationMethod::AciqGauss => vec![&mut self.aciq_gauss, &mut self.aciq_gauss_int4],
            CalibrationMethod::AciqLaplace => {
                vec![&mut self.aciq_laplace, &mut self.aciq_laplace_int4]
            }
        }
    }
}
