//! The boolean ops that are not comparisons: Not and Where. Everything
//! qtune knows about them is in this file, one section per concern, each
//! called from the other crates through one arm: the ONNX import and export
//! ([`import`], [`export`]), the Top dialect ([`read_top`]: `top.Compare`
//! with mode `Not`, and `top.Where` with its constant-branch attributes;
//! [`write_top`]), shape inference ([`infer`]) and evaluation ([`eval`]).
//! The comparisons that make their booleans are the binary family's.

use std::sync::Arc;

use qtune_kernels as k;
use qtune_tensor::{DType, Tensor, TensorData};

use crate::eval_cx::EvalCx;
use crate::mlir::reader::{TopIn, f32_of};
use crate::mlir::writer::{Operand, TopOp, TopOut, mk};
use crate::mlir::{MlirAttr, MlirError};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::{Ctx, one};
use crate::tpu::{RangeFlow, TpuChip, TpuFloat};
use crate::{Graph, NodeId};
use crate::{InferredOutput, IrError, Op, broadcast_shapes};

/// Whether `op` is one of the family's.
pub fn has(op: &Op) -> bool {
    matches!(op, Op::Not | Op::Where)
}

/// The ONNX op types of the family.
pub const ONNX_OPS: [&str; 2] = ["Not", "Where"];

/// Whether the `.mlir` reader reads this Top op (with its `mode`) through
/// [`read_top`].
pub(crate) fn reads_top(top: &str, mode: Option<&str>) -> bool {
    top == "top.Where" || (top == "top.Compare" && mode == Some("Not"))
}

