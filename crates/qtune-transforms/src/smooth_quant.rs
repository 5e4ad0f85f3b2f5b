//! SmoothQuant (`run_calibration --sq`; spec 3.17, TPU-MLIR
//! `calibration/smoothquant.py`; Xiao et al. 2023, arXiv:2211.10438).
//!
//! For a LayerNorm whose output `X` feeds Gemm/MatMul layers with constant
//! weights (through reshapes that keep the last axis), input channel `j`
//! is rescaled:
//!
//! $$s_j = \frac{\max|X_j|^{\alpha}}{\max|W_j|^{1-\alpha}},\qquad
//! X_j \mathrel{/}= s_j,\quad W_{j,:} \mathrel{*}= s_j$$
//!
//! `max|X_j|` is taken over the calibration samples (one float pass),
//! `max|W_j|` over row `j` of every user's weight: several users of one
//! LayerNorm (Q, K, V) share one scale vector. A non-finite or zero `s_j`
//! becomes 1. The division of `X` is folded into the LayerNorm's gamma and
//! beta (the `LayerNormalization` op of the canonical graph, TPU-MLIR's
//! `top.LayerNorm`), so the float model computes the same function.
//!
//! # Deviations from TPU-MLIR
//!
//! * **Fixed alpha.** TPU-MLIR grid-searches alpha in {0, 0.05, ..., 1} and
//!   an "OS+" variant per LayerNorm, minimising the fake-quantized output
//!   MSE of the users; qtune uses the one `alpha` of
//!   [`SmoothQuantSettings`] (`--sq_alpha`, 0.5 as in the paper).
//! * **Other readers.** When the LayerNorm output is also read by something
//!   other than the smoothed layers (BERT's residual `Add`), TPU-MLIR
//!   inserts a `Mul` by ones after the LayerNorm and folds the scale into
//!   it; the int8 `Mul` then still reads the unsmoothed LayerNorm output.
//!   qtune instead duplicates the LayerNorm (same input, new gamma and
//!   beta, op names with a `_sq` tag before the op type) for the smoothed
//!   readers, and leaves the original for the others. This costs one more
//!   LayerNorm per block and gives the smoothed layers an input whose own
//!   threshold has the outliers removed.
//! * Only LayerNorm candidates by default: TPU-MLIR's other candidates (a
//!   `Mul` by a weight, BERT v-proj MatMuls) are not handled.
//!
//! # Every linear layer: [`SmoothQuantScope::AllLinear`] (`--sq_scope all`)
//!
//! The other Gemm/MatMul layers with a constant weight (BERT's attention
//! output and FFN down projections: their inputs come from `P V` and GELU,
//! where no fold is exact) get a `Mul` by `1/s` inserted before them, one
//! per distinct input, shared by the layers that read it, as NNCF's
//! SmoothQuant does. A runtime that computes only Conv/MatMul/Gemm in int8
//! (`--processor onnxruntime`) runs that `Mul` in float, so the smoothing
//! is free there; on a TPU the `Mul` is one more int8 op (TPU-MLIR's own
//! "Mul by ones" after a shared LayerNorm is the same op). Scales may be
//! clipped to `[quantile_q(s), max_scale]` ([`SmoothQuantSettings`]; NNCF:
//! q = 0.1, max 100) so that near-silent channels do not shrink their
//! weight rows to nothing.

use std::collections::HashMap;

use rayon::prelude::*;

use qtune_exec::{Executor, Keep, Parallelism, RunOptions, ValueHook};
use qtune_ir::movement::MoveKind;
use qtune_ir::{Graph, Node, NodeId, Op, ValueId};
use qtune_tensor::{Shape, Tensor};

use crate::PipelineError;
use crate::Progress;
use qtune_calibrate::SampleLoader;

