//! What TPU-MLIR's ONNX converter (`OnnxConverter.py`) writes differently
//! from the ONNX node, after the ops are named: the op changes, its name
//! (`<out>_<ONNX op type>`) stays.

use qtune_tensor::{DType, Tensor};

use super::util::{add_const, broadcasts_into, i64_tensor, input, sweep, uniform_const};
use crate::{Graph, NodeId, Op};

/// What [`convert_ops`] changed.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Converted {
    pub(super) sub_div_by_const: usize,
    pub(super) pow: usize,
    pub(super) neg: usize,
    pub(super) flatten: usize,
    pub(super) split: usize,
    pub(super) scalar_consts: usize,
}

fn is_f32_out(g: &Graph, id: NodeId) -> bool {
    g.node(id)
        .outputs
        .first()
        .is_some_and(|&o| g.value(o).dtype == DType::F32)
}

/// Applies the converter's rewrites (see the module docs):
/// * `Sub(x, c)` with a uniform constant `c` becomes `Add(x, -c)`
///   (`top.AddConst`, `convert_sub_op`); `Div(x, c)` becomes `Mul(x, 1/c)`
///   (`top.MulConst`, `convert_div_op`): TPU-MLIR's chips compute these
///   forms. `x - c` and `x + (-c)` are the same number; `x / c` and `x *
///   (1/c)` may differ in the last bit.
/// * `Add` / `Mul` with a uniform constant operand take it as a
///   one-element constant on the right (`SwapInput`, `WeightToConst`), which
///   the writer prints as `top.AddConst` / `top.MulConst`.
/// * `Pow(x, 2)` becomes `Mul(x, x)` and `Pow(x, 1)` disappears
///   (`convert_pow_op`); `Neg(x)` becomes `Mul(x, -1)` (`top.MulConst`).
/// * `Flatten` becomes `Reshape` (`FlattenOp::shape_inference`).
/// * `Split` becomes one `Slice` per output, each keeping its output's name
///   (`Split.cpp: SplitToSlice`).
pub(super) fn convert_ops(g: &mut Graph) -> Converted {
    let mut done = Converted::default();
    let mut dead = vec![false; g.node_count()];
    let ids: Vec<NodeId> = g.nodes().map(|(id, _)| id).collect();
    let mut passthrough = Vec::new();
    for id in ids {
        let n = g.node(id).clone();
        let name = n.name.clone();
        match &n.op {
            Op::Sub | Op::Div | Op::Add | Op::Mul if is_f32_out(g, id) => {
                let (Some(a), Some(b)) = (input(&n, 0), input(&n, 1)) else {
                    continue;
                };
                // The constant operand becomes an attribute only when it
                // does not widen the output by broadcasting.
                let rhs = uniform_const(g, Some(b))
                    .filter(|_| g.constant_of(a).is_none() && broadcasts_into(g, a, b));
                let lhs = uniform_const(g, Some(a))
                    .filter(|_| g.constant_of(b).is_none() && broadcasts_into(g, b, a));
                let (x, c, op) = match (&n.op, rhs, lhs) {
                    (Op::Sub, Some(c), _) => (a, -c, Op::Add),
                    (Op::Div, Some(c), _) => (a, 1.0 / c, Op::Mul),
                    (Op::Add | Op::Mul, Some(c), _) => (a, c, n.op.clone()),
                    (Op::Add | Op::Mul, None, Some(c)) => (b, c, n.op.clone()),
                    _ => continue,
                };
                let already_scalar = op == n.op
                    && x == a
                    && g.constant_of(b)
                        .is_some_and(|t| t.numel() == 1 && t.dims().is_empty());
                if already_scalar {
                    continue;
                }
                let k = add_const(g, &format!("{name}_const_val"), Tensor::scalar_f32(c));
                if op == n.op {
                    done.scalar_consts += 1;
                } else {
                    done.sub_div_by_const += 1;
                }
                let node = g.node_mut(id);
                node.op = op;
                node.inputs = vec![Some(x), Some(k)];
            }
            Op::Pow if is_f32_out(g, id) => {
                let Some(x) = input(&n, 0) else { continue };
                let Some(ev) = input(&n, 1) else { continue };
                if !broadcasts_into(g, x, ev) {
                    continue;
                }
                match uniform_const(g, Some(ev)) {
                    Some(2.0) => {
                        let node = g.node_mut(id);
                        node.op = Op::Mul;
                        node.inputs = vec![Some(x), Some(x)];
                        done.pow += 1;
                    }
                    Some(e) if e == 1.0 && !g.outputs.contains(&n.outputs[0]) => {
                        passthrough.push((id, x, n.outputs[0]));
                        done.pow += 1;
                    }
                    _ => {}
                }
            }
            Op::Neg if is_f32_out(g, id) => {
                let Some(x) = input(&n, 0) else { continue };
                let k = add_const(g, &format!("{name}_const_val"), Tensor::scalar_f32(-1.0));
                let node = g.node_mut(id);
                node.op = Op::Mul;
                node.inputs = vec![Some(x), Some(k)];
                done.neg += 1;
            }
            Op::Flatten { .. } => {
                let (Some(x), Some(&o)) = (input(&n, 0), n.outputs.first()) else {
                    continue;
                };
                let Some(dims) = g.value(o).shape.as_ref().map(|s| s.dims().to_vec()) else {
                    continue;
                };
                let spec: Vec<i64> = dims
                    .iter()
                    .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
                    .collect();
                let s = add_const(g, &format!("{name}_shape"), i64_tensor(spec));
                let node = g.node_mut(id);
                node.op = Op::Reshape { allowzero: false };
                node.inputs = vec![Some(x), Some(s)];
                done.flatten += 1;
            }
            _ => {}
        }
    }
    for (id, x, out) in passthrough {
        dead[id.index()] = true;
        super::util::replace_uses(g, out, x);
    }
    sweep(g, &dead);
    done.split = split_to_slices(g);
    done
}

