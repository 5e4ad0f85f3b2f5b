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

/// The weight-only options of a deploy (`--q_group_size`, `--q_symmetric`,
/// `--q_method`, `--q_act_order`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightOnly {
    /// Values per group along K; 0 = one scale per output channel.
    pub group_size: usize,
    /// Symmetric groups (TPU-MLIR's `q_symmetric`; per group only).
    pub symmetric: bool,
    /// How the codes, scales and zero points are chosen.
    pub method: WeightMethod,
    /// GPTQ only: quantize the columns in order of decreasing Hessian
    /// diagonal (Frantar et al.'s act-order; the group grids are then fixed
    /// from the original weights, see [`crate::gptq`]).
    pub act_order: bool,
    /// GPTQ's dampening `lambda / mean(diag H)` in millionths (0: the
    /// paper's 0.01); an integer so that the options stay `Eq`.
    pub damp_ppm: u32,
    /// `clip` / `gptq_clip`: the clip search minimises each group's output
    /// error `d^T H_g d` (`H_g` the group's block of the input Hessian)
    /// instead of its weight error `d^T d` (AWQ's `auto_clip`,
    /// `--q_awq_clip`).
    pub clip_by_output: bool,
}

impl WeightOnly {
    /// GPTQ's relative dampening (default 0.01, Frantar et al.).
    pub fn damp(&self) -> f64 {
        match self.damp_ppm {
            0 => 0.01,
            p => f64::from(p) / 1e6,
        }
    }
}

/// How the weight-only codes are chosen. Every method writes the same
/// layout (uint / int codes, one scale and zero point per group), which the
/// chip's `A16MatMul` and ONNX Runtime run unchanged; only TPU-MLIR's own
/// lowering is limited to [`WeightMethod::Rtn`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightMethod {
    /// TPU-MLIR's rule: the group's min / max (or absmax), round to nearest.
    #[default]
    Rtn,
    /// Data-free clip search: per group, the shrink of the min / max range
    /// (factors 1.00, 0.99, ... 0.50) whose codes reconstruct the group's
    /// weights with the least squared error, then round to nearest.
    Clip,
    /// GPTQ (Frantar et al. 2022) with TPU-MLIR's min / max grids, from the
    /// Hessians of calibration inputs.
    Gptq,
    /// GPTQ with the grids of the clip search.
    GptqClip,
}

impl WeightMethod {
    pub const ALL: [WeightMethod; 4] = [
        WeightMethod::Rtn,
        WeightMethod::Clip,
        WeightMethod::Gptq,
        WeightMethod::GptqClip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WeightMethod::Rtn => "rtn",
            WeightMethod::Clip => "clip",
            WeightMethod::Gptq => "gptq",
            WeightMethod::GptqClip => "gptq_clip",
        }
    }

    /// Parses a name of [`WeightMethod::name`] (any case).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }

    /// Whether the method needs the Hessians of calibration inputs.
    pub fn needs_calibration(self) -> bool {
        matches!(self, WeightMethod::Gptq | WeightMethod::GptqClip)
    }
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

/// One weight-only layer quantized as the chip stores it.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub layer: WeightLayer,
    /// The float weight as `[N, K]`.
    pub wt: Vec<f32>,
    /// Output channels quantized (the first `n0`; grouped int4 leaves the
    /// rest past the NPU multiple in float).
    pub n0: usize,
    pub q: QuantizedWeight,
    pub bits: u32,
    pub format: FloatFormat,
}

