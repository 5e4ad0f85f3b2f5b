//! The rewrites of TPU-MLIR's ONNX frontend, before any Top op exists
//! (`python/transform/OnnxConverter.py: model_simplify`, `OnnxOpt.py`). The
//! ops they create are named after the last matched node's output with the
//! new op type (`<out>_LayerNormalization`), because the naming pass runs
//! after them.
//!
//! TPU-MLIR's matcher (`ReForm.match_pattern`) also requires the nodes of a
//! pattern to be consecutive in the file's node order; qtune matches the
//! same data flow without that condition, so a model exported with its
//! nodes interleaved still fuses. On the workloads both agree.

use std::f32::consts::SQRT_2;

use super::util::{Readers, binary_with_const, clip_bounds, input, is_const, producer, sweep};
use crate::{GeluApproximation, Graph, NodeId, Op, ValueId};

/// Marks nodes as dead and refuses to reuse a node in two matches.
struct Claims {
    dead: Vec<bool>,
    taken: Vec<bool>,
}

impl Claims {
    fn new(g: &Graph) -> Self {
        Claims {
            dead: vec![false; g.node_count()],
            taken: vec![false; g.node_count()],
        }
    }

    /// Claims `nodes` when none is claimed yet.
    fn claim(&mut self, nodes: &[NodeId]) -> bool {
        if nodes.iter().any(|n| self.taken[n.index()]) {
            return false;
        }
        for n in nodes {
            self.taken[n.index()] = true;
        }
        true
    }
}

/// The value read by the single-input node `n` (its input 0).
fn x_of(g: &Graph, id: NodeId) -> Option<ValueId> {
    input(g.node(id), 0)
}

/// LayerNorm (`TorchLayerNormPattern`): `ReduceMean(x) -> Sub(x, mean) ->
/// Pow(d, 2) -> ReduceMean -> Add(eps) -> Sqrt -> Div(d, sqrt)`, then
/// optionally `Mul(gamma) -> Add(beta)`, both reductions over the same
/// trailing axes (ending at the last one), every intermediate read only
/// inside the pattern. Becomes `LayerNormalization(x, gamma, beta)` in place
/// of the last node.
pub(super) fn layer_norm(g: &mut Graph) -> usize {
    let r = Readers::new(g);
    let mut claims = Claims::new(g);
    let mut rewrites = Vec::new();
    for (div_id, div) in g.nodes() {
        if !matches!(div.op, Op::Div) || div.relu.is_some() {
            continue;
        }
        let Some(m) = match_layer_norm(g, &r, div_id) else {
            continue;
        };
        if !claims.claim(&m.nodes) {
            continue;
        }
        rewrites.push(m);
    }
    let count = rewrites.len();
    for m in rewrites {
        for &n in &m.nodes {
            claims.dead[n.index()] = n != m.last;
        }
        let node = g.node_mut(m.last);
        node.op = Op::LayerNormalization {
            axis: m.axis,
            epsilon: m.epsilon,
        };
        node.inputs = vec![Some(m.x), m.gamma, m.beta];
        if m.gamma.is_none() && m.beta.is_none() {
            node.inputs.truncate(1);
        }
    }
    sweep(g, &claims.dead);
    count
}

struct LayerNormMatch {
    nodes: Vec<NodeId>,
    last: NodeId,
    x: ValueId,
    gamma: Option<ValueId>,
    beta: Option<ValueId>,
    axis: i64,
    epsilon: f32,
}

/// The trailing axes a ReduceMean with keepdims averages over, as the first
/// of them (negative, from the end), when they end at the last axis.
fn trailing_mean_axis(g: &Graph, id: NodeId) -> Option<i64> {
    let n = g.node(id);
    let Op::ReduceMean(a) = &n.op else {
        return None;
    };
    if !a.keepdims || n.relu.is_some() {
        return None;
    }
    let rank = g.value(input(n, 0)?).shape.as_ref()?.rank();
    let mut axes = crate::resolve_reduce_axes(g, id, a, rank).ok()?;
    axes.sort_unstable();
    let first = *axes.first()?;
    let trailing = axes.iter().enumerate().all(|(k, &ax)| ax == first + k);
    (trailing && axes.last() == Some(&(rank - 1)))
        .then(|| {
            i64::try_from(first)
                .ok()
                .map(|f| f - i64::try_from(rank).unwrap_or(0))
        })
        .flatten()
}