/// Settings of [`smooth_quant`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SmoothQuantSettings {
    /// Migration strength: 0 leaves activations alone, 1 moves all of
    /// their range into the weights.
    pub alpha: f64,
    /// Which layers are smoothed.
    pub scope: SmoothQuantScope,
    /// Scales below this quantile of a group's scales are raised to it
    /// (`None`: no floor).
    pub min_scale_quantile: Option<f64>,
    /// Scales above this are lowered to it (`None`: no ceiling).
    pub max_scale: Option<f64>,
}

impl Default for SmoothQuantSettings {
    fn default() -> Self {
        SmoothQuantSettings {
            alpha: 0.5,
            scope: SmoothQuantScope::LayerNorm,
            min_scale_quantile: None,
            max_scale: None,
        }
    }
}

/// The layers [`smooth_quant`] smooths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmoothQuantScope {
    /// Gemm/MatMul layers fed by a LayerNorm, the scale folded into its
    /// gamma and beta (TPU-MLIR's candidates).
    #[default]
    LayerNorm,
    /// Those, and every other Gemm/MatMul with a constant weight through an
    /// inserted per-channel `Mul`.
    AllLinear,
}

/// One smoothed LayerNorm, or one input of layers smoothed through an
/// inserted `Mul`.
#[derive(Debug, Clone, PartialEq)]
pub struct SmoothedLayerNorm {
    /// Op name (output tensor) of the LayerNorm, or of the smoothed input.
    pub source: String,
    /// The duplicate that now feeds the smoothed layers, when the original
    /// has other readers.
    pub duplicate: Option<String>,
    /// The `Mul` inserted between `source` and the smoothed layers.
    pub inserted: Option<String>,
    /// Op names of the smoothed Gemm/MatMul layers.
    pub users: Vec<String>,
    /// Channels (last axis).
    pub channels: usize,
    /// `max_j max|X_j|` before and after.
    pub activation_before: f32,
    pub activation_after: f32,
    /// Largest weight magnitude over the users, before and after.
    pub weight_before: f32,
    pub weight_after: f32,
}

/// What [`smooth_quant`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SmoothQuantReport {
    pub alpha: f64,
    pub smoothed: Vec<SmoothedLayerNorm>,
    /// LayerNorms left alone: `(op name, reason)`.
    pub skipped: Vec<(String, String)>,
}

/// A Gemm/MatMul reading the LayerNorm output with a constant weight.
#[derive(Debug, Clone)]
struct LinearUse {
    node: NodeId,
    /// Input index of the weight.
    weight: usize,
    /// The input channel is axis 1 of the weight (Gemm transB).
    transposed: bool,
}

/// A LayerNorm with its affine parameters.
#[derive(Debug, Clone)]
struct Candidate {
    /// Its nodes, in graph order (the one LayerNormalization op).
    nodes: Vec<NodeId>,
    /// The node and input index of gamma.
    mul: (NodeId, usize),
    /// The node and input index of beta.
    add: Option<(NodeId, usize)>,
    output: ValueId,
    channels: usize,
    /// Direct readers of `output` that lead only to linear users.
    branches: Vec<NodeId>,
    linear: Vec<LinearUse>,
    other_readers: bool,
}

