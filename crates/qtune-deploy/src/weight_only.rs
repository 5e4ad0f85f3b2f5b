//! Weight-only modes (`W8F16`, `W8BF16`, `W4F16`, `W4BF16`): the weights of
//! MatMul / Gemm layers stored as 8- or 4-bit integers, every activation and
//! every other op in the float type (F16 or BF16).
//!
//! Reference followed: TPU-MLIR's `W4A16MatMulPreparePattern`
//! (`lib/Conversion/TopToTpu/TopToTpuPass.cpp`), which marks a `top.MatMul`
//! whose right operand is a weight with `weight_bits` 8 or 4;
//! `MatMulLowering::LoweringF16` / `LoweringBF16`
//! (`lib/Conversion/TopToTpu/BM1684X/MatMul.cpp`), which turns such a
//! MatMul with a 2-D weight into a `tpu.A16MatMul` (other ops of the mode
//! lower as F16 / BF16); and `A16MatMulAdjust` with `computePerChannelParam`,
//! `computePerGroupParam` and `weightQuantization`
//! (`lib/Dialect/Tpu/Canonicalize/A16MatMul.cpp`), which quantize the
//! weight. What they do, and qtune does the same:
//!
//! * The weight `[K, N]` is transposed to `[N, K]`; one row per output
//!   channel, groups of `q_group_size` consecutive values along K (the
//!   reduction axis). `q_group_size` must divide K.
//! * Per channel (`q_group_size` 0, TPU-MLIR's default):
//!   - 8 bits: symmetric, zero point 0; `s = max|W_n| / 127` and int8 codes
//!     when the weight has a value <= 0 anywhere, else `max|W_n| / 255` and
//!     uint8 codes.
//!   - 4 bits: asymmetric per row: `s = max(max - min, 1e-5) / 15`,
//!     `zp = clamp(-round(min / s), 0, 15)`, uint4 codes.
//! * Per group: uint8 / uint4 codes (`max_int` 255 / 15) with one scale and
//!   one zero point per group; asymmetric by default
//!   (`s = max(max - min, 1e-5) / max_int`, `zp = clamp(-round(min / s), 0,
//!   max_int)`), or with `--q_symmetric` `s = 2 max|W_g| / max_int` and the
//!   middle zero point (128 / 8).
//!   The min and max are those of the group's values (a group of positive
//!   values gets zero point 0 and saturates above `max_int * s`, as
//!   TPU-MLIR's rule gives).
//! * Codes are `clamp(round(w / s) + zp, 0 or -128, max)` with `round` half
//!   away from zero (`std::round`), `w / s` in f32.
//! * The scales are stored in the activation type (`clone_f16` /
//!   `clone_bf16`), and so is the bias; the chip dequantizes
//!   `(q - zp) * s` into that type and multiplies in it.
//! * W4 with a group size: a layer with fewer output channels N than the
//!   chip's NPU count runs in the float type; when N is larger but not a
//!   multiple of it, the first `N - N % NPU` channels are weight-only and
//!   the rest float (TPU-MLIR splits the MatMul and concatenates).
//!
//! qtune builds the dequantized weight as `DequantizeLinear` (per axis, one
//! scale and zero point per row of a `[N K / g, g]` code tensor, which is
//! the same as one per group) -> rounding to the float type -> Reshape to
//! `[N, K]` -> Transpose to the layer's layout. Those are opset-17 ops that
//! ONNX Runtime and qtune's executor both run, with the same single
//! rounding of `(q - zp) * s`. 4-bit codes take one byte each here (ONNX
//! has 4-bit types from opset 21 only, and the exporter writes opset 17);
//! `model_deploy` packs them into ONNX Runtime's MatMulNBits when it writes
//! the file (`qtune_cli::int4_pack`).

use qtune_ir::{FloatFormat, Graph, NodeId, Op, ValueId};
use qtune_quant::QuantMode;
use qtune_tensor::DType;