fn match_layer_norm(g: &Graph, r: &Readers, div_id: NodeId) -> Option<LayerNormMatch> {
    let div = g.node(div_id);
    let d = input(div, 0)?;
    let (sqrt_id, sqrt) = producer(g, input(div, 1))?;
    let (sub_id, sub) = producer(g, Some(d))?;
    if !matches!(sqrt.op, Op::Sqrt) || !matches!(sub.op, Op::Sub) || sub.relu.is_some() {
        return None;
    }
    let x = input(sub, 0)?;
    let (mean_id, _) = producer(g, input(sub, 1))?;
    if x_of(g, mean_id) != Some(x) {
        return None;
    }
    let axis = trailing_mean_axis(g, mean_id)?;
    let (add_id, add) = producer(g, x_of(g, sqrt_id))?;
    if !matches!(add.op, Op::Add) || add.relu.is_some() {
        return None;
    }
    let epsilon = super::util::uniform_const(g, input(add, 1))?;
    let (var_id, _) = producer(g, input(add, 0))?;
    if trailing_mean_axis(g, var_id) != Some(axis) {
        return None;
    }
    let (pow_id, pow) = producer(g, x_of(g, var_id))?;
    if !matches!(pow.op, Op::Pow) || input(pow, 0) != Some(d) || !is_const(g, input(pow, 1), 2.0) {
        return None;
    }
    // Every value inside the pattern is read only inside it: `d` by the Pow
    // and the Div, the others by their one successor.
    let inner_single = [mean_id, pow_id, var_id, add_id, sqrt_id]
        .iter()
        .all(|&n| r.only_reader(g.node(n).outputs[0]).is_some());
    let d_readers = r.readers(d);
    if !inner_single
        || r.uses(d) != 2
        || !(d_readers.contains(&pow_id) && d_readers.contains(&div_id))
    {
        return None;
    }
    let mut nodes = vec![mean_id, sub_id, pow_id, var_id, add_id, sqrt_id, div_id];
    let (mut last, mut gamma, mut beta) = (div_id, None, None);
    // The affine tail: Mul(gamma) then Add(beta), both constants.
    if let Some(mul_id) = r.only_reader(div.outputs[0]) {
        let mul = g.node(mul_id);
        let y = div.outputs[0];
        let other = |n: &crate::Node| -> Option<ValueId> {
            let (a, b) = (input(n, 0)?, input(n, 1)?);
            if a == b {
                return None;
            }
            let o = if a == y { b } else { a };
            g.constant_of(o).map(|_| o)
        };
        if matches!(mul.op, Op::Mul)
            && mul.relu.is_none()
            && let Some(gm) = other(mul)
            && let Some(add2_id) = r.only_reader(mul.outputs[0])
        {
            let add2 = g.node(add2_id);
            let y2 = mul.outputs[0];
            let (a, b) = (input(add2, 0), input(add2, 1));
            let bt = if a == Some(y2) { b } else { a };
            if matches!(add2.op, Op::Add)
                && add2.relu.is_none()
                && bt.is_some_and(|b| g.constant_of(b).is_some())
                && (a == Some(y2) || b == Some(y2))
            {
                nodes.extend([mul_id, add2_id]);
                last = add2_id;
                gamma = Some(gm);
                beta = bt;
            }
        }
    }
    Some(LayerNormMatch {
        nodes,
        last,
        x,
        gamma,
        beta,
        axis,
        epsilon,
    })
}

/// GELU, erf form (`TorchGELUPattern`): `Div(x, sqrt 2) -> Erf -> Add(1) ->
/// Mul(x, .) -> Mul(0.5)`. TPU-MLIR does not check the divisor; qtune
/// requires it to be sqrt(2) (within float32 rounding), so that the fused
/// op computes the same function.
pub(super) fn gelu_erf(g: &mut Graph) -> usize {
    let r = Readers::new(g);
    let mut claims = Claims::new(g);
    let mut rewrites = Vec::new();
    for (erf_id, erf) in g.nodes() {
        if !matches!(erf.op, Op::Erf) {
            continue;
        }
        let Some((div_id, div)) = producer(g, input(erf, 0)) else {
            continue;
        };
        let Some(x) = input(div, 0) else { continue };
        let divisor = super::util::uniform_const(g, input(div, 1));
        if !matches!(div.op, Op::Div) || !divisor.is_some_and(|c| (c - SQRT_2).abs() < 1e-6) {
            continue;
        }
        let Some(add_id) = r.only_reader(erf.outputs[0]) else {
            continue;
        };
        if !binary_with_const(g, g.node(add_id), &Op::Add, erf.outputs[0], 1.0, true) {
            continue;
        }
        let a = g.node(add_id).outputs[0];
        let Some(mul_id) = r.only_reader(a) else {
            continue;
        };
        let mul = g.node(mul_id);
        let pair = [input(mul, 0), input(mul, 1)];
        if !matches!(mul.op, Op::Mul)
            || mul.relu.is_some()
            || !(pair == [Some(x), Some(a)] || pair == [Some(a), Some(x)])
        {
            continue;
        }
        let m = mul.outputs[0];
        let Some(half_id) = r.only_reader(m) else {
            continue;
        };
        if !binary_with_const(g, g.node(half_id), &Op::Mul, m, 0.5, true)
            || r.only_reader(div.outputs[0]) != Some(erf_id)
        {
            continue;
        }
        let nodes = [div_id, erf_id, add_id, mul_id, half_id];
        if claims.claim(&nodes) {
            rewrites.push((nodes, x, GeluApproximation::None));
        }
    }
    apply_gelu(g, claims, rewrites)
}

