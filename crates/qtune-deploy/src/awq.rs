//! Activation-aware weight scaling for the weight-only modes (`model_deploy
//! --q_awq`).
//!
//! Reference: J. Lin, J. Tang, H. Tang, S. Yang, X. Dang, S. Han, "AWQ:
//! Activation-aware Weight Quantization for LLM Compression and
//! Acceleration" (MLSys 2024), section 3.2 and the authors' `auto_scale`.
//! For the layers `Y = X W` that read one input `X` (`[rows, K]`), a scale
//! per input channel `s_c = m_c^alpha` (`m_c` the mean `|x_c|` over the
//! calibration rows, floored at 1e-4, then divided by `sqrt(max s * min
//! s)` as the authors do) makes the weight rows of salient channels larger
//! before quantization: the layers compute `(X / s) Q(diag(s) W)`. `alpha`
//! is searched on the grid 0, 0.05, ..., 1 (0 is `s = 1`, the unscaled
//! weight) for the least output error summed over the layers,
//! `||X W - (X / s) Q(diag(s) W)||^2 = sum_n d_n^T H d_n` with
//! `d = W - diag(1/s) Q(diag(s) W)` and `H = X^T X` (the GPTQ Hessian, so
//! the search needs no second pass over the data). `Q` is the base grid of
//! the method (TPU-MLIR's min / max, or the clip search with `clip` and
//! `gptq_clip`), with the scales rounded to the float type, and the
//! dequantized weight rounded to it as the chip's is.
//!
//! qtune keeps the graph's ops: `1 / s` is folded into what produces `X`,
//! and only where that fold is exact:
//!
//! * a LayerNorm's gamma and beta (a `LayerNormalization` over the last
//!   axis, or the decomposed `Add(Mul(y, gamma), beta)`);
//! * the output channels (weight columns and bias) of a MatMul / Gemm with
//!   a constant weight, reached through Reshape, Transpose, a constant
//!   per-channel Add, and the right operand of an activation MatMul (e.g.
//!   attention's `P V`, linear per channel of `V`): the V projection before
//!   the attention output projection.
//!
//! Every value between the producer and `X` must have one reader (else the
//! scaled values would reach another op), every reader of `X` must be a
//! weight-only layer of one mode, and the channels must reach `X`'s last
//! axis in their order (checked by following the channel axes through each
//! Reshape, Transpose and MatMul). Where no such producer exists (a GELU
//! before the FFN down-projection; a LayerNorm whose output also feeds a
//! residual Add, as in post-LN BERT) the layers are left unscaled and the
//! report says why. After the fold the layers' Hessians are those of
//! `X / s`, `S^-1 H S^-1`, so GPTQ then runs on the scaled weights with
//! the Hessian of the inputs it will see.

use std::sync::Arc;

use qtune_ir::{FloatFormat, Graph, NodeId, Op, ValueId};
use qtune_quant::QuantMode;
use qtune_tensor::Tensor;

use crate::DeployError;
use crate::gptq::{Hessian, Hessians};
use crate::weight_only::{
    WeightLayer, WeightOnly, float_mode, quantize_on_grids, quantize_on_output_grids, round_to,
    weight_bits, weight_layer,
};

/// Points of the `alpha` grid: 0, 0.05, ..., 1.
pub const ALPHA_STEPS: usize = 21;

/// The `i`-th `alpha` of the grid.
pub fn alpha(i: usize) -> f64 {
    // i <= 20.
    #[allow(clippy::cast_precision_loss)]
    let f = i as f64;
    f / 20.0
}

/// AWQ's scales for `alpha`: `max(m, 1e-4)^alpha`, normalised by
/// `sqrt(max * min)`.
pub fn scales(mean_abs: &[f64], alpha: f64) -> Vec<f64> {
    let s: Vec<f64> = mean_abs.iter().map(|&m| m.max(1e-4).powf(alpha)).collect();
    let (lo, hi) = s
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let norm = (lo * hi).sqrt();
    if !(norm > 0.0 && norm.is_finite()) {
        return vec![1.0; s.len()];
    }
    s.iter().map(|v| v / norm).collect()
}

