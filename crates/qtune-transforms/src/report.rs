//! What a run's report shows of the transforms: each one's before/after
//! figures.

/// `--we` before/after: the spread of W1's per-output-channel abs-max
/// (largest over smallest channel) of each equalized pair.
pub fn equalize_transform(report: &crate::EqualizeReport) -> qtune_report::Transform {
    let ratio = |r: &crate::ChannelRanges| {
        if r.min > 0.0 {
            f64::from(r.max) / f64::from(r.min)
        } else {
            f64::from(r.max)
        }
    };
    qtune_report::Transform {
        kind: "we".into(),
        caption: "Weight equalization: for each equalized Conv pair, the spread of the first Conv's per-output-channel max|w| (largest channel over smallest) before and after; 1 means every channel uses the same int8 range.".into(),
        quantity: "channel max|w| spread".into(),
        rows: report
            .pairs
            .iter()
            .map(|p| qtune_report::BeforeAfter {
                name: format!("{} -> {}", p.first, p.second),
                before: ratio(&p.first_before),
                after: ratio(&p.first_after),
            })
            .collect(),
    }
}

/// `--sq` before/after: each smoothed LayerNorm's activation abs-max.
pub fn smooth_quant_transform(report: &crate::SmoothQuantReport) -> qtune_report::Transform {
    qtune_report::Transform {
        kind: "sq".into(),
        caption: format!(
            "SmoothQuant (alpha {}): the largest activation magnitude of each smoothed LayerNorm before and after (the weights of its Gemm/MatMul readers absorb the scale).",
            report.alpha
        ),
        quantity: "activation max|x|".into(),
        rows: report
            .smoothed
            .iter()
            .map(|s| qtune_report::BeforeAfter {
                name: s.source.clone(),
                before: f64::from(s.activation_before),
                after: f64::from(s.activation_after),
            })
            .collect(),
    }
}

/// `--bc` before/after: each tried Conv's mapped cosine, int8 vs float.
pub fn bias_correction_transform(report: &crate::BiasCorrectionReport) -> qtune_report::Transform {
    qtune_report::Transform {
        kind: "bc".into(),
        caption: format!(
            "Bias correction on {} sample(s): each Conv whose int8 output was below --min_layer_cos, its mapped cosine 0.5 + 0.5 cos to the float output before and with the corrected bias (kept only when neither it nor the output got worse); model output {:.6} -> {:.6}.",
            report.samples, report.int8_cos, report.final_cos
        ),
        quantity: "layer cos (mapped)".into(),
        rows: report
            .convs
            .iter()
            .filter_map(|c| {
                Some(qtune_report::BeforeAfter {
                    name: format!("{} ({:?})", c.name, c.outcome),
                    before: c.old_layer_cos,
                    after: c.new_layer_cos?,
                })
            })
            .collect(),
    }
}