/// The linear users reached from `node` reading `v`, or `None` when the
/// path reaches anything else.
fn linear_uses(
    graph: &Graph,
    consumers: &[Vec<NodeId>],
    node: NodeId,
    v: ValueId,
    channels: usize,
) -> Option<Vec<LinearUse>> {
    let n = graph.node(node);
    let reads_only_as_data =
        n.inputs.first() == Some(&Some(v)) && n.inputs.iter().skip(1).all(|i| *i != Some(v));
    if !reads_only_as_data {
        return None;
    }
    let weight_rows = |idx: usize, axis: usize| -> bool {
        n.inputs
            .get(idx)
            .copied()
            .flatten()
            .and_then(|w| graph.constant_of(w))
            .is_some_and(|t| {
                t.dims().len() == 2 && t.dims()[axis] == channels && t.as_f32().is_ok()
            })
    };
    match &n.op {
        Op::Gemm(a) if !a.trans_a => {
            let axis = usize::from(a.trans_b);
            weight_rows(1, axis).then(|| {
                vec![LinearUse {
                    node,
                    weight: 1,
                    transposed: a.trans_b,
                }]
            })
        }
        Op::MatMul => weight_rows(1, 0).then(|| {
            vec![LinearUse {
                node,
                weight: 1,
                transposed: false,
            }]
        }),
        // A view (`qtune_ir::movement::MoveKind::View`) keeps the elements
        // in order.
        op if op.movement().is_some_and(|s| s.kind == MoveKind::View) => {
            let out = *n.outputs.first()?;
            // Row-major: the last axis keeps its elements when its size is
            // unchanged.
            let keeps_axis = graph
                .shape_of(out)
                .ok()
                .and_then(|s| s.dims().last().copied())
                == Some(channels);
            let readers = &consumers[out.index()];
            if !keeps_axis || graph.outputs.contains(&out) || readers.is_empty() {
                return None;
            }
            let mut all = Vec::new();
            for &r in readers {
                all.extend(linear_uses(graph, consumers, r, out, channels)?);
            }
            Some(all)
        }
        _ => None,
    }
}

/// The LayerNorms of `graph` (`LayerNormalization` ops, TPU-MLIR's
/// `top.LayerNorm`) over the last axis that feed Gemm/MatMul layers, and the
/// reasons others were left alone.
fn candidates(graph: &Graph) -> (Vec<Candidate>, Vec<(String, String)>) {
    let consumers = graph.consumers();
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (ln, n) in graph.nodes() {
        let Op::LayerNormalization { axis, .. } = n.op else {
            continue;
        };
        let output = n.outputs[0];
        let name = graph.value(output).name.clone();
        let Some(dims) = graph.shape_of(output).ok().map(|s| s.dims().to_vec()) else {
            skipped.push((name, "unknown shape".to_string()));
            continue;
        };
        let Some(channels) = dims.last().copied().filter(|&c| c > 0) else {
            skipped.push((name, "unknown channel count".to_string()));
            continue;
        };
        if qtune_ir::normalize_axis(axis, dims.len()) != Some(dims.len() - 1) {
            skipped.push((
                name,
                "it normalizes over more than the last axis".to_string(),
            ));
            continue;
        }
        // gamma and beta must be per channel (or scalars) to take 1/s.
        let per_channel = |idx: usize| {
            n.inputs
                .get(idx)
                .copied()
                .flatten()
                .and_then(|v| graph.constant_of(v))
                .is_some_and(|t| {
                    (t.numel() == channels && t.dims().last() == Some(&channels) || t.numel() == 1)
                        && t.as_f32().is_ok()
                })
        };
        if n.inputs.get(1).copied().flatten().is_none() {
            skipped.push((name, "no gamma on the LayerNorm".to_string()));
            continue;
        }
        let has_beta = n.inputs.get(2).copied().flatten().is_some();
        if !per_channel(1) || (has_beta && !per_channel(2)) {
            skipped.push((name, "gamma or beta is not per channel".to_string()));
            continue;
        }
        let mut branches = Vec::new();
        let mut linear = Vec::new();
        let mut other_readers = graph.outputs.contains(&output);
        for &r in &consumers[output.index()] {
            match linear_uses(graph, &consumers, r, output, channels) {
                Some(uses) => {
                    branches.push(r);
                    linear.extend(uses);
                }
                None => other_readers = true,
            }
        }
        if linear.is_empty() {
            skipped.push((
                name,
                "no Gemm/MatMul with a constant weight reads it".to_string(),
            ));
            continue;
        }
        out.push(Candidate {
            nodes: vec![ln],
            mul: (ln, 1),
            add: has_beta.then_some((ln, 2)),
            output,
            channels,
            branches,
            linear,
            other_readers,
        });
    }
    (out, skipped)
}

