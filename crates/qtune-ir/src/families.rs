//! The op families: the one table through which every crate reaches an
//! op's code. Each family is a module of this crate holding everything
//! qtune knows about its ops (registry, ONNX import and export, Top reading
//! and writing, shape inference, evaluation, the TPU lowering's rules;
//! `docs/adding-an-op.md`); [`FAMILIES`] registers each module once, and
//! the ONNX importer and exporter, the `.mlir` reader and writer, shape
//! inference, the executor and the deploy plan each dispatch through it.
//!
//! Two ops are outside every family: `IntegerLayer`, the integer
//! simulation's op (built by `qtune-deploy`, run by `qtune-exec`, written to
//! no file format), and the weighted layers' evaluation, which is the
//! executor's (it packs weights once per model and fuses activations;
//! [`Family::eval`] is `None` for them).

use qtune_tensor::Tensor;

use crate::eval_cx::EvalCx;
use crate::mlir::MlirError;
use crate::mlir::reader::TopIn;
use crate::mlir::writer::{TopOp, TopOut};
use crate::onnx_node::{ExportInputs, NodeError, OnnxIn, OnnxOut};
use crate::shape_infer::Ctx;
use crate::tpu::{RangeFlow, TpuChip, TpuFloat};
use crate::{Graph, InferredOutput, IrError, NodeId, Op};

/// A family's evaluation.
pub type EvalFn = fn(EvalCx) -> Result<Vec<Tensor>, IrError>;

/// One op family: which ops, ONNX op types and Top ops are its, and its
/// code for each concern.
pub struct Family {
    /// The module (`crates/qtune-ir/src/<module>.rs`).
    pub module: &'static str,
    /// Whether `op` is one of the family's.
    pub has: fn(&Op) -> bool,
    /// Whether the family imports ONNX op type `op_type` at `opset`.
    pub imports: fn(&str, i64) -> bool,
    pub import: fn(&mut OnnxIn) -> Result<Op, NodeError>,
    pub export: fn(&Op, &ExportInputs, &mut OnnxOut) -> Result<(), NodeError>,
    /// Whether the family reads Top op `name` (with its `mode` attribute).
    pub(crate) reads_top: fn(&str, Option<&str>) -> bool,
    pub(crate) read_top: fn(&mut TopIn) -> Result<Op, MlirError>,
    pub(crate) write_top: fn(&TopOut) -> Result<TopOp, MlirError>,
    pub(crate) infer: fn(&Ctx) -> Result<Vec<InferredOutput>, IrError>,
    /// `None`: the executor evaluates the family itself.
    pub eval: Option<EvalFn>,
    /// The float rule of a TPU chip's lowering for a node of the family.
    pub tpu_float: fn(&Graph, NodeId, TpuChip) -> TpuFloat,
    /// How calibrated ranges flow through a node of the family.
    pub range_flow: fn(&Graph, NodeId, TpuChip) -> RangeFlow,
}

/// The entry of family module `m`, from its standard functions (`import`,
/// `export`, `read_top`, `write_top`, `infer`, `tpu_float`, `range_flow`,
/// and `eval` unless the entry says `eval: None`).
macro_rules! family {
    ($m:ident { has: $has:expr, imports: $imports:expr, reads_top: $reads:expr $(, eval: $eval:expr)? $(,)? }) => {
        Family {
            module: stringify!($m),
            has: $has,
            imports: $imports,
            import: crate::$m::import,
            export: crate::$m::export,
            reads_top: $reads,
            read_top: crate::$m::read_top,
            write_top: crate::$m::write_top,
            infer: crate::$m::infer,
            eval: family!(@eval $m $($eval)?),
            tpu_float: crate::$m::tpu_float,
            range_flow: crate::$m::range_flow,
        }
    };
    (@eval $m:ident) => {
        Some(crate::$m::eval)
    };
    (@eval $m:ident $eval:expr) => {
        $eval
    };
}

