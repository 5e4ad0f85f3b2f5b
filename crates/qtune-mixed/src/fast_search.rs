//! fast_search (spec section 3.9.8): rounds of one-sample trials that put
//! the most sensitive layers in float five at a time, against the model at
//! the float type.
//!
//! Each round scores every remaining candidate L with the layers found so
//! far and every other candidate in float (so L is the only int8
//! candidate), on one sample, by `1 - cos` and snr; ranks the candidates by
//! each loss, sums the ranks, and moves the five with the largest rank sums
//! (ties: larger cos loss) to the float list; then scores that mixed model on
//! every sample. It stops when the output similarity reaches
//! `expected_cos`, when a round improves it by less than both half the
//! first round's gain and 0.001, when a fifth of the layers are float, or
//! after `inference_num` rounds. TPU-MLIR's loop condition reads a variable
//! it never updates, so only these breaks end it; qtune also stops at
//! `expected_cos`, which is the evident intent. The result is the layers of
//! the best round (none when no round beats all-int8), where TPU-MLIR keeps
//! the last round's. Candidates are every layer the chip runs in int8
//! (TPU-MLIR first narrows them to the sensitive op types).
//!
//! With a journal, every score is recorded once computed (`score <index>
//! <samples> <cos> <snr>`), and the ones it already holds (`--resume`) are
//! read from it instead of run (their models are not even built): the
//! rounds, the log and the outcome are those of an uninterrupted search.

use std::collections::HashSet;

use qtune_quant::{CalibrationTable, QuantMode};

use super::journal::{Journal, f64_hex, parse_f64_hex, replayed};
use super::layers::int8_layers;
use super::log::{SearchLog, py_list};
use super::similarity::OutputScore;
use super::{Built, MixEvaluator, Precision};
use crate::{PipelineError, Progress};

/// Settings of fast_search.
#[derive(Debug, Clone)]
pub struct FastSearch {
    pub table: CalibrationTable,
    pub base_qtable: Vec<(String, QuantMode)>,
    pub float_mode: QuantMode,
    pub expected_cos: f64,
    /// Round cap (TPU-MLIR uses `inference_num`).
    pub max_rounds: usize,
}

/// What fast_search found.
#[derive(Debug, Clone)]
pub struct FastSearchOutcome {
    pub int8_cos: f64,
    pub early_exit: bool,
    pub mix_cos: f64,
    /// Float layers in the order they were chosen.
    pub float_layers: Vec<String>,
    pub rounds: usize,
}

/// The `index`-th score of a journal: `score <index> <samples> <cos>
/// <snr>`.
fn score_record(index: usize, samples: usize, sc: &OutputScore) -> Vec<String> {
    vec![
        "score".to_string(),
        index.to_string(),
        samples.to_string(),
        f64_hex(sc.cos),
        f64_hex(sc.snr),
    ]
}

fn parse_score_record(r: &[String], index: usize, samples: usize) -> Option<OutputScore> {
    if r.len() != 5 || r[1] != index.to_string() || r[2] != samples.to_string() {
        return None;
    }
    Some(OutputScore {
        cos: parse_f64_hex(&r[3])?,
        snr: parse_f64_hex(&r[4])?,
    })
}

