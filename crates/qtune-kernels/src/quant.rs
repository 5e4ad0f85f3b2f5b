//! Linear quantization: ONNX QuantizeLinear / DequantizeLinear and the fused
//! quantize-dequantize ("fake quantization") the simulator runs.
//!
//! Layout: the data is `[outer, channels, inner]` with one scale and zero point
//! per channel (`channels == 1` is per-tensor). Semantics follow ONNX and ONNX
//! Runtime's MLAS kernels: `q = clamp(round_half_even(x / scale), qmin - zp,
//! qmax - zp) + zp` (clamping an integer-bounded interval before rounding equals
//! clamping after it), `x' = (q - zp) * scale` in f32. A NaN quantizes to the
//! type's minimum, as ONNX Runtime 1.32 does (ONNX leaves it undefined).

use qtune_simd::dispatch;

/// The integer range of a quantized type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QRange {
    pub min: i32,
    pub max: i32,
}

impl QRange {
    pub const I8: QRange = QRange {
        min: -128,
        max: 127,
    };
    pub const U8: QRange = QRange { min: 0, max: 255 };
}

fn check(len: usize, scale: &[f32], zp: &[i32], channels: usize, inner: usize) {
    assert!(channels > 0, "quantize: no channels");
    assert_eq!(scale.len(), channels, "quantize: scale length");
    assert_eq!(zp.len(), channels, "quantize: zero point length");
    assert!(
        inner > 0 && len.is_multiple_of(channels * inner),
        "quantize: data length {len} is not a multiple of {channels} x {inner}"
    );
}

#[inline(always)]
fn quantize_one(x: f32, scale: f32, zp: i32, range: QRange) -> i32 {
    #[allow(clippy::cast_precision_loss)]
    let (lo, hi) = ((range.min - zp) as f32, (range.max - zp) as f32);
    let v = (x / scale).clamp(lo, hi).round_ties_even();
    if v.is_nan() {
        return range.min;
    }
    #[allow(clippy::cast_possible_truncation)]
    let q = v as i32; // exact: v is an integer in [lo, hi]
    q + zp
}

/// `round_half_even(x / scale)` clamped so that adding `zp` stays in
/// `range` (a NaN gives the type's minimum), plus `zp`, as f32, stored
/// through `store`. Written so that it vectorizes; the three storage types
/// share it.
#[inline(always)]
fn quantize_values<T>(
    x: &[f32],
    scale: f32,
    zp: i32,
    range: QRange,
    out: &mut [T],
    store: impl Fn(f32) -> T,
) {
    #[allow(clippy::cast_precision_loss)]
    let (lo, hi, zpf) = ((range.min - zp) as f32, (range.max - zp) as f32, zp as f32);
    for (o, &v) in out.iter_mut().zip(x) {
        let q = (v / scale).clamp(lo, hi).round_ties_even();
        let q = if q.is_nan() { lo } else { q };
        *o = store(q + zpf); // an integer in [range.min, range.max]
    }
}

// The casts below are exact: the value is an integer within the storage
// type (the public functions check `range` against it).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
mod stores {
    pub(super) fn i32_of(v: f32) -> i32 {
        v as i32
    }
    // `v + 1.5 * 2^23` puts the integer `v` (|v| < 2^22) in the low
    // mantissa bits, `v + 2^22` exactly; its low byte is `v`'s two's
    // complement low byte. Integer lanes vectorize where a float -> int
    // cast (saturating, NaN-checked) stays scalar.
    const MAGIC: f32 = 12_582_912.0;
    pub(super) fn u8_of(v: f32) -> u8 {
        (v + MAGIC).to_bits() as u8
    }
    pub(super) fn i8_of(v: f32) -> i8 {
        (v + MAGIC).to_bits() as u8 as i8
    }
}

dispatch! {
    fn quantize_block(x: &[f32], scale: f32, zp: i32, range: QRange, out: &mut [i32]) {
        quantize_values(x, scale, zp, range, out, stores::i32_of);
    }
}

