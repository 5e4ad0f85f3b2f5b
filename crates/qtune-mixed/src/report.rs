//! What a report shows (issue 17), measured on the model the run deployed
//! or searched: every layer's precision and threshold, its similarity to
//! the float model (cumulative and isolated), |x| histograms with each
//! method's threshold, and per-output-channel weight ranges. The data types
//! are `qtune_report`'s; this module only gathers.
//!
//! # Cumulative and isolated similarity
//!
//! Both compare a layer's output, in the form the deployed model hands it on
//! (an int8 tensor read back through its scale, an F16 tensor rounded), with
//! the float model's tensor of the same name, on the same samples.
//!
//! * Cumulative: one run of the quantized model as deployed.
//! * Isolated: one more run of the same model, with a value hook that, as
//!   soon as a layer's output is produced, records it and replaces it with
//!   the float model's tensor (quantized to the layer's int8 type where the
//!   deployed model stores it as int8). Every layer thus computes from the
//!   float model's inputs: only that layer's own quantization (its inputs'
//!   quantization, its weights, its arithmetic, its output rounding) shows.
//!   One run measures every layer, instead of one model per layer.
//!
//! A layer's output in the simulation graph is the first of `<t>_raw`,
//! `<t>`, `<t>_QuantizeLinear` that the run produces (see
//! `qtune_deploy::build_qdq`'s naming). The graph is TPU-MLIR's canonical
//! Top graph: a Relu its producer alone reads is fused into it
//! (`Node::relu`, named after the Relu), so a layer's output is already
//! after its activation, as TPU-MLIR compares it.

use std::collections::HashMap;

use qtune_deploy::{FloatReason, Plan, PlanRequest, Processor, Range, WeightScheme};
use qtune_exec::{
    ExecError, Executor, Keep, NoHook, PrepareOptions, RunOptions, ValueHook, Values,
};
use qtune_ir::{Graph, Op, ValueId};
use qtune_kernels::{Parallelism, QRange};
use qtune_quant::{
    CalibrationMethod, CalibrationTable, PercentileSchedule, QuantMode, StatsConfig, TensorStats,
};
use qtune_report::{Histogram, Layer, Similarity, Threshold, WeightRanges, sqnr_db};
use qtune_tensor::{DType, Tensor, TensorData};

use crate::PipelineError;
use qtune_calibrate::fake_quant::weight_channel_axis;
use qtune_calibrate::table_entries;

/// Initial bins of the report's histograms. The kl threshold drawn for a
/// run without tables of its own comes from this histogram: a quarter of
/// run_calibration's 2048 bins makes its search 16 times cheaper (it is
/// quadratic in the bins) and moves the threshold by less than a bin of
/// the drawn histogram.
pub const REPORT_HISTOGRAM_BINS: usize = 512;

/// Bins a report keeps per histogram (the calibration histograms have
/// 2048 or more; the report sums neighbours).
pub const REPORT_BINS: usize = 128;

/// The methods whose thresholds the histograms show when the run has no
/// tables of its own. mse is left out: its per-sample search over each
/// tensor cost more than the rest of a report (75 % of it on MiniLM); the
/// searches' reports draw the mse threshold from their own table.
pub const HISTOGRAM_METHODS: [CalibrationMethod; 3] = [
    CalibrationMethod::Kl,
    CalibrationMethod::Max,
    CalibrationMethod::Percentile9999,
];

/// A quantized model the caller already built from the request (model_deploy
/// has one): the report runs it instead of building its own.
#[derive(Clone, Copy)]
pub struct Prebuilt<'a> {
    pub plan: &'a Plan,
    /// The simulation executor of that plan (`integer_exact` of its QDQ graph).
    pub sim: &'a Executor,
}

/// What to measure. The samples are handed to [`Measurer::sample`] one by
/// one (or to [`gather`] all at once).
pub struct GatherRequest<'a> {
    /// The float model (prepared, BatchNorm folded, named by the table's op
    /// names), as the quantized model is planned from it.
    pub graph: &'a Graph,
    pub processor: Processor,
    /// `INT8` (or a float type: then nothing is quantized).
    pub quantize: QuantMode,
    pub table: Option<&'a CalibrationTable>,
    pub qtable: &'a [(String, QuantMode)],
    /// Float type of the layers the chip keeps in float.
    pub fp_type: QuantMode,
    pub asymmetric: bool,
    pub matmul_per_channel: bool,
    /// Threshold tables of named methods computed by the run itself (the
    /// searches calibrate several methods); the histograms show these
    /// instead of thresholds computed on the report's samples.
    pub method_tables: Vec<(String, &'a CalibrationTable)>,
    /// Collect the histograms and weight ranges (the HTML report shows
    /// them; the text table and the chart need neither).
    pub histograms: bool,
    pub prebuilt: Option<Prebuilt<'a>>,
}

/// What was measured.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    pub layers: Vec<Layer>,
    pub histograms: Vec<Histogram>,
    pub histogram_source: String,
    pub weights: Vec<WeightRanges>,
    pub samples: usize,
    /// Samples whose float tensors came from the caller's reference
    /// instead of a float run.
    pub float_from_reference: usize,
    /// Time spent measuring beyond the caller's own runs of the simulation.
    pub extra_seconds: f64,
}

fn mode_name(m: QuantMode) -> String {
    m.to_string()
}

fn reason_text(r: &FloatReason) -> String {
    match r {
        FloatReason::Qtable => "qtable".into(),
        FloatReason::Chip(why) => format!("chip: {why}"),
        FloatReason::NotFloatData => "not float data".into(),
        FloatReason::HugeRange => "range beyond 1e30".into(),
        FloatReason::ConcatRanges => "concat ranges differ".into(),
    }
}

/// Running sums of one layer's similarity. Elements whose float value is a
/// masking constant (at least [`qtune_deploy::HUGE_THRESHOLD`]) or not finite
/// are left out.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    cos_sum: f64,
    signal: f64,
    noise: f64,
    samples: usize,
}

impl Acc {
    fn add(&mut self, reference: &[f32], x: &[f32]) {
        let mut sums = [0.0f64; 4];
        fast_sums::f32s(reference, x, &mut sums);
        self.add_sums(sums);
    }

