//! The input Hessians `H = X^T X` of a model's weight-only layers (MatMul /
//! Gemm with a constant 2-D weight, [`qtune_deploy::weight_only::weight_layer`])
//! over calibration samples, for GPTQ (`model_deploy --q_method gptq`, see
//! [`qtune_deploy::gptq`]).
//!
//! Every layer input `[..., K]` is read as `numel / K` rows of `K` values
//! (TPU-MLIR's MatMul with a 2-D weight multiplies the last axis). The
//! float model runs on the samples a few at a time (as many as there are
//! threads; each keeps only the layer inputs); each sample's `x^T x` is an
//! f32 GEMM (whose tiling does not depend on the thread count) added in f64
//! in sample order, so the sums do not depend on the thread count.
//!
//! `mask_input` names a graph input (e.g. a tokenizer's `attention_mask`,
//! `[B, S]`) whose zeros mark rows that are padding: a layer input with
//! `B * S` rows keeps only the rows where the mask is not zero.

use std::collections::BTreeMap;
use std::sync::Arc;

use qtune_deploy::gptq::{Hessian, Hessians};
use qtune_exec::{ExecError, Executor, Keep, ValueHook};
use qtune_ir::{Graph, Op, ValueId};
use qtune_kernels::Parallelism;
use qtune_tensor::Tensor;

use crate::{PipelineError, SampleLoader};

/// Settings of [`collect_hessians`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HessianSettings {
    /// A graph input whose zeros mark padding rows (see the module docs).
    pub mask_input: Option<String>,
    /// [`sequential_hessians`]: after each layer is quantized, its bias
    /// absorbs the mean output error over the calibration rows.
    pub bias_correction: bool,
    /// [`sequential_hessians`]: before it is quantized, each layer's float
    /// weight is refit to the one that, fed the quantized model's layer
    /// inputs, best gives the float model's outputs
    /// ([`qtune_deploy::gptq::asymmetric_target`]), with this relative
    /// dampening.
    pub float_target: Option<f64>,
}

impl HessianSettings {
    pub fn with_float_target(mut self, damp: Option<f64>) -> Self {
        self.float_target = damp;
        self
    }

    pub fn with_mask_input(mut self, name: Option<String>) -> Self {
        self.mask_input = name;
        self
    }

    pub fn with_bias_correction(mut self, on: bool) -> Self {
        self.bias_correction = on;
        self
    }
}

/// What [`sequential_hessians`] found: the Hessians, and the constants
/// (name, tensor) to put in the model before it is built: the corrected
/// biases with bias correction, the refit weights with a float target.
#[derive(Debug, Clone, Default)]
pub struct Sequential {
    pub hessians: Hessians,
    pub constants: Vec<(String, Tensor)>,
    /// How many of `constants` are refit weights (the rest are biases).
    pub refit_weights: usize,
}

/// The bias correction of layer `id` quantized as `lw`: the bias `b`
/// becomes `b + alpha / beta * mean(x) (W - W_q)^T` (Gemm's alpha and beta;
/// 1 for MatMul), so that the mean output over the calibration rows is the
/// float layer's. `None` when the layer has no constant `[N]` bias.
fn corrected_bias(
    g: &Graph,
    id: qtune_ir::NodeId,
    lw: &qtune_deploy::weight_only::LayerWeights,
    mean: &[f64],
) -> Option<(String, Tensor)> {
    let node = g.node(id);
    let (alpha, beta) = match &node.op {
        Op::Gemm(a) => (f64::from(a.alpha), f64::from(a.beta)),
        _ => (1.0, 1.0),
    };
    if beta == 0.0 {
        return None;
    }
    let b = node.inputs.get(2).copied().flatten()?;
    let bias = g.constant_of(b)?.as_f32().ok()?.to_vec();
    let (k, n) = (lw.layer.k, lw.layer.n);
    if bias.len() != n {
        return None;
    }
    let w = g.constant_of(lw.layer.weight)?.to_f32_vec();
    let q = lw.dequantized().to_f32_vec();
    let at = |v: &[f32], ni: usize, ki: usize| {
        f64::from(if lw.layer.stored_nk {
            v[ni * k + ki]
        } else {
            v[ki * n + ni]
        })
    };
    let out: Vec<f32> = (0..n)
        .map(|ni| {
            let e: f64 = (0..k)
                .map(|ki| mean[ki] * (at(&w, ni, ki) - at(&q, ni, ki)))
                .sum();
            // Back to the bias's type.
            #[allow(clippy::cast_possible_truncation)]
            let v = (f64::from(bias[ni]) + alpha / beta * e) as f32;
            v
        })
        .collect();
    let t = Tensor::from_f32(g.constant_of(b)?.shape().clone(), out).ok()?;
    Some((g.value(b).name.clone(), t))
}

