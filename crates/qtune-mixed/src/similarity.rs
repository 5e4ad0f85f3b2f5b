//! The similarities and losses of TPU-MLIR's searches (spec section 3.6).
//!
//! * `cos_sim(a, b) = 0.5 + 0.5 * cos(a, b)`: the *mapped* cosine every
//!   search compares with `--expected_cos` and `--min_layer_cos` (so 0.99
//!   on that scale is a plain cosine of 0.98). A NaN cosine counts as 0
//!   (mapped 0.5), as in TPU-MLIR.
//! * The loss of a model is `1 - mean over samples of the rate-weighted
//!   cos_sim of the compared tensors`.
//! * snr: `sum((b - a)^2) / (sum(a^2) + 1e-7)` per tensor, rate-weighted
//!   and averaged. TPU-MLIR assigns instead of accumulating in its loop, so
//!   only its last tensor counts ([BUG?] in the spec); qtune accumulates.

use qtune_tensor::Tensor;

use crate::PipelineError;

/// `0.5 + 0.5 * cos(a, b)`, NaN counted as cosine 0. The sums are
/// [`qtune_kernels::similarity::cos_sums`] (f64, in a fixed lane order).
pub fn cos_sim(a: &[f32], b: &[f32]) -> f64 {
    let [dot, na, nb] = qtune_kernels::similarity::cos_sums(a, b);
    let cos = dot / (na.sqrt() * nb.sqrt());
    let cos = if cos.is_nan() { 0.0 } else { cos };
    0.5 + 0.5 * cos
}

/// `sum((b - a)^2) / (sum(a^2) + 1e-7)` with `a` the reference.
pub fn snr(reference: &[f32], b: &[f32]) -> f64 {
    let [noise, power] = qtune_kernels::similarity::snr_sums(reference, b);
    noise / (power + 1e-7)
}

/// The similarity of a model's outputs to the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputScore {
    /// Mean over samples of the rate-weighted mapped cosine.
    pub cos: f64,
    /// Mean over samples of the rate-weighted snr (lower is better).
    pub snr: f64,
}

impl OutputScore {
    /// TPU-MLIR's `outputs_cos_los`: `1 - cos`.
    pub fn loss(&self) -> f64 {
        1.0 - self.cos
    }
}

/// The values of `t` as f32, borrowed when it holds f32 (no copy).
pub(crate) fn f32_of(t: &Tensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_f32() {
        Ok(x) => std::borrow::Cow::Borrowed(x),
        Err(_) => std::borrow::Cow::Owned(t.to_f32_vec()),
    }
}

/// Scores `outputs` against `reference` (per sample, tensors in the same
/// order). `rates` weigh the tensors; when post-processing changed the
/// number of tensors, every tensor weighs 1.
pub fn score_outputs(
    reference: &[Vec<(String, Tensor)>],
    outputs: &[Vec<(String, Tensor)>],
    rates: &[f64],
) -> Result<OutputScore, PipelineError> {
    if outputs.is_empty() || reference.len() < outputs.len() {
        return Err(PipelineError::Settings(
            "no samples to compare with the reference".into(),
        ));
    }
    let (mut cos_sum, mut snr_sum) = (0.0, 0.0);
    for (r, o) in reference.iter().zip(outputs) {
        if r.len() != o.len() {
            return Err(PipelineError::Settings(format!(
                "the model gives {} compared tensors, the reference {}",
                o.len(),
                r.len()
            )));
        }
        let ones = vec![1.0; o.len()];
        let w = if rates.len() == o.len() { rates } else { &ones };
        let total: f64 = w.iter().sum();
        let (mut c, mut s) = (0.0, 0.0);
        for (((rn, rt), (on, ot)), &wi) in r.iter().zip(o).zip(w) {
            if rt.dims() != ot.dims() {
                return Err(PipelineError::Settings(format!(
                    "compared tensor `{on}` has shape {:?}, the reference `{rn}` {:?}",
                    ot.dims(),
                    rt.dims()
                )));
            }
            let (a, b) = (f32_of(rt), f32_of(ot));
            c += wi * cos_sim(&a, &b);
            s += wi * snr(&a, &b);
        }
        cos_sum += c / total;
        snr_sum += s / total;
    }
    let n = outputs.len() as f64;
    Ok(OutputScore {
        cos: cos_sum / n,
        snr: snr_sum / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sqrt(5) * sqrt(20) is not exactly 10 in f64.
    const ROUNDING: f64 = 1e-15;

    #[test]
    fn mapped_cosine() {
        assert!((cos_sim(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < ROUNDING);
        assert_eq!(cos_sim(&[1.0, 0.0], &[-1.0, 0.0]), 0.0);
        assert_eq!(cos_sim(&[1.0, 0.0], &[0.0, 1.0]), 0.5);
        // A zero tensor has no direction: NaN counts as cosine 0.
        assert_eq!(cos_sim(&[0.0, 0.0], &[1.0, 1.0]), 0.5);
    }

    #[test]
    fn snr_of_noise() {
        assert_eq!(snr(&[3.0, 4.0], &[3.0, 4.0]), 0.0);
        let s = snr(&[3.0, 4.0], &[3.0, 5.0]);
        assert!((s - 1.0 / (25.0 + 1e-7)).abs() < 1e-12);
    }

    #[test]
    fn weighted_scores() {
        let t = |v: Vec<f32>| Tensor::from_f32(vec![v.len()], v).unwrap();
        let reference = vec![vec![
            ("a".to_string(), t(vec![1.0, 0.0])),
            ("b".to_string(), t(vec![1.0, 0.0])),
        ]];
        let outputs = vec![vec![
            ("a".to_string(), t(vec![1.0, 0.0])),
            ("b".to_string(), t(vec![0.0, 1.0])),
        ]];
        let s = score_outputs(&reference, &outputs, &[0.3, 0.7]).unwrap();
        assert!((s.cos - (0.3 * 1.0 + 0.7 * 0.5)).abs() < 1e-12);
        assert!((s.loss() - 0.35).abs() < 1e-12);
        let bad = vec![vec![("a".to_string(), t(vec![1.0]))]];
        assert!(score_outputs(&reference, &bad, &[1.0]).is_err());
    }
}