/// Quantizes the weight of weight-only layer `id` (mode `mode`) under
/// `plan`'s weight-only options; `hessian` for the GPTQ methods.
pub fn quantize_node(
    graph: &Graph,
    plan: &crate::Plan,
    id: NodeId,
    mode: QuantMode,
    hessian: Option<&crate::gptq::Hessian>,
) -> Result<LayerWeights, crate::DeployError> {
    use crate::DeployError;
    let node = graph.node(id);
    let layer = weight_layer(graph, id).ok_or_else(|| {
        DeployError::Input(format!(
            "op `{}` ({}) is planned weight-only but has no constant 2-D weight",
            node.name,
            node.op.op_type()
        ))
    })?;
    let format = match float_mode(mode) {
        QuantMode::F16 => FloatFormat::F16,
        QuantMode::BF16 => FloatFormat::BF16,
        _ => {
            return Err(DeployError::Input(format!(
                "op `{}`: {mode} is not a weight-only mode",
                node.name
            )));
        }
    };
    let bits = weight_bits(mode).ok_or_else(|| {
        DeployError::Input(format!(
            "op `{}`: {mode} is not a weight-only mode",
            node.name
        ))
    })?;
    let (k, nn) = (layer.k, layer.n);
    let data = graph
        .constant_of(layer.weight)
        .map(qtune_tensor::Tensor::to_f32_vec)
        .ok_or_else(|| {
            DeployError::Input(format!("op `{}`: the weight is not a constant", node.name))
        })?;
    // TPU-MLIR's layout: [N, K].
    let wt: Vec<f32> = if layer.stored_nk {
        data
    } else {
        let mut t = vec![0f32; k * nn];
        for (ki, row) in data.chunks(nn).enumerate() {
            for (ni, &v) in row.iter().enumerate() {
                t[ni * k + ki] = v;
            }
        }
        t
    };
    let wo = plan.weight_only;
    // Grouped int4: only the first multiple of the NPU count is quantized
    // (the plan already sent layers below it to float).
    let npu = npu_num(plan.profile.processor);
    let n0 = if bits == 4 && wo.group_size > 0 {
        nn - nn % npu
    } else {
        nn
    };
    let base = &graph.value(layer.weight).name;
    let q = quantize_layer(&wt[..n0 * k], n0, k, bits, wo, format, hessian)
        .map_err(|e| DeployError::Input(format!("op `{}`, weight `{base}`: {e}", node.name)))?;
    Ok(LayerWeights {
        layer,
        wt,
        n0,
        q,
        bits,
        format,
    })
}

impl LayerWeights {
    /// The weight the chip multiplies with, in the layer's stored layout:
    /// `(q - zp) * s` rounded to the float type, and the float rows past
    /// `n0` rounded to it (the values the QDQ export computes).
    pub fn dequantized(&self) -> qtune_tensor::Tensor {
        let (k, nn) = (self.layer.k, self.layer.n);
        let mut nk = self.q.dequantized();
        round_to(&mut nk, self.format);
        let mut rest = self.wt[self.n0 * k..].to_vec();
        round_to(&mut rest, self.format);
        nk.extend(rest);
        let (dims, data) = if self.layer.stored_nk {
            (vec![nn, k], nk)
        } else {
            let mut t = vec![0f32; k * nn];
            for (ni, row) in nk.chunks(k).enumerate() {
                for (ki, &v) in row.iter().enumerate() {
                    t[ki * nn + ni] = v;
                }
            }
            (vec![k, nn], t)
        };
        qtune_tensor::Tensor::from_f32(dims, data).expect("dims match the data")
    }
}

/// The code range and the scale rule of one layer's groups, as
/// [`quantize`] picks them for TPU-MLIR's rules (bits, group size,
/// symmetry and, for 8-bit per channel, the sign of the whole weight).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scheme {
    /// 8-bit per channel, a weight with a value <= 0: int8 codes, zero
    /// point 0, `s = absmax / 127`.
    Signed,
    /// 8-bit per channel, an all-positive weight: uint8 codes, zero point
    /// 0, `s = absmax / 255`.
    Unsigned,
    /// Asymmetric min / max groups, codes `0..=max_int`.
    Asymmetric { max_int: f32 },
    /// Symmetric groups around the middle zero point (`--q_symmetric`).
    Middle { max_int: f32, zero_point: f32 },
}

