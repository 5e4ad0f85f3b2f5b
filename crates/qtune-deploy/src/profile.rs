//! Processor profiles: how each TPU quantizes (spec section 4 and
//! `docs/tpu-mlir-int8-lowering.md`).
//!
//! | processor | weights (Conv) | weights (MatMul/Gemm) | activations | `fp_type auto` | float types for mixed layers |
//! |---|---|---|---|---|---|
//! | bm1684x, bm1688, bm1690, cv186x | int8 per output channel, `max|W_c|/127` | int8 per tensor | uint8 `th/255` when the calibrated min is >= 0, else int8 `th/127` | F16 | bm1684x: F16, F32; bm1688, cv186x: F16, BF16, F32; bm1690: F16, F32 (TPU-MLIR has no list and crashes) |
//! | bm1684 | int8 per tensor, power-of-two shift (`W_q = W 2^r s_in / s_out`) | same | same rule | F32 | F32 |
//! | cv183x, cv182x, cv181x, cv180x | int8 per output channel | int8 per tensor | always int8 `th/127` | BF16 | BF16 |
//! | onnxruntime (alias `qdq`; QDQ runtimes: ONNX Runtime, TensorRT, OpenVINO) | int8 per output channel | int8 per output channel (MatMul's constant B per column) | at the inputs of Conv/ConvTranspose/MatMul/Gemm only (same uint8/int8 rule, `--asymmetric` allowed); no Q/DQ on layer outputs | F32 | F32 |
//!
//! Ops each family keeps in float in INT8 mode (the type is the family's
//! float type unless the row says F32):
//!
//! | family | kept in float |
//! |---|---|
//! | bm1684x | Clip other than `Clip(0, max)` (F16), Reduce* (F16), LayerNorm pattern (F16), Resize other than integer-scale nearest (F16), Gather of data (F16), Softmax unless `axis == 1` and rank <= 4 (F16), MatMul with a constant left operand (F16), Div of two tensors (F32), Conv whose filter is not a constant (F32), Erf/Exp/Tanh when not a lookup table (never: they are LUT int8) |
//! | bm1684 | Div, Softmax, Reduce*, LayerNorm pattern, Resize (non-upsample), Gather, MatMul other than 2-D fully connected (all F32), Conv/ConvTranspose whose weight shift would be negative (F32) |
//! | runtime | everything but Conv/ConvTranspose with a constant filter, MatMul and Gemm (F32): ONNX Runtime fuses `DQ -> layer [-> Relu] -> Q` into QLinearConv / QLinearMatMul / QGemm and `DQ -> MatMul` into MatMulIntegerToFloat (its `qdq_selectors.cc`), and runs the rest in float |
//! | cv18xx | Softmax, LayerNorm pattern, Clip, Gather, ReduceL2, MatMul of two activations, Add/Sub with a constant operand (all BF16), Conv with a non-constant filter (BF16) |
//!
//! Rounding: the simulator and the exported QDQ model quantize activations
//! with round half to even of `x / scale` (ONNX QuantizeLinear); TPU-MLIR's
//! requantization shifts round half up and its lookup tables half away from
//! zero, so results differ from the chip only on exact ties. Weights and
//! biases are rounded half away from zero, as TPU-MLIR does when it lowers
//! them (the integer weights are computed once, so both runtimes see the same
//! integers).

use std::fmt;

use qtune_quant::QuantMode;

/// A target processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Processor {
    Bm1684x,
    Bm1684,
    Bm1688,
    Bm1690,
    Cv186x,
    Cv183x,
    Cv182x,
    Cv181x,
    Cv180x,
    /// Not a chip: QDQ runtimes (ONNX Runtime, TensorRT, OpenVINO). Only
    /// the ops their int8 kernels compute are quantized; see [`Family::Runtime`].
    OnnxRuntime,
}

/// The processor families that share quantization rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// bm1684x, bm1688, bm1690, cv186x.
    Bm1684x,
    Bm1684,
    /// cv183x, cv182x, cv181x, cv180x.
    Cv18xx,
    /// `onnxruntime` (alias `qdq`): activations quantized at the inputs of
    /// Conv, ConvTranspose, MatMul and Gemm only (what ONNX Runtime's QDQ
    /// transformers fuse into QLinearConv / QLinearMatMul /
    /// MatMulIntegerToFloat / QGemm), weights per output channel, every
    /// other op in F32 and no Q/DQ on layer outputs.
    Runtime,
}

/// How Conv/MatMul weights are quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightScheme {
    /// Symmetric int8, one scale per output channel (Conv) and one per
    /// tensor (MatMul/Gemm).
    PerChannel,
    /// BM1684: one power-of-two shift per tensor.
    PerTensorPow2,
}

