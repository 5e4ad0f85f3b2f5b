//! Fake quantization used by the threshold tuner (spec sections 3.4, 3.5).
//!
//! Activations: symmetric int8 with threshold `T`, as TPU-MLIR's
//! `import_quant_bias`: `s = 127/T`, `q = clip(round(v*s), -128, 127)`,
//! result `q/s`. Rounding is half to even (numpy `round`).
//!
//! Weights: TPU-MLIR's tuner loads the model with `fake_quant_weight()`,
//! which quantizes weights inside its C++ interpreter. qtune does
//! per-output-channel symmetric int8: `scale_c = max|w_c| / 127`,
//! `w' = clip(round_half_even(w / scale_c), -127, 127) * scale_c`, for the
//! weight of Conv (axis 0, OIHW), Gemm (axis 0 of B when `transB`, else
//! axis 1) and MatMul with a constant 2-D B (axis 1). Biases stay float
//! (TPU-MLIR's int32 bias has a step far below the activations' and does
//! not move the tuner's choice).
#![deny(clippy::as_conversions)]

use qtune_ir::Op;
use qtune_tensor::Tensor;

/// Fake-quantizes `x` in place with threshold `threshold` (int8, symmetric).
pub fn fake_quant_activation(x: &mut [f32], threshold: f64) {
    ActivationFakeQuant::new(threshold).apply_in_place(x);
}

/// The activation fake quantization for one threshold, prepared once:
/// `q = round_half_even(clamp(v*s, -128, 127))`, result `q/s`, with
/// `s = f32(127/T)` (the scale is computed in float64 and applied in
/// float32, as numpy does for a float32 array times a Python float). A
/// threshold whose scale is not a positive finite f32 leaves data as is.
///
/// `q/s` is one of 256 values, so the division can be checked once, for
/// every `q`, against `t = q*r; q/s ~ fma(fma(-t, s, q), r, t)` with
/// `r = 1/s` (Markstein's correction step; three cheap operations instead
/// of a division). When all 256 agree bit for bit the loop uses it,
/// otherwise the division: either way the results are those of `q/s`.
#[derive(Clone, Copy, Debug)]
pub struct ActivationFakeQuant {
    s32: f32,
    inv: f32,
    identity: bool,
    corrected_reciprocal: bool,
}

impl ActivationFakeQuant {
    pub fn new(threshold: f64) -> Self {
        let s = 127.0 / threshold;
        #[allow(clippy::as_conversions, clippy::cast_possible_truncation)]
        let s32 = s as f32; // narrowing to the data's precision is intended
        if !s32.is_finite() || s32 <= 0.0 {
            return ActivationFakeQuant {
                s32,
                inv: 1.0,
                identity: true,
                corrected_reciprocal: false,
            };
        }
        let inv = 1.0 / s32;
        let corrected_reciprocal = (-128i16..=127).all(|q| {
            let q = f32::from(q);
            divide_corrected(q, s32, inv).to_bits() == (q / s32).to_bits()
        });
        ActivationFakeQuant {
            s32,
            inv,
            identity: false,
            corrected_reciprocal,
        }
    }

    /// `dst = fq(src)`.
    ///
    /// # Panics
    /// When the lengths differ.
    pub fn apply(&self, src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len(), "fake quantization: slice lengths");
        if self.identity {
            dst.copy_from_slice(src);
        } else if self.corrected_reciprocal {
            fq_into_corrected(src, dst, self.s32, self.inv);
        } else {
            fq_into(src, dst, self.s32);
        }
    }

    pub fn apply_in_place(&self, x: &mut [f32]) {
        if self.identity {
            return;
        }
        if self.corrected_reciprocal {
            fq_in_place_corrected(x, self.s32, self.inv);
        } else {
            fq_in_place(x, self.s32);
        }
    }
}

/// `q/s` from `r = 1/s` by one correction step (exact when checked, see
/// [`ActivationFakeQuant`]).
#[inline]
fn divide_corrected(q: f32, s: f32, r: f32) -> f32 {
    let t = q * r;
    (-t).mul_add(s, q).mul_add(r, t)
}

