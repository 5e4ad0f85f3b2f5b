//! Cross-layer weight equalization (`run_calibration --we`; spec 3.11,
//! TPU-MLIR `mix_precision.py: MixPrecSearcher.weight_equalization`).
//!
//! For a pair `C1 -> [act] -> C2` of convolutions, output channel `c` of C1
//! and input channel `c` of C2 are rescaled by `s_c`:
//!
//! $$W_1[c] \mathrel{/}= s_c,\quad b_1[c] \mathrel{/}= s_c,\quad W_2[:, c] \mathrel{*}= s_c,
//! \qquad s_c = \sqrt{r_1(c) / r_2(c)}$$
//!
//! with `r1(c) = max |W1[c, ...]|` and `r2(c) = max |W2[:, c, ...]|` (within
//! C2's group), which makes both ranges `sqrt(r1 r2)`. This helps per-tensor
//! weight quantization (BM1684): the channels of C1 no longer span very
//! different ranges. The update is repeated until the weights stop moving
//! (`||W1 - W1'||_F + ||W2 - W2'||_F < 1e-4`); the last, negligible update is
//! not applied, as in TPU-MLIR.
//!
//! # Which pairs
//!
//! The rescaling computes the same function only when the activation
//! between the convolutions is positively homogeneous, `f(x / s) = f(x) / s`
//! for `s > 0`: none, `Relu`, `LeakyRelu` (and PRelu, which the IR does not
//! have). **Deviation from TPU-MLIR:** its `find_successor` also walks
//! through `top.Relu` with a `relu_limit` (ReLU6, imported from
//! `Clip(0, 6)`), where the clip bound does not scale with `s`, so
//! TPU-MLIR's equalized model computes a different function. qtune leaves
//! such pairs alone. MobileNet-style networks, whose activations are all
//! ReLU6, therefore have few pairs (the linear projection convs feeding the
//! next block's expansion conv without a residual).
//!
//! C1's output (and the activation's) must be read by exactly one node, and
//! neither may be a graph output: a second reader would see the rescaled
//! channels. Both weights (and C1's bias) must be constants read by this
//! node only. Grouped and depthwise convolutions are handled through
//! TPU-MLIR's group mapping: `G = O1 / (I2 / g2)` groups.
//!
//! # Iteration cap
//!
//! TPU-MLIR iterates without a cap; qtune stops after
//! [`EqualizeSettings::max_iterations`] updates and reports the pair as not
//! converged (the weights of the last update are kept: each update is
//! function-preserving, so stopping anywhere is safe).
//!
//! The graph must have BatchNormalization folded into Conv (a BN between
//! the convolutions is not positively homogeneous per channel with its
//! epsilon); [`equalize_weights`] never walks through one.

use qtune_ir::{Graph, NodeId, Op, ValueId};
use qtune_tensor::Tensor;

use crate::PipelineError;

/// Settings of [`equalize_weights`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EqualizeSettings {
    /// Stop when `||W1 - W1'||_F + ||W2 - W2'||_F` falls below this (1e-4,
    /// TPU-MLIR's value).
    pub tolerance: f64,
    /// Updates per pair before giving up (TPU-MLIR has no cap).
    pub max_iterations: usize,
}

impl Default for EqualizeSettings {
    fn default() -> Self {
        EqualizeSettings {
            tolerance: 1e-4,
            max_iterations: 100,
        }
    }
}

/// Min and max over channels of the per-channel abs-max of a weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelRanges {
    pub min: f32,
    pub max: f32,
}

impl ChannelRanges {
    fn of(ranges: &[f32]) -> Self {
        let mut out = ChannelRanges {
            min: f32::INFINITY,
            max: 0.0,
        };
        for &r in ranges {
            out.min = out.min.min(r);
            out.max = out.max.max(r);
        }
        if ranges.is_empty() {
            out.min = 0.0;
        }
        out
    }
}

/// One equalized pair.
#[derive(Debug, Clone, PartialEq)]
pub struct EqualizedPair {
    /// Op names (output tensor names) of C1 and C2.
    pub first: String,
    pub second: String,
    /// The activation between them, if any (`Relu`, `LeakyRelu`).
    pub activation: Option<&'static str>,
    /// `G` of spec 3.11.
    pub groups: usize,
    /// `||dW1||_F + ||dW2||_F` of each iteration; the last one is below the
    /// tolerance when the pair converged (and was not applied).
    pub losses: Vec<f64>,
    /// Whether the loss fell below the tolerance within the cap.
    pub converged: bool,
    /// Per-output-channel ranges of W1, before and after.
    pub first_before: ChannelRanges,
    pub first_after: ChannelRanges,
    /// Per-input-channel ranges of W2, before and after.
    pub second_before: ChannelRanges,
    pub second_after: ChannelRanges,
}

