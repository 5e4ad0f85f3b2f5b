//! Bias correction (`run_calibration --bc`, spec section 3.12,
//! TPU-MLIR's `MixPrecSearcher.run_bias_correction`): the int8 model's
//! error has a per-channel mean that a Conv's bias can absorb.
//!
//! Walking the Convs that have a bias in op order, for each one whose int8
//! output (in the current int8 model, earlier corrections applied) has a
//! mean mapped cosine `0.5 + 0.5 cos` to the float output below
//! `min_layer_cos`:
//!
//! ```text
//! delta[c] = mean over samples s, and over N and the spatial positions,
//!            of (float_out[s] - int8_out[s])[:, c, ...]
//! bias[c] += delta[c]
//! ```
//!
//! The int8 model is rebuilt with the new bias (same calibration table) and
//! the change is kept only if neither the Conv's own cosine nor the model
//! output cosine gets worse; the walk stops once the output cosine exceeds
//! `expected_cos` (or does not start when the all-int8 model already does).
//!
//! Deviations from TPU-MLIR, on purpose:
//! * TPU-MLIR compares a trial's layer cosine with the best layer cosine
//!   *of any earlier Conv* (`max_layer_cos`) and then overwrites its running
//!   maxima with the trial's values even when it reverts. Later layers
//!   usually have lower cosines than early ones, so that rule rejects
//!   nearly every later correction for a reason unrelated to it. Here a
//!   trial is compared with the same Conv's cosine before the change, and
//!   with the best output cosine of an applied model.
//! * The input graph is never modified: the corrected biases go into a copy
//!   (TPU-MLIR rewrites the weight npz in place).
//! * The quantized model is qtune's simulation of model_deploy's int8 model
//!   (spec section 4, [`MixEvaluator`]); the "int8 output" of a Conv is its
//!   output before output requantization (the integer accumulator times its
//!   scale), so clipping at the output threshold, which a bias cannot fix,
//!   does not leak into `delta`.
//!
//! A trial recomputes only what lies downstream of the changed Conv: the
//! evaluator finds every upstream tensor in its cache by content key. The
//! float outputs of the Convs are computed once.

use std::time::{Duration, Instant};

use qtune_deploy::Processor;
use qtune_ir::{Graph, NodeId, Op, ValueId};
use qtune_quant::{CalibrationTable, QuantMode};
use qtune_tensor::Tensor;

use crate::{PipelineError, Progress};
use qtune_mixed::journal::{
    Journal, f32_hex, f64_hex, graph_key, parse_f32_hex, parse_f64_hex, replayed, samples_key,
};
use qtune_mixed::{EvalStats, LayerRefs, MixEvaluator, Precision, cos_sim};

/// Settings of [`bias_correction`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BiasCorrectionSettings {
    /// A Conv is corrected when its mean mapped cosine is below this.
    pub min_layer_cos: f64,
    /// The walk stops once the mapped output cosine exceeds this.
    pub expected_cos: f64,
    /// Bytes of cached activations of the evaluator.
    pub cache_budget: usize,
}

impl Default for BiasCorrectionSettings {
    fn default() -> Self {
        BiasCorrectionSettings {
            min_layer_cos: 0.99,
            expected_cos: 0.99,
            cache_budget: 2 << 30,
        }
    }
}

/// What happened to one Conv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorrectionOutcome {
    /// Its cosine was at least `min_layer_cos`: nothing to do.
    AboveThreshold,
    /// The corrected bias was kept.
    Applied,
    /// The correction made the layer or the model output worse: undone.
    Reverted,
}

/// One visited Conv.
#[derive(Debug, Clone)]
pub struct ConvCorrection {
    /// The Conv's output tensor name in the float graph.
    pub name: String,
    /// Mean mapped cosine of its int8 output before the trial.
    pub old_layer_cos: f64,
    /// ... and with the corrected bias (trials only).
    pub new_layer_cos: Option<f64>,
    /// Mapped output cosine of the model with the corrected bias.
    pub outputs_cos: Option<f64>,
    /// Largest |delta| over the channels (trials only).
    pub max_abs_delta: Option<f32>,
    pub outcome: CorrectionOutcome,
}

