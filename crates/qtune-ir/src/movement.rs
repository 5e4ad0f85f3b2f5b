//! The data-movement family: everything qtune knows about these ops, in
//! this one file.
//!
//! Every op that only moves, selects or repeats elements (no arithmetic:
//! Reshape, Transpose, Slice, Concat, Tile, ...) is one entry of the
//! `op_family!` table below, which holds the rules other passes consult:
//!
//! - what it does to the elements ([`MoveSpec::kind`]), which SmoothQuant
//!   and the other graph rewrites follow (a [`MoveKind::View`] keeps the
//!   elements in order, so a per-channel scale on the last axis survives it
//!   when that axis keeps its size);
//! - how a TPU profile's int8 plan propagates ranges through it
//!   ([`MoveSpec::range`]), after TPU-MLIR's `calibration_process`
//!   (`lib/Conversion/TopToTpu/TopToTpu.cpp`, spec 4.2), which also decides
//!   whether the QDQ export lets one Q/DQ pair through it;
//! - whether the TPU profiles keep it in float ([`MoveSpec::tpu_float`]);
//! - its role for the shape-layer search of `calibration/shape_ops.py`
//!   ([`MoveSpec::shape_role`], spec 3.15);
//! - its Top dialect op, with the operands and attributes the `.mlir`
//!   reader and writer know, for the Top op table.
//!
//! The attributes and semantics differ from op to op, so the code that
//! reads them is here too, one section per concern, each a `match` over
//! the family that the other crates call through one arm
//! (`movement_op!() => ...`):
//!
//! - the ONNX import and export ([`import`], [`export`]): attributes checked
//!   and written through [`crate::onnx_node`], which `qtune-onnx` carries
//!   to and from protobuf;
//! - the Top dialect ([`read_top`], [`write_top`]), for the `.mlir` reader
//!   and writer;
//! - shape inference ([`infer`], and [`resolve_slice`], [`resolve_split`],
//!   [`reshape_shape`], which other crates use);
//! - evaluation ([`eval`]) on the `qtune-kernels` data-movement kernels,
//!   for the executor.
//!
//! From the table come [`Op::movement`], [`MOVEMENT_OPS`], [`by_onnx`] and
//! the pattern macro [`movement_op!`](crate::movement_op). How to add an
//! op: `docs/adding-an-op.md`.
//!
//! Where TPU-MLIR's canonicalizer rewrites an op into another before
//! calibration (`top.Split` into `top.Slice`s, `Split.cpp: SplitToSlice`;
//! an Expand into `top.Tile`, `Expand.cpp`, which qtune's Top stage does
//! too), the entry takes the rules of what the op becomes.

use std::sync::Arc;

use qtune_kernels as k;
use qtune_tensor::{DType, Shape, Tensor, TensorData};

use crate::eval_cx::{EvalCx, map_any};
use crate::mlir::MlirAttr;
use crate::mlir::MlirError;
use crate::mlir::reader::TopIn;
use crate::mlir::writer::{Operand, TopOp, TopOut, mk, usizes};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::{Ctx, one, usize_of};
use crate::tpu::{KeepFloat, RangeFlow, TpuChip, TpuFloat};
use crate::{Graph, InferredOutput, IrError, NodeId, Op, broadcast_shapes};

/// What a data-movement op does to its input's elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// The same elements in the same (row-major) order, another shape.
    View,
    /// The same elements in another order.
    Permute,
    /// Some of the input's elements (a window, a part, gathered indices).
    Select,
    /// Several inputs side by side.
    Join,
    /// The input repeated.
    Repeat,
}

/// How a TPU profile's int8 plan propagates calibrated ranges through the
/// op, after the passes of TPU-MLIR's `calibration_process` (spec 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveRange {
    /// The output takes the input's range in the first pass (step 1,
    /// `ForwardCalibartion<ReshapeOp / PermuteOp>`) and again in the last
    /// (step 7).
    ForwardsFirst,
    /// The output takes the input's range in the last pass (step 7,
    /// `ForwardCalibartion`).
    Forwards,
    /// The producer takes the output's range when the op is its only
    /// reader (step 4, `BackwardCalibartion`).
    Backwards,
    /// Every input takes the output's range (step 3,
    /// `BackwardMutiInSingleOut`).
    IntoInputs,
    /// The output keeps its own threshold.
    Own,
}

impl MoveRange {
    /// Whether the output ends on its inputs' grid after propagation (the
    /// QDQ export then lets one Q/DQ pair through the op, when the ranges
    /// did end equal).
    pub fn shares_range(self) -> bool {
        self != MoveRange::Own
    }
}

/// The op's role in the shape-layer search (spec 3.15,
/// `calibration/shape_ops.py`): which shape computations stay in float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeRole {
    /// Shape values pass through it (the "transparent" class: Concat,
    /// Slice, Tile, Split, Squeeze, Unsqueeze, ...).
    Transparent,
    /// It consumes a shape and stops the search (Reshape, its shape
    /// operand).
    Stop,
    /// Neither: a shape value reaching it does not make it a shape op.
    Opaque,
}

/// Everything qtune knows about one op of the family.
#[derive(Debug)]
pub struct MoveSpec {
    /// The IR and ONNX op type, the variant's name.
    pub name: &'static str,
    pub kind: MoveKind,
    pub range: MoveRange,
    pub shape_role: ShapeRole,
    /// Why every TPU profile keeps the op in float, when it does (TPU-MLIR
    /// lowers no int8 form of it); `None`: int8 on every chip.
    pub tpu_float: Option<&'static str>,
    /// TPU-MLIR's Top op for it.
    pub top: &'static str,
    /// The Top op's operands in order (`?`: may be `none`), for the Top op
    /// table; ops sharing a Top op give the same.
    pub top_operands: &'static str,
    /// The Top op's attributes the reader reads and the writer writes.
    pub top_attrs: &'static str,
    /// Notes for the Top op table (`docs/tpu-mlir-top-ops.md`).
    pub top_notes: &'static str,
}

/// The registration of the op whose ONNX type is `onnx`, if any.
pub fn by_onnx(onnx: &str) -> Option<&'static MoveSpec> {
    MOVEMENT_OPS.iter().find(|s| s.name == onnx)
}

/// Whether `top` is the Top op of a registered data-movement op.
pub fn is_top(top: &str) -> bool {
    MOVEMENT_OPS.iter().any(|s| s.top == top)
}

/// One row of the Top op table per Top op, naming the IR ops it becomes.
pub(crate) fn top_rows() -> impl Iterator<Item = [String; 5]> {
    crate::family::merged_top_rows(
        MOVEMENT_OPS
            .iter()
            .map(|s| [s.top, s.top_operands, s.top_attrs, s.name, s.top_notes])
            .collect(),
    )
    .into_iter()
}

use MoveKind::{Join, Permute, Repeat, Select, View};
use MoveRange::{Backwards, Forwards, ForwardsFirst, IntoInputs, Own};
use ShapeRole::{Opaque, Stop, Transparent};