impl EqualizedPair {
    /// Iterations run (TPU-MLIR's `Iter` of the last log line).
    pub fn iterations(&self) -> usize {
        self.losses.len()
    }
}

/// A Conv pair that qualified structurally but was left alone.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedPair {
    pub first: String,
    pub second: String,
    pub reason: String,
}

/// What [`equalize_weights`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EqualizeReport {
    pub pairs: Vec<EqualizedPair>,
    pub skipped: Vec<SkippedPair>,
    /// Convs whose only successor is a Conv behind an activation that is not
    /// positively homogeneous (Clip/ReLU6, ...): `(C1, activation op type)`.
    pub blocked_by_activation: Vec<(String, &'static str)>,
}

fn transform_error(graph: &Graph, node: NodeId, message: String) -> PipelineError {
    let n = graph.node(node);
    PipelineError::Transform {
        node: n.name.clone(),
        op: n.op.op_type(),
        message,
    }
}

/// The single node reading `v` (as any input), if `v` is not a graph output.
fn only_reader(graph: &Graph, consumers: &[Vec<NodeId>], v: ValueId) -> Option<NodeId> {
    let list = &consumers[v.index()];
    (list.len() == 1 && !graph.outputs.contains(&v)).then(|| list[0])
}

/// A Conv reading `v` as its data input only.
fn conv_reading(graph: &Graph, node: NodeId, v: ValueId) -> bool {
    let n = graph.node(node);
    matches!(n.op, Op::Conv(_))
        && n.inputs.first() == Some(&Some(v))
        && n.inputs.iter().skip(1).all(|i| *i != Some(v))
}

/// Structural successor of C1: `(activation, C2)`; `Err(op type)` when the
/// only path is through an activation that would break the function.
fn find_successor(
    graph: &Graph,
    consumers: &[Vec<NodeId>],
    c1: NodeId,
) -> Option<Result<(Option<NodeId>, NodeId), &'static str>> {
    let out = *graph.node(c1).outputs.first()?;
    let next = only_reader(graph, consumers, out)?;
    if conv_reading(graph, next, out) {
        // A Relu fused into C1 (`do_relu`) is positively homogeneous; a
        // capped one (ReLU6) is not.
        return match graph.node(c1).relu {
            Some(r) if r.limit.is_some() => Some(Err("Relu with relu_limit")),
            _ => Some(Ok((None, next))),
        };
    }
    if graph.node(c1).relu.is_some_and(|r| r.limit.is_some()) {
        return None;
    }
    let act = graph.node(next);
    let act_out = *act.outputs.first()?;
    let after = only_reader(graph, consumers, act_out)?;
    if act.inputs.first() != Some(&Some(out)) || !conv_reading(graph, after, act_out) {
        return None;
    }
    match act.op {
        Op::Relu | Op::LeakyRelu { .. } => Some(Ok((Some(next), after))),
        Op::Clip(_) | Op::HardSigmoid { .. } | Op::HardSwish | Op::Sigmoid | Op::Tanh => {
            Some(Err(act.op.op_type()))
        }
        _ => None,
    }
}

/// A constant input of `node` that only `node` reads, as f32 data.
fn owned_constant(
    graph: &Graph,
    uses: &[usize],
    node: NodeId,
    index: usize,
) -> Result<Option<(ValueId, Tensor)>, String> {
    let Some(Some(v)) = graph.node(node).inputs.get(index).copied() else {
        return Ok(None);
    };
    let Some(t) = graph.constant_of(v) else {
        return Err(format!(
            "input {index} `{}` is not a constant",
            graph.value(v).name
        ));
    };
    if uses[v.index()] != 1 {
        return Err(format!(
            "constant `{}` is shared with other nodes",
            graph.value(v).name
        ));
    }
    if t.as_f32().is_err() {
        return Err(format!("constant `{}` is not float32", graph.value(v).name));
    }
    Ok(Some((v, t.clone())))
}