/// GPTQ reads a layer input as rows of K values: a Gemm with a transposed
/// input is refused by name.
fn check_layer_input(node: &qtune_ir::Node) -> Result<(), PipelineError> {
    match &node.op {
        Op::Gemm(a) if a.trans_a => Err(PipelineError::Settings(format!(
            "op `{}` (Gemm with transA): GPTQ reads the layer input as rows of K values; \
             a transposed input is not supported",
            node.name
        ))),
        _ => Ok(()),
    }
}

/// Keeps a copy of the layer inputs of one sample.
struct Capture<'a> {
    wanted: &'a [bool],
    got: Vec<(ValueId, Tensor)>,
}

impl ValueHook for Capture<'_> {
    fn on_value(
        &mut self,
        _: &Graph,
        value: ValueId,
        tensor: &mut Tensor,
    ) -> Result<(), ExecError> {
        if self.wanted[value.index()] {
            self.got.push((value, tensor.clone()));
        }
        Ok(())
    }

    fn wants(&self, value: ValueId) -> bool {
        self.wanted[value.index()]
    }
}

/// One distinct layer input and the weights of the layers that read it.
struct Input {
    value: ValueId,
    k: usize,
    weights: Vec<String>,
    sum: Hessian,
}

/// The Hessians of every weight-only-capable layer of `exec`'s graph over
/// the samples of `loader`, by weight name; `progress(done)` after each
/// group of samples.
pub fn collect_hessians(
    exec: &Executor,
    loader: &SampleLoader,
    settings: &HessianSettings,
    progress: &dyn Fn(usize),
) -> Result<Hessians, PipelineError> {
    let g = exec.graph();
    let mut inputs: Vec<Input> = Vec::new();
    for (id, node) in g.nodes() {
        let Some(layer) = qtune_deploy::weight_only::weight_layer(g, id) else {
            continue;
        };
        check_layer_input(node)?;
        let Some(Some(x)) = node.inputs.first().copied() else {
            continue;
        };
        let name = g.value(layer.weight).name.clone();
        match inputs.iter_mut().find(|i| i.value == x) {
            Some(i) => i.weights.push(name),
            None => inputs.push(Input {
                value: x,
                k: layer.k,
                weights: vec![name],
                sum: Hessian::new(layer.k),
            }),
        }
    }
    let mask = mask_value(g, settings)?;
    let mut wanted = vec![false; g.value_count()];
    for i in &inputs {
        wanted[i.value.index()] = true;
    }
    let slot: BTreeMap<ValueId, usize> = inputs
        .iter()
        .enumerate()
        .map(|(s, i)| (i.value, s))
        .collect();
    let total = loader.batch_count();
    let chunk = rayon::current_num_threads().max(1);
    let mut start = 0;
    while start < total {
        let end = (start + chunk).min(total);
        let samples = (start..end)
            .map(|i| loader.load(i))
            .collect::<Result<Vec<_>, _>>()?;
        let masks: Vec<Option<Vec<bool>>> = samples
            .iter()
            .map(|s| {
                mask.map(|m| {
                    s.iter()
                        .find(|(id, _)| *id == m)
                        .map(|(_, t)| t.to_f32_vec().iter().map(|&v| v != 0.0).collect())
                        .unwrap_or_default()
                })
            })
            .collect();
        let results = exec.run_samples(samples, &Keep::Outputs, |_| Capture {
            wanted: &wanted,
            got: Vec::new(),
        })?;
        for ((_, hook), keep) in results.into_iter().zip(&masks) {
            for (v, t) in hook.got {
                let input = &mut inputs[slot[&v]];
                add_sample(input, g, &t, keep.as_deref())?;
            }
        }
        progress(end);
        start = end;
    }
    let mut out = Hessians::new();
    for i in inputs {
        let h = Arc::new(i.sum);
        for w in i.weights {
            out.insert(w, Arc::clone(&h));
        }
    }
    Ok(out)
}

