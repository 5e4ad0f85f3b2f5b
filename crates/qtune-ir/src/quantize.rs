//! The ops of a quantized graph: QuantizeLinear and DequantizeLinear (the
//! QDQ form qtune exports and reads back), and RoundFloat (float32 values
//! rounded to float16 or bfloat16, what a Cast there and back computes).
//! Everything qtune knows about them is in this file, one section per
//! concern, each called from the other crates through one arm: the ONNX
//! import and export ([`import`], [`export`]; RoundFloat comes from, and is
//! written as, the Cast pair: `crate::convert`, `qtune-onnx/src/export.rs`),
//! the Top dialect ([`write_top`]: none of them has a Top form, the Top
//! `.mlir` being the float model), shape inference ([`infer`]) and
//! evaluation ([`eval`], and [`fake_quant`] for a QuantizeLinear that the
//! executor runs fused with its DequantizeLinear).
//!
//! The integer simulation's own op, `IntegerLayer`, is not an op of any
//! file format: the deploy crate builds it (`qtune-deploy/src/sim.rs`) and
//! the executor runs it (`qtune-exec/src/integer.rs`).

use std::sync::Arc;

use qtune_kernels as k;
use qtune_tensor::{DType, Tensor, TensorData};

use crate::eval_cx::EvalCx;
use crate::mlir::MlirError;
use crate::mlir::reader::TopIn;
use crate::mlir::writer::{TopOp, TopOut};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::{Ctx, one};
use crate::tpu::{RangeFlow, TpuChip, TpuFloat};
use crate::{FloatFormat, InferredOutput, IrError, Op};
use crate::{Graph, NodeId};

/// Whether `op` is one of the family's.
pub fn has(op: &Op) -> bool {
    matches!(
        op,
        Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. } | Op::RoundFloat(_)
    )
}

