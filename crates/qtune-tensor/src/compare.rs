//! Tensor similarity as TPU-MLIR's `npz_tool compare` measures it
//! (`numpy_helper/tensor_compare.py`; ../shared/reference/tpu-mlir-quant-spec.md
//! section 3.16). Arithmetic is done in f64.
//!
//! Per pair (target `d1`, reference `d2`): different element counts are
//! `NotMatch`; identical data is `Equal`; data passing
//! `allclose(rtol = 1e-3, atol = 1e-8)` is `Close`; otherwise the pair is
//! `Similar` when `cos > tol_cos` and `euclid > tol_euclid`, else
//! `NotSimilar`. NaN counts as 0 and +-inf as +-10000 in the measures.

use crate::Tensor;

/// The verdict of one tensor comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Equal,
    Close,
    Similar,
    NotSimilar,
    NotMatch,
}

impl Verdict {
    pub fn passed(self) -> bool {
        matches!(self, Verdict::Equal | Verdict::Close | Verdict::Similar)
    }
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Equal => "EQUAL",
            Verdict::Close => "CLOSE",
            Verdict::Similar => "SIMILAR",
            Verdict::NotSimilar => "NOT_SIMILAR",
            Verdict::NotMatch => "NOT_MATCH",
        }
    }
}

/// Similarity measures of a tensor pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// Plain cosine similarity (not TPU-MLIR's 0.5 + 0.5 cos search scale).
    pub cosine: f64,
    /// `1 - |d1 - d2| / (|(d1 + d2) / 2| + 1e-7)`.
    pub euclidean: f64,
    /// Signal-to-quantization-noise ratio in dB (infinite when noise is 0).
    pub sqnr: f64,
    /// Largest absolute difference.
    pub max_abs_diff: f64,
}

/// Tolerances of a comparison: `cos > cosine` and `euclid > euclidean`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub cosine: f64,
    pub euclidean: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            cosine: 0.99,
            euclidean: 0.99,
        }
    }
}

impl Tolerance {
    /// Parses TPU-MLIR's `"c,e"` form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let num = |p: &str| {
            p.parse::<f64>()
                .map_err(|_| format!("tolerance `{s}`: `{p}` is not a number"))
        };
        match parts.as_slice() {
            [c, e] => Ok(Tolerance {
                cosine: num(c)?,
                euclidean: num(e)?,
            }),
            [c] => Ok(Tolerance {
                cosine: num(c)?,
                euclidean: f64::NEG_INFINITY,
            }),
            _ => Err(format!(
                "tolerance `{s}`: expected `cos,euclid`, e.g. 0.99,0.99"
            )),
        }
    }
}

fn clean(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else if v.is_infinite() {
        10000.0f64.copysign(v)
    } else {
        v
    }
}

/// The measures of two equally long sequences.
pub fn similarity(target: &[f64], reference: &[f64]) -> Similarity {
    let (mut dot, mut n1, mut n2, mut diff2, mut mid2, mut abs1, mut nz2, mut maxd) =
        (0f64, 0f64, 0f64, 0f64, 0f64, 0f64, 0usize, 0f64);
    let len = target.len().max(1);
    #[allow(clippy::cast_precision_loss)]
    let count = len as f64;
    let (mut sum1, mut sum_noise) = (0f64, 0f64);
    for (&a, &b) in target.iter().zip(reference) {
        let (a, b) = (clean(a), clean(b));
        sum1 += a;
        sum_noise += a - b;
    }
    let (mean1, mean_noise) = (sum1 / count, sum_noise / count);
    let (mut sig, mut noise) = (0f64, 0f64);
    for (&a, &b) in target.iter().zip(reference) {
        let (a, b) = (clean(a), clean(b));
        dot += a * b;
        n1 += a * a;
        n2 += b * b;
        diff2 += (a - b) * (a - b);
        mid2 += ((a + b) / 2.0) * ((a + b) / 2.0);
        abs1 += a.abs();
        if b != 0.0 {
            nz2 += 1;
        }
        maxd = f64::max(maxd, (a - b).abs());
        sig += (a - mean1) * (a - mean1);
        noise += (a - b - mean_noise) * (a - b - mean_noise);
    }
    let cosine = if abs1 == 0.0 || nz2 == 0 {
        0.0
    } else {
        dot / (n1.sqrt() * n2.sqrt())
    };
    let euclidean = {
        let e = 1.0 - diff2.sqrt() / (mid2.sqrt() + 1e-7);
        if e.is_infinite() { 0.0 } else { e }
    };
    let sqnr = if sig == 0.0 || noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (sig / noise).log10()
    };
    Similarity {
        cosine,
        euclidean,
        sqnr,
        max_abs_diff: maxd,
    }
}