/// The weight of layer `id` refit to the float target
/// ([`qtune_deploy::gptq::asymmetric_target`] with `h = X_q^T X_q`,
/// `cross = X_q^T X_f` and relative dampening `damp`), as the constant
/// (name, tensor in the stored layout) that replaces it.
fn refit_weight(
    graph: &Graph,
    id: qtune_ir::NodeId,
    h: &Hessian,
    cross: &[f64],
    damp: f64,
) -> Result<(String, Tensor), PipelineError> {
    let node = &graph.node(id).name;
    let internal = |what: &str| PipelineError::Internal(format!("op `{node}`: {what}"));
    let l = qtune_deploy::weight_only::weight_layer(graph, id)
        .ok_or_else(|| internal("no constant 2-D weight"))?;
    let stored = graph
        .constant_of(l.weight)
        .ok_or_else(|| internal("the weight is not a constant"))?;
    let w = stored.to_f32_vec();
    let (k, n) = (l.k, l.n);
    // As [N, K] rows, one per output channel.
    let wt: Vec<f32> = if l.stored_nk {
        w
    } else {
        (0..n * k).map(|i| w[(i % k) * n + i / k]).collect()
    };
    let moved = qtune_deploy::gptq::asymmetric_target(h, cross, &wt, n, damp)
        .map_err(|e| PipelineError::Settings(format!("op `{node}`: {e}")))?;
    let back: Vec<f32> = if l.stored_nk {
        moved
    } else {
        (0..k * n).map(|i| moved[(i % n) * k + i / n]).collect()
    };
    let t = Tensor::from_f32(stored.shape().clone(), back)?;
    Ok((graph.value(l.weight).name.clone(), t))
}

/// Adds `X_q^T X_f` of one sample's layer inputs (quantized model `xq`,
/// float model `xf`, the same rows kept) to `cross` (`K x K`).
fn add_cross(
    cross: &mut [f64],
    k: usize,
    xq: &Tensor,
    xf: &Tensor,
    keep: Option<&[bool]>,
) -> Result<(), PipelineError> {
    let pick = |t: &Tensor| -> Result<Vec<f32>, PipelineError> {
        let x = t.as_f32()?;
        Ok(match keep {
            None => x.to_vec(),
            Some(keep) => x
                .chunks_exact(k)
                .zip(keep)
                .filter(|(_, on)| **on)
                .flat_map(|(r, _)| r.iter().copied())
                .collect(),
        })
    };
    let (a, b) = (pick(xq)?, pick(xf)?);
    let rows = a.len() / k;
    if rows == 0 || b.len() != a.len() {
        return Ok(());
    }
    let mut gram = vec![0f32; k * k];
    qtune_kernels::gemm(
        k,
        rows,
        k,
        &a,
        true,
        &b,
        false,
        &mut gram,
        false,
        Parallelism::Rayon,
    );
    for (s, &g) in cross.iter_mut().zip(&gram) {
        *s += f64::from(g);
    }
    Ok(())
}

