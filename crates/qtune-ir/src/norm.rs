//! The normalization family: one registration per op.
//!
//! BatchNormalization and LayerNormalization scale a normalized input by a
//! learned `scale` and shift it by a `bias`: BatchNormalization per channel
//! (axis 1) with the mean and variance given as inputs (inference), which
//! makes it a per-channel affine map; LayerNormalization over the axes from
//! `axis` to the last, with the statistics computed from the input. Each is
//! one entry of the `op_family!` table below, which
//! holds what the crates need to know about it beyond its attributes:
//!
//! - its ONNX op type (the entry's name), the ONNX attributes the import
//!   knows ([`NormSpec::onnx_attrs`]; any other is an error) and its input
//!   count ([`NormSpec::onnx_inputs`]);
//! - what it normalizes over ([`NormSpec::over`]);
//! - its Top dialect op ([`NormSpec::top`]), the operands and attributes the
//!   `.mlir` reader and writer use, and the notes of the Top op table;
//! - whether TPU-MLIR's Top canonicalization fuses a following ReLU into it
//!   ([`NormSpec::fuses_relu`], the `SupportFuseRelu` trait);
//! - whether the TPU profiles keep it in float on every chip
//!   ([`NormSpec::tpu_float`]).
//!
//! From the table come [`Op::norm`], [`NORM_OPS`], [`by_onnx`], [`by_top`],
//! [`is_top`], the Top op table's rows and the pattern macro
//! [`norm_op!`](crate::norm_op). The ONNX import (attributes and arity),
//! the `.mlir` reader and writer (the Top names), the Top op table, the Top
//! canonicalization's fused-ReLU rule and the deploy plan's float rule
//! consult the registry.
//!
//! The rest of what qtune knows about each op is in this file too, one
//! section per concern, each a `match` over the family that the other
//! crates call through one arm (`norm_op!() => ...`): the ONNX import and
//! export ([`import`], [`export`], through [`crate::onnx_node`]), the Top
//! dialect ([`read_top`], which also reads TPU-MLIR's `top.Scale` as a
//! BatchNormalization, and [`write_top`]), shape inference ([`infer`]) and
//! evaluation ([`eval`]). Passes with their own rules about these ops stay
//! with the pass: the BatchNormalization fold into Conv
//! (`passes/fold_batchnorm.rs`), the calibration tuner's replay and
//! SmoothQuant's use of a LayerNorm's scale (`docs/adding-an-op.md`).

use qtune_kernels as k;
use qtune_tensor::{Shape, Tensor};

use crate::eval_cx::EvalCx;
use crate::mlir::reader::{TopIn, f32_of};
use crate::mlir::writer::{Operand, TopOp, TopOut, mk, usizes};
use crate::mlir::{MlirAttr, MlirError};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::{Ctx, one};
use crate::tpu::{KeepFloat, RangeFlow, TpuChip, TpuFloat};
use crate::{Graph, NodeId};
use crate::{InferredOutput, IrError, Op, ValueId, broadcast_shapes};

/// The axes an op normalizes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormOver {
    /// Each channel (axis 1) with its given mean and variance: at inference
    /// a per-channel affine map `x * a[c] + b[c]` (folded into a preceding
    /// Conv, replayed per element by the calibration tuner).
    ChannelGivenStatistics,
    /// The axes from the `axis` attribute to the last, statistics computed
    /// from the input.
    TrailingAxes,
}

/// Everything qtune knows about one op of the family.
#[derive(Debug)]
pub struct NormSpec {
    /// The IR and ONNX op type, the variant's name.
    pub name: &'static str,
    pub over: NormOver,
    /// The ONNX attributes the import reads (any other is rejected).
    pub onnx_attrs: &'static [&'static str],
    /// The ONNX input count, least and most.
    pub onnx_inputs: (usize, usize),
    /// TPU-MLIR's Top op for it.
    pub top: &'static str,
    /// The Top op's operands in order (`?`: may be `none`), for the table.
    pub top_operands: &'static str,
    /// The Top op's attributes qtune reads and writes, for the table.
    pub top_attrs: &'static str,
    /// Notes for the Top op table (`docs/tpu-mlir-top-ops.md`).
    pub top_notes: &'static str,
    /// TPU-MLIR's Top op has the `SupportFuseRelu` trait (`do_relu`).
    pub fuses_relu: bool,
    /// Why every TPU profile keeps it in float, if it does (spec 4).
    pub tpu_float: Option<&'static str>,
}

