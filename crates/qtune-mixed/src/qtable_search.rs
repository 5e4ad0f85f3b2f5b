//! search_qtable and run_sensitive_layer (spec section 3.9): the best
//! threshold method per layer, the layers whose int8 form hurts the output
//! most, and the fewest of them to keep in float.
//!
//! Steps, as TPU-MLIR's `SearchQtable.run`, with its [BUG?]s fixed:
//! 1. the all-int8 model (table `-o`, shape qtable); done if its mapped
//!    output cosine already exceeds `expected_cos`;
//! 2. candidates: the layers the plan runs in INT8; with the type
//!    pre-screen, only the op types whose int8 form costs most (on one
//!    sample, every other type in float): those below
//!    `max(0.999, expected_cos)`, or if none is, those whose loss is at
//!    least half the worst type's (TPU-MLIR takes the worst type alone);
//! 3. per candidate L, in op order: every other candidate in float, L in
//!    int8 with each method's threshold; the lowest loss wins and its
//!    threshold is kept for the next layers (cumulative, as TPU-MLIR);
//! 4. layers by loss, descending; the fewest leading layers whose float
//!    form reaches `expected_cos`, up to `max_float_layers`; if none does
//!    and the model has more than `5 * max_float_layers` candidates, up to
//!    a fifth of them (TPU-MLIR's expansion), by binary search for the
//!    smallest passing count. TPU-MLIR writes every searched layer (or the
//!    last count its binary search tried); qtune writes the chosen ones.
//!
//! Each trial recomputes only what lies downstream of the changed layer
//! (see [`super::MixEvaluator`]).

use std::collections::HashSet;
use std::time::Instant;

use qtune_quant::{CalibrationTable, QuantMode};

use super::journal::{Journal, f64_hex, parse_f64_hex};
use super::layers::{Layer, int8_layers};
use super::log::SearchLog;
use super::{MixEvaluator, Precision};
use crate::{PipelineError, Progress};

/// One threshold method's table.
#[derive(Debug, Clone)]
pub struct MethodTable {
    /// As TPU-MLIR logs it: `KL`, `MSE`, `MAX`, `Percentile9999`.
    pub label: String,
    pub table: CalibrationTable,
}

/// Settings of a layer search.
#[derive(Debug, Clone)]
pub struct LayerSearch {
    pub methods: Vec<MethodTable>,
    /// The starting table (`-o`).
    pub table: CalibrationTable,
    /// Shape and pattern layers, kept in float throughout.
    pub base_qtable: Vec<(String, QuantMode)>,
    /// Float mode of the layers the search keeps in float.
    pub float_mode: QuantMode,
    pub expected_cos: f64,
    pub max_float_layers: usize,
    /// Search only the op types whose int8 form costs most (search_qtable);
    /// run_sensitive_layer searches every layer.
    pub prescreen: bool,
    /// Stop early when all-int8 already meets `expected_cos`, and choose the
    /// fewest float layers that reach it (search_qtable). Without it the
    /// `max_float_layers` most sensitive layers are chosen
    /// (run_sensitive_layer).
    pub adjust: bool,
}

/// The best method of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerResult {
    pub name: String,
    pub top_type: String,
    pub method: String,
    pub threshold: f64,
    pub loss: f64,
    /// The loss of each method, in [`LayerSearch::methods`] order (`None`
    /// for layers resumed from a journal, which keeps only the best).
    pub losses: Vec<Option<f64>>,
}

/// What a layer search found.
#[derive(Debug, Clone)]
pub struct LayerSearchOutcome {
    pub all_int8_cos: f64,
    /// All-int8 met `expected_cos`: nothing was searched.
    pub early_exit: bool,
    /// Per searched layer, in op order.
    pub results: Vec<LayerResult>,
    /// The chosen float layers, most sensitive first.
    pub float_layers: Vec<String>,
    pub mix_cos: f64,
    /// The table with every layer's best threshold (`new_cali_table.txt`).
    pub table: CalibrationTable,
    /// `(float layers, output cos)` of every configuration scored for the
    /// choice, all-int8 (0) first, in the order tried.
    pub trajectory: Vec<(usize, f64)>,
}