/// `sum_n d_n^T H d_n` for `d = W - diag(1/s) Q(diag(s) W)`, `wt` the
/// weight as `[N, K]` and `Q` the base grid (`clip`: the clip search's).
#[allow(clippy::too_many_arguments)]
pub fn scaled_error(
    wt: &[f32],
    n: usize,
    k: usize,
    s: &[f64],
    h: &[f64],
    bits: u32,
    wo: WeightOnly,
    clip: bool,
    format: FloatFormat,
) -> f64 {
    use rayon::prelude::*;
    // The weight the chip holds, in f32 as the weight is stored.
    #[allow(clippy::cast_possible_truncation)]
    let scaled: Vec<f32> = wt
        .iter()
        .enumerate()
        .map(|(i, &w)| (f64::from(w) * s[i % k]) as f32)
        .collect();
    let mut q = if clip && wo.clip_by_output {
        // The clip search on the error of the scaled layer: the inputs are
        // X / s, their Hessian S^-1 H S^-1.
        let hs: Vec<f64> = (0..k * k).map(|i| h[i] / (s[i / k] * s[i % k])).collect();
        quantize_on_output_grids(&scaled, k, bits, wo, format, &hs)
    } else {
        quantize_on_grids(&scaled, k, bits, wo, clip, format)
    }
    .dequantized();
    round_to(&mut q, format);
    let rows: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|r| {
            let d: Vec<f64> = (0..k)
                .map(|c| f64::from(wt[r * k + c]) - f64::from(q[r * k + c]) / s[c])
                .collect();
            let mut e = 0.0;
            for (i, &di) in d.iter().enumerate() {
                let hi = &h[i * k..(i + 1) * k];
                let mut t = 0.0;
                for (&a, &b) in hi.iter().zip(&d) {
                    t += a * b;
                }
                e += di * t;
            }
            e
        })
        .collect();
    rows.iter().sum()
}

/// The `alpha` of the grid with the least error summed over the layers
/// `weights` (`[N, K]` weights and their `N`) reading inputs of Hessian
/// `h` (the first least: ties keep the smaller alpha), and the error at
/// every point.
pub fn search_alpha(
    weights: &[(Vec<f32>, usize)],
    h: &Hessian,
    bits: u32,
    wo: WeightOnly,
    clip: bool,
    format: FloatFormat,
) -> (usize, Vec<f64>) {
    let mean_abs = h.mean_abs();
    let errors: Vec<f64> = (0..ALPHA_STEPS)
        .map(|i| {
            let s = scales(&mean_abs, alpha(i));
            weights
                .iter()
                .map(|(wt, n)| scaled_error(wt, *n, h.k, &s, &h.sum, bits, wo, clip, format))
                .sum()
        })
        .collect();
    let best = (0..ALPHA_STEPS).fold(0, |b, i| if errors[i] < errors[b] { i } else { b });
    (best, errors)
}

/// What scales `X`'s channels by `1 / s` when its constants are scaled.
#[derive(Debug, Clone, PartialEq)]
pub enum Producer {
    /// A MatMul / Gemm with a constant weight: its output channels (weight
    /// columns, and its bias if any).
    Layer(NodeId),
    /// `LayerNormalization` over the last axis: gamma and beta.
    LayerNorm(NodeId),
    /// `Add(Mul(y, gamma), beta)`: the Mul, then the Add.
    Affine(NodeId, NodeId),
}

/// One input `X` of weight-only layers whose channels can be scaled
/// exactly.
#[derive(Debug, Clone)]
pub struct FoldSite {
    /// The layers' input.
    pub input: ValueId,
    /// The weight-only layers reading it (in graph order).
    pub layers: Vec<NodeId>,
    pub producer: Producer,
    /// The constants of the path between the producer and `X` scaled along
    /// with it (per-channel Adds).
    pub path_constants: Vec<ValueId>,
}