/// The registration of the op whose ONNX type is `onnx`, if any.
pub fn by_onnx(onnx: &str) -> Option<&'static NormSpec> {
    NORM_OPS.iter().find(|s| s.name == onnx)
}

/// The registration for Top op `top`, if any.
pub fn by_top(top: &str) -> Option<&'static NormSpec> {
    NORM_OPS.iter().find(|s| s.top == top)
}

/// Whether `top` is the Top op of a registered normalization op.
pub fn is_top(top: &str) -> bool {
    by_top(top).is_some()
}

/// One row of the Top op table per op.
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    NORM_OPS
        .iter()
        .map(|s| [s.top, s.top_operands, s.top_attrs, s.name, s.top_notes].map(String::from))
}

// The table (`crate::family::op_family!`). Each entry: `Variant => { fields }`,
// the fields those of [`NormSpec`] but `name`, which is the variant's.
op_family! {
    /// Every op of the normalization family.
    static NORM_OPS: [NormSpec];
    /// This op's registration, when it belongs to the normalization
    /// family.
    fn norm;
    /// A pattern matching every [`Op`] of the normalization family
    /// (generated from the registry in `qtune-ir/src/norm.rs`). Handle
    /// it through [`Op::norm`].
    macro norm_op;
    // ONNX inputs X, scale, B, mean, var; `spatial` (opsets 1-8) and
    // `training_mode` (14+) are read to refuse the forms qtune does not
    // compute, `momentum` only matters in training.
    BatchNormalization => {
        over: NormOver::ChannelGivenStatistics,
        onnx_attrs: &["epsilon", "momentum", "training_mode", "spatial"],
        onnx_inputs: (5, 5),
        top: "top.BatchNorm",
        top_operands: "input, mean, variance, gamma?, beta?",
        top_attrs: "epsilon, do_relu, relu_limit",
        top_notes: "",
        fuses_relu: true,
        tpu_float: None,
    },
    // ONNX inputs X, scale, B? (qtune also takes X alone, as
    // `top.LayerNorm` does); `stash_type` only sets the statistics'
    // precision.
    LayerNormalization => {
        over: NormOver::TrailingAxes,
        onnx_attrs: &["axis", "epsilon", "stash_type"],
        onnx_inputs: (1, 3),
        top: "top.LayerNorm",
        top_operands: "input, weight?, bias?",
        top_attrs: "axis, eps, normalized_shape",
        top_notes: "",
        fuses_relu: false,
        tpu_float: Some("LayerNorm has no int8 form"),
    },
}

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`; `crate::onnx_node`).

/// The IR op of a normalization ONNX node ([`by_onnx`]), its input count
/// and attribute names checked against its registration.
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    let spec = by_onnx(cx.op_type)
        .ok_or_else(|| cx.node_err(format!("{} is not a normalization op", cx.op_type)))?;
    let (least, most) = spec.onnx_inputs;
    cx.arity(least, most)?;
    cx.check_known(spec.onnx_attrs)?;
    Ok(match cx.op_type {
        "BatchNormalization" => {
            if cx.flag("training_mode", false)? {
                return Err(cx.attr_err(
                    "training_mode",
                    "training mode (1) is not supported; export the model for inference",
                ));
            }
            if !cx.flag("spatial", true)? {
                return Err(cx.attr_err(
                    "spatial",
                    "per-element batch normalization (0) is not supported",
                ));
            }
            cx.first_output_only = Some("training-mode statistics output");
            Op::BatchNormalization {
                epsilon: cx.float_or("epsilon", 1e-5)?,
            }
        }
        "LayerNormalization" => {
            // Only output Y: the mean and inverse deviation outputs are
            // training outputs qtune does not compute. `stash_type` only sets
            // the precision of the statistics.
            cx.first_output_only = Some("Mean and InvStdDev outputs");
            Op::LayerNormalization {
                axis: cx.int_or("axis", -1)?,
                epsilon: cx.float_or("epsilon", 1e-5)?,
            }
        }
        other => return Err(cx.node_err(format!("internal: {other} has no import"))),
    })
}

/// The ONNX attributes of a normalization node, and the scale ONNX's
/// LayerNormalization (opset 17) requires: ones over the normalized shape
/// when the node has none.
pub fn export(op: &Op, inputs: &ExportInputs, out: &mut OnnxOut) -> Result<(), NodeError> {
    match op {
        Op::BatchNormalization { epsilon } => out.float("epsilon", *epsilon),
        Op::LayerNormalization { axis, epsilon } => {
            if !inputs.present(1) {
                let dims = inputs.dims(0)?;
                let ax =
                    crate::normalize_axis(*axis, dims.len()).ok_or_else(|| NodeError::Node {
                        message: "axis out of range".into(),
                    })?;
                let inner = dims[ax..].to_vec();
                let n = inner.iter().product();
                let ones = Tensor::from_f32(inner, vec![1.0; n]).map_err(|e| NodeError::Node {
                    message: e.to_string(),
                })?;
                out.constants.push((1, "scale", ones));
            }
            out.int("axis", *axis);
            out.float("epsilon", *epsilon);
        }
        other => {
            return Err(NodeError::Node {
                message: format!("internal: {} is not a normalization op", other.op_type()),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The Top dialect (called from the `.mlir` reader and writer).

/// Whether the `.mlir` reader reads Top op `top` through [`read_top`]: the
/// family's Top ops and TPU-MLIR's `top.Scale`.
pub(crate) fn reads_top(top: &str) -> bool {
    is_top(top) || top == "top.Scale"
}

/// The IR op of a normalization Top op ([`reads_top`]), its inputs set on
/// `r`.
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    let loc = r.loc.clone();
    Ok(match r.op.name.as_str() {
        "top.BatchNorm" => {
            let x = r.req(0)?;
            let mean = r.req(1)?;
            let var = r.req(2)?;
            let c = r.b.graph.constant_of(mean).map(Tensor::numel).unwrap_or(0);
            let gamma = match r.b.operand(r.op, 3).unwrap_or(None) {
                Some(v) => v,
                None => {
                    r.b.f32_const(format!("{loc}_gamma"), vec![c], vec![1.0; c])?
                }
            };
            let beta = match r.b.operand(r.op, 4).unwrap_or(None) {
                Some(v) => v,
                None => {
                    r.b.f32_const(format!("{loc}_beta"), vec![c], vec![0.0; c])?
                }
            };
            r.inputs = vec![Some(x), Some(gamma), Some(beta), Some(mean), Some(var)];
            r.fuse_relu = r.a.bool_or("do_relu", false);
            Op::BatchNormalization {
                epsilon: f32_of(r.a.f64_or("epsilon", 1e-5)),
            }
        }
        "top.LayerNorm" => {
            r.inputs = vec![
                Some(r.req(0)?),
                r.b.operand(r.op, 1).unwrap_or(None),
                r.b.operand(r.op, 2).unwrap_or(None),
            ];
            let rank = r.b.graph.value(r.req(0)?).shape.as_ref().map(Shape::rank);
            let axis = r.a.i64_or("axis", -1);
            if let (Some(ns), Some(rank)) = (r.a.ints("normalized_shape"), rank) {
                let ax = crate::normalize_axis(axis, rank);
                if ax.is_some_and(|ax| rank - ax != ns.len()) {
                    return r.err(format!(
                        "`top.LayerNorm` normalized_shape {ns:?} does not match axis {axis} of a rank-{rank} input"
                    ));
                }
            }
            Op::LayerNormalization {
                axis,
                epsilon: f32_of(r.a.f64_or("eps", 1e-5)),
            }
        }
        "top.Scale" => {
            // `x * scale[c] + bias[c]`: a BatchNormalization with mean 0,
            // variance 1 and epsilon 0 computes exactly that (the divisor
            // is sqrt(1) = 1).
            let x = r.req(0)?;
            let scale = r.req(1)?;
            let bias = r.req(2)?;
            let c = r.b.graph.constant_of(scale).map(Tensor::numel).unwrap_or(0);
            let mut flat = |v: ValueId, what: &str| -> Result<ValueId, MlirError> {
                let Some(t) = r.b.graph.constant_of(v) else {
                    return r.err(format!("`top.Scale` {what} must be a weight"));
                };
                let data = t.to_f32_vec();
                r.b.f32_const(format!("{loc}_{what}"), vec![data.len()], data)
            };
            let gamma = flat(scale, "scale")?;
            let beta = flat(bias, "bias")?;
            let mean =
                r.b.f32_const(format!("{loc}_mean"), vec![c], vec![0.0; c])?;
            let var =
                r.b.f32_const(format!("{loc}_variance"), vec![c], vec![1.0; c])?;
            r.fuse_relu = r.a.bool_or("do_relu", false);
            r.inputs = vec![Some(x), Some(gamma), Some(beta), Some(mean), Some(var)];
            Op::BatchNormalization { epsilon: 0.0 }
        }
        other => return r.err(format!("internal: `{other}` is not a normalization Top op")),
    })
}

/// The Top op of a normalization node.
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    use MlirAttr as A;
    let top = w.node.op.norm().map_or("", |s| s.top);
    Ok(match &w.node.op {
        Op::BatchNormalization { epsilon } => mk(
            top,
            // ONNX: X, scale, B, mean, var; Top: input, mean, variance, gamma, beta.
            vec![
                Operand::Value(w.x(0)?),
                Operand::Value(w.x(3)?),
                Operand::Value(w.x(4)?),
                Operand::Value(w.x(1)?),
                Operand::Value(w.x(2)?),
            ],
            vec![
                ("epsilon", A::F64(f64::from(*epsilon))),
                ("do_relu", A::Bool(false)),
            ],
        ),
        Op::LayerNormalization { axis, epsilon } => {
            let dims = w.dims(w.x(0)?)?;
            let ax = crate::normalize_axis(*axis, dims.len())
                .ok_or_else(|| w.err("axis out of range".into()))?;
            mk(
                top,
                vec![Operand::Value(w.x(0)?), w.opt(1), w.opt(2)],
                vec![
                    (
                        "axis",
                        A::SI32(i32::try_from(ax).map_err(|_| w.err("axis out of range".into()))?),
                    ),
                    ("eps", A::F64(f64::from(*epsilon))),
                    ("normalized_shape", usizes(&dims[ax..])),
                ],
            )
        }
        other => {
            return Err(w.err(format!(
                "internal: {} is not a normalization op",
                other.op_type()
            )));
        }
    })
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

/// The output shape and dtype of a normalization node: the input's.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    if let Op::LayerNormalization { axis, .. } = &cx.node.op {
        let s = cx.shape(0)?;
        let ax = cx.axis(*axis, s.len())?;
        let normalized = &s[ax..];
        for i in [1, 2] {
            if cx.has_input(i) {
                let p = cx.shape(i)?;
                if broadcast_shapes(normalized, &p).as_deref() != Some(normalized) {
                    return Err(cx.err(format!(
                        "input {i} of shape {} does not broadcast to the normalized shape {}",
                        Shape(p),
                        Shape(normalized.to_vec())
                    )));
                }
            }
        }
    }
    one(cx.shape(0)?, cx.dtype(0)?)
}

// ---------------------------------------------------------------------------
// Evaluation (called from `qtune-exec`).

/// Evaluates a normalization node on the kernels of `qtune-kernels`.
pub fn eval(mut cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    match cx.node.op {
        Op::BatchNormalization { epsilon } => {
            let dims = cx.input(0)?.dims().to_vec();
            let (x, scale, bias) = (cx.f32_input(0)?, cx.f32_input(1)?, cx.f32_input(2)?);
            let (mean, var) = (cx.f32_input(3)?, cx.f32_input(4)?);
            let mut out = vec![0f32; x.len()];
            k::batch_norm(x, &dims, scale, bias, mean, var, epsilon, &mut out);
            cx.f32_out(dims, out)
        }
        Op::LayerNormalization { axis, epsilon } => {
            let dims = cx.input(0)?.dims().to_vec();
            let ax = crate::normalize_axis(axis, dims.len())
                .ok_or_else(|| cx.err("axis out of range"))?;
            let inner: usize = dims[ax..].iter().product();
            let param = |cx: &EvalCx, i: usize| -> Result<Option<Vec<f32>>, IrError> {
                let Some(t) = cx.opt_input(i) else {
                    return Ok(None);
                };
                let v = cx.f32_input(i)?;
                // Broadcast to the normalized shape (shape inference checked it).
                let mut full = vec![0f32; inner];
                k::expand(v, t.dims(), &dims[ax..], &mut full);
                Ok(Some(full))
            };
            let scale = param(&cx, 1)?;
            let bias = param(&cx, 2)?;
            let mut x = cx.take_f32(0)?;
            k::layer_norm_sequential_in_place(
                &mut x,
                inner,
                scale.as_deref(),
                bias.as_deref(),
                epsilon,
                cx.par,
            );
            cx.f32_out(dims, x)
        }
        ref other => Err(cx.err(format!(
            "internal: {} is not a normalization op",
            other.op_type()
        ))),
    }
}

// ---------------------------------------------------------------------------
// The TPU profiles' lowering rules (`crate::tpu`, applied by the deploy plan).

/// The entry's float rule ([`NormSpec::tpu_float`]), on every chip.
pub fn tpu_float(graph: &Graph, node: NodeId, _chip: TpuChip) -> TpuFloat {
    let why = graph.node(node).op.norm()?.tpu_float?;
    Some((KeepFloat::Profile, why))
}

/// Every normalization keeps its own range.
pub fn range_flow(_graph: &Graph, _node: NodeId, _chip: TpuChip) -> RangeFlow {
    RangeFlow::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;

    fn ops() -> [Op; 2] {
        [
            Op::BatchNormalization { epsilon: 1e-5 },
            Op::LayerNormalization {
                axis: -1,
                epsilon: 1e-5,
            },
        ]
    }

    #[test]
    fn every_entry_is_found_from_its_op() {
        let ops = ops();
        assert_eq!(ops.len(), NORM_OPS.len());
        for op in &ops {
            let spec = op.norm().unwrap_or_else(|| panic!("{op:?}"));
            assert_eq!(spec.name, op.op_type());
            assert!(matches!(op, norm_op!()));
            assert!(std::ptr::eq(by_onnx(spec.name).unwrap(), spec));
            assert!(std::ptr::eq(by_top(spec.top).unwrap(), spec));
            assert!(crate::SUPPORTED_OPS.contains(&spec.name));
            let (lo, hi) = spec.onnx_inputs;
            assert!(1 <= lo && lo <= hi, "{}", spec.name);
        }
        for op in [Op::Relu, Op::Softmax { axis: -1 }, Op::Identity] {
            assert!(op.norm().is_none(), "{op:?}");
            assert!(!matches!(op, norm_op!()));
        }
    }

    /// TPU-MLIR's Top ops: `top.BatchNorm` has `SupportFuseRelu` and an
    /// int8 form, `top.LayerNorm` neither (its lowering keeps it in float on
    /// every chip).
    #[test]
    fn the_rules_follow_tpu_mlir() {
        let bn = by_onnx("BatchNormalization").unwrap();
        let ln = by_onnx("LayerNormalization").unwrap();
        assert!(bn.fuses_relu && !ln.fuses_relu);
        assert!(bn.tpu_float.is_none() && ln.tpu_float.is_some());
        assert_eq!(bn.over, NormOver::ChannelGivenStatistics);
        assert_eq!(ln.over, NormOver::TrailingAxes);
    }

    #[test]
    fn the_top_table_has_one_row_per_op() {
        let rows: Vec<[String; 5]> = top_rows().collect();
        assert_eq!(rows.len(), NORM_OPS.len());
        for (row, spec) in rows.iter().zip(NORM_OPS) {
            assert_eq!(row[0], spec.top);
            assert_eq!(row[3], spec.name);
        }
    }
}