fn apply_gelu(
    g: &mut Graph,
    mut claims: Claims,
    rewrites: Vec<([NodeId; 5], ValueId, GeluApproximation)>,
) -> usize {
    let count = rewrites.len();
    for (nodes, x, approximate) in rewrites {
        let last = nodes[4];
        for n in &nodes[..4] {
            claims.dead[n.index()] = true;
        }
        let node = g.node_mut(last);
        node.op = Op::Gelu { approximate };
        node.inputs = vec![Some(x)];
    }
    sweep(g, &claims.dead);
    count
}

/// GELU, tanh form (`TorchGELUPattern2`): `0.5 x (1 + tanh(sqrt(2/pi) (x +
/// 0.044715 x^3)))` as ONNX exporters write it: `Pow(x, 3) -> Mul(0.044715)
/// -> Add(x, .) -> Mul(sqrt(2/pi)) -> Tanh -> Add(1) -> Mul(., h)` with `h =
/// Mul(x, 0.5)`. TPU-MLIR's pattern gives a `top.GELU` without its
/// approximation attribute (so its chips compute the erf form); qtune keeps
/// the tanh form (`approx_mode = "tanh"`, as newer TPU-MLIR prints it).
pub(super) fn gelu_tanh(g: &mut Graph) -> usize {
    let r = Readers::new(g);
    let mut claims = Claims::new(g);
    let mut rewrites = Vec::new();
    for (tanh_id, tanh) in g.nodes() {
        if !matches!(tanh.op, Op::Tanh) {
            continue;
        }
        if let Some(m) = match_gelu_tanh(g, &r, tanh_id)
            && claims.claim(&m.0)
        {
            rewrites.push(m);
        }
    }
    let count = rewrites.len();
    for (nodes, x) in rewrites {
        let (last, rest) = nodes
            .split_last()
            .unwrap_or_else(|| unreachable!("eight nodes"));
        for n in rest {
            claims.dead[n.index()] = true;
        }
        let node = g.node_mut(*last);
        node.op = Op::Gelu {
            approximate: GeluApproximation::Tanh,
        };
        node.inputs = vec![Some(x)];
    }
    sweep(g, &claims.dead);
    count
}

/// For a Mul node without a fused Relu: `(the other input, the constant)`
/// when one input is a uniform constant.
fn mul_by_const(g: &Graph, id: NodeId) -> Option<(ValueId, f32)> {
    let n = g.node(id);
    if !matches!(n.op, Op::Mul) || n.relu.is_some() {
        return None;
    }
    let (v, _, c) = super::util::with_uniform_const(g, n)?;
    Some((v, c))
}