dispatch! {
    fn quantize_block_u8(x: &[f32], scale: f32, zp: i32, range: QRange, out: &mut [u8]) {
        quantize_values(x, scale, zp, range, out, stores::u8_of);
    }
}

dispatch! {
    fn quantize_block_i8(x: &[f32], scale: f32, zp: i32, range: QRange, out: &mut [i8]) {
        quantize_values(x, scale, zp, range, out, stores::i8_of);
    }
}

/// Runs `block` over each `[inner]` run of `x` with its channel's scale
/// and zero point.
fn per_channel<T>(
    x: &[f32],
    scale: &[f32],
    zp: &[i32],
    range: QRange,
    channels: usize,
    inner: usize,
    out: &mut [T],
    block: fn(&[f32], f32, i32, QRange, &mut [T]),
) {
    check(x.len(), scale, zp, channels, inner);
    assert_eq!(out.len(), x.len(), "quantize: output length");
    for (i, (xs, os)) in x.chunks(inner).zip(out.chunks_mut(inner)).enumerate() {
        let c = i % channels;
        block(xs, scale[c], zp[c], range, os);
    }
}

/// ONNX QuantizeLinear to integers in `range` (stored as i32).
pub fn quantize_linear(
    x: &[f32],
    scale: &[f32],
    zp: &[i32],
    range: QRange,
    channels: usize,
    inner: usize,
    out: &mut [i32],
) {
    per_channel(x, scale, zp, range, channels, inner, out, quantize_block);
}

/// [`quantize_linear`] into uint8 storage (`range` within 0..=255).
pub fn quantize_linear_u8(
    x: &[f32],
    scale: &[f32],
    zp: &[i32],
    range: QRange,
    channels: usize,
    inner: usize,
    out: &mut [u8],
) {
    assert!(range.min >= 0 && range.max <= 255, "quantize: u8 range");
    per_channel(x, scale, zp, range, channels, inner, out, quantize_block_u8);
}

/// [`quantize_linear`] into int8 storage (`range` within -128..=127).
pub fn quantize_linear_i8(
    x: &[f32],
    scale: &[f32],
    zp: &[i32],
    range: QRange,
    channels: usize,
    inner: usize,
    out: &mut [i8],
) {
    assert!(range.min >= -128 && range.max <= 127, "quantize: i8 range");
    per_channel(x, scale, zp, range, channels, inner, out, quantize_block_i8);
}

/// The slow, obviously correct form of [`quantize_linear`] (one element at
/// a time), for differential tests.
pub fn quantize_linear_reference(
    x: &[f32],
    scale: &[f32],
    zp: &[i32],
    range: QRange,
    channels: usize,
    inner: usize,
    out: &mut [i32],
) {
    check(x.len(), scale, zp, channels, inner);
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        let c = (i / inner) % channels;
        *o = quantize_one(v, scale[c], zp[c], range);
    }
}

/// ONNX DequantizeLinear from integers (i8, u8 or i32 widened to i32).
pub fn dequantize_linear(
    q: &[i32],
    scale: &[f32],
    zp: &[i32],
    channels: usize,
    inner: usize,
    out: &mut [f32],
) {
    check(q.len(), scale, zp, channels, inner);
    assert_eq!(out.len(), q.len(), "dequantize: output length");
    for (i, (qs, os)) in q.chunks(inner).zip(out.chunks_mut(inner)).enumerate() {
        let c = i % channels;
        for (o, &v) in os.iter_mut().zip(qs) {
            #[allow(clippy::cast_precision_loss)]
            let d = (v - zp[c]) as f32; // |v - zp| < 2^24 for 8-bit data
            *o = d * scale[c];
        }
    }
}

