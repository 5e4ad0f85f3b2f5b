//! Normalisations: ONNX `BatchNormalization` (opset 9-15, inference form: running mean and
//! variance, `training_mode = 0`) and `Softmax` (opset 13 semantics: along one axis;
//! opset < 13's "flatten from axis" form is handled by the caller by passing `[outer, inner]`
//! dims and axis 1).

use crate::simd::{dispatch, exp_approx};
use crate::util::numel;
use std::mem::MaybeUninit;

/// Inference batch normalisation over input `[n, c, ...]` (any trailing spatial axes):
/// `y = (x - mean) / sqrt(var + epsilon) * scale + bias`, computed as `x * a + b` with
/// `a = scale / sqrt(var + epsilon)` and `b = bias - mean * a` per channel.
///
/// # Panics
/// Shape contract: panics if a slice length does not match `in_dims` (per-channel slices
/// have length `c = in_dims[1]`).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    input: &[f32],
    in_dims: &[usize],
    scale: &[f32],
    bias: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f32,
    out: &mut [f32],
) {
    // SAFETY: `batch_norm_uninit` only writes initialised f32 values, so
    // `out` stays initialised.
    let out = unsafe { &mut *(std::ptr::from_mut(out) as *mut [MaybeUninit<f32>]) };
    batch_norm_uninit(input, in_dims, scale, bias, mean, var, epsilon, out);
}

/// [`batch_norm`] into an uninitialised buffer; every element of `out` is
/// written.
///
/// # Panics
/// As [`batch_norm`].
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_uninit(
    input: &[f32],
    in_dims: &[usize],
    scale: &[f32],
    bias: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f32,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(in_dims.len() >= 2, "batch_norm: input rank must be >= 2");
    let c = in_dims[1];
    let inner: usize = in_dims[2..].iter().product();
    assert_eq!(input.len(), numel(in_dims), "batch_norm: input length");
    assert_eq!(out.len(), input.len(), "batch_norm: output length");
    for (name, s) in [
        ("scale", scale),
        ("bias", bias),
        ("mean", mean),
        ("var", var),
    ] {
        assert_eq!(s.len(), c, "batch_norm: {name} length");
    }
    if inner == 0 {
        return;
    }
    for (i, (o, x)) in out
        .chunks_exact_mut(inner)
        .zip(input.chunks_exact(inner))
        .enumerate()
    {
        let ch = i % c;
        let (a, b) = batch_norm_coefficients(scale[ch], bias[ch], mean[ch], var[ch], epsilon);
        affine(o, x, a, b);
    }
}

/// `(a, b)` of one channel of [`batch_norm`]: `a = scale / sqrt(var + epsilon)`,
/// `b = bias - mean * a`, so that `y = x * a + b` ([`affine_in_place`]).
pub fn batch_norm_coefficients(
    scale: f32,
    bias: f32,
    mean: f32,
    var: f32,
    epsilon: f32,
) -> (f32, f32) {
    let a = scale / (var + epsilon).sqrt();
    (a, bias - mean * a)
}

/// `x = x * a + b`, the per-channel step of [`batch_norm`] (the same
/// operations, so the same bits), in place.
pub fn affine_in_place(x: &mut [f32], a: f32, b: f32) {
    affine_inplace(x, a, b);
}

dispatch! {
fn affine_inplace(x: &mut [f32], a: f32, b: f32) {
    for v in x.iter_mut() {
        *v = *v * a + b;
    }
}
}

/// Softmax along `axis`, in place: `exp(x - max) / sum(exp(x - max))` (numerically stable).
/// A slice along `axis` that is all `-inf` gives NaN, as in ONNX Runtime.
///
/// # Panics
/// Shape contract: panics if `axis >= dims.len()` or `x.len()` does not match `dims`.
pub fn softmax(x: &mut [f32], dims: &[usize], axis: usize) {
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
    if inner == 1 {
        softmax_rows(x, n);
        return;
    }
    let mut mx = vec![0.0f32; inner];
    let mut sum = vec![0.0f32; inner];
    for block in x.chunks_exact_mut(n * inner) {
        mx.fill(f32::NEG_INFINITY);
        for row in block.chunks_exact(inner) {
            for (m, v) in mx.iter_mut().zip(row) {
                *m = m.max(*v);
            }
        }
        sum.fill(0.0);
        for row in block.chunks_exact_mut(inner) {
            for ((v, m), s) in row.iter_mut().zip(&mx).zip(sum.iter_mut()) {
                *v = (*v - *m).exp();
                *s += *v;
            }
        }
        for s in sum.iter_mut() {
            *s = 1.0 / *s;
        }
        for row in block.chunks_exact_mut(inner) {
            for (v, s) in row.iter_mut().zip(&sum) {
                *v *= *s;
            }
        }
    }
}

crate::simd::dispatch! {
/// `o = x * a + b`.
fn affine(o: &mut [MaybeUninit<f32>], x: &[f32], a: f32, b: f32) {
    for (o, x) in o.iter_mut().zip(x) {
        o.write(*x * a + b);
    }
}
}

dispatch! {
/// Softmax over contiguous rows of `n`: the exponentials use the vectorised
/// [`exp_approx`] (relative error below 1e-6), the sum stays sequential so the
/// result does not depend on the vector width.
fn softmax_rows(x: &mut [f32], n: usize) {
    for row in x.chunks_exact_mut(n) {
        let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for v in row.iter_mut() {
            *v = exp_approx(*v - mx);
        }
        let sum = row.iter().fold(0.0f32, |a, &b| a + b);
        let inv = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}
}
