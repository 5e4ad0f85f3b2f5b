//! Static shape and dtype inference, one node at a time. Operator parameters
//! passed as tensor inputs (Reshape's shape, Slice's starts, ...) must be
//! constants by the time the node is inferred; constant folding runs first
//! in topological order, so shape-computing subgraphs are folded before the
//! node that consumes them is inferred. Each op's rule is its family's
//! (`crate::families`, the `infer` of the op's module); this file holds the
//! context they share and the window and broadcast helpers.

use qtune_tensor::{DType, Shape};

use crate::op::*;
use crate::{Graph, IrError, Node, NodeId, ValueId};

/// The shape and dtype of one node output.
#[derive(Debug, Clone, PartialEq)]
pub struct InferredOutput {
    pub shape: Shape,
    pub dtype: DType,
}

/// The node being inferred, for the families' inference functions.
pub(crate) struct Ctx<'a> {
    pub(crate) graph: &'a Graph,
    pub(crate) node: &'a Node,
}

impl Ctx<'_> {
    pub(crate) fn op(&self) -> &'static str {
        self.node.op.op_type()
    }
    pub(crate) fn err(&self, message: impl Into<String>) -> IrError {
        IrError::BadNode {
            node: self.node.name.clone(),
            op: self.op(),
            message: message.into(),
        }
    }
    pub(crate) fn input_id(&self, i: usize) -> Result<ValueId, IrError> {
        self.node
            .inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| IrError::BadInput {
                node: self.node.name.clone(),
                op: self.op(),
                index: i,
                message: "required input is missing".into(),
            })
    }
    pub(crate) fn has_input(&self, i: usize) -> bool {
        matches!(self.node.inputs.get(i), Some(Some(_)))
    }
    pub(crate) fn shape(&self, i: usize) -> Result<Vec<usize>, IrError> {
        let id = self.input_id(i)?;
        Ok(self.graph.shape_of(id)?.0.clone())
    }
    pub(crate) fn dtype(&self, i: usize) -> Result<DType, IrError> {
        Ok(self.graph.value(self.input_id(i)?).dtype)
    }
    /// An integer parameter input that must be constant.
    pub(crate) fn const_ints(&self, i: usize) -> Result<Vec<i64>, IrError> {
        let id = self.input_id(i)?;
        let t = self
            .graph
            .constant_of(id)
            .ok_or_else(|| IrError::NotConstant {
                node: self.node.name.clone(),
                op: self.op(),
                index: i,
                value: self.graph.value(id).name.clone(),
            })?;
        t.to_i64_vec().map_err(|e| IrError::BadInput {
            node: self.node.name.clone(),
            op: self.op(),
            index: i,
            message: e.to_string(),
        })
    }
    pub(crate) fn const_floats(&self, i: usize) -> Result<Vec<f32>, IrError> {
        let id = self.input_id(i)?;
        let t = self
            .graph
            .constant_of(id)
            .ok_or_else(|| IrError::NotConstant {
                node: self.node.name.clone(),
                op: self.op(),
                index: i,
                value: self.graph.value(id).name.clone(),
            })?;
        Ok(t.to_f32_vec())
    }
    pub(crate) fn axis(&self, axis: i64, rank: usize) -> Result<usize, IrError> {
        normalize_axis(axis, rank)
            .ok_or_else(|| self.err(format!("axis {axis} is out of range for rank {rank}")))
    }
}

/// Maps a possibly negative axis into `0..rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = i64::try_from(rank).ok()?;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        usize::try_from(a).ok()
    } else {
        None
    }
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Resolved spatial geometry of a conv or pool window: per spatial axis the
/// kernel, stride, dilation and the begin/end padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads_begin: Vec<usize>,
    pub pads_end: Vec<usize>,
    pub out: Vec<usize>,
}

/// Resolves strides/pads/dilations/auto_pad of a conv or pool over the given
/// spatial input extents.
#[allow(clippy::too_many_arguments)]
pub fn resolve_window(
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    pads: &[usize],
    dilations: &[usize],
    auto_pad: AutoPad,
    ceil_mode: bool,
) -> Result<Window, String> {
    let r = input.len();
    if kernel.len() != r {
        return Err(format!(
            "kernel has {} spatial axes, input has {r}",
            kernel.len()
        ));
    }
    let pick = |v: &[usize], what: &str| -> Result<Vec<usize>, String> {
        match v.len() {
            0 => Ok(vec![1; r]),
            n if n == r => Ok(v.to_vec()),
            n => Err(format!("attribute '{what}': expected {r} values, got {n}")),
        }
    };
    let strides = pick(strides, "strides")?;
    let dilations = pick(dilations, "dilations")?;
    if strides.contains(&0) || dilations.contains(&0) {
        return Err("strides and dilations must be positive".into());
    }
    let (mut begin, mut end) = match pads.len() {
        0 => (vec![0; r], vec![0; r]),
        n if n == 2 * r => (pads[..r].to_vec(), pads[r..].to_vec()),
        n => {
            return Err(format!(
                "attribute 'pads': expected {} values, got {n}",
                2 * r
            ));
        }
    };
    let mut out = vec![0; r];
    for i in 0..r {
        let eff = dilations[i] * (kernel[i].max(1) - 1) + 1;
        match auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => {
                let o = input[i].div_ceil(strides[i]);
                let total = ((o - 1) * strides[i] + eff).saturating_sub(input[i]);
                let small = total / 2;
                if auto_pad == AutoPad::SameUpper {
                    begin[i] = small;
                    end[i] = total - small;
                } else {
                    begin[i] = total - small;
                    end[i] = small;
                }
                out[i] = o;
            }
            AutoPad::Valid | AutoPad::NotSet => {
                if auto_pad == AutoPad::Valid {
                    begin[i] = 0;
                    end[i] = 0;
                }
                let padded = input[i] + begin[i] + end[i];
                if padded < eff {
                    return Err(format!(
                        "spatial axis {i}: padded input {padded} is smaller than the kernel extent {eff}"
                    ));
                }
                let span = padded - eff;
                let mut o = if ceil_mode {
                    span.div_ceil(strides[i])
                } else {
                    span / strides[i]
                } + 1;
                // A window may not start inside the end padding only.
                if ceil_mode && (o - 1) * strides[i] >= input[i] + begin[i] {
                    o -= 1;
                }
                out[i] = o;
            }
        }
    }
    Ok(Window {
        kernel: kernel.to_vec(),
        strides,
        dilations,
        pads_begin: begin,
        pads_end: end,
        out,
    })
}

