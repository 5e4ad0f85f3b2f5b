//! Layer normalisation, ONNX `LayerNormalization`
//! (<https://onnx.ai/onnx/operators/onnx__LayerNormalization.html>, opset 17, inference
//! output `Y` only) and TPU-MLIR's `top.LayerNorm`: every row of the trailing axes from `axis`
//! on is normalised to zero mean and unit (biased) variance, then scaled and shifted:
//!
//! `mean = Σx / n`, `var = Σ(x - mean)² / n`, `y = (x - mean) / sqrt(var + epsilon) * scale + bias`
//!
//! The arithmetic is the f32 sequence of the pattern exporters decompose it into (PyTorch's
//! BERT export: `ReduceMean`, `Sub`, `Pow(2)`, `ReduceMean`, `Add(epsilon)`, `Sqrt`, `Div`,
//! `Mul(scale)`, `Add(bias)`), with the sums in the order of qtune's `ReduceMean` (16 lanes,
//! then the lanes in order, then the tail): a graph whose decomposed LayerNorm is replaced by
//! this kernel gives bit-identical results on qtune's executor (tested). Rows are spread over
//! the threads in fixed-size groups, each row computed by one thread: results do not depend on
//! the thread count.
//!
//! Not the executor's `LayerNormalization`: qtune-exec computes that op as ONNX Runtime's CPU
//! kernel does (one in-order pass for the sum and the sum of squares,
//! [`layer_norm_sequential_in_place`]), so that the int8 simulation agrees with ONNX Runtime
//! on the QDQ export.
//! The two orders round differently (on a `[1, 128, 384]` input about 60 % of the outputs
//! differ in the last bits), so this kernel is kept for graphs that still hold the decomposed
//! pattern and must not replace the executor's arithmetic.

use crate::Parallelism;
use crate::simd::dispatch;
use crate::util::{for_each_chunk_mut, numel};

/// Elements per parallel task (rounded to whole rows).
const CHUNK: usize = 16 * 1024;

/// Layer normalisation of `x` (`dims`) over the axes `axis..` into `out` (same length).
/// `scale` and `bias`, when given, have one value per element of a row
/// (`dims[axis..].iter().product()`, the normalised shape flattened; broadcast smaller ones
/// first). Without `scale` the rows are not scaled, without `bias` not shifted.
///
/// # Panics
/// Shape contract: panics if `axis > dims.len()` or a length does not match.
pub fn layer_norm(
    x: &[f32],
    dims: &[usize],
    axis: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    epsilon: f32,
    out: &mut [f32],
    par: Parallelism,
) {
    assert_eq!(out.len(), x.len(), "layer_norm: output length");
    let n = check(x.len(), dims, axis, scale, bias);
    if n == 0 || x.is_empty() {
        return;
    }
    let rows_per_chunk = (CHUNK / n).max(1);
    let par = crate::util::par_for_work(par, 8 * x.len());
    for_each_chunk_mut(out, rows_per_chunk * n, par, |ci, o| {
        let start = ci * rows_per_chunk * n;
        let src = &x[start..start + o.len()];
        o.copy_from_slice(src);
        rows(o, n, scale, bias, epsilon);
    });
}

/// [`layer_norm`] in place.
///
/// # Panics
/// As [`layer_norm`].
pub fn layer_norm_in_place(
    x: &mut [f32],
    dims: &[usize],
    axis: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    epsilon: f32,
    par: Parallelism,
) {
    let n = check(x.len(), dims, axis, scale, bias);
    if n == 0 || x.is_empty() {
        return;
    }
    let rows_per_chunk = (CHUNK / n).max(1);
    let par = crate::util::par_for_work(par, 8 * x.len());
    for_each_chunk_mut(x, rows_per_chunk * n, par, |_, c| {
        rows(c, n, scale, bias, epsilon);
    });
}

/// Validates the arguments; returns the row length.
fn check(
    len: usize,
    dims: &[usize],
    axis: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
) -> usize {
    assert!(
        axis <= dims.len(),
        "layer_norm: axis {axis} out of range for rank {}",
        dims.len()
    );
    assert_eq!(len, numel(dims), "layer_norm: input length");
    let n: usize = dims[axis..].iter().product();
    if let Some(s) = scale {
        assert_eq!(s.len(), n, "layer_norm: scale length");
    }
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "layer_norm: bias length");
    }
    n
}

/// `Σ f(x)` in the order of qtune's `ReduceSum` / `ReduceMean` over a contiguous row: 16 lanes
/// (lane `i` takes elements `i, i + 16, ...` of the whole chunks), the lanes added in order,
/// then the tail in order.
#[inline(always)]
fn sum_in_reduce_order(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let mut s = 0.0f32;
    for a in acc {
        s += a;
    }
    for &v in chunks.remainder() {
        s += f(v);
    }
    s
}