/// Adds one sample's layer input to its Hessian.
fn add_sample(
    input: &mut Input,
    g: &Graph,
    t: &Tensor,
    keep: Option<&[bool]>,
) -> Result<(), PipelineError> {
    let k = input.k;
    let x = t.as_f32()?;
    if k == 0 || x.len() % k != 0 {
        return Err(PipelineError::Settings(format!(
            "tensor `{}`: {} values are not rows of K = {k}",
            g.value(input.value).name,
            x.len()
        )));
    }
    let rows = x.len() / k;
    let kept: Vec<f32>;
    let (x, rows) = match keep {
        None => (x, rows),
        Some(keep) => {
            if keep.len() != rows {
                return Err(PipelineError::Settings(format!(
                    "tensor `{}` has {rows} rows of K = {k}, the mask input {} values: \
                     the mask applies to [batch, sequence] layer inputs only",
                    g.value(input.value).name,
                    keep.len()
                )));
            }
            kept = x
                .chunks_exact(k)
                .zip(keep)
                .filter(|(_, on)| **on)
                .flat_map(|(r, _)| r.iter().copied())
                .collect();
            let n = kept.len() / k;
            (&kept[..], n)
        }
    };
    if rows == 0 {
        return Ok(());
    }
    let mut gram = vec![0f32; k * k];
    qtune_kernels::gemm(
        k,
        rows,
        k,
        x,
        true,
        x,
        false,
        &mut gram,
        false,
        Parallelism::Rayon,
    );
    input.sum.add_gram(&gram, &x[..rows * k]);
    Ok(())
}