dispatch! {
    fn fake_quantize_block(x: &mut [f32], scale: f32, zp: i32, range: QRange) {
        #[allow(clippy::cast_precision_loss)]
        let (lo, hi) = ((range.min - zp) as f32, (range.max - zp) as f32);
        for v in x.iter_mut() {
            // `q - zp` of the two-step form is this rounded value exactly (an
            // integer, so -0 becomes +0); a NaN becomes the type's minimum as
            // in `quantize_one`.
            let q = (*v / scale).clamp(lo, hi).round_ties_even() + 0.0;
            let q = if q.is_nan() { lo } else { q };
            *v = q * scale;
        }
    }
}

/// QuantizeLinear followed by DequantizeLinear, in place, bit-identical to
/// [`quantize_linear`] then [`dequantize_linear`].
pub fn fake_quantize(
    x: &mut [f32],
    scale: &[f32],
    zp: &[i32],
    range: QRange,
    channels: usize,
    inner: usize,
) {
    check(x.len(), scale, zp, channels, inner);
    for (i, block) in x.chunks_mut(inner).enumerate() {
        let c = i % channels;
        fake_quantize_block(block, scale[c], zp[c], range);
    }
}

dispatch! {
    fn round_to_f16_block(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = f16_round(*v);
        }
    }
}

dispatch! {
    fn round_to_bf16_block(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = bf16_round(*v);
        }
    }
}

/// `x` rounded to the nearest IEEE half (ties to even), as f32: values the
/// half range cannot hold become infinite, half subnormals keep their
/// 2^-24 quantum, NaN and infinities pass through. Branch-free so that it
/// vectorizes; [`round_to_f16_reference`] is the `half` crate's conversion.
#[inline(always)]
fn f16_round(x: f32) -> f32 {
    let bits = x.to_bits();
    let abs = bits & 0x7FFF_FFFF;
    // Normal halves: drop 13 mantissa bits, ties to even.
    let lsb = (bits >> 13) & 1;
    let normal = f32::from_bits(bits.wrapping_add(0x0FFF + lsb) & !0x1FFF);
    let normal = if normal.abs() > 65504.0 {
        f32::INFINITY.copysign(x)
    } else {
        normal
    };
    // Subnormal halves (|x| < 2^-14): multiples of 2^-24 (exact scalings).
    let sub = (x * 16_777_216.0).round_ties_even() * (1.0 / 16_777_216.0);
    if abs >= 0x7F80_0000 {
        x
    } else if abs < 0x3880_0000 {
        sub
    } else {
        normal
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even), as f32; NaN stays
/// NaN.
#[inline(always)]
fn bf16_round(x: f32) -> f32 {
    let bits = x.to_bits();
    let lsb = (bits >> 16) & 1;
    let r = f32::from_bits(bits.wrapping_add(0x7FFF + lsb) & 0xFFFF_0000);
    if x.is_nan() { x } else { r }
}

/// Rounds f32 values to the nearest IEEE half (ties to even) and back. On
/// AVX-512 CPUs with the conversion instructions enabled (not
/// `QTUNE_F16_CONVERT=0`) through `vcvtps2ph` / `vcvtph2ps`, which round
/// the same way (overflow to infinity, half subnormals kept, f32
/// subnormals to zero); NaNs are copied back unchanged, as the portable
/// loop leaves them, so both paths give the same bits (tested).
pub fn round_to_f16(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if f16_convert_available() {
        // SAFETY: the CPU has AVX-512 F (checked by `f16_convert_available`).
        unsafe { round_to_f16_convert(x) };
        return;
    }
    round_to_f16_block(x);
}

/// Whether [`round_to_f16`] uses the conversion instructions.
#[cfg(target_arch = "x86_64")]
fn f16_convert_available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::env::var("QTUNE_F16_CONVERT").map_or(true, |v| v != "0")
    })
}