/// Layers left unscaled, with the reason.
#[derive(Debug, Clone)]
pub struct Unscaled {
    pub layers: Vec<String>,
    pub reason: String,
}

/// One scaled site of the report.
#[derive(Debug, Clone)]
pub struct ScaledSite {
    /// The op names of the layers.
    pub layers: Vec<String>,
    /// The op whose constants took `1 / s`.
    pub producer: String,
    /// The chosen `alpha`.
    pub alpha: f64,
    /// The error at each point of the grid.
    pub errors: Vec<f64>,
}

/// What [`apply_awq`] did.
#[derive(Debug, Clone, Default)]
pub struct AwqReport {
    pub scaled: Vec<ScaledSite>,
    pub unscaled: Vec<Unscaled>,
}

/// The channel axes of a value along the path, major to minor.
fn track_reshape(axes: &[usize], from: &[usize], to: &[usize]) -> Option<Vec<usize>> {
    let r = from.len();
    let m = axes.len();
    // The channel axes must be the trailing axes, in order.
    if m == 0 || m > r || axes.iter().enumerate().any(|(i, &a)| a != r - m + i) {
        return None;
    }
    let c: usize = from[r - m..].iter().product();
    let lead: usize = from[..r - m].iter().product();
    // The shortest suffix of `to` holding the channels with the same
    // leading product.
    for j in (0..to.len()).rev() {
        let suffix: usize = to[j..].iter().product();
        if suffix == c && to[..j].iter().product::<usize>() == lead {
            return Some((j..to.len()).collect());
        }
        if suffix > c {
            break;
        }
    }
    None
}

/// Walks from `x` back to a producer that can take the scales; the nodes
/// between them (from `x` backwards), or why there is none.
fn find_producer(
    graph: &Graph,
    x: ValueId,
    uses: &[usize],
) -> Result<(Producer, Vec<NodeId>), String> {
    let mut path = Vec::new();
    let mut v = x;
    loop {
        if v != x && uses[v.index()] != 1 {
            return Err(format!(
                "`{}` is read by {} ops: scaling it would change them too (no exact fold)",
                graph.value(v).name,
                uses[v.index()]
            ));
        }
        let Some(p) = graph.value(v).producer else {
            return Err(format!(
                "`{}` is a graph input or constant (nothing to fold the scales into)",
                graph.value(v).name
            ));
        };
        let node = graph.node(p);
        let input = |i: usize| node.inputs.get(i).copied().flatten();
        let is_const = |i: usize| input(i).is_some_and(|v| graph.constant_of(v).is_some());
        if node.relu.is_some() {
            return Err(format!(
                "`{}` ({}) has a fused Relu, which per-channel scales do not commute with",
                node.name,
                node.op.op_type()
            ));
        }
        match &node.op {
            _ if weight_layer(graph, p).is_some() => return Ok((Producer::Layer(p), path)),
            Op::LayerNormalization { .. } => return Ok((Producer::LayerNorm(p), path)),
            Op::Add if is_const(0) != is_const(1) => {
                let other = input(usize::from(is_const(0))).expect("Add has two inputs");
                if let Some(m) = graph.value(other).producer {
                    let mul = graph.node(m);
                    let mul_const = mul
                        .inputs
                        .iter()
                        .flatten()
                        .any(|&i| graph.constant_of(i).is_some());
                    if matches!(mul.op, Op::Mul)
                        && mul.relu.is_none()
                        && mul_const
                        && uses[other.index()] == 1
                    {
                        return Ok((Producer::Affine(m, p), path));
                    }
                }
                path.push(p);
                v = other;
            }
            Op::Reshape { .. } | Op::Transpose { .. } => {
                path.push(p);
                v = input(0).ok_or("a Reshape / Transpose without input")?;
            }
            Op::MatMul if input(1) == Some(v) => {
                return Err(format!(
                    "`{}` is the right operand of MatMul `{}`, not its output",
                    graph.value(v).name,
                    node.name
                ));
            }
            Op::MatMul if !is_const(0) && !is_const(1) => {
                path.push(p);
                v = input(1).ok_or("a MatMul without right operand")?;
            }
            _ => {
                return Err(format!(
                    "`{}` comes from `{}` ({}), into which per-channel scales do not fold exactly",
                    graph.value(v).name,
                    node.name,
                    node.op.op_type()
                ));
            }
        }
    }
}

