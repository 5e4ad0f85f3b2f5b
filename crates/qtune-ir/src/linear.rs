//! The weighted-layer family: one registration per op.
//!
//! Conv, ConvTranspose, Gemm and MatMul multiply their input by a weight
//! (input 1, usually a constant) and add an optional bias (input 2): they
//! are the layers int8 hardware computes on integer units, the only ones
//! the QDQ runtimes quantize, and the ones whose weights are quantized per
//! output channel. Each is one entry of the `op_family!` table at the
//! end of this file, which holds what the crates need to know about it
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
//! canonicalization's fused-ReLU rule consult the registry. Attributes,
//! shape inference, evaluation, the ONNX and `.mlir` mappings stay per op
//! (`docs/adding-an-op.md`).

use crate::Op;

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
