//! run_qtable / `--search mix_search` (spec section 3.10): walk the ops in
//! order; where an op's own output similarity falls below `min_layer_cos`,
//! put it (and the ops since the previous visited op) in float, keep the
//! change if the model output does not get worse, and stop once the output
//! similarity exceeds `expected_cos`.
//!
//! The reference (the model at the float type) runs once and its layer
//! tensors are kept; each configuration then recomputes what it changed and
//! compares those layers and the outputs.

use std::collections::HashMap;

use qtune_quant::{CalibrationTable, QuantMode};

use super::journal::{Journal, f64_hex, parse_f64_hex, replayed};
use super::layers::layers;
use super::log::SearchLog;
use super::similarity::OutputScore;
use super::{Built, MixEvaluator, Precision};
use crate::{PipelineError, Progress};

/// Op types TPU-MLIR's mix_search never puts in float on their own
/// (`SKIP_OPERATION`).
const SKIP_TYPES: [&str; 8] = [
    "top.Reshape",
    "top.Softmax",
    "top.MaxPool",
    "top.Slice",
    "top.Tile",
    "top.Permute",
    "top.Upsample",
    "top.Interp",
];

/// Settings of mix_search.
#[derive(Debug, Clone)]
pub struct MixSearch {
    pub table: CalibrationTable,
    /// The qtable the search starts from (its layers stay as listed).
    pub base_qtable: Vec<(String, QuantMode)>,
    pub float_mode: QuantMode,
    pub expected_cos: f64,
    pub min_layer_cos: f64,
    /// Cap on float layers (`None`: a quarter of the ops, TPU-MLIR's cap).
    pub max_float_layers: Option<usize>,
}

/// What mix_search found.
#[derive(Debug, Clone)]
pub struct MixSearchOutcome {
    pub int8_cos: f64,
    pub early_exit: bool,
    pub mix_cos: f64,
    /// Float layers in op order.
    pub float_layers: Vec<String>,
    /// `(layer, layer cos)` for every visited op, in visiting order.
    pub losses: Vec<(String, f64)>,
    /// Configurations scored.
    pub trials: usize,
    /// `(float layers, output cos)` of every configuration scored, all-int8
    /// (0) first, in the order tried (rejected trials included).
    pub trajectory: Vec<(usize, f64)>,
}

/// One scored configuration as a journal record: `config <index> <float
/// layers> <cos> <snr> <layer>=<cos> ...` (the layers the run recomputed).
fn config_record(
    index: usize,
    float: usize,
    score: &OutputScore,
    changed: &HashMap<String, f64>,
) -> Vec<String> {
    let mut names: Vec<&String> = changed.keys().collect();
    names.sort();
    let mut r = vec![
        "config".to_string(),
        index.to_string(),
        float.to_string(),
        f64_hex(score.cos),
        f64_hex(score.snr),
    ];
    r.extend(
        names
            .into_iter()
            .map(|n| format!("{}={}", f64_hex(changed[n]), n)),
    );
    r
}

fn parse_config_record(
    r: &[String],
    index: usize,
    float: usize,
) -> Option<(OutputScore, HashMap<String, f64>)> {
    if r.len() < 5 || r[1] != index.to_string() || r[2] != float.to_string() {
        return None;
    }
    let score = OutputScore {
        cos: parse_f64_hex(&r[3])?,
        snr: parse_f64_hex(&r[4])?,
    };
    let changed = r[5..]
        .iter()
        .map(|f| {
            let (c, n) = f.split_once('=')?;
            Some((n.to_string(), parse_f64_hex(c)?))
        })
        .collect::<Option<HashMap<_, _>>>()?;
    Some((score, changed))
}