fn dims_of(graph: &Graph, v: ValueId) -> Result<Vec<usize>, String> {
    graph
        .shape_of(v)
        .map(|s| s.dims().to_vec())
        .map_err(|e| format!("`{}`: {e}", graph.value(v).name))
}

/// A constant `[.., C]` with `C` values (every other dimension 1).
fn per_channel(graph: &Graph, v: ValueId, c: usize) -> bool {
    graph.constant_of(v).is_some_and(|t| {
        t.numel() == c
            && t.dims().last() == Some(&c)
            && t.dims().iter().rev().skip(1).all(|&d| d == 1)
    })
}

/// Checks that the producer's output channels reach `x`'s last axis in
/// their order through `path` (from the producer forwards), and collects
/// the per-channel constants on the way.
fn check_path(
    graph: &Graph,
    start: ValueId,
    path: &[NodeId],
    x: ValueId,
    c: usize,
) -> Result<Vec<ValueId>, String> {
    let mut dims = dims_of(graph, start)?;
    if dims.last() != Some(&c) {
        return Err(format!(
            "`{}` has shape {dims:?}, not {c} channels on its last axis",
            graph.value(start).name
        ));
    }
    let mut axes = vec![dims.len() - 1];
    let mut cur = start;
    let mut constants = Vec::new();
    for &id in path.iter().rev() {
        let node = graph.node(id);
        let out = node.outputs[0];
        let odims = dims_of(graph, out)?;
        let fail = || {
            format!(
                "the channels of `{}` do not reach `{}` in order through `{}` ({})",
                graph.value(start).name,
                graph.value(x).name,
                node.name,
                node.op.op_type()
            )
        };
        axes = match &node.op {
            Op::Reshape { .. } => track_reshape(&axes, &dims, &odims).ok_or_else(fail)?,
            Op::Transpose { perm } => {
                let r = dims.len();
                let perm: Vec<usize> = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
                axes.iter()
                    .map(|a| perm.iter().position(|p| p == a))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(fail)?
            }
            Op::Add => {
                let k = node
                    .inputs
                    .iter()
                    .flatten()
                    .copied()
                    .find(|&v| v != cur)
                    .ok_or_else(fail)?;
                if axes != [dims.len() - 1] || !per_channel(graph, k, c) || odims != dims {
                    return Err(fail());
                }
                constants.push(k);
                axes
            }
            Op::MatMul => {
                // `cur` is the right operand [.., S, D]: the output keeps
                // its batch axes and its last axis; the axis S is summed.
                let r = dims.len();
                if odims.len() != r || r < 2 || axes.contains(&(r - 2)) {
                    return Err(fail());
                }
                axes
            }
            _ => return Err(fail()),
        };
        dims = odims;
        cur = out;
    }
    if cur != x || axes != [dims.len() - 1] {
        return Err(format!(
            "the channels of `{}` do not reach the last axis of `{}` in order",
            graph.value(start).name,
            graph.value(x).name
        ));
    }
    Ok(constants)
}