/// Per-channel (last axis) abs-max of the hooked values of one run.
struct ChannelMaxHook<'a> {
    slot_of: &'a HashMap<ValueId, usize>,
    channels: &'a [usize],
    maxima: Vec<Vec<f32>>,
}

impl ValueHook for ChannelMaxHook<'_> {
    fn on_value(
        &mut self,
        graph: &Graph,
        value: ValueId,
        tensor: &mut Tensor,
    ) -> Result<(), qtune_exec::ExecError> {
        let Some(&slot) = self.slot_of.get(&value) else {
            return Ok(());
        };
        let c = self.channels[slot];
        let data = tensor.as_f32().map_err(|e| qtune_exec::ExecError::Node {
            node: graph.value(value).name.clone(),
            op: "SmoothQuant statistics",
            message: e.to_string(),
        })?;
        let m = &mut self.maxima[slot];
        for row in data.chunks_exact(c) {
            for (mx, x) in m.iter_mut().zip(row) {
                *mx = mx.max(x.abs());
            }
        }
        Ok(())
    }

    fn wants(&self, value: ValueId) -> bool {
        self.slot_of.contains_key(&value)
    }
}

/// Per-channel abs-max of `values` (last axis of size `channels[i]`) over
/// every batch of `loader`. Max is order-independent, so the batches run in
/// parallel with the same result for any thread count.
fn channel_abs_max(
    exec: &Executor,
    values: &[ValueId],
    channels: &[usize],
    loader: &SampleLoader,
    progress: &dyn Progress,
) -> Result<Vec<Vec<f32>>, PipelineError> {
    let slot_of: HashMap<ValueId, usize> =
        values.iter().enumerate().map(|(i, &v)| (v, i)).collect();
    let empty: Vec<Vec<f32>> = channels.iter().map(|&c| vec![0.0; c]).collect();
    let n = loader.batch_count();
    progress.start("smoothquant", n);
    let opts = RunOptions::new(Keep::Outputs, Parallelism::Sequential);
    let per_batch = (0..n)
        .into_par_iter()
        .map(|i| -> Result<Vec<Vec<f32>>, PipelineError> {
            let inputs = loader.load(i)?;
            let mut hook = ChannelMaxHook {
                slot_of: &slot_of,
                channels,
                maxima: empty.clone(),
            };
            exec.run(inputs, &opts, &mut hook)?;
            progress.advance(1);
            Ok(hook.maxima)
        })
        .collect::<Result<Vec<_>, _>>()?;
    progress.finish();
    let mut out = empty;
    for batch in per_batch {
        for (acc, m) in out.iter_mut().zip(batch) {
            for (a, x) in acc.iter_mut().zip(m) {
                *a = a.max(x);
            }
        }
    }
    Ok(out)
}

/// `prefix_sq_Op` for `prefix_Op`, else `name_sq`: the writer keeps names
/// that end with their op type, so the tag stays inside the op name.
fn tagged(name: &str, op_type: &str) -> String {
    match name.strip_suffix(&format!("_{op_type}")) {
        Some(prefix) => format!("{prefix}_sq_{op_type}"),
        None => format!("{name}_sq"),
    }
}

/// A name not yet used in `graph`.
fn unique(graph: &Graph, base: String) -> String {
    if graph.find_value(&base).is_none() {
        return base;
    }
    (1..)
        .map(|i| format!("{base}_{i}"))
        .find(|n| graph.find_value(n).is_none())
        .unwrap_or(base)
}

/// `t / s` per channel (last axis), as a `[.., C]` tensor.
fn divide_channels(t: &Tensor, s: &[f64]) -> Result<Tensor, PipelineError> {
    let c = s.len();
    let data = t.to_f32_vec();
    let (shape, values): (Shape, Vec<f32>) = if data.len() == 1 {
        (
            Shape::new(vec![c]),
            s.iter().map(|&sj| scale_f32(data[0], 1.0 / sj)).collect(),
        )
    } else {
        (
            t.shape().clone(),
            data.iter()
                .enumerate()
                .map(|(i, &x)| scale_f32(x, 1.0 / s[i % c]))
                .collect(),
        )
    };
    Ok(Tensor::from_f32(shape, values)?)
}