    /// [`Acc::add`] of an integer tensor read as `(q - zp) * s` (what
    /// DequantizeLinear computes), without materializing it.
    fn add_u8(&mut self, reference: &[f32], q: &[u8], s: f32, zp: i32) {
        let mut sums = [0.0f64; 4];
        fast_sums::u8s(reference, q, s, zp, &mut sums);
        self.add_sums(sums);
    }

    fn add_i8(&mut self, reference: &[f32], q: &[i8], s: f32, zp: i32) {
        let mut sums = [0.0f64; 4];
        fast_sums::i8s(reference, q, s, zp, &mut sums);
        self.add_sums(sums);
    }

    fn add_sums(&mut self, [dot, na, nb, noise]: [f64; 4]) {
        let denom = na.sqrt() * nb.sqrt();
        // Two zero tensors are identical; one zero tensor has no direction.
        let cos = if denom > 0.0 {
            dot / denom
        } else if na == 0.0 && nb == 0.0 {
            1.0
        } else {
            0.0
        };
        self.cos_sum += cos;
        self.signal += na;
        self.noise += noise;
        self.samples += 1;
    }

    fn similarity(&self) -> Option<Similarity> {
        // JSON has no NaN: a tensor without a finite measure has none.
        let finite = self.cos_sum.is_finite() && self.signal.is_finite() && self.noise.is_finite();
        (self.samples > 0 && finite).then(|| Similarity {
            cos: self.cos_sum / self.samples as f64,
            sqnr_db: sqnr_db(self.signal, self.noise),
        })
    }
}

/// Lanes of the similarity sums: independent f64 partial sums, so that the
/// loop vectorizes; the result depends on this order, not on the CPU.
const SUM_LANES: usize = 8;

/// Masking constants (-FLT_MAX attention masks) are not values: an F16
/// layer rounds them to -inf, which would make every measure of the tensor
/// infinite. They are left out (NaN and inf fail the comparison too).
#[inline(always)]
fn is_value(a: f32) -> bool {
    f64::from(a.abs()) < qtune_deploy::HUGE_THRESHOLD
}

/// Adds `a . b`, `a . a`, `b . b` and `(a - b) . (a - b)` of one pair to the
/// lane sums (nothing when `a` is not a value).
#[inline(always)]
fn add_pair(sums: &mut [[f64; SUM_LANES]; 4], lane: usize, a: f32, b: f32) {
    let k = is_value(a);
    let a = if k { f64::from(a) } else { 0.0 };
    let b = if k { f64::from(b) } else { 0.0 };
    sums[0][lane] += a * b;
    sums[1][lane] += a * a;
    sums[2][lane] += b * b;
    sums[3][lane] += (a - b) * (a - b);
}

/// The four similarity sums of `reference` against `x(i)`.
#[inline(always)]
fn sums_of(reference: &[f32], n: usize, x: impl Fn(usize) -> f32, out: &mut [f64; 4]) {
    let mut sums = [[0.0f64; SUM_LANES]; 4];
    let n = reference.len().min(n);
    let full = n / SUM_LANES * SUM_LANES;
    for base in (0..full).step_by(SUM_LANES) {
        for lane in 0..SUM_LANES {
            add_pair(&mut sums, lane, reference[base + lane], x(base + lane));
        }
    }
    for (i, &a) in reference.iter().enumerate().take(n).skip(full) {
        add_pair(&mut sums, 0, a, x(i));
    }
    *out = sums.map(|l| l.iter().sum::<f64>());
}

qtune_simd::dispatch! {
    /// [`sums_of`] against an f32 tensor.
    fn similarity_sums(reference: &[f32], x: &[f32], out: &mut [f64; 4]) {
        sums_of(reference, x.len(), |i| x[i], out);
    }
}

qtune_simd::dispatch! {
    /// [`sums_of`] against a uint8 tensor dequantized on the fly.
    fn similarity_sums_u8(reference: &[f32], q: &[u8], s: f32, zp: i32, out: &mut [f64; 4]) {
        #[allow(clippy::cast_precision_loss)]
        sums_of(reference, q.len(), |i| (i32::from(q[i]) - zp) as f32 * s, out);
    }
}

qtune_simd::dispatch! {
    /// [`sums_of`] against an int8 tensor dequantized on the fly.
    fn similarity_sums_i8(reference: &[f32], q: &[i8], s: f32, zp: i32, out: &mut [f64; 4]) {
        #[allow(clippy::cast_precision_loss)]
        sums_of(reference, q.len(), |i| (i32::from(q[i]) - zp) as f32 * s, out);
    }
}

/// The similarity sums on AVX-512, with the bits of [`sums_of`] (its lane
/// order, its masking, its f32 dequantization; no fused multiply-add): the
/// portable copies above are their reference (test
/// `fast_similarity_sums_equal_the_portable_ones`). Elsewhere the portable
/// copies run.
mod fast_sums {
    pub(super) fn f32s(reference: &[f32], x: &[f32], out: &mut [f64; 4]) {
        #[cfg(target_arch = "x86_64")]
        if qtune_simd::has_avx512() {
            // SAFETY: the CPU has the features `avx512` is compiled for.
            return unsafe { avx512::f32s(reference, x, out) };
        }
        super::similarity_sums(reference, x, out);
    }

    pub(super) fn u8s(reference: &[f32], q: &[u8], s: f32, zp: i32, out: &mut [f64; 4]) {
        #[cfg(target_arch = "x86_64")]
        if qtune_simd::has_avx512() {
            // SAFETY: as in `f32s`.
            return unsafe { avx512::u8s(reference, q, s, zp, out) };
        }
        super::similarity_sums_u8(reference, q, s, zp, out);
    }

    pub(super) fn i8s(reference: &[f32], q: &[i8], s: f32, zp: i32, out: &mut [f64; 4]) {
        #[cfg(target_arch = "x86_64")]
        if qtune_simd::has_avx512() {
            // SAFETY: as in `f32s`.
            return unsafe { avx512::i8s(reference, q, s, zp, out) };
        }
        super::similarity_sums_i8(reference, q, s, zp, out);
    }