/// The inputs of the weight-only layers (`mode_of` gives a layer's mode,
/// `None` when it is not weight-only) whose channels can be scaled
/// exactly, and the layers left unscaled with the reason.
pub fn fold_sites(
    graph: &Graph,
    mode_of: &dyn Fn(NodeId) -> Option<QuantMode>,
) -> (Vec<FoldSite>, Vec<Unscaled>) {
    let uses = graph.use_counts();
    let consumers = graph.consumers();
    let mut inputs: Vec<(ValueId, Vec<NodeId>)> = Vec::new();
    for (id, node) in graph.nodes() {
        if mode_of(id).is_none() || weight_layer(graph, id).is_none() {
            continue;
        }
        let Some(Some(x)) = node.inputs.first().copied() else {
            continue;
        };
        match inputs.iter_mut().find(|(v, _)| *v == x) {
            Some((_, l)) => l.push(id),
            None => inputs.push((x, vec![id])),
        }
    }
    let mut sites = Vec::new();
    let mut unscaled = Vec::new();
    for (x, layers) in inputs {
        let names: Vec<String> = layers.iter().map(|&l| graph.node(l).name.clone()).collect();
        match site(graph, x, &layers, &uses, &consumers, mode_of) {
            Ok(s) => sites.push(s),
            Err(reason) => unscaled.push(Unscaled {
                layers: names,
                reason,
            }),
        }
    }
    (sites, unscaled)
}

fn site(
    graph: &Graph,
    x: ValueId,
    layers: &[NodeId],
    uses: &[usize],
    consumers: &[Vec<NodeId>],
    mode_of: &dyn Fn(NodeId) -> Option<QuantMode>,
) -> Result<FoldSite, String> {
    let mode = mode_of(layers[0]);
    // Every reader of X is one of the layers, reading it once, as its input.
    let readers = &consumers[x.index()];
    if readers.len() != layers.len() || uses[x.index()] != layers.len() {
        let other = readers.iter().find(|r| !layers.contains(r)).map_or_else(
            || "a graph output".to_string(),
            |&r| format!("`{}`", graph.node(r).name),
        );
        return Err(format!(
            "`{}` also feeds {other}, which would see the scaled values",
            graph.value(x).name
        ));
    }
    for &l in layers {
        if mode_of(l) != mode {
            return Err(format!(
                "the layers reading `{}` have different modes",
                graph.value(x).name
            ));
        }
        let w = weight_layer(graph, l).expect("a weight layer");
        if uses[w.weight.index()] != 1 {
            return Err(format!(
                "the weight `{}` is shared by several ops",
                graph.value(w.weight).name
            ));
        }
        if let Op::Gemm(a) = &graph.node(l).op
            && a.trans_a
        {
            return Err(format!("`{}` is a Gemm with transA", graph.node(l).name));
        }
    }
    let k = weight_layer(graph, layers[0]).expect("a weight layer").k;
    let (producer, path) = find_producer(graph, x, uses)?;
    let (start, consts): (ValueId, Vec<Option<ValueId>>) = match &producer {
        Producer::Layer(p) => {
            let node = graph.node(*p);
            let pl = weight_layer(graph, *p).expect("a weight layer");
            if pl.n != k {
                return Err(format!(
                    "`{}` has {} output channels, the layers {k} inputs",
                    node.name, pl.n
                ));
            }
            if let Op::Gemm(a) = &node.op
                && a.beta == 0.0
            {
                return Err(format!("`{}` is a Gemm with beta 0", node.name));
            }
            (
                node.outputs[0],
                vec![Some(pl.weight), node.inputs.get(2).copied().flatten()],
            )
        }
        Producer::LayerNorm(p) => {
            let node = graph.node(*p);
            let Op::LayerNormalization { axis, .. } = &node.op else {
                unreachable!("matched as LayerNormalization")
            };
            let r = dims_of(graph, node.outputs[0])?.len();
            let last = i64::try_from(r).map_err(|e| e.to_string())? - 1;
            if *axis != -1 && *axis != last {
                return Err(format!(
                    "LayerNorm `{}` normalises from axis {axis}, not over the last axis only",
                    node.name
                ));
            }
            let gamma = node.inputs.get(1).copied().flatten();
            if gamma.is_none() {
                return Err(format!(
                    "LayerNorm `{}` has no scale to fold into",
                    node.name
                ));
            }
            (
                node.outputs[0],
                vec![gamma, node.inputs.get(2).copied().flatten()],
            )
        }
        Producer::Affine(m, a) => {
            let mul = graph.node(*m);
            let add = graph.node(*a);
            let gamma = mul
                .inputs
                .iter()
                .flatten()
                .copied()
                .find(|&v| graph.constant_of(v).is_some());
            let beta = add
                .inputs
                .iter()
                .flatten()
                .copied()
                .find(|&v| graph.constant_of(v).is_some());
            (add.outputs[0], vec![gamma, beta])
        }
    };
    for v in consts.iter().flatten() {
        if uses[v.index()] != 1 {
            return Err(format!(
                "the constant `{}` is shared by several ops",
                graph.value(*v).name
            ));
        }
    }
    // The producer's constants must be per channel (the weight is checked
    // by its layout).
    let skip = usize::from(matches!(producer, Producer::Layer(_)));
    for v in consts.iter().skip(skip).flatten() {
        if !per_channel(graph, *v, k) {
            return Err(format!(
                "the constant `{}` is not one value per channel ({k})",
                graph.value(*v).name
            ));
        }
    }
    let mut path_constants = check_path(graph, start, &path, x, k)?;
    for v in &path_constants {
        if uses[v.index()] != 1 {
            return Err(format!(
                "the constant `{}` is shared by several ops",
                graph.value(*v).name
            ));
        }
    }
    path_constants.extend(consts.into_iter().flatten());
    Ok(FoldSite {
        input: x,
        layers: layers.to_vec(),
        producer,
        path_constants,
    })
}