/// The grid of one group: codes `clamp(round(w / scale) + zero_point, lo,
/// hi)`, dequantized as `(code - zero_point) * scale`. The scale is already
/// rounded to the float type, so the codes are chosen for the scale the
/// chip uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Grid {
    pub scale: f32,
    pub zero_point: f32,
    pub lo: f32,
    pub hi: f32,
}

impl Grid {
    /// The code of `w`.
    pub fn code(&self, w: f32) -> f32 {
        code(w, self.scale, self.zero_point, self.lo, self.hi)
    }

    /// The dequantized value of `w`'s code.
    pub fn dequantize(&self, w: f32) -> f32 {
        (self.code(w) - self.zero_point) * self.scale
    }
}

fn round_one(s: f32, format: FloatFormat) -> f32 {
    let mut v = [s];
    round_to(&mut v, format);
    v[0]
}

impl Scheme {
    /// The scheme of weight `wt` (`[N, K]`) under `bits` and `opts`, and
    /// its group length.
    pub fn of(wt: &[f32], k: usize, bits: u32, opts: WeightOnly) -> (Scheme, usize) {
        let max_int: f32 = if bits == 4 { 15.0 } else { 255.0 };
        if opts.group_size == 0 {
            if bits == 8 {
                if wt.iter().any(|&v| v <= 0.0) {
                    return (Scheme::Signed, k);
                }
                return (Scheme::Unsigned, k);
            }
            return (Scheme::Asymmetric { max_int }, k);
        }
        if opts.symmetric {
            let zero_point = if bits == 4 { 8.0 } else { 128.0 };
            return (
                Scheme::Middle {
                    max_int,
                    zero_point,
                },
                opts.group_size,
            );
        }
        (Scheme::Asymmetric { max_int }, opts.group_size)
    }

    /// The grid for a group whose values span `[lo, hi]`, with the range
    /// shrunk by `alpha` (1: TPU-MLIR's rule), the scale rounded to
    /// `format` before the zero point and the codes are derived from it.
    pub fn grid(self, lo: f32, hi: f32, alpha: f32, format: FloatFormat) -> Grid {
        let absmax = lo.abs().max(hi.abs()) * alpha;
        match self {
            Scheme::Signed => Grid {
                scale: round_one(absmax / 127.0, format),
                zero_point: 0.0,
                lo: -128.0,
                hi: 127.0,
            },
            Scheme::Unsigned => Grid {
                scale: round_one(absmax / 255.0, format),
                zero_point: 0.0,
                lo: 0.0,
                hi: 255.0,
            },
            Scheme::Asymmetric { max_int } => {
                let (lo, hi) = (lo * alpha, hi * alpha);
                let scale = round_one((hi - lo).max(1e-5) / max_int, format);
                let zero_point = if scale > 0.0 {
                    (-(lo / scale).round()).clamp(0.0, max_int)
                } else {
                    0.0
                };
                Grid {
                    scale,
                    zero_point,
                    lo: 0.0,
                    hi: max_int,
                }
            }
            Scheme::Middle {
                max_int,
                zero_point,
            } => Grid {
                scale: round_one(2.0 * absmax / max_int, format),
                zero_point,
                lo: 0.0,
                hi: max_int,
            },
        }
    }

    /// Whether the codes are int8 (else uint8).
    pub fn signed(self) -> bool {
        self == Scheme::Signed
    }
}

/// Shrink factors the clip search tries: 1.00 down to 0.50 by 0.01.
pub(crate) const CLIP_STEPS: usize = 51;

fn clip_alpha(i: usize) -> f32 {
    // i <= 50: exact in f32 after the division.
    #[allow(clippy::cast_precision_loss)]
    let f = i as f32;
    1.0 - f / 100.0
}