/// Runs fast_search. The evaluator's reference must be set. With a
/// journal, scores are recorded and replayed (see the module docs).
pub fn fast_search(
    ev: &mut MixEvaluator,
    s: &FastSearch,
    log: &mut SearchLog,
    progress: &dyn Progress,
    mut journal: Option<&mut Journal>,
) -> Result<FastSearchOutcome, PipelineError> {
    let n = ev.sample_count();
    let graph = ev.graph();
    let build = |ev: &mut MixEvaluator, floats: &[String]| {
        let mut q = s.base_qtable.clone();
        q.extend(floats.iter().map(|f| (f.clone(), s.float_mode)));
        let table = &s.table;
        ev.build(&Precision {
            quantize: QuantMode::Int8,
            table: Some(table),
            qtable: &q,
        })
    };
    // The `index`-th score: from the journal when it holds it, else the
    // model with `floats` in float (or `built`) scored on every sample and
    // stored in the cache (`all`), or on the first sample alone (a trial).
    let mut scored = 0usize;
    let mut score = |ev: &mut MixEvaluator,
                     floats: &[String],
                     all: bool,
                     built: Option<&Built>|
     -> Result<OutputScore, PipelineError> {
        let samples = if all { n } else { 1 };
        let index = scored;
        scored += 1;
        if let Some(r) = replayed(journal.as_deref(), index, "score")? {
            return parse_score_record(r, index, samples).ok_or_else(|| {
                journal
                    .as_deref()
                    .expect("a replayed record has a journal")
                    .mismatch(index)
            });
        }
        let sc = match built {
            Some(b) => ev.score(b, samples, all)?,
            None => {
                let b = build(ev, floats)?;
                ev.score(&b, samples, all)?
            }
        };
        if let Some(j) = journal.as_deref_mut() {
            j.append(&score_record(index, samples, &sc))?;
        }
        Ok(sc)
    };
    let base = build(ev, &[])?;
    let int8 = score(ev, &[], true, Some(&base))?;
    log.info(format!("all_int8_cos={}", int8.cos));
    let mut outcome = FastSearchOutcome {
        int8_cos: int8.cos,
        early_exit: false,
        mix_cos: int8.cos,
        float_layers: Vec::new(),
        rounds: 0,
    };
    if log.int8_is_enough(int8.cos, s.expected_cos) {
        outcome.early_exit = true;
        return Ok(outcome);
    }
    let mut candidates: Vec<String> = int8_layers(graph, &base.plan)
        .into_iter()
        .map(|l| l.name)
        .collect();
    let total = candidates.len();
    log.info(format!("all search layer number: {total}"));
    let mut chosen: Vec<String> = Vec::new();
    let mut last_cos = int8.cos;
    // The best round so far: (cos, float layers chosen by then).
    let mut best = (int8.cos, 0usize);
    let mut eps: Option<f64> = None;
    progress.start("rounds", s.max_rounds.max(1));
    while !candidates.is_empty() && outcome.rounds < s.max_rounds.max(1) {
        outcome.rounds += 1;
        // One-sample trials: L int8, every other candidate and the chosen
        // layers float.
        let mut losses: Vec<(f64, f64)> = Vec::with_capacity(candidates.len());
        for l in &candidates {
            let mut floats = chosen.clone();
            floats.extend(candidates.iter().filter(|c| *c != l).cloned());
            let sc = score(ev, &floats, false, None)?;
            losses.push((sc.loss(), sc.snr));
        }
        let rank = |key: &dyn Fn(&(f64, f64)) -> f64| {
            let mut idx: Vec<usize> = (0..losses.len()).collect();
            idx.sort_by(|&a, &b| key(&losses[a]).total_cmp(&key(&losses[b])).then(a.cmp(&b)));
            let mut r = vec![0usize; losses.len()];
            for (pos, &i) in idx.iter().enumerate() {
                r[i] = pos;
            }
            r
        };
        let r_cos = rank(&|l| l.0);
        let r_snr = rank(&|l| l.1);
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| {
            (r_cos[a] + r_snr[a])
                .cmp(&(r_cos[b] + r_snr[b]))
                .then(losses[a].0.total_cmp(&losses[b].0))
                .then(a.cmp(&b))
        });
        let take: HashSet<usize> = order.iter().rev().take(5).copied().collect();
        let mut picked = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            if take.contains(&i) {
                picked.push(c.clone());
            }
        }
        candidates = candidates
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !take.contains(i))
            .map(|(_, c)| c)
            .collect();
        chosen.extend(picked.iter().cloned());
        let cos = score(ev, &chosen, true, None)?.cos;
        log.info(format!(
            "round {}: sensitive layers {}, mix model outputs_cos: {cos}",
            outcome.rounds,
            py_list(&picked)
        ));
        if cos > best.0 {
            best = (cos, chosen.len());
        }
        progress.advance(1);
        let delta = cos - last_cos;
        last_cos = cos;
        if cos >= s.expected_cos {
            break;
        }
        match eps {
            None => eps = Some(delta.abs() / 2.0),
            Some(e) if delta < e && delta < 0.001 => break,
            Some(_) => {}
        }
        if chosen.len() as f64 > 0.2 * total as f64 {
            break;
        }
    }
    progress.finish();
    // A round can make the output worse (its five layers come from
    // one-sample trials): the best round wins, and none if no round beats
    // all-int8. TPU-MLIR keeps the last round's list.
    chosen.truncate(best.1);
    outcome.mix_cos = best.0;
    outcome.float_layers = chosen;
    log.print_info(format!(
        "float layer number: {}, mix model outputs_cos: {:.6}",
        outcome.float_layers.len(),
        outcome.mix_cos
    ));
    Ok(outcome)
}