impl Processor {
    pub const ALL: [Processor; 10] = [
        Processor::Bm1684x,
        Processor::Bm1684,
        Processor::Bm1688,
        Processor::Bm1690,
        Processor::Cv186x,
        Processor::Cv183x,
        Processor::Cv182x,
        Processor::Cv181x,
        Processor::Cv180x,
        Processor::OnnxRuntime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Processor::Bm1684x => "bm1684x",
            Processor::Bm1684 => "bm1684",
            Processor::Bm1688 => "bm1688",
            Processor::Bm1690 => "bm1690",
            Processor::Cv186x => "cv186x",
            Processor::Cv183x => "cv183x",
            Processor::Cv182x => "cv182x",
            Processor::Cv181x => "cv181x",
            Processor::Cv180x => "cv180x",
            Processor::OnnxRuntime => "onnxruntime",
        }
    }

    /// Case-insensitive, as TPU-MLIR lowercases `--processor`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        if s == "qdq" {
            return Some(Processor::OnnxRuntime);
        }
        Processor::ALL.into_iter().find(|p| p.name() == s)
    }

    pub fn family(self) -> Family {
        match self {
            Processor::Bm1684x | Processor::Bm1688 | Processor::Bm1690 | Processor::Cv186x => {
                Family::Bm1684x
            }
            Processor::Bm1684 => Family::Bm1684,
            Processor::Cv183x | Processor::Cv182x | Processor::Cv181x | Processor::Cv180x => {
                Family::Cv18xx
            }
            Processor::OnnxRuntime => Family::Runtime,
        }
    }

    /// The quantization rules of this processor.
    pub fn profile(self) -> Profile {
        let family = self.family();
        let (weights, signed_only, fp_auto) = match family {
            Family::Bm1684x => (WeightScheme::PerChannel, false, QuantMode::F16),
            Family::Bm1684 => (WeightScheme::PerTensorPow2, false, QuantMode::F32),
            Family::Cv18xx => (WeightScheme::PerChannel, true, QuantMode::BF16),
            Family::Runtime => (WeightScheme::PerChannel, false, QuantMode::F32),
        };
        let mix_types: &'static [QuantMode] = match self {
            Processor::Bm1684x | Processor::Bm1690 => &[QuantMode::F16, QuantMode::F32],
            Processor::Bm1688 | Processor::Cv186x => {
                &[QuantMode::F16, QuantMode::BF16, QuantMode::F32]
            }
            Processor::Bm1684 | Processor::OnnxRuntime => &[QuantMode::F32],
            _ => &[QuantMode::BF16],
        };
        Profile {
            processor: self,
            family,
            weights,
            signed_only,
            fp_auto,
            mix_types,
        }
    }
}

impl fmt::Display for Processor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The quantization rules of one processor.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub processor: Processor,
    pub family: Family,
    pub weights: WeightScheme,
    /// Activations are always signed int8 (cv18xx).
    pub signed_only: bool,
    /// The float type `--fp_type auto` gives layers kept in float.
    pub fp_auto: QuantMode,
    /// The float types the chip supports for mixed layers (first = default).
    pub mix_types: &'static [QuantMode],
}

impl Profile {
    /// Resolves `--fp_type` (`auto`, F32, F16, BF16) against the chip's list.
    pub fn float_type(&self, fp_type: &str) -> Result<QuantMode, String> {
        if fp_type.eq_ignore_ascii_case("auto") {
            return Ok(self.fp_auto);
        }
        let mode = QuantMode::parse(&fp_type.to_ascii_uppercase())
            .filter(|m| matches!(m, QuantMode::F32 | QuantMode::F16 | QuantMode::BF16))
            .ok_or_else(|| format!("--fp_type `{fp_type}`: expected auto, F32, F16 or BF16"))?;
        if !self.mix_types.contains(&mode) {
            let list: Vec<&str> = self.mix_types.iter().map(|m| m.name()).collect();
            return Err(format!(
                "--fp_type {mode} is not supported by {} (supported: {})",
                self.processor,
                list.join(", ")
            ));
        }
        Ok(mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_families() {
        assert_eq!(Processor::parse("BM1684X"), Some(Processor::Bm1684x));
        assert_eq!(Processor::parse("cv181x").unwrap().family(), Family::Cv18xx);
        assert_eq!(Processor::parse("bm1686"), None);
        for p in Processor::ALL {
            assert_eq!(Processor::parse(p.name()), Some(p));
        }
        assert_eq!(Processor::parse("QDQ"), Some(Processor::OnnxRuntime));
        assert_eq!(
            Processor::parse("onnxruntime").map(|p| p.family()),
            Some(Family::Runtime)
        );
    }

    #[test]
    fn float_types_per_chip() {
        let auto = |p: Processor| p.profile().float_type("auto").unwrap();
        assert_eq!(auto(Processor::Bm1684), QuantMode::F32);
        assert_eq!(auto(Processor::Bm1684x), QuantMode::F16);
        assert_eq!(auto(Processor::Bm1688), QuantMode::F16);
        assert_eq!(auto(Processor::Cv186x), QuantMode::F16);
        assert_eq!(auto(Processor::Bm1690), QuantMode::F16);
        assert_eq!(auto(Processor::Cv183x), QuantMode::BF16);
        assert!(Processor::Bm1684.profile().float_type("F16").is_err());
        assert!(Processor::Cv182x.profile().float_type("f32").is_err());
        assert_eq!(
            Processor::Bm1688.profile().float_type("bf16"),
            Ok(QuantMode::BF16)
        );
        assert!(Processor::Cv180x.profile().signed_only);
        assert_eq!(
            Processor::Bm1684.profile().weights,
            WeightScheme::PerTensorPow2
        );
    }
}
