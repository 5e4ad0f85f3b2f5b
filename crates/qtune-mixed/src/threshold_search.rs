//! search_threshold (spec section 3.8): score the all-int8 model of each
//! method's table and keep the best table.

use qtune_quant::QuantMode;

use super::journal::{Journal, f64_hex, parse_f64_hex, replayed};
use super::log::SearchLog;
use super::qtable_search::MethodTable;
use super::{MixEvaluator, Precision};
use crate::PipelineError;

/// How search_threshold scores a table (`--benchmark_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benchmark {
    /// Mean mapped cosine of the outputs.
    Cos,
    /// `1 - snr`, snr accumulated over every compared tensor (TPU-MLIR
    /// keeps only the last tensor's, a [BUG?] of the spec).
    Snr,
}

/// Scores every table (in order) and returns the index of the best (the
/// first of equal scores) with all scores. With a journal, each table's
/// score is recorded (`score <index> <label> <cos> <snr>`) once computed,
/// and the scores it already holds (`--resume`) are not computed again.
pub fn threshold_search(
    ev: &mut MixEvaluator,
    tables: &[MethodTable],
    base_qtable: &[(String, QuantMode)],
    benchmark: Benchmark,
    log: &mut SearchLog,
    mut journal: Option<&mut Journal>,
) -> Result<(usize, Vec<f64>), PipelineError> {
    let n = ev.sample_count();
    let mut scores = Vec::with_capacity(tables.len());
    for (i, t) in tables.iter().enumerate() {
        let s = match replayed(journal.as_deref(), i, "score")? {
            Some(r) => {
                let parsed = (|| {
                    if r.len() != 5 || r[1] != i.to_string() || r[2] != t.label {
                        return None;
                    }
                    Some(super::OutputScore {
                        cos: parse_f64_hex(&r[3])?,
                        snr: parse_f64_hex(&r[4])?,
                    })
                })();
                let j = journal.as_deref().expect("a replayed record has a journal");
                parsed.ok_or_else(|| j.mismatch(i))?
            }
            None => {
                let b = ev.build(&Precision {
                    quantize: QuantMode::Int8,
                    table: Some(&t.table),
                    qtable: base_qtable,
                })?;
                let s = ev.score(&b, n, false)?;
                if let Some(j) = journal.as_deref_mut() {
                    j.append(&[
                        "score".into(),
                        i.to_string(),
                        t.label.clone(),
                        f64_hex(s.cos),
                        f64_hex(s.snr),
                    ])?;
                }
                s
            }
        };
        scores.push(match benchmark {
            Benchmark::Cos => s.cos,
            Benchmark::Snr => 1.0 - s.snr,
        });
    }
    let kind = match benchmark {
        Benchmark::Cos => "cos",
        Benchmark::Snr => "snr",
    };
    let dict: Vec<String> = tables
        .iter()
        .zip(&scores)
        .map(|(t, s)| format!("'{}': {}", t.label, s))
        .collect();
    log.info(format!("{kind} similarity scores: {{{}}}", dict.join(", ")));
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    if let Some(t) = tables.get(best) {
        log.print_info(format!(
            "optimal_method_name: {}, optimal_value: {}",
            t.label, scores[best]
        ));
    }
    Ok((best, scores))
}