/// The weights of one pair, as f32 vectors with their shapes.
struct PairWeights {
    w1: Vec<f32>,
    b1: Option<Vec<f32>>,
    w2: Vec<f32>,
    o1: usize,
    o2: usize,
    /// `I2 / g2`.
    c2: usize,
    groups: usize,
}

impl PairWeights {
    fn per_w1(&self) -> usize {
        self.w1.len() / self.o1
    }
    fn per_w2(&self) -> usize {
        self.w2.len() / (self.o2 * self.c2)
    }

    /// Per-output-channel abs-max of W1.
    fn first_ranges(&self) -> Vec<f32> {
        let k = self.per_w1();
        (0..self.o1)
            .map(|c| abs_max(&self.w1[c * k..(c + 1) * k]))
            .collect()
    }

    /// Abs-max of W2 over the input channel of C1's channel `c`.
    fn second_ranges(&self) -> Vec<f32> {
        let (gi, go) = (self.o1 / self.groups, self.o2 / self.groups);
        let k = self.per_w2();
        (0..self.o1)
            .map(|ch| {
                let (g, ii) = (ch / gi, ch % gi);
                (g * go..(g + 1) * go)
                    .map(|o| {
                        let start = (o * self.c2 + ii) * k;
                        abs_max(&self.w2[start..start + k])
                    })
                    .fold(0.0, f32::max)
            })
            .collect()
    }

    /// One update; returns the new weights and `||dW1||_F + ||dW2||_F`.
    fn step(&self) -> (Vec<f32>, Option<Vec<f32>>, Vec<f32>, f64) {
        let r1 = self.first_ranges();
        let r2 = self.second_ranges();
        let mut w1 = self.w1.clone();
        let mut b1 = self.b1.clone();
        let mut w2 = self.w2.clone();
        let (gi, go) = (self.o1 / self.groups, self.o2 / self.groups);
        let (k1, k2) = (self.per_w1(), self.per_w2());
        for ch in 0..self.o1 {
            // Spec 3.11: ranges below 1e-6 count as 0; 0/0 and x/0 give 1.
            let zero_small = |r: f32| if r < 1e-6 { 0.0 } else { f64::from(r) };
            let (a, b) = (zero_small(r1[ch]), zero_small(r2[ch]));
            let s = a / (a * b).sqrt();
            let s = if s.is_finite() && s > 0.0 { s } else { 1.0 };
            for w in &mut w1[ch * k1..(ch + 1) * k1] {
                *w = scale_f32(*w, 1.0 / s);
            }
            if let Some(b) = b1.as_mut() {
                b[ch] = scale_f32(b[ch], 1.0 / s);
            }
            let (g, ii) = (ch / gi, ch % gi);
            for o in g * go..(g + 1) * go {
                let start = (o * self.c2 + ii) * k2;
                for w in &mut w2[start..start + k2] {
                    *w = scale_f32(*w, s);
                }
            }
        }
        let loss = frobenius_distance(&self.w1, &w1) + frobenius_distance(&self.w2, &w2);
        (w1, b1, w2, loss)
    }
}

/// `x * s` rounded once to f32 (the product in f64).
fn scale_f32(x: f32, s: f64) -> f32 {
    // Rounding f64 to the nearest f32 is the intended narrowing here.
    #[allow(clippy::cast_possible_truncation)]
    let y = (f64::from(x) * s) as f32;
    y
}

fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

fn frobenius_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