fn min_max(group: &[f32]) -> (f32, f32) {
    group
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// The grid of `group` under `scheme`: TPU-MLIR's min / max (`clip`
/// false), or the shrink factor of [`CLIP_STEPS`] whose codes give the
/// least `sum (w - dequantized)^2` over the group (`clip` true; on equal
/// errors the wider range wins, so a group RTN already reconstructs
/// exactly keeps it).
pub(crate) fn group_grid(group: &[f32], scheme: Scheme, clip: bool, format: FloatFormat) -> Grid {
    let (lo, hi) = min_max(group);
    if !clip {
        return scheme.grid(lo, hi, 1.0, format);
    }
    let mut best = scheme.grid(lo, hi, 1.0, format);
    let mut best_err = f64::INFINITY;
    for i in 0..CLIP_STEPS {
        let grid = scheme.grid(lo, hi, clip_alpha(i), format);
        let err: f64 = group
            .iter()
            .map(|&w| f64::from(w - grid.dequantize(w)).powi(2))
            .sum();
        if err < best_err {
            best_err = err;
            best = grid;
        }
    }
    best
}

/// Shrink factors the output-error clip search tries: 1.00 down to 0.50 by
/// 0.025 (AWQ's `auto_clip` grid is 1.00 to 0.55 by 0.05).
pub(crate) const OUTPUT_CLIP_STEPS: usize = 21;

/// The input Hessian (`K x K`) whose diagonal block weighs a group's
/// error, and the group's first column.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HBlock<'a> {
    pub h: &'a [f64],
    pub k: usize,
    pub c0: usize,
}

/// `d^T H_g d` of the group starting at column `hb.c0`.
pub(crate) fn block_error(d: &[f64], hb: HBlock) -> f64 {
    let mut e = 0.0;
    for (i, &di) in d.iter().enumerate() {
        let row = &hb.h[(hb.c0 + i) * hb.k + hb.c0..(hb.c0 + i) * hb.k + hb.c0 + d.len()];
        let mut t = [0f64; 4];
        let chunks = d.len() / 4;
        for c in 0..chunks {
            for l in 0..4 {
                t[l] += row[c * 4 + l] * d[c * 4 + l];
            }
        }
        let mut tail = 0.0;
        for j in chunks * 4..d.len() {
            tail += row[j] * d[j];
        }
        e += di * ((t[0] + t[1]) + (t[2] + t[3]) + tail);
    }
    e
}

/// The grid of `group` (columns `hb.c0..`) whose codes give the least
/// output error `d^T H_g d` among the shrink factors of
/// [`OUTPUT_CLIP_STEPS`] (on equal errors the wider range wins).
pub(crate) fn group_grid_output(
    group: &[f32],
    scheme: Scheme,
    format: FloatFormat,
    hb: HBlock,
) -> Grid {
    let (lo, hi) = min_max(group);
    let mut best = scheme.grid(lo, hi, 1.0, format);
    let mut best_err = f64::INFINITY;
    let mut d = vec![0f64; group.len()];
    for i in 0..OUTPUT_CLIP_STEPS {
        // i <= 20: exact.
        #[allow(clippy::cast_precision_loss)]
        let alpha = 1.0 - i as f32 * 0.025;
        let grid = scheme.grid(lo, hi, alpha, format);
        for (e, &w) in d.iter_mut().zip(group) {
            *e = f64::from(w - grid.dequantize(w));
        }
        let err = block_error(&d, hb);
        if err < best_err {
            best_err = err;
            best = grid;
        }
    }
    best
}

/// [`quantize_on_grids`] with the output-error clip search: `h` the
/// layer's input Hessian (`K x K`).
pub(crate) fn quantize_on_output_grids(
    wt: &[f32],
    k: usize,
    bits: u32,
    opts: WeightOnly,
    format: FloatFormat,
    h: &[f64],
) -> QuantizedWeight {
    use rayon::prelude::*;
    let (scheme, g) = Scheme::of(wt, k, bits, opts);
    let g = g.max(1);
    let rows: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = wt
        .par_chunks(k)
        .map(|row| {
            let mut codes = Vec::with_capacity(k);
            let mut scale = Vec::new();
            let mut zero_point = Vec::new();
            for (j, grp) in row.chunks(g).enumerate() {
                let grid = group_grid_output(grp, scheme, format, HBlock { h, k, c0: j * g });
                codes.extend(grp.iter().map(|&w| grid.code(w)));
                scale.push(grid.scale);
                zero_point.push(grid.zero_point);
            }
            (codes, scale, zero_point)
        })
        .collect();
    let mut codes = Vec::with_capacity(wt.len());
    let mut scale = Vec::new();
    let mut zero_point = Vec::new();
    for (c, s, z) in rows {
        codes.extend(c);
        scale.extend(s);
        zero_point.extend(z);
    }
    QuantizedWeight::from_parts(scheme, &codes, scale, &zero_point, g)
}