/// The rows of the Top op table.
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    [
        [
            "top.Compare",
            "input",
            "mode (Not)",
            "Not",
            "the binary modes are in the binary family's rows",
        ],
        [
            "top.Where",
            "cond, x?, y?",
            "x_is_const, x_const_val, y_is_const, y_const_val",
            "Where",
            "",
        ],
    ]
    .into_iter()
    .map(|r| r.map(String::from))
}

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`; `crate::onnx_node`). Neither op has
// attributes, so the export writes none.

/// The IR op of a Not or Where node.
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    cx.check_known(&[])?;
    Ok(match cx.op_type {
        "Not" => {
            cx.arity(1, 1)?;
            Op::Not
        }
        "Where" => {
            cx.arity(3, 3)?;
            Op::Where
        }
        other => return Err(cx.node_err(format!("internal: {other} is not Not or Where"))),
    })
}

/// The family has no attributes: nothing to write.
pub fn export(_op: &Op, _inputs: &ExportInputs, _out: &mut OnnxOut) -> Result<(), NodeError> {
    Ok(())
}

// ---------------------------------------------------------------------------
// The Top dialect (called from the `.mlir` reader and writer).

/// The IR op of a Top op [`reads_top`] accepts, its inputs set on `r`.
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    let loc = r.loc.clone();
    Ok(match r.op.name.as_str() {
        "top.Compare" => {
            r.inputs = r.unary()?;
            Op::Not
        }
        "top.Where" => {
            // Scalar branches may be attributes (`x_is_const`,
            // `x_const_val`) with a `none` operand.
            let mut ins = vec![Some(r.req(0)?)];
            for (i, flag, val) in [
                (1, "x_is_const", "x_const_val"),
                (2, "y_is_const", "y_const_val"),
            ] {
                if r.a.bool_or(flag, false) {
                    let c = r.b.f32_const(
                        format!("{loc}_{val}"),
                        vec![],
                        vec![f32_of(r.a.f64_or(val, 0.0))],
                    )?;
                    ins.push(Some(c));
                } else {
                    ins.push(Some(r.req(i)?));
                }
            }
            r.inputs = ins;
            Op::Where
        }
        other => return r.err(format!("internal: `{other}` is not read here")),
    })
}

/// The Top op of a Not or Where node.
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    use MlirAttr as A;
    Ok(match &w.node.op {
        Op::Where => {
            // A one-element constant branch is an attribute, as TPU-MLIR's
            // converter writes it (`x_is_const`, `x_const_val`).
            let scalar = |i: usize| {
                w.node
                    .inputs
                    .get(i)
                    .copied()
                    .flatten()
                    .and_then(|v| w.g.constant_of(v))
                    .filter(|t| t.numel() == 1 && t.dtype() == DType::F32)
                    .map(|t| t.to_f32_vec()[0])
            };
            let mut operands = vec![Operand::Value(w.x(0)?)];
            let mut attrs = Vec::new();
            for (i, is_const, val) in [
                (1, "x_is_const", "x_const_val"),
                (2, "y_is_const", "y_const_val"),
            ] {
                match scalar(i) {
                    Some(c) => {
                        operands.push(Operand::None);
                        attrs.push((is_const, A::Bool(true)));
                        attrs.push((val, A::F64(f64::from(c))));
                    }
                    None => operands.push(Operand::Value(w.x(i)?)),
                }
            }
            mk("top.Where", operands, attrs)
        }
        Op::Not => mk(
            "top.Compare",
            w.values(1)?,
            vec![("mode", A::Str("Not".into()))],
        ),
        other => return Err(w.err(format!("internal: {} is not written here", other.op_type()))),
    })
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

/// Not keeps its input's shape; Where broadcasts its three inputs.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    match &cx.node.op {
        Op::Not => one(cx.shape(0)?, cx.dtype(0)?),
        Op::Where => {
            let c = cx.shape(0)?;
            let a = cx.shape(1)?;
            let b = cx.shape(2)?;
            let out = broadcast_shapes(&c, &a)
                .and_then(|s| broadcast_shapes(&s, &b))
                .ok_or_else(|| cx.err("condition, X and Y cannot be broadcast together"))?;
            one(out, cx.dtype(1)?)
        }
        other => Err(cx.err(format!("internal: {} is not Not or Where", other.op_type()))),
    }
}

// ---------------------------------------------------------------------------
// Evaluation (called from `qtune-exec`).

/// Evaluates Not or Where.
pub fn eval(cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    match &cx.node.op {
        Op::Not => {
            let v = cx.input(0)?.as_bool().map_err(|e| cx.err(e.to_string()))?;
            let out: Vec<bool> = v.iter().map(|b| !b).collect();
            Ok(vec![cx.tensor(
                cx.input(0)?.dims().to_vec(),
                TensorData::Bool(Arc::new(out)),
            )?])
        }
        Op::Where => {
            let c = cx.input(0)?;
            let cond = c.as_bool().map_err(|e| cx.err(format!("condition: {e}")))?;
            let (x, y) = (cx.input(1)?, cx.input(2)?);
            if x.dtype() != y.dtype() {
                return Err(cx.err(format!("X is {} but Y is {}", x.dtype(), y.dtype())));
            }
            let od = cx.out_dims(0)?;
            let n: usize = od.iter().product();
            macro_rules! sel {
                ($variant:ident, $zero:expr) => {{
                    let (TensorData::$variant(a), TensorData::$variant(b)) = (x.data(), y.data())
                    else {
                        unreachable!("dtypes checked above")
                    };
                    let mut out = vec![$zero; n];
                    k::where_select(cond, c.dims(), a, x.dims(), b, y.dims(), &mut out);
                    TensorData::$variant(Arc::new(out))
                }};
            }
            let data = match x.dtype() {
                DType::F32 => sel!(F32, 0f32),
                DType::I64 => sel!(I64, 0i64),
                DType::I32 => sel!(I32, 0i32),
                DType::Bool => sel!(Bool, false),
                DType::U8 => sel!(U8, 0u8),
                DType::I8 => sel!(I8, 0i8),
            };
            Ok(vec![cx.tensor(od, data)?])
        }
        other => Err(cx.err(format!("internal: {} is not Not or Where", other.op_type()))),
    }
}
// ---------------------------------------------------------------------------
// The TPU profiles' lowering rules (`crate::tpu`, applied by the deploy plan).

/// No chip keeps these ops in float by a rule of theirs, and each keeps its
/// own range.
pub fn tpu_float(_graph: &Graph, _node: NodeId, _chip: TpuChip) -> TpuFloat {
    None
}

/// See [`tpu_float`].
pub fn range_flow(_graph: &Graph, _node: NodeId, _chip: TpuChip) -> RangeFlow {
    RangeFlow::default()
}