/// `round_half_even(clamp(v * s32, -128, 127))`. Clamping first is exact
/// (the bounds are integers and rounding is monotonic) and keeps |y| small
/// enough for [`round_half_even`].
#[inline]
fn quantize(v: f32, s32: f32) -> f32 {
    round_half_even((v * s32).clamp(-128.0, 127.0))
}

qtune_simd::dispatch! {
    /// The loop of [`fake_quant_activation`], with the division.
    fn fq_in_place(x: &mut [f32], s32: f32) {
        for v in x.iter_mut() {
            *v = quantize(*v, s32) / s32;
        }
    }
}

qtune_simd::dispatch! {
    /// [`fq_in_place`] with the checked corrected reciprocal.
    fn fq_in_place_corrected(x: &mut [f32], s32: f32, inv: f32) {
        for v in x.iter_mut() {
            *v = divide_corrected(quantize(*v, s32), s32, inv);
        }
    }
}

/// Round half to even for |y| <= 2^22, without a libm call (without SSE4.1
/// `f32::round_ties_even` is a call to `rintf`, which dominated tuning):
/// adding and subtracting 1.5 * 2^23 leaves the nearest integer, ties to
/// even, under the default rounding mode. NaN stays NaN.
#[inline]
fn round_half_even(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (y + MAGIC) - MAGIC
}

/// [`fake_quant_activation`] of `src` written to `dst` (resized to it), in
/// one pass: bit-identical to copying `src` and fake-quantizing the copy,
/// without the copy. `dst` keeps its allocation between calls.
pub fn fake_quant_activation_into(src: &[f32], dst: &mut Vec<f32>, threshold: f64) {
    // Every element is overwritten: only a growing `dst` is filled first.
    dst.resize(src.len(), 0.0);
    ActivationFakeQuant::new(threshold).apply(src, dst);
}

qtune_simd::dispatch! {
    /// `dst[i] = quantize(src[i]) / s32`, the loop of
    /// [`fake_quant_activation`] (IEEE operations only, so every compiled
    /// copy rounds alike).
    fn fq_into(src: &[f32], dst: &mut [f32], s32: f32) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = quantize(v, s32) / s32;
        }
    }
}

qtune_simd::dispatch! {
    /// [`fq_into`] with the checked corrected reciprocal.
    fn fq_into_corrected(src: &[f32], dst: &mut [f32], s32: f32, inv: f32) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = divide_corrected(quantize(v, s32), s32, inv);
        }
    }
}

/// The activation fake quantization of a whole tensor (f32 only; other
/// dtypes are returned unchanged).
pub fn fake_quant_tensor(t: &Tensor, threshold: f64) -> Tensor {
    let Ok(data) = t.as_f32() else {
        return t.clone();
    };
    let mut v = Vec::new();
    fake_quant_activation_into(data, &mut v, threshold);
    Tensor::from_f32(t.shape().clone(), v).unwrap_or_else(|_| t.clone())
}

/// Per-channel symmetric int8 fake quantization of `w` along `axis`.
pub fn fake_quant_weight_per_channel(w: &Tensor, axis: usize) -> Tensor {
    let Ok(data) = w.as_f32() else {
        return w.clone();
    };
    let dims = w.dims();
    if axis >= dims.len() || data.is_empty() {
        return w.clone();
    }
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    let mut max_abs = vec![0.0f32; channels];
    for o in 0..outer {
        for (c, m) in max_abs.iter_mut().enumerate() {
            let start = (o * channels + c) * inner;
            for &v in &data[start..start + inner] {
                *m = m.max(v.abs());
            }
        }
    }
    let mut out = data.to_vec();
    for o in 0..outer {
        for (c, &m) in max_abs.iter().enumerate() {
            if m <= 0.0 || !m.is_finite() {
                continue;
            }
            let scale = m / 127.0;
            let start = (o * channels + c) * inner;
            for v in &mut out[start..start + inner] {
                *v = round_half_even(*v / scale).clamp(-127.0, 127.0) * scale;
            }
        }
    }
    Tensor::from_f32(w.shape().clone(), out).unwrap_or_else(|_| w.clone())
}