/// Runs mix_search. The evaluator's reference must be the model at the
/// float type, built as `reference`. With a journal, every scored
/// configuration is recorded once computed, and the ones it already holds
/// (`--resume`) are taken from it instead of run: the walk, its log and
/// its outcome are those of an uninterrupted search.
pub fn mix_search(
    ev: &mut MixEvaluator,
    reference: &Built,
    s: &MixSearch,
    log: &mut SearchLog,
    progress: &dyn Progress,
    mut journal: Option<&mut Journal>,
) -> Result<MixSearchOutcome, PipelineError> {
    let graph = ev.graph();
    let all = layers(graph);
    let names: Vec<String> = all.iter().map(|l| l.name.clone()).collect();
    let build = |ev: &mut MixEvaluator, qtable: &[(String, QuantMode)]| {
        ev.build(&Precision {
            quantize: QuantMode::Int8,
            table: Some(&s.table),
            qtable,
        })
    };
    // The reference's layer tensors are kept (in memory within the budget,
    // beyond it in a scratch file): each configuration then recomputes, and
    // compares, only what it changed.
    let ref_tensors = ev.layer_tensors(reference, &names)?;
    // The `index`-th configuration scored, with `float` float layers.
    let mut score = |ev: &mut MixEvaluator,
                     b: &Built,
                     previous: Option<&HashMap<String, f64>>,
                     index: usize,
                     float: usize|
     -> Result<(HashMap<String, f64>, OutputScore), PipelineError> {
        let (sc, changed) = match replayed(journal.as_deref(), index, "config")? {
            Some(r) => match parse_config_record(r, index, float) {
                Some(x) => x,
                None => {
                    let j = journal.as_deref().expect("a replayed record has a journal");
                    return Err(j.mismatch(index));
                }
            },
            None => {
                let (sc, changed) = ev.score_layers(b, &ref_tensors)?;
                if let Some(j) = journal.as_deref_mut() {
                    j.append(&config_record(index, float, &sc, &changed))?;
                }
                (sc, changed)
            }
        };
        let mut lc = previous.cloned().unwrap_or_default();
        lc.extend(changed);
        Ok((lc, sc))
    };
    let base = build(ev, &s.base_qtable)?;
    let (mut layer_cos, int8) = score(ev, &base, None, 0, 0)?;
    let mut trials = 1usize;
    let mut outcome = MixSearchOutcome {
        int8_cos: int8.cos,
        early_exit: false,
        mix_cos: int8.cos,
        float_layers: Vec::new(),
        losses: Vec::new(),
        trials,
        trajectory: vec![(0, int8.cos)],
    };
    log.info(format!("all_int8_cos={}", int8.cos));
    if log.int8_is_enough(int8.cos, s.expected_cos) {
        outcome.early_exit = true;
        return Ok(outcome);
    }
    let max_fp = s
        .max_float_layers
        .map_or(all.len() / 4, |m| m.min(all.len() / 4));
    let listed: std::collections::HashSet<&str> =
        s.base_qtable.iter().map(|(n, _)| n.as_str()).collect();
    let mut plan = base.plan.clone();
    let mut float: Vec<String> = Vec::new();
    let mut last_visited: Option<usize> = None;
    progress.start("layers", all.len());
    for (i, layer) in all.iter().enumerate() {
        progress.advance(1);
        let is_int8 = plan.mode(layer.node) == QuantMode::Int8;
        if SKIP_TYPES.contains(&layer.top_type.as_str())
            || listed.contains(layer.name.as_str())
            || !is_int8
        {
            last_visited = Some(i);
            continue;
        }
        let Some(&c) = layer_cos.get(&layer.name) else {
            last_visited = Some(i);
            continue;
        };
        outcome.losses.push((layer.name.clone(), c));
        log.info(format!("layer {}, layer cos: {c}", layer.name));
        if c < s.min_layer_cos {
            let from = last_visited.map_or(0, |l| l + 1);
            let range: Vec<String> = all[from..=i]
                .iter()
                .map(|l| l.name.clone())
                .filter(|n| !listed.contains(n.as_str()) && !float.contains(n))
                .collect();
            let mut trial = s.base_qtable.clone();
            trial.extend(
                float
                    .iter()
                    .chain(&range)
                    .map(|n| (n.clone(), s.float_mode)),
            );
            let b = build(ev, &trial)?;
            let (lc, score) = score(ev, &b, Some(&layer_cos), trials, float.len() + range.len())?;
            trials += 1;
            outcome
                .trajectory
                .push((float.len() + range.len(), score.cos));
            log.info(format!(
                "set float layers {}, mix model outputs_cos: {}",
                super::log::py_list(&range),
                score.cos
            ));
            if score.cos < outcome.int8_cos {
                log.info(format!(
                    "revert {}: output cos below all-int8",
                    super::log::py_list(&range)
                ));
            } else {
                float.extend(range);
                layer_cos = lc;
                plan = b.plan.clone();
                outcome.mix_cos = score.cos;
                if score.cos > s.expected_cos {
                    log.info("mix model reaches expected_cos");
                    last_visited = Some(i);
                    break;
                }
                if float.len() > max_fp {
                    log.info(format!(
                        "float layer number {} exceeds {max_fp}",
                        float.len()
                    ));
                    break;
                }
            }
        }
        last_visited = Some(i);
    }
    progress.finish();
    let _ = last_visited;
    // Float layers in op order.
    let order: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    float.sort_by_key(|n| order.get(n.as_str()).copied().unwrap_or(usize::MAX));
    outcome.float_layers = float;
    outcome.trials = trials;
    Ok(outcome)
}