fn match_gelu_tanh(g: &Graph, r: &Readers, tanh_id: NodeId) -> Option<([NodeId; 8], ValueId)> {
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-6 * b.abs();
    let tanh = g.node(tanh_id);
    let (scale_id, _) = producer(g, input(tanh, 0))?;
    let (inner, k) = mul_by_const(g, scale_id)?;
    if !close(k, (2.0 / std::f32::consts::PI).sqrt()) {
        return None;
    }
    let (inner_id, inner_node) = producer(g, Some(inner))?;
    if !matches!(inner_node.op, Op::Add) || inner_node.relu.is_some() {
        return None;
    }
    // inner = x + c x^3, in either order.
    let (a, b) = (input(inner_node, 0)?, input(inner_node, 1)?);
    let cubic = |x: ValueId, v: ValueId| -> Option<(NodeId, NodeId)> {
        let (cm_id, _) = producer(g, Some(v))?;
        let (p, c) = mul_by_const(g, cm_id)?;
        let (pow_id, pow) = producer(g, Some(p))?;
        (close(c, 0.044715)
            && matches!(pow.op, Op::Pow)
            && input(pow, 0) == Some(x)
            && is_const(g, input(pow, 1), 3.0))
        .then_some((pow_id, cm_id))
    };
    let (x, (pow_id, cm_id)) = match cubic(a, b) {
        Some(p) => (a, p),
        None => (b, cubic(b, a)?),
    };
    let add1_id = r.only_reader(tanh.outputs[0])?;
    if !binary_with_const(g, g.node(add1_id), &Op::Add, tanh.outputs[0], 1.0, true) {
        return None;
    }
    let a1 = g.node(add1_id).outputs[0];
    let out_id = r.only_reader(a1)?;
    let out = g.node(out_id);
    if !matches!(out.op, Op::Mul) || out.relu.is_some() {
        return None;
    }
    let other = if input(out, 0) == Some(a1) {
        input(out, 1)
    } else {
        input(out, 0)
    };
    let (half_id, _) = producer(g, other)?;
    let (hx, h) = mul_by_const(g, half_id)?;
    if hx != x || h != 0.5 {
        return None;
    }
    let singles = [pow_id, cm_id, inner_id, scale_id, tanh_id, half_id];
    if !singles
        .iter()
        .all(|&n| r.only_reader(g.node(n).outputs[0]).is_some())
    {
        return None;
    }
    Some((
        [
            half_id, pow_id, cm_id, inner_id, scale_id, tanh_id, add1_id, out_id,
        ],
        x,
    ))
}

/// `Add(x, 3) -> Clip(0, 6)`: the start of the hard-sigmoid patterns.
/// Returns `(x, add, clip)`.
fn add3_clip6(g: &Graph, r: &Readers, clip_id: NodeId) -> Option<(ValueId, NodeId)> {
    let clip = g.node(clip_id);
    if clip_bounds(g, clip)? != (0.0, 6.0) || clip.relu.is_some() {
        return None;
    }
    let (add_id, add) = producer(g, input(clip, 0))?;
    let (a, b) = (input(add, 0)?, input(add, 1)?);
    let x = if is_const(g, Some(b), 3.0) {
        a
    } else if is_const(g, Some(a), 3.0) {
        b
    } else {
        return None;
    };
    (matches!(add.op, Op::Add)
        && add.relu.is_none()
        && r.only_reader(add.outputs[0]) == Some(clip_id))
    .then_some((x, add_id))
}