/// The weights of the pair `(c1, c2)`, or why it cannot be equalized.
fn pair_weights(
    graph: &Graph,
    uses: &[usize],
    c1: NodeId,
    c2: NodeId,
) -> Result<(PairWeights, [Option<ValueId>; 3]), String> {
    let (Op::Conv(_), Op::Conv(a2)) = (&graph.node(c1).op, &graph.node(c2).op) else {
        return Err("not a Conv pair".to_string());
    };
    let (Some((w1_id, w1)), Some((w2_id, w2))) = (
        owned_constant(graph, uses, c1, 1)?,
        owned_constant(graph, uses, c2, 1)?,
    ) else {
        return Err("a Conv has no weight".to_string());
    };
    let b1 = owned_constant(graph, uses, c1, 2)?;
    let (d1, d2) = (w1.dims().to_vec(), w2.dims().to_vec());
    if d1.len() < 3 || d2.len() < 3 {
        return Err(format!("weights of rank {} and {}", d1.len(), d2.len()));
    }
    let (o1, o2, c2_in) = (d1[0], d2[0], d2[1]);
    let g2 = a2.group.max(1);
    if o1 == 0 || o2 == 0 || c2_in == 0 || c2_in * g2 != o1 || o1 % c2_in != 0 {
        return Err(format!(
            "C1 has {o1} output channels, C2 reads {} ({} groups of {c2_in})",
            c2_in * g2,
            g2
        ));
    }
    let groups = o1 / c2_in;
    if o2 % groups != 0 {
        return Err(format!(
            "C2's {o2} output channels do not split into {groups} groups"
        ));
    }
    if let Some((_, b)) = &b1
        && b.numel() != o1
    {
        return Err(format!("bias has {} values for {o1} channels", b.numel()));
    }
    let to_vec = |t: &Tensor| t.to_f32_vec();
    Ok((
        PairWeights {
            w1: to_vec(&w1),
            b1: b1.as_ref().map(|(_, b)| to_vec(b)),
            w2: to_vec(&w2),
            o1,
            o2,
            c2: c2_in,
            groups,
        },
        [Some(w1_id), b1.map(|(id, _)| id), Some(w2_id)],
    ))
}

/// Equalizes every qualifying Conv pair of `graph` in op order (a Conv may
/// be C2 of one pair and C1 of the next; the second pair sees the first's
/// result, as in TPU-MLIR). See the module docs.
pub fn equalize_weights(
    graph: &mut Graph,
    settings: &EqualizeSettings,
) -> Result<EqualizeReport, PipelineError> {
    let consumers = graph.consumers();
    let uses = graph.use_counts();
    let mut report = EqualizeReport::default();
    let convs: Vec<NodeId> = graph
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::Conv(_)))
        .map(|(id, _)| id)
        .collect();
    let op_name = |g: &Graph, n: NodeId| {
        g.node(n)
            .outputs
            .first()
            .map_or_else(|| g.node(n).name.clone(), |&v| g.value(v).name.clone())
    };
    for c1 in convs {
        let (act, c2) = match find_successor(graph, &consumers, c1) {
            None => continue,
            Some(Err(op)) => {
                report.blocked_by_activation.push((op_name(graph, c1), op));
                continue;
            }
            Some(Ok(pair)) => pair,
        };
        let (first, second) = (op_name(graph, c1), op_name(graph, c2));
        let (mut weights, ids) = match pair_weights(graph, &uses, c1, c2) {
            Ok(w) => w,
            Err(reason) => {
                report.skipped.push(SkippedPair {
                    first,
                    second,
                    reason,
                });
                continue;
            }
        };
        let first_before = ChannelRanges::of(&weights.first_ranges());
        let second_before = ChannelRanges::of(&weights.second_ranges());
        let mut losses = Vec::new();
        let mut converged = false;
        while losses.len() < settings.max_iterations {
            let (w1, b1, w2, loss) = weights.step();
            losses.push(loss);
            if !loss.is_finite() {
                return Err(transform_error(
                    graph,
                    c1,
                    format!("weight equalization with `{second}` gave a non-finite change"),
                ));
            }
            if loss < settings.tolerance {
                converged = true;
                break;
            }
            weights.w1 = w1;
            weights.b1 = b1;
            weights.w2 = w2;
        }
        let [w1_id, b1_id, w2_id] = ids;
        for (id, data) in [
            (w1_id, Some(&weights.w1)),
            (b1_id, weights.b1.as_ref()),
            (w2_id, Some(&weights.w2)),
        ] {
            let (Some(id), Some(data)) = (id, data) else {
                continue;
            };
            let Some(shape) = graph.constant_of(id).map(|t| t.shape().clone()) else {
                continue;
            };
            let t = Tensor::from_f32(shape, data.clone())?;
            graph.value_mut(id).constant = Some(t);
        }
        report.pairs.push(EqualizedPair {
            first,
            second,
            activation: act.map(|a| graph.node(a).op.op_type()),
            groups: weights.groups,
            losses,
            converged,
            first_before,
            first_after: ChannelRanges::of(&weights.first_ranges()),
            second_before,
            second_after: ChannelRanges::of(&weights.second_ranges()),
        });
    }
    Ok(report)
}