/// The result of [`bias_correction`].
#[derive(Debug, Clone)]
pub struct BiasCorrectionReport {
    /// Mapped output cosine of the all-int8 model before any correction.
    pub int8_cos: f64,
    /// ... of the corrected model (equal to `int8_cos` when nothing was
    /// applied).
    pub final_cos: f64,
    /// The all-int8 model already exceeded `expected_cos`: no Conv visited.
    pub already_accurate: bool,
    /// The walk stopped early because the output cosine exceeded
    /// `expected_cos`.
    pub reached_expected: bool,
    /// Visited Convs in op order.
    pub convs: Vec<ConvCorrection>,
    /// Convs with a bias that were not visited, with the reason.
    pub skipped: Vec<(String, String)>,
    pub samples: usize,
    pub stats: EvalStats,
    pub time: Duration,
}

impl BiasCorrectionReport {
    pub fn applied(&self) -> usize {
        self.count(CorrectionOutcome::Applied)
    }

    pub fn reverted(&self) -> usize {
        self.count(CorrectionOutcome::Reverted)
    }

    fn count(&self, o: CorrectionOutcome) -> usize {
        self.convs.iter().filter(|c| c.outcome == o).count()
    }
}

/// A Conv with a constant float bias: node, output name, bias value.
struct Candidate {
    node: NodeId,
    out: ValueId,
    name: String,
    bias: ValueId,
}

/// The Convs of `graph` with a bias, in op order; the others that cannot be
/// corrected go to `skipped`.
fn candidates(graph: &Graph, skipped: &mut Vec<(String, String)>) -> Vec<Candidate> {
    let uses = graph.use_counts();
    let mut out = Vec::new();
    for (id, n) in graph.nodes() {
        if !matches!(n.op, Op::Conv(_)) {
            continue;
        }
        let (Some(&out_id), Some(Some(bias))) = (n.outputs.first(), n.inputs.get(2)) else {
            continue;
        };
        let name = graph.value(out_id).name.clone();
        let bias = *bias;
        let reason = match graph.constant_of(bias) {
            None => Some("its bias is not a constant"),
            Some(t) if t.as_f32().is_err() => Some("its bias is not float32"),
            Some(_) if uses[bias.index()] > 1 => Some("its bias is shared with other nodes"),
            Some(_) => None,
        };
        match reason {
            Some(r) => skipped.push((name, r.to_string())),
            None => out.push(Candidate {
                node: id,
                out: out_id,
                name,
                bias,
            }),
        }
    }
    out
}

/// Where the simulation model holds the output of the Conv writing `out`
/// (named `name`) before output quantization, and the factor to float
/// units. An int8 Conv requantized by one multiplier writes
/// `<name>_requant` (or `<name>_raw_requant` for a graph output) in units
/// of the output scale, the scale of the tensor's planned range; a Conv
/// left in float writes `<name>` (`<name>_raw` for a graph output) itself.
fn pre_quant_output(
    model: &qtune_mixed::Built,
    out: ValueId,
    name: &str,
) -> Result<(String, f32), PipelineError> {
    let g = model.graph();
    for requant in [format!("{name}_raw_requant"), format!("{name}_requant")] {
        if g.find_value(&requant).is_none() {
            continue;
        }
        return match model.plan.range(out) {
            Some(r) => Ok((requant, r.scale())),
            None => Err(PipelineError::Internal(format!(
                "Conv output `{name}` is requantized in the int8 model but has no planned range"
            ))),
        };
    }
    for plain in [format!("{name}_raw"), name.to_string()] {
        if g.find_value(&plain).is_some() {
            return Ok((plain, 1.0));
        }
    }
    Err(PipelineError::Internal(format!(
        "Conv output `{name}` is missing from the int8 model"
    )))
}

/// The Conv output `name` of `model` on every sample, in float units,
/// before output quantization (`[sample][0]`).
fn int8_output(
    ev: &mut MixEvaluator,
    model: &qtune_mixed::Built,
    out: ValueId,
    name: &str,
) -> Result<Vec<Vec<Tensor>>, PipelineError> {
    let (value, scale) = pre_quant_output(model, out, name)?;
    let raw = ev.tensors(model, &[value.as_str()])?;
    scaled(raw, scale)
}