    #[cfg(target_arch = "x86_64")]
    mod avx512 {
        use super::super::{SUM_LANES, add_pair};
        use std::arch::x86_64::*;

        /// One step of 8 pairs: `a` the reference, `b` the compared values
        /// (f32); pairs whose `|a|` is not below the masking threshold
        /// count as zeros, as in `add_pair`.
        #[inline]
        #[target_feature(enable = "avx512f,avx2")]
        fn step(acc: &mut [__m512d; 4], a: __m256, b: __m256) {
            let huge = _mm512_set1_pd(qtune_deploy::HUGE_THRESHOLD);
            let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), a);
            let keep = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(_mm512_cvtps_pd(abs), huge);
            let a = _mm512_maskz_mov_pd(keep, _mm512_cvtps_pd(a));
            let b = _mm512_maskz_mov_pd(keep, _mm512_cvtps_pd(b));
            let d = _mm512_sub_pd(a, b);
            acc[0] = _mm512_add_pd(acc[0], _mm512_mul_pd(a, b));
            acc[1] = _mm512_add_pd(acc[1], _mm512_mul_pd(a, a));
            acc[2] = _mm512_add_pd(acc[2], _mm512_mul_pd(b, b));
            acc[3] = _mm512_add_pd(acc[3], _mm512_mul_pd(d, d));
        }

        /// The lane sums of `acc`, the tail added to lane 0 as `sums_of`
        /// does, then the lanes in order.
        #[inline]
        #[target_feature(enable = "avx512f,avx2")]
        fn finish(acc: [__m512d; 4], tail: impl Iterator<Item = (f32, f32)>, out: &mut [f64; 4]) {
            let mut sums = [[0.0f64; SUM_LANES]; 4];
            for (l, v) in sums.iter_mut().zip(acc) {
                // SAFETY: `l` holds 8 f64.
                unsafe { _mm512_storeu_pd(l.as_mut_ptr(), v) };
            }
            for (a, b) in tail {
                add_pair(&mut sums, 0, a, b);
            }
            *out = sums.map(|l| l.iter().sum::<f64>());
        }

        /// `(q - zp) * s` of 8 integer codes already widened to i32.
        #[inline]
        #[target_feature(enable = "avx512f,avx2")]
        fn dequantized(q: __m256i, s: f32, zp: i32) -> __m256 {
            let v = _mm256_cvtepi32_ps(_mm256_sub_epi32(q, _mm256_set1_epi32(zp)));
            _mm256_mul_ps(v, _mm256_set1_ps(s))
        }

        /// # Safety
        /// AVX-512F and AVX2.
        #[target_feature(enable = "avx512f,avx2")]
        pub(super) unsafe fn f32s(reference: &[f32], x: &[f32], out: &mut [f64; 4]) {
            let n = reference.len().min(x.len());
            let (ca, ra) = reference[..n].as_chunks::<SUM_LANES>();
            let (cb, rb) = x[..n].as_chunks::<SUM_LANES>();
            let mut acc = [_mm512_setzero_pd(); 4];
            for (a, b) in ca.iter().zip(cb) {
                // SAFETY: 8 f32 each, unaligned loads.
                let (a, b) = unsafe { (_mm256_loadu_ps(a.as_ptr()), _mm256_loadu_ps(b.as_ptr())) };
                step(&mut acc, a, b);
            }
            finish(acc, ra.iter().copied().zip(rb.iter().copied()), out);
        }

        /// # Safety
        /// AVX-512F and AVX2.
        #[target_feature(enable = "avx512f,avx2")]
        pub(super) unsafe fn u8s(reference: &[f32], q: &[u8], s: f32, zp: i32, out: &mut [f64; 4]) {
            codes(reference, q, false, s, zp, out);
        }

        /// # Safety
        /// AVX-512F and AVX2.
        #[target_feature(enable = "avx512f,avx2")]
        pub(super) unsafe fn i8s(reference: &[f32], q: &[i8], s: f32, zp: i32, out: &mut [f64; 4]) {
            // SAFETY: i8 and u8 have the same size and alignment, and every
            // bit pattern is valid for both.
            let bytes = unsafe { std::slice::from_raw_parts(q.as_ptr().cast::<u8>(), q.len()) };
            codes(reference, bytes, true, s, zp, out);
        }

        /// The sums against integer codes `q` (int8 when `signed`, read as
        /// bytes), dequantized as `(q - zp) * s` in f32.
        #[inline]
        #[target_feature(enable = "avx512f,avx2")]
        fn codes(reference: &[f32], q: &[u8], signed: bool, s: f32, zp: i32, out: &mut [f64; 4]) {
            let n = reference.len().min(q.len());
            let (ca, ra) = reference[..n].as_chunks::<SUM_LANES>();
            let (cb, rb) = q[..n].as_chunks::<SUM_LANES>();
            let mut acc = [_mm512_setzero_pd(); 4];
            for (a, b) in ca.iter().zip(cb) {
                // SAFETY: 8 f32 and 8 bytes, unaligned loads.
                let (a, b) = unsafe {
                    (
                        _mm256_loadu_ps(a.as_ptr()),
                        _mm_loadl_epi64(b.as_ptr().cast::<__m128i>()),
                    )
                };
                let wide = if signed {
                    _mm256_cvtepi8_epi32(b)
                } else {
                    _mm256_cvtepu8_epi32(b)
                };
                step(&mut acc, a, dequantized(wide, s, zp));
            }
            let code = |b: u8| {
                if signed {
                    i32::from(b.cast_signed())
                } else {
                    i32::from(b)
                }
            };
            #[allow(clippy::cast_precision_loss)]
            let tail = ra
                .iter()
                .zip(rb)
                .map(|(&a, &b)| (a, (code(b) - zp) as f32 * s));
            finish(acc, tail, out);
        }
    }
}