/// [`round_to_f16`] by the AVX-512 conversions, 16 values at a time (the
/// tail by [`f16_round`]).
///
/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn round_to_f16_convert(x: &mut [f32]) {
    use std::arch::x86_64::{
        _CMP_UNORD_Q, _MM_FROUND_NO_EXC, _MM_FROUND_TO_NEAREST_INT, _mm512_cmp_ps_mask,
        _mm512_cvtph_ps, _mm512_cvtps_ph, _mm512_loadu_ps, _mm512_mask_mov_ps, _mm512_storeu_ps,
    };
    let (blocks, tail) = x.as_chunks_mut::<16>();
    for b in blocks {
        let p = b.as_mut_ptr();
        // SAFETY: `p` points at 16 f32 values of `x`.
        let v = unsafe { _mm512_loadu_ps(p) };
        let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
        let r = _mm512_cvtph_ps(h);
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(p, _mm512_mask_mov_ps(r, nan, v)) };
    }
    for v in tail {
        *v = f16_round(*v);
    }
}

/// Rounds f32 values to the nearest bfloat16 (ties to even) and back.
pub fn round_to_bf16(x: &mut [f32]) {
    round_to_bf16_block(x);
}

/// [`round_to_f16`] through the `half` crate, one value at a time.
pub fn round_to_f16_reference(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = half::f16::from_f32(*v).to_f32();
    }
}