/// The weight of `layer` as `[N, K]`.
fn weight_nk(graph: &Graph, layer: &WeightLayer) -> Vec<f32> {
    let data = graph
        .constant_of(layer.weight)
        .map(Tensor::to_f32_vec)
        .unwrap_or_default();
    if layer.stored_nk {
        return data;
    }
    let (k, n) = (layer.k, layer.n);
    let mut t = vec![0f32; k * n];
    for (ki, row) in data.chunks(n).enumerate() {
        for (ni, &v) in row.iter().enumerate() {
            t[ni * k + ki] = v;
        }
    }
    t
}

/// Multiplies the constant `v` by `f(index along the channel axis)`:
/// `axis_of(i)` maps a flat index to the channel.
fn scale_constant(graph: &mut Graph, v: ValueId, f: impl Fn(usize) -> f64) -> Result<(), String> {
    let t = graph
        .constant_of(v)
        .ok_or_else(|| format!("`{}` is not a constant", graph.value(v).name))?;
    let shape = t.shape().clone();
    // Back to the constant's f32.
    #[allow(clippy::cast_possible_truncation)]
    let data: Vec<f32> = t
        .to_f32_vec()
        .iter()
        .enumerate()
        .map(|(i, &x)| (f64::from(x) * f(i)) as f32)
        .collect();
    let t = Tensor::from_f32(shape, data).map_err(|e| e.to_string())?;
    let name = graph.value(v).name.clone();
    graph.add_constant(name, t);
    Ok(())
}

