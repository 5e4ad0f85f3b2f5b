//! Comparing two sets of named tensors as TPU-MLIR's `npz_tool compare`
//! does: a verdict per tensor (EQUAL, CLOSE, SIMILAR, NOT_SIMILAR,
//! NOT_MATCH) with cosine, euclidean similarity and SQNR.

use qtune_tensor::Tensor;
pub use qtune_tensor::compare::{Comparison, Similarity, Tolerance, Verdict};

/// One tensor both sets hold.
#[derive(Debug, Clone)]
pub struct TensorComparison {
    pub name: String,
    pub comparison: Comparison,
    /// The target tensor's shape and the reference's, as text.
    pub shapes: (String, String),
}

/// The comparison of the tensors two sets have in common.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In the target's order.
    pub tensors: Vec<TensorComparison>,
}

impl Report {
    /// Tensors compared.
    pub fn compared(&self) -> usize {
        self.tensors.len()
    }

    /// Tensors below the tolerance.
    pub fn failed(&self) -> usize {
        self.tensors
            .iter()
            .filter(|t| !t.comparison.verdict.passed())
            .count()
    }

    /// The lowest (cosine, euclidean, SQNR) over the tensors compared.
    pub fn min_similarity(&self) -> (f64, f64, f64) {
        let mut min = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
        for s in self.tensors.iter().filter_map(|t| t.comparison.similarity) {
            min = (
                min.0.min(s.cosine),
                min.1.min(s.euclidean),
                min.2.min(s.sqnr),
            );
        }
        min
    }

    /// `npz_tool compare`'s lines: one per tensor (every tensor with
    /// `verbose`, else the failures), then the summary.
    pub fn lines(&self, verbose: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let count = |v: Verdict| {
            self.tensors
                .iter()
                .filter(|t| t.comparison.verdict == v)
                .count()
        };
        for t in &self.tensors {
            let c = &t.comparison;
            if !verbose && c.verdict.passed() {
                continue;
            }
            let name = &t.name;
            lines.push(match c.similarity {
                Some(s) => format!(
                    "{name:<40} {:<12} cos {:.6} euclid {:.6} sqnr {:.3} max_abs_diff {:.6e} {}",
                    c.verdict.name(),
                    s.cosine,
                    s.euclidean,
                    s.sqnr,
                    s.max_abs_diff,
                    t.shapes.0
                ),
                None => format!(
                    "{name:<40} {:<12} shapes {} vs {}",
                    c.verdict.name(),
                    t.shapes.0,
                    t.shapes.1
                ),
            });
        }
        let (compared, failed) = (self.compared(), self.failed());
        let min = self.min_similarity();
        lines.push(format!("{compared} compared"));
        lines.push(format!("{} passed", compared - failed));
        lines.push(format!(
            "  {} equal, {} close, {} similar",
            count(Verdict::Equal),
            count(Verdict::Close),
            count(Verdict::Similar)
        ));
        lines.push(format!("{failed} failed"));
        lines.push(format!(
            "  {} not equal, {} not similar",
            count(Verdict::NotMatch),
            count(Verdict::NotSimilar)
        ));
        lines.push(format!(
            "min_similarity = ({:.6}, {:.6}, {:.6})",
            min.0, min.1, min.2
        ));
        lines
    }
}

/// Compares the tensors of `target` with the reference tensors of the same
/// name (names in `excepts` are skipped; names only one set holds are
/// ignored).
pub fn compare(
    target: &[(String, Tensor)],
    reference: &[(String, Tensor)],
    tolerance: Tolerance,
    excepts: &[&str],
) -> Report {
    let mut tensors = Vec::new();
    for (name, t) in target {
        if excepts.contains(&name.as_str()) {
            continue;
        }
        let Some((_, r)) = reference.iter().find(|(n, _)| n == name) else {
            continue;
        };
        tensors.push(TensorComparison {
            name: name.clone(),
            comparison: qtune_tensor::compare::compare_tensors(t, r, tolerance),
            shapes: (t.shape().to_string(), r.shape().to_string()),
        });
    }
    Report { tensors }
}

/// Compares the tensors two sets have in common (by name) as `npz_tool
/// compare` does, gives its summary lines to the reporter (every tensor
/// when `verbose`, else the failures), and returns how many were compared; a
/// tensor below the tolerance, or no name shared, is
/// [`Error::CheckFailed`](crate::Error::CheckFailed). `files` name the two
/// sets in that message.
#[allow(clippy::too_many_arguments)]
pub fn check(
    target: &[(String, Tensor)],
    reference: &[(String, Tensor)],
    tolerance: Tolerance,
    tolerance_text: &str,
    excepts: &[&str],
    verbose: bool,
    files: (&std::path::Path, &std::path::Path),
    reporter: &dyn crate::Reporter,
) -> crate::Result<usize> {
    let report = compare(target, reference, tolerance, excepts);
    for line in report.lines(verbose) {
        reporter.line(&line);
    }
    let (compared, failed) = (report.compared(), report.failed());
    if compared == 0 {
        return Err(crate::Error::CheckFailed {
            message: format!(
                "no tensor names in common between `{}` and `{}`",
                files.0.display(),
                files.1.display()
            ),
        });
    }
    if failed > 0 {
        return Err(crate::Error::CheckFailed {
            message: format!("{failed} of {compared} tensors below tolerance {tolerance_text}"),
        });
    }
    Ok(compared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_lines_follow_the_verdicts() {
        let a = Tensor::from_f32(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::from_f32(vec![4], vec![-1.0, 2.0, -3.0, 4.0]).unwrap();
        let c = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let target = vec![
            ("same".to_string(), a.clone()),
            ("flipped".to_string(), b),
            ("short".to_string(), c),
            ("skipped".to_string(), a.clone()),
            ("only_here".to_string(), a.clone()),
        ];
        let reference = vec![
            ("same".to_string(), a.clone()),
            ("flipped".to_string(), a.clone()),
            ("short".to_string(), a.clone()),
            ("skipped".to_string(), a),
        ];
        let tol = Tolerance::parse("0.99,0.99").unwrap();
        let r = compare(&target, &reference, tol, &["skipped"]);
        assert_eq!(r.compared(), 3);
        assert_eq!(r.failed(), 2);
        // cos of (1,2,3,4) and (-1,2,-3,4) is (-1+4-9+16)/30 = 1/3.
        assert!((r.min_similarity().0 - 1.0 / 3.0).abs() < 1e-12);
        let lines = r.lines(false);
        assert_eq!(lines.len(), 2 + 6, "{lines:?}");
        assert!(
            lines[0].starts_with("flipped") && lines[0].contains("NOT_SIMILAR"),
            "{lines:?}"
        );
        assert!(lines[1].contains("shapes [2] vs [4]"), "{lines:?}");
        assert_eq!(lines[2], "3 compared");
        assert_eq!(lines[3], "1 passed");
        assert_eq!(lines[5], "2 failed");
        assert_eq!(lines[6], "  1 not equal, 1 not similar");
    }
}