fn scale_f32(x: f32, s: f64) -> f32 {
    // Rounding the f64 product to the nearest f32 is the intended narrowing.
    #[allow(clippy::cast_possible_truncation)]
    let y = (f64::from(x) * s) as f32;
    y
}

/// The largest channel maximum `a_j / s_j` once the activations are
/// divided by the scales.
fn scaled_abs_max(a: &[f32], s: &[f64]) -> f32 {
    a.iter()
        .zip(s)
        .map(|(&aj, &sj)| scale_f32(aj, 1.0 / sj))
        .fold(0.0f32, f32::max)
}

fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Gemm/MatMul layers with a constant weight that no LayerNorm candidate
/// covers, grouped by their data input.
struct InsertCandidate {
    input: ValueId,
    producer: NodeId,
    channels: usize,
    linear: Vec<LinearUse>,
}

/// The layers [`SmoothQuantScope::AllLinear`] adds: every Gemm (`transA`
/// unset) or MatMul whose weight is a constant `[C, N]` (`[N, C]` with
/// `transB`) and whose data input, made by a node, has `C` channels on its
/// last axis. Layers reached from a LayerNorm candidate are left to it.
fn insert_candidates(graph: &Graph, cands: &[Candidate]) -> Vec<InsertCandidate> {
    let covered: std::collections::HashSet<NodeId> = cands
        .iter()
        .flat_map(|c| c.linear.iter().map(|u| u.node))
        .collect();
    let consumers = graph.consumers();
    let mut groups: std::collections::BTreeMap<ValueId, InsertCandidate> =
        std::collections::BTreeMap::new();
    for (id, n) in graph.nodes() {
        if covered.contains(&id) || !matches!(n.op, Op::Gemm(_) | Op::MatMul) {
            continue;
        }
        let Some(x) = n.inputs.first().copied().flatten() else {
            continue;
        };
        let value = graph.value(x);
        let Some(producer) = value.producer else {
            continue;
        };
        if value.constant.is_some() {
            continue;
        }
        let Some(channels) = graph
            .shape_of(x)
            .ok()
            .and_then(|s| s.dims().last().copied())
            .filter(|&c| c > 0)
        else {
            continue;
        };
        let Some(uses) = linear_uses(graph, &consumers, id, x, channels) else {
            continue;
        };
        groups
            .entry(x)
            .or_insert_with(|| InsertCandidate {
                input: x,
                producer,
                channels,
                linear: Vec::new(),
            })
            .linear
            .extend(uses);
    }
    groups.into_values().collect()
}

/// Per input channel, the largest weight magnitude over `linear`'s weights,
/// and the largest over all of them.
fn weight_row_max(graph: &Graph, linear: &[LinearUse], c: usize) -> (Vec<f32>, f32) {
    let mut w_max = vec![0.0f32; c];
    let mut largest = 0.0f32;
    for u in linear {
        let Some(w) = graph.node(u.node).inputs[u.weight].and_then(|v| graph.constant_of(v)) else {
            continue;
        };
        let (d, data) = (w.dims().to_vec(), w.to_f32_vec());
        largest = largest.max(abs_max(&data));
        for (i, x) in data.iter().enumerate() {
            let j = if u.transposed { i % d[1] } else { i / d[1] };
            w_max[j] = w_max[j].max(x.abs());
        }
    }
    (w_max, largest)
}

