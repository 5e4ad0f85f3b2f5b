//! Folds an inference BatchNormalization into the Conv that feeds it:
//! `w' = w * s`, `b' = (b - mean) * s + beta` with `s = gamma / sqrt(var + eps)`
//! per output channel. Which tensor the fused Conv writes is the caller's
//! choice ([`FoldedName`]). Only applied when the Conv output has no other
//! reader and all parameters are constants.

use qtune_tensor::Tensor;

use crate::{Graph, Op};

/// Which tensor a Conv with a folded BatchNormalization writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldedName {
    /// The BatchNormalization's output: the tensor after the pair keeps its
    /// name (what a plain run of the ONNX model calls it).
    BatchNorm,
    /// The Conv's own output, as onnx-simplifier's `fuse_bn_into_conv` does
    /// in TPU-MLIR's ONNX frontend (`block_1_project_lin_Conv`, not
    /// `..._BatchNormalization`). A BatchNormalization output that is a
    /// graph output keeps its name anyway.
    Conv,
}

/// Folds with the BatchNormalization's name kept; returns how many
/// BatchNormalization nodes were folded.
pub fn fold_batchnorm_into_conv(graph: &mut Graph) -> usize {
    fold_batchnorm_into_conv_named(graph, FoldedName::BatchNorm)
}

/// Folds every foldable BatchNormalization; the fused Conv writes the tensor
/// `name` says. Returns how many were folded.
pub fn fold_batchnorm_into_conv_named(graph: &mut Graph, name: FoldedName) -> usize {
    let uses = graph.use_counts();
    let mut folds = Vec::new();
    for (bn_id, bn) in graph.nodes() {
        let Op::BatchNormalization { epsilon } = bn.op else {
            continue;
        };
        let Some(x) = bn.inputs.first().copied().flatten() else {
            continue;
        };
        let Some(conv_id) = graph.value(x).producer else {
            continue;
        };
        let conv = graph.node(conv_id);
        if !matches!(conv.op, Op::Conv(_)) || uses[x.index()] != 1 || graph.outputs.contains(&x) {
            continue;
        }
        let params: Option<Vec<&[f32]>> = bn.inputs[1..]
            .iter()
            .map(|i| {
                i.and_then(|i| graph.constant_of(i))
                    .and_then(|t| t.as_f32().ok())
            })
            .collect();
        let Some(params) = params.filter(|p| p.len() == 4) else {
            continue;
        };
        let Some(w) = conv
            .inputs
            .get(1)
            .copied()
            .flatten()
            .and_then(|w| graph.constant_of(w))
        else {
            continue;
        };
        let Ok(wdata) = w.as_f32() else { continue };
        let m = w.dims().first().copied().unwrap_or(0);
        if params.iter().any(|p| p.len() != m) || m == 0 {
            continue;
        }
        let bias: Option<Vec<f32>> = match conv.inputs.get(2).copied().flatten() {
            Some(b) => match graph.constant_of(b).and_then(|t| t.as_f32().ok()) {
                Some(v) if v.len() == m => Some(v.to_vec()),
                _ => continue,
            },
            None => None,
        };
        let (gamma, beta, mean, var) = (params[0], params[1], params[2], params[3]);
        let per = wdata.len() / m;
        let mut new_w = wdata.to_vec();
        let mut new_b = vec![0f32; m];
        for c in 0..m {
            let s = gamma[c] / (var[c] + epsilon).sqrt();
            for v in &mut new_w[c * per..(c + 1) * per] {
                *v *= s;
            }
            let b = bias.as_ref().map_or(0.0, |b| b[c]);
            new_b[c] = (b - mean[c]) * s + beta[c];
        }
        folds.push((bn_id, conv_id, w.dims().to_vec(), new_w, new_b));
    }
    let count = folds.len();
    let mut dead = vec![false; graph.node_count()];
    for (bn_id, conv_id, wdims, new_w, new_b) in folds {
        let bn_out = graph.node(bn_id).outputs[0];
        let out_name = graph.value(bn_out).name.clone();
        let (Ok(wt), Ok(bt)) = (
            Tensor::from_f32(wdims, new_w),
            Tensor::from_f32(vec![new_b.len()], new_b),
        ) else {
            continue;
        };
        let w_id = graph.add_constant(format!("{out_name}_bn_folded_weight"), wt);
        let b_id = graph.add_constant(format!("{out_name}_bn_folded_bias"), bt);
        let conv = graph.node_mut(conv_id);
        conv.inputs.truncate(1);
        conv.inputs.push(Some(w_id));
        conv.inputs.push(Some(b_id));
        let conv_out = conv.outputs[0];
        if name == FoldedName::BatchNorm || graph.outputs.contains(&bn_out) {
            graph.node_mut(conv_id).outputs = vec![bn_out];
        } else {
            super::canonical::replace_uses(graph, bn_out, conv_out);
        }
        dead[bn_id.index()] = true;
    }
    graph.retain_nodes(|id, _| !dead[id.index()]);
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConvAttrs;
    use qtune_tensor::{DType, Shape};

    #[test]
    fn folds_and_keeps_output_name() {
        let mut g = Graph::new("t");
        let x = g.add_value("x", DType::F32, Some(Shape::new(vec![1, 1, 2, 2])));
        g.inputs.push(x);
        let w = g.add_constant(
            "w",
            Tensor::from_f32(vec![2, 1, 1, 1], vec![1.0, 2.0]).unwrap(),
        );
        let c = g.add_value("conv_out", DType::F32, None);
        g.add_node(
            "conv",
            Op::Conv(ConvAttrs {
                group: 1,
                ..Default::default()
            }),
            vec![Some(x), Some(w)],
            vec![c],
        );
        let p = |n: &str, v: Vec<f32>| g_const(n, v);
        let consts: Vec<_> = [
            p("gamma", vec![2.0, 1.0]),
            p("beta", vec![0.5, 0.0]),
            p("mean", vec![1.0, 0.0]),
            p("var", vec![3.0, 0.0]),
        ]
        .into_iter()
        .map(|(n, t)| Some(g.add_constant(n, t)))
        .collect();
        let y = g.add_value("bn_out", DType::F32, None);
        let mut inputs = vec![Some(c)];
        inputs.extend(consts);
        g.add_node(
            "bn",
            Op::BatchNormalization { epsilon: 1.0 },
            inputs,
            vec![y],
        );
        g.outputs.push(y);
        assert_eq!(fold_batchnorm_into_conv(&mut g), 1);
        assert_eq!(g.node_count(), 1);
        let conv = g.node(crate::NodeId::from_index(0));
        assert_eq!(conv.outputs, vec![y]);
        let nw = g
            .constant_of(conv.inputs[1].unwrap())
            .unwrap()
            .as_f32()
            .unwrap()
            .to_vec();
        let nb = g
            .constant_of(conv.inputs[2].unwrap())
            .unwrap()
            .as_f32()
            .unwrap()
            .to_vec();
        assert_eq!(nw, vec![1.0, 2.0]); // s = 2/sqrt(4) = 1, 1/sqrt(1) = 1
        assert_eq!(nb, vec![-0.5, 0.0]);
    }

    fn g_const(n: &str, v: Vec<f32>) -> (String, Tensor) {
        (n.to_string(), Tensor::from_f32(vec![v.len()], v).unwrap())
    }
}
