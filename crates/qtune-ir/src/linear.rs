//! The weighted-layer family: one registration per op.
//!
//! Conv, ConvTranspose, Gemm and MatMul multiply their input by a weight
//! (input 1, usually a constant) and add an optional bias (input 2): they
//! are the layers int8 hardware computes on integer units, the only ones
//! the QDQ runtimes quantize, and the ones whose weights are quantized per
//! output channel. Each is one entry of the `op_family!` table below,
//! which holds what the crates need to know about it
//! beyond its own attributes:
//!
//! - its Top dialect op ([`LinearSpec::top`]: TPU-MLIR writes a Gemm as
//!   `top.MatMul` and a ConvTranspose as `top.Deconv`);
//! - the axis of its weight that runs over the output channels
//!   ([`LinearSpec::out_axis`]), for per-channel weight scales;
//! - how the TPU profiles quantize its weight ([`LinearSpec::tpu_weights`]).
//!
//! From the table come [`Op::linear`], [`LINEAR_OPS`], [`by_onnx`] and the
//! pattern macro [`linear_op!`](crate::linear_op). The deploy plan (which
//! ops QDQ runtimes quantize), the QDQ export (which ops read a weight,
//! and the axis of its scales), the integer simulation (which layers it
//! rewrites), the calibration table's output rule (spec 3.9: the walk over
//! the last layers stops after a `top.Conv` or `top.MatMul`) and the Top
//! canonicalization's fused-ReLU rule consult the registry.
//!
//! The ops' code is in this file too, one section per concern, each a
//! `match` over the family that the other crates call through one arm
//! (`linear_op!() => ...`): the ONNX import and export ([`import`],
//! [`export`], through [`crate::onnx_node`]), the Top dialect
//! ([`read_top`], [`write_top`]) and shape inference ([`infer`]).
//! Evaluation is the one concern that lives elsewhere, in the executor
//! (`qtune-exec/src/eval.rs`, `eval_conv` and its neighbours): it packs
//! each layer's weights once per model for the convolution and GEMM
//! kernels and fuses the following activation into the kernel, which are
//! the executor's plans, not the op's.

use qtune_tensor::Shape;

use crate::mlir::reader::{TopIn, f32_of};
use crate::mlir::writer::{Operand, TopOp, TopOut, mk, usizes};
use crate::mlir::{MlirAttr, MlirError};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::{Ctx, one};
use crate::tpu::{KeepFloat, RangeFlow, TpuChip, TpuFloat};
use crate::tpu::{input_rank, is_const};
use crate::{
    AutoPad, ConvAttrs, ConvTransposeAttrs, GemmAttrs, InferredOutput, IrError, Op,
    broadcast_shapes, resolve_window,
};
use crate::{Graph, NodeId};

/// How a TPU profile's int8 lowering quantizes the layer's weight
/// (spec 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpuWeights {
    /// Per output channel (BM1684X family, CV18xx; BM1684 is per tensor for
    /// every layer).
    PerChannel,
    /// Per tensor, unless `--matmul_perchannel` (TPU-MLIR's
    /// `matmul_perchannel`; its Gemms are MatMuls).
    PerTensorUnlessMatmulPerChannel,
}

/// Everything qtune knows about one op of the family.
#[derive(Debug)]
pub struct LinearSpec {
    /// The IR and ONNX op type, the variant's name.
    pub name: &'static str,
    /// TPU-MLIR's Top op for it.
    pub top: &'static str,
    pub tpu_weights: TpuWeights,
    /// The axis of a weight of rank `rank` that runs over the output
    /// channels, for this op (its attributes decide for Gemm and grouped
    /// ConvTranspose): `None` when the output channels are not one axis of
    /// the weight.
    pub out_axis: fn(op: &Op, rank: usize) -> Option<usize>,
}

/// The registration of the op whose ONNX type is `onnx`, if any.
pub fn by_onnx(onnx: &str) -> Option<&'static LinearSpec> {
    LINEAR_OPS.iter().find(|s| s.name == onnx)
}

