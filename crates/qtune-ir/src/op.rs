//! The closed set of operators qtune runs, one attribute struct per op.
//!
//! Semantics follow the ONNX operator specification
//! (<https://onnx.ai/onnx/operators/>) for opsets 11 to 17. Attributes that
//! later opsets moved to inputs (Squeeze/Unsqueeze/Reduce* axes, Split's
//! split, Clip's bounds) are normalised by the importer: when the ONNX model
//! passes them as inputs they stay inputs; when it passes them as attributes
//! they are stored in the attribute struct. Executors and shape inference
//! accept both.

use qtune_tensor::DType;

/// ONNX `auto_pad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoPad {
    #[default]
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

impl AutoPad {
    /// The spelling, the same in ONNX and in the Top dialect.
    pub fn name(self) -> &'static str {
        match self {
            AutoPad::NotSet => "NOTSET",
            AutoPad::SameUpper => "SAME_UPPER",
            AutoPad::SameLower => "SAME_LOWER",
            AutoPad::Valid => "VALID",
        }
    }

    /// The value spelt `s`.
    pub fn parse(s: &str) -> Option<AutoPad> {
        [
            AutoPad::NotSet,
            AutoPad::SameUpper,
            AutoPad::SameLower,
            AutoPad::Valid,
        ]
        .into_iter()
        .find(|a| a.name() == s)
    }
}

/// Conv: <https://onnx.ai/onnx/operators/onnx__Conv.html>. Spatial rank 1
/// or 2 (1-D convs are run as 2-D with height 1).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConvAttrs {
    /// Empty means "take it from the weight shape".
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    /// ONNX order: all begins, then all ends.
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub group: usize,
    pub auto_pad: AutoPad,
}

/// ConvTranspose: <https://onnx.ai/onnx/operators/onnx__ConvTranspose.html>.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConvTransposeAttrs {
    pub conv: ConvAttrs,
    pub output_padding: Vec<usize>,
    pub output_shape: Vec<usize>,
}

/// MaxPool / AveragePool.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolAttrs {
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
    pub auto_pad: AutoPad,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GemmAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl Default for GemmAttrs {
    fn default() -> Self {
        GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        }
    }
}

/// The attributes of the reduction family ([`crate::reduce`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceAttrs {
    /// Axes from the attribute (opset < 13/18); `None` when absent (then the
    /// optional second input, or all axes).
    pub axes: Option<Vec<i64>>,
    pub keepdims: bool,
    pub noop_with_empty_axes: bool,
}