/// Searches each fold site's `alpha`, folds the scales into the graph's
/// constants and replaces the layers' Hessians by those of the scaled
/// inputs. `mode_of` as in [`fold_sites`]; `wo` the deploy's weight-only
/// options (its method's base grid: `clip` for `clip` / `gptq_clip`).
pub fn apply_awq(
    graph: &mut Graph,
    hessians: &mut Hessians,
    mode_of: &dyn Fn(NodeId) -> Option<QuantMode>,
    wo: WeightOnly,
) -> Result<AwqReport, DeployError> {
    use crate::WeightMethod;
    let clip = matches!(wo.method, WeightMethod::Clip | WeightMethod::GptqClip);
    let (mut sites, unscaled) = fold_sites(graph, mode_of);
    sites.sort_by_key(|s| s.layers[0].index());
    let mut report = AwqReport {
        scaled: Vec::new(),
        unscaled,
    };
    for site in sites {
        let first = graph.node(site.layers[0]).name.clone();
        let mode = mode_of(site.layers[0]).expect("weight-only layers");
        let (Some(bits), format) = (
            weight_bits(mode),
            match float_mode(mode) {
                QuantMode::BF16 => FloatFormat::BF16,
                _ => FloatFormat::F16,
            },
        ) else {
            return Err(DeployError::Input(format!(
                "op `{first}`: {mode} is not a weight-only mode"
            )));
        };
        let layers: Vec<WeightLayer> = site
            .layers
            .iter()
            .map(|&l| weight_layer(graph, l).expect("a weight layer"))
            .collect();
        let wname = graph.value(layers[0].weight).name.clone();
        let h: Arc<Hessian> = hessians.get(&wname).cloned().ok_or_else(|| {
            DeployError::Input(format!(
                "op `{first}`: no input Hessian for weight `{wname}` (AWQ needs the layer inputs)"
            ))
        })?;
        if layers.iter().any(|l| l.k != h.k) {
            return Err(DeployError::Input(format!(
                "op `{first}`: the input Hessian is {0} x {0}, the layer has K = {1}",
                h.k, layers[0].k
            )));
        }
        let mean_abs = h.mean_abs();
        let weights: Vec<(Vec<f32>, usize)> =
            layers.iter().map(|l| (weight_nk(graph, l), l.n)).collect();
        let (best, errors) = search_alpha(&weights, &h, bits, wo, clip, format);
        let s = scales(&mean_abs, alpha(best));
        report.scaled.push(ScaledSite {
            layers: site
                .layers
                .iter()
                .map(|&l| graph.node(l).name.clone())
                .collect(),
            producer: match &site.producer {
                Producer::Layer(p) | Producer::LayerNorm(p) | Producer::Affine(_, p) => {
                    graph.node(*p).name.clone()
                }
            },
            alpha: alpha(best),
            errors,
        });
        if best == 0 {
            continue;
        }
        fold_scales(graph, &site, &s)
            .map_err(|e| DeployError::Input(format!("op `{first}`: AWQ fold: {e}")))?;
        let scaled = Arc::new(h.scaled_inputs(&s));
        for l in &layers {
            hessians.insert(graph.value(l.weight).name.clone(), Arc::clone(&scaled));
        }
    }
    Ok(report)
}

/// Folds the scales `s` of `site` into the graph's constants: the layers'
/// weight rows (input channels) times `s`, the producer's output channels
/// (and the per-channel constants on the path) times `1 / s`.
pub fn fold_scales(graph: &mut Graph, site: &FoldSite, s: &[f64]) -> Result<(), String> {
    let k = s.len();
    for &id in &site.layers {
        let l = weight_layer(graph, id).ok_or("a layer without a constant weight")?;
        let n = l.n;
        if l.k != k {
            return Err(format!("{} scales for K = {}", k, l.k));
        }
        if l.stored_nk {
            scale_constant(graph, l.weight, |i| s[i % k])?;
        } else {
            scale_constant(graph, l.weight, |i| s[i / n])?;
        }
    }
    let mut consts = site.path_constants.clone();
    if let Producer::Layer(p) = &site.producer {
        let pl = weight_layer(graph, *p).ok_or("a producer without a constant weight")?;
        let (pk, n) = (pl.k, pl.n);
        if pl.stored_nk {
            scale_constant(graph, pl.weight, |i| 1.0 / s[i / pk])?;
        } else {
            scale_constant(graph, pl.weight, |i| 1.0 / s[i % n])?;
        }
        consts.retain(|&v| v != pl.weight);
    }
    for v in consts {
        scale_constant(graph, v, |i| 1.0 / s[i % k])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
