//! Helpers shared by the integration tests.

/// max |a - b| / max |a| over every output of every sample.
pub fn max_relative_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let scale = x.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
            let diff = x
                .iter()
                .zip(y)
                .fold(0.0f64, |m, (p, q)| m.max(f64::from((p - q).abs())));
            diff / scale.max(f64::MIN_POSITIVE)
        })
        .fold(0.0, f64::max)
}
