//! The tuner's distance sums (spec §3.4, `SimpleTuner`):
//! \(\sum_i (r_i - o_i)^2\) for several outputs \(o\) against one reference
//! \(r\), and \(\sum_i |r_i|\), all in f64 and each in element order.

use crate::simd::dispatch;

/// Outputs per pass over the reference (callers splitting work can use
/// multiples of it).
pub const WAYS: usize = 8;

/// `(l2, l1)`: `l2[k] = sum_i (reference_i - outs[k]_i)^2` and
/// `l1 = sum_i |reference_i|`, over `i < n` with `n` the shortest length.
///
/// Each sum is accumulated in element order, exactly as the one-output loop
/// `for i { d = r - o; l2 += d * d; l1 += |r| }` does, so the results are
/// bit-identical to it; `WAYS` outputs (and the `l1` sum) share a pass, which keeps
/// that many independent additions in flight instead of one latency-bound chain.
pub fn squared_distances(reference: &[f32], outs: &[&[f32]]) -> (Vec<f64>, f64) {
    let n = outs.iter().fold(reference.len(), |n, o| n.min(o.len()));
    let reference = &reference[..n];
    let mut l2 = Vec::with_capacity(outs.len());
    let mut l1 = 0.0f64;
    if outs.is_empty() {
        l1 = reference
            .iter()
            .fold(0.0f64, |a, &r| a + f64::from(r).abs());
        return (l2, l1);
    }
    for group in outs.chunks(WAYS) {
        // Pad with the first output; the padded sums are dropped.
        let lanes: [&[f32]; WAYS] =
            std::array::from_fn(|j| &group.get(j).copied().unwrap_or(group[0])[..n]);
        let mut out = [0.0f64; WAYS + 1];
        sums(reference, lanes, &mut out);
        l2.extend_from_slice(&out[..group.len()]);
        l1 = out[WAYS];
    }
    (l2, l1)
}

/// `out[k] = sum (r - o_k)^2` for the `WAYS` outputs, `out[WAYS] = sum |r|`;
/// every slice has the length of `r`.
fn sums(r: &[f32], o: [&[f32]; WAYS], out: &mut [f64; WAYS + 1]) {
    #[cfg(target_arch = "x86_64")]
    if qtune_simd::has_avx512() {
        // SAFETY: the CPU supports AVX-512 F (checked above).
        unsafe { avx512::sums8(r, o, out) };
        return;
    }
    sums_portable(r, o, out);
}

dispatch! {
    /// The portable form of [`sums`]: the `WAYS` outputs are read one
    /// element at a time (a gather per element).
    fn sums_portable(r: &[f32], o: [&[f32]; WAYS], out: &mut [f64; WAYS + 1]) {
        let mut acc = [0.0f64; WAYS];
        let mut l1 = 0.0f64;
        let n = r.len();
        let o: [&[f32]; WAYS] = std::array::from_fn(|k| &o[k][..n]);
        for i in 0..n {
            let ri = f64::from(r[i]);
            for k in 0..WAYS {
                let d = ri - f64::from(o[k][i]);
                acc[k] += d * d;
            }
            l1 += ri.abs();
        }
        out[..WAYS].copy_from_slice(&acc);
        out[WAYS] = l1;
    }
}