/// `s_j = max|X_j|^alpha / max|W_j|^(1-alpha)` (1 where not finite or not
/// positive), clipped as `settings` asks.
fn scales(a: &[f32], w_max: &[f32], settings: &SmoothQuantSettings) -> Vec<f64> {
    let alpha = settings.alpha;
    let mut s: Vec<f64> = a
        .iter()
        .zip(w_max)
        .map(|(&aj, &wj)| {
            let sj = f64::from(aj).powf(alpha) / f64::from(wj).powf(1.0 - alpha);
            if sj.is_finite() && sj > 0.0 { sj } else { 1.0 }
        })
        .collect();
    let floor = settings.min_scale_quantile.map(|q| quantile(&s, q));
    for sj in &mut s {
        if let Some(lo) = floor {
            *sj = sj.max(lo);
        }
        if let Some(hi) = settings.max_scale {
            *sj = sj.min(hi);
        }
    }
    s
}

/// The `q` quantile of `x` with linear interpolation between order
/// statistics (numpy's default).
fn quantile(x: &[f64], q: f64) -> f64 {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 1.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let lo = (pos.floor() as usize).min(v.len() - 1);
    let hi = (lo + 1).min(v.len() - 1);
    #[allow(clippy::cast_precision_loss)]
    let frac = pos - lo as f64;
    v[lo] + (v[hi] - v[lo]) * frac
}

/// Row `j` of every weight of `linear` times `s_j`, in place when only its
/// layer reads the weight (a scaled copy otherwise); the largest magnitude
/// after.
fn scale_weights(
    graph: &mut Graph,
    uses: &[usize],
    linear: &[LinearUse],
    s: &[f64],
) -> Result<f32, PipelineError> {
    let mut weight_after = 0.0f32;
    for u in linear {
        let Some(wid) = graph.node(u.node).inputs[u.weight] else {
            continue;
        };
        let Some(w) = graph.constant_of(wid) else {
            continue;
        };
        let d1 = w.dims()[1];
        let data: Vec<f32> = w
            .to_f32_vec()
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let j = if u.transposed { i % d1 } else { i / d1 };
                scale_f32(x, s[j])
            })
            .collect();
        weight_after = weight_after.max(abs_max(&data));
        let t = Tensor::from_f32(w.shape().clone(), data)?;
        if uses[wid.index()] == 1 {
            graph.value_mut(wid).constant = Some(t);
        } else {
            let name = unique(graph, format!("{}_sq", graph.value(wid).name));
            let nid = graph.add_constant(name, t);
            graph.node_mut(u.node).inputs[u.weight] = Some(nid);
        }
    }
    Ok(weight_after)
}

