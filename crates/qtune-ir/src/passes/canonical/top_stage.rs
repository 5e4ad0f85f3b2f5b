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
            linear_op!() | pool_op!() | Op::Add | Op::Sub | Op::Mul => true,
            norm_op!() => n.op.norm().is_some_and(|s| s.fuses_relu),
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
        let Some(x) = input(relu_node, 0) else {
            continue;
        };
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
        let found = sig_of(b, a)
            .map(|s| (s, a))
            .or_else(|| sig_of(a, b).map(|s| (s, b)));
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

/// An Expand of the same rank that broadcasts becomes a Tile with the
/// Expand's name (`Expand.cpp: ConvertExpand`). A rank-growing Expand stays
/// an Expand (TPU-MLIR writes it as a Reshape then a Tile).
pub(super) fn expand_to_tile(g: &mut Graph) -> usize {
    let mut rewrites = Vec::new();
    for (id, n) in g.nodes() {
        if !matches!(n.op, Op::Expand) {
            continue;
        }
        let (Some(x), Some(&y)) = (input(n, 0), n.outputs.first()) else {
            continue;
        };
        let (Some(xs), Some(ys)) = (g.value(x).shape.as_ref(), g.value(y).shape.as_ref()) else {
            continue;
        };
        let (xs, ys) = (xs.dims(), ys.dims());
        if xs.len() != ys.len() || xs == ys {
            continue;
        }
        let reps: Option<Vec<i64>> = xs
            .iter()
            .zip(ys)
            .map(|(&a, &b)| {
                if a == b {
                    Some(1)
                } else if a == 1 {
                    i64::try_from(b).ok()
                } else {
                    None
                }
            })
            .collect();
        if let Some(reps) = reps {
            rewrites.push((id, x, reps));
        }
    }
    let count = rewrites.len();
    for (id, x, reps) in rewrites {
        let name = g.node(id).name.clone();
        let r = super::util::add_const(g, &format!("{name}_tile"), super::util::i64_tensor(reps));
        let node = g.node_mut(id);
        node.op = Op::Tile;
        node.inputs = vec![Some(x), Some(r)];
    }
    count
}

/// A Concat of `b * b` stride-`b` Slices of one 4-D tensor on the channel
/// axis, read only by a Conv, becomes `SpaceToDepth(x)` (YOLO's "Focus";
/// `Concat.cpp: ConcatToDepth2SpacePattern`, TPU-MLIR's `top.Depth2Space`
/// with `is_inversed`). SpaceToDepth orders the blocks row-major; when the
/// Concat's order differs, the Conv's filter channels are reordered to
/// match and the op is named `<concat>_r_Depth2Space`, as TPU-MLIR does.
pub(super) fn space_to_depth(g: &mut Graph) -> usize {
    let r = Readers::new(g);
    let mut dead = vec![false; g.node_count()];
    let mut rewrites = Vec::new();
    for (cat_id, cat) in g.nodes() {
        if let Some(m) = match_space_to_depth(g, &r, cat_id, cat) {
            for &s in &m.slices {
                dead[s.index()] = true;
            }
            rewrites.push(m);
        }
    }
    let count = rewrites.len();
    for m in rewrites {
        let reordered = m.order.iter().enumerate().any(|(k, &o)| k != o);
        if reordered {
            // Input-channel block order[k] of the new filter is block k of
            // the old one.
            let Some(wt) = g.constant_of(m.weight).cloned() else {
                continue;
            };
            let Ok(w) = wt.as_f32() else { continue };
            let d = wt.dims().to_vec();
            let (oc, ic, per) = (d[0], d[1], d[2..].iter().product::<usize>());
            let c = ic / m.order.len();
            let mut nw = vec![0f32; w.len()];
            for o in 0..oc {
                for (k, &dst) in m.order.iter().enumerate() {
                    for ch in 0..c {
                        let from = ((o * ic) + k * c + ch) * per;
                        let to = ((o * ic) + dst * c + ch) * per;
                        nw[to..to + per].copy_from_slice(&w[from..from + per]);
                    }
                }
            }
            let Ok(t) = qtune_tensor::Tensor::from_f32(d, nw) else {
                continue;
            };
            let base = format!("{}_filter_S2D", g.value(m.weight).name);
            let nwv = super::util::add_const(g, &base, t);
            g.node_mut(m.conv).inputs[1] = Some(nwv);
            let out = g.node(m.concat).outputs[0];
            let name = format!("{}_r_Depth2Space", g.node(m.concat).name);
            let given = g.rename_value(out, &name);
            g.node_mut(m.concat).name = given;
        }
        let node = g.node_mut(m.concat);
        node.op = Op::SpaceToDepth { blocksize: m.block };
        node.inputs = vec![Some(m.x)];
    }
    sweep(g, &dead);
    count
}

struct SpaceToDepthMatch {
    concat: NodeId,
    slices: Vec<NodeId>,
    conv: NodeId,
    weight: ValueId,
    x: ValueId,
    block: usize,
    /// For each Concat input, its row-major block index.
    order: Vec<usize>,
}

fn match_space_to_depth(
    g: &Graph,
    r: &Readers,
    cat_id: NodeId,
    cat: &crate::Node,
) -> Option<SpaceToDepthMatch> {
    let Op::Concat { axis } = cat.op else {
        return None;
    };
    let y = *cat.outputs.first()?;
    let rank = g.value(y).shape.as_ref()?.rank();
    if rank != 4 || crate::normalize_axis(axis, rank) != Some(1) || cat.relu.is_some() {
        return None;
    }
    let conv = r.only_reader(y)?;
    let cn = g.node(conv);
    let weight = input(cn, 1)?;
    if !matches!(cn.op, Op::Conv(_)) || input(cn, 0) != Some(y) || g.constant_of(weight).is_none() {
        return None;
    }
    let count = cat.inputs.len();
    let block = (1..=count).find(|b| b * b == count).filter(|&b| b > 1)?;
    let mut x = None;
    let mut slices = Vec::new();
    let mut order = Vec::new();
    for &v in &cat.inputs {
        let (sid, s) = producer(g, v)?;
        if !matches!(s.op, Op::Slice) || r.only_reader(v?) != Some(cat_id) {
            return None;
        }
        let src = input(s, 0)?;
        if *x.get_or_insert(src) != src {
            return None;
        }
        let dims = g.value(src).shape.as_ref()?.dims().to_vec();
        let plan = crate::resolve_slice(g, sid, &dims).ok()?;
        // N and C whole; H and W from an offset below the block, stride b,
        // to the end.
        let whole = |a: usize| plan[a].start == 0 && plan[a].step == 1 && plan[a].len == dims[a];
        let b = i64::try_from(block).ok()?;
        let strided = |a: usize| {
            let p = plan[a];
            p.step == b
                && (0..b).contains(&p.start)
                && p.len == dims[a] / block
                && dims[a] % block == 0
        };
        if !(whole(0) && whole(1) && strided(2) && strided(3)) {
            return None;
        }
        let (oh, ow) = (
            usize::try_from(plan[2].start).ok()?,
            usize::try_from(plan[3].start).ok()?,
        );
        order.push(oh * block + ow);
        slices.push(sid);
    }
    let mut seen = order.clone();
    seen.sort_unstable();
    seen.dedup();
    (seen.len() == count).then_some(SpaceToDepthMatch {
        concat: cat_id,
        slices,
        conv,
        weight,
        x: x?,
        block,
        order,
    })
}