fn scaled(raw: Vec<Vec<Tensor>>, scale: f32) -> Result<Vec<Vec<Tensor>>, PipelineError> {
    if scale == 1.0 {
        return Ok(raw);
    }
    // One sample at a time, in place where the tensor is f32 and not
    // shared: the raw tensors of every sample are not held twice.
    raw.into_iter()
        .map(|ts| {
            ts.into_iter()
                .map(|t| {
                    let dims = t.dims().to_vec();
                    let mut v = match t.into_unshared_f32_vec() {
                        Ok(v) => v,
                        Err(t) => t.to_f32_vec(),
                    };
                    for x in &mut v {
                        *x *= scale;
                    }
                    Tensor::from_f32(dims, v)
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()
        .map_err(PipelineError::from)
}

/// Mean over samples of the mapped cosine.
fn layer_cos(float: &[Tensor], int8: &[Vec<Tensor>]) -> f64 {
    let mut sum = 0.0;
    for (f, q) in float.iter().zip(int8) {
        sum += cos_sim(&f.to_f32_vec(), &q[0].to_f32_vec());
    }
    sum / float.len().max(1) as f64
}

/// [`layer_cos`] of `float` and `raw * scale` (the int8 output in float
/// units, see [`scaled`]), scaling one sample at a time: the raw tensors
/// are shared with the trial's values, so scaling them all would copy the
/// Conv's output on every sample at once. The same f32 products and the
/// same sums as `layer_cos(float, &scaled(raw, scale))`.
fn scaled_layer_cos(float: &[Tensor], raw: Vec<Vec<Tensor>>, scale: f32) -> f64 {
    let mut sum = 0.0;
    for (f, q) in float.iter().zip(raw) {
        let Some(t) = q.into_iter().next() else {
            continue;
        };
        let mut v = match t.into_unshared_f32_vec() {
            Ok(v) => v,
            Err(t) => t.to_f32_vec(),
        };
        if scale != 1.0 {
            for x in &mut v {
                *x *= scale;
            }
        }
        sum += cos_sim(&f.to_f32_vec(), &v);
    }
    sum / float.len().max(1) as f64
}

/// Per channel (axis 1), the mean over samples, N and the spatial
/// positions of `float - int8`.
fn channel_delta(
    name: &str,
    float: &[Tensor],
    int8: &[Vec<Tensor>],
) -> Result<Vec<f32>, PipelineError> {
    let dims = float.first().map(|t| t.dims().to_vec()).unwrap_or_default();
    if dims.len() < 2 {
        return Err(PipelineError::Settings(format!(
            "Conv output `{name}` has shape {dims:?}; expected [N, C, ...]"
        )));
    }
    let channels = dims[1];
    let inner: usize = dims[2..].iter().product();
    let mut sum = vec![0f64; channels];
    let mut count = 0usize;
    for (f, q) in float.iter().zip(int8) {
        let q = &q[0];
        if f.dims() != q.dims() {
            return Err(PipelineError::Settings(format!(
                "Conv output `{name}`: the int8 model gives shape {:?}, the float model {:?}",
                q.dims(),
                f.dims()
            )));
        }
        let (fv, qv) = (f.to_f32_vec(), q.to_f32_vec());
        for (k, (fb, qb)) in fv
            .chunks(inner.max(1))
            .zip(qv.chunks(inner.max(1)))
            .enumerate()
        {
            let c = k % channels;
            sum[c] += fb
                .iter()
                .zip(qb)
                .map(|(&a, &b)| f64::from(a) - f64::from(b))
                .sum::<f64>();
        }
        count += dims[0] * inner;
    }
    // Narrowing the mean back to the bias type is intended.
    #[allow(clippy::cast_possible_truncation)]
    Ok(sum
        .iter()
        .map(|&s| (s / count.max(1) as f64) as f32)
        .collect())
}

/// `graph` with `delta` added to the bias `bias`.
fn with_bias_delta(graph: &Graph, c: &Candidate, delta: &[f32]) -> Result<Graph, PipelineError> {
    let mut g = graph.clone();
    let old = g
        .constant_of(c.bias)
        .ok_or_else(|| PipelineError::Transform {
            node: c.name.clone(),
            op: "Conv",
            message: "its bias is not a constant".into(),
        })?;
    let values = old.as_f32()?;
    if values.len() != delta.len() {
        return Err(PipelineError::Transform {
            node: c.name.clone(),
            op: "Conv",
            message: format!(
                "bias `{}` has {} values for {} output channels",
                g.value(c.bias).name,
                values.len(),
                delta.len()
            ),
        });
    }
    let new: Vec<f32> = values.iter().zip(delta).map(|(b, d)| b + d).collect();
    let t = Tensor::from_f32(old.dims().to_vec(), new)?;
    g.value_mut(c.bias).constant = Some(t);
    Ok(g)
}

/// Bias correction of `graph` (a float graph with BatchNorm folded, named
/// by TPU-MLIR op names) quantized with `table` (and `qtable`'s float
/// layers) for `processor`, on `samples` (graph inputs by name). Returns
/// the corrected copy of the graph and the report; `graph` is unchanged.
///
/// With a journal (opened with [`bias_correction_fingerprint`]), the
/// all-int8 score and every visited Conv are recorded once computed (the
/// delta of a trial as the f32 bits of each channel), and what it already
/// holds (`--resume`) is replayed instead of run: the corrected graph and
/// the report (but its times and statistics) are those of an
/// uninterrupted run.
#[allow(clippy::too_many_arguments)]
pub fn bias_correction(
    graph: &Graph,
    table: &CalibrationTable,
    qtable: &[(String, QuantMode)],
    processor: Processor,
    fp_type: QuantMode,
    samples: Vec<Vec<(String, Tensor)>>,
    settings: &BiasCorrectionSettings,
    progress: &dyn Progress,
    journal: Option<&mut Journal>,
) -> Result<(Graph, BiasCorrectionReport), PipelineError> {
    let model = Model {
        table,
        qtable,
        processor,
        fp_type,
    };
    correct(graph, graph, &model, samples, settings, progress, journal)
}

/// The fingerprint of a bias correction's journal: everything its result
/// depends on (the graph with its weights, the table, the float layers,
/// the processor and float type, the samples and the cosine settings; not
/// the cache budget, which does not change the result).
#[allow(clippy::too_many_arguments)]
pub fn bias_correction_fingerprint(
    graph: &Graph,
    table: &CalibrationTable,
    qtable: &[(String, QuantMode)],
    processor: Processor,
    fp_type: QuantMode,
    samples: &[Vec<(String, Tensor)>],
    settings: &BiasCorrectionSettings,
) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        "bias_correction v1".to_string(),
        graph_key(graph),
        table.to_text(),
        format!("{qtable:?}"),
        format!("{} {fp_type}", processor.name()),
        samples_key(samples),
        format!(
            "{} {}",
            f64_hex(settings.min_layer_cos),
            f64_hex(settings.expected_cos)
        ),
    ] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    format!("{:032x}", h.digest128())
}

/// A visited Conv as a journal record: `conv <index> <name> above <old>`,
/// or `conv <index> <name> trial <old> <new> <outputs> <applied> <delta>`
/// (the delta's channels as f32 bits, comma-separated).
fn conv_record(k: usize, c: &ConvCorrection, delta: &[f32]) -> Vec<String> {
    let mut r = vec![
        "conv".to_string(),
        k.to_string(),
        c.name.clone(),
        if c.new_layer_cos.is_some() {
            "trial"
        } else {
            "above"
        }
        .to_string(),
        f64_hex(c.old_layer_cos),
    ];
    if let (Some(new), Some(out)) = (c.new_layer_cos, c.outputs_cos) {
        r.push(f64_hex(new));
        r.push(f64_hex(out));
        r.push(u8::from(c.outcome == CorrectionOutcome::Applied).to_string());
        r.push(
            delta
                .iter()
                .map(|&d| f32_hex(d))
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    r
}

/// Parses [`conv_record`] for Conv `k` named `name`.
fn parse_conv_record(r: &[String], k: usize, name: &str) -> Option<(ConvCorrection, Vec<f32>)> {
    if r.len() < 5 || r[1] != k.to_string() || r[2] != name {
        return None;
    }
    let old = parse_f64_hex(&r[4])?;
    match (r[3].as_str(), r.len()) {
        ("above", 5) => Some((
            ConvCorrection {
                name: name.to_string(),
                old_layer_cos: old,
                new_layer_cos: None,
                outputs_cos: None,
                max_abs_delta: None,
                outcome: CorrectionOutcome::AboveThreshold,
            },
            Vec::new(),
        )),
        ("trial", 9) => {
            let delta = r[8]
                .split(',')
                .map(parse_f32_hex)
                .collect::<Option<Vec<f32>>>()?;
            let outcome = match r[7].as_str() {
                "1" => CorrectionOutcome::Applied,
                "0" => CorrectionOutcome::Reverted,
                _ => return None,
            };
            Some((
                ConvCorrection {
                    name: name.to_string(),
                    old_layer_cos: old,
                    new_layer_cos: Some(parse_f64_hex(&r[5])?),
                    outputs_cos: Some(parse_f64_hex(&r[6])?),
                    max_abs_delta: Some(delta.iter().fold(0f32, |m, d| m.max(d.abs()))),
                    outcome,
                },
                delta,
            ))
        }
        _ => None,
    }
}

/// How the int8 model is made.
struct Model<'a> {
    table: &'a CalibrationTable,
    qtable: &'a [(String, QuantMode)],
    processor: Processor,
    fp_type: QuantMode,
}

/// Corrects the biases of `start` (a graph with the tensor names and
/// structure of `reference`) so that its int8 model comes closer to the
/// float `reference`. [`bias_correction`] starts from the reference
/// itself; the tests start from a graph with a wrong bias.
fn correct(
    reference: &Graph,
    start: &Graph,
    m: &Model,
    samples: Vec<Vec<(String, Tensor)>>,
    settings: &BiasCorrectionSettings,
    progress: &dyn Progress,
    mut journal: Option<&mut Journal>,
) -> Result<(Graph, BiasCorrectionReport), PipelineError> {
    let (table, qtable) = (m.table, m.qtable);
    let started = Instant::now();
    if samples.is_empty() {
        return Err(PipelineError::Settings(
            "bias correction needs at least one sample".into(),
        ));
    }
    let n_samples = samples.len();
    // What the steps before (a search, a calibration) freed.
    qtune_tensor::release_free_memory();
    let mut skipped = Vec::new();
    let convs = candidates(start, &mut skipped);
    let mut ev = MixEvaluator::new(
        reference,
        m.processor,
        m.fp_type,
        samples,
        Vec::new(),
        settings.cache_budget,
    )?;
    let int8 = |table| Precision {
        quantize: QuantMode::Int8,
        table: Some(table),
        qtable,
    };
    let names: Vec<String> = convs.iter().map(|c| c.name.clone()).collect();
    // The float model: the reference outputs and every Conv output, once,
    // before the first step the journal does not hold.
    let mut float_by_conv: Option<LayerRefs> = None;
    let mismatch = |j: Option<&Journal>, index: usize| match j {
        Some(j) => j.mismatch(index),
        None => PipelineError::Internal("no journal".into()),
    };

    let mut current = start.clone();
    let mut model = ev.build_from(&current, &int8(table))?;
    let int8_cos = match replayed(journal.as_deref(), 0, "base")? {
        Some(r) => {
            let c = (r.len() == 2).then(|| parse_f64_hex(&r[1])).flatten();
            c.ok_or_else(|| mismatch(journal.as_deref(), 0))?
        }
        None => {
            float_refs(&mut ev, &mut float_by_conv, &names, progress)?;
            let base = ev.trial(&model, &[])?;
            let c = base.score.cos;
            ev.commit(&model, base)?;
            if let Some(j) = journal.as_deref_mut() {
                j.append(&["base".into(), f64_hex(c)])?;
            }
            c
        }
    };
    let mut record = 1usize;
    let mut report = BiasCorrectionReport {
        int8_cos,
        final_cos: int8_cos,
        already_accurate: int8_cos > settings.expected_cos,
        reached_expected: false,
        convs: Vec::new(),
        skipped,
        samples: n_samples,
        stats: EvalStats::default(),
        time: Duration::ZERO,
    };
    if report.already_accurate {
        report.stats = ev.stats.clone();
        report.time = started.elapsed();
        return Ok((current, report));
    }

    progress.start("convs", convs.len());
    for (k, c) in convs.iter().enumerate() {
        progress.advance(1);
        // What the previous Conv's trial freed (its cache or its values,
        // its int8 outputs) goes back to the kernel: without it, the peak
        // resident size is that of every thread's arena at its own peak.
        qtune_tensor::release_free_memory();
        if model.plan.mode(c.node) != QuantMode::Int8 {
            report.skipped.push((
                c.name.clone(),
                format!("it runs in {:?}", model.plan.mode(c.node)),
            ));
            continue;
        }
        if let Some(r) = replayed(journal.as_deref(), record, "conv")? {
            let (conv, delta) = parse_conv_record(r, k, &c.name)
                .ok_or_else(|| mismatch(journal.as_deref(), record))?;
            record += 1;
            let applied = conv.outcome == CorrectionOutcome::Applied;
            let outputs_cos = conv.outputs_cos;
            report.convs.push(conv);
            if applied && let Some(outputs_cos) = outputs_cos {
                current = with_bias_delta(&current, c, &delta)?;
                model = ev.build_from(&current, &int8(table))?;
                report.final_cos = outputs_cos;
                if outputs_cos > settings.expected_cos {
                    report.reached_expected = true;
                    break;
                }
            }
            continue;
        }
        let float = &float_refs(&mut ev, &mut float_by_conv, &names, progress)?.layer(k)?;
        let q = int8_output(&mut ev, &model, c.out, &c.name)?;
        let old = layer_cos(float, &q);
        if old >= settings.min_layer_cos {
            let conv = ConvCorrection {
                name: c.name.clone(),
                old_layer_cos: old,
                new_layer_cos: None,
                outputs_cos: None,
                max_abs_delta: None,
                outcome: CorrectionOutcome::AboveThreshold,
            };
            if let Some(j) = journal.as_deref_mut() {
                j.append(&conv_record(k, &conv, &[]))?;
            }
            record += 1;
            report.convs.push(conv);
            continue;
        }
        let delta = channel_delta(&c.name, float, &q)?;
        // Every sample's output of this Conv: not held through the trial.
        drop(q);
        let trial_graph = with_bias_delta(&current, c, &delta)?;
        let trial_model = ev.build_from(&trial_graph, &int8(table))?;
        let (value, scale) = pre_quant_output(&trial_model, c.out, &c.name)?;
        let mut trial = ev.trial(&trial_model, &[value.as_str()])?;
        let new = scaled_layer_cos(float, std::mem::take(&mut trial.tensors), scale);
        let outputs_cos = trial.score.cos;
        let apply = outputs_cos >= report.final_cos && new >= old;
        let conv = ConvCorrection {
            name: c.name.clone(),
            old_layer_cos: old,
            new_layer_cos: Some(new),
            outputs_cos: Some(outputs_cos),
            max_abs_delta: Some(delta.iter().fold(0f32, |m, d| m.max(d.abs()))),
            outcome: if apply {
                CorrectionOutcome::Applied
            } else {
                CorrectionOutcome::Reverted
            },
        };
        if let Some(j) = journal.as_deref_mut() {
            j.append(&conv_record(k, &conv, &delta))?;
        }
        record += 1;
        report.convs.push(conv);
        if apply {
            ev.commit(&trial_model, trial)?;
            current = trial_graph;
            model = trial_model;
            report.final_cos = outputs_cos;
            if outputs_cos > settings.expected_cos {
                report.reached_expected = true;
                break;
            }
        }
    }
    progress.finish();
    report.stats = ev.stats.clone();
    report.time = started.elapsed();
    Ok((current, report))
}

/// The float model's reference outputs and Conv outputs `names` (within
/// half the cache budget in memory, the rest in a scratch file; read back
/// one Conv at a time), computed on the first call.
fn float_refs<'a>(
    ev: &mut MixEvaluator,
    slot: &'a mut Option<LayerRefs>,
    names: &[String],
    progress: &dyn Progress,
) -> Result<&'a LayerRefs, PipelineError> {
    if slot.is_none() {
        progress.start("float", 1);
        let f32_model = ev.build(&Precision {
            quantize: QuantMode::F32,
            table: None,
            qtable: &[],
        })?;
        ev.set_reference(&f32_model)?;
        *slot = Some(ev.layer_tensors(&f32_model, names)?);
        progress.finish();
    }
    Ok(slot.as_ref().expect("computed above"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use qtune_exec::{Executor, Keep, NoHook, Parallelism, PrepareOptions, RunOptions};
    use qtune_ir::ConvAttrs;
    use qtune_quant::CalibrationRow;
    use qtune_tensor::{DType, Shape};

    /// Deterministic values in [-1, 1) (a 32-bit LCG).
    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let top = u16::try_from(x >> 16).unwrap_or(0);
                f32::from(top) / 32768.0 - 1.0
            })
            .collect()
    }

    /// x [1,4,6,6] -> Conv 3x3 (8 channels, bias b1) -> Relu -> Conv 1x1
    /// (4 channels, bias b2) -> out.
    fn two_convs() -> Graph {
        let mut g = Graph::new("two_convs");
        let x = g.add_value("x", DType::F32, Some(Shape::from(vec![1, 4, 6, 6])));
        g.inputs.push(x);
        let w1 = g.add_constant(
            "w1",
            Tensor::from_f32(vec![8, 4, 3, 3], noise(288, 1)).unwrap(),
        );
        let b1 = g.add_constant("b1", Tensor::from_f32(vec![8], noise(8, 2)).unwrap());
        let w2 = g.add_constant(
            "w2",
            Tensor::from_f32(vec![4, 8, 1, 1], noise(32, 3)).unwrap(),
        );
        let b2 = g.add_constant("b2", Tensor::from_f32(vec![4], noise(4, 4)).unwrap());
        let y1 = g.add_value("y1", DType::F32, None);
        let r1 = g.add_value("r1", DType::F32, None);
        let out = g.add_value("out", DType::F32, None);
        let conv = |pad: usize| {
            Op::Conv(ConvAttrs {
                pads: vec![pad; 4],
                group: 1,
                ..ConvAttrs::default()
            })
        };
        g.add_node("y1", conv(1), vec![Some(x), Some(w1), Some(b1)], vec![y1]);
        g.add_node("r1", Op::Relu, vec![Some(y1)], vec![r1]);
        g.add_node(
            "out",
            conv(0),
            vec![Some(r1), Some(w2), Some(b2)],
            vec![out],
        );
        g.outputs.push(out);
        qtune_exec::prepare(g, &PrepareOptions::default())
            .unwrap()
            .0
    }

    fn samples(n: usize) -> Vec<Vec<(String, Tensor)>> {
        (0..n)
            .map(|s| {
                let seed = u32::try_from(s).unwrap() + 100;
                vec![(
                    "x".to_string(),
                    Tensor::from_f32(vec![1, 4, 6, 6], noise(144, seed)).unwrap(),
                )]
            })
            .collect()
    }

    /// Abs-max thresholds of every tensor of `g` on `samples`.
    fn max_table(g: &Graph, samples: &[Vec<(String, Tensor)>]) -> CalibrationTable {
        let exec = Executor::new(g.clone()).unwrap();
        let opts = RunOptions::new(Keep::All, Parallelism::Sequential);
        let mut range: Vec<(String, f64, f64)> = Vec::new();
        for s in samples {
            let inputs = vec![(g.value_by_name("x").unwrap(), s[0].1.clone())];
            let values = exec.run(inputs, &opts, &mut NoHook).unwrap();
            for name in ["x", "y1", "r1", "out"] {
                let v = values.get(g.value_by_name(name).unwrap()).unwrap();
                let data = v.to_f32_vec();
                let lo = data.iter().fold(0f64, |m, &x| m.min(f64::from(x)));
                let hi = data.iter().fold(0f64, |m, &x| m.max(f64::from(x)));
                match range.iter_mut().find(|r| r.0 == name) {
                    Some(r) => {
                        r.1 = r.1.min(lo);
                        r.2 = r.2.max(hi);
                    }
                    None => range.push((name.to_string(), lo, hi)),
                }
            }
        }
        CalibrationTable {
            rows: range
                .into_iter()
                .map(|(n, lo, hi)| CalibrationRow::new(n, lo.abs().max(hi), lo, hi))
                .collect(),
            ..CalibrationTable::default()
        }
    }

    #[test]
    fn a_wrong_bias_is_corrected_back() {
        let reference = two_convs();
        let data = samples(8);
        let table = max_table(&reference, &data);
        // The int8 model starts from a graph whose first bias is off by -2
        // on channels 0 and 3: its Conv output has a large mean error.
        let b1 = reference.value_by_name("b1").unwrap();
        let original = reference.constant_of(b1).unwrap().to_f32_vec();
        let mut wrong = reference.clone();
        let mut bad = original.clone();
        bad[0] -= 2.0;
        bad[3] -= 2.0;
        wrong.value_mut(b1).constant = Some(Tensor::from_f32(vec![8], bad.clone()).unwrap());
        let model = Model {
            table: &table,
            qtable: &[],
            processor: Processor::Bm1684x,
            fp_type: QuantMode::F16,
        };
        let settings = BiasCorrectionSettings::default();
        let (corrected, report) = correct(
            &reference,
            &wrong,
            &model,
            data,
            &settings,
            &qtune_calibrate::NoProgress,
            None,
        )
        .unwrap();
        let first = &report.convs[0];
        assert_eq!(first.name, "y1");
        assert_eq!(first.outcome, CorrectionOutcome::Applied, "{report:#?}");
        assert!(first.old_layer_cos < settings.min_layer_cos);
        assert!(first.new_layer_cos.unwrap() > first.old_layer_cos);
        assert!(report.final_cos > report.int8_cos, "{report:#?}");
        // The corrected bias is back near the true one (up to the mean of
        // the quantization error), and the input graphs are unchanged.
        let fixed = corrected.constant_of(b1).unwrap().to_f32_vec();
        for (c, (f, o)) in fixed.iter().zip(&original).enumerate() {
            assert!((f - o).abs() < 0.1, "channel {c}: corrected {f}, true {o}");
        }
        assert_eq!(wrong.constant_of(b1).unwrap().to_f32_vec(), bad);
        assert_eq!(reference.constant_of(b1).unwrap().to_f32_vec(), original);
    }

    /// A run resumed from a journal cut after each of its records gives
    /// the corrected graph and Conv reports of the uninterrupted run, and
    /// runs fewer samples the more the journal holds.
    #[test]
    fn resume_from_a_cut_journal_is_identical() {
        let reference = two_convs();
        let data = samples(6);
        let table = max_table(&reference, &data);
        let b1 = reference.value_by_name("b1").unwrap();
        let mut wrong = reference.clone();
        let mut bad = reference.constant_of(b1).unwrap().to_f32_vec();
        bad[1] += 1.5;
        wrong.value_mut(b1).constant = Some(Tensor::from_f32(vec![8], bad).unwrap());
        let model = Model {
            table: &table,
            qtable: &[],
            processor: Processor::Bm1684x,
            fp_type: QuantMode::F16,
        };
        let settings = BiasCorrectionSettings {
            min_layer_cos: 0.99999,
            expected_cos: 0.99999,
            ..BiasCorrectionSettings::default()
        };
        let dir = std::env::temp_dir().join(format!("qtune-bc-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("j");
        let run = |resume: bool| {
            let mut j = Journal::open(&path, "fp", resume).unwrap();
            let out = correct(
                &reference,
                &wrong,
                &model,
                data.clone(),
                &settings,
                &qtune_calibrate::NoProgress,
                Some(&mut j),
            )
            .unwrap();
            (out, j.records().len())
        };
        let ((full, report), _) = run(false);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Header (2 lines), the base score, one record per Conv.
        assert_eq!(lines.len(), 2 + 1 + report.convs.len(), "{text}");
        assert!(report.convs.len() == 2, "{report:#?}");
        assert!(report.applied() >= 1, "{report:#?}");
        let key = |g: &Graph| {
            ["b1", "b2"].map(|n| {
                g.constant_of(g.value_by_name(n).unwrap())
                    .unwrap()
                    .to_f32_vec()
            })
        };
        let summary = |r: &BiasCorrectionReport| {
            (
                r.int8_cos,
                r.final_cos,
                r.reached_expected,
                format!("{:?}", r.convs),
                r.skipped.clone(),
            )
        };
        let mut runs = Vec::new();
        for keep in 0..=lines.len() - 2 {
            // The journal as a kill after `keep` records left it, with
            // half of the next record written.
            let mut cut = lines[..2 + keep].join("\n");
            cut.push('\n');
            if let Some(next) = lines.get(2 + keep) {
                cut.push_str(&next[..next.len() / 2]);
            }
            std::fs::write(&path, cut).unwrap();
            let ((g, r), read) = run(true);
            assert_eq!(read, keep);
            assert_eq!(key(&g), key(&full), "resumed after {keep} records");
            assert_eq!(
                summary(&r),
                summary(&report),
                "resumed after {keep} records"
            );
            runs.push(r.stats.runs);
        }
        assert!(runs.windows(2).all(|w| w[0] >= w[1]), "{runs:?}");
        assert_eq!(
            *runs.last().unwrap(),
            0,
            "a whole journal still ran samples"
        );
        // Another fingerprint is refused, naming the journal.
        let err = Journal::open(&path, "other", true)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn delta_is_the_mean_error_per_channel() {
        // Two samples of [1, 2, 2]: channel 0 off by +1 and +3, channel 1
        // by -2 everywhere.
        let t = |v: Vec<f32>| Tensor::from_f32(vec![1, 2, 2], v).unwrap();
        let float = vec![t(vec![1.0, 1.0, 0.0, 0.0]), t(vec![3.0, 3.0, 0.0, 0.0])];
        let int8 = vec![
            vec![t(vec![0.0, 0.0, 2.0, 2.0])],
            vec![t(vec![0.0, 0.0, 2.0, 2.0])],
        ];
        let d = channel_delta("c", &float, &int8).unwrap();
        assert_eq!(d, vec![2.0, -2.0]);
        let bad = vec![vec![Tensor::from_f32(vec![1, 4], vec![0.0; 4]).unwrap()]; 2];
        assert!(channel_delta("c", &float, &bad).is_err());
    }
}