// The table (`crate::family::op_family!`). Each entry: `Variant => { fields }`,
// the fields those of [`LinearSpec`] but `name`, which is the variant's.
op_family! {
    /// Every op of the weighted-layer family.
    static LINEAR_OPS: [LinearSpec];
    /// This op's registration, when it belongs to the weighted-layer
    /// family.
    fn linear;
    /// A pattern matching every [`Op`] of the weighted-layer family
    /// (generated from the registry in `qtune-ir/src/linear.rs`).
    /// Handle it through [`Op::linear`].
    macro linear_op;
    // OIHW: `[m, c / group, kh, kw]`.
    Conv => {
        top: "top.Conv", tpu_weights: TpuWeights::PerChannel,
        out_axis: |_, _| Some(0),
    },
    // `[c, m / group, kh, kw]`: one axis of output channels only without
    // groups.
    ConvTranspose => {
        top: "top.Deconv", tpu_weights: TpuWeights::PerChannel,
        out_axis: |op, _| match op {
            Op::ConvTranspose(a) if a.conv.group <= 1 => Some(1),
            _ => None,
        },
    },
    // B is `[k, n]`, or `[n, k]` with transB.
    Gemm => {
        top: "top.MatMul", tpu_weights: TpuWeights::PerTensorUnlessMatmulPerChannel,
        out_axis: |op, _| match op {
            Op::Gemm(a) => Some(usize::from(!a.trans_b)),
            _ => None,
        },
    },
    // B is `[.., k, n]`.
    MatMul => {
        top: "top.MatMul", tpu_weights: TpuWeights::PerTensorUnlessMatmulPerChannel,
        out_axis: |_, rank| rank.checked_sub(1).filter(|_| rank >= 2),
    },
}

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`; `crate::onnx_node`).

/// The attributes of Conv; ConvTranspose adds `output_padding` and
/// `output_shape`.
const CONV: &[&str] = &[
    "auto_pad",
    "dilations",
    "group",
    "kernel_shape",
    "pads",
    "strides",
];
fn conv_attrs(cx: &OnnxIn) -> Result<ConvAttrs, NodeError> {
    let w = cx.window(false)?;
    let rank = w
        .kernel_shape
        .len()
        .max(w.strides.len())
        .max(w.dilations.len());
    if rank > 2 {
        return Err(cx.attr_err(
            if w.kernel_shape.is_empty() {
                "strides"
            } else {
                "kernel_shape"
            },
            format!("qtune runs 1-D and 2-D convolutions; got {rank} spatial axes"),
        ));
    }
    let group = cx.int_or("group", 1)?;
    let group = usize::try_from(group)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| cx.attr_err("group", format!("expected a positive value, got {group}")))?;
    Ok(ConvAttrs {
        kernel_shape: w.kernel_shape,
        strides: w.strides,
        pads: w.pads,
        dilations: w.dilations,
        group,
        auto_pad: w.auto_pad,
    })
}

/// The IR op of a weighted-layer ONNX node ([`by_onnx`]), its attributes
/// checked.
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    Ok(match cx.op_type {
        "Conv" => {
            cx.arity(2, 3)?;
            cx.check_known(CONV)?;
            Op::Conv(conv_attrs(cx)?)
        }
        "ConvTranspose" => {
            cx.arity(2, 3)?;
            cx.check_known(&[CONV, &["output_padding", "output_shape"]].concat())?;
            let conv = conv_attrs(cx)?;
            let rank = conv.kernel_shape.len().max(conv.strides.len());
            let output_padding = cx.usizes("output_padding")?.unwrap_or_default();
            cx.check_len("output_padding", &output_padding, rank)?;
            let output_shape = cx.usizes("output_shape")?.unwrap_or_default();
            Op::ConvTranspose(ConvTransposeAttrs {
                conv,
                output_padding,
                output_shape,
            })
        }
        "Gemm" => {
            cx.arity(2, 3)?;
            cx.check_known(&["alpha", "beta", "transA", "transB"])?;
            Op::Gemm(GemmAttrs {
                alpha: cx.float_or("alpha", 1.0)?,
                beta: cx.float_or("beta", 1.0)?,
                trans_a: cx.flag("transA", false)?,
                trans_b: cx.flag("transB", false)?,
            })
        }
        "MatMul" => {
            cx.arity(2, 2)?;
            cx.check_known(&[])?;
            Op::MatMul
        }
        other => return Err(cx.node_err(format!("internal: {other} is not a weighted layer"))),
    })
}

fn conv_export(a: &ConvAttrs, out: &mut OnnxOut) -> Result<(), NodeError> {
    out.usizes("kernel_shape", &a.kernel_shape)?;
    out.usizes("strides", &a.strides)?;
    out.usizes("pads", &a.pads)?;
    out.usizes("dilations", &a.dilations)?;
    let group = i64::try_from(a.group)
        .ok()
        .filter(|&g| g > 0)
        .ok_or_else(|| NodeError::Node {
            message: format!("group is {}; expected a positive int64", a.group),
        })?;
    out.int("group", group);
    out.auto_pad(a.auto_pad);
    Ok(())
}

/// The ONNX attributes of a weighted layer.
pub fn export(op: &Op, _inputs: &ExportInputs, out: &mut OnnxOut) -> Result<(), NodeError> {
    match op {
        Op::Conv(a) => conv_export(a, out)?,
        Op::ConvTranspose(a) => {
            conv_export(&a.conv, out)?;
            out.usizes("output_padding", &a.output_padding)?;
            out.usizes("output_shape", &a.output_shape)?;
        }
        Op::Gemm(a) => {
            out.float("alpha", a.alpha);
            out.float("beta", a.beta);
            out.int("transA", i64::from(a.trans_a));
            out.int("transB", i64::from(a.trans_b));
        }
        Op::MatMul => {}
        other => {
            return Err(NodeError::Node {
                message: format!("internal: {} is not a weighted layer", other.op_type()),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The Top dialect (called from the `.mlir` reader and writer).

/// The rows of the Top op table.
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    [
        [
            "top.Conv",
            "input, filter, bias?",
            "kernel_shape, strides, pads, dilations, group, auto_pad, do_relu, relu_limit",
            "Conv",
            "1-D and 2-D",
        ],
        [
            "top.Deconv",
            "input, filter, bias?",
            "kernel_shape, strides, pads, dilations, group, output_padding, do_relu, relu_limit",
            "ConvTranspose",
            "",
        ],
        [
            "top.MatMul",
            "input, right, bias?",
            "left_transpose, right_transpose, do_relu, relu_limit",
            "Gemm (2-D) / MatMul (with its bias)",
            "output_transpose and hdim_is_batch are an error",
        ],
    ]
    .into_iter()
    .map(|r| r.map(String::from))
}

/// Whether `top` is the Top op of a weighted layer.
pub fn is_top(top: &str) -> bool {
    LINEAR_OPS.iter().any(|s| s.top == top)
}

/// The IR op of a weighted layer's Top op ([`is_top`]), its inputs set on
/// `r`: a `top.MatMul` is a Gemm when it is one (2-D, with transposes,
/// alpha, beta or a bias), else a MatMul.
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    Ok(match r.op.name.as_str() {
        "top.Conv" | "top.Deconv" => {
            let conv = ConvAttrs {
                kernel_shape: r.usizes("kernel_shape")?,
                strides: r.usizes("strides")?,
                pads: r.usizes("pads")?,
                dilations: r.usizes("dilations")?,
                group: usize::try_from(r.a.i64_or("group", 1)).unwrap_or(1),
                auto_pad: r.auto_pad(),
            };
            r.inputs = vec![
                Some(r.req(0)?),
                Some(r.req(1)?),
                r.b.operand(r.op, 2).unwrap_or(None),
            ];
            r.fuse_relu = r.a.bool_or("do_relu", false);
            if r.op.name == "top.Deconv" {
                Op::ConvTranspose(ConvTransposeAttrs {
                    conv,
                    output_padding: r.usizes("output_padding")?,
                    output_shape: r.usizes("output_shape")?,
                })
            } else {
                Op::Conv(conv)
            }
        }
        "top.MatMul" => {
            let lhs = r.req(0)?;
            let rhs = r.req(1)?;
            let bias = r.b.operand(r.op, 2).unwrap_or(None);
            r.fuse_relu = r.a.bool_or("do_relu", false);
            let trans_a = r.a.bool_or("left_transpose", false);
            let trans_b = r.a.bool_or("right_transpose", false);
            let is_gemm = bias.is_some()
                || trans_a
                || trans_b
                || r.a.get("alpha").is_some()
                || r.a.get("beta").is_some();
            let lhs_rank = r.b.graph.value(lhs).shape.as_ref().map(Shape::rank);
            if r.a.bool_or("output_transpose", false) || r.a.bool_or("hdim_is_batch", false) {
                return r
                    .err("`top.MatMul` with output_transpose or hdim_is_batch is not supported");
            }
            if is_gemm && lhs_rank == Some(2) {
                r.inputs = vec![Some(lhs), Some(rhs), bias];
                Op::Gemm(GemmAttrs {
                    alpha: f32_of(r.a.f64_or("alpha", 1.0)),
                    beta: f32_of(r.a.f64_or("beta", 1.0)),
                    trans_a,
                    trans_b,
                })
            } else if trans_a || trans_b {
                return r.err("`top.MatMul` with transposes needs a 2-D left operand");
            } else {
                // A batched MatMul keeps its bias as a third input.
                r.inputs = vec![Some(lhs), Some(rhs), bias];
                if bias.is_none() {
                    r.inputs.pop();
                }
                Op::MatMul
            }
        }
        other => return r.err(format!("internal: `{other}` is not a weighted layer")),
    })
}

/// The Top op of a weighted layer.
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    use MlirAttr as A;
    Ok(match &w.node.op {
        Op::Conv(a) | Op::ConvTranspose(crate::ConvTransposeAttrs { conv: a, .. }) => {
            let mut attrs = vec![
                ("kernel_shape", usizes(&a.kernel_shape)),
                ("strides", usizes(&a.strides)),
                ("pads", usizes(&a.pads)),
                ("dilations", usizes(&a.dilations)),
                ("group", A::I64(i64::try_from(a.group).unwrap_or(1))),
                ("do_relu", A::Bool(false)),
            ];
            if a.auto_pad != AutoPad::NotSet {
                attrs.push(("auto_pad", A::Str(a.auto_pad.name().into())));
            }
            let name = if let Op::ConvTranspose(t) = &w.node.op {
                attrs.push(("output_padding", usizes(&t.output_padding)));
                if !t.output_shape.is_empty() {
                    attrs.push(("output_shape", usizes(&t.output_shape)));
                }
                "top.Deconv"
            } else {
                "top.Conv"
            };
            mk(
                name,
                vec![Operand::Value(w.x(0)?), Operand::Value(w.x(1)?), w.opt(2)],
                attrs,
            )
        }
        Op::Gemm(a) => {
            // TPU-MLIR bakes transB, alpha and beta into `_fix` weights; that
            // changes the arithmetic, so they stay attributes here.
            let mut attrs = vec![
                ("left_transpose", A::Bool(a.trans_a)),
                ("right_transpose", A::Bool(a.trans_b)),
                ("do_relu", A::Bool(false)),
            ];
            if a.alpha != 1.0 {
                attrs.push(("alpha", A::F64(f64::from(a.alpha))));
            }
            if a.beta != 1.0 {
                attrs.push(("beta", A::F64(f64::from(a.beta))));
            }
            mk(
                "top.MatMul",
                vec![Operand::Value(w.x(0)?), Operand::Value(w.x(1)?), w.opt(2)],
                attrs,
            )
        }
        Op::MatMul => mk(
            "top.MatMul",
            vec![Operand::Value(w.x(0)?), Operand::Value(w.x(1)?), w.opt(2)],
            vec![("do_relu", A::Bool(false))],
        ),
        other => {
            return Err(w.err(format!(
                "internal: {} is not a weighted layer",
                other.op_type()
            )));
        }
    })
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

/// The output shape of a weighted layer.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    match &cx.node.op {
        Op::Conv(a) => {
            let x = cx.shape(0)?;
            let w = cx.shape(1)?;
            if x.len() < 3 || w.len() != x.len() {
                return Err(cx.err(format!(
                    "input rank {} and weight rank {} are not a supported conv",
                    x.len(),
                    w.len()
                )));
            }
            let group = a.group.max(1);
            if x[1] != w[1] * group {
                return Err(cx.err(format!(
                    "input has {} channels, weight expects {} x group {group}",
                    x[1], w[1]
                )));
            }
            let kernel = if a.kernel_shape.is_empty() {
                w[2..].to_vec()
            } else {
                a.kernel_shape.clone()
            };
            let win = resolve_window(
                &x[2..],
                &kernel,
                &a.strides,
                &a.pads,
                &a.dilations,
                a.auto_pad,
                false,
            )
            .map_err(|m| cx.err(m))?;
            let mut out = vec![x[0], w[0]];
            out.extend(win.out);
            one(out, cx.dtype(0)?)
        }
        Op::ConvTranspose(a) => {
            let x = cx.shape(0)?;
            let w = cx.shape(1)?;
            if x.len() < 3 || w.len() != x.len() {
                return Err(cx.err("unsupported input or weight rank"));
            }
            let r = x.len() - 2;
            let group = a.conv.group.max(1);
            let kernel = if a.conv.kernel_shape.is_empty() {
                w[2..].to_vec()
            } else {
                a.conv.kernel_shape.clone()
            };
            let strides = if a.conv.strides.is_empty() {
                vec![1; r]
            } else {
                a.conv.strides.clone()
            };
            let dil = if a.conv.dilations.is_empty() {
                vec![1; r]
            } else {
                a.conv.dilations.clone()
            };
            let pads = if a.conv.pads.is_empty() {
                vec![0; 2 * r]
            } else {
                a.conv.pads.clone()
            };
            let opad = if a.output_padding.is_empty() {
                vec![0; r]
            } else {
                a.output_padding.clone()
            };
            if strides.len() != r
                || dil.len() != r
                || pads.len() != 2 * r
                || opad.len() != r
                || kernel.len() != r
            {
                return Err(cx.err("attribute lengths do not match the spatial rank"));
            }
            let mut out = vec![x[0], w[1] * group];
            if !a.output_shape.is_empty() {
                let tail = &a.output_shape[a.output_shape.len().saturating_sub(r)..];
                out.extend_from_slice(tail);
            } else {
                for i in 0..r {
                    let full = strides[i] * (x[2 + i] - 1) + opad[i] + (kernel[i] - 1) * dil[i] + 1;
                    let o = full
                        .checked_sub(pads[i] + pads[r + i])
                        .ok_or_else(|| cx.err("pads larger than the output"))?;
                    out.push(o);
                }
            }
            one(out, cx.dtype(0)?)
        }
        Op::Gemm(a) => {
            let sa = cx.shape(0)?;
            let sb = cx.shape(1)?;
            if sa.len() != 2 || sb.len() != 2 {
                return Err(cx.err(format!(
                    "Gemm needs 2-D inputs, got ranks {} and {}",
                    sa.len(),
                    sb.len()
                )));
            }
            let (m, k) = if a.trans_a {
                (sa[1], sa[0])
            } else {
                (sa[0], sa[1])
            };
            let (k2, n) = if a.trans_b {
                (sb[1], sb[0])
            } else {
                (sb[0], sb[1])
            };
            if k != k2 {
                return Err(cx.err(format!("inner dimensions differ: {k} and {k2}")));
            }
            one(vec![m, n], cx.dtype(0)?)
        }
        Op::MatMul => {
            let a = cx.shape(0)?;
            let b = cx.shape(1)?;
            let out = matmul_shape(&a, &b).ok_or_else(|| {
                cx.err(format!(
                    "shapes {} and {} cannot be multiplied",
                    Shape(a.clone()),
                    Shape(b.clone())
                ))
            })?;
            // The optional bias (qtune's fused MatMul + Add) runs along the
            // last axis and must not change the output shape.
            if cx.has_input(2) {
                let bias = cx.shape(2)?;
                if broadcast_shapes(&out, &bias).as_deref() != Some(out.as_slice()) {
                    return Err(cx.err(format!(
                        "bias of shape {} does not broadcast to the output {}",
                        Shape(bias),
                        Shape(out)
                    )));
                }
            }
            one(out, cx.dtype(0)?)
        }
        other => Err(cx.err(format!(
            "internal: {} is not a weighted layer",
            other.op_type()
        ))),
    }
}

/// The output shape of a MatMul of `a` and `b` (numpy's matmul: 1-D
/// operands promoted, batch axes broadcast).
pub(crate) fn matmul_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != k2 {
        return None;
    }
    let mut out = broadcast_shapes(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// The TPU profiles' lowering rules (`crate::tpu`, applied by the deploy plan).

/// Whether the layer's weight (input 1) is a constant; a Conv over a
/// computed filter is no weighted layer to the chips or the runtimes.
pub fn has_constant_weight(graph: &Graph, node: NodeId) -> bool {
    !matches!(graph.node(node).op, Op::Conv(_) | Op::ConvTranspose(_)) || is_const(graph, node, 1)
}

/// A convolution over a computed filter, and the MatMul forms a chip has
/// no int8 kernel for, stay in float.
pub fn tpu_float(graph: &Graph, node: NodeId, chip: TpuChip) -> TpuFloat {
    let matmul = matches!(graph.node(node).op, Op::MatMul);
    if !has_constant_weight(graph, node) {
        let keep = match chip {
            TpuChip::Cv18xx => KeepFloat::Profile,
            TpuChip::Bm1684x | TpuChip::Bm1684 => KeepFloat::F32,
        };
        return Some((keep, "Conv with a non-constant filter"));
    }
    match chip {
        TpuChip::Bm1684x => (matmul && is_const(graph, node, 0))
            .then_some((KeepFloat::Profile, "MatMul with a constant left operand")),
        TpuChip::Bm1684 => {
            (matmul && !(input_rank(graph, node, 0) == 2 && is_const(graph, node, 1))).then_some((
                KeepFloat::F32,
                "MatMul other than a 2-D fully connected layer",
            ))
        }
        TpuChip::Cv18xx => (matmul && !is_const(graph, node, 0) && !is_const(graph, node, 1))
            .then_some((KeepFloat::Profile, "MatMul of two activations")),
    }
}

/// Every weighted layer keeps its own range.
pub fn range_flow(_graph: &Graph, _node: NodeId, _chip: TpuChip) -> RangeFlow {
    RangeFlow::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConvAttrs, ConvTransposeAttrs, GemmAttrs};

    fn conv_transpose(group: usize) -> Op {
        Op::ConvTranspose(ConvTransposeAttrs {
            conv: ConvAttrs {
                group,
                ..Default::default()
            },
            ..Default::default()
        })
    }

    fn gemm(trans_b: bool) -> Op {
        Op::Gemm(GemmAttrs {
            trans_b,
            ..Default::default()
        })
    }

    #[test]
    fn every_entry_is_found_from_its_op() {
        let ops = [
            Op::Conv(ConvAttrs::default()),
            conv_transpose(1),
            gemm(false),
            Op::MatMul,
        ];
        assert_eq!(ops.len(), LINEAR_OPS.len());
        for op in &ops {
            let spec = op.linear().unwrap_or_else(|| panic!("{op:?}"));
            assert_eq!(spec.name, op.op_type());
            assert!(matches!(op, linear_op!()));
            assert!(std::ptr::eq(by_onnx(spec.name).unwrap(), spec));
            assert!(crate::SUPPORTED_OPS.contains(&spec.name));
        }
        for op in [Op::Relu, Op::Add, Op::Identity] {
            assert!(op.linear().is_none(), "{op:?}");
            assert!(!matches!(op, linear_op!()));
        }
    }

    /// The output-channel axis against the ONNX weight layouts, on shapes
    /// whose output-channel count differs from every other dimension.
    #[test]
    fn out_axis_finds_the_output_channels() {
        // (op, weight dims, output channels)
        let cases: [(Op, Vec<usize>, Option<usize>); 7] = [
            (Op::Conv(ConvAttrs::default()), vec![7, 3, 3, 3], Some(7)),
            (conv_transpose(1), vec![3, 7, 2, 2], Some(7)),
            (conv_transpose(3), vec![3, 2, 2, 2], None),
            (gemm(false), vec![5, 7], Some(7)),
            (gemm(true), vec![7, 5], Some(7)),
            (Op::MatMul, vec![5, 7], Some(7)),
            (Op::MatMul, vec![4, 5, 7], Some(7)),
        ];
        for (op, dims, m) in cases {
            let spec = op.linear().unwrap();
            let axis = (spec.out_axis)(&op, dims.len());
            assert_eq!(axis.map(|a| dims[a]), m, "{op:?} {dims:?}");
        }
        assert_eq!(
            (Op::MatMul.linear().unwrap().out_axis)(&Op::MatMul, 1),
            None
        );
    }

    /// Spec 4.3: convolutions are per channel on the BM1684X family, Gemm
    /// and MatMul (TPU-MLIR's `top.MatMul`) per tensor unless
    /// `matmul_perchannel`.
    #[test]
    fn tpu_weight_grain_follows_the_top_op() {
        for s in LINEAR_OPS {
            let expected = if s.top == "top.MatMul" {
                TpuWeights::PerTensorUnlessMatmulPerChannel
            } else {
                TpuWeights::PerChannel
            };
            assert_eq!(s.tpu_weights, expected, "{}", s.name);
        }
    }
}
