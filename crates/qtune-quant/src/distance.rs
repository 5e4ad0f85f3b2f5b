//! The tuner's distance sums (spec §3.4, `SimpleTuner`):
//! \(\sum_i (r_i - o_i)^2\) for several outputs \(o\) against one reference
//! \(r\), and \(\sum_i |r_i|\), all in f64 and each in element order.

use crate::simd::dispatch;

/// Outputs per pass over the reference (callers splitting work can use
/// multiples of it).
pub const WAYS: usize = 4;

/// `(l2, l1)`: `l2[k] = sum_i (reference_i - outs[k]_i)^2` and
/// `l1 = sum_i |reference_i|`, over `i < n` with `n` the shortest length.
///
/// Each sum is accumulated in element order, exactly as the one-output loop
/// `for i { d = r - o; l2 += d * d; l1 += |r| }` does, so the results are
/// bit-identical to it; four outputs (and the `l1` sum) share a pass, which keeps five
/// independent additions in flight instead of one latency-bound chain.
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
        sums4(reference, lanes, &mut out);
        l2.extend_from_slice(&out[..group.len()]);
        l1 = out[WAYS];
    }
    (l2, l1)
}

dispatch! {
    /// `out[k] = sum (r - o_k)^2` for the `WAYS` outputs, `out[WAYS] = sum |r|`;
    /// every slice has the length of `r`.
    fn sums4(r: &[f32], o: [&[f32]; WAYS], out: &mut [f64; WAYS + 1]) {
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