/// The outcome of comparing one tensor pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub verdict: Verdict,
    pub similarity: Option<Similarity>,
}

fn allclose(a: &[f64], b: &[f64], rtol: f64, atol: f64) -> bool {
    a.iter().zip(b).all(|(&x, &y)| {
        if x.is_nan() || y.is_nan() {
            return x.is_nan() && y.is_nan();
        }
        (x - y).abs() <= atol + rtol * y.abs()
    })
}

/// Compares a target tensor with a reference tensor.
pub fn compare_tensors(target: &Tensor, reference: &Tensor, tol: Tolerance) -> Comparison {
    if target.numel() != reference.numel() {
        return Comparison {
            verdict: Verdict::NotMatch,
            similarity: None,
        };
    }
    let a: Vec<f64> = target.to_f32_vec().into_iter().map(f64::from).collect();
    let b: Vec<f64> = reference.to_f32_vec().into_iter().map(f64::from).collect();
    let sim = similarity(&a, &b);
    if a.iter()
        .zip(&b)
        .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
    {
        return Comparison {
            verdict: Verdict::Equal,
            similarity: Some(sim),
        };
    }
    // TPU-MLIR tries rtol 1e-5, 1e-4, 1e-3, 1e-2 and calls the pair close
    // when it passes at 1e-3 or tighter.
    if allclose(&a, &b, 1e-3, 1e-8) {
        return Comparison {
            verdict: Verdict::Close,
            similarity: Some(sim),
        };
    }
    let verdict = if sim.cosine > tol.cosine && sim.euclidean > tol.euclidean {
        Verdict::Similar
    } else {
        Verdict::NotSimilar
    };
    Comparison {
        verdict,
        similarity: Some(sim),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_is_equal_and_scaled_is_similar_by_cosine_only() {
        let a = Tensor::from_f32(vec![4], vec![1.0, -2.0, 3.0, 4.0]).unwrap();
        assert_eq!(
            compare_tensors(&a, &a, Tolerance::default()).verdict,
            Verdict::Equal
        );
        let b = Tensor::from_f32(vec![4], vec![2.0, -4.0, 6.0, 8.0]).unwrap();
        let c = compare_tensors(&b, &a, Tolerance::default());
        let s = c.similarity.unwrap();
        assert!((s.cosine - 1.0).abs() < 1e-12);
        // |d1 - d2| = |a|, |(d1 + d2) / 2| = 1.5 |a| -> euclid = 1 - 1/1.5.
        assert!((s.euclidean - (1.0 - 1.0 / 1.5)).abs() < 1e-6);
        assert_eq!(c.verdict, Verdict::NotSimilar);
        let loose = Tolerance::parse("0.99,0.3").unwrap();
        assert_eq!(compare_tensors(&b, &a, loose).verdict, Verdict::Similar);
    }

    #[test]
    fn sizes_must_match_and_nan_counts_as_zero() {
        let a = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let b = Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
        assert_eq!(
            compare_tensors(&a, &b, Tolerance::default()).verdict,
            Verdict::NotMatch
        );
        let s = similarity(&[f64::NAN, 1.0], &[0.0, 1.0]);
        assert!((s.cosine - 1.0).abs() < 1e-12);
    }

    #[test]
    fn tolerance_parsing_reports_bad_input() {
        assert_eq!(
            Tolerance::parse("0.9,0.8").unwrap(),
            Tolerance {
                cosine: 0.9,
                euclidean: 0.8
            }
        );
        assert!(
            Tolerance::parse("a,b")
                .unwrap_err()
                .contains("`a` is not a number")
        );
    }
}