/// The ONNX op types of the family.
pub const ONNX_OPS: [&str; 2] = ["QuantizeLinear", "DequantizeLinear"];

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`; `crate::onnx_node`).

/// The IR op of a QuantizeLinear or DequantizeLinear node.
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    cx.arity(2, 3)?;
    cx.check_known(&["axis", "saturate", "block_size", "output_dtype"])?;
    if cx.int_or("block_size", 0)? != 0 {
        return Err(cx.attr_err("block_size", "blocked quantization is not supported"));
    }
    let axis = cx.int_or("axis", 1)?;
    Ok(match cx.op_type {
        "QuantizeLinear" => Op::QuantizeLinear { axis },
        "DequantizeLinear" => Op::DequantizeLinear { axis },
        other => return Err(cx.node_err(format!("internal: {other} is not Q/DQ"))),
    })
}

/// The ONNX attributes of a QuantizeLinear or DequantizeLinear node.
pub fn export(op: &Op, _inputs: &ExportInputs, out: &mut OnnxOut) -> Result<(), NodeError> {
    match op {
        Op::QuantizeLinear { axis } | Op::DequantizeLinear { axis } => out.int("axis", *axis),
        other => {
            return Err(NodeError::Node {
                message: format!("internal: {} is written elsewhere", other.op_type()),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The Top dialect (called from the `.mlir` writer).

/// No Top op is a quantized-graph op (the family reads none; never called).
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    r.err("internal: no quantized-graph op is read from the Top dialect")
}

/// The error of writing a quantized op to the Top dialect.
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    Err(w.err(
        "a quantized graph has no Top-dialect form (the Top .mlir is the float model; \
         write quantized models as QDQ ONNX)"
            .into(),
    ))
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

/// The output shape and element type of a node of the family.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    match &cx.node.op {
        Op::QuantizeLinear { .. } => {
            let dtype = if cx.has_input(2) {
                cx.dtype(2)?
            } else {
                DType::U8
            };
            if !matches!(dtype, DType::I8 | DType::U8) {
                return Err(cx.err(format!(
                    "the zero point is {dtype}; only int8 and uint8 are supported"
                )));
            }
            one(cx.shape(0)?, dtype)
        }
        Op::DequantizeLinear { .. } => {
            let dtype = cx.dtype(0)?;
            if !matches!(dtype, DType::I8 | DType::U8 | DType::I32) {
                return Err(cx.err(format!(
                    "the input is {dtype}; only int8, uint8 and int32 are supported"
                )));
            }
            one(cx.shape(0)?, DType::F32)
        }
        Op::RoundFloat(_) => one(cx.shape(0)?, cx.dtype(0)?),
        other => Err(cx.err(format!(
            "internal: {} is not a quantized-graph op",
            other.op_type()
        ))),
    }
}

// ---------------------------------------------------------------------------
// Evaluation (called from `qtune-exec`).

/// The scale, zero point and blocking of a QuantizeLinear or
/// DequantizeLinear node (inputs 1 and 2), over input 0's shape.
pub struct QuantParams {
    pub scale: Vec<f32>,
    pub zp: Vec<i32>,
    pub range: k::QRange,
    pub channels: usize,
    pub inner: usize,
}

impl QuantParams {
    /// From the node's inputs 1 and 2 and input 0's shape.
    pub fn of(cx: &EvalCx, axis: i64) -> Result<Self, IrError> {
        let dims = cx.input(0)?.dims().to_vec();
        let scale = cx.f32_input(1)?.to_vec();
        let (zp, range) = match cx.opt_input(2).map(Tensor::data) {
            None => (vec![0; scale.len()], k::QRange::U8),
            Some(TensorData::U8(v)) => (v.iter().map(|&v| i32::from(v)).collect(), k::QRange::U8),
            Some(TensorData::I8(v)) => (v.iter().map(|&v| i32::from(v)).collect(), k::QRange::I8),
            Some(TensorData::I32(v)) => (v.to_vec(), k::QRange::I8),
            Some(other) => {
                return Err(cx.err(format!(
                    "the zero point must be int8, uint8 or int32, got {}",
                    other.dtype()
                )));
            }
        };
        if zp.len() != scale.len() {
            return Err(cx.err(format!(
                "the scale has {} values but the zero point {}",
                scale.len(),
                zp.len()
            )));
        }
        let numel: usize = dims.iter().product();
        if numel == 0 {
            return Ok(QuantParams {
                scale,
                zp,
                range,
                channels: 1,
                inner: 1,
            });
        }
        if scale.len() == 1 {
            return Ok(QuantParams {
                scale,
                zp,
                range,
                channels: 1,
                inner: numel,
            });
        }
        let ax = i64::try_from(dims.len())
            .ok()
            .and_then(|r| {
                let a = if axis < 0 { axis + r } else { axis };
                usize::try_from(a).ok().filter(|&a| a < dims.len())
            })
            .ok_or_else(|| {
                cx.err(format!(
                    "axis {axis} is out of range for rank {}",
                    dims.len()
                ))
            })?;
        if dims[ax] != scale.len() {
            return Err(cx.err(format!(
                "axis {ax} has extent {} but the scale has {} values",
                dims[ax],
                scale.len()
            )));
        }
        let inner = dims[ax + 1..].iter().product();
        Ok(QuantParams {
            scale,
            zp,
            range,
            channels: dims[ax],
            inner,
        })
    }
}

/// Evaluates a node of the family.
pub fn eval(mut cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    match cx.node.op {
        Op::QuantizeLinear { axis } => {
            let q = QuantParams::of(&cx, axis)?;
            let x = cx.f32_input(0)?;
            let data = if q.range == k::QRange::U8 {
                let mut out = vec![0u8; x.len()];
                k::quantize_linear_u8(x, &q.scale, &q.zp, q.range, q.channels, q.inner, &mut out);
                TensorData::U8(Arc::new(out))
            } else {
                let mut out = vec![0i8; x.len()];
                k::quantize_linear_i8(x, &q.scale, &q.zp, q.range, q.channels, q.inner, &mut out);
                TensorData::I8(Arc::new(out))
            };
            Ok(vec![cx.tensor(cx.input(0)?.dims().to_vec(), data)?])
        }
        Op::DequantizeLinear { axis } => {
            let q = QuantParams::of(&cx, axis)?;
            let x = cx.input(0)?;
            let wide: Vec<i32> = match x.data() {
                TensorData::I8(v) => v.iter().map(|&v| i32::from(v)).collect(),
                TensorData::U8(v) => v.iter().map(|&v| i32::from(v)).collect(),
                TensorData::I32(v) => v.to_vec(),
                other => {
                    return Err(cx.err(format!(
                        "input must be int8, uint8 or int32, got {}",
                        other.dtype()
                    )));
                }
            };
            let mut out = vec![0f32; wide.len()];
            k::dequantize_linear(&wide, &q.scale, &q.zp, q.channels, q.inner, &mut out);
            cx.f32_out(x.dims().to_vec(), out)
        }
        Op::RoundFloat(format) => {
            let dims = cx.input(0)?.dims().to_vec();
            let mut x = cx.take_f32(0)?;
            match format {
                FloatFormat::F16 => k::round_to_f16(&mut x),
                FloatFormat::BF16 => k::round_to_bf16(&mut x),
            }
            cx.f32_out(dims, x)
        }
        ref other => Err(cx.err(format!(
            "internal: {} is not a quantized-graph op",
            other.op_type()
        ))),
    }
}

/// A QuantizeLinear whose only reader is a DequantizeLinear with the same
/// scale and zero point, run as one fake-quantization pass over float32
/// (bit-identical to the two nodes): the output is the DequantizeLinear's.
pub fn fake_quant(mut cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    let Op::QuantizeLinear { axis } = cx.node.op else {
        return Err(cx.err("internal: a fake-quant pair starts at a QuantizeLinear"));
    };
    let p = QuantParams::of(&cx, axis)?;
    let dims = cx.input(0)?.dims().to_vec();
    let mut x = cx.take_f32(0)?;
    k::fake_quantize(&mut x, &p.scale, &p.zp, p.range, p.channels, p.inner);
    cx.f32_out(dims, x)
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