/// The Hessians GPTQ's sequential form uses (Frantar et al.: each layer is
/// quantized with the inputs it sees once the layers before it are
/// quantized). The weight-only layers of `plan` are taken in graph order,
/// one stage per distinct layer input (e.g. a transformer block's Q, K
/// and V share one); a stage's Hessian is collected on the model whose
/// earlier stages already hold their dequantized weights (as the chip
/// computes with them: `(q - zp) * s` in the float type), then its layers
/// are quantized by `plan.weight_only` and put in the model. Only the
/// nodes the stage's input depends on run. The returned Hessians give the
/// same codes when the QDQ model is built from them (and from the returned
/// constants). With `settings.float_target` each stage also runs the float
/// model to its input (`X_f` beside `X_q`), and each layer's weight is
/// refit to the float target before it is quantized (GPTAQ's asymmetric
/// calibration). `progress(stage, stages)` after each stage.
pub fn sequential_hessians(
    graph: &Graph,
    plan: &qtune_deploy::Plan,
    loader: &SampleLoader,
    settings: &HessianSettings,
    progress: &dyn Fn(usize, usize),
) -> Result<Sequential, PipelineError> {
    use rayon::prelude::*;
    let mut stages: Vec<(ValueId, Vec<qtune_ir::NodeId>)> = Vec::new();
    for (id, node) in graph.nodes() {
        let mode = plan.modes.get(id.index()).copied();
        if !mode.is_some_and(|m| m.is_weight_only()) {
            continue;
        }
        if qtune_deploy::weight_only::weight_layer(graph, id).is_none() {
            continue;
        }
        check_layer_input(node)?;
        let Some(Some(x)) = node.inputs.first().copied() else {
            continue;
        };
        match stages.iter_mut().find(|(v, _)| *v == x) {
            Some((_, ids)) => ids.push(id),
            None => stages.push((x, vec![id])),
        }
    }
    let mask_id = mask_value(graph, settings)?;
    let mut cur = graph.clone();
    // With a float target, the float model gives each stage's X_f.
    let float_exec = match settings.float_target {
        Some(_) => Some(Executor::new(graph.clone())?),
        None => None,
    };
    let mut out = Hessians::new();
    let mut constants = Vec::new();
    let mut refit_weights = 0;
    let total = loader.batch_count();
    let chunk = rayon::current_num_threads().max(1);
    let opts = qtune_exec::RunOptions::new(Keep::Outputs, Parallelism::Sequential);
    for (s, (x, ids)) in stages.iter().enumerate() {
        let k = qtune_deploy::weight_only::weight_layer(graph, ids[0])
            .map(|l| l.k)
            .unwrap_or(0);
        let mut input = Input {
            value: *x,
            k,
            weights: Vec::new(),
            sum: Hessian::new(k),
        };
        let exec = Executor::new(cur.clone())?;
        // The nodes `x` depends on.
        let mut run = vec![false; cur.node_count()];
        if let Some(p) = cur.value(*x).producer {
            run[p.index()] = true;
            for i in (0..=p.index()).rev() {
                if !run[i] {
                    continue;
                }
                let node = cur.node(qtune_ir::NodeId::from_index(i));
                for v in node.inputs.iter().flatten() {
                    if let Some(q) = cur.value(*v).producer {
                        run[q.index()] = true;
                    }
                }
            }
        }
        let mut wanted = vec![false; cur.value_count()];
        wanted[x.index()] = true;
        // X_q^T X_f, with a float target.
        let mut cross = settings.float_target.map(|_| vec![0f64; k * k]);
        let mut start = 0;
        while start < total {
            let end = (start + chunk).min(total);
            let samples = (start..end)
                .map(|i| loader.load(i))
                .collect::<Result<Vec<_>, _>>()?;
            let got: Vec<(Option<Vec<bool>>, Tensor, Option<Tensor>)> = samples
                .into_par_iter()
                .map(|sample| {
                    let keep = mask_id.map(|m| {
                        sample
                            .iter()
                            .find(|(id, _)| *id == m)
                            .map(|(_, t)| t.to_f32_vec().iter().map(|&v| v != 0.0).collect())
                            .unwrap_or_default()
                    });
                    if let Some((_, t)) = sample.iter().find(|(id, _)| id == x) {
                        return Ok((keep, t.clone(), float_exec.as_ref().map(|_| t.clone())));
                    }
                    let mut cache = qtune_exec::Values::default();
                    for (id, t) in sample {
                        cache.insert(id, t);
                    }
                    let mut hook = Capture {
                        wanted: &wanted,
                        got: Vec::new(),
                    };
                    exec.run_masked(&cache, &run, &opts, &mut hook)?;
                    let t = hook.got.pop().map(|(_, t)| t).ok_or_else(|| {
                        PipelineError::Internal(format!(
                            "tensor `{}` was not computed",
                            cur.value(*x).name
                        ))
                    })?;
                    let tf = match &float_exec {
                        None => None,
                        Some(fe) => {
                            let mut hook = Capture {
                                wanted: &wanted,
                                got: Vec::new(),
                            };
                            fe.run_masked(&cache, &run, &opts, &mut hook)?;
                            hook.got.pop().map(|(_, t)| t)
                        }
                    };
                    Ok((keep, t, tf))
                })
                .collect::<Result<Vec<_>, PipelineError>>()?;
            for (keep, t, tf) in &got {
                add_sample(&mut input, &cur, t, keep.as_deref())?;
                if let (Some(c), Some(tf)) = (cross.as_mut(), tf) {
                    add_cross(c, k, t, tf, keep.as_deref())?;
                }
            }
            start = end;
        }
        let h = Arc::new(input.sum);
        for &id in ids {
            let mode = plan.modes[id.index()];
            // The weight quantized: the float one, or its refit, put in
            // `cur` until the dequantized weight replaces it below (`cur`
            // differs from the float graph only in layers already done).
            let source = match (&cross, settings.float_target) {
                (Some(c), Some(damp)) => {
                    let (name, t) = refit_weight(graph, id, &h, c, damp)?;
                    cur.add_constant(name.clone(), t.clone());
                    constants.push((name, t));
                    refit_weights += 1;
                    &cur
                }
                _ => graph,
            };
            let lw = qtune_deploy::weight_only::quantize_node(source, plan, id, mode, Some(&h))?;
            let name = graph.value(lw.layer.weight).name.clone();
            if settings.bias_correction
                && let Some((b, t)) = corrected_bias(source, id, &lw, &h.mean())
            {
                cur.add_constant(b.clone(), t.clone());
                constants.push((b, t));
            }
            cur.add_constant(name.clone(), lw.dequantized());
            out.insert(name, Arc::clone(&h));
        }
        progress(s + 1, stages.len());
    }
    Ok(Sequential {
        hessians: out,
        constants,
        refit_weights,
    })
}

fn mask_value(g: &Graph, settings: &HessianSettings) -> Result<Option<ValueId>, PipelineError> {
    let Some(name) = &settings.mask_input else {
        return Ok(None);
    };
    g.inputs
        .iter()
        .copied()
        .find(|&i| &g.value(i).name == name)
        .map(Some)
        .ok_or_else(|| {
            let have: Vec<&str> = g.inputs.iter().map(|&i| g.value(i).name.as_str()).collect();
            PipelineError::Settings(format!(
                "mask input `{name}` is not a graph input (the model has: {})",
                have.join(", ")
            ))
        })
}