use crate::profile::Processor;

/// The weight-only options of a deploy (`--q_group_size`, `--q_symmetric`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightOnly {
    /// Values per group along K; 0 = one scale per output channel.
    pub group_size: usize,
    /// Symmetric groups (TPU-MLIR's `q_symmetric`; per group only).
    pub symmetric: bool,
}

/// Bits of the weights of a weight-only mode.
pub fn weight_bits(mode: QuantMode) -> Option<u32> {
    match mode {
        QuantMode::W8F16 | QuantMode::W8BF16 => Some(8),
        QuantMode::W4F16 | QuantMode::W4BF16 => Some(4),
        _ => None,
    }
}

/// The float type of the activations (and of every other op) of a
/// weight-only mode; other modes are returned unchanged.
pub fn float_mode(mode: QuantMode) -> QuantMode {
    match mode {
        QuantMode::W8F16 | QuantMode::W4F16 => QuantMode::F16,
        QuantMode::W8BF16 | QuantMode::W4BF16 => QuantMode::BF16,
        m => m,
    }
}

/// TPU-MLIR's `backend::Arch::NPU_NUM` of the chips with weight-only modes.
pub fn npu_num(p: Processor) -> usize {
    match p {
        Processor::Bm1688 | Processor::Cv186x => 32,
        _ => 64,
    }
}

/// A MatMul / Gemm whose weight can be weight-only quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightLayer {
    /// The constant float weight.
    pub weight: ValueId,
    /// Reduction length.
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// The weight is stored `[N, K]` (Gemm with `transB`), else `[K, N]`.
    pub stored_nk: bool,
}

/// The weight of `node` when it is a MatMul with a constant 2-D float right
/// operand and an activation left operand (TPU-MLIR: `isWeight(right)` and
/// a 2-D weight), or a Gemm with a constant B and an activation A (TPU-MLIR
/// imports Gemm as such a MatMul).
pub fn weight_layer(graph: &Graph, node: NodeId) -> Option<WeightLayer> {
    let n = graph.node(node);
    let trans_b = match &n.op {
        Op::MatMul => false,
        Op::Gemm(a) => a.trans_b,
        _ => return None,
    };
    let a = n.inputs.first().copied().flatten()?;
    if graph.constant_of(a).is_some() {
        return None;
    }
    let w = n.inputs.get(1).copied().flatten()?;
    let t = graph.constant_of(w)?;
    if t.dtype() != DType::F32 {
        return None;
    }
    let &[r0, r1] = t.dims() else { return None };
    let (k, nn) = if trans_b { (r1, r0) } else { (r0, r1) };
    Some(WeightLayer {
        weight: w,
        k,
        n: nn,
        stored_nk: trans_b,
    })
}

/// The integer weight of one layer in TPU-MLIR's order: `rows` groups of
/// `group` codes, row-major over `[N, K]` (channel, then K).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeight {
    /// Codes: int8 (signed per-channel 8-bit) or uint8 (4-bit codes in
    /// 0..=15, one per byte).
    pub codes: Codes,
    /// One scale per group, rounded to the float type.
    pub scale: Vec<f32>,
    /// One zero point per group (0 for signed codes).
    pub zero_point: Vec<u8>,
    /// Values per group (K when per channel).
    pub group: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Codes {
    I8(Vec<i8>),
    U8(Vec<u8>),
}

/// Rounds `s` in place to `format` (the export's and the chip's float
/// types).
pub(crate) fn round_to(s: &mut [f32], format: FloatFormat) {
    match format {
        FloatFormat::F16 => qtune_kernels::round_to_f16(s),
        FloatFormat::BF16 => qtune_kernels::round_to_bf16(s),
    }
}

