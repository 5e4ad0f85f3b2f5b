//! The Top canonicalization patterns of `tpuc-opt --canonicalize`
//! (`lib/Dialect/Top/Canonicalize/*.cpp`) that change which ops exist on
//! the graphs qtune reads. A pattern replaces an op with a new one that
//! keeps the replaced op's loc, so the fused op is named after the op the
//! pattern is rooted at: the Relu, the SiLU's Mul, the bias Add.

use super::util::{Readers, clip_bounds, input, producer, replace_uses, sweep};
use crate::{FusedRelu, Graph, NodeId, Op, ResizeMode, ValueId};

/// The Relu a node computes, when it is one TPU-MLIR fuses: `Relu`, or
/// `Clip(0, max)` with `max > 0` (TPU-MLIR's ONNX converter writes it as
/// `top.Relu` with `relu_limit = max`).
fn as_relu(g: &Graph, id: NodeId) -> Option<FusedRelu> {
    let n = g.node(id);
    if n.relu.is_some() {
        return None;
    }
    match &n.op {
        Op::Relu => Some(FusedRelu::RELU),
        Op::Clip(_) => {
            let (lo, hi) = clip_bounds(g, n)?;
            (lo == 0.0 && hi > 0.0).then(|| FusedRelu::from_limit(f64::from(hi)))
        }
        _ => None,
    }
}

/// Whether a Resize is the one TPU-MLIR turns into `top.Upsample`: nearest,
/// rank 4 or more, the same integer factor on H and W, batch and channels
/// unchanged (`Interp.cpp: InterpToUpsampleMergePattern`).
pub fn is_upsample(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    let Op::Resize(a) = &n.op else { return false };
    if a.mode != ResizeMode::Nearest {
        return false;
    }
    let (Some(x), Some(&y)) = (input(n, 0), n.outputs.first()) else {
        return false;
    };
    let (Some(xs), Some(ys)) = (g.value(x).shape.as_ref(), g.value(y).shape.as_ref()) else {
        return false;
    };
    let (xs, ys) = (xs.dims(), ys.dims());
    if xs.len() < 4 || xs.len() != ys.len() || xs[..2] != ys[..2] {
        return false;
    }
    let r = xs.len();
    let factor = |i: usize| (xs[i] > 0 && ys[i] % xs[i] == 0).then(|| ys[i] / xs[i]);
    matches!((factor(r - 2), factor(r - 1)), (Some(h), Some(w)) if h == w && h >= 1)
}

/// Ops with TPU-MLIR's `SupportFuseRelu` trait, as qtune's IR has them.
fn supports_fused_relu(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    n.outputs.len() == 1
        && match &n.op {
            Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::BatchNormalization { .. }
            | Op::AveragePool(_)
            | Op::MaxPool(_)
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::MatMul
            | Op::Gemm(_) => true,
            Op::Resize(_) => is_upsample(g, id),
            _ => false,
        }
}

