//! The per-layer sensitivity report (`run_sensitive_layer
//! --sensitivity_table`): every layer the plan runs in INT8, alone in int8
//! with every other such layer in float, and the plain cosine of one output
//! to the float model, mean and min over the inference samples.
//!
//! A "layer" is an op of the float graph; its int8 form quantizes its
//! output tensor and reads its inputs on their int8 grids (the fake-quant
//! the evaluator's plan applies), so the table answers "which quantized
//! tensor costs the most" one op at a time. TPU-MLIR's run_sensitive_layer
//! ranks the same trials by the mapped loss of all outputs; this report
//! keeps the plain cosine of one named output and its worst sample, which
//! is what an embedding model is judged by.

use std::collections::HashSet;

use qtune_quant::{CalibrationTable, QuantMode};

use super::layers::int8_layers;
use super::{MixEvaluator, Precision};
use crate::{PipelineError, Progress};

/// One row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct SensitivityRow {
    pub name: String,
    pub top_type: String,
    /// Position in op order (ties sort by it).
    pub order: usize,
    /// Plain cosine of the output to the float model, per sample.
    pub cos: Vec<f64>,
}

fn mean_of(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn min_of(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

impl SensitivityRow {
    pub fn mean(&self) -> f64 {
        mean_of(&self.cos)
    }
    pub fn min(&self) -> f64 {
        min_of(&self.cos)
    }
}

/// The report: the all-int8 and the per-layer rows, most harmful first.
#[derive(Debug, Clone)]
pub struct Sensitivity {
    pub output: String,
    /// All-int8 (every candidate in int8) per sample.
    pub all_int8: Vec<f64>,
    pub rows: Vec<SensitivityRow>,
}

/// Plain cosine in f64 (NaN, for a zero tensor, counts as 0 as in the
/// searches' mapped cosine).
pub fn plain_cos(a: &[f32], b: &[f32]) -> f64 {
    2.0 * super::cos_sim(a, b) - 1.0
}

/// Sorts rows by mean cosine ascending (the largest loss first), then min,
/// then op order: a total order, so the table is the same on every run.
pub fn sort_rows(rows: &mut [SensitivityRow]) {
    rows.sort_by(|a, b| {
        a.mean()
            .total_cmp(&b.mean())
            .then(a.min().total_cmp(&b.min()))
            .then(a.order.cmp(&b.order))
    });
}

fn output_cos(
    ev: &mut MixEvaluator,
    p: &Precision,
    output: &str,
    reference: &[Vec<f32>],
) -> Result<Vec<f64>, PipelineError> {
    let b = ev.build(p)?;
    let got = ev.tensors(&b, &[output])?;
    Ok(got
        .iter()
        .zip(reference)
        .map(|(t, r)| plain_cos(r, &t[0].to_f32_vec()))
        .collect())
}

/// Runs the report. The evaluator's reference (float model) must be set;
/// `output` names a compared tensor.
pub fn sensitivity(
    ev: &mut MixEvaluator,
    table: &CalibrationTable,
    base_qtable: &[(String, QuantMode)],
    float_mode: QuantMode,
    output: &str,
    progress: &dyn Progress,
) -> Result<Sensitivity, PipelineError> {
    // The compared tensors are named as the Top ops that compute them
    // (`sentence_embedding_Div`); the ONNX output name is their prefix.
    let names: Vec<String> = ev
        .reference()
        .first()
        .map(|s| s.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    let Some(output) = names
        .iter()
        .find(|n| *n == output)
        .or_else(|| {
            let mut m = names
                .iter()
                .filter(|n| n.starts_with(&format!("{output}_")));
            m.next().filter(|_| m.next().is_none())
        })
        .cloned()
    else {
        return Err(PipelineError::Settings(format!(
            "--sensitivity_output `{output}` is not a compared output (the outputs are {})",
            names.join(", ")
        )));
    };
    let output = output.as_str();
    let reference: Vec<Vec<f32>> = ev
        .reference()
        .iter()
        .map(|s| {
            s.iter()
                .find(|(n, _)| n == output)
                .map(|(_, t)| t.to_f32_vec())
                .ok_or_else(|| {
                    PipelineError::Settings(format!("a sample lacks the output `{output}`"))
                })
        })
        .collect::<Result<_, _>>()?;
    let graph = ev.graph();
    let all_int8 = Precision {
        quantize: QuantMode::Int8,
        table: Some(table),
        qtable: base_qtable,
    };
    let base = ev.build(&all_int8)?;
    let candidates = int8_layers(graph, &base.plan);
    let all_int8_cos = output_cos(ev, &all_int8, output, &reference)?;
    let names: Vec<String> = candidates.iter().map(|l| l.name.clone()).collect();
    let with_float = |skip: Option<&str>| {
        let have: HashSet<&str> = base_qtable.iter().map(|(n, _)| n.as_str()).collect();
        let mut q = base_qtable.to_vec();
        q.extend(
            names
                .iter()
                .filter(|n| Some(n.as_str()) != skip && !have.contains(n.as_str()))
                .map(|n| (n.clone(), float_mode)),
        );
        q
    };
    // Cache the all-float configuration: each trial then recomputes only
    // what lies downstream of its one int8 layer.
    let float_all = with_float(None);
    let b = ev.build(&Precision {
        quantize: QuantMode::Int8,
        table: Some(table),
        qtable: &float_all,
    })?;
    ev.score(&b, ev.sample_count(), true)?;
    progress.start("layers", candidates.len());
    let mut rows = Vec::with_capacity(candidates.len());
    for (order, l) in candidates.iter().enumerate() {
        let q = with_float(Some(&l.name));
        let cos = output_cos(
            ev,
            &Precision {
                quantize: QuantMode::Int8,
                table: Some(table),
                qtable: &q,
            },
            output,
            &reference,
        )?;
        rows.push(SensitivityRow {
            name: l.name.clone(),
            top_type: l.top_type.clone(),
            order,
            cos,
        });
        progress.advance(1);
    }
    progress.finish();
    sort_rows(&mut rows);
    Ok(Sensitivity {
        output: output.to_string(),
        all_int8: all_int8_cos,
        rows,
    })
}

impl Sensitivity {
    /// The report as a Markdown table (fixed decimals: byte-identical for
    /// identical numbers).
    pub fn to_markdown(&self, table_name: &str) -> String {
        let mut s = format!(
            "# per-layer sensitivity: `{}` cosine to the float model, {} samples, thresholds of `{}`\n\
             # all-int8: {:.5} / {:.5} (mean / min)\n\n\
             | rank | layer | type | cos mean | cos min |\n|---|---|---|---|---|\n",
            self.output,
            self.all_int8.len(),
            table_name,
            mean_of(&self.all_int8),
            min_of(&self.all_int8)
        );
        for (i, r) in self.rows.iter().enumerate() {
            s.push_str(&format!(
                "| {} | {} | {} | {:.6} | {:.6} |\n",
                i + 1,
                r.name,
                r.top_type,
                r.mean(),
                r.min()
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, order: usize, cos: &[f64]) -> SensitivityRow {
        SensitivityRow {
            name: name.into(),
            top_type: "top.X".into(),
            order,
            cos: cos.to_vec(),
        }
    }

    #[test]
    fn sort_is_by_mean_then_min_then_order() {
        let mut rows = vec![
            row("a", 0, &[0.9, 0.9]),
            row("b", 1, &[0.5, 1.0]),
            row("c", 2, &[0.7, 0.8]),
            row("d", 3, &[0.6, 0.9]),
        ];
        sort_rows(&mut rows);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        // Means 0.9, 0.75, 0.75, 0.75: b, c, d tie; b has the lowest min.
        assert_eq!(names, ["b", "d", "c", "a"]);
    }

    #[test]
    fn plain_cosine() {
        assert!((plain_cos(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-15);
        assert!((plain_cos(&[1.0, 0.0], &[0.0, 1.0])).abs() < 1e-15);
        assert!((plain_cos(&[1.0, 0.0], &[-1.0, 0.0]) + 1.0).abs() < 1e-15);
    }
}