/// `round(w / s) + zp` clamped to `[lo, hi]`; a zero scale (an all-zero
/// group, where TPU-MLIR divides by zero) gives the zero point, which
/// dequantizes to 0.
fn code(w: f32, s: f32, zp: f32, lo: f32, hi: f32) -> f32 {
    if s == 0.0 || !s.is_finite() {
        return zp.clamp(lo, hi);
    }
    ((w / s).round() + zp).clamp(lo, hi)
}

/// Quantizes `wt`, the weight as `[N, K]` row-major, with `bits` 8 or 4
/// (see the module docs for the rules).
pub fn quantize(
    wt: &[f32],
    n: usize,
    k: usize,
    bits: u32,
    opts: WeightOnly,
    format: FloatFormat,
) -> QuantizedWeight {
    debug_assert_eq!(wt.len(), n * k);
    let max_int: f32 = if bits == 4 { 15.0 } else { 255.0 };
    if opts.group_size == 0 {
        if bits == 8 {
            // TPU-MLIR's `sign`: the whole weight has a value <= 0.
            let signed = wt.iter().any(|&v| v <= 0.0);
            let div = if signed { 127.0 } else { 255.0 };
            let mut scale: Vec<f32> = wt
                .chunks(k.max(1))
                .map(|row| row.iter().fold(0f32, |m, v| m.max(v.abs())) / div)
                .collect();
            let codes_f: Vec<f32> = wt
                .chunks(k.max(1))
                .zip(&scale)
                .flat_map(|(row, &s)| {
                    row.iter().map(move |&v| {
                        if signed {
                            code(v, s, 0.0, -128.0, 127.0)
                        } else {
                            code(v, s, 0.0, 0.0, 255.0)
                        }
                    })
                })
                .collect();
            round_to(&mut scale, format);
            // Integers clamped to the code type above.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let codes = if signed {
                Codes::I8(codes_f.iter().map(|&c| c as i8).collect())
            } else {
                Codes::U8(codes_f.iter().map(|&c| c as u8).collect())
            };
            return QuantizedWeight {
                codes,
                zero_point: vec![0; scale.len()],
                scale,
                group: k,
            };
        }
        return asymmetric(wt, k, max_int, format);
    }
    let g = opts.group_size;
    if !opts.symmetric {
        return asymmetric(wt, g, max_int, format);
    }
    let zp = if bits == 4 { 8.0 } else { 128.0 };
    let mut scale = Vec::with_capacity(wt.len() / g);
    let mut codes = Vec::with_capacity(wt.len());
    for grp in wt.chunks(g) {
        let absmax = grp.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = 2.0 * absmax / max_int;
        for &v in grp {
            // In [0, max_int] by the clamp.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            codes.push(code(v, s, zp, 0.0, max_int) as u8);
        }
        scale.push(s);
    }
    round_to(&mut scale, format);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let zpu = zp as u8;
    QuantizedWeight {
        codes: Codes::U8(codes),
        zero_point: vec![zpu; scale.len()],
        scale,
        group: g,
    }
}

/// Asymmetric uint codes, one scale and zero point per `g` values.
fn asymmetric(wt: &[f32], g: usize, max_int: f32, format: FloatFormat) -> QuantizedWeight {
    let g = g.max(1);
    let mut scale = Vec::with_capacity(wt.len() / g);
    let mut zero_point = Vec::with_capacity(wt.len() / g);
    let mut codes = Vec::with_capacity(wt.len());
    for grp in wt.chunks(g) {
        let (lo, hi) = grp
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let s = (hi - lo).max(1e-5) / max_int;
        let zp = (-(lo / s).round()).clamp(0.0, max_int);
        for &v in grp {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            codes.push(code(v, s, zp, 0.0, max_int) as u8);
        }
        scale.push(s);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        zero_point.push(zp as u8);
    }
    round_to(&mut scale, format);
    QuantizedWeight {
        codes: Codes::U8(codes),
        scale,
        zero_point,
        group: g,
    }
}