/// How a simulation value relates to a float layer output.
#[derive(Debug, Clone, Copy)]
struct Form {
    /// Index into the measured layer list.
    layer: usize,
    /// The float graph's value (its range, its tensor).
    float_value: ValueId,
    /// The value is integer-coded (`<t>_QuantizeLinear`).
    int_coded: bool,
    /// A float value that the deployed model quantizes next: the comparison
    /// takes its quantize-dequantize.
    quantized_next: bool,
    /// A float value the deployed model rounds to F16 / BF16 next.
    rounded: Option<QuantMode>,
}

/// The hook of the similarity runs.
struct LayerHook<'a> {
    forms: &'a HashMap<ValueId, Form>,
    plan: &'a Plan,
    /// The float model's tensors of this sample, by float value.
    float: &'a Values,
    /// Per layer: already seen in this run.
    seen: Vec<bool>,
    acc: &'a mut [Acc],
    /// Replace each layer's output with the float model's (isolated run).
    isolate: bool,
    error: Option<String>,
}

/// Integer parameters of a quantized value: its range's scale, zero point
/// and integer type, from the storage type the simulation chose.
fn qparams(range: &Range, dtype: DType) -> (f32, i32, QRange) {
    match dtype {
        DType::I8 => (range.scale(), 0, QRange::I8),
        _ => (range.scale(), i32::from(range.zero_point_u8()), QRange::U8),
    }
}

impl LayerHook<'_> {
    /// The layer output as the deployed model hands it on, and the float
    /// model's tensor to replace it with.
    fn handle(&mut self, form: Form, tensor: &mut Tensor) -> Result<(), String> {
        let Some(reference_tensor) = self.float.get(form.float_value) else {
            return Ok(());
        };
        // Read in place where the tensors are f32 (no copy per layer).
        let reference_copy;
        let reference: &[f32] = match reference_tensor.as_f32() {
            Ok(r) => r,
            Err(_) => {
                reference_copy = reference_tensor.to_f32_vec();
                &reference_copy
            }
        };
        if reference.len() != tensor.numel() {
            return Ok(());
        }
        let range = self.plan.range(form.float_value);
        let deployed_copy: Vec<f32>;
        let deployed: &[f32] = if form.int_coded {
            let Some(range) = range else { return Ok(()) };
            let (s, zp, _) = qparams(&range, tensor.dtype());
            // DequantizeLinear's arithmetic (`qtune_kernels::dequantize_linear`),
            // read from the integer tensor in the same pass as the sums.
            match tensor.data() {
                TensorData::U8(v) => self.acc[form.layer].add_u8(reference, v, s, zp),
                TensorData::I8(v) => self.acc[form.layer].add_i8(reference, v, s, zp),
                TensorData::I32(v) => {
                    #[allow(clippy::cast_precision_loss)]
                    let x: Vec<f32> = v.iter().map(|&q| (q - zp) as f32 * s).collect();
                    self.acc[form.layer].add(reference, &x);
                }
                _ => return Ok(()),
            }
            &[]
        } else {
            let requantized = form.quantized_next && range.is_some();
            match tensor.as_f32() {
                Ok(x) if !requantized && form.rounded.is_none() => x,
                _ => {
                    let mut x = tensor.to_f32_vec();
                    if form.quantized_next
                        && let Some(range) = range
                    {
                        let (s, zp, qr) =
                            qparams(&range, if range.signed() { DType::I8 } else { DType::U8 });
                        let n = x.len().max(1);
                        qtune_kernels::fake_quantize(&mut x, &[s], &[zp], qr, 1, n);
                    }
                    match form.rounded {
                        Some(QuantMode::F16) => qtune_kernels::round_to_f16(&mut x),
                        Some(QuantMode::BF16) => qtune_kernels::round_to_bf16(&mut x),
                        _ => {}
                    }
                    deployed_copy = x;
                    &deployed_copy
                }
            }
        };
        if !form.int_coded {
            self.acc[form.layer].add(reference, deployed);
        }
        if self.isolate {
            *tensor = if form.int_coded {
                let Some(range) = range else { return Ok(()) };
                let (s, zp, qr) = qparams(&range, tensor.dtype());
                let n = reference.len();
                let shape = tensor.shape().clone();
                let t = match tensor.dtype() {
                    DType::I8 => {
                        let mut q = vec![0i8; n];
                        qtune_kernels::quantize_linear_i8(
                            reference,
                            &[s],
                            &[zp],
                            qr,
                            1,
                            n.max(1),
                            &mut q,
                        );
                        Tensor::new(shape, TensorData::I8(q.into()))
                    }
                    _ => {
                        let mut q = vec![0u8; n];
                        qtune_kernels::quantize_linear_u8(
                            reference,
                            &[s],
                            &[zp],
                            qr,
                            1,
                            n.max(1),
                            &mut q,
                        );
                        Tensor::new(shape, TensorData::U8(q.into()))
                    }
                };
                t.map_err(|e| e.to_string())?
            } else if reference_tensor.dtype() == DType::F32
                && reference_tensor.dims() == tensor.dims()
            {
                // The float tensor itself (shared, not copied).
                reference_tensor.clone()
            } else {
                Tensor::from_f32(tensor.shape().clone(), reference.to_vec())
                    .map_err(|e| e.to_string())?
            };
        }
        Ok(())
    }
}

impl ValueHook for LayerHook<'_> {
    fn on_value(
        &mut self,
        _: &Graph,
        value: ValueId,
        tensor: &mut Tensor,
    ) -> Result<(), ExecError> {
        let Some(&form) = self.forms.get(&value) else {
            return Ok(());
        };
        if std::mem::replace(&mut self.seen[form.layer], true) {
            return Ok(());
        }
        if let Err(e) = self.handle(form, tensor) {
            self.error.get_or_insert(e);
        }
        Ok(())
    }

    fn wants(&self, value: ValueId) -> bool {
        self.forms.contains_key(&value)
    }
}

/// The layer rows of `graph` planned by `plan`, with their thresholds.
fn layer_rows(graph: &Graph, plan: &Plan, table: Option<&CalibrationTable>) -> Vec<Layer> {
    crate::layers(graph)
        .into_iter()
        .enumerate()
        .map(|(index, l)| {
            let mode = plan.mode(l.node);
            Layer {
                index,
                threshold: table.and_then(|t| t.get(&l.name)).map(|r| r.threshold),
                float_reason: plan.reasons[l.node.index()].as_ref().map(reason_text),
                mode: mode_name(mode),
                name: l.name,
                op_type: l.top_type,
                cumulative: None,
                isolated: None,
            }
        })
        .collect()
}

