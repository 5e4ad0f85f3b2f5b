//! The tuner's distance sums (spec §3.4, `SimpleTuner`):
//! \(\sum_i (r_i - o_i)^2\) of an output \(o\) against a reference \(r\), and
//! \(\sum_i |r_i|\), in f64.
//!
//! Summation order (fixed, so that results do not depend on the CPU, the
//! compiled copy or the caller's grouping): element `i` goes to lane
//! `i % LANES`, each lane adds its elements in element order, and the lanes
//! are added in lane order at the end. `LANES` independent chains keep the
//! adder busy (one chain in element order is bound by the latency of one
//! f64 addition per element); every lane does the same scalar operations
//! (f32 to f64, subtract, then `acc = d*d + acc` as one fused multiply-add),
//! so the vectorised copies and [`squared_distance_reference`] agree bit for
//! bit.
//!
//! TPU-MLIR computes these in float32 with NumPy's pairwise sums; f64 lanes
//! are at least as accurate.

use crate::simd::dispatch;

/// Partial sums per distance: two AVX-512 registers of f64.
pub const LANES: usize = 16;

/// `sum_i (reference_i - out_i)^2` over `i < min(len)`, in the order of the
/// module documentation.
pub fn squared_distance(reference: &[f32], out: &[f32]) -> f64 {
    let n = reference.len().min(out.len());
    let mut d = SquaredDistance::default();
    d.add(&reference[..n], &out[..n]);
    d.total()
}

/// [`squared_distance`] fed piece by piece (consecutive parts of the two
/// tensors); the total is bit-identical to one call on the whole tensors.
#[derive(Clone, Debug, Default)]
pub struct SquaredDistance {
    lanes: [f64; LANES],
    len: usize,
}

impl SquaredDistance {
    /// Adds the next `reference.len()` elements.
    ///
    /// # Panics
    /// When the lengths differ, or a piece follows one whose length was not
    /// a multiple of [`LANES`] (the lanes would no longer line up).
    pub fn add(&mut self, reference: &[f32], out: &[f32]) {
        self.next_piece(reference.len(), out.len());
        lane_squares(reference, out, &mut self.lanes);
    }

    /// [`Self::add`] with the reference piece already widened to f64 (for
    /// callers comparing several outputs with one reference piece).
    ///
    /// # Panics
    /// As [`Self::add`].
    pub fn add_widened(&mut self, reference: &[f64], out: &[f32]) {
        self.next_piece(reference.len(), out.len());
        lane_squares_widened(reference, out, &mut self.lanes);
    }

    /// Checks a piece's lengths and counts it.
    fn next_piece(&mut self, reference: usize, out: usize) {
        assert_eq!(reference, out, "squared distance: piece lengths");
        assert!(
            self.len.is_multiple_of(LANES),
            "squared distance: only the last piece may end inside a lane block"
        );
        self.len += reference;
    }

    pub fn total(&self) -> f64 {
        self.lanes.iter().fold(0.0, |a, &s| a + s)
    }
}

/// `sum_i |reference_i|`, in the order of the module documentation.
pub fn abs_sum(reference: &[f32]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    lane_abs(reference, &mut lanes);
    lanes.iter().fold(0.0, |a, &s| a + s)
}

dispatch! {
    /// Lane sums of [`squared_distance`]; `r` and `o` have the same length.
    fn lane_squares(r: &[f32], o: &[f32], lanes: &mut [f64; LANES]) {
        let mut acc = *lanes;
        let mut rc = r.chunks_exact(LANES);
        let mut oc = o.chunks_exact(LANES);
        for (rb, ob) in (&mut rc).zip(&mut oc) {
            for j in 0..LANES {
                let d = f64::from(rb[j]) - f64::from(ob[j]);
                acc[j] = d.mul_add(d, acc[j]);
            }
        }
        for (j, (&a, &b)) in rc.remainder().iter().zip(oc.remainder()).enumerate() {
            let d = f64::from(a) - f64::from(b);
            acc[j] = d.mul_add(d, acc[j]);
        }
        *lanes = acc;
    }
}

dispatch! {
    /// [`lane_squares`] with the reference in f64.
    fn lane_squares_widened(r: &[f64], o: &[f32], lanes: &mut [f64; LANES]) {
        let mut acc = *lanes;
        let mut rc = r.chunks_exact(LANES);
        let mut oc = o.chunks_exact(LANES);
        for (rb, ob) in (&mut rc).zip(&mut oc) {
            for j in 0..LANES {
                let d = rb[j] - f64::from(ob[j]);
                acc[j] = d.mul_add(d, acc[j]);
            }
        }
        for (j, (&a, &b)) in rc.remainder().iter().zip(oc.remainder()).enumerate() {
            let d = a - f64::from(b);
            acc[j] = d.mul_add(d, acc[j]);
        }
        *lanes = acc;
    }
}

