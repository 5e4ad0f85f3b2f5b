//! The threshold tuner's fast path for elementwise ops (spec 3.4).
//!
//! When the op E that a tensor is tuned against computes each output element
//! from the same input element alone (BatchNormalization, Relu, Clip,
//! LeakyRelu), the candidates need not run E over whole tensors: the input
//! is cut into blocks that stay in cache, and for each block every candidate
//! is fake-quantized, put through E and compared with the reference block.
//! E is applied with the executor's own kernels (the same operations, so the
//! same bits) and the distance is fed block by block in element order
//! ([`SquaredDistance`]), so the distances are bit-identical to running E
//! alone on each fake-quantized tensor; a test checks it against that path.
#![deny(clippy::as_conversions)]

use qtune_ir::{Graph, Node, Op, ValueId};
use qtune_kernels::{Parallelism, UnaryOp, affine_in_place, batch_norm_coefficients, unary};
use qtune_quant::distance::{LANES, SquaredDistance};

use crate::fake_quant::ActivationFakeQuant;

/// Elements per block: 8 KiB of f32, a multiple of the distance's lanes.
const BLOCK: usize = 2048;
const _: () = assert!(BLOCK.is_multiple_of(LANES));

/// An op whose output element `i` is a function of input element `i` (and,
/// for BatchNormalization, of its channel).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Elementwise {
    Unary(UnaryOp),
    /// `y = x * a[c] + b[c]` over `[n, c, inner...]` (BatchNormalization).
    Affine {
        a: Vec<f32>,
        b: Vec<f32>,
    },
}

impl Elementwise {
    /// The elementwise form of `node` and its one non-constant input, if it
    /// has one.
    pub(crate) fn of(graph: &Graph, node: &Node) -> Option<(Elementwise, ValueId)> {
        let input = (*node.inputs.first()?)?;
        // A fused Relu is a second step this form does not apply: such ops
        // take the general path.
        if graph.constant_of(input).is_some() || node.outputs.len() != 1 || node.relu.is_some() {
            return None;
        }
        let constant = |i: usize| -> Option<&[f32]> {
            let v = (*node.inputs.get(i)?)?;
            graph.constant_of(v)?.as_f32().ok()
        };
        // Every other input must be a constant this form reads.
        let others_constant = node.inputs[1..]
            .iter()
            .flatten()
            .all(|&v| graph.constant_of(v).is_some());
        if !others_constant {
            return None;
        }
        let e = match &node.op {
            Op::Relu => Elementwise::Unary(UnaryOp::Relu),
            Op::LeakyRelu { alpha } => Elementwise::Unary(UnaryOp::LeakyRelu { alpha: *alpha }),
            Op::Clip(a) => {
                let bound = |attr: Option<f32>, i: usize| -> Option<Option<f32>> {
                    match (attr, node.inputs.get(i).copied().flatten()) {
                        (Some(v), _) => Some(Some(v)),
                        (None, None) => Some(None),
                        (None, Some(_)) => constant(i)?.first().map(|&v| Some(v)),
                    }
                };
                Elementwise::Unary(UnaryOp::Clip {
                    lo: bound(a.min, 1)?.unwrap_or(f32::NEG_INFINITY),
                    hi: bound(a.max, 2)?.unwrap_or(f32::INFINITY),
                })
            }
            Op::BatchNormalization { epsilon } => {
                let (scale, bias) = (constant(1)?, constant(2)?);
                let (mean, var) = (constant(3)?, constant(4)?);
                let c = scale.len();
                if [bias.len(), mean.len(), var.len()] != [c, c, c] {
                    return None;
                }
                let (a, b) = (0..c)
                    .map(|ch| {
                        batch_norm_coefficients(scale[ch], bias[ch], mean[ch], var[ch], *epsilon)
                    })
                    .unzip();
                Elementwise::Affine { a, b }
            }
            _ => return None,
        };
        Some((e, input))
    }