/// Per-output-channel ranges of every Conv / Gemm / MatMul weight.
pub fn weight_ranges(graph: &Graph, plan: &Plan) -> Vec<WeightRanges> {
    let mut out = Vec::new();
    for (id, n) in graph.nodes() {
        let Some(&first) = n.outputs.first() else {
            continue;
        };
        let Some(Some(w)) = n.inputs.get(1) else {
            continue;
        };
        let Some(wt) = graph.constant_of(*w) else {
            continue;
        };
        let Some(axis) = weight_channel_axis(&n.op, 1, wt.dims().len()) else {
            continue;
        };
        let dims = wt.dims();
        let channels = dims[axis];
        let inner: usize = dims[axis + 1..].iter().product::<usize>().max(1);
        if channels == 0 {
            continue;
        }
        // F32 weights are read in place (MiniLM's are 90 MB).
        let copy;
        let data: &[f32] = match wt.as_f32() {
            Ok(d) => d,
            Err(_) => {
                copy = wt.to_f32_vec();
                &copy
            }
        };
        let mut lo = vec![f32::INFINITY; channels];
        let mut hi = vec![f32::NEG_INFINITY; channels];
        if inner == 1 {
            // Channels last (MatMul / Gemm weights): row by row, in lanes.
            for row in data.chunks(channels) {
                for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
                    // Compare-and-select (NaN compares false and is skipped).
                    *l = if v < *l { v } else { *l };
                    *h = if v > *h { v } else { *h };
                }
            }
        } else {
            for (i, block) in data.chunks(inner).enumerate() {
                let c = i % channels;
                let (l, h) = min_max(block);
                lo[c] = lo[c].min(l);
                hi[c] = hi[c].max(h);
            }
        }
        let abs_max = lo
            .iter()
            .zip(&hi)
            .fold(0f32, |m, (l, h)| m.max(l.abs()).max(h.abs()));
        let is_conv = matches!(n.op, Op::Conv(_));
        let scheme = match plan.mode(id) {
            QuantMode::Int8 => match plan.profile.weights {
                WeightScheme::PerTensorPow2 => "per tensor (power-of-two shift)",
                WeightScheme::PerChannel if is_conv || plan.matmul_per_channel => "per channel",
                WeightScheme::PerChannel => "per tensor",
            }
            .to_string(),
            m => format!("{m} (not quantized)"),
        };
        out.push(WeightRanges {
            layer: graph.value(first).name.clone(),
            op_type: crate::top_type(graph, id),
            weight: graph.value(*w).name.clone(),
            scheme,
            channel_min: lo,
            channel_max: hi,
            tensor_abs_max: abs_max,
        });
    }
    out
}

/// The least and greatest of `x` (NaN ignored), in lanes that vectorize.
fn min_max(x: &[f32]) -> (f32, f32) {
    const LANES: usize = 16;
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    let (chunks, rest) = x.as_chunks::<LANES>();
    for c in chunks {
        for i in 0..LANES {
            // Compare-and-select (NaN compares false and is skipped).
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    let init = (
        lo.iter().fold(f32::INFINITY, |m, &v| m.min(v)),
        hi.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)),
    );
    rest.iter().fold(init, |(l, h), &v| (l.min(v), h.max(v)))
}

/// `counts` summed into at most [`REPORT_BINS`] bins.
fn downsample(counts: &[u64], width: f64) -> (Vec<u64>, f64) {
    let k = counts.len().div_ceil(REPORT_BINS).max(1);
    let out = counts.chunks(k).map(|c| c.iter().sum()).collect();
    (out, width * k as f64)
}

/// A value borrowed from the caller or built here.
enum Held<'a, T> {
    Borrowed(&'a T),
    Owned(Box<T>),
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Held::Borrowed(t) => t,
            Held::Owned(t) => t,
        }
    }
}

/// A sample whose histograms and isolated run are still to be done, with
/// the float tensors they read.
struct Pending {
    inputs: Vec<(String, Tensor)>,
    float: Values,
    /// The histograms of this sample came from [`EarlyHistograms`].
    histograms_done: bool,
}

/// The report's histogram statistics of one sample whose float tensors a
/// reference holds (model_deploy's `--test_reference`), computed before
/// the [`Measurer`] exists: model_deploy computes them on a spare core
/// while the model is quantized. A measurer made for that one sample takes
/// them instead of observing the same tensors again, when its float tensors
/// do come from that reference; the statistics are the same either way.
pub struct EarlyHistograms {
    names: Vec<String>,
    stats: Vec<TensorStats>,
}

impl EarlyHistograms {
    /// The statistics [`Measurer`] would gather (its histogram config, one
    /// sample) from `reference` for every table tensor of `graph`, on the
    /// calling thread. `None` when the reference lacks a float tensor of
    /// the table or holds it with another shape (the measurer then runs the
    /// float model and observes its own tensors).
    pub fn compute(
        graph: &Graph,
        reference: &[(String, Tensor)],
    ) -> Result<Option<Self>, PipelineError> {
        let by_name: HashMap<&str, &Tensor> =
            reference.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let (entries, op_count) = table_entries(graph);
        let config = histogram_config(false);
        let mut names = Vec::with_capacity(entries.len());
        let mut stats = Vec::with_capacity(entries.len());
        for e in &entries {
            let mut st = TensorStats::new(
                e.name.clone(),
                &config,
                PercentileSchedule::new(e.op_index, op_count, 1),
            )?;
            if graph.value(e.value).dtype == DType::F32 {
                let Some(t) = by_name.get(e.name.as_str()) else {
                    return Ok(None);
                };
                let shape = graph.shape_of(e.value)?;
                if t.dtype() != DType::F32 || t.dims() != shape.dims() {
                    return Ok(None);
                }
                st.observe(t.as_f32()?)?;
            }
            names.push(e.name.clone());
            stats.push(st);
        }
        Ok(Some(EarlyHistograms { names, stats }))
    }
}