/// Every Split becomes one Slice per output, in the Split's place
/// (`Split.cpp: SplitToSlice`); returns how many Splits there were.
fn split_to_slices(g: &mut Graph) -> usize {
    let mut splits = Vec::new();
    for (id, n) in g.nodes() {
        let Op::Split { axis, .. } = &n.op else {
            continue;
        };
        let Some(x) = input(n, 0) else { continue };
        let Some(rank) = g.value(x).shape.as_ref().map(|s| s.rank()) else {
            continue;
        };
        let Some(ax) = crate::normalize_axis(*axis, rank) else {
            continue;
        };
        let sizes: Option<Vec<usize>> = n
            .outputs
            .iter()
            .map(|&o| {
                g.value(o)
                    .shape
                    .as_ref()
                    .and_then(|s| s.dims().get(ax).copied())
            })
            .collect();
        if let Some(sizes) = sizes {
            splits.push((id, x, ax, sizes));
        }
    }
    let count = splits.len();
    // From the last Split back, so that moving nodes after one Split does
    // not shift the ids of the Splits still to do.
    for (id, x, ax, sizes) in splits.into_iter().rev() {
        let outputs = g.node(id).outputs.clone();
        let to_i64 = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let mut start = 0usize;
        let mut new_ids = Vec::new();
        for (k, (&o, &len)) in outputs.iter().zip(&sizes).enumerate() {
            let base = g.value(o).name.clone();
            let consts = [
                ("starts", vec![to_i64(start)]),
                ("ends", vec![to_i64(start + len)]),
                ("axes", vec![to_i64(ax)]),
                ("steps", vec![1]),
            ];
            let mut inputs = vec![Some(x)];
            for (suffix, v) in consts {
                inputs.push(Some(add_const(
                    g,
                    &format!("{base}_{suffix}"),
                    i64_tensor(v),
                )));
            }
            start += len;
            if k == 0 {
                // The first Slice takes the Split's place.
                let node = g.node_mut(id);
                node.name = base;
                node.op = Op::Slice;
                node.inputs = inputs;
                node.outputs = vec![o];
            } else {
                new_ids.push(g.add_node(base, Op::Slice, inputs, vec![o]));
            }
        }
        g.move_nodes_after(&new_ids, id);
    }
    count
}
