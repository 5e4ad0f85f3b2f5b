//! Special cases applied after KLD when the method list contains mse or
//! aciq (spec §3.3.5). They need graph knowledge, which the caller supplies.

/// One tensor as seen by the special-case rules.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecialCaseTensor {
    pub name: String,
    /// Output of an Input op (an op without predecessors).
    pub is_input: bool,
    /// Produced by `top.MatMul` or `top.Conv`.
    pub is_matmul_or_conv: bool,
    /// `pct[t]` (see `Thresholds::abs_percentile`) for the last-5 tensors,
    /// `None` for tensors outside that list.
    pub pct: Option<f64>,
    /// `max(|min|, |max|)`.
    pub abs_max: f64,
}

/// Threshold overrides for the mse/aciq methods, in application order.
///
/// `tensors` lists the last-five tensors **from the network output
/// backwards** (entries with `pct`), plus any Input-op tensors. The walk over
/// the entries with `pct` adds a tensor while `pct == abs_max`, stops at the
/// first inequality, and stops right after adding a MatMul/Conv output; those
/// tensors get `pct`. Input-op tensors then get `abs_max` (applied last, so
/// it wins for a tensor that is both).
pub fn special_case_overrides(tensors: &[SpecialCaseTensor]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for t in tensors {
        let Some(pct) = t.pct else { continue };
        // Exact float equality, as the Python code compares.
        #[allow(clippy::float_cmp)]
        let equal = pct == t.abs_max;
        if !equal {
            break;
        }
        out.push((t.name.clone(), pct));
        if t.is_matmul_or_conv {
            break;
        }
    }
    for t in tensors.iter().filter(|t| t.is_input) {
        out.retain(|(n, _)| n != &t.name);
        out.push((t.name.clone(), t.abs_max));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, input: bool, conv: bool, pct: Option<f64>, abs: f64) -> SpecialCaseTensor {
        SpecialCaseTensor {
            name: name.to_string(),
            is_input: input,
            is_matmul_or_conv: conv,
            pct,
            abs_max: abs,
        }
    }

    #[test]
    fn walk_stops_after_conv_and_at_inequality() {
        struct Case {
            tensors: Vec<SpecialCaseTensor>,
            expected: Vec<(&'static str, f64)>,
        }
        let cases = [
            Case {
                tensors: vec![
                    t("out", false, false, Some(2.0), 2.0),
                    t("fc", false, true, Some(3.0), 3.0),
                    t("relu", false, false, Some(4.0), 4.0),
                ],
                expected: vec![("out", 2.0), ("fc", 3.0)],
            },
            Case {
                tensors: vec![
                    t("out", false, false, Some(2.0), 2.0),
                    t("softmax", false, false, Some(0.9), 1.0),
                    t("fc", false, true, Some(3.0), 3.0),
                ],
                expected: vec![("out", 2.0)],
            },
            Case {
                tensors: vec![
                    t("out", false, false, Some(1.0), 2.0),
                    t("input", true, false, None, 5.0),
                ],
                expected: vec![("input", 5.0)],
            },
            Case {
                tensors: vec![],
                expected: vec![],
            },
        ];
        let mut failures = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            let got = special_case_overrides(&c.tensors);
            let want: Vec<(String, f64)> = c
                .expected
                .iter()
                .map(|(n, v)| (n.to_string(), *v))
                .collect();
            if got != want {
                failures.push(format!("case {i}: got {got:?}, want {want:?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
