//! GELU, ONNX `Gelu` (<https://onnx.ai/onnx/operators/onnx__Gelu.html>, opset 20) and
//! TPU-MLIR's `top.GELU`, as one vector pass:
//!
//! * [`GeluApproximation::Erf`] (`approximate = "none"`): `x * (erf(x / sqrt 2) + 1) * 0.5`,
//!   computed as the f32 sequence of the pattern PyTorch exports (`Div(x, sqrt 2)`, `Erf`,
//!   `Add(1)`, `Mul(x, .)`, `Mul(0.5)`) with qtune's `Erf` ([`crate::UnaryOp::Erf`], absolute
//!   error below 1.5e-7): a graph whose decomposed GELU is replaced by this kernel gives
//!   bit-identical results on qtune's executor (tested).
//! * [`GeluApproximation::Tanh`] (`approximate = "tanh"`):
//!   `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`, computed as the equal
//!   `x * sigmoid(2 sqrt(2 / pi) (x + 0.044715 x^3))`, which has no cancellation near
//!   `tanh = -1`; the sigmoid uses the vectorised exponential (relative error below 1e-6).
//!
//! Elementwise, so results do not depend on the chunking or the thread count.
//!
//! The executor's `Gelu` with `approximate = "none"` (the op TPU-MLIR's canonical graph
//! fuses from the `Div`/`Erf`/`Add`/`Mul`/`Mul` pattern, and that the QDQ export writes back
//! as that pattern) is this kernel, so the fused graph computes what the source model
//! computes on qtune. The tanh form stays [`crate::UnaryOp::GeluTanh`] on the executor (each
//! element in f64, rounded once): this kernel's sigmoid form differs from it in the last bits.

use crate::Parallelism;
use crate::simd::{dispatch, erf_approx, exp_approx};
use crate::util::for_each_chunk_mut;
use std::mem::MaybeUninit;

/// Elements per parallel task.
const CHUNK: usize = 16 * 1024;

/// Which GELU formula (ONNX `Gelu`'s `approximate` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum GeluApproximation {
    /// The exact form with the error function (`approximate = "none"`).
    #[default]
    Erf,
    /// The tanh approximation (`approximate = "tanh"`).
    Tanh,
}

/// GELU of every element of `x`, in place.
pub fn gelu(x: &mut [f32], approximation: GeluApproximation, par: Parallelism) {
    let par = crate::util::par_for_work(par, 16 * x.len());
    for_each_chunk_mut(x, CHUNK, par, |_, c| match approximation {
        GeluApproximation::Erf => gelu_erf_slice(c),
        GeluApproximation::Tanh => gelu_tanh_slice(c),
    });
}

/// [`gelu`] of `x` written to `out` (uninitialised, the length of `x`); every element of
/// `out` is written.
///
/// # Panics
/// When the lengths differ.
pub fn gelu_into(
    x: &[f32],
    out: &mut [MaybeUninit<f32>],
    approximation: GeluApproximation,
    par: Parallelism,
) {
    assert_eq!(x.len(), out.len(), "gelu_into: lengths");
    let par = crate::util::par_for_work(par, 16 * x.len());
    for_each_chunk_mut(out, CHUNK, par, |i, c| {
        let src = &x[i * CHUNK..i * CHUNK + c.len()];
        for (o, &v) in c.iter_mut().zip(src) {
            o.write(v);
        }
        // SAFETY: every element of `c` was written just above.
        let c = unsafe { &mut *(std::ptr::from_mut(c) as *mut [f32]) };
        match approximation {
            GeluApproximation::Erf => gelu_erf_slice(c),
            GeluApproximation::Tanh => gelu_tanh_slice(c),
        }
    });
}

/// One element of the erf form, in the decomposed graph's order.
#[inline(always)]
pub(crate) fn gelu_erf1(x: f32) -> f32 {
    (x * (erf_approx(x / std::f32::consts::SQRT_2) + 1.0)) * 0.5
}

/// One element of the tanh form.
#[inline(always)]
pub(crate) fn gelu_tanh1(x: f32) -> f32 {
    // 2 * sqrt(2 / pi): sigmoid(2 t) = (1 + tanh(t)) / 2.
    const TWO_SQRT_2_OVER_PI: f32 = 1.595_769_2;
    let t = TWO_SQRT_2_OVER_PI * (x + 0.044_715 * (x * x * x));
    x / (1.0 + exp_approx(-t))
}

dispatch! {
fn gelu_erf_slice(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_erf1(*v);
    }
}
}

dispatch! {
fn gelu_tanh_slice(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_tanh1(*v);
    }
}
}