// The table (`crate::family::op_family!`). Each entry: `Variant => { fields }`,
// the fields those of [`MoveSpec`] but `name`, which is the variant's.
op_family! {
    /// Every op of the data-movement family.
    static MOVEMENT_OPS: [MoveSpec];
    /// This op's registration, when it belongs to the data-movement
    /// family.
    fn movement;
    /// A pattern matching every [`Op`] of the data-movement family
    /// (generated from the registry in `qtune-ir/src/movement.rs`): a
    /// `match` arm `movement_op!() => ...` keeps the match exhaustive
    /// whatever the family holds. Handle it through [`Op::movement`].
    macro movement_op;
    Reshape => {
        kind: View, range: ForwardsFirst, shape_role: Stop, tpu_float: None,
        top: "top.Reshape", top_operands: "input", top_attrs: "shape",
        top_notes: "a tensor shape operand is an error",
    },
    // TPU-MLIR's earlier ONNX frontends wrote a Flatten as `top.Reshape`;
    // its `top.Flatten` holds the same elements, so qtune gives it the
    // Reshape's range rule (a calibration measures equal ranges for both).
    Flatten => {
        kind: View, range: ForwardsFirst, shape_role: Opaque, tpu_float: None,
        top: "top.Flatten", top_operands: "input", top_attrs: "start_dim, end_dim",
        top_notes: "read as Reshape unless start_dim = 1 and end_dim = -1",
    },
    Squeeze => {
        kind: View, range: Forwards, shape_role: Transparent, tpu_float: None,
        top: "top.Squeeze", top_operands: "input", top_attrs: "axes", top_notes: "",
    },
    Unsqueeze => {
        kind: View, range: Forwards, shape_role: Transparent, tpu_float: None,
        top: "top.Unsqueeze", top_operands: "input", top_attrs: "axes", top_notes: "",
    },
    Identity => {
        kind: View, range: Forwards, shape_role: Opaque, tpu_float: None,
        top: "top.Identity", top_operands: "input", top_attrs: "", top_notes: "",
    },
    Transpose => {
        kind: Permute, range: ForwardsFirst, shape_role: Opaque, tpu_float: None,
        top: "top.Permute", top_operands: "input", top_attrs: "order", top_notes: "",
    },
    SpaceToDepth => {
        kind: Permute, range: Backwards, shape_role: Opaque, tpu_float: None,
        top: "top.Depth2Space", top_operands: "input",
        top_attrs: "block_h, block_w, is_CRD, is_inversed, in_is_NCHW, out_is_NCHW, swap_cr",
        top_notes: "SpaceToDepth is `is_inversed` (DCR order only)",
    },
    DepthToSpace => {
        kind: Permute, range: Backwards, shape_role: Opaque, tpu_float: None,
        top: "top.Depth2Space", top_operands: "input",
        top_attrs: "block_h, block_w, is_CRD, is_inversed, in_is_NCHW, out_is_NCHW, swap_cr",
        top_notes: "equal blocks, NCHW, no swap_cr",
    },
    Slice => {
        kind: Select, range: Forwards, shape_role: Transparent, tpu_float: None,
        top: "top.Slice", top_operands: "input, offsetT?, endsT?, stepsT?",
        top_attrs: "offset, ends, steps, axes, hasparamConvert_axes",
        top_notes: "tensor offsets are an error",
    },
    // TPU-MLIR's canonicalizer makes Slices of a Split (`SplitToSlice`).
    Split => {
        kind: Select, range: Forwards, shape_role: Transparent, tpu_float: None,
        top: "top.Split", top_operands: "input", top_attrs: "axis, num, split_size",
        top_notes: "",
    },
    Gather => {
        kind: Select, range: Own, shape_role: Opaque,
        tpu_float: Some("Gather has no int8 form"),
        top: "top.Gather", top_operands: "input, indices", top_attrs: "axis, keepdims",
        top_notes: "",
    },
    Concat => {
        kind: Join, range: IntoInputs, shape_role: Transparent, tpu_float: None,
        top: "top.Concat", top_operands: "inputs", top_attrs: "axis, do_relu, relu_limit",
        top_notes: "",
    },
    Tile => {
        kind: Repeat, range: Forwards, shape_role: Transparent, tpu_float: None,
        top: "top.Tile", top_operands: "input", top_attrs: "tile",
        top_notes: "a tensor of repeats is an error",
    },
    // qtune's Top stage, as TPU-MLIR's canonicalizer, makes a Tile of it.
    Expand => {
        kind: Repeat, range: Forwards, shape_role: Transparent, tpu_float: None,
        top: "top.Expand", top_operands: "input", top_attrs: "shape", top_notes: "",
    },
}

// ---------------------------------------------------------------------------
// ONNX (called from `qtune-onnx`, which carries the values to and from
// protobuf; `crate::onnx_node`).

/// The IR op of a data-movement ONNX node ([`by_onnx`]), with its
/// attributes checked: the ones the op does not define and the values
/// qtune cannot run are rejected, naming the attribute.
pub fn import(cx: &mut OnnxIn) -> Result<Op, NodeError> {
    Ok(match cx.op_type {
        "Identity" => {
            cx.arity(1, 1)?;
            cx.check_known(&[])?;
            Op::Identity
        }
        "Expand" => {
            cx.arity(2, 2)?;
            cx.check_known(&[])?;
            Op::Expand
        }
        "Tile" => {
            cx.arity(2, 2)?;
            cx.check_known(&[])?;
            Op::Tile
        }
        "SpaceToDepth" | "DepthToSpace" => {
            cx.arity(1, 1)?;
            let blocksize = usize::try_from(cx.int_or("blocksize", 0)?)
                .ok()
                .filter(|&b| b > 0)
                .ok_or_else(|| cx.attr_err("blocksize", "expected a positive integer"))?;
            if cx.op_type == "SpaceToDepth" {
                cx.check_known(&["blocksize"])?;
                Op::SpaceToDepth { blocksize }
            } else {
                cx.check_known(&["blocksize", "mode"])?;
                let crd = match cx.string("mode")?.as_deref().unwrap_or("DCR") {
                    "DCR" => false,
                    "CRD" => true,
                    m => return Err(cx.attr_err("mode", format!("expected DCR or CRD, got {m}"))),
                };
                Op::DepthToSpace { blocksize, crd }
            }
        }
        "Concat" => {
            if cx.inputs == 0 {
                return Err(cx.node_err("expected at least 1 input, got 0"));
            }
            cx.check_known(&["axis"])?;
            let axis = cx
                .int("axis")?
                .ok_or_else(|| cx.attr_err("axis", "required attribute is missing"))?;
            Op::Concat { axis }
        }
        "Split" => {
            cx.check_known(&["axis", "split", "num_outputs"])?;
            let axis = cx.int_or("axis", 0)?;
            let split = cx.ints_moved_to_input(13, "split")?;
            if let Some(s) = &split {
                if s.len() != cx.outputs {
                    return Err(cx.attr_err(
                        "split",
                        format!(
                            "expected {} values (one per output), got {}",
                            cx.outputs,
                            s.len()
                        ),
                    ));
                }
                if s.iter().any(|&v| v < 0) {
                    return Err(
                        cx.attr_err("split", format!("expected non-negative values, got {s:?}"))
                    );
                }
            }
            if let Some(k) = cx.int("num_outputs")? {
                if cx.inputs > 1 {
                    return Err(
                        cx.node_err("'num_outputs' and the 'split' input cannot both be given")
                    );
                }
                if usize::try_from(k).ok() != Some(cx.outputs) {
                    return Err(cx.attr_err(
                        "num_outputs",
                        format!("is {k}, but the node has {} outputs", cx.outputs),
                    ));
                }
            }
            Op::Split { axis, split }
        }
        "Slice" => {
            if cx.opset < 10 {
                cx.arity(1, 1)?;
                cx.check_known(&["starts", "ends", "axes"])?;
                let starts = cx
                    .ints("starts")?
                    .ok_or_else(|| cx.attr_err("starts", "required attribute is missing"))?;
                let ends = cx
                    .ints("ends")?
                    .ok_or_else(|| cx.attr_err("ends", "required attribute is missing"))?;
                if ends.len() != starts.len() {
                    return Err(cx.attr_err(
                        "ends",
                        format!(
                            "expected {} values (as many as 'starts'), got {}",
                            starts.len(),
                            ends.len()
                        ),
                    ));
                }
                let mut params = vec![("starts", starts), ("ends", ends)];
                if let Some(axes) = cx.ints("axes")? {
                    if axes.len() != params[0].1.len() {
                        return Err(cx.attr_err(
                            "axes",
                            format!(
                                "expected {} values (as many as 'starts'), got {}",
                                params[0].1.len(),
                                axes.len()
                            ),
                        ));
                    }
                    params.push(("axes", axes));
                }
                for (what, values) in params {
                    cx.append_ints(what, values)?;
                }
            } else {
                cx.arity(3, 5)?;
                cx.check_known(&[])?;
            }
            Op::Slice
        }
        "Reshape" => {
            cx.arity(2, 2)?;
            cx.check_known(&["allowzero"])?;
            Op::Reshape {
                allowzero: cx.flag("allowzero", false)?,
            }
        }
        "Transpose" => {
            cx.arity(1, 1)?;
            cx.check_known(&["perm"])?;
            let perm = cx.usizes("perm")?;
            if let Some(p) = &perm {
                let mut seen = vec![false; p.len()];
                for &a in p {
                    if a >= p.len() || std::mem::replace(&mut seen[a], true) {
                        return Err(cx.attr_err("perm", format!("{p:?} is not a permutation")));
                    }
                }
            }
            Op::Transpose { perm }
        }
        "Flatten" => {
            cx.arity(1, 1)?;
            cx.check_known(&["axis"])?;
            Op::Flatten {
                axis: cx.int_or("axis", 1)?,
            }
        }
        "Squeeze" | "Unsqueeze" => {
            cx.check_known(&["axes"])?;
            let axes = cx.ints_moved_to_input(13, "axes")?;
            if let Some(a) = &axes {
                cx.check_distinct("axes", a)?;
            }
            if cx.op_type == "Squeeze" {
                Op::Squeeze { axes }
            } else {
                if cx.opset < 13 && axes.is_none() {
                    return Err(cx.attr_err("axes", "required attribute is missing"));
                }
                if cx.opset >= 13 {
                    cx.arity(2, 2)?;
                }
                Op::Unsqueeze { axes }
            }
        }
        "Gather" => {
            cx.arity(2, 2)?;
            cx.check_known(&["axis"])?;
            Op::Gather {
                axis: cx.int_or("axis", 0)?,
            }
        }
        other => return Err(cx.node_err(format!("internal: {other} is not a data-movement op"))),
    })
}