fn set_threshold(table: &mut CalibrationTable, name: &str, th: f64) {
    if let Some(r) = table.rows.iter_mut().find(|r| r.name == name) {
        r.threshold = th;
    }
}

fn with_float(
    base: &[(String, QuantMode)],
    layers: impl IntoIterator<Item = String>,
    mode: QuantMode,
) -> Vec<(String, QuantMode)> {
    let mut q = base.to_vec();
    let have: HashSet<String> = q.iter().map(|(n, _)| n.clone()).collect();
    q.extend(
        layers
            .into_iter()
            .filter(|n| !have.contains(n))
            .map(|n| (n, mode)),
    );
    q
}

/// Runs the layer search. The evaluator's reference must be set.
pub fn layer_search(
    ev: &mut MixEvaluator,
    s: &LayerSearch,
    log: &mut SearchLog,
    progress: &dyn Progress,
    mut journal: Option<&mut Journal>,
) -> Result<LayerSearchOutcome, PipelineError> {
    let n = ev.sample_count();
    let graph = ev.graph();
    let mut table = s.table.clone();
    let base = ev.build(&Precision {
        quantize: QuantMode::Int8,
        table: Some(&table),
        qtable: &s.base_qtable,
    })?;
    let all_int8 = ev.score(&base, n, true)?;
    log.info(format!("all_int8_cos={}", all_int8.cos));
    let mut outcome = LayerSearchOutcome {
        all_int8_cos: all_int8.cos,
        early_exit: false,
        results: Vec::new(),
        float_layers: Vec::new(),
        mix_cos: all_int8.cos,
        table: table.clone(),
        trajectory: vec![(0, all_int8.cos)],
    };
    if s.adjust && log.int8_is_enough(all_int8.cos, s.expected_cos) {
        outcome.early_exit = true;
        return Ok(outcome);
    }
    let all_layers = super::layers::layers(graph);
    let candidates: Vec<Layer> = int8_layers(graph, &base.plan);
    log.info("layer name check pass !");
    log.info(format!("all layer number: {}", all_layers.len()));
    log.info(format!("all layer number no float: {}", candidates.len()));

    // Types: the pre-screen on one sample.
    let mut types: Vec<String> = Vec::new();
    for l in &candidates {
        if !types.contains(&l.top_type) {
            types.push(l.top_type.clone());
        }
    }
    let searched: Vec<Layer> = if s.prescreen && types.len() > 1 {
        let mut sims = Vec::with_capacity(types.len());
        for t in &types {
            let qtable = with_float(
                &s.base_qtable,
                candidates
                    .iter()
                    .filter(|l| &l.top_type != t)
                    .map(|l| l.name.clone()),
                s.float_mode,
            );
            let b = ev.build(&Precision {
                quantize: QuantMode::Int8,
                table: Some(&table),
                qtable: &qtable,
            })?;
            let c = ev.score(&b, 1, false)?.cos;
            log.info(format!("op_type : {t}, similarity : {c}"));
            sims.push(c);
        }
        let bar = s.expected_cos.max(0.999);
        let mut sensitive: Vec<&String> = types
            .iter()
            .zip(&sims)
            .filter(|&(_, &c)| c < bar)
            .map(|(t, _)| t)
            .collect();
        if sensitive.is_empty() {
            // No type below the bar: TPU-MLIR takes the single worst type.
            // When types are nearly tied that leaves out layers that matter
            // (on MobileNetV2 it keeps the Convs out and floats ReLU6 Clips,
            // which changes nothing); qtune takes every type whose loss is at
            // least half the worst one's.
            let worst = sims.iter().map(|c| 1.0 - c).fold(0.0f64, f64::max);
            sensitive = types
                .iter()
                .zip(&sims)
                .filter(|&(_, &c)| 1.0 - c >= 0.5 * worst)
                .map(|(t, _)| t)
                .collect();
        }
        log.print_info(format!(
            "sensitive_op_type : {}, please pay attention to these types of operations",
            super::log::py_list(&sensitive)
        ));
        candidates
            .iter()
            .filter(|l| sensitive.contains(&&l.top_type))
            .cloned()
            .collect()
    } else {
        candidates.clone()
    };
    log.info(format!("all search layer number: {}", searched.len()));
    let compare: Vec<&str> = ev.compare().iter().map(|(n, _)| n.as_str()).collect();
    if ev.compare().len() == graph.outputs.len()
        && ev
            .compare()
            .iter()
            .zip(&graph.outputs)
            .all(|((c, _), &o)| *c == graph.value(o).name)
    {
        log.info("Global metrics layer is : None");
    } else {
        log.info(format!(
            "Global metrics layer is : {}",
            super::log::py_list(&compare)
        ));
    }

    // Per-layer method search.
    let start = Instant::now();
    let done: Vec<Vec<String>> = journal
        .as_deref()
        .map(|j| j.records().to_vec())
        .unwrap_or_default();
    let mut resumed = 0usize;
    progress.start("layers", searched.len() * s.methods.len());
    let all_float: Vec<String> = searched.iter().map(|l| l.name.clone()).collect();
    for (i, layer) in searched.iter().enumerate() {
        if let Some(r) = done.get(i) {
            // `layer <name> <method index> <threshold> <loss>`.
            let parsed = (|| {
                if r.len() != 5 || r[0] != "layer" || r[1] != layer.name {
                    return None;
                }
                let m: usize = r[2].parse().ok()?;
                Some((m, parse_f64_hex(&r[3])?, parse_f64_hex(&r[4])?))
            })();
            let (m, th, loss) = parsed.ok_or_else(|| {
                PipelineError::Settings(format!(
                    "--resume: record {} of the journal does not match layer `{}`",
                    i + 1,
                    layer.name
                ))
            })?;
            let label = s
                .methods
                .get(m)
                .map(|x| x.label.clone())
                .ok_or_else(|| PipelineError::Settings("--resume: bad method index".into()))?;
            set_threshold(&mut table, &layer.name, th);
            outcome.results.push(LayerResult {
                name: layer.name.clone(),
                top_type: layer.top_type.clone(),
                method: label,
                threshold: th,
                loss,
                losses: (0..s.methods.len())
                    .map(|k| (k == m).then_some(loss))
                    .collect(),
            });
            resumed += 1;
            progress.advance(s.methods.len());
            continue;
        }
        log.info(format!(
            "start to handle layer: {}, type: {}",
            layer.name, layer.top_type
        ));
        // The configuration the trials derive from: every searched layer
        // in float. Its tensors are cached once (mostly found already).
        let float_all = with_float(&s.base_qtable, all_float.iter().cloned(), s.float_mode);
        let b = ev.build(&Precision {
            quantize: QuantMode::Int8,
            table: Some(&table),
            qtable: &float_all,
        })?;
        ev.score(&b, n, true)?;
        let qtable = with_float(
            &s.base_qtable,
            all_float.iter().filter(|x| **x != layer.name).cloned(),
            s.float_mode,
        );
        let mut best: Option<(usize, f64, f64)> = None;
        let mut losses = Vec::with_capacity(s.methods.len());
        for (m, mt) in s.methods.iter().enumerate() {
            let th = mt
                .table
                .get(&layer.name)
                .map(|r| r.threshold)
                .ok_or_else(|| {
                    PipelineError::Settings(format!(
                        "layer `{}` has no {} threshold",
                        layer.name, mt.label
                    ))
                })?;
            log.info(format!(
                "adjust layer {} th, with method {}, and threshlod {}",
                layer.name, mt.label, th
            ));
            let mut trial = table.clone();
            set_threshold(&mut trial, &layer.name, th);
            let b = ev.build(&Precision {
                quantize: QuantMode::Int8,
                table: Some(&trial),
                qtable: &qtable,
            })?;
            let loss = ev.score(&b, n, false)?.loss();
            log.info(format!("outputs_cos_los = {loss}"));
            losses.push(Some(loss));
            if best.is_none_or(|(_, _, l)| loss < l) {
                best = Some((m, th, loss));
            }
            progress.advance(1);
        }
        let Some((m, th, loss)) = best else {
            return Err(PipelineError::Settings(
                "--quantize_method_list is empty".into(),
            ));
        };
        let label = s.methods[m].label.clone();
        log.info(format!(
            "layer {}, layer type is {}, best_th = {}, best_method = {}, best_cos_loss = {}",
            layer.name, layer.top_type, th, label, loss
        ));
        set_threshold(&mut table, &layer.name, th);
        if let Some(j) = journal.as_deref_mut() {
            j.append(&[
                "layer".into(),
                layer.name.clone(),
                m.to_string(),
                f64_hex(th),
                f64_hex(loss),
            ])?;
        }
        outcome.results.push(LayerResult {
            name: layer.name.clone(),
            top_type: layer.top_type.clone(),
            method: label,
            threshold: th,
            loss,
            losses,
        });
    }
    progress.finish();
    if resumed > 0 {
        log.info(format!("resumed {resumed} layer(s) from the journal"));
    }
    log.print_info(format!(
        "total time of sensitive_layer search is: {}",
        start.elapsed().as_secs_f64()
    ));

    // Rank and choose.
    let mut ranked: Vec<&LayerResult> = outcome.results.iter().collect();
    ranked.sort_by(|a, b| b.loss.total_cmp(&a.loss));
    for (i, r) in ranked.iter().enumerate() {
        log.print_info(format!(
            "the layer {} is {} sensitive layer, loss is {}, type is {}",
            r.name, i, r.loss, r.top_type
        ));
    }
    let names: Vec<String> = ranked.iter().map(|r| r.name.clone()).collect();
    let mut tried: Vec<(usize, f64)> = Vec::new();
    let eval_k = |k: usize,
                  ev: &mut MixEvaluator,
                  log: &mut SearchLog,
                  tried: &mut Vec<(usize, f64)>|
     -> Result<f64, PipelineError> {
        if let Some(&(_, c)) = tried.iter().find(|(kk, _)| *kk == k) {
            return Ok(c);
        }
        let qtable = with_float(&s.base_qtable, names[..k].iter().cloned(), s.float_mode);
        let b = ev.build(&Precision {
            quantize: QuantMode::Int8,
            table: Some(&table),
            qtable: &qtable,
        })?;
        let c = ev.score(&b, n, false)?.cos;
        log.info(format!(
            "set_fp_layer_list = {}",
            super::log::py_list(&names[..k])
        ));
        log.info(format!(
            "float layer number: {k}, mix model outputs_cos: {c}"
        ));
        tried.push((k, c));
        Ok(c)
    };
    let cap = s.max_float_layers.min(names.len());
    let mut chosen: Option<usize> = None;
    if s.adjust {
        for k in 1..=cap {
            if eval_k(k, ev, log, &mut tried)? >= s.expected_cos {
                chosen = Some(k);
                break;
            }
        }
        let wide = candidates.len() / 5;
        if chosen.is_none() && wide > cap && names.len() > cap {
            let hi_max = wide.min(names.len());
            if eval_k(hi_max, ev, log, &mut tried)? >= s.expected_cos {
                let (mut lo, mut hi) = (cap + 1, hi_max);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if eval_k(mid, ev, log, &mut tried)? >= s.expected_cos {
                        hi = mid;
                    } else {
                        lo = mid + 1;
                    }
                }
                chosen = Some(hi);
            }
        }
        if chosen.is_none() {
            // No count reaches expected_cos: the best one tried.
            chosen = tried
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|&(k, _)| k);
        }
    } else if cap > 0 {
        eval_k(cap, ev, log, &mut tried)?;
        chosen = Some(cap);
    }
    let k = chosen.unwrap_or(0);
    let mix_cos = tried
        .iter()
        .find(|(kk, _)| *kk == k)
        .map_or(all_int8.cos, |&(_, c)| c);
    outcome.trajectory.extend(tried.iter().copied());
    outcome.float_layers = names[..k].to_vec();
    outcome.mix_cos = mix_cos;
    outcome.table = table;
    log.print_info(format!(
        "float layer number: {}, mix model outputs_cos: {:.6}",
        k, mix_cos
    ));
    Ok(outcome)
}
