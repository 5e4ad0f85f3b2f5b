//! The sums behind a cosine and a signal-to-noise ratio, in f64 over f32
//! tensors: `a . b`, `a . a`, `b . b` ([`cos_sums`]) and `(b - a) . (b - a)`,
//! `a . a` ([`snr_sums`]). Every search compares each layer or output of
//! every trial with the float model's through them.
//!
//! Order: element `i` goes to partial sum `i % LANES`, the partial sums are
//! added in lane order at the end, and every product and sum is rounded
//! once (no fused multiply-add). The AVX-512 copy keeps one lane per vector
//! element and gives the bits of the portable one ([`cos_sums_reference`],
//! [`snr_sums_reference`]) on every input.

/// Partial sums per quantity.
pub const LANES: usize = 8;

/// `[a . b, a . a, b . b]` over the shorter of the two lengths.
pub fn cos_sums(a: &[f32], b: &[f32]) -> [f64; 3] {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if qtune_simd::has_avx512() {
        // SAFETY: the CPU has every feature `avx512::cos_sums` is compiled for.
        return unsafe { avx512::cos_sums(a, b) };
    }
    cos_sums_reference(a, b)
}

/// `[(b - a) . (b - a), a . a]` over the shorter of the two lengths.
pub fn snr_sums(a: &[f32], b: &[f32]) -> [f64; 2] {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if qtune_simd::has_avx512() {
        // SAFETY: the CPU has every feature `avx512::snr_sums` is compiled for.
        return unsafe { avx512::snr_sums(a, b) };
    }
    snr_sums_reference(a, b)
}

/// [`cos_sums`], one element at a time.
pub fn cos_sums_reference(a: &[f32], b: &[f32]) -> [f64; 3] {
    let mut lanes = [[0.0f64; LANES]; 3];
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (f64::from(x), f64::from(y));
        lanes[0][i % LANES] += x * y;
        lanes[1][i % LANES] += x * x;
        lanes[2][i % LANES] += y * y;
    }
    lanes.map(|l| l.iter().sum())
}

/// [`snr_sums`], one element at a time.
pub fn snr_sums_reference(a: &[f32], b: &[f32]) -> [f64; 2] {
    let mut lanes = [[0.0f64; LANES]; 2];
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (f64::from(x), f64::from(y));
        lanes[0][i % LANES] += (y - x) * (y - x);
        lanes[1][i % LANES] += x * x;
    }
    lanes.map(|l| l.iter().sum())
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::LANES;
    use std::arch::x86_64::*;

    /// 8 f32 widened to 8 f64.
    ///
    /// # Safety
    /// AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn wide(x: &[f32; LANES]) -> __m512d {
        // SAFETY: `x` holds 8 f32 (32 bytes), an unaligned load reads them.
        _mm512_cvtps_pd(unsafe { _mm256_loadu_ps(x.as_ptr()) })
    }

    /// The lanes of `v`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lanes(v: __m512d) -> [f64; LANES] {
        let mut out = [0.0f64; LANES];
        // SAFETY: `out` holds 8 f64 (64 bytes).
        unsafe { _mm512_storeu_pd(out.as_mut_ptr(), v) };
        out
    }

    /// # Safety
    /// The CPU must support AVX-512F; `a` and `b` have the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn cos_sums(a: &[f32], b: &[f32]) -> [f64; 3] {
        let (ca, ra) = a.as_chunks::<LANES>();
        let (cb, rb) = b.as_chunks::<LANES>();
        let (mut dot, mut na, mut nb) = (
            _mm512_setzero_pd(),
            _mm512_setzero_pd(),
            _mm512_setzero_pd(),
        );
        for (x, y) in ca.iter().zip(cb) {
            let (x, y) = (wide(x), wide(y));
            dot = _mm512_add_pd(dot, _mm512_mul_pd(x, y));
            na = _mm512_add_pd(na, _mm512_mul_pd(x, x));
            nb = _mm512_add_pd(nb, _mm512_mul_pd(y, y));
        }
        let mut sums = [lanes(dot), lanes(na), lanes(nb)];
        for (l, (&x, &y)) in ra.iter().zip(rb).enumerate() {
            let (x, y) = (f64::from(x), f64::from(y));
            sums[0][l] += x * y;
            sums[1][l] += x * x;
            sums[2][l] += y * y;
        }
        sums.map(|l| l.iter().sum())
    }

    /// # Safety
    /// The CPU must support AVX-512F; `a` and `b` have the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn snr_sums(a: &[f32], b: &[f32]) -> [f64; 2] {
        let (ca, ra) = a.as_chunks::<LANES>();
        let (cb, rb) = b.as_chunks::<LANES>();
        let (mut noise, mut power) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        for (x, y) in ca.iter().zip(cb) {
            let (x, y) = (wide(x), wide(y));
            let d = _mm512_sub_pd(y, x);
            noise = _mm512_add_pd(noise, _mm512_mul_pd(d, d));
            power = _mm512_add_pd(power, _mm512_mul_pd(x, x));
        }
        let mut sums = [lanes(noise), lanes(power)];
        for (l, (&x, &y)) in ra.iter().zip(rb).enumerate() {
            let (x, y) = (f64::from(x), f64::from(y));
            sums[0][l] += (y - x) * (y - x);
            sums[1][l] += x * x;
        }
        sums.map(|l| l.iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatched sums have the bits of the one-at-a-time reference and
    /// the value of one sequential f64 sum (to rounding), on lengths around
    /// the lane count, with mismatched lengths cut to the shorter.
    #[test]
    fn sums_equal_their_reference() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0
        };
        for n in [0usize, 1, 7, 8, 9, 15, 64, 1001] {
            let a: Vec<f32> = (0..n).map(|_| next()).collect();
            let b: Vec<f32> = (0..n + 3).map(|_| next()).collect();
            let got = cos_sums(&a, &b);
            let want = cos_sums_reference(&a, &b[..n]);
            assert_eq!(
                got.map(f64::to_bits),
                want.map(f64::to_bits),
                "cos, n = {n}"
            );
            let mut seq = [0.0f64; 3];
            for (&x, &y) in a.iter().zip(&b) {
                let (x, y) = (f64::from(x), f64::from(y));
                seq[0] += x * y;
                seq[1] += x * x;
                seq[2] += y * y;
            }
            for k in 0..3 {
                assert!(
                    (got[k] - seq[k]).abs() <= 1e-12 * seq[k].abs().max(1.0),
                    "n = {n}"
                );
            }
            let got = snr_sums(&b, &a);
            let want = snr_sums_reference(&b[..n], &a);
            assert_eq!(
                got.map(f64::to_bits),
                want.map(f64::to_bits),
                "snr, n = {n}"
            );
        }
    }
}