/// The statistics the report's histograms are made of: kl, max and
/// percentile9999 on [`REPORT_HISTOGRAM_BINS`] bins, or the histogram alone
/// when the run brings its own method tables.
fn histogram_config(from_run: bool) -> StatsConfig {
    let mut config = if from_run {
        StatsConfig::with_methods(&[CalibrationMethod::Kl])
    } else {
        StatsConfig::with_methods(&HISTOGRAM_METHODS)
    };
    config.histogram_bin_num = REPORT_HISTOGRAM_BINS;
    config
}

/// Measures what the report shows, one sample at a time, beside the runs
/// of the quantized model a command makes anyway (see the module docs).
///
/// For each sample, [`Measurer::sample`] takes the float model's tensors
/// from the caller's reference when it holds every one the measures read
/// (model_deploy's `--test_reference`), or else runs the float model; then
/// makes the caller's own run of the simulation, with the hook that records
/// the cumulative similarity (the hook only reads: the run's values are the
/// same as without it). The histograms and the isolated run of that sample
/// are left pending until the next sample or [`Measurer::flush`], so that a
/// caller can overlap the last of them with other work (model_deploy writes
/// its model meanwhile). At most one sample's float tensors are held.
pub struct Measurer<'a> {
    graph: &'a Graph,
    plan: Held<'a, Plan>,
    sim: Option<Held<'a, Executor>>,
    float: Option<Executor>,
    table: Option<&'a CalibrationTable>,
    method_tables: Vec<(String, &'a CalibrationTable)>,
    histograms: bool,
    layers: Vec<Layer>,
    names: Vec<crate::Layer>,
    forms: HashMap<ValueId, Form>,
    /// Float values the measures read, in id order.
    needed: Vec<ValueId>,
    cumulative: Vec<Acc>,
    isolated: Vec<Acc>,
    entries: Vec<qtune_calibrate::TableEntry>,
    stats: Vec<TensorStats>,
    sample_count: usize,
    samples: usize,
    from_reference: usize,
    pending: Option<Pending>,
    early: Option<EarlyHistograms>,
    extra: std::time::Duration,
}

impl<'a> Measurer<'a> {
    /// Plans (or takes the prebuilt plan and simulation of) `req`'s model
    /// for `sample_count` samples.
    pub fn new(req: &GatherRequest<'a>, sample_count: usize) -> Result<Self, PipelineError> {
        let start = std::time::Instant::now();
        let graph = req.graph;
        let plan = match req.prebuilt {
            Some(p) => Held::Borrowed(p.plan),
            None => {
                let plan_req = PlanRequest {
                    quantize: req.quantize,
                    calibration: req.table,
                    qtable: req.qtable,
                    fp_type: req.fp_type,
                    asymmetric: req.asymmetric,
                    matmul_per_channel: req.matmul_per_channel,
                    weight_only: qtune_deploy::WeightOnly::default(),
                };
                Held::Owned(Box::new(Plan::new(
                    graph,
                    req.processor.profile(),
                    &plan_req,
                )?))
            }
        };
        let layers = layer_rows(graph, &plan, req.table);
        let mut m = Measurer {
            graph,
            plan,
            sim: None,
            float: None,
            table: req.table,
            method_tables: req.method_tables.clone(),
            histograms: req.histograms,
            layers,
            names: Vec::new(),
            forms: HashMap::new(),
            needed: Vec::new(),
            cumulative: Vec::new(),
            isolated: Vec::new(),
            entries: Vec::new(),
            stats: Vec::new(),
            sample_count,
            samples: 0,
            from_reference: 0,
            pending: None,
            early: None,
            extra: std::time::Duration::ZERO,
        };
        if sample_count == 0 {
            m.extra = start.elapsed();
            return Ok(m);
        }
        // The deployed model's simulation, as model_deploy and the searches run it.
        let sim = match req.prebuilt {
            Some(p) => Held::Borrowed(p.sim),
            None => {
                let (qdq, _) = qtune_deploy::build_qdq(graph, &m.plan)?;
                let (g, _) = qtune_exec::prepare(
                    qtune_deploy::integer_exact(&qdq),
                    &PrepareOptions::default(),
                )?;
                Held::Owned(Box::new(Executor::new(g)?))
            }
        };
        m.names = crate::layers(graph);
        m.forms = layer_forms(graph, sim.graph(), &m.names);
        m.sim = Some(sim);
        m.cumulative = vec![Acc::default(); m.names.len()];
        m.isolated = vec![Acc::default(); m.names.len()];
        let mut needed: Vec<ValueId> = m.forms.values().map(|f| f.float_value).collect();
        if req.histograms {
            // Histograms: statistics of every table tensor over the samples.
            let (entries, op_count) = table_entries(graph);
            // With the run's own tables only the histogram is needed.
            let config = histogram_config(!m.method_tables.is_empty());
            m.stats = entries
                .iter()
                .map(|e| {
                    TensorStats::new(
                        e.name.clone(),
                        &config,
                        PercentileSchedule::new(e.op_index, op_count, sample_count),
                    )
                })
                .collect::<Result<_, _>>()?;
            // Only float tensors have histograms (integer inputs have none).
            needed.extend(
                entries
                    .iter()
                    .map(|e| e.value)
                    .filter(|&v| graph.value(v).dtype == DType::F32),
            );
            m.entries = entries;
        }
        needed.sort_by_key(|v| v.index());
        needed.dedup();
        m.needed = needed;
        m.extra = start.elapsed();
        Ok(m)
    }

    /// Statistics computed beforehand for the one sample this measurer is
    /// for (see [`EarlyHistograms`]); ignored unless that sample's float
    /// tensors come from the same reference.
    pub fn with_early_histograms(mut self, early: Option<EarlyHistograms>) -> Self {
        self.early = early;
        self
    }

    /// Whether the next sample is one of those the measurer was made for
    /// (a caller runs the rest without it).
    pub fn wants_sample(&self) -> bool {
        self.samples < self.sample_count
    }

