//! ONNX `Softmax` (<https://onnx.ai/onnx/operators/onnx__Softmax.html>, opset 13 semantics:
//! along one axis; opset < 13's "flatten from axis" form is handled by the caller by passing
//! `[outer, inner]` dims and axis 1): `exp(x - max) / sum(exp(x - max))`.
//!
//! Along the last axis (attention's `[B, H, S, S]` scores) each row runs as three vector
//! passes: the maximum and the sum are kept in 16 lanes (lane `i` takes elements `i, i + 16,
//! ...`) and the lanes are combined in a fixed order, so the result is the same whatever the
//! vector width the CPU dispatch picked. Along another axis the columns are vectors and every
//! column's sums run down the axis. Rows (or column strips) are spread over the threads in
//! fixed-size groups; each row is computed by one thread, so results do not depend on the
//! thread count.
//!
//! The exponentials use the vectorised [`exp_approx`] (relative error below 1e-6; inputs
//! below -87.33 give about 1.2e-38 instead of 0). A slice along `axis` that is all `-inf`
//! gives NaN, as in ONNX Runtime.

use crate::Parallelism;
use crate::simd::{dispatch, exp_approx};
use crate::util::{SendPtr, for_each_chunk_mut, for_each_tile, numel};

/// Elements per parallel task (rounded to whole rows or column strips).
const CHUNK: usize = 16 * 1024;
/// Columns per strip when softmax runs along an axis other than the last.
const STRIP: usize = 256;
/// Lanes of the row maxima and sums.
const LANES: usize = 16;

/// Softmax along `axis`, in place.
///
/// # Panics
/// Shape contract: panics if `axis >= dims.len()` or `x.len()` does not match `dims`.
pub fn softmax(x: &mut [f32], dims: &[usize], axis: usize, par: Parallelism) {
    assert!(
        axis < dims.len(),
        "softmax: axis {axis} out of range for rank {}",
        dims.len()
    );
    assert_eq!(x.len(), numel(dims), "softmax: input length");
    let n = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    if n == 0 || inner == 0 || x.is_empty() {
        return;
    }
    let par = crate::util::par_for_work(par, 16 * x.len());
    if inner == 1 {
        let rows_per_chunk = (CHUNK / n).max(1);
        for_each_chunk_mut(x, rows_per_chunk * n, par, |_, c| softmax_rows(c, n));
        return;
    }
    let outer = x.len() / (n * inner);
    let strips = inner.div_ceil(STRIP);
    let base = SendPtr(x.as_mut_ptr());
    for_each_tile(outer * strips, par, |t| {
        let (o, s) = (t / strips, t % strips);
        let c0 = s * STRIP;
        let w = STRIP.min(inner - c0);
        // SAFETY: block `o` is `o * n * inner .. (o + 1) * n * inner` of `x`, which outlives
        // the loop; tile (o, s) touches only its columns `c0 .. c0 + w` of that block, so the
        // tiles never touch the same element.
        let block =
            unsafe { std::slice::from_raw_parts_mut(base.get().add(o * n * inner), n * inner) };
        softmax_columns(block, n, inner, c0, w);
    });
}

/// The maximum of a row, in [`LANES`] lanes combined in a fixed order (NaN is ignored here;
/// it reaches the result through the sum).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = if v > *a { v } else { *a };
    }
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            acc[i] = if acc[i + w] > acc[i] {
                acc[i + w]
            } else {
                acc[i]
            };
        }
        w /= 2;
    }
    acc[0]
}

/// `row[i] = exp(row[i] - mx)`, returning the sum of the new values in [`LANES`] lanes
/// combined pairwise in a fixed order.
#[inline(always)]
fn exp_sum(row: &mut [f32], mx: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c.iter_mut()) {
            *v = exp_approx(*v - mx);
            *a += *v;
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.into_remainder()) {
        *v = exp_approx(*v - mx);
        *a += *v;
    }
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            acc[i] += acc[i + w];
        }
        w /= 2;
    }
    acc[0]
}

dispatch! {
/// Softmax over contiguous rows of `n`.
fn softmax_rows(x: &mut [f32], n: usize) {
    for row in x.chunks_exact_mut(n) {
        let mx = row_max(row);
        let inv = 1.0 / exp_sum(row, mx);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}
}

dispatch! {
/// Softmax down the `n` rows (`stride` apart) of one `[n, inner]` block, for columns `c0 .. c0 + w`: every
/// column's maximum and sum run down the axis in row order, `w` columns side by side.
fn softmax_columns(block: &mut [f32], n: usize, stride: usize, c0: usize, w: usize) {
    let mut mx = [f32::NEG_INFINITY; STRIP];
    let mut sum = [0.0f32; STRIP];
    let (mx, sum) = (&mut mx[..w], &mut sum[..w]);
    for r in 0..n {
        let row = &block[r * stride + c0..r * stride + c0 + w];
        for (m, &v) in mx.iter_mut().zip(row) {
            *m = if v > *m { v } else { *m };
        }
    }
    for r in 0..n {
        let row = &mut block[r * stride + c0..r * stride + c0 + w];
        for ((v, &m), s) in row.iter_mut().zip(mx.iter()).zip(sum.iter_mut()) {
            *v = exp_approx(*v - m);
            *s += *v;
        }
    }
    for s in sum.iter_mut() {
        *s = 1.0 / *s;
    }
    for r in 0..n {
        let row = &mut block[r * stride + c0..r * stride + c0 + w];
        for (v, &s) in row.iter_mut().zip(sum.iter()) {
            *v *= s;
        }
    }
}
}
