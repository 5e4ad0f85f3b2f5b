//! The conversions: Cast (the elements in another element type) and Shape
//! (the input's extents as int64). Everything qtune knows about them is in
//! this file, one section per concern, each called from the other crates
//! through one arm: the ONNX import and export ([`import`], [`export`]; a
//! Cast to FLOAT16 or BFLOAT16 is imported as the rounding op
//! `RoundFloat`, which the exporter writes back as the Cast pair), the Top
//! dialect ([`read_top`], [`write_top`]), shape inference ([`infer`],
//! [`shape_range`]) and evaluation ([`eval`]).

use std::sync::Arc;

use qtune_tensor::{DType, Tensor, TensorData};

use crate::eval_cx::EvalCx;
use crate::mlir::reader::TopIn;
use crate::mlir::writer::{TopOp, TopOut, mk};
use crate::mlir::{MlirAttr, MlirError, dtype_name, dtype_of_name};
use crate::onnx_node::{self, ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::{Ctx, one};
use crate::tpu::{RangeFlow, TpuChip, TpuFloat};
use crate::{FloatFormat, InferredOutput, IrError, Op};
use crate::{Graph, NodeId};

/// Whether `op` is one of the family's.
pub fn has(op: &Op) -> bool {
    matches!(op, Op::Cast { .. } | Op::Shape { .. })
}

/// The ONNX op types of the family.
pub const ONNX_OPS: [&str; 2] = ["Cast", "Shape"];

/// TPU-MLIR's Top ops for them.
pub const TOP_OPS: [&str; 2] = ["top.Cast", "top.Shape"];

/// The rows of the Top op table.
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    [
        [
            "top.Cast",
            "input",
            "to",
            "Cast",
            "qtune keeps real element types (TPU-MLIR's frontend removes ONNX Casts)",
        ],
        ["top.Shape", "input", "start, end, step", "Shape", ""],
    ]
    .into_iter()
    .map(|r| r.map(String::from))
}

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`; `crate::onnx_node`).

/// The IR op of a Cast or Shape node.
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    cx.arity(1, 1)?;
    Ok(match cx.op_type {
        "Cast" => {
            cx.check_known(&["to", "saturate"])?;
            let to = cx
                .int("to")?
                .ok_or_else(|| cx.attr_err("to", "required attribute is missing"))?;
            // Float16 / bfloat16 values are kept as float32 rounded to the
            // narrower type (the following Cast back to FLOAT is an identity).
            if to == onnx_node::ONNX_FLOAT16 {
                Op::RoundFloat(FloatFormat::F16)
            } else if to == onnx_node::ONNX_BFLOAT16 {
                Op::RoundFloat(FloatFormat::BF16)
            } else {
                let dtype = onnx_node::dtype_of_onnx(to).ok_or_else(|| {
                    cx.attr_err(
                        "to",
                        format!(
                            "element type {} is not supported (supported: FLOAT, FLOAT16, BFLOAT16, INT64, INT32, BOOL, UINT8, INT8)",
                            cx.attrs.type_name(to)
                        ),
                    )
                })?;
                Op::Cast { to: dtype }
            }
        }
        "Shape" => {
            cx.check_known(&["start", "end"])?;
            Op::Shape {
                start: cx.int_or("start", 0)?,
                end: cx.int("end")?,
            }
        }
        other => return Err(cx.node_err(format!("internal: {other} is not Cast or Shape"))),
    })
}

/// The ONNX attributes of a Cast or Shape node.
pub fn export(op: &Op, _inputs: &ExportInputs, out: &mut OnnxOut) -> Result<(), NodeError> {
    match op {
        Op::Cast { to } => out.int("to", onnx_node::onnx_of_dtype(*to)),
        Op::Shape { start, end } => {
            if *start != 0 {
                out.int("start", *start);
            }
            if let Some(e) = end {
                out.int("end", *e);
            }
        }
        other => {
            return Err(NodeError::Node {
                message: format!("internal: {} is not Cast or Shape", other.op_type()),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The Top dialect (called from the `.mlir` reader and writer).

/// The IR op of a `top.Cast` or `top.Shape`, its inputs set on `r`.
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    r.inputs = r.unary()?;
    Ok(match r.op.name.as_str() {
        "top.Cast" => {
            let to =
                r.a.str("to")
                    .and_then(dtype_of_name)
                    .or_else(|| r.result_dtype(0));
            match to {
                Some(to) => Op::Cast { to },
                None => return r.err("`top.Cast` needs a `to` attribute or a typed result"),
            }
        }
        "top.Shape" => Op::Shape {
            start: r.a.i64_or("start", 0),
            end: r.a.get("end").and_then(MlirAttr::as_i64),
        },
        other => return r.err(format!("internal: `{other}` is not read here")),
    })
}

/// The Top op of a Cast or Shape node.
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    use MlirAttr as A;
    Ok(match &w.node.op {
        Op::Cast { to } => mk(
            "top.Cast",
            w.values(1)?,
            vec![("to", A::Str(dtype_name(*to).into()))],
        ),
        Op::Shape { start, end } => {
            let mut attrs = vec![("start", A::I64(*start)), ("step", A::I64(1))];
            if let Some(e) = end {
                attrs.push(("end", A::I64(*e)));
            }
            mk("top.Shape", w.values(1)?, attrs)
        }
        other => return Err(w.err(format!("internal: {} is not written here", other.op_type()))),
    })
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

/// Resolved `[start, end)` of the Shape op's optional slicing.
pub fn shape_range(start: i64, end: Option<i64>, rank: usize) -> (usize, usize) {
    let r = i64::try_from(rank).unwrap_or(i64::MAX);
    let clamp = |v: i64| -> usize {
        let v = if v < 0 { v + r } else { v };
        usize::try_from(v.clamp(0, r)).unwrap_or(0)
    };
    (clamp(start), end.map_or(rank, clamp))
}

/// The output shape and dtype of a Cast or Shape node.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    match &cx.node.op {
        Op::Cast { to } => one(cx.shape(0)?, *to),
        Op::Shape { start, end } => {
            let x = cx.shape(0)?;
            let (s, e) = shape_range(*start, *end, x.len());
            one(vec![e.saturating_sub(s)], DType::I64)
        }
        other => Err(cx.err(format!(
            "internal: {} is not Cast or Shape",
            other.op_type()
        ))),
    }
}

// ---------------------------------------------------------------------------
// Evaluation (called from `qtune-exec`).

/// Evaluates a Cast or Shape node.
pub fn eval(cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    match &cx.node.op {
        Op::Cast { to } => {
            let x = cx.input(0)?;
            Ok(vec![cx.tensor(x.dims().to_vec(), cast(x.data(), *to))?])
        }
        Op::Shape { start, end } => {
            let dims = cx.input(0)?.dims().to_vec();
            let (s, e) = shape_range(*start, *end, dims.len());
            let v: Vec<i64> = dims[s..e]
                .iter()
                .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
                .collect();
            Ok(vec![
                cx.tensor(vec![v.len()], TensorData::I64(Arc::new(v)))?,
            ])
        }
        other => Err(cx.err(format!(
            "internal: {} is not Cast or Shape",
            other.op_type()
        ))),
    }
}

/// The elements of `data` in element type `to`, with Rust's `as` (C's)
/// conversions, as ONNX Runtime's Cast.
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn cast(data: &TensorData, to: DType) -> TensorData {
    macro_rules! conv {
        ($v:expr, $f:expr) => {{
            let f = $f;
            $v.iter().map(|&x| f(x)).collect::<Vec<_>>()
        }};
    }
    match (data, to) {
        (d, t) if d.dtype() == t => d.clone(),
        (TensorData::F32(v), DType::I64) => TensorData::I64(Arc::new(conv!(v, |x: f32| x as i64))),
        (TensorData::F32(v), DType::I32) => TensorData::I32(Arc::new(conv!(v, |x: f32| x as i32))),
        (TensorData::F32(v), DType::Bool) => {
            TensorData::Bool(Arc::new(conv!(v, |x: f32| x != 0.0)))
        }
        (TensorData::F32(v), DType::U8) => TensorData::U8(Arc::new(conv!(v, |x: f32| x as u8))),
        (TensorData::F32(v), DType::I8) => TensorData::I8(Arc::new(conv!(v, |x: f32| x as i8))),
        // The integer simulation's casts, direct (same values as through
        // i64: every i32 rounds to the same f32 either way).
        (TensorData::I32(v), DType::F32) => TensorData::F32(Arc::new(conv!(v, |x: i32| x as f32))),
        (TensorData::U8(v), DType::F32) => TensorData::F32(Arc::new(conv!(v, f32::from))),
        (TensorData::I8(v), DType::F32) => TensorData::F32(Arc::new(conv!(v, f32::from))),
        (TensorData::U8(v), DType::I32) => TensorData::I32(Arc::new(conv!(v, i32::from))),
        (TensorData::I8(v), DType::I32) => TensorData::I32(Arc::new(conv!(v, i32::from))),
        (other, to) => {
            // Integer and boolean sources go through i64.
            let wide: Vec<i64> = match other {
                TensorData::I64(v) => v.to_vec(),
                TensorData::I32(v) => conv!(v, i64::from),
                TensorData::Bool(v) => conv!(v, i64::from),
                TensorData::U8(v) => conv!(v, i64::from),
                TensorData::I8(v) => conv!(v, i64::from),
                TensorData::F32(_) => unreachable!("handled above"),
            };
            match to {
                DType::F32 => TensorData::F32(Arc::new(conv!(wide, |x: i64| x as f32))),
                DType::I64 => TensorData::I64(Arc::new(wide)),
                DType::I32 => TensorData::I32(Arc::new(conv!(wide, |x: i64| x as i32))),
                DType::Bool => TensorData::Bool(Arc::new(conv!(wide, |x: i64| x != 0))),
                DType::U8 => TensorData::U8(Arc::new(conv!(wide, |x: i64| x as u8))),
                DType::I8 => TensorData::I8(Arc::new(conv!(wide, |x: i64| x as i8))),
            }
        }
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
