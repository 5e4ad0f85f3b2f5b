//! The normalization family: one registration per op.
//!
//! BatchNormalization and LayerNormalization scale a normalized input by a
//! learned `scale` and shift it by a `bias`: BatchNormalization per channel
//! (axis 1) with the mean and variance given as inputs (inference), which
//! makes it a per-channel affine map; LayerNormalization over the axes from
//! `axis` to the last, with the statistics computed from the input. Each is
//! one entry of the `op_family!` table at the end of this file, which
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
//! consult the registry. Shape inference, evaluation, the BatchNormalization
//! fold into Conv and the ONNX export stay per op (`docs/adding-an-op.md`).

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