/// The ONNX attributes (and the constant input 1 of the opsets the
/// exporter writes) of a data-movement node.
pub fn export(op: &Op, inputs: &ExportInputs, out: &mut OnnxOut) -> Result<(), NodeError> {
    let i64_of = |v: usize| {
        i64::try_from(v).map_err(|_| NodeError::Node {
            message: format!("value {v} does not fit an int64"),
        })
    };
    match op {
        Op::Identity | Op::Slice | Op::Tile | Op::Expand => {}
        Op::SpaceToDepth { blocksize } => out.int("blocksize", i64_of(*blocksize)?),
        Op::DepthToSpace { blocksize, crd } => {
            out.int("blocksize", i64_of(*blocksize)?);
            out.string("mode", if *crd { "CRD" } else { "DCR" });
        }
        Op::Concat { axis } | Op::Flatten { axis } | Op::Gather { axis } => out.int("axis", *axis),
        Op::Split { axis, split } => {
            out.int("axis", *axis);
            out.ints_input(1, "split", split.as_ref())?;
        }
        Op::Reshape { allowzero } => {
            if *allowzero {
                out.int("allowzero", 1);
            }
        }
        Op::Transpose { perm } => {
            if let Some(p) = perm {
                out.ints(
                    "perm",
                    p.iter().map(|&a| i64_of(a)).collect::<Result<_, _>>()?,
                );
            }
        }
        Op::Squeeze { axes } => out.ints_input(1, "axes", axes.as_ref())?,
        Op::Unsqueeze { axes } => {
            if axes.is_none() && inputs.count() < 2 {
                return Err(NodeError::Node {
                    message: "Unsqueeze needs axes (attribute or input 1)".into(),
                });
            }
            out.ints_input(1, "axes", axes.as_ref())?;
        }
        other => {
            return Err(NodeError::Node {
                message: format!("internal: {} is not a data-movement op", other.op_type()),
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The Top dialect: reading (called from the `.mlir` reader).

/// The IR op of a data-movement Top op ([`is_top`]), its inputs set on `r`.
pub(crate) fn read_top(r: &mut TopIn) -> Result<Op, MlirError> {
    let loc = r.loc.clone();
    let op = match r.op.name.as_str() {
        "top.Identity" => {
            r.inputs = r.unary()?;
            Op::Identity
        }
        "top.Concat" => {
            r.fuse_relu = r.a.bool_or("do_relu", false);
            r.inputs = (0..r.op.operands.len())
                .map(|i| r.req(i).map(Some))
                .collect::<Result<_, _>>()?;
            Op::Concat {
                axis: r.a.i64_or("axis", 1),
            }
        }
        "top.Split" => {
            r.inputs = r.unary()?;
            Op::Split {
                axis: r.a.i64_or("axis", 0),
                split: r.a.ints("split_size"),
            }
        }
        "top.Slice" => {
            for i in 1..r.op.operands.len() {
                if r.b.operand(r.op, i)?.is_some() {
                    return r.err("`top.Slice` with tensor offsets is not supported");
                }
            }
            let x = r.req(0)?;
            let mut starts = r.a.ints("offset").unwrap_or_default();
            let mut ends = r.a.ints("ends").unwrap_or_default();
            let mut steps = r.a.ints("steps").unwrap_or_else(|| vec![1; starts.len()]);
            let mut axes = r.a.ints("axes").unwrap_or_default();
            // TPU-MLIR's shape inference writes full-rank parameters and
            // keeps the sliced axes in `hasparamConvert_axes`: read back
            // the Slice over those axes.
            let converted = r.a.ints("hasparamConvert_axes").unwrap_or_default();
            let full = |v: &Vec<i64>| v.len() == starts.len();
            if axes.is_empty() && !converted.is_empty() && full(&ends) && full(&steps) {
                let pick = |v: &[i64]| -> Option<Vec<i64>> {
                    converted
                        .iter()
                        .map(|&ax| usize::try_from(ax).ok().and_then(|i| v.get(i).copied()))
                        .collect()
                };
                if let (Some(s2), Some(e2), Some(t2)) = (pick(&starts), pick(&ends), pick(&steps)) {
                    (starts, ends, steps, axes) = (s2, e2, t2, converted);
                }
            }
            if axes.is_empty() {
                axes = (0..i64::try_from(starts.len()).unwrap_or(0)).collect();
            }
            if ends.len() != starts.len()
                || steps.len() != starts.len()
                || axes.len() != starts.len()
            {
                return r.err("`top.Slice` offset, ends, steps and axes differ in length");
            }
            let s = r.b.i64_const(format!("{loc}_starts"), starts)?;
            let e = r.b.i64_const(format!("{loc}_ends"), ends)?;
            let ax = r.b.i64_const(format!("{loc}_axes"), axes)?;
            let st = r.b.i64_const(format!("{loc}_steps"), steps)?;
            r.inputs = vec![Some(x), Some(s), Some(e), Some(ax), Some(st)];
            Op::Slice
        }
        "top.Reshape" | "top.Flatten" => {
            let x = r.req(0)?;
            if r.op.name == "top.Flatten"
                && r.a.i64_or("start_dim", 0) == 1
                && r.a.i64_or("end_dim", -1) == -1
            {
                r.inputs = vec![Some(x)];
                Op::Flatten { axis: 1 }
            } else {
                let shape = match (r.op.name.as_str(), r.a.ints("shape")) {
                    ("top.Reshape", Some(s)) if !s.is_empty() => s,
                    _ => match r.result_dims(0) {
                        Some(d) => d
                            .iter()
                            .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
                            .collect(),
                        None => {
                            return r
                                .err(format!("`{}` needs a shape or a ranked result", r.op.name));
                        }
                    },
                };
                let s = r.b.i64_const(format!("{loc}_shape"), shape)?;
                r.inputs = vec![Some(x), Some(s)];
                Op::Reshape { allowzero: false }
            }
        }
        "top.Squeeze" => {
            r.inputs = r.unary()?;
            Op::Squeeze {
                axes: r.a.ints("axes"),
            }
        }
        "top.Unsqueeze" => {
            r.inputs = r.unary()?;
            Op::Unsqueeze {
                axes: r.a.ints("axes"),
            }
        }
        "top.Permute" => {
            r.inputs = r.unary()?;
            Op::Transpose {
                perm: Some(r.usizes("order")?),
            }
        }
        "top.Gather" => {
            r.inputs = r.binary()?;
            Op::Gather {
                axis: r.a.i64_or("axis", 0),
            }
        }
        "top.Expand" => {
            let x = r.req(0)?;
            let shape = match r.a.ints("shape") {
                Some(s) => s,
                None => match r.result_dims(0) {
                    Some(d) => d
                        .iter()
                        .map(|&v| i64::try_from(v).unwrap_or(i64::MAX))
                        .collect(),
                    None => return r.err("`top.Expand` needs a shape"),
                },
            };
            let s = r.b.i64_const(format!("{loc}_shape"), shape)?;
            r.inputs = vec![Some(x), Some(s)];
            Op::Expand
        }
        "top.Tile" => {
            let x = r.req(0)?;
            if r.op.operands.len() > 1 && r.b.operand(r.op, 1)?.is_some() {
                return r.err("`top.Tile` with a tensor of repeats is not supported");
            }
            let Some(tile) = r.a.ints("tile") else {
                return r.err("`top.Tile` needs a `tile` attribute");
            };
            let t = r.b.i64_const(format!("{loc}_tile"), tile)?;
            r.inputs = vec![Some(x), Some(t)];
            Op::Tile
        }
        "top.Depth2Space" => {
            let (bh, bw) = (r.a.i64_or("block_h", 0), r.a.i64_or("block_w", 0));
            let plain = bh == bw
                && bh > 0
                && r.a.bool_or("in_is_NCHW", true)
                && r.a.bool_or("out_is_NCHW", true)
                && !r.a.bool_or("swap_cr", false);
            let Ok(blocksize) = usize::try_from(bh) else {
                return r.err("`top.Depth2Space` block sizes must be positive");
            };
            if !plain {
                return r.err("`top.Depth2Space` is supported with equal block sizes, NCHW in and out and no swap_cr",
                );
            }
            r.inputs = r.unary()?;
            let crd = r.a.bool_or("is_CRD", false);
            if r.a.bool_or("is_inversed", false) {
                if crd {
                    return r.err("`top.Depth2Space` inversed with is_CRD is not supported");
                }
                Op::SpaceToDepth { blocksize }
            } else {
                Op::DepthToSpace { blocksize, crd }
            }
        }
        other => return r.err(format!("internal: `{other}` is not a data-movement Top op")),
    };
    Ok(op)
}

// ---------------------------------------------------------------------------
// The Top dialect: writing (called from the `.mlir` writer).

/// The Top op of a data-movement node.
pub(crate) fn write_top(w: &TopOut) -> Result<TopOp, MlirError> {
    use MlirAttr as A;
    Ok(match &w.node.op {
        Op::Tile => {
            let reps = w
                .const_ints(1)?
                .ok_or_else(|| w.err("repeats are missing".into()))?;
            mk("top.Tile", w.values(1)?, vec![("tile", A::I64Array(reps))])
        }
        Op::SpaceToDepth { blocksize } | Op::DepthToSpace { blocksize, .. } => {
            let b = A::I64(i64::try_from(*blocksize).unwrap_or(1));
            let (inversed, crd) = match w.node.op {
                Op::DepthToSpace { crd, .. } => (false, crd),
                _ => (true, false),
            };
            mk(
                "top.Depth2Space",
                w.values(1)?,
                vec![
                    ("block_h", b.clone()),
                    ("block_w", b),
                    ("is_CRD", A::Bool(crd)),
                    ("is_inversed", A::Bool(inversed)),
                    ("in_is_NCHW", A::Bool(true)),
                    ("out_is_NCHW", A::Bool(true)),
                    ("swap_cr", A::Bool(false)),
                ],
            )
        }
        Op::Concat { axis } => mk(
            "top.Concat",
            w.all_inputs()?,
            vec![
                (
                    "axis",
                    A::SI32(i32::try_from(*axis).map_err(|_| w.err("axis out of range".into()))?),
                ),
                ("do_relu", A::Bool(false)),
            ],
        ),
        Op::Split { axis, .. } => {
            let rank = w.in_rank(0)?;
            let ax = crate::normalize_axis(*axis, rank)
                .ok_or_else(|| w.err("axis out of range".into()))?;
            let sizes: Vec<usize> = (0..w.node.outputs.len())
                .map(|i| w.out_dims(i).map(|d| d.get(ax).copied().unwrap_or(0)))
                .collect::<Result<_, _>>()?;
            mk(
                "top.Split",
                w.values(1)?,
                vec![
                    (
                        "axis",
                        A::SI32(
                            i32::try_from(*axis).map_err(|_| w.err("axis out of range".into()))?,
                        ),
                    ),
                    (
                        "num",
                        A::I64(i64::try_from(w.node.outputs.len()).unwrap_or(0)),
                    ),
                    ("split_size", usizes(&sizes)),
                ],
            )
        }
        Op::Slice => {
            // The ONNX values are kept as given (INT64_MAX ends included), so
            // the reader rebuilds the same Slice.
            let starts = w
                .const_ints(1)?
                .ok_or_else(|| w.err("starts are missing".into()))?;
            let ends = w
                .const_ints(2)?
                .ok_or_else(|| w.err("ends are missing".into()))?;
            let axes = w
                .const_ints(3)?
                .unwrap_or_else(|| (0..i64::try_from(starts.len()).unwrap_or(0)).collect());
            let steps = w.const_ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
            // TPU-MLIR's shape inference (`SliceOp::paramConvert`) writes
            // the parameters for every axis, ends clamped to the input, and
            // keeps the ONNX axes in `hasparamConvert_axes`. With a negative
            // step an end of -1 would read as "the last element", so those
            // keep the ONNX form.
            let xd = w.dims(w.x(0)?)?;
            // Tensor offsets are not written: the parameters are attributes.
            let operands = vec![
                Operand::Value(w.x(0)?),
                Operand::None,
                Operand::None,
                Operand::None,
            ];
            if let Ok(plan) = crate::resolve_slice(w.g, w.id, xd)
                && plan.iter().all(|p| p.step > 0)
            {
                let mut offset = Vec::new();
                let mut full_ends = Vec::new();
                let mut full_steps = Vec::new();
                for p in &plan {
                    let len = i64::try_from(p.len).unwrap_or(0);
                    offset.push(p.start);
                    full_steps.push(p.step);
                    full_ends.push(if len == 0 {
                        p.start
                    } else {
                        p.start + (len - 1) * p.step + 1
                    });
                }
                return Ok(mk(
                    "top.Slice",
                    operands,
                    vec![
                        ("offset", A::I64Array(offset)),
                        ("ends", A::I64Array(full_ends)),
                        ("steps", A::I64Array(full_steps)),
                        ("axes", A::I64Array(vec![])),
                        (
                            "hasparamConvert_axes",
                            A::I64Array(
                                axes.iter()
                                    .map(|&a| {
                                        crate::normalize_axis(a, xd.len())
                                            .and_then(|a| i64::try_from(a).ok())
                                            .unwrap_or(a)
                                    })
                                    .collect(),
                            ),
                        ),
                    ],
                ));
            }
            mk(
                "top.Slice",
                operands,
                vec![
                    ("offset", A::I64Array(starts)),
                    ("ends", A::I64Array(ends)),
                    ("axes", A::I64Array(axes)),
                    ("steps", A::I64Array(steps)),
                ],
            )
        }
        Op::Reshape { .. } | Op::Identity => {
            // The graph has static shapes, so the resolved shape is exact.
            let shape = usizes(w.out_dims(0)?);
            let name = if matches!(w.node.op, Op::Identity) {
                "top.Identity"
            } else {
                "top.Reshape"
            };
            let attrs = if matches!(w.node.op, Op::Identity) {
                vec![]
            } else {
                vec![("shape", shape)]
            };
            mk(name, w.values(1)?, attrs)
        }
        Op::Flatten { axis } => {
            // top.Flatten follows torch.flatten(start_dim, end_dim), which is
            // ONNX Flatten only for axis 1; other axes are written as Reshape.
            if *axis == 1 && w.in_rank(0)? >= 2 {
                mk(
                    "top.Flatten",
                    w.values(1)?,
                    vec![("start_dim", A::I64(1)), ("end_dim", A::I64(-1))],
                )
            } else {
                mk(
                    "top.Reshape",
                    w.values(1)?,
                    vec![("shape", usizes(w.out_dims(0)?))],
                )
            }
        }
        Op::Squeeze { axes } | Op::Unsqueeze { axes } => {
            let axes = match axes {
                Some(a) => a.clone(),
                None => w.const_ints(1)?.unwrap_or_default(),
            };
            let name = if matches!(w.node.op, Op::Squeeze { .. }) {
                "top.Squeeze"
            } else {
                "top.Unsqueeze"
            };
            mk(name, w.values(1)?, vec![("axes", A::I64Array(axes))])
        }
        Op::Transpose { perm } => {
            let rank = w.in_rank(0)?;
            let order: Vec<usize> = match perm {
                Some(p) => p.clone(),
                None => (0..rank).rev().collect(),
            };
            mk("top.Permute", w.values(1)?, vec![("order", usizes(&order))])
        }
        Op::Gather { axis } => mk(
            "top.Gather",
            w.values(2)?,
            vec![("axis", A::I64(*axis)), ("keepdims", A::Bool(true))],
        ),
        Op::Expand => {
            let shape = w
                .const_ints(1)?
                .ok_or_else(|| w.err("shape is missing".into()))?;
            mk(
                "top.Expand",
                w.values(1)?,
                vec![("shape", A::I64Array(shape))],
            )
        }
        other => {
            return Err(w.err(format!(
                "internal: {} is not a data-movement op",
                other.op_type()
            )));
        }
    })
}

// ---------------------------------------------------------------------------
// Shape inference (called from `crate::infer_node`).

/// The output shapes and dtypes of a data-movement node.
pub(crate) fn infer(cx: &Ctx) -> Result<Vec<InferredOutput>, IrError> {
    match &cx.node.op {
        Op::Identity => one(cx.shape(0)?, cx.dtype(0)?),
        Op::Tile => {
            let x = cx.shape(0)?;
            let reps = cx.const_ints(1)?;
            if reps.len() != x.len() || reps.iter().any(|&r| r < 0) {
                return Err(cx.err(format!(
                    "repeats {reps:?} must be {} non-negative values",
                    x.len()
                )));
            }
            let mut out = Vec::with_capacity(x.len());
            for (&d, &r) in x.iter().zip(&reps) {
                let r = usize::try_from(r).map_err(|_| cx.err("repeat out of range"))?;
                out.push(
                    d.checked_mul(r)
                        .ok_or_else(|| cx.err(format!("{d} x {r} repeats overflow")))?,
                );
            }
            one(out, cx.dtype(0)?)
        }
        Op::SpaceToDepth { blocksize } | Op::DepthToSpace { blocksize, .. } => {
            let x = cx.shape(0)?;
            let b = *blocksize;
            let [n, c, h, w] = *x.as_slice() else {
                return Err(cx.err(format!("expected a 4-D input, got {}", Shape(x.clone()))));
            };
            if b == 0 {
                return Err(cx.err("blocksize 0"));
            }
            // The blocksize comes from the file: every product is checked.
            let overflow = || cx.err(format!("blocksize {b} overflows the {n}x{c}x{h}x{w} input"));
            let bb = b.checked_mul(b).ok_or_else(overflow)?;
            let out = if matches!(cx.node.op, Op::SpaceToDepth { .. }) {
                if h % b != 0 || w % b != 0 {
                    return Err(cx.err(format!("{h}x{w} is not divisible by blocksize {b}")));
                }
                vec![n, c.checked_mul(bb).ok_or_else(overflow)?, h / b, w / b]
            } else {
                if c % bb != 0 {
                    return Err(cx.err(format!("{c} channels are not divisible by {b}x{b}")));
                }
                let hb = h.checked_mul(b).ok_or_else(overflow)?;
                vec![n, c / bb, hb, w.checked_mul(b).ok_or_else(overflow)?]
            };
            one(out, cx.dtype(0)?)
        }
        Op::Concat { axis } => {
            let first = cx.shape(0)?;
            let ax = cx.axis(*axis, first.len())?;
            let mut out = first.clone();
            out[ax] = 0;
            for i in 0..cx.node.inputs.len() {
                let s = cx.shape(i)?;
                if s.len() != first.len()
                    || s.iter().enumerate().any(|(j, &d)| j != ax && d != first[j])
                {
                    return Err(IrError::BadInput {
                        node: cx.node.name.clone(),
                        op: cx.op(),
                        index: i,
                        message: format!(
                            "shape {} does not match {} outside axis {ax}",
                            Shape(s),
                            Shape(first.clone())
                        ),
                    });
                }
                out[ax] += s[ax];
            }
            one(out, cx.dtype(0)?)
        }
        Op::Split { axis, split } => {
            let x = cx.shape(0)?;
            let ax = cx.axis(*axis, x.len())?;
            let sizes = split_sizes(cx, split.as_deref(), x[ax], cx.node.outputs.len())?;
            let dtype = cx.dtype(0)?;
            Ok(sizes
                .into_iter()
                .map(|s| {
                    let mut o = x.clone();
                    o[ax] = s;
                    InferredOutput {
                        shape: Shape(o),
                        dtype,
                    }
                })
                .collect())
        }
        Op::Slice => {
            let x = cx.shape(0)?;
            let plan = slice_plan(cx, &x)?;
            one(plan.iter().map(|a| a.len).collect(), cx.dtype(0)?)
        }
        Op::Reshape { allowzero } => {
            let x = cx.shape(0)?;
            let spec = cx.const_ints(1)?;
            let out = reshape_shape(&x, &spec, *allowzero).map_err(|m| cx.err(m))?;
            one(out, cx.dtype(0)?)
        }
        Op::Transpose { perm } => {
            let x = cx.shape(0)?;
            let perm = perm.clone().unwrap_or_else(|| (0..x.len()).rev().collect());
            let mut seen = vec![false; x.len()];
            if perm.len() != x.len()
                || perm
                    .iter()
                    .any(|&p| p >= x.len() || std::mem::replace(&mut seen[p], true))
            {
                return Err(cx.err(format!(
                    "perm {perm:?} is not a permutation of {} axes",
                    x.len()
                )));
            }
            one(perm.iter().map(|&p| x[p]).collect(), cx.dtype(0)?)
        }
        Op::Flatten { axis } => {
            let x = cx.shape(0)?;
            let r = i64::try_from(x.len()).unwrap_or(i64::MAX);
            let a = if *axis < 0 { axis + r } else { *axis };
            let a = usize::try_from(a)
                .ok()
                .filter(|&a| a <= x.len())
                .ok_or_else(|| cx.err(format!("axis {axis} out of range")))?;
            one(
                vec![
                    qtune_tensor::checked_numel(&x[..a]).unwrap_or(usize::MAX),
                    qtune_tensor::checked_numel(&x[a..]).unwrap_or(usize::MAX),
                ],
                cx.dtype(0)?,
            )
        }
        Op::Squeeze { axes } => {
            let x = cx.shape(0)?;
            let axes = match axes {
                Some(a) => Some(a.clone()),
                None if cx.has_input(1) => Some(cx.const_ints(1)?),
                None => None,
            };
            let out = match axes {
                None => x.iter().copied().filter(|&d| d != 1).collect(),
                Some(axes) => {
                    let mut drop = vec![false; x.len()];
                    for a in axes {
                        let i = cx.axis(a, x.len())?;
                        if x[i] != 1 {
                            return Err(
                                cx.err(format!("cannot squeeze axis {i} of extent {}", x[i]))
                            );
                        }
                        drop[i] = true;
                    }
                    x.iter()
                        .zip(drop)
                        .filter(|(_, d)| !d)
                        .map(|(&s, _)| s)
                        .collect()
                }
            };
            one(out, cx.dtype(0)?)
        }
        Op::Unsqueeze { axes } => {
            let x = cx.shape(0)?;
            let axes = match axes {
                Some(a) => a.clone(),
                None => cx.const_ints(1)?,
            };
            let r = x.len() + axes.len();
            let mut insert = vec![false; r];
            for a in axes {
                let i = cx.axis(a, r)?;
                if std::mem::replace(&mut insert[i], true) {
                    return Err(cx.err(format!("axis {i} given twice")));
                }
            }
            let mut it = x.iter();
            let out = insert
                .iter()
                .map(|&ins| {
                    if ins {
                        1
                    } else {
                        it.next().copied().unwrap_or(1)
                    }
                })
                .collect();
            one(out, cx.dtype(0)?)
        }
        Op::Gather { axis } => {
            let x = cx.shape(0)?;
            let idx = cx.shape(1)?;
            let ax = cx.axis(*axis, x.len())?;
            // Constant indices (the usual case: embedding ids, shape parts)
            // are checked here; computed ones are checked by the kernel.
            if let Some(t) = cx.graph.constant_of(cx.input_id(1)?)
                && let Ok(ids) = t.to_i64_vec()
            {
                let dim = i64::try_from(x[ax]).unwrap_or(i64::MAX);
                if let Some(bad) = ids.iter().find(|&&i| i >= dim || i < -dim) {
                    return Err(cx.err(format!(
                        "index {bad} is out of range for axis {ax} of extent {dim}"
                    )));
                }
            }
            let mut out = x[..ax].to_vec();
            out.extend(idx);
            out.extend_from_slice(&x[ax + 1..]);
            one(out, cx.dtype(0)?)
        }
        Op::Expand => {
            let x = cx.shape(0)?;
            // ONNX Expand's shape holds extents (1 broadcasts); a negative one
            // is invalid, not a 1.
            let spec: Vec<usize> = cx
                .const_ints(1)?
                .into_iter()
                .map(|d| {
                    usize_of(d).ok_or_else(|| {
                        cx.err(format!(
                            "the target shape holds {d}; extents cannot be negative"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            let out = broadcast_shapes(&x, &spec).ok_or_else(|| {
                cx.err(format!(
                    "cannot expand {} to {}",
                    Shape(x.clone()),
                    Shape(spec.clone())
                ))
            })?;
            one(out, cx.dtype(0)?)
        }
        other => Err(cx.err(format!(
            "internal: {} is not a data-movement op",
            other.op_type()
        ))),
    }
}

fn split_sizes(
    cx: &Ctx,
    split: Option<&[i64]>,
    extent: usize,
    outputs: usize,
) -> Result<Vec<usize>, IrError> {
    let given = match split {
        Some(s) => Some(s.to_vec()),
        None if cx.has_input(1) => Some(cx.const_ints(1)?),
        None => None,
    };
    match given {
        Some(s) => {
            let sizes: Vec<usize> = s
                .iter()
                .map(|&v| usize_of(v).ok_or_else(|| cx.err("negative split size")))
                .collect::<Result<_, _>>()?;
            if sizes.len() != outputs || sizes.iter().sum::<usize>() != extent {
                return Err(cx.err(format!(
                    "split {s:?} does not divide extent {extent} into {outputs} outputs"
                )));
            }
            Ok(sizes)
        }
        None => {
            if outputs == 0 {
                return Err(cx.err("no outputs"));
            }
            let chunk = extent.div_ceil(outputs);
            Ok((0..outputs)
                .map(|i| chunk.min(extent.saturating_sub(i * chunk)))
                .collect())
        }
    }
}

/// Resolved split sizes of a Split node.
pub fn resolve_split(
    graph: &Graph,
    id: NodeId,
    split: Option<&[i64]>,
    extent: usize,
) -> Result<Vec<usize>, IrError> {
    let node = graph.node(id);
    split_sizes(&Ctx { graph, node }, split, extent, node.outputs.len())
}

/// One axis of a resolved Slice: output element `i` reads input index
/// `start + i * step` along the axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceAxis {
    pub start: i64,
    pub step: i64,
    pub len: usize,
}

fn slice_plan(cx: &Ctx, x: &[usize]) -> Result<Vec<SliceAxis>, IrError> {
    let starts = cx.const_ints(1)?;
    let ends = cx.const_ints(2)?;
    let rank = x.len();
    let axes: Vec<i64> = if cx.has_input(3) {
        cx.const_ints(3)?
    } else {
        (0..i64::try_from(rank).unwrap_or(0)).collect()
    };
    let steps: Vec<i64> = if cx.has_input(4) {
        cx.const_ints(4)?
    } else {
        vec![1; starts.len()]
    };
    if starts.len() != ends.len() || starts.len() != axes.len() || steps.len() != axes.len() {
        return Err(cx.err("starts, ends, axes and steps must have the same length"));
    }
    let mut plan: Vec<SliceAxis> = x
        .iter()
        .map(|&d| SliceAxis {
            start: 0,
            step: 1,
            len: d,
        })
        .collect();
    for i in 0..axes.len() {
        let ax = cx.axis(axes[i], rank)?;
        let dim = i64::try_from(x[ax]).unwrap_or(i64::MAX);
        let step = steps[i];
        if step == 0 {
            return Err(cx.err("slice step 0"));
        }
        let fix = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        // `max(0)` / `max(-1)` keep the clamp bounds ordered on an empty
        // axis (dim 0 with a negative step); the length is computed in i128
        // so that extreme steps from a file cannot overflow.
        let (start, end) = if step > 0 {
            (fix(starts[i]).clamp(0, dim), fix(ends[i]).clamp(0, dim))
        } else {
            (
                fix(starts[i]).clamp(0, (dim - 1).max(0)),
                fix(ends[i]).clamp(-1, (dim - 1).max(-1)),
            )
        };
        let (s128, e128, st128) = (i128::from(start), i128::from(end), i128::from(step));
        let len = if dim == 0 {
            0
        } else if step > 0 {
            if e128 > s128 {
                (e128 - s128 + st128 - 1) / st128
            } else {
                0
            }
        } else if s128 > e128 {
            (s128 - e128 - st128 - 1) / (-st128)
        } else {
            0
        };
        plan[ax] = SliceAxis {
            start,
            step,
            len: usize::try_from(len).unwrap_or(0),
        };
    }
    Ok(plan)
}

/// Resolved per-axis slice of a Slice node over an input of shape `x`.
pub fn resolve_slice(graph: &Graph, id: NodeId, x: &[usize]) -> Result<Vec<SliceAxis>, IrError> {
    slice_plan(
        &Ctx {
            graph,
            node: graph.node(id),
        },
        x,
    )
}

/// ONNX Reshape: 0 copies the input extent (unless `allowzero`), -1 is inferred.
pub fn reshape_shape(x: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let total = qtune_tensor::checked_numel(x).ok_or("the input's element count overflows")?;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err("more than one -1 in the target shape".into());
                }
                out.push(1);
            }
            0 if !allowzero => out.push(
                *x.get(i)
                    .ok_or("0 in the target shape beyond the input rank")?,
            ),
            s if s >= 0 => out.push(usize::try_from(s).map_err(|e| e.to_string())?),
            s => return Err(format!("invalid extent {s} in the target shape")),
        }
    }
    let known = qtune_tensor::checked_numel(&out)
        .ok_or_else(|| format!("the element count of the target shape {spec:?} overflows"))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {} elements into {spec:?}", total));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {} elements into {spec:?}", total));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Evaluation (called from `qtune-exec`).

/// Evaluates a data-movement node on the kernels of `qtune-kernels`.
pub fn eval(cx: EvalCx) -> Result<Vec<Tensor>, IrError> {
    match &cx.node.op {
        Op::Concat { axis } => {
            let first = cx.input(0)?;
            let ax = crate::normalize_axis(*axis, first.dims().len())
                .ok_or_else(|| cx.err("axis out of range"))?;
            let dtype = first.dtype();
            let od = cx.out_dims(0)?;
            let parts: Vec<&Tensor> = (0..cx.node.inputs.len())
                .map(|i| cx.input(i))
                .collect::<Result<_, _>>()?;
            if let Some(p) = parts.iter().find(|p| p.dtype() != dtype) {
                return Err(cx.err(format!("inputs mix {dtype} and {}", p.dtype())));
            }
            macro_rules! cat {
                ($variant:ident, $zero:expr) => {{
                    let views: Vec<(&[_], &[usize])> = parts
                        .iter()
                        .map(|p| match p.data() {
                            TensorData::$variant(v) => (v.as_slice(), p.dims()),
                            _ => unreachable!("dtypes checked above"),
                        })
                        .collect();
                    let mut out = vec![$zero; od.iter().product()];
                    k::concat(&views, ax, &mut out);
                    TensorData::$variant(Arc::new(out))
                }};
            }
            let data = match dtype {
                DType::F32 => cat!(F32, 0f32),
                DType::I64 => cat!(I64, 0i64),
                DType::I32 => cat!(I32, 0i32),
                DType::Bool => cat!(Bool, false),
                DType::U8 => cat!(U8, 0u8),
                DType::I8 => cat!(I8, 0i8),
            };
            Ok(vec![cx.tensor(od, data)?])
        }
        Op::Split { axis, split } => {
            let x = cx.input(0)?;
            let dims = x.dims().to_vec();
            let ax = crate::normalize_axis(*axis, dims.len())
                .ok_or_else(|| cx.err("axis out of range"))?;
            let sizes = resolve_split(cx.graph, cx.id, split.as_deref(), dims[ax])?;
            let mut outs = Vec::with_capacity(sizes.len());
            let mut offset = 0usize;
            for size in sizes {
                let mut starts = vec![0usize; dims.len()];
                starts[ax] = offset;
                let steps = vec![1isize; dims.len()];
                let mut od = dims.clone();
                od[ax] = size;
                let n: usize = od.iter().product();
                let data = map_any!(x.data(), |v| {
                    let mut out = vec![v[0]; n];
                    if n > 0 {
                        k::slice(v, &dims, &starts, &steps, &od, &mut out);
                    }
                    out
                });
                outs.push(cx.tensor(od, data)?);
                offset += size;
            }
            Ok(outs)
        }
        Op::Slice => {
            let x = cx.input(0)?;
            let dims = x.dims().to_vec();
            let plan = resolve_slice(cx.graph, cx.id, &dims)?;
            let od: Vec<usize> = plan.iter().map(|a| a.len).collect();
            let n: usize = od.iter().product();
            let starts: Vec<usize> = plan
                .iter()
                .map(|a| usize::try_from(a.start).unwrap_or(0))
                .collect();
            let steps: Vec<isize> = plan
                .iter()
                .map(|a| isize::try_from(a.step).unwrap_or(1))
                .collect();
            if n == 0 {
                return Ok(vec![Tensor::zeros(x.dtype(), od)]);
            }
            let data = map_any!(x.data(), |v| {
                let mut out = vec![v[0]; n];
                k::slice(v, &dims, &starts, &steps, &od, &mut out);
                out
            });
            Ok(vec![cx.tensor(od, data)?])
        }
        Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Identity => {
            // Pure metadata: the buffer is shared, not copied.
            let od = cx.out_dims(0)?;
            let t = cx
                .input(0)?
                .reshaped(od)
                .map_err(|e| cx.err(e.to_string()))?;
            Ok(vec![t])
        }
        Op::Transpose { perm } => {
            let x = cx.input(0)?;
            let dims = x.dims().to_vec();
            let perm = perm
                .clone()
                .unwrap_or_else(|| (0..dims.len()).rev().collect());
            let od: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
            let n = x.numel();
            if n == 0 {
                return Ok(vec![Tensor::zeros(x.dtype(), od)]);
            }
            let data = map_any!(x.data(), |v| {
                let mut out = vec![v[0]; n];
                k::transpose_blocked(v, &dims, &perm, &mut out, cx.par);
                out
            });
            Ok(vec![cx.tensor(od, data)?])
        }
        Op::Gather { axis } => {
            let x = cx.input(0)?;
            let dims = x.dims().to_vec();
            let ax = crate::normalize_axis(*axis, dims.len())
                .ok_or_else(|| cx.err("axis out of range"))?;
            let extent = i64::try_from(dims[ax]).unwrap_or(i64::MAX);
            let idx: Vec<usize> = cx
                .ints(1)?
                .into_iter()
                .map(|i| {
                    let j = if i < 0 { i + extent } else { i };
                    usize::try_from(j)
                        .ok()
                        .filter(|&j| j < dims[ax])
                        .ok_or_else(|| {
                            cx.err(format!(
                                "index {i} is out of range for axis {ax} of extent {}",
                                dims[ax]
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            let od = cx.out_dims(0)?;
            let n: usize = od.iter().product();
            if n == 0 {
                return Ok(vec![Tensor::zeros(x.dtype(), od)]);
            }
            let data = map_any!(x.data(), |v| {
                let mut out = vec![v[0]; n];
                k::gather(v, &dims, ax, &idx, &mut out);
                out
            });
            Ok(vec![cx.tensor(od, data)?])
        }
        Op::Expand => {
            let x = cx.input(0)?;
            let dims = x.dims().to_vec();
            let od = cx.out_dims(0)?;
            let n: usize = od.iter().product();
            if n == 0 || x.numel() == 0 {
                return Ok(vec![Tensor::zeros(x.dtype(), od)]);
            }
            let data = map_any!(x.data(), |v| {
                let mut out = vec![v[0]; n];
                k::expand(v, &dims, &od, &mut out);
                out
            });
            Ok(vec![cx.tensor(od, data)?])
        }
        Op::Tile => {
            // Tile(x, r) is x seen as [1, d0, 1, d1, ...] expanded to
            // [r0, d0, r1, d1, ...]: the repeats are the outer index of
            // each output axis.
            let x = cx.input(0)?;
            let dims = x.dims().to_vec();
            let od = cx.out_dims(0)?;
            let n: usize = od.iter().product();
            if n == 0 || x.numel() == 0 {
                return Ok(vec![Tensor::zeros(x.dtype(), od)]);
            }
            let src: Vec<usize> = dims.iter().flat_map(|&d| [1, d]).collect();
            let dst: Vec<usize> = dims
                .iter()
                .zip(&od)
                .flat_map(|(&d, &o)| [o / d.max(1), d])
                .collect();
            let data = map_any!(x.data(), |v| {
                let mut out = vec![v[0]; n];
                k::expand(v, &src, &dst, &mut out);
                out
            });
            Ok(vec![cx.tensor(od, data)?])
        }
        Op::SpaceToDepth { blocksize } | Op::DepthToSpace { blocksize, .. } => {
            // Both are a reshape to 6-D, a transpose and a reshape back
            // (the ONNX definitions).
            let x = cx.input(0)?;
            let b = *blocksize;
            let [n, c, h, w] = *x.dims() else {
                return Err(cx.err("expected a 4-D input"));
            };
            let (dims6, perm): ([usize; 6], [usize; 6]) = match cx.node.op {
                Op::SpaceToDepth { .. } => ([n, c, h / b, b, w / b, b], [0, 3, 5, 1, 2, 4]),
                Op::DepthToSpace { crd: false, .. } => {
                    ([n, b, b, c / (b * b), h, w], [0, 3, 4, 1, 5, 2])
                }
                _ => ([n, c / (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3]),
            };
            let od = cx.out_dims(0)?;
            if x.numel() == 0 {
                return Ok(vec![Tensor::zeros(x.dtype(), od)]);
            }
            let data = map_any!(x.data(), |v| {
                let mut out = vec![v[0]; v.len()];
                k::transpose(v, &dims6, &perm, &mut out);
                out
            });
            Ok(vec![cx.tensor(od, data)?])
        }
        other => Err(cx.err(format!(
            "internal: {} is not a data-movement op",
            other.op_type()
        ))),
    }
}

// ---------------------------------------------------------------------------
// The TPU profiles' lowering rules (`crate::tpu`, applied by the deploy plan).

/// The entry's float rule ([`MoveSpec::tpu_float`]).
pub fn tpu_float(graph: &Graph, node: NodeId, chip: TpuChip) -> TpuFloat {
    let why = graph.node(node).op.movement()?.tpu_float?;
    Some(match chip {
        TpuChip::Bm1684 => (KeepFloat::F32, why),
        TpuChip::Bm1684x | TpuChip::Cv18xx => (KeepFloat::Profile, why),
    })
}

/// The entry's range rule ([`MoveSpec::range`]).
pub fn range_flow(graph: &Graph, node: NodeId, _chip: TpuChip) -> RangeFlow {
    let Some(spec) = graph.node(node).op.movement() else {
        return RangeFlow::default();
    };
    let mut f = RangeFlow::default();
    match spec.range {
        MoveRange::ForwardsFirst => {
            f.forwards_first = true;
            f.forwards = true;
        }
        MoveRange::Forwards => f.forwards = true,
        MoveRange::Backwards => f.backwards = true,
        MoveRange::IntoInputs => f.into_inputs = true,
        MoveRange::Own => {}
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;

    /// One op of each variant the family should hold, built by hand: the
    /// registry's list against an independent one.
    fn every_movement_op() -> Vec<Op> {
        vec![
            Op::Reshape { allowzero: false },
            Op::Flatten { axis: 1 },
            Op::Squeeze { axes: None },
            Op::Unsqueeze {
                axes: Some(vec![0]),
            },
            Op::Identity,
            Op::Transpose { perm: None },
            Op::SpaceToDepth { blocksize: 2 },
            Op::DepthToSpace {
                blocksize: 2,
                crd: false,
            },
            Op::Slice,
            Op::Split {
                axis: 0,
                split: None,
            },
            Op::Gather { axis: 0 },
            Op::Concat { axis: 1 },
            Op::Tile,
            Op::Expand,
        ]
    }

    #[test]
    fn every_entry_is_found_from_its_op() {
        let ops = every_movement_op();
        assert_eq!(ops.len(), MOVEMENT_OPS.len());
        for op in &ops {
            let spec = op.movement().unwrap_or_else(|| panic!("{op:?}"));
            assert_eq!(spec.name, op.op_type());
            assert!(matches!(op, movement_op!()), "{}", spec.name);
            assert!(std::ptr::eq(by_onnx(spec.name).unwrap(), spec));
            assert!(is_top(spec.top));
            assert!(crate::SUPPORTED_OPS.contains(&spec.name), "{}", spec.name);
        }
        for op in [
            Op::Relu,
            Op::Cast {
                to: qtune_tensor::DType::F32,
            },
            Op::MatMul,
        ] {
            assert!(op.movement().is_none(), "{op:?}");
            assert!(!matches!(op, movement_op!()), "{op:?}");
        }
        assert!(by_onnx("Pad").is_none());
    }

    /// The Top op an entry is once TPU-MLIR's frontend and canonicalizer
    /// are through with it (`None`: removed, its readers read its input).
    /// Flatten as `top.Reshape` is qtune's reading (see its entry).
    fn canonical_top(spec: &MoveSpec) -> Option<&'static str> {
        match spec.top {
            "top.Split" => Some("top.Slice"),
            "top.Expand" => Some("top.Tile"),
            "top.Flatten" => Some("top.Reshape"),
            "top.Identity" => None,
            t => Some(t),
        }
    }

    /// The range rules against the pattern lists of TPU-MLIR's
    /// `ConvertTopToTpu::calibration_process`, transcribed here from the
    /// source (the data-movement ops among them).
    #[test]
    fn range_rules_follow_tpu_mlir_calibration_process() {
        let first_forward = ["top.Reshape", "top.Permute"];
        let multi_in_backward = ["top.Concat"];
        let backward = ["top.Depth2Space"];
        let last_forward = [
            "top.Reshape",
            "top.Unsqueeze",
            "top.Squeeze",
            "top.Slice",
            "top.Tile",
            "top.Pad",
            "top.Permute",
            "top.Reverse",
            "top.Upsample",
        ];
        for spec in MOVEMENT_OPS {
            let expected = match canonical_top(spec) {
                None => MoveRange::Forwards,
                Some(t) if first_forward.contains(&t) => {
                    assert!(last_forward.contains(&t));
                    MoveRange::ForwardsFirst
                }
                Some(t) if last_forward.contains(&t) => MoveRange::Forwards,
                Some(t) if backward.contains(&t) => MoveRange::Backwards,
                Some(t) if multi_in_backward.contains(&t) => MoveRange::IntoInputs,
                Some(_) => MoveRange::Own,
            };
            assert_eq!(spec.range, expected, "{}", spec.name);
            assert_eq!(spec.range.shares_range(), expected != MoveRange::Own);
        }
    }

    /// The shape-layer roles against spec 3.15's classes (the Top op names
    /// of `shape_ops.py`), after canonicalization. Flatten is not a Reshape
    /// there: `shape_ops.py` matches the op name, and TPU-MLIR's current
    /// frontend writes `top.Flatten`.
    #[test]
    fn shape_roles_follow_the_shape_ops_classes() {
        let transparent = [
            "top.Concat",
            "top.Slice",
            "top.Tile",
            "top.Split",
            "top.Pack",
            "top.Repeat",
            "top.Squeeze",
            "top.Unsqueeze",
        ];
        let stop = ["top.Reshape"];
        for spec in MOVEMENT_OPS {
            let top = match spec.top {
                "top.Expand" => "top.Tile",
                t => t,
            };
            let expected = if transparent.contains(&top) {
                ShapeRole::Transparent
            } else if stop.contains(&top) {
                ShapeRole::Stop
            } else {
                ShapeRole::Opaque
            };
            assert_eq!(spec.shape_role, expected, "{}", spec.name);
        }
    }

    #[test]
    fn entries_sharing_a_top_op_share_its_row() {
        for a in MOVEMENT_OPS {
            for b in MOVEMENT_OPS.iter().filter(|b| b.top == a.top) {
                assert_eq!(
                    (a.top_operands, a.top_attrs),
                    (b.top_operands, b.top_attrs),
                    "{} / {}",
                    a.name,
                    b.name
                );
            }
        }
        let rows: Vec<[String; 5]> = top_rows().collect();
        let d2s = rows.iter().find(|r| r[0] == "top.Depth2Space").unwrap();
        assert_eq!(d2s[3], "SpaceToDepth / DepthToSpace");
        assert_eq!(
            rows.len(),
            MOVEMENT_OPS.len() - 1,
            "one row per Top op, Depth2Space holding two"
        );
    }
    #[test]
    fn reshape_resolves_zero_and_minus_one() {
        assert_eq!(
            reshape_shape(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert!(reshape_shape(&[2, 3], &[4, -1], false).is_err());
    }
}