dispatch! {
    /// Lane sums of [`abs_sum`].
    fn lane_abs(r: &[f32], lanes: &mut [f64; LANES]) {
        let mut acc = *lanes;
        let mut rc = r.chunks_exact(LANES);
        for rb in &mut rc {
            for j in 0..LANES {
                acc[j] += f64::from(rb[j]).abs();
            }
        }
        for (j, &a) in rc.remainder().iter().enumerate() {
            acc[j] += f64::from(a).abs();
        }
        *lanes = acc;
    }
}

/// [`squared_distance`] element by element, as the module documentation
/// states the order; the reference the dispatched copies are tested against.
pub fn squared_distance_reference(reference: &[f32], out: &[f32]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    for (i, (&a, &b)) in reference.iter().zip(out).enumerate() {
        let d = f64::from(a) - f64::from(b);
        lanes[i % LANES] = d.mul_add(d, lanes[i % LANES]);
    }
    lanes.iter().fold(0.0, |a, &s| a + s)
}

/// [`abs_sum`] element by element.
pub fn abs_sum_reference(reference: &[f32]) -> f64 {
    let mut lanes = [0.0f64; LANES];
    for (i, &a) in reference.iter().enumerate() {
        lanes[i % LANES] += f64::from(a).abs();
    }
    lanes.iter().fold(0.0, |a, &s| a + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, k: u16) -> (Vec<f32>, Vec<f32>) {
        let r: Vec<f32> = (0..u32::try_from(n).unwrap())
            .map(|i| match i % 5 {
                0 => -0.0,
                1 => 1e-40,
                _ => (f32::from(u16::try_from(i % 60_000).unwrap()) * 0.731).sin() * 37.0,
            })
            .collect();
        let o = r
            .iter()
            .zip(0u32..)
            .map(|(&v, i)| {
                let w = f32::from(u16::try_from(i * u32::from(k + 1) % 7).unwrap());
                v * (1.0 + 1e-3 * w) - 0.01 * f32::from(k)
            })
            .collect();
        (r, o)
    }

    #[test]
    fn dispatched_sums_equal_the_reference_bit_for_bit() {
        // Lengths around the 16-element blocks, outputs far from and close
        // to the reference, signed zeros and subnormals.
        for n in [0usize, 1, 7, 15, 16, 17, 31, 32, 33, 64, 67, 1003, 40_000] {
            for k in 0..4 {
                let (r, o) = data(n, k);
                assert_eq!(
                    squared_distance(&r, &o).to_bits(),
                    squared_distance_reference(&r, &o).to_bits(),
                    "n {n} k {k}"
                );
            }
            let (r, _) = data(n, 0);
            assert_eq!(
                abs_sum(&r).to_bits(),
                abs_sum_reference(&r).to_bits(),
                "n {n}"
            );
        }
    }

    #[test]
    fn sums_are_close_to_a_sequential_f64_sum() {
        let (r, o) = data(100_000, 2);
        let seq_l2: f64 = r
            .iter()
            .zip(&o)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        let seq_l1: f64 = r.iter().map(|&a| f64::from(a).abs()).sum();
        assert!((squared_distance(&r, &o) - seq_l2).abs() <= 1e-12 * seq_l2);
        assert!((abs_sum(&r) - seq_l1).abs() <= 1e-12 * seq_l1);
        // Piece by piece, in pieces of whole lane blocks.
        let mut d = SquaredDistance::default();
        for (rp, op) in r.chunks(4096).zip(o.chunks(4096)) {
            d.add(rp, op);
        }
        assert_eq!(d.total().to_bits(), squared_distance(&r, &o).to_bits());
        let r64: Vec<f64> = r.iter().map(|&v| f64::from(v)).collect();
        let mut w = SquaredDistance::default();
        for (rp, op) in r64.chunks(2048).zip(o.chunks(2048)) {
            w.add_widened(rp, op);
        }
        assert_eq!(w.total().to_bits(), squared_distance(&r, &o).to_bits());
        // A shorter output: only the common prefix counts.
        assert_eq!(
            squared_distance(&r, &o[..77]).to_bits(),
            squared_distance_reference(&r[..77], &o[..77]).to_bits()
        );
    }
}