    /// The float tensors the measures read, from `reference` (tensors by
    /// name), when it holds every one with the float model's shape.
    fn reference_values(&self, reference: &[(String, Tensor)]) -> Option<Values> {
        let by_name: HashMap<&str, &Tensor> =
            reference.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut values = Values::default();
        for &v in &self.needed {
            let t = by_name.get(self.graph.value(v).name.as_str())?;
            let shape = self.graph.shape_of(v).ok()?;
            if t.dtype() != DType::F32 || t.dims() != shape.dims() {
                return None;
            }
            values.insert(v, (*t).clone());
        }
        Some(values)
    }

    /// Measures one sample (graph inputs by name): see the type's docs.
    /// `reference` holds the float model's tensors of this sample by name,
    /// if the caller has them; returns the values the simulation run kept
    /// per `keep`.
    pub fn sample(
        &mut self,
        inputs: &[(String, Tensor)],
        reference: Option<&[(String, Tensor)]>,
        keep: &Keep,
    ) -> Result<Values, PipelineError> {
        self.flush()?;
        let start = std::time::Instant::now();
        if self.sim.is_none() || self.samples >= self.sample_count {
            return Err(beyond_count());
        }
        let mut histograms_done = false;
        let float = match reference.and_then(|r| self.reference_values(r)) {
            Some(v) => {
                self.from_reference += 1;
                // The early statistics are of this very sample when the
                // measurer is for one sample and they match its tensors.
                if let Some(early) = self.early.take()
                    && self.histograms
                    && self.sample_count == 1
                    && self.samples == 0
                    && self.method_tables.is_empty()
                    && early.names.len() == self.entries.len()
                    && early
                        .names
                        .iter()
                        .zip(&self.entries)
                        .all(|(n, e)| *n == e.name)
                {
                    self.stats = early.stats;
                    histograms_done = true;
                }
                v
            }
            None => {
                let exec = match &self.float {
                    Some(e) => e,
                    None => self.float.insert(Executor::new(self.graph.clone())?),
                };
                let opts = RunOptions::new(Keep::Values(self.needed.clone()), Parallelism::Rayon);
                exec.run(by_id(self.graph, inputs)?, &opts, &mut NoHook)?
            }
        };
        let Some(sim) = &self.sim else {
            return Err(beyond_count());
        };
        self.extra += start.elapsed();
        let mut hook = LayerHook {
            forms: &self.forms,
            plan: &self.plan,
            float: &float,
            seen: vec![false; self.names.len()],
            acc: &mut self.cumulative,
            isolate: false,
            error: None,
        };
        let opts = RunOptions::new(keep.clone(), Parallelism::Rayon);
        let values = sim.run(by_id(sim.graph(), inputs)?, &opts, &mut hook)?;
        if let Some(e) = hook.error {
            return Err(PipelineError::Settings(format!("report similarity: {e}")));
        }
        self.samples += 1;
        self.pending = Some(Pending {
            inputs: inputs.to_vec(),
            float,
            histograms_done,
        });
        Ok(values)
    }

    /// Does the pending sample's histograms and isolated run.
    pub fn flush(&mut self) -> Result<(), PipelineError> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let start = std::time::Instant::now();
        if self.histograms && !p.histograms_done {
            use rayon::prelude::*;
            self.entries
                .par_iter()
                .zip(self.stats.par_iter_mut())
                .try_for_each(|(e, st)| match p.float.get(e.value) {
                    Some(t) if t.dtype() == DType::F32 => match t.as_f32() {
                        Ok(x) => st.observe(x),
                        Err(_) => st.observe(&t.to_f32_vec()),
                    },
                    _ => Ok(()),
                })?;
        }
        let Some(sim) = &self.sim else {
            return Ok(());
        };
        let mut hook = LayerHook {
            forms: &self.forms,
            plan: &self.plan,
            float: &p.float,
            seen: vec![false; self.names.len()],
            acc: &mut self.isolated,
            isolate: true,
            error: None,
        };
        let opts = RunOptions::new(Keep::Outputs, Parallelism::Rayon);
        sim.run(by_id(sim.graph(), &p.inputs)?, &opts, &mut hook)?;
        if let Some(e) = hook.error {
            return Err(PipelineError::Settings(format!("report similarity: {e}")));
        }
        self.extra += start.elapsed();
        Ok(())
    }

    /// The measures, after the pending sample's.
    pub fn finish(mut self) -> Result<Gathered, PipelineError> {
        self.flush()?;
        let start = std::time::Instant::now();
        // Layer rows get their similarities by name (the layer list and the
        // measured list are both in op order, but non-float layers are skipped).
        let by_name: HashMap<&str, usize> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.as_str(), i))
            .collect();
        let mut layers = std::mem::take(&mut self.layers);
        for row in &mut layers {
            if let Some(&i) = by_name.get(row.name.as_str()) {
                row.cumulative = self.cumulative[i].similarity();
                row.isolated = self.isolated[i].similarity();
            }
        }
        let mut out = Gathered {
            layers,
            histograms: Vec::new(),
            histogram_source: String::new(),
            // Only the HTML report shows them (not the text table or chart).
            weights: if self.histograms {
                weight_ranges(self.graph, &self.plan)
            } else {
                Vec::new()
            },
            samples: self.samples,
            float_from_reference: self.from_reference,
            extra_seconds: 0.0,
        };
        if !self.histograms || self.samples == 0 {
            self.extra += start.elapsed();
            out.extra_seconds = self.extra.as_secs_f64();
            return Ok(out);
        }
        // Histograms with the thresholds of each method.
        let from_run = !self.method_tables.is_empty();
        let histograms: Vec<Option<Histogram>> = {
            use rayon::prelude::*;
            self.entries
                .par_iter()
                .zip(self.stats.par_iter())
                .map(|(e, st)| self.histogram(e, st, from_run))
                .collect::<Result<_, _>>()?
        };
        out.histograms = histograms.into_iter().flatten().collect();
        let n = self.samples;
        out.histogram_source = if from_run {
            format!(
                "histograms of the report's {n} sample(s); the method thresholds are the run's own tables ({})",
                self.method_tables
                    .iter()
                    .map(|(l, _)| l.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            format!(
                "histograms and the kl (on {REPORT_HISTOGRAM_BINS} bins), max and percentile9999 thresholds are computed on the report's {n} sample(s); the chosen threshold is the calibration table's, computed on all calibration samples"
            )
        };
        self.extra += start.elapsed();
        out.extra_seconds = self.extra.as_secs_f64();
        Ok(out)
    }

    fn histogram(
        &self,
        e: &qtune_calibrate::TableEntry,
        st: &TensorStats,
        from_run: bool,
    ) -> Result<Option<Histogram>, PipelineError> {
        if st.samples() == 0 {
            return Ok(None);
        }
        let Some(h) = st.histogram() else {
            return Ok(None);
        };
        let thresholds: Vec<Threshold> = if from_run {
            self.method_tables
                .iter()
                .filter_map(|(label, table)| {
                    Some(Threshold {
                        method: label.to_ascii_lowercase(),
                        value: table.get(&e.name)?.threshold,
                    })
                })
                .collect()
        } else {
            let t = st.thresholds()?;
            HISTOGRAM_METHODS
                .iter()
                .filter_map(|&m| {
                    Some(Threshold {
                        method: m.name().to_string(),
                        value: t.get(m)?,
                    })
                })
                .collect()
        };
        let (counts, bin_width) = downsample(h.counts(), f64::from(h.width()));
        Ok(Some(Histogram {
            tensor: e.name.clone(),
            min: f64::from(st.min()),
            max: f64::from(st.max()),
            bin_width,
            counts,
            thresholds,
            chosen: self
                .table
                .and_then(|tb| tb.get(&e.name))
                .map(|r| r.threshold),
        }))
    }
}