/// The output-channel axis of the weight at input `index` of `op`, if that
/// input is a weight the tuner fake-quantizes.
pub fn weight_channel_axis(op: &Op, index: usize, rank: usize) -> Option<usize> {
    match (op, index) {
        (Op::Conv(_), 1) if rank >= 2 => Some(0),
        (Op::Gemm(a), 1) if rank == 2 => Some(if a.trans_b { 0 } else { 1 }),
        (Op::MatMul, 1) if rank == 2 => Some(1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_rounds_half_to_even_and_clips() {
        // T = 127 gives s = 1: ties go to even, values clip to [-128, 127].
        let mut x = [0.5f32, 1.5, 2.5, -0.5, 200.0, -200.0, 3.2];
        fake_quant_activation(&mut x, 127.0);
        assert_eq!(x, [0.0, 2.0, 2.0, -0.0, 127.0, -128.0, 3.0]);
    }

    #[test]
    fn fast_rounding_equals_round_ties_even() {
        let mut y = -130.0f32;
        while y <= 130.0 {
            assert_eq!(round_half_even(y), y.round_ties_even(), "{y}");
            y += 0.125;
        }
        for y in [0.49999997f32, -0.49999997, 126.5, -127.5, 1e-30, -0.0] {
            assert_eq!(round_half_even(y), y.round_ties_even(), "{y}");
        }
        assert!(round_half_even(f32::NAN).is_nan());
    }

    #[test]
    fn prepared_fake_quant_equals_the_division_for_every_threshold() {
        let src: Vec<f32> = (0u16..3000)
            .map(|i| (f32::from(i) - 1500.0) * 0.00731)
            .chain([f32::INFINITY, -f32::INFINITY, -0.0, 1e-30, 0.0])
            .collect();
        let mut corrected = 0u32;
        let mut total = 0u32;
        let mut dst = vec![0.0f32; src.len()];
        for k in 1u16..=2000 {
            let th = f64::from(k) * 0.0137;
            let fq = ActivationFakeQuant::new(th);
            total += 1;
            corrected += u32::from(fq.corrected_reciprocal);
            fq.apply(&src, &mut dst);
            let mut in_place = src.clone();
            fq.apply_in_place(&mut in_place);
            #[allow(clippy::as_conversions, clippy::cast_possible_truncation)]
            let s32 = (127.0 / th) as f32;
            for ((&v, &got), &got2) in src.iter().zip(&dst).zip(&in_place) {
                let want = quantize(v, s32) / s32;
                assert_eq!(got.to_bits(), want.to_bits(), "threshold {th} value {v}");
                assert_eq!(got2.to_bits(), want.to_bits(), "threshold {th} value {v}");
            }
        }
        // The division-free loop is the common case (else it buys nothing).
        assert!(corrected * 10 >= total * 9, "{corrected} of {total}");
    }

    #[test]
    fn into_equals_in_place() {
        let src: Vec<f32> = (0u16..1000)
            .map(|i| (f32::from(i) - 500.0) * 0.0137)
            .chain([f32::NAN, f32::INFINITY, -f32::INFINITY, -0.0, 1e-30])
            .collect();
        let mut dst = vec![7.0f32; 3];
        for th in [0.3, 1.0, 2.7, 6.0, 1e-40, 0.0, f64::INFINITY] {
            let mut want = src.clone();
            fake_quant_activation(&mut want, th);
            fake_quant_activation_into(&src, &mut dst, th);
            assert_eq!(want.len(), dst.len());
            for (a, b) in want.iter().zip(&dst) {
                assert_eq!(a.to_bits(), b.to_bits(), "threshold {th}");
            }
        }
    }

    #[test]
    fn activation_is_idempotent() {
        let mut x: Vec<f32> = (0u8..100).map(|i| (f32::from(i) - 50.0) * 0.037).collect();
        fake_quant_activation(&mut x, 1.3);
        let once = x.clone();
        fake_quant_activation(&mut x, 1.3);
        assert_eq!(x, once);
    }

    #[test]
    fn weight_per_channel_keeps_channel_max() {
        let w = Tensor::from_f32(vec![2, 3], vec![1.0, -0.5, 0.25, 0.0, 0.0, 0.0]).unwrap();
        let q = fake_quant_weight_per_channel(&w, 0);
        let d = q.as_f32().unwrap();
        assert_eq!(d[0], 1.0);
        assert!((d[1] + 0.5).abs() <= 0.5 / 127.0);
        assert_eq!(&d[3..], &[0.0, 0.0, 0.0]);
    }
}