/// Every op family. The order is the lookup order: `logic` (`top.Compare`
/// with mode `Not`) before `binary` (the other `top.Compare` modes).
pub static FAMILIES: &[Family] = &[
    family!(unary {
        has: |op| matches!(op, unary_op!()),
        imports: |t, _| crate::unary::by_onnx(t).is_some(),
        reads_top: |t, _| crate::unary::reads_top(t),
    }),
    family!(logic {
        has: crate::logic::has,
        imports: |t, _| crate::logic::ONNX_OPS.contains(&t),
        reads_top: crate::logic::reads_top,
    }),
    family!(binary {
        has: |op| matches!(op, binary_op!()),
        imports: |t, _| crate::binary::by_onnx(t).is_some(),
        reads_top: |t, _| crate::binary::is_top(t),
    }),
    family!(activation {
        has: |op| matches!(op, activation_op!()),
        imports: |t, _| crate::activation::by_onnx(t).is_some(),
        reads_top: |t, _| crate::activation::is_top(t),
    }),
    family!(reduce {
        has: |op| matches!(op, reduce_op!()),
        imports: |t, _| crate::reduce::by_onnx(t).is_some(),
        reads_top: |t, _| t == "top.Reduce",
    }),
    family!(pool {
        has: |op| matches!(op, pool_op!()),
        imports: |t, _| crate::pool::by_onnx(t).is_some(),
        reads_top: |t, _| crate::pool::is_top(t),
    }),
    family!(movement {
        has: |op| matches!(op, movement_op!()),
        imports: |t, _| crate::movement::by_onnx(t).is_some(),
        reads_top: |t, _| crate::movement::is_top(t),
    }),
    family!(linear {
        has: |op| matches!(op, linear_op!()),
        imports: |t, _| crate::linear::by_onnx(t).is_some(),
        reads_top: |t, _| crate::linear::is_top(t),
        eval: None,
    }),
    family!(norm {
        has: |op| matches!(op, norm_op!()),
        imports: |t, _| crate::norm::by_onnx(t).is_some(),
        reads_top: |t, _| crate::norm::reads_top(t),
    }),
    family!(resize {
        // Before opset 11 (and Upsample) the importer rewrites the node.
        has: crate::resize::has,
        imports: |t, opset| t == "Resize" && opset >= 11,
        reads_top: |t, _| crate::resize::TOP_OPS.contains(&t),
    }),
    family!(convert {
        has: crate::convert::has,
        imports: |t, _| crate::convert::ONNX_OPS.contains(&t),
        reads_top: |t, _| crate::convert::TOP_OPS.contains(&t),
    }),
    family!(quantize {
        // No Top op is a quantized-graph op.
        has: crate::quantize::has,
        imports: |t, _| crate::quantize::ONNX_OPS.contains(&t),
        reads_top: |_, _| false,
    }),
];

/// The family of `op` (`None` for `IntegerLayer`).
pub fn of(op: &Op) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| (f.has)(op))
}

/// The family that imports ONNX op type `op_type` at `opset`.
pub fn importing(op_type: &str, opset: i64) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| (f.imports)(op_type, opset))
}

/// The family that reads Top op `name` (with its `mode` attribute).
pub(crate) fn reading_top(name: &str, mode: Option<&str>) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| (f.reads_top)(name, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ONNX op type qtune supports is imported by exactly one family
    /// (the legacy forms the importer rewrites aside), and the ops of each
    /// registry-built family are that family's only.
    #[test]
    fn every_op_has_one_family() {
        for t in crate::SUPPORTED_OPS.iter() {
            let n = FAMILIES.iter().filter(|f| (f.imports)(t, 17)).count();
            assert_eq!(n, 1, "{t} is imported by {n} families");
        }
        let samples: Vec<Op> = crate::unary::UNARY_OPS
            .iter()
            .map(|s| (s.build)(&vec![0.0; s.attrs.len()]))
            .chain(crate::binary::BINARY_OPS.iter().map(|s| (s.build)()))
            .chain(
                crate::reduce::REDUCE_OPS
                    .iter()
                    .map(|s| (s.build)(Default::default())),
            )
            .chain(
                crate::pool::POOL_OPS
                    .iter()
                    .map(|s| (s.build)(Default::default())),
            )
            .collect();
        for op in &samples {
            let n = FAMILIES.iter().filter(|f| (f.has)(op)).count();
            assert_eq!(n, 1, "{op:?}");
        }
    }
}