/// Smooths every LayerNorm -> Gemm/MatMul group of the executor's graph
/// (see the module docs) and returns the new graph. The calibration samples
/// of `loader` give the activation maxima.
pub fn smooth_quant(
    exec: &Executor,
    loader: &SampleLoader,
    settings: &SmoothQuantSettings,
    progress: &dyn Progress,
) -> Result<(Graph, SmoothQuantReport), PipelineError> {
    let alpha = settings.alpha;
    if !(0.0..=1.0).contains(&alpha) {
        return Err(PipelineError::Settings(format!(
            "SmoothQuant alpha {alpha}: expected a value in [0, 1]"
        )));
    }
    if let Some(q) = settings.min_scale_quantile
        && !(0.0..=1.0).contains(&q)
    {
        return Err(PipelineError::Settings(format!(
            "SmoothQuant scale quantile {q}: expected a value in [0, 1]"
        )));
    }
    if let Some(m) = settings.max_scale
        && !(m.is_finite() && m > 0.0)
    {
        return Err(PipelineError::Settings(format!(
            "SmoothQuant largest scale {m}: expected a positive number"
        )));
    }
    let source = exec.graph();
    let (cands, skipped) = candidates(source);
    let inserts = match settings.scope {
        SmoothQuantScope::LayerNorm => Vec::new(),
        SmoothQuantScope::AllLinear => insert_candidates(source, &cands),
    };
    let mut report = SmoothQuantReport {
        alpha,
        smoothed: Vec::new(),
        skipped,
    };
    if cands.is_empty() && inserts.is_empty() {
        return Ok((source.clone(), report));
    }
    let outputs: Vec<ValueId> = cands
        .iter()
        .map(|c| c.output)
        .chain(inserts.iter().map(|c| c.input))
        .collect();
    let channels: Vec<usize> = cands
        .iter()
        .map(|c| c.channels)
        .chain(inserts.iter().map(|c| c.channels))
        .collect();
    let mut act_max = channel_abs_max(exec, &outputs, &channels, loader, progress)?;
    let insert_max = act_max.split_off(cands.len());

    let mut graph = source.clone();
    let uses = graph.use_counts();
    // Nodes to insert after a node (the LayerNorm duplicates), and inputs
    // to redirect: (node, old value, new value).
    let mut insert_after: HashMap<NodeId, Vec<Node>> = HashMap::new();
    let mut redirect: Vec<(NodeId, ValueId, ValueId)> = Vec::new();
    for (cand, a) in cands.iter().zip(&act_max) {
        let c = cand.channels;
        let name_of = |g: &Graph, n: NodeId| g.value(g.node(n).outputs[0]).name.clone();
        let (w_max, weight_before) = weight_row_max(&graph, &cand.linear, c);
        let s = scales(a, &w_max, settings);
        let weight_after = scale_weights(&mut graph, &uses, &cand.linear, &s)?;
        // gamma / s and beta / s, as new constants (they may be shared).
        let (mul, gi) = cand.mul;
        let mut new_consts = Vec::new();
        for (node, idx) in std::iter::once((mul, gi)).chain(cand.add) {
            let Some(v) = graph.node(node).inputs[idx] else {
                continue;
            };
            let Some(t) = graph.constant_of(v) else {
                continue;
            };
            let t = divide_channels(t, &s)?;
            let name = unique(&graph, format!("{}_sq", graph.value(v).name));
            let id = graph.add_constant(name, t);
            new_consts.push((node, idx, id));
        }
        let ln_name = graph.value(cand.output).name.clone();
        let duplicate = if cand.other_readers {
            // Duplicate the LayerNorm for the smoothed readers.
            let mut map: HashMap<ValueId, ValueId> = HashMap::new();
            let mut clones = Vec::new();
            for &id in &cand.nodes {
                let n = graph.node(id).clone();
                let mut outputs = Vec::new();
                for &o in &n.outputs {
                    let v = graph.value(o).clone();
                    let name = unique(&graph, tagged(&v.name, n.op.op_type()));
                    let nid = graph.add_value(name, v.dtype, v.shape.clone());
                    map.insert(o, nid);
                    outputs.push(nid);
                }
                let mut inputs: Vec<Option<ValueId>> = n
                    .inputs
                    .iter()
                    .map(|i| i.map(|v| map.get(&v).copied().unwrap_or(v)))
                    .collect();
                for &(node, idx, cid) in &new_consts {
                    if node == id {
                        inputs[idx] = Some(cid);
                    }
                }
                clones.push(Node {
                    name: tagged(&n.name, n.op.op_type()),
                    op: n.op.clone(),
                    inputs,
                    outputs,
                    relu: n.relu,
                });
            }
            let Some(&new_out) = map.get(&cand.output) else {
                return Err(PipelineError::Transform {
                    node: ln_name,
                    op: "LayerNorm",
                    message: "the duplicate has no output".to_string(),
                });
            };
            let last = *cand.nodes.iter().max().unwrap_or(&cand.mul.0);
            insert_after.entry(last).or_default().extend(clones);
            for &b in &cand.branches {
                redirect.push((b, cand.output, new_out));
            }
            Some(graph.value(new_out).name.clone())
        } else {
            for &(node, idx, cid) in &new_consts {
                graph.node_mut(node).inputs[idx] = Some(cid);
            }
            None
        };
        let act_before = abs_max(a);
        let act_after = scaled_abs_max(a, &s);
        report.smoothed.push(SmoothedLayerNorm {
            source: ln_name,
            duplicate,
            inserted: None,
            users: cand
                .linear
                .iter()
                .map(|u| name_of(&graph, u.node))
                .collect(),
            channels: c,
            activation_before: act_before,
            activation_after: act_after,
            weight_before,
            weight_after,
        });
    }
    for (cand, a) in inserts.iter().zip(&insert_max) {
        let c = cand.channels;
        let (w_max, weight_before) = weight_row_max(&graph, &cand.linear, c);
        let s = scales(a, &w_max, settings);
        let weight_after = scale_weights(&mut graph, &uses, &cand.linear, &s)?;
        let x = graph.value(cand.input).clone();
        let inverse: Vec<f32> = s.iter().map(|&sj| scale_f32(1.0, 1.0 / sj)).collect();
        let scale_name = unique(&graph, format!("{}_sq_scale", x.name));
        let scale_id =
            graph.add_constant(scale_name, Tensor::from_f32(Shape::new(vec![c]), inverse)?);
        let name = unique(&graph, format!("{}_sq_Mul", x.name));
        let y = graph.add_value(name.clone(), x.dtype, x.shape.clone());
        insert_after.entry(cand.producer).or_default().push(Node {
            name: name.clone(),
            op: Op::Mul,
            inputs: vec![Some(cand.input), Some(scale_id)],
            outputs: vec![y],
            relu: None,
        });
        for u in &cand.linear {
            redirect.push((u.node, cand.input, y));
        }
        report.smoothed.push(SmoothedLayerNorm {
            source: x.name.clone(),
            duplicate: None,
            inserted: Some(name),
            users: cand
                .linear
                .iter()
                .map(|u| graph.value(graph.node(u.node).outputs[0]).name.clone())
                .collect(),
            channels: c,
            activation_before: abs_max(a),
            activation_after: scaled_abs_max(a, &s),
            weight_before,
            weight_after,
        });
    }
    for (node, old, new) in redirect {
        for i in graph.node_mut(node).inputs.iter_mut() {
            if *i == Some(old) {
                *i = Some(new);
            }
        }
    }
    let graph = if insert_after.is_empty() {
        graph
    } else {
        with_inserted_nodes(&graph, insert_after)?
    };
    graph.check_topological()?;
    Ok((graph, report))
}