/// Quantizes `wt` (`[N, K]`) group by group on the grids of
/// [`group_grid`] (`--q_method clip` with `clip`; with `clip` false it is
/// round to nearest with the scale rounded first, the grid GPTQ starts
/// from).
pub(crate) fn quantize_on_grids(
    wt: &[f32],
    k: usize,
    bits: u32,
    opts: WeightOnly,
    clip: bool,
    format: FloatFormat,
) -> QuantizedWeight {
    let (scheme, g) = Scheme::of(wt, k, bits, opts);
    let g = g.max(1);
    let mut scale = Vec::with_capacity(wt.len() / g);
    let mut zero_point = Vec::with_capacity(wt.len() / g);
    let mut codes = Vec::with_capacity(wt.len());
    for grp in wt.chunks(g) {
        let grid = group_grid(grp, scheme, clip, format);
        codes.extend(grp.iter().map(|&w| grid.code(w)));
        scale.push(grid.scale);
        zero_point.push(grid.zero_point);
    }
    QuantizedWeight::from_parts(scheme, &codes, scale, &zero_point, g)
}

/// Quantizes one layer's weight `wt` (`[N, K]`) by `opts.method`;
/// `hessian` (the layer's input Hessian, see [`crate::gptq`]) is needed by
/// the GPTQ methods.
pub fn quantize_layer(
    wt: &[f32],
    n: usize,
    k: usize,
    bits: u32,
    opts: WeightOnly,
    format: FloatFormat,
    hessian: Option<&crate::gptq::Hessian>,
) -> Result<QuantizedWeight, String> {
    match opts.method {
        WeightMethod::Rtn => Ok(quantize(wt, n, k, bits, opts, format)),
        WeightMethod::Clip if opts.clip_by_output => {
            let h = checked_hessian(opts, hessian, k)?;
            Ok(quantize_on_output_grids(wt, k, bits, opts, format, &h.sum))
        }
        WeightMethod::Clip => Ok(quantize_on_grids(wt, k, bits, opts, true, format)),
        WeightMethod::Gptq | WeightMethod::GptqClip => {
            let h = checked_hessian(opts, hessian, k)?;
            let gopts = crate::gptq::GptqOptions {
                act_order: opts.act_order,
                clip_grid: opts.method == WeightMethod::GptqClip,
                output_clip: opts.clip_by_output && opts.method == WeightMethod::GptqClip,
                damp: opts.damp(),
                ..Default::default()
            };
            crate::gptq::gptq(wt, n, k, &h.sum, bits, opts, gopts, format)
        }
    }
}

/// The layer's input Hessian, which the method needs, with `K` checked.
fn checked_hessian(
    opts: WeightOnly,
    hessian: Option<&crate::gptq::Hessian>,
    k: usize,
) -> Result<&crate::gptq::Hessian, String> {
    let h = hessian.ok_or_else(|| {
        format!(
            "{} needs the Hessian of the layer's input",
            opts.method.name()
        )
    })?;
    if h.k != k {
        return Err(format!(
            "the Hessian is {0} x {0}, the weight has K = {k}",
            h.k
        ));
    }
    Ok(h)
}

impl QuantizedWeight {
    /// Whether the codes are int8.
    pub fn codes_signed(&self) -> bool {
        matches!(self.codes, Codes::I8(_))
    }