impl QuantizedWeight {
    /// The dequantized weight `(q - zp) * s` as `[N, K]`, in f32 (before
    /// the rounding to the float type), for tests and checks.
    pub fn dequantized(&self) -> Vec<f32> {
        let g = self.group.max(1);
        let ints: Vec<f32> = match &self.codes {
            Codes::I8(v) => v.iter().map(|&c| f32::from(c)).collect(),
            Codes::U8(v) => v.iter().map(|&c| f32::from(c)).collect(),
        };
        ints.iter()
            .enumerate()
            .map(|(i, &q)| (q - f32::from(self.zero_point[i / g])) * self.scale[i / g])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_w8_signed_and_unsigned() {
        // Row 0 max 127 -> s 1; row 1 max 2.54 -> s 0.02.
        let w = [127.0, 2.5, -2.5, 0.4, 2.54, -1.0, 0.0, 0.01];
        let q = quantize(&w, 2, 4, 8, WeightOnly::default(), FloatFormat::F16);
        assert_eq!(q.group, 4);
        let Codes::I8(c) = &q.codes else {
            panic!("signed weight -> int8 codes")
        };
        // Half away from zero: 2.5 -> 3, -2.5 -> -3.
        assert_eq!(&c[..4], &[127, 3, -3, 0]);
        assert_eq!(c[4], 127);
        let all_positive = [1.0f32, 2.0, 0.5, 4.0];
        let q = quantize(
            &all_positive,
            1,
            4,
            8,
            WeightOnly::default(),
            FloatFormat::F16,
        );
        assert!(matches!(q.codes, Codes::U8(ref c) if c[3] == 255));
    }

    #[test]
    fn per_group_asymmetric_w4_covers_min_and_max() {
        let w: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.3).collect();
        let opts = WeightOnly {
            group_size: 8,
            symmetric: false,
        };
        let q = quantize(&w, 2, 8, 4, opts, FloatFormat::F16);
        let Codes::U8(c) = &q.codes else {
            panic!("uint codes")
        };
        assert_eq!(q.scale.len(), 2);
        assert_eq!((c[0], c[7]), (0, 15));
        assert_eq!(q.zero_point[0], 6); // -round(-0.3 / (0.7 / 15)) = 6
        // All positive (0.5..1.2): the zero point clamps to 0 and the codes
        // saturate, as TPU-MLIR's min/max rule gives.
        assert_eq!(q.zero_point[1], 0);
        assert_eq!((c[8], c[15]), (11, 15));
        let err = q.dequantized()[..8]
            .iter()
            .zip(&w)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 0.7 / 15.0 / 2.0 * 1.01, "error {err}");
    }

    #[test]
    fn per_group_symmetric_uses_the_middle_zero_point() {
        let w = [-1.0f32, 1.0, 0.5, 0.0];
        let opts = WeightOnly {
            group_size: 4,
            symmetric: true,
        };
        let q = quantize(&w, 1, 4, 4, opts, FloatFormat::F16);
        assert_eq!(q.zero_point, vec![8]);
        // s = 2/15 rounds up in f32, so +-1 / s = +-7.4999996 -> +-7, + 8.
        assert_eq!(q.codes, Codes::U8(vec![1, 15, 12, 8]));
        // 8 bits: +-absmax land on codes 1 and 255 around zero point 128.
        let q = quantize(&[-1.0, 0.999_999], 1, 2, 8, opts, FloatFormat::F16);
        assert_eq!(q.zero_point, vec![128]);
        assert_eq!(q.codes, Codes::U8(vec![1, 255]));
    }

    #[test]
    fn all_zero_group_dequantizes_to_zero() {
        let q = quantize(
            &[0.0; 8],
            2,
            4,
            8,
            WeightOnly {
                group_size: 4,
                symmetric: true,
            },
            FloatFormat::BF16,
        );
        assert!(q.dequantized().iter().all(|&v| v == 0.0));
    }
}