/// A copy of `graph` with `extra[n]` placed right after node `n`. Values
/// keep their ids (they are re-added in order; names are unique).
fn with_inserted_nodes(
    graph: &Graph,
    mut extra: HashMap<NodeId, Vec<Node>>,
) -> Result<Graph, PipelineError> {
    let mut out = Graph::new(graph.name.clone());
    for (id, v) in graph.values() {
        let nid = out.add_value(v.name.clone(), v.dtype, v.shape.clone());
        if nid != id {
            return Err(PipelineError::Transform {
                node: v.name.clone(),
                op: "Graph",
                message: "duplicate value name".to_string(),
            });
        }
        out.value_mut(nid).constant = v.constant.clone();
    }
    out.inputs = graph.inputs.clone();
    out.outputs = graph.outputs.clone();
    for (id, n) in graph.nodes() {
        out.add_node_with_relu(
            n.name.clone(),
            n.op.clone(),
            n.inputs.clone(),
            n.outputs.clone(),
            n.relu,
        );
        for m in extra.remove(&id).unwrap_or_default() {
            out.add_node_with_relu(m.name, m.op, m.inputs, m.outputs, m.relu);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::quantile;

    /// numpy's `np.quantile(x, q)` (linear): 0.1 of 1..=10 is 1.9, of one
    /// value that value, the ends are the min and max.
    #[test]
    fn quantile_interpolates_like_numpy() {
        let x: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert!((quantile(&x, 0.1) - 1.9).abs() < 1e-12);
        assert!((quantile(&x, 0.5) - 5.5).abs() < 1e-12);
        assert_eq!(quantile(&x, 0.0), 1.0);
        assert_eq!(quantile(&x, 1.0), 10.0);
        assert_eq!(quantile(&[3.0], 0.1), 3.0);
    }
}