pub(crate) fn usize_of(v: i64) -> Option<usize> {
    usize::try_from(v).ok()
}

/// Infers the output shapes and dtypes of one node from its inputs. Every
/// output is checked to be allocatable (element count without overflow,
/// bytes within the machine's memory): shapes come from files, and the
/// executor allocates what is inferred here.
pub fn infer_node(graph: &Graph, id: NodeId) -> Result<Vec<InferredOutput>, IrError> {
    let outs = infer_unchecked(graph, id)?;
    let node = graph.node(id);
    for (i, o) in outs.iter().enumerate() {
        let what = || format!("output {i}");
        qtune_tensor::check_shape(&what, o.shape.dims(), o.dtype).map_err(|e| {
            IrError::BadNode {
                node: node.name.clone(),
                op: node.op.op_type(),
                message: e.to_string(),
            }
        })?;
    }
    Ok(outs)
}

fn infer_unchecked(graph: &Graph, id: NodeId) -> Result<Vec<InferredOutput>, IrError> {
    let node = graph.node(id);
    let cx = Ctx { graph, node };
    // Every op but the simulation's own is in a family (`crate::families`).
    if let Some(f) = crate::families::of(&node.op) {
        return (f.infer)(&cx);
    }
    match &node.op {
        Op::IntegerLayer(a) => one(integer_layer_shape(&cx, a)?, DType::F32),
        other => Err(cx.err(format!("internal: {} is in no op family", other.op_type()))),
    }
}

/// One output of `shape` and `dtype`.
pub(crate) fn one(shape: Vec<usize>, dtype: DType) -> Result<Vec<InferredOutput>, IrError> {
    Ok(vec![InferredOutput {
        shape: Shape(shape),
        dtype,
    }])
}

/// The output shape of [`Op::IntegerLayer`]: that of the float layer it
/// computes.
fn integer_layer_shape(cx: &Ctx, a: &IntegerLayerAttrs) -> Result<Vec<usize>, IrError> {
    let x = cx.shape(0)?;
    let w = cx.shape(1)?;
    match &a.kind {
        IntegerKind::Conv(c) => {
            if x.len() < 3 || w.len() != x.len() || x[1] != w[1] * c.group.max(1) {
                return Err(cx.err(format!(
                    "input {} and weight {} are not a convolution in {} groups",
                    Shape(x.clone()),
                    Shape(w.clone()),
                    c.group.max(1)
                )));
            }
            let win = resolve_window(
                &x[2..],
                &w[2..],
                &c.strides,
                &c.pads,
                &c.dilations,
                c.auto_pad,
                false,
            )
            .map_err(|m| cx.err(m))?;
            let mut out = vec![x[0], w[0]];
            out.extend(win.out);
            Ok(out)
        }
        IntegerKind::MatMul { transposed } => {
            let (k, m) = match (w.as_slice(), transposed) {
                ([m, k], true) | ([k, m], false) => (*k, *m),
                _ => return Err(cx.err("the weight must be 2-D")),
            };
            match x.split_last() {
                Some((&xk, lead)) if xk == k => Ok(lead.iter().copied().chain([m]).collect()),
                _ => Err(cx.err(format!(
                    "input {} does not end in the reduction length {k}",
                    Shape(x.clone())
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast_shapes(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shapes(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast_shapes(&[2, 3], &[4, 3]), None);
    }

    #[test]
    fn windows_match_onnx_formulas() {
        let w = resolve_window(
            &[224, 224],
            &[3, 3],
            &[2, 2],
            &[0, 0, 1, 1],
            &[],
            AutoPad::NotSet,
            false,
        )
        .unwrap();
        assert_eq!(w.out, vec![112, 112]);
        let w = resolve_window(&[5], &[2], &[2], &[], &[], AutoPad::NotSet, true).unwrap();
        assert_eq!(w.out, vec![3]);
        let w = resolve_window(&[7], &[3], &[2], &[], &[], AutoPad::SameUpper, false).unwrap();
        assert_eq!((w.out[0], w.pads_begin[0], w.pads_end[0]), (4, 1, 1));
        let w = resolve_window(&[10], &[3], &[1], &[], &[2], AutoPad::NotSet, false).unwrap();
        assert_eq!(w.out, vec![6]);
    }

    #[test]
    fn matmul_shapes_broadcast_batches() {
        assert_eq!(
            crate::linear::matmul_shape(&[2, 1, 3, 4], &[5, 4, 6]),
            Some(vec![2, 5, 3, 6])
        );
        assert_eq!(crate::linear::matmul_shape(&[4], &[4, 6]), Some(vec![6]));
        assert_eq!(crate::linear::matmul_shape(&[3, 4], &[5, 6]), None);
    }
}
