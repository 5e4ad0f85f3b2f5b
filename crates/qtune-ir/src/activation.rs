//! The activations whose attributes are not plain `f32` scalars: Softmax
//! (an axis), Gelu (an enum) and Clip (bounds that are inputs since opset
//! 11). Everything qtune knows about them is in this file: the registry
//! (the `op_family!` table below: the Top op and its row of the Top op
//! table), and one section per concern, each a `match` over the family that
//! the other crates call through one arm (`activation_op!() => ...`):
//!
//! - the ONNX import and export ([`import`], [`export`], through
//!   [`crate::onnx_node`]). Two ONNX forms are rewrites the importer and
//!   exporter make, as for the other families: a Softmax before opset 13
//!   over an axis that is not the last becomes Flatten -> Softmax ->
//!   Reshape (`qtune-onnx/src/ops.rs`), and Gelu is exported as the ONNX
//!   nodes of its pattern (`qtune-onnx/src/export.rs`, as SiLU);
//! - the Top dialect ([`read_top`], [`write_top`]): a Clip to `[0, hi]` is
//!   written as TPU-MLIR writes it, `top.Relu` with `relu_limit`, and the
//!   reader's `top.Relu` arm reads that back as a Clip;
//! - shape inference ([`infer`]) and evaluation ([`eval`]).
//!
//! - the TPU lowering's rules ([`tpu_float`], [`range_flow`]: Softmax in
//!   float where a chip has no int8 form, a Relu6-like Clip passing ranges
//!   both ways, Softmax's fixed `[0, 1]`), which the deploy plan applies.
//!
//! The executor's Conv+Clip fusion and the calibration tuner's replay stay
//! with the passes that make them.

use qtune_kernels as k;
use qtune_tensor::{DType, Tensor};

use crate::eval_cx::EvalCx;
use crate::mlir::reader::{TopIn, f32_of};
use crate::mlir::writer::{TopOp, TopOut, mk};
use crate::mlir::{MlirAttr, MlirError};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::{Ctx, one};
use crate::tpu::input_rank;
use crate::tpu::{KeepFloat, RangeFlow, TpuChip, TpuFloat};
use crate::{ClipAttrs, GeluApproximation, InferredOutput, IrError, Op};
use crate::{Graph, NodeId};

/// Everything qtune knows about one op of the family beyond its code.
#[derive(Debug)]
pub struct ActSpec {
    /// The IR and ONNX op type, the variant's name.
    pub name: &'static str,
    /// TPU-MLIR's Top op.
    pub top: &'static str,
    /// The Top op's operands (`?`: may be `none`), for the Top op table.
    pub top_operands: &'static str,
    /// The Top op's attributes the reader reads and the writer writes.
    pub top_attrs: &'static str,
    /// Notes for the Top op table (`docs/tpu-mlir-top-ops.md`).
    pub top_notes: &'static str,
}

/// The registration of the op whose ONNX type is `onnx`, if any.
pub fn by_onnx(onnx: &str) -> Option<&'static ActSpec> {
    ACTIVATION_OPS.iter().find(|s| s.name == onnx)
}

/// Whether `top` is the Top op of an op of the family.
pub fn is_top(top: &str) -> bool {
    ACTIVATION_OPS.iter().any(|s| s.top == top)
}

/// One row of the Top op table per Top op, naming the IR ops it becomes.
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    crate::family::merged_top_rows(
        ACTIVATION_OPS
            .iter()
            .map(|s| [s.top, s.top_operands, s.top_attrs, s.name, s.top_notes])
            .collect(),
    )
    .into_iter()
}