/// Fuses each Relu (or `Clip(0, max)`) into its producer when the producer
/// supports it and the Relu is its output's only reader (`Relu.cpp:
/// TopFuseRelu`). The producer takes the Relu's output and name. A producer
/// that already has a fused Relu keeps the lower cap; TPU-MLIR's pattern
/// there drops the cap when the outer Relu has none, which changes the
/// function, so qtune does not follow it.
pub(super) fn fuse_relu(g: &mut Graph) -> usize {
    let r = Readers::new(g);
    let mut dead = vec![false; g.node_count()];
    let mut fusions = Vec::new();
    for (relu_id, relu_node) in g.nodes() {
        let Some(relu) = as_relu(g, relu_id) else {
            continue;
        };
        let Some(x) = input(relu_node, 0) else { continue };
        let Some((p, _)) = producer(g, Some(x)) else {
            continue;
        };
        if g.value(x).dtype != qtune_tensor::DType::F32
            || r.only_reader(x) != Some(relu_id)
            || !supports_fused_relu(g, p)
            || dead[p.index()]
        {
            continue;
        }
        dead[relu_id.index()] = true;
        fusions.push((p, relu_id, relu));
    }
    let count = fusions.len();
    for (p, relu_id, relu) in fusions {
        let (name, out) = {
            let n = g.node(relu_id);
            (n.name.clone(), n.outputs[0])
        };
        let node = g.node_mut(p);
        let limit = match (node.relu.and_then(|r| r.limit), relu.limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        node.relu = Some(FusedRelu { limit });
        node.name = name;
        node.outputs = vec![out];
    }
    sweep(g, &dead);
    count
}

/// `Mul(x, Sigmoid(x))` becomes `SiLU(x)` in place of the Mul, when the
/// Sigmoid's output is read only by the Mul (`Mul.cpp: MulToSiLU`).
pub(super) fn silu(g: &mut Graph) -> usize {
    let r = Readers::new(g);
    let mut dead = vec![false; g.node_count()];
    let mut rewrites = Vec::new();
    for (mul_id, mul) in g.nodes() {
        if !matches!(mul.op, Op::Mul) || mul.relu.is_some() {
            continue;
        }
        let (Some(a), Some(b)) = (input(mul, 0), input(mul, 1)) else {
            continue;
        };
        let sig_of = |s: ValueId, x: ValueId| -> Option<NodeId> {
            let (sid, sn) = producer(g, Some(s))?;
            (matches!(sn.op, Op::Sigmoid)
                && sn.relu.is_none()
                && input(sn, 0) == Some(x)
                && r.only_reader(s) == Some(mul_id)
                && !dead[sid.index()])
            .then_some(sid)
        };
        let found = sig_of(b, a).map(|s| (s, a)).or_else(|| sig_of(a, b).map(|s| (s, b)));
        if let Some((sid, x)) = found {
            dead[sid.index()] = true;
            rewrites.push((mul_id, x));
        }
    }
    let count = rewrites.len();
    for (mul_id, x) in rewrites {
        let node = g.node_mut(mul_id);
        node.op = Op::SiLU;
        node.inputs = vec![Some(x)];
    }
    sweep(g, &dead);
    count
}

/// A MatMul with a constant 2-D right operand and no bias, read only by an
/// Add of a constant with one value per output column, becomes one MatMul
/// with that bias in place of the Add (`MatMul.cpp: MatMulWithBias`).
pub(super) fn matmul_bias(g: &mut Graph) -> usize {
    let r = Readers::new(g);
    let mut dead = vec![false; g.node_count()];
    let mut rewrites = Vec::new();
    for (mm_id, mm) in g.nodes() {
        if !matches!(mm.op, Op::MatMul) || mm.inputs.len() > 2 || mm.relu.is_some() {
            continue;
        }
        let (Some(a), Some(w)) = (input(mm, 0), input(mm, 1)) else {
            continue;
        };
        let Some(wt) = g.constant_of(w) else { continue };
        let [_, cols] = *wt.dims() else { continue };
        let y = mm.outputs[0];
        let Some(add_id) = r.only_reader(y) else {
            continue;
        };
        let add = g.node(add_id);
        if !matches!(add.op, Op::Add) || add.relu.is_some() {
            continue;
        }
        let bias = if input(add, 0) == Some(y) {
            input(add, 1)
        } else {
            input(add, 0)
        };
        let Some(b) = bias.filter(|&b| b != y) else {
            continue;
        };
        let Some(bt) = g.constant_of(b) else { continue };
        // One value per column, on the last axis (a [N] or [1, .., N] bias).
        let last_only = bt.dims().last() == Some(&cols) && bt.numel() == cols;
        if !last_only {
            continue;
        }
        dead[mm_id.index()] = true;
        rewrites.push((add_id, a, w, b));
    }
    let count = rewrites.len();
    for (add_id, a, w, b) in rewrites {
        let node = g.node_mut(add_id);
        node.op = Op::MatMul;
        node.inputs = vec![Some(a), Some(w), Some(b)];
    }
    sweep(g, &dead);
    count
}

/// An Expand that does not change its input's shape disappears
/// (`Expand.cpp: ConvertExpand`).
pub(super) fn identity_expand(g: &mut Graph) -> usize {
    let mut dead = vec![false; g.node_count()];
    let mut gone = Vec::new();
    for (id, n) in g.nodes() {
        if !matches!(n.op, Op::Expand) {
            continue;
        }
        let (Some(x), Some(&y)) = (input(n, 0), n.outputs.first()) else {
            continue;
        };
        let same = matches!(
            (g.value(x).shape.as_ref(), g.value(y).shape.as_ref()),
            (Some(a), Some(b)) if a == b
        );
        if same && !g.outputs.contains(&y) {
            dead[id.index()] = true;
            gone.push((y, x));
        }
    }
    for (y, x) in &gone {
        replace_uses(g, *y, *x);
    }
    sweep(g, &dead);
    gone.len()
}