    /// Assembles codes given as integral f32 values in the scheme's range.
    pub(crate) fn from_parts(
        scheme: Scheme,
        codes: &[f32],
        scale: Vec<f32>,
        zero_point: &[f32],
        group: usize,
    ) -> Self {
        // Integral values clamped to the code type's range by `Grid::code`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let codes = if scheme.signed() {
            Codes::I8(codes.iter().map(|&c| c as i8).collect())
        } else {
            Codes::U8(codes.iter().map(|&c| c as u8).collect())
        };
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let zero_point = zero_point.iter().map(|&z| z as u8).collect();
        QuantizedWeight {
            codes,
            scale,
            zero_point,
            group,
        }
    }

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
            ..Default::default()
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
            ..Default::default()
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
                ..Default::default()
            },
            FloatFormat::BF16,
        );
        assert!(q.dequantized().iter().all(|&v| v == 0.0));
    }

    /// Squared reconstruction error of each group.
    fn group_errors(w: &[f32], q: &QuantizedWeight) -> Vec<f64> {
        let d = q.dequantized();
        w.chunks(q.group)
            .zip(d.chunks(q.group))
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum())
            .collect()
    }

    /// The clip search never reconstructs a group worse than the unclipped
    /// grid (alpha 1 is a candidate), and at 4 bits finds a shrunk range
    /// that does better; every scheme (8-bit signed / unsigned per channel,
    /// asymmetric, symmetric groups).
    #[test]
    fn clip_search_is_never_worse_and_clips_outliers() {
        let mut w: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.2)
            .collect();
        w[3] = 1.5; // an outlier in the first group of 32
        let all_positive: Vec<f32> = w.iter().map(|v| v.abs() + 0.01).collect();
        let cases = [
            (&w, 8, 0, false),
            (&all_positive, 8, 0, false),
            (&w, 4, 0, false),
            (&w, 4, 32, false),
            (&w, 4, 32, true),
            (&w, 8, 32, false),
        ];
        for (i, (data, bits, group, symmetric)) in cases.into_iter().enumerate() {
            let opts = WeightOnly {
                group_size: group,
                symmetric,
                ..Default::default()
            };
            let plain = quantize_on_grids(data, 64, bits, opts, false, FloatFormat::F16);
            let clip = quantize_on_grids(data, 64, bits, opts, true, FloatFormat::F16);
            assert_eq!(plain.codes_signed(), bits == 8 && group == 0 && i == 0);
            let (pe, ce) = (group_errors(data, &plain), group_errors(data, &clip));
            for (g, (p, c)) in pe.iter().zip(&ce).enumerate() {
                assert!(c <= p, "case {i}, group {g}: clip {c} > plain {p}");
            }
            // With 16 levels a shrunk range wins somewhere (with 256 the
            // outlier costs more clipped than the finer step saves).
            let (ps, cs): (f64, f64) = (pe.iter().sum(), ce.iter().sum());
            if bits == 4 {
                assert!(
                    cs < ps,
                    "case {i}: clip search found nothing ({cs} vs {ps})"
                );
            }
        }
    }

    /// RTN on pre-rounded scales (the grids GPTQ starts from) stays within
    /// half a step of every weight inside the range.
    #[test]
    fn grids_round_to_nearest_within_half_a_step() {
        let w: Vec<f32> = (0..64).map(|i| (i as f32 * 0.73).sin()).collect();
        let opts = WeightOnly {
            group_size: 16,
            ..Default::default()
        };
        let q = quantize_on_grids(&w, 64, 4, opts, false, FloatFormat::F16);
        let d = q.dequantized();
        for (i, (a, b)) in w.iter().zip(&d).enumerate() {
            let s = q.scale[i / 16];
            assert!(
                (a - b).abs() <= s * 0.5 * 1.001,
                "{i}: {a} vs {b}, step {s}"
            );
        }
        assert_eq!(
            WeightMethod::parse("GPTQ_clip"),
            Some(WeightMethod::GptqClip)
        );
        assert_eq!(WeightMethod::parse("awq"), None);
    }
}