fn beyond_count() -> PipelineError {
    PipelineError::Internal("report: more samples than the measurer was made for".into())
}

/// Graph inputs by name as `graph`'s value ids.
fn by_id(
    graph: &Graph,
    inputs: &[(String, Tensor)],
) -> Result<Vec<(ValueId, Tensor)>, PipelineError> {
    inputs
        .iter()
        .map(|(n, t)| Ok((graph.value_by_name(n)?, t.clone())))
        .collect()
}

/// Each measured layer's forms in the simulation graph `sg`.
fn layer_forms(graph: &Graph, sg: &Graph, names: &[crate::Layer]) -> HashMap<ValueId, Form> {
    let mut forms: HashMap<ValueId, Form> = HashMap::new();
    for (idx, l) in names.iter().enumerate() {
        let Some(fv) = graph.find_value(&l.name) else {
            continue;
        };
        if graph.value(fv).dtype != DType::F32 {
            continue;
        }
        let has = |suffix: &str| {
            sg.find_value(&format!("{}{suffix}", l.name))
                .filter(|&v| sg.value(v).producer.is_some())
        };
        let quantized_next = has("_QuantizeLinear").is_some();
        let rounded = if has("_F16").is_some() {
            Some(QuantMode::F16)
        } else if has("_BF16").is_some() {
            Some(QuantMode::BF16)
        } else {
            None
        };
        for (suffix, int_coded) in [("_raw", false), ("", false), ("_QuantizeLinear", true)] {
            let Some(v) = has(suffix) else { continue };
            // A value a DequantizeLinear produced is already downstream of
            // an earlier form.
            let producer = sg.value(v).producer.map(|p| &sg.node(p).op);
            if !int_coded && matches!(producer, Some(Op::DequantizeLinear { .. })) {
                continue;
            }
            let dtype = sg.value(v).dtype;
            if int_coded != matches!(dtype, DType::U8 | DType::I8) {
                continue;
            }
            forms.insert(
                v,
                Form {
                    layer: idx,
                    float_value: fv,
                    int_coded,
                    quantized_next: !int_coded && quantized_next,
                    rounded: if int_coded { None } else { rounded },
                },
            );
        }
    }
    forms
}

/// Measures what the report shows on `samples` (graph inputs by name).
pub fn gather(
    req: &GatherRequest,
    samples: &[Vec<(String, Tensor)>],
) -> Result<Gathered, PipelineError> {
    let mut m = Measurer::new(req, samples.len())?;
    for s in samples {
        m.sample(s, None, &Keep::Outputs)?;
    }
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 similarity sums have the bits of the portable ones (the
    /// dispatched `sums_of`), for f32, uint8 and int8 tensors, on lengths
    /// around the lane count, with masking constants, infinities and NaN
    /// in the reference and mismatched lengths.
    #[test]
    fn fast_similarity_sums_equal_the_portable_ones() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for n in [0usize, 1, 7, 8, 9, 17, 64, 1003] {
            let mut reference: Vec<f32> = (0..n)
                .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 * 6.0 - 3.0)
                .collect();
            for (i, v) in reference.iter_mut().enumerate() {
                match i % 23 {
                    5 => *v = -f32::MAX,
                    11 => *v = f32::INFINITY,
                    17 => *v = f32::NAN,
                    _ => {}
                }
            }
            let x: Vec<f32> = (0..n + 2)
                .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32 * 6.0 - 3.0)
                .collect();
            let q: Vec<u8> = (0..n + 1).map(|_| (next() >> 56) as u8).collect();
            let qi: Vec<i8> = q.iter().map(|&b| b.cast_signed()).collect();
            let bits = |s: [f64; 4]| s.map(f64::to_bits);
            let (mut fast, mut portable) = ([0.0f64; 4], [0.0f64; 4]);
            fast_sums::f32s(&reference, &x, &mut fast);
            similarity_sums(&reference, &x, &mut portable);
            assert_eq!(bits(fast), bits(portable), "f32, n = {n}");
            fast_sums::u8s(&reference, &q, 0.031, 97, &mut fast);
            similarity_sums_u8(&reference, &q, 0.031, 97, &mut portable);
            assert_eq!(bits(fast), bits(portable), "u8, n = {n}");
            fast_sums::i8s(&reference, &qi, 0.017, -3, &mut fast);
            similarity_sums_i8(&reference, &qi, 0.017, -3, &mut portable);
            assert_eq!(bits(fast), bits(portable), "i8, n = {n}");
        }
    }
}