/// HardSigmoid (`TorchHardSigmoidPattern`): `Add(x, 3) -> Clip(0, 6) ->
/// Div(6)` becomes `HardSigmoid(alpha = 1/6, beta = 0.5)`; and HardSwish
/// (`TorchHardSwishPattern2`): `Add(x, 3) -> Clip(0, 6) -> Mul(x, .) ->
/// Div(6)` becomes `HardSwish`. Both in place of the Div.
pub(super) fn hard_sigmoid_swish(g: &mut Graph) -> (usize, usize) {
    let r = Readers::new(g);
    let mut claims = Claims::new(g);
    let mut sigmoids = Vec::new();
    let mut swishes = Vec::new();
    for (clip_id, clip) in g.nodes() {
        let Some((x, add_id)) = add3_clip6(g, &r, clip_id) else {
            continue;
        };
        let c = clip.outputs[0];
        let Some(next_id) = r.only_reader(c) else {
            continue;
        };
        let next = g.node(next_id);
        if binary_with_const(g, next, &Op::Div, c, 6.0, false) {
            let nodes = [add_id, clip_id, next_id];
            if claims.claim(&nodes) {
                sigmoids.push((nodes, x));
            }
            continue;
        }
        let pair = [input(next, 0), input(next, 1)];
        if matches!(next.op, Op::Mul)
            && next.relu.is_none()
            && (pair == [Some(x), Some(c)] || pair == [Some(c), Some(x)])
            && let Some(div_id) = r.only_reader(next.outputs[0])
            && binary_with_const(g, g.node(div_id), &Op::Div, next.outputs[0], 6.0, false)
        {
            let nodes = [add_id, clip_id, next_id, div_id];
            if claims.claim(&nodes) {
                swishes.push((nodes.to_vec(), x));
            }
        }
    }
    // HardSwish from a HardSigmoid(1/6, 0.5) read by Mul(x, .)
    // (`TorchHardSwishPattern`).
    for (hs_id, hs) in g.nodes() {
        let Op::HardSigmoid { alpha, beta } = hs.op else {
            continue;
        };
        let Some(x) = input(hs, 0) else { continue };
        if alpha != 1.0 / 6.0 || beta != 0.5 || hs.relu.is_some() {
            continue;
        }
        let h = hs.outputs[0];
        let Some(mul_id) = r.only_reader(h) else {
            continue;
        };
        let mul = g.node(mul_id);
        let pair = [input(mul, 0), input(mul, 1)];
        if matches!(mul.op, Op::Mul)
            && mul.relu.is_none()
            && (pair == [Some(x), Some(h)] || pair == [Some(h), Some(x)])
            && claims.claim(&[hs_id, mul_id])
        {
            swishes.push((vec![hs_id, mul_id], x));
        }
    }
    let counts = (sigmoids.len(), swishes.len());
    for (nodes, x) in sigmoids {
        for n in &nodes[..2] {
            claims.dead[n.index()] = true;
        }
        let node = g.node_mut(nodes[2]);
        node.op = Op::HardSigmoid {
            alpha: 1.0 / 6.0,
            beta: 0.5,
        };
        node.inputs = vec![Some(x)];
    }
    for (nodes, x) in swishes {
        let (last, rest) = nodes
            .split_last()
            .unwrap_or_else(|| unreachable!("non-empty"));
        for n in rest {
            claims.dead[n.index()] = true;
        }
        let node = g.node_mut(*last);
        node.op = Op::HardSwish;
        node.inputs = vec![Some(x)];
    }
    sweep(g, &claims.dead);
    counts
}

/// Two Slices in a row over different axes, the first read only by the
/// second, become one Slice (onnx-simplifier's `fuse_consecutive_slices`,
/// which TPU-MLIR's frontend runs). It keeps the second Slice's output.
pub(super) fn merge_slices(g: &mut Graph) -> usize {
    let r = Readers::new(g);
    let mut claims = Claims::new(g);
    let mut merges = Vec::new();
    for (second_id, second) in g.nodes() {
        if !matches!(second.op, Op::Slice) {
            continue;
        }
        let Some((first_id, first)) = producer(g, input(second, 0)) else {
            continue;
        };
        if !matches!(first.op, Op::Slice) || r.only_reader(first.outputs[0]) != Some(second_id) {
            continue;
        }
        let params = |n: &crate::Node| -> Option<[Vec<i64>; 4]> {
            let rank = i64::try_from(g.value(input(n, 0)?).shape.as_ref()?.rank()).ok()?;
            let get = |i: usize| input(n, i).and_then(|v| g.constant_of(v)?.to_i64_vec().ok());
            let starts = get(1)?;
            let ends = get(2)?;
            let axes = match input(n, 3) {
                Some(_) => get(3)?,
                None => (0..i64::try_from(starts.len()).ok()?).collect(),
            };
            let axes = axes
                .into_iter()
                .map(|a| if a < 0 { a + rank } else { a })
                .collect();
            let steps = match input(n, 4) {
                Some(_) => get(4)?,
                None => vec![1; starts.len()],
            };
            Some([starts, ends, axes, steps])
        };
        let (Some(p1), Some(p2)) = (params(first), params(second)) else {
            continue;
        };
        if p1[2].iter().any(|a| p2[2].contains(a)) {
            continue;
        }
        if claims.claim(&[first_id, second_id]) {
            let merged: [Vec<i64>; 4] = std::array::from_fn(|k| {
                let mut v = p1[k].clone();
                v.extend_from_slice(&p2[k]);
                v
            });
            merges.push((first_id, second_id, input(first, 0), merged));
        }
    }
    let count = merges.len();
    for (first_id, second_id, x, [starts, ends, axes, steps]) in merges {
        claims.dead[first_id.index()] = true;
        let base = g.node(second_id).name.clone();
        let mut inputs = vec![x];
        for (suffix, v) in [
            ("starts", starts),
            ("ends", ends),
            ("axes", axes),
            ("steps", steps),
        ] {
            let c =
                super::util::add_const(g, &format!("{base}_{suffix}"), super::util::i64_tensor(v));
            inputs.push(Some(c));
        }
        g.node_mut(second_id).inputs = inputs;
    }
    sweep(g, &claims.dead);
    count
}