/// [`sums`] with the eight sums in the lanes of one AVX-512 register: eight
/// elements of each output are loaded and transposed in registers (8x8), so
/// that each step adds element `i` of all eight outputs at once. Every lane
/// does the scalar loop's operations (f32 to f64, subtract, multiply, add;
/// never fused) in element order, so the sums are bit-identical to it.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::WAYS;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX-512 F (and AVX).
    #[target_feature(enable = "avx512f,avx2,avx")]
    pub(super) unsafe fn sums8(r: &[f32], o: [&[f32]; WAYS], out: &mut [f64; WAYS + 1]) {
        const { assert!(WAYS == 8) };
        let n = r.len();
        let o: [&[f32]; WAYS] = std::array::from_fn(|k| &o[k][..n]);
        let mut acc = _mm512_setzero_pd();
        let mut l1 = 0.0f64;
        let blocks = n / 8;
        for b in 0..blocks {
            let i0 = b * 8;
            // SAFETY: i0 + 8 <= n for every slice (all are `n` long).
            let rows: [__m256; 8] =
                std::array::from_fn(|k| unsafe { _mm256_loadu_ps(o[k].as_ptr().add(i0)) });
            let cols = transpose8(rows);
            for (j, col) in cols.into_iter().enumerate() {
                let ri = f64::from(r[i0 + j]);
                let d = _mm512_sub_pd(_mm512_set1_pd(ri), _mm512_cvtps_pd(col));
                acc = _mm512_add_pd(acc, _mm512_mul_pd(d, d));
                l1 += ri.abs();
            }
        }
        let mut sums = [0.0f64; WAYS];
        // SAFETY: `sums` holds eight f64.
        unsafe { _mm512_storeu_pd(sums.as_mut_ptr(), acc) };
        for i in blocks * 8..n {
            let ri = f64::from(r[i]);
            for (s, ok) in sums.iter_mut().zip(&o) {
                let d = ri - f64::from(ok[i]);
                *s += d * d;
            }
            l1 += ri.abs();
        }
        out[..WAYS].copy_from_slice(&sums);
        out[WAYS] = l1;
    }

    /// 8x8 transpose: `out[j]` lane `k` is `rows[k]` lane `j`.
    #[inline]
    #[target_feature(enable = "avx2,avx")]
    fn transpose8(rows: [__m256; 8]) -> [__m256; 8] {
        let [r0, r1, r2, r3, r4, r5, r6, r7] = rows;
        let t0 = _mm256_unpacklo_ps(r0, r1);
        let t1 = _mm256_unpackhi_ps(r0, r1);
        let t2 = _mm256_unpacklo_ps(r2, r3);
        let t3 = _mm256_unpackhi_ps(r2, r3);
        let t4 = _mm256_unpacklo_ps(r4, r5);
        let t5 = _mm256_unpackhi_ps(r4, r5);
        let t6 = _mm256_unpacklo_ps(r6, r7);
        let t7 = _mm256_unpackhi_ps(r6, r7);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_at_a_time(r: &[f32], o: &[f32]) -> (f64, f64) {
        let mut l2 = 0.0f64;
        let mut l1 = 0.0f64;
        for (&a, &b) in r.iter().zip(o) {
            let d = f64::from(a) - f64::from(b);
            l2 += d * d;
            l1 += f64::from(a).abs();
        }
        (l2, l1)
    }

    #[test]
    fn every_copy_is_bit_identical_with_tails() {
        // Lengths around the 8-element blocks, outputs far from and close
        // to the reference, signed zeros and subnormals.
        for n in [0usize, 1, 7, 8, 9, 15, 16, 17, 64, 67] {
            let r: Vec<f32> = (0..u16::try_from(n).unwrap())
                .map(|i| match i % 5 {
                    0 => -0.0,
                    1 => 1e-40,
                    _ => (f32::from(i) * 0.731).sin() * 37.0,
                })
                .collect();
            let outs: Vec<Vec<f32>> = (0..u16::try_from(WAYS).unwrap())
                .map(|k| {
                    r.iter()
                        .zip(0u16..)
                        .map(|(&v, i)| {
                            v * (1.0 + 1e-3 * f32::from(i * (k + 1) % 7)) - 0.01 * f32::from(k)
                        })
                        .collect()
                })
                .collect();
            let lanes: [&[f32]; WAYS] = std::array::from_fn(|k| outs[k].as_slice());
            let mut fast = [0.0f64; WAYS + 1];
            sums(&r, lanes, &mut fast);
            let mut portable = [0.0f64; WAYS + 1];
            sums_portable(&r, lanes, &mut portable);
            for k in 0..WAYS {
                let (want, want_l1) = one_at_a_time(&r, &outs[k]);
                assert_eq!(fast[k].to_bits(), want.to_bits(), "n {n} k {k}");
                assert_eq!(portable[k].to_bits(), want.to_bits(), "n {n} k {k}");
                assert_eq!(fast[WAYS].to_bits(), want_l1.to_bits());
            }
        }
    }

    #[test]
    fn grouped_sums_are_bit_identical() {
        let r: Vec<f32> = (0..1003u16)
            .map(|i| f32::from(i % 97) * 0.37 - 11.0)
            .collect();
        for count in [1usize, 3, 8, 9, 22] {
            let outs: Vec<Vec<f32>> = (0..count)
                .map(|k| {
                    r.iter()
                        .zip(0u16..)
                        .map(|(&v, i)| {
                            let k = u16::try_from(k).unwrap();
                            v + f32::from((i * (k + 3)) % 13) * 1e-3
                        })
                        .collect()
                })
                .collect();
            let refs: Vec<&[f32]> = outs.iter().map(Vec::as_slice).collect();
            let (l2, l1) = squared_distances(&r, &refs);
            assert_eq!(l2.len(), count);
            for (o, got) in outs.iter().zip(&l2) {
                let (want, want_l1) = one_at_a_time(&r, o);
                assert_eq!(got.to_bits(), want.to_bits());
                assert_eq!(l1.to_bits(), want_l1.to_bits());
            }
        }
    }
}