impl Default for ReduceAttrs {
    fn default() -> Self {
        ReduceAttrs {
            axes: None,
            keepdims: true,
            noop_with_empty_axes: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeMode {
    #[default]
    Nearest,
    Linear,
}

/// ONNX `coordinate_transformation_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CoordMode {
    #[default]
    HalfPixel,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
}

/// ONNX `nearest_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NearestMode {
    #[default]
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// Resize: <https://onnx.ai/onnx/operators/onnx__Resize.html>; inputs X,
/// roi, scales, sizes (opset 11+). Upsample (opset 9) is imported as Resize.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResizeAttrs {
    pub mode: ResizeMode,
    pub coord_mode: CoordMode,
    pub nearest_mode: NearestMode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClipAttrs {
    /// Bounds given as attributes (opset < 11); inputs 1 and 2 otherwise.
    pub min: Option<f32>,
    pub max: Option<f32>,
}

/// Defines [`Op`] from its one list of variants, and from the same list
/// [`Op::op_type`] (the variant's name) and [`SUPPORTED_OPS`] (every
/// variant but those marked `@internal`, the qtune-internal ops that ONNX
/// lacks).
macro_rules! ops {
    ($(#[$enum_meta:meta])* pub enum Op { $(
        $(#[$meta:meta])*
        $(@$internal:ident)?
        $variant:ident
        $( ( $($tuple:ty),* $(,)? ) )?
        $( { $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),* $(,)? } )?
    ),* $(,)? }) => {
        $(#[$enum_meta])*
        pub enum Op { $(
            $(#[$meta])*
            $variant
            $( ( $($tuple),* ) )?
            $( { $( $(#[$fmeta])* $field : $fty ),* } )?
        ),* }

        impl Op {
            /// The ONNX op type (or the name of a qtune-internal op): the
            /// variant's name.
            pub fn op_type(&self) -> &'static str {
                match self {
                    $(Op::$variant { .. } => stringify!($variant),)*
                }
            }
        }

        /// Every ONNX op type the IR supports, for error messages and `qtune
        /// info`: the variants of [`Op`] in order, but the qtune-internal
        /// ones.
        pub static SUPPORTED_OPS: std::sync::LazyLock<Vec<&'static str>> =
            std::sync::LazyLock::new(|| {
                [$( ops!(@onnx $($internal)? $variant) ),*]
                    .into_iter()
                    .flatten()
                    .collect()
            });
    };
    (@onnx internal $variant:ident) => { None };
    (@onnx $variant:ident) => { Some(stringify!($variant)) };
}

ops! {
/// The operators of the IR. Variant names are ONNX op types.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Conv(ConvAttrs),
    ConvTranspose(ConvTransposeAttrs),
    BatchNormalization {
        epsilon: f32,
    },
    Gemm(GemmAttrs),
    /// ONNX MatMul; qtune also accepts an optional third input, a bias added
    /// along the last axis (TPU-MLIR's `top.MatMul` bias operand, which its
    /// canonicalizer fuses from a following Add). The ONNX export writes
    /// MatMul + Add for it.
    MatMul,
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// Max of two inputs: <https://onnx.ai/onnx/operators/onnx__Max.html>
    /// (ONNX's variadic form with two inputs), TPU-MLIR's `top.Max`.
    Max,
    /// Min of two inputs: <https://onnx.ai/onnx/operators/onnx__Min.html>
    /// (ONNX's variadic form with two inputs), TPU-MLIR's `top.Min`.
    Min,
    Sqrt,
    /// Floor: <https://onnx.ai/onnx/operators/onnx__Floor.html>; TPU-MLIR's
    /// `top.Floor` (its converter writes one after an integer Div).
    Floor,
    Exp,
    Erf,
    Tanh,
    Neg,
    Abs,
    Relu,
    Clip(ClipAttrs),
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    /// Elu: <https://onnx.ai/onnx/operators/onnx__Elu.html>, TPU-MLIR's
    /// `top.Elu`: `x` if `x > 0` else `alpha * (e^x - 1)`.
    Elu {
        alpha: f32,
    },
    Softmax {
        axis: i64,
    },
    /// LogSoftmax: <https://onnx.ai/onnx/operators/onnx__LogSoftmax.html>,
    /// TPU-MLIR's `top.Softmax` with `log = true`:
    /// `x - max - ln(sum(exp(x - max)))` along `axis`.
    LogSoftmax {
        axis: i64,
    },
    /// `x * sigmoid(x)` (TPU-MLIR's `top.SiLU`; ONNX has no such op, the
    /// export writes Sigmoid + Mul).
    @internal SiLU,
    /// GELU: <https://onnx.ai/onnx/operators/onnx__Gelu.html> (opset 20),
    /// TPU-MLIR's `top.GELU`. `0.5 x (1 + erf(x / sqrt 2))`, or with
    /// `approximate` the tanh form `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715
    /// x^3)))`. The opset-17 export writes the decomposed pattern.
    Gelu {
        approximate: GeluApproximation,
    },
    /// LayerNormalization: <https://onnx.ai/onnx/operators/onnx__LayerNormalization.html>
    /// (opset 17), TPU-MLIR's `top.LayerNorm`: inputs X, scale?, bias?
    /// (qtune allows omitting the scale, as `top.LayerNorm` does); normalises
    /// over the axes from `axis` to the last; only the first output (Y).
    LayerNormalization {
        axis: i64,
        epsilon: f32,
    },
    MaxPool(PoolAttrs),
    AveragePool(PoolAttrs),
    GlobalAveragePool,
    GlobalMaxPool,
    ReduceMean(ReduceAttrs),
    ReduceSum(ReduceAttrs),
    ReduceL2(ReduceAttrs),
    ReduceMax(ReduceAttrs),
    ReduceMin(ReduceAttrs),
    /// ReduceL1: <https://onnx.ai/onnx/operators/onnx__ReduceL1.html>, the
    /// sum of absolute values; TPU-MLIR's `top.Reduce` mode `ReduceL1`.
    ReduceL1(ReduceAttrs),
    /// ReduceProd: <https://onnx.ai/onnx/operators/onnx__ReduceProd.html>;
    /// TPU-MLIR's `top.Reduce` mode `ReduceProd`.
    ReduceProd(ReduceAttrs),
    Concat {
        axis: i64,
    },
    /// `split` from the attribute (opset < 13); else the optional input 1;
    /// else equal parts.
    Split {
        axis: i64,
        split: Option<Vec<i64>>,
    },
    /// Inputs: data, starts, ends, axes?, steps? (opset 10+).
    Slice,
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<usize>>,
    },
    Flatten {
        axis: i64,
    },
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Resize(ResizeAttrs),
    Gather {
        axis: i64,
    },
    Cast {
        to: DType,
    },
    Expand,
    /// Tile: <https://onnx.ai/onnx/operators/onnx__Tile.html>; inputs
    /// input, repeats (TPU-MLIR's `top.Tile`, which its canonicalizer makes
    /// of an Expand that broadcasts).
    Tile,
    /// SpaceToDepth: <https://onnx.ai/onnx/operators/onnx__SpaceToDepth.html>
    /// (DCR order: output channel `(by * b + bx) * C + c`); TPU-MLIR's
    /// `top.Depth2Space` with `is_inversed = true`, which its canonicalizer
    /// makes of YOLO's "Focus" slices.
    SpaceToDepth {
        blocksize: usize,
    },
    /// DepthToSpace: <https://onnx.ai/onnx/operators/onnx__DepthToSpace.html>;
    /// TPU-MLIR's `top.Depth2Space`.
    DepthToSpace {
        blocksize: usize,
        /// `CRD` (column-row-depth) instead of the default `DCR`.
        crd: bool,
    },
    Where,
    And,
    Or,
    Not,
    Equal,
    Less,
    Greater,
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Identity,
    /// QuantizeLinear (opset 10+): inputs x, y_scale, y_zero_point?; per
    /// axis when the scale is 1-D. The output type is the zero point's (INT8
    /// or UINT8; UINT8 without one). `q = saturate(round_half_even(x /
    /// scale) + zp)`.
    QuantizeLinear {
        axis: i64,
    },
    /// DequantizeLinear (opset 10+): inputs x (INT8, UINT8 or INT32),
    /// x_scale, x_zero_point?; `y = (x - zp) * scale` in float32.
    DequantizeLinear {
        axis: i64,
    },
    /// qtune-internal (not an ONNX op type): rounds float32 values to the
    /// nearest IEEE half or bfloat16 (ties to even) and keeps them as
    /// float32. ONNX `Cast(to=FLOAT16|BFLOAT16)` imports as this op (the
    /// following `Cast(to=FLOAT)` is then an identity), and it exports as
    /// that pair of Casts.
    @internal RoundFloat(FloatFormat),
    /// qtune-internal (not an ONNX op type): an int8 Conv, Gemm or MatMul
    /// computed on integer codes, as integer kernels (ONNX ConvInteger /
    /// MatMulInteger) do, and rescaled to float32. Inputs: x (UINT8 or INT8
    /// codes), w (INT8 constant), bias (INT32 constant, one per output
    /// channel; optional), scale (FLOAT32 constant, one or one per output
    /// channel). `y = f32(sum (x - x_zero_point) * w + bias) * scale`, the
    /// sum exact in int32. `qtune_deploy::integer_exact` builds it for the
    /// simulation; it is never imported or exported.
    @internal IntegerLayer(IntegerLayerAttrs),
}
}

/// What [`Op::IntegerLayer`] computes.
#[derive(Debug, Clone, PartialEq)]
pub enum IntegerKind {
    /// A convolution (NCHW input, OIHW weight).
    Conv(ConvAttrs),
    /// `x [..., k]` times the 2-D weight, `[k, m]` (MatMul, Gemm) or, when
    /// `transposed`, `[m, k]` (Gemm with transB); output `[..., m]`.
    MatMul { transposed: bool },
}

/// Attributes of [`Op::IntegerLayer`].
#[derive(Debug, Clone, PartialEq)]
pub struct IntegerLayerAttrs {
    pub kind: IntegerKind,
    /// The zero point of input 0's codes.
    pub x_zero_point: i32,
}

/// The form of [`Op::Gelu`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeluApproximation {
    /// The exact erf form (ONNX `approximate = "none"`, TPU-MLIR
    /// `approx_mode = "normal"`).
    #[default]
    None,
    /// The tanh form (ONNX and TPU-MLIR `"tanh"`).
    Tanh,
}

/// A reduced-precision float format (see [`Op::RoundFloat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatFormat {
    F16,
    BF16,
}

impl FloatFormat {
    /// The qtable / TPU-MLIR spelling.
    pub fn name(self) -> &'static str {
        match self {
            FloatFormat::F16 => "F16",
            FloatFormat::BF16 => "BF16",
        }
    }
}

impl Op {
    /// Ops whose output element at each position depends only on the input
    /// elements at the same (broadcast) position.
    pub fn is_elementwise(&self) -> bool {
        match self {
            unary_op!() | Op::Clip(_) | Op::Gelu { .. } => true,
            binary_op!() => self.binary().is_some_and(|b| !b.kind.is_bool()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_type_names_match_onnx() {
        assert_eq!(Op::Conv(ConvAttrs::default()).op_type(), "Conv");
        assert_eq!(Op::Softmax { axis: 1 }.op_type(), "Softmax");
        assert!(SUPPORTED_OPS.contains(&"BatchNormalization"));
        assert_eq!(SUPPORTED_OPS.len(), 67);
    }
}