/// [`round_to_bf16`] through the `half` crate, one value at a time.
pub fn round_to_bf16_reference(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = half::bf16::from_f32(*v).to_f32();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_float_rounding_equals_half() {
        // A sweep over the whole f32 bit space plus the edges.
        let mut x: Vec<f32> = (0..=u32::MAX / 4099)
            .map(|i| f32::from_bits(i * 4099))
            .collect();
        x.extend([
            0.0,
            -0.0,
            65504.0,
            65519.99,
            65520.0,
            -65520.0,
            6.1035156e-5,
            5.9604645e-8,
            2.9802322e-8,
            2.9802326e-8,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0 + 2f32.powi(-10),
            1.0 + 2f32.powi(-11),
            3.3895314e38,
        ]);
        type Rounding = fn(&mut [f32]);
        let pairs: [(&str, Rounding, Rounding); 2] = [
            ("f16", super::round_to_f16, super::round_to_f16_reference),
            ("bf16", super::round_to_bf16, super::round_to_bf16_reference),
        ];
        for (name, fast, reference) in pairs {
            let mut a = x.clone();
            let mut b = x.clone();
            fast(&mut a);
            reference(&mut b);
            for ((&v, &p), &q) in x.iter().zip(&a).zip(&b) {
                assert!(
                    p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
                    "{name} {v:e}: {p:e} vs {q:e}"
                );
            }
        }
    }

    /// The conversion instructions against the portable loop, bit for bit
    /// (NaN payloads included), over the f32 bit space: lengths that leave
    /// a tail, and NaNs of several payloads.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f16_conversion_instructions_equal_the_portable_loop() {
        if !super::f16_convert_available() {
            eprintln!("no AVX-512 here (or QTUNE_F16_CONVERT=0): the portable loop alone runs");
            return;
        }
        let mut x: Vec<f32> = (0..=u32::MAX / 4093)
            .map(|i| f32::from_bits(i * 4093))
            .collect();
        x.extend([
            f32::from_bits(0x7FC0_0001),
            f32::from_bits(0xFF80_0001),
            f32::from_bits(0x7F80_1234),
            65519.99,
            65520.0,
            2.9802322e-8,
            2.9802326e-8,
        ]);
        for len in [x.len(), x.len() - 5, 15, 16, 17] {
            let mut a = x[..len].to_vec();
            let mut b = a.clone();
            // SAFETY: checked above.
            unsafe { super::round_to_f16_convert(&mut a) };
            super::round_to_f16_block(&mut b);
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert_eq!(
                    p.to_bits(),
                    q.to_bits(),
                    "{:e} (bits {:#x})",
                    x[i],
                    x[i].to_bits()
                );
            }
        }
    }

    #[test]
    fn fast_quantize_equals_reference() {
        let x: Vec<f32> = (0..3 * 5 * 37)
            .map(|i| {
                let i = i as f32;
                (i * 0.37).sin() * 40.0
                    + if (i as usize).is_multiple_of(11) {
                        0.5
                    } else {
                        0.0
                    }
            })
            .chain([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 2.5, -2.5])
            .collect();
        let n = x.len();
        for (range, zp) in [
            (super::QRange::I8, 0),
            (super::QRange::U8, 128),
            (super::QRange::U8, 3),
        ] {
            for (channels, inner) in [(1, n), (n / 3, 3)] {
                if !n.is_multiple_of(channels * inner) {
                    continue;
                }
                let scale: Vec<f32> = (0..channels).map(|c| 0.1 + c as f32 * 0.013).collect();
                let zps = vec![zp; channels];
                let (mut a, mut b) = (vec![0; n], vec![0; n]);
                super::quantize_linear(&x, &scale, &zps, range, channels, inner, &mut a);
                super::quantize_linear_reference(&x, &scale, &zps, range, channels, inner, &mut b);
                assert_eq!(a, b, "{range:?} zp {zp} channels {channels}");
                if range == super::QRange::U8 {
                    let mut c = vec![0u8; n];
                    super::quantize_linear_u8(&x, &scale, &zps, range, channels, inner, &mut c);
                    assert!(c.iter().zip(&b).all(|(&c, &b)| i32::from(c) == b));
                } else {
                    let mut c = vec![0i8; n];
                    super::quantize_linear_i8(&x, &scale, &zps, range, channels, inner, &mut c);
                    assert!(c.iter().zip(&b).all(|(&c, &b)| i32::from(c) == b));
                }
            }
        }
    }

    use super::*;

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let x = [0.5f32, 1.5, 2.5, -0.5, 300.0, -300.0, f32::NAN, 0.26];
        let mut q = [0i32; 8];
        quantize_linear(&x, &[1.0], &[0], QRange::I8, 1, 8, &mut q);
        assert_eq!(q, [0, 2, 2, 0, 127, -128, -128, 0]);
        quantize_linear(&x, &[0.5], &[10], QRange::U8, 1, 8, &mut q);
        assert_eq!(q, [11, 13, 15, 9, 255, 0, 0, 11]);
    }

    #[test]
    fn fake_quantize_equals_quantize_then_dequantize() {
        let x: Vec<f32> = (0..600)
            .map(|i| ((i * 37) % 601) as f32 * 0.0173 - 4.9)
            .collect();
        let (scale, zp) = ([0.031f32, 0.007, 0.05], [0i32, 3, -7]);
        for range in [QRange::I8, QRange::U8] {
            let zp = if range == QRange::U8 { [0, 3, 128] } else { zp };
            let mut q = vec![0i32; x.len()];
            quantize_linear(&x, &scale, &zp, range, 3, 20, &mut q);
            let mut dq = vec![0f32; x.len()];
            dequantize_linear(&q, &scale, &zp, 3, 20, &mut dq);
            let mut fq = x.clone();
            fake_quantize(&mut fq, &scale, &zp, range, 3, 20);
            assert_eq!(
                fq.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                dq.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            // Idempotent.
            let once = fq.clone();
            fake_quantize(&mut fq, &scale, &zp, range, 3, 20);
            assert_eq!(fq, once);
        }
    }

    #[test]
    fn half_rounding() {
        let mut x = [1.0f32 + 1.0 / 4096.0, 65520.0, 1.0 + 1.0 / 256.0];
        round_to_f16(&mut x);
        assert_eq!(x[0], 1.0); // tie to even
        assert!(x[1].is_infinite());
        let mut y = [1.0f32 + 1.0 / 256.0, 1.0 + 3.0 / 256.0];
        round_to_bf16(&mut y);
        assert_eq!(y, [1.0, 1.0 + 4.0 / 256.0]); // ties to even
    }
}