    /// Whether this form applies to an input of `dims`.
    pub(crate) fn fits(&self, dims: &[usize]) -> bool {
        match self {
            Elementwise::Unary(_) => true,
            Elementwise::Affine { a, .. } => dims.len() >= 2 && dims[1] == a.len(),
        }
    }

    /// Applies the op in place to `x`, the elements `start..start + x.len()`
    /// of a tensor of `dims`.
    fn apply(&self, x: &mut [f32], start: usize, dims: &[usize]) {
        match self {
            Elementwise::Unary(op) => unary(*op, x, Parallelism::Sequential),
            Elementwise::Affine { a, b } => {
                let inner: usize = dims[2..].iter().product::<usize>().max(1);
                let mut i = 0;
                while i < x.len() {
                    let g = start + i;
                    let ch = (g / inner) % a.len();
                    let end = (i + inner - g % inner).min(x.len());
                    affine_in_place(&mut x[i..end], a[ch], b[ch]);
                    i = end;
                }
            }
        }
    }
}

/// `sum (reference - E(fq(x, t)))^2` for each threshold `t`, in the order
/// of [`qtune_quant::distance::squared_distance`]: the same values as
/// fake-quantizing `x`, running E on it and taking that distance.
///
/// # Panics
/// When `x` and `reference` differ in length or `dims` does not describe them.
pub(crate) fn candidate_squared_distances(
    e: &Elementwise,
    x: &[f32],
    dims: &[usize],
    reference: &[f32],
    thresholds: &[f64],
) -> Vec<f64> {
    assert_eq!(x.len(), reference.len(), "elementwise tuning: lengths");
    assert_eq!(
        x.len(),
        dims.iter().product::<usize>(),
        "elementwise tuning: dims"
    );
    let fqs: Vec<ActivationFakeQuant> = thresholds
        .iter()
        .map(|&t| ActivationFakeQuant::new(t))
        .collect();
    let mut sums = vec![SquaredDistance::default(); thresholds.len()];
    let mut buf = [0.0f32; BLOCK];
    let mut wide = [0.0f64; BLOCK];
    for (b, (xb, rb)) in x.chunks(BLOCK).zip(reference.chunks(BLOCK)).enumerate() {
        let out = &mut buf[..xb.len()];
        // The reference block widened once for all the candidates.
        let r64 = &mut wide[..rb.len()];
        for (w, &v) in r64.iter_mut().zip(rb) {
            *w = f64::from(v);
        }
        for (sum, fq) in sums.iter_mut().zip(&fqs) {
            fq.apply(xb, out);
            e.apply(out, b * BLOCK, dims);
            sum.add_widened(r64, out);
        }
    }
    sums.iter().map(SquaredDistance::total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_quant::fake_quant_activation_into;
    use qtune_exec::{Executor, Keep, NoHook, RunOptions};
    use qtune_ir::ClipAttrs;
    use qtune_quant::distance::squared_distance;
    use qtune_tensor::{DType, Tensor};

    /// A one-node graph of `op` over an input of `dims`, with the given
    /// constant inputs after it.
    fn one_node(op: Op, dims: &[usize], constants: Vec<Tensor>) -> (Graph, ValueId, ValueId) {
        let mut g = Graph::new("t");
        let x = g.add_value("x", DType::F32, Some(dims.to_vec().into()));
        g.inputs.push(x);
        let mut inputs = vec![Some(x)];
        for (i, c) in constants.into_iter().enumerate() {
            inputs.push(Some(g.add_constant(format!("c{i}"), c)));
        }
        let y = g.add_value("y", DType::F32, Some(dims.to_vec().into()));
        g.add_node("n", op, inputs, vec![y]);
        g.outputs = vec![y];
        (g, x, y)
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..u32::try_from(n).unwrap())
            .map(|i| {
                let v = f32::from(u16::try_from((i * 7919 + seed * 104_729) % 65_521).unwrap());
                (v / 65_521.0 - 0.4) * 9.0
            })
            .collect()
    }

    #[test]
    fn fused_distances_equal_running_the_op_alone() {
        let per_channel = |c: usize, f: fn(f32) -> f32| {
            Tensor::from_f32(
                vec![c],
                (0..c)
                    .map(|i| f(f32::from(u16::try_from(i).unwrap())))
                    .collect(),
            )
            .unwrap()
        };
        let cases: Vec<(Op, Vec<usize>, Vec<Tensor>)> = vec![
            (Op::Relu, vec![1, 3, 37, 41], vec![]),
            (
                Op::Clip(ClipAttrs {
                    min: None,
                    max: None,
                }),
                vec![2, 5, 7, 7],
                vec![
                    Tensor::from_f32(Vec::<usize>::new(), vec![0.0]).unwrap(),
                    Tensor::from_f32(Vec::<usize>::new(), vec![6.0]).unwrap(),
                ],
            ),
            (Op::LeakyRelu { alpha: 0.1 }, vec![3, 1000], vec![]),
            (
                Op::BatchNormalization { epsilon: 1e-3 },
                vec![2, 6, 13, 29],
                vec![
                    per_channel(6, |i| 0.5 + i * 0.3),
                    per_channel(6, |i| i - 2.0),
                    per_channel(6, |i| 0.1 * i),
                    per_channel(6, |i| 1.0 + i * i),
                ],
            ),
            // channel planes of 1 element, and of 4096 (blocks inside a plane)
            (
                Op::BatchNormalization { epsilon: 1e-5 },
                vec![1, 5000, 1, 1],
                vec![
                    per_channel(5000, |i| 1.0 + i * 1e-3),
                    per_channel(5000, |i| i * 1e-3),
                    per_channel(5000, |_| 0.2),
                    per_channel(5000, |_| 2.0),
                ],
            ),
            (
                Op::BatchNormalization { epsilon: 1e-5 },
                vec![1, 3, 64, 64],
                vec![
                    per_channel(3, |i| 1.0 + i),
                    per_channel(3, |i| i),
                    per_channel(3, |_| 0.2),
                    per_channel(3, |_| 2.0),
                ],
            ),
        ];
        let thresholds = [0.5, 1.0, 2.5, 3.7, 5.0, 1e-30, 9.0];
        for (op, dims, constants) in cases {
            let (g, xv, yv) = one_node(op.clone(), &dims, constants);
            let (e, input) = Elementwise::of(&g, g.node(g.nodes().next().unwrap().0)).unwrap();
            assert_eq!(input, xv);
            assert!(e.fits(&dims));
            let exec = Executor::new(g).unwrap();
            let opts = RunOptions::new(Keep::Outputs, Parallelism::Sequential);
            let n = dims.iter().product();
            let x = data(n, 3);
            let run = |x: Vec<f32>| -> Vec<f32> {
                let t = Tensor::from_f32(dims.clone(), x).unwrap();
                let mut v = exec.run(vec![(xv, t)], &opts, &mut NoHook).unwrap();
                v.take(yv).unwrap().as_f32().unwrap().to_vec()
            };
            let reference = run(x.clone());
            let fused = candidate_squared_distances(&e, &x, &dims, &reference, &thresholds);
            for (&t, got) in thresholds.iter().zip(fused) {
                let mut q = Vec::new();
                fake_quant_activation_into(&x, &mut q, t);
                let want = squared_distance(&reference, &run(q));
                assert_eq!(got.to_bits(), want.to_bits(), "{op:?} {dims:?} t {t}");
            }
        }
    }

    #[test]
    fn ops_with_a_second_variable_input_are_not_elementwise() {
        let mut g = Graph::new("t");
        let x = g.add_value("x", DType::F32, Some(vec![4].into()));
        let lo = g.add_value("lo", DType::F32, Some(vec![].into()));
        g.inputs.extend([x, lo]);
        let y = g.add_value("y", DType::F32, Some(vec![4].into()));
        g.add_node(
            "n",
            Op::Clip(ClipAttrs {
                min: None,
                max: None,
            }),
            vec![Some(x), Some(lo)],
            vec![y],
        );
        let node = g.node(g.nodes().next().unwrap().0);
        assert!(Elementwise::of(&g, node).is_none());
    }
}