// The table (`crate::family::op_family!`). Each entry: `Variant => { fields }`,
// the fields those of [`ActSpec`] but `name`, which is the variant's.
op_family! {
    /// Every op of the family.
    static ACTIVATION_OPS: [ActSpec];
    /// This op's registration, when it belongs to the family.
    fn activation;
    /// A pattern matching every [`Op`] of the family (generated from the
    /// registry in `qtune-ir/src/activation.rs`): a `match` arm
    /// `activation_op!() => ...` keeps the match exhaustive whatever the
    /// family holds.
    macro activation_op;
    Softmax => {
        top: "top.Softmax", top_operands: "input", top_attrs: "axis, beta (1), log",
        top_notes: "",
    },
    LogSoftmax => {
        top: "top.Softmax", top_operands: "input", top_attrs: "axis, beta (1), log",
        top_notes: "log = true is LogSoftmax",
    },
    Gelu => {
        top: "top.GELU", top_operands: "input", top_attrs: "approx_mode (normal, tanh)",
        top_notes: "approx_mode absent is the erf form",
    },
    Clip => {
        top: "top.Clip", top_operands: "input", top_attrs: "min, max", top_notes: "",
    },
}

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`; `crate::onnx_node`).

/// The IR op of an ONNX node of the family ([`by_onnx`]), its attributes
/// checked.
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    Ok(match cx.op_type {
        "Gelu" => {
            cx.arity(1, 1)?;
            cx.check_known(&["approximate"])?;
            let approximate = match cx.string("approximate")?.as_deref().unwrap_or("none") {
                "none" => GeluApproximation::None,
                "tanh" => GeluApproximation::Tanh,
                m => {
                    return Err(
                        cx.attr_err("approximate", format!("expected none or tanh, got {m}"))
                    );
                }
            };
            Op::Gelu { approximate }
        }
        "Clip" => {
            if cx.opset < 11 {
                cx.arity(1, 1)?;
                cx.check_known(&["min", "max"])?;
                Op::Clip(ClipAttrs {
                    min: cx.float("min")?,
                    max: cx.float("max")?,
                })
            } else {
                // Opset 11 moved the bounds to optional inputs 1 and 2.
                cx.arity(1, 3)?;
                cx.check_known(&[])?;
                Op::Clip(ClipAttrs {
                    min: None,
                    max: None,
                })
            }
        }
        "Softmax" => {
            // Before opset 13 over an axis that is not the last, the
            // importer has already rewritten the node (see the module docs).
            cx.arity(1, 1)?;
            cx.check_known(&["axis"])?;
            let axis = cx.int_or("axis", if cx.opset < 13 { 1 } else { -1 })?;
            Op::Softmax { axis }
        }
        "LogSoftmax" => {
            cx.arity(1, 1)?;
            cx.check_known(&["axis"])?;
            // Before opset 13 the axis flattens the input to 2-D; that is
            // the per-axis form only over the last axis.
            let axis = cx.int_or("axis", if cx.opset < 13 { 1 } else { -1 })?;
            if cx.opset < 13 && axis != -1 {
                return Err(cx.attr_err(
                    "axis",
                    format!(
                        "LogSoftmax before opset 13 over axis {axis} flattens the input; only axis -1 is supported"
                    ),
                ));
            }
            Op::LogSoftmax { axis }
        }
        other => return Err(cx.node_err(format!("internal: {other} is not an activation"))),
    })
}

/// The ONNX attributes of a node of the family, and Clip's attribute bounds
/// as the inputs 1 and 2 of opset 11 on. Gelu is written by the exporter as
/// the nodes of its pattern (see the module docs) and never reaches here.
pub fn export(op: &Op, inputs: &ExportInputs, out: &mut OnnxOut) -> Result<(), NodeError> {
    let node_err = |message: &str| NodeError::Node {
        message: message.to_string(),
    };
    match op {
        Op::Clip(a) => {
            if a.min.is_some() || a.max.is_some() {
                if inputs.count() > 1 {
                    return Err(node_err(
                        "bounds are given both as attributes and as inputs",
                    ));
                }
                if inputs.dtype(0) != Some(DType::F32) {
                    return Err(node_err(
                        "attribute bounds are only supported for float32 input",
                    ));
                }
                for (slot, what, bound) in [(1, "min", a.min), (2, "max", a.max)] {
                    if let Some(b) = bound {
                        out.constants.push((slot, what, Tensor::scalar_f32(b)));
                    }
                }
            }
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => out.int("axis", *axis),
        other => {
            return Err(NodeError::Node {
                message: format!("internal: {} is not written here", other.op_type()),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The Top dialect (called from the `.mlir` reader and writer).

/// The IR op of a Top op of the family ([`is_top`]), its inputs set on `r`.
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    r.inputs = r.unary()?;
    Ok(match r.op.name.as_str() {
        "top.GELU" => {
            let approximate = match r.a.str("approx_mode").unwrap_or("normal") {
                "normal" => GeluApproximation::None,
                "tanh" => GeluApproximation::Tanh,
                m => {
                    return r.err(format!(
                        "`top.GELU` approx_mode `{m}` is not supported (normal, tanh)"
                    ));
                }
            };
            Op::Gelu { approximate }
        }
        "top.Clip" => Op::Clip(ClipAttrs {
            min: Some(f32_of(r.a.f64_or("min", f64::NEG_INFINITY))),
            max: Some(f32_of(r.a.f64_or("max", f64::INFINITY))),
        }),
        "top.Softmax" => {
            if r.a.f64_or("beta", 1.0) != 1.0 {
                return r.err("`top.Softmax` with beta other than 1 is not supported");
            }
            let axis = r.a.i64_or("axis", 1);
            if r.a.bool_or("log", false) {
                Op::LogSoftmax { axis }
            } else {
                Op::Softmax { axis }
            }
        }
        other => return r.err(format!("internal: `{other}` is not an activation's Top op")),
    })
}

/// The Top op of a node of the family.
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    use MlirAttr as A;
    Ok(match &w.node.op {
        Op::Clip(a) => {
            let lo = match a.min {
                Some(v) => Some(v),
                None => w.const_f32(1)?.and_then(|v| v.first().copied()),
            }
            .unwrap_or(f32::NEG_INFINITY);
            let hi = match a.max {
                Some(v) => Some(v),
                None => w.const_f32(2)?.and_then(|v| v.first().copied()),
            }
            .unwrap_or(f32::INFINITY);
            if lo == 0.0 && lo.is_sign_positive() && hi.is_finite() && hi > 0.0 {
                mk(
                    "top.Relu",
                    w.values(1)?,
                    vec![("relu_limit", A::F64(f64::from(hi)))],
                )
            } else {
                mk(
                    "top.Clip",
                    w.values(1)?,
                    vec![
                        ("min", A::F64(f64::from(lo))),
                        ("max", A::F64(f64::from(hi))),
                    ],
                )
            }
        }
        Op::Gelu { approximate } => mk(
            "top.GELU",
            w.values(1)?,
            vec![(
                "approx_mode",
                A::Str(
                    match approximate {
                        GeluApproximation::None => "normal",
                        GeluApproximation::Tanh => "tanh",
                    }
                    .into(),
                ),
            )],
        ),
        Op::Softmax { axis } | Op::LogSoftmax { axis } => mk(
            "top.Softmax",
            w.values(1)?,
            vec![
                (
                    "axis",
                    A::SI32(i32::try_from(*axis).map_err(|_| w.err("axis out of range".into()))?),
                ),
                ("beta", A::F64(1.0)),
                ("log", A::Bool(matches!(w.node.op, Op::LogSoftmax { .. }))),
            ],
        ),
        other => {
            return Err(w.err(format!(
                "internal: {} is not an activation",
                other.op_type()
            )));
        }
    })
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

/// The output shape and dtype of a node of the family: the input's.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    let s = cx.shape(0)?;
    if let Op::Softmax { axis } | Op::LogSoftmax { axis } = &cx.node.op {
        cx.axis(*axis, s.len())?;
    }
    one(s, cx.dtype(0)?)
}

// ---------------------------------------------------------------------------
// Evaluation (called from `qtune-exec`).

/// Evaluates a node of the family on the kernels of `qtune-kernels`.
pub fn eval(mut cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    match cx.node.op {
        // The exact GELU as one vector pass in the f32 sequence of the
        // pattern it was fused from and is exported as (`Div`, `Erf`, `Add`,
        // `Mul`, `Mul`): the canonical graph computes what the source ONNX
        // model and the QDQ export compute, bit for bit on qtune.
        Op::Gelu {
            approximate: GeluApproximation::None,
        } => {
            let dims = cx.input(0)?.dims().to_vec();
            let mut x = cx.take_f32(0)?;
            k::gelu(&mut x, k::GeluApproximation::Erf, cx.par);
            cx.f32_out(dims, x)
        }
        Op::Gelu {
            approximate: GeluApproximation::Tanh,
        } => cx.unary(k::UnaryOp::GeluTanh),
        Op::Clip(ref a) => {
            let lo = a.min.or(cx.scalar(1)?).unwrap_or(f32::NEG_INFINITY);
            let hi = a.max.or(cx.scalar(2)?).unwrap_or(f32::INFINITY);
            cx.unary(k::UnaryOp::Clip { lo, hi })
        }
        Op::Softmax { axis } => {
            let dims = cx.input(0)?.dims().to_vec();
            let ax = crate::normalize_axis(axis, dims.len())
                .ok_or_else(|| cx.err("axis out of range"))?;
            let mut x = cx.take_f32(0)?;
            k::softmax(&mut x, &dims, ax, cx.par);
            cx.f32_out(dims, x)
        }
        Op::LogSoftmax { axis } => {
            let dims = cx.input(0)?.dims().to_vec();
            let ax = crate::normalize_axis(axis, dims.len())
                .ok_or_else(|| cx.err("axis out of range"))?;
            let mut x = cx.take_f32(0)?;
            log_softmax(&mut x, &dims, ax);
            cx.f32_out(dims, x)
        }
        ref other => Err(cx.err(format!(
            "internal: {} is not an activation",
            other.op_type()
        ))),
    }
}

// ---------------------------------------------------------------------------
// The TPU profiles' lowering rules (`crate::tpu`, applied by the deploy plan).

/// `Clip(0, max)` (or a Relu): TPU-MLIR's `top.Relu` with a limit.
pub fn is_relu_like(graph: &Graph, node: NodeId) -> bool {
    let n = graph.node(node);
    match &n.op {
        Op::Relu => true,
        Op::Clip(a) => {
            let lo = a.min.or_else(|| {
                n.inputs
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|v| graph.constant_of(v))
                    .map(|t| t.to_f32_vec().first().copied().unwrap_or(f32::NAN))
            });
            lo == Some(0.0)
        }
        _ => false,
    }
}

/// `x - max - ln(sum(exp(x - max)))` along axis `ax` of `x` (dims `dims`),
/// in place; the sum in f64.
fn log_softmax(x: &mut [f32], dims: &[usize], ax: usize) {
    let n = dims[ax];
    let inner: usize = dims[ax + 1..].iter().product();
    if n == 0 || inner == 0 {
        return;
    }
    for block in x.chunks_mut(n * inner) {
        for j in 0..inner {
            let at = |i: usize| i * inner + j;
            let max = (0..n)
                .map(|i| block[at(i)])
                .fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = (0..n).map(|i| f64::from(block[at(i)] - max).exp()).sum();
            #[allow(clippy::cast_possible_truncation)]
            let log_sum = sum.ln() as f32;
            for i in 0..n {
                block[at(i)] = block[at(i)] - max - log_sum;
            }
        }
    }
}

/// Softmax is float but over axis 1 on BM1684X, float on the others; a
/// Clip other than a Relu6 is float on BM1684X and CV18xx; LogSoftmax is
/// float on every chip (TPU-MLIR's int8 softmax tables do not take the
/// log).
pub fn tpu_float(graph: &Graph, node: NodeId, chip: TpuChip) -> TpuFloat {
    let n = graph.node(node);
    match (&n.op, chip) {
        (Op::Clip(_), TpuChip::Bm1684x) if !is_relu_like(graph, node) => {
            Some((KeepFloat::Profile, "Clip other than Clip(0, max)"))
        }
        (Op::Clip(_), TpuChip::Cv18xx) if !is_relu_like(graph, node) => {
            Some((KeepFloat::Profile, "Clip has no int8 form"))
        }
        (Op::Softmax { axis }, TpuChip::Bm1684x) => {
            let r = i64::try_from(input_rank(graph, node, 0)).unwrap_or(0);
            let ax = if *axis < 0 { axis + r } else { *axis };
            (ax != 1 || r > 4).then_some((KeepFloat::Profile, "Softmax not over axis 1"))
        }
        (Op::Softmax { .. }, TpuChip::Bm1684) => Some((KeepFloat::F32, "Softmax has no int8 form")),
        (Op::Softmax { .. }, TpuChip::Cv18xx) => {
            Some((KeepFloat::Profile, "Softmax has no int8 form"))
        }
        (Op::LogSoftmax { .. }, TpuChip::Bm1684) => {
            Some((KeepFloat::F32, "LogSoftmax has no int8 form"))
        }
        (Op::LogSoftmax { .. }, _) => Some((KeepFloat::Profile, "LogSoftmax has no int8 form")),
        _ => None,
    }
}

/// A Relu6-like Clip passes ranges both ways; Softmax fixes `[0, 1]`.
pub fn range_flow(graph: &Graph, node: NodeId, _chip: TpuChip) -> RangeFlow {
    match &graph.node(node).op {
        Op::Clip(_) if is_relu_like(graph, node) => RangeFlow {
            forwards: true,
            backwards: true,
            ..RangeFlow::default()
        },
        Op::Softmax { .. } => RangeFlow {
            fixed: Some((0.0, 1.0)),
            ..RangeFlow::default()
        },
        _ => RangeFlow::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_found_from_its_op() {
        let ops = [
            Op::Softmax { axis: -1 },
            Op::LogSoftmax { axis: -1 },
            Op::Gelu {
                approximate: GeluApproximation::None,
            },
            Op::Clip(ClipAttrs {
                min: None,
                max: None,
            }),
        ];
        assert_eq!(ops.len(), ACTIVATION_OPS.len());
        for op in &ops {
            let spec = op.activation().unwrap_or_else(|| panic!("{op:?}"));
            assert_eq!(spec.name, op.op_type());
            assert!(matches!(op, activation_op!()));
            assert!(std::ptr::eq(by_onnx(spec.name).unwrap(), spec));
            assert!(is_top(spec.top));
            assert!(crate::SUPPORTED_OPS.contains(&spec.name));
        }
        for op in [Op::Relu, Op::Identity, Op::Not] {
            assert!(op.activation().is_none(), "{op:?}");
        }
    }

    /// LogSoftmax against an independent f64 computation, over an inner
    /// and the last axis, with values far apart (where ln(softmax) would
    /// underflow to -inf).
    #[test]
    fn log_softmax_matches_f64_definition() {
        let dims = [2usize, 3, 4];
        let x: Vec<f32> = (0..24)
            .map(|i| ((i * 7) % 24) as f32 * 9.0 - 100.0)
            .collect();
        for ax in [1usize, 2] {
            let mut got = x.clone();
            log_softmax(&mut got, &dims, ax);
            let stride: usize = dims[ax + 1..].iter().product();
            for (p, g) in got.iter().enumerate() {
                let base = p - (p / stride % dims[ax]) * stride;
                let row: Vec<f64> = (0..dims[ax])
                    .map(|i| f64::from(x[base + i * stride]))
                    .collect();
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = row.iter().map(|v| (v - m).exp()).sum();
                let want = f64::from(x[p]) - m - sum.ln();
                assert!(g.is_finite(), "axis {ax} at {p}: {g}");
                assert!(
                    (f64::from(*g) - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "axis {ax} at {p}: {g} vs {want}"
                );
            }
        }
    }
}
