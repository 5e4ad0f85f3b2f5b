//! The data-movement family: one registration per op.
//!
//! Every op that only moves, selects or repeats elements (no arithmetic:
//! Reshape, Transpose, Slice, Concat, Tile, ...) is one entry of the
//! `op_family!` table at the end of this file, which holds what every
//! crate needs to know about it beyond its own attributes:
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
//! The attributes differ from op to op, so the ONNX import and export, the
//! `.mlir` reader and writer, shape inference and the executor keep a
//! `match` arm per op; `docs/adding-an-op.md` says where. From the table
//! come [`Op::movement`], [`MOVEMENT_OPS`], [`by_onnx`] and the pattern
//! macro [`movement_op!`](crate::movement_op).
//!
//! Where TPU-MLIR's canonicalizer rewrites an op into another before
//! calibration (`top.Split` into `top.Slice`s, `Split.cpp: SplitToSlice`;
//! an Expand into `top.Tile`, `Expand.cpp`, which qtune's Top stage does
//! too), the entry takes the rules of what the op becomes.

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
    let mut tops: Vec<&str> = MOVEMENT_OPS.iter().map(|s| s.top).collect();
    tops.sort_unstable();
    tops.dedup();
    tops.into_iter().map(|top| {
        let specs: Vec<&MoveSpec> = MOVEMENT_OPS.iter().filter(|s| s.top == top).collect();
        let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
        let notes: Vec<&str> = specs
            .iter()
            .map(|s| s.top_notes)
            .filter(|n| !n.is_empty())
            .collect();
        [
            top.to_string(),
            specs[0].top_operands.to_string(),
            specs[0].top_attrs.to_string(),
            names.join(" / "),
            notes.join("; "),
        ]
    })
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
}