dispatch! {
/// Normalises contiguous rows of `n` in place.
fn rows(x: &mut [f32], n: usize, scale: Option<&[f32]>, bias: Option<&[f32]>, epsilon: f32) {
    #[allow(clippy::cast_precision_loss)]
    let count = n as f32;
    for row in x.chunks_exact_mut(n) {
        // `0.0 + s` as ReduceMean's accumulator starts at 0 (it turns a -0 sum into +0).
        let mean = (0.0 + sum_in_reduce_order(row, |v| v)) / count;
        for v in row.iter_mut() {
            *v -= mean;
        }
        // `d * d` is what `Pow(d, 2)` computes.
        let var = (0.0 + sum_in_reduce_order(row, |d| d * d)) / count;
        let r = (var + epsilon).sqrt();
        for v in row.iter_mut() {
            *v /= r;
        }
        if let Some(s) = scale {
            for (v, &s) in row.iter_mut().zip(s) {
                *v *= s;
            }
        }
        if let Some(b) = bias {
            for (v, &b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
    }
}
}

/// Rows summed together by [`layer_norm_sequential_in_place`]: independent accumulator
/// chains that the core overlaps (one row's in-order sum is a chain of dependent adds).
const SEQ_ROWS: usize = 8;

/// Layer normalisation of contiguous rows of `n` values in place, in ONNX Runtime's CPU
/// arithmetic (`layer_norm_impl.cc: ComputeJob`): one in-order pass per row for the sum and
/// the sum of squares (`v * v` rounded, then added: no fused multiply-add), `mean = sum / n`,
/// `d = sqrt(sum_sq / n - mean² + epsilon)`, `y = (x - mean) / d * scale + bias`, each step
/// one f32 rounding. This is the executor's `LayerNormalization`: a quantized model's export
/// runs its LayerNorms in ONNX Runtime, and the simulation must agree with it bit for bit
/// (attention's coarse int8 grids turn a last-bit difference into a flipped code).
///
/// The in-order sums cannot be split into lanes without changing the rounding, so speed comes
/// from elsewhere: `SEQ_ROWS` rows are summed side by side (independent chains), the
/// normalisation pass is vectorised (element-wise, exact), and row groups are spread over the
/// threads. Every row is computed by the same sequence of operations whatever the grouping or
/// the thread count: results are bit-identical to `reference::layer_norm_sequential`.
///
/// # Panics
/// Shape contract: panics if `n == 0` while `x` is not empty, if `x.len()` is not a multiple
/// of `n`, or if `scale`/`bias` do not hold `n` values.
pub fn layer_norm_sequential_in_place(
    x: &mut [f32],
    n: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    epsilon: f32,
    par: Parallelism,
) {
    if x.is_empty() {
        return;
    }
    assert!(
        n > 0 && x.len().is_multiple_of(n),
        "layer_norm_sequential: length {} is not a multiple of the row length {n}",
        x.len()
    );
    if let Some(s) = scale {
        assert_eq!(s.len(), n, "layer_norm_sequential: scale length");
    }
    if let Some(b) = bias {
        assert_eq!(b.len(), n, "layer_norm_sequential: bias length");
    }
    let rows_per_chunk = (CHUNK / n).max(1);
    let par = crate::util::par_for_work(par, 8 * x.len());
    for_each_chunk_mut(x, rows_per_chunk * n, par, |_, c| {
        seq_rows(c, n, scale, bias, epsilon);
    });
}

dispatch! {
/// [`layer_norm_sequential_in_place`] on whole rows, one thread.
fn seq_rows(x: &mut [f32], n: usize, scale: Option<&[f32]>, bias: Option<&[f32]>, epsilon: f32) {
    let mut groups = x.chunks_exact_mut(SEQ_ROWS * n);
    for g in &mut groups {
        let mut sum = [0f32; SEQ_ROWS];
        let mut sum_sq = [0f32; SEQ_ROWS];
        {
            let rows: [&[f32]; SEQ_ROWS] = std::array::from_fn(|r| &g[r * n..(r + 1) * n]);
            // Column by column, the rows side by side: each row's sums stay
            // in element order.
            for h in 0..n {
                for ((s, q), row) in sum.iter_mut().zip(sum_sq.iter_mut()).zip(&rows) {
                    let v = row[h];
                    *s += v;
                    *q += v * v;
                }
            }
        }
        for (r, row) in g.chunks_exact_mut(n).enumerate() {
            seq_finish(row, sum[r], sum_sq[r], scale, bias, epsilon);
        }
    }
    for row in groups.into_remainder().chunks_exact_mut(n) {
        let mut sum = 0f32;
        let mut sum_sq = 0f32;
        for &v in row.iter() {
            sum += v;
            sum_sq += v * v;
        }
        seq_finish(row, sum, sum_sq, scale, bias, epsilon);
    }
}
}

/// The normalisation of one row from its in-order sums (element-wise: vectorises exactly).
#[inline(always)]
fn seq_finish(
    row: &mut [f32],
    sum: f32,
    sum_sq: f32,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    epsilon: f32,
) {
    #[allow(clippy::cast_precision_loss)]
    let count = row.len() as f32;
    let mean = sum / count;
    let den = (sum_sq / count - mean * mean + epsilon).sqrt();
    for v in row.iter_mut() {
        *v = (*v - mean) / den;
    }
    if let Some(s) = scale {
        for (v, &s) in row.iter_mut().zip(s) {
            *v *= s;
        }
    }
    if let Some(b) = bias {
        for (v, &b) in row.iter_mut().zip(b) {
            *v += b;
        }
    }
}
