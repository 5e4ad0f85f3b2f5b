//! Batch normalisation: ONNX `BatchNormalization` (opset 9-15, inference form: running mean
//! and variance, `training_mode = 0`). `Softmax` is in `softmax.rs`, `LayerNormalization` in
//! `layer_norm.rs`.

use crate::simd::dispatch;
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

crate::simd::dispatch! {
/// `o = x * a + b`.
fn affine(o: &mut [MaybeUninit<f32>], x: &[f32], a: f32, b: f32) {
    for (o, x) in o.iter_mut().zip(x) {
        o.write(*x * a + b);
    }
}
}
