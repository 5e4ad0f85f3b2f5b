//! TPU-MLIR's canonical Top graph: the ops and op names TPU-MLIR's
//! `model_transform` writes for an ONNX model, so that calibration tables,
//! qtables and op names agree with TPU-MLIR's. The rules, each with the
//! TPU-MLIR source it follows, are listed in
//! `docs/tpu-mlir-canonical-graph.md`; in order:
//!
//! 1. the ONNX frontend's rewrites (`onnx_stage`): BatchNormalization
//!    folded into its Conv (the Conv keeps its name), LayerNorm, GELU (erf
//!    and tanh), HardSigmoid and HardSwish patterns, consecutive Slices;
//! 2. naming: every op `<first output>_<ONNX op type>`
//!    ([`crate::passes::name_as_top_ops`]);
//! 3. the ONNX converter's op choices (`convert`): constants of Sub/Div
//!    as AddConst/MulConst, `Pow 2` as `Mul`, `Neg` as `MulConst(-1)`,
//!    Flatten as Reshape, Split as Slices;
//! 4. the Top canonicalization patterns (`top_stage`): MatMul + bias, Relu
//!    fused into its producer (`do_relu`), SiLU, Expands (removed or
//!    Tiles), space-to-depth (`top.Depth2Space`).
//!
//! The float function is unchanged up to float rounding (Div by a constant
//! becomes a product with its reciprocal; fused LayerNorm and GELU round
//! differently from their decomposed forms).

mod convert;
mod onnx_stage;
mod top_stage;
mod util;

pub use top_stage::is_upsample;

/// Fuses every Relu / Clip(0, x) whose input only it reads into the op
/// producing that input (`do_relu` / `relu_limit`, named after the
/// activation), as the Top canonicalization does; returns the count. Run on
/// a QDQ graph it gives `Conv -> Relu -> QuantizeLinear` the fused form whose
/// requantization clamps the activation, as integer runtimes do.
pub fn fuse_relus(graph: &mut Graph) -> usize {
    top_stage::fuse_relu(graph)
}
pub(crate) use util::replace_uses;

use crate::{Graph, Op};

/// What [`canonicalize`] changed, rule by rule.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CanonicalReport {
    pub batchnorms_folded: usize,
    pub layer_norms: usize,
    pub gelus: usize,
    pub hard_sigmoids: usize,
    pub hard_swishes: usize,
    pub slices_merged: usize,
    pub values_named: usize,
    /// Sub / Div by a constant turned into Add / Mul.
    pub sub_div_by_const: usize,
    /// Add / Mul constants made one-element (AddConst / MulConst).
    pub scalar_consts: usize,
    pub pows: usize,
    pub negs: usize,
    pub flattens: usize,
    pub splits: usize,
    pub matmul_biases: usize,
    pub relus_fused: usize,
    pub silus: usize,
    pub expands_removed: usize,
    /// Expands that broadcast, as Tiles.
    pub tiles: usize,
    /// YOLO Focus slices + Concat as SpaceToDepth (`top.Depth2Space`).
    pub space_to_depth: usize,
    /// Ops before and after.
    pub ops_before: usize,
    pub ops_after: usize,
}

/// Rewrites a graph imported from ONNX (constants folded, shapes inferred,
/// tensors named as in the ONNX file) into TPU-MLIR's canonical Top graph,
/// with TPU-MLIR's op names. Values created by the rewrites get static
/// shapes where the rewrite knows them; run shape inference afterwards for
/// the rest.
pub fn canonicalize(graph: &mut Graph) -> CanonicalReport {
    let mut r = CanonicalReport {
        ops_before: graph.node_count(),
        ..Default::default()
    };
    // 1. ONNX frontend.
    r.batchnorms_folded = super::fold_batchnorm_into_conv_named(graph, super::FoldedName::Conv);
    r.layer_norms = onnx_stage::layer_norm(graph);
    r.gelus = onnx_stage::gelu_erf(graph) + onnx_stage::gelu_tanh(graph);
    let (sigmoids, swishes) = onnx_stage::hard_sigmoid_swish(graph);
    r.hard_sigmoids = sigmoids;
    r.hard_swishes = swishes;
    r.slices_merged = onnx_stage::merge_slices(graph);
    // 2. Names.
    r.values_named = super::name_as_top_ops(graph);
    // 3. Converter.
    let c = convert::convert_ops(graph);
    r.sub_div_by_const = c.sub_div_by_const;
    r.scalar_consts = c.scalar_consts;
    r.pows = c.pow;
    r.negs = c.neg;
    r.flattens = c.flatten;
    r.splits = c.split;
    // 4. Top canonicalization.
    r.matmul_biases = top_stage::matmul_bias(graph);
    r.silus = top_stage::silu(graph);
    r.relus_fused = top_stage::fuse_relu(graph);
    r.expands_removed = top_stage::identity_expand(graph);
    r.tiles = top_stage::expand_to_tile(graph);
    r.space_to_depth = top_stage::space_to_depth(graph);
    r.ops_after = graph.node_count();
    r
}

/// The suffix TPU-MLIR's naming gives an op: its ONNX op type, or the op
/// type of the node TPU-MLIR's ONNX rewriter creates (`GELU`).
pub(crate) fn top_name_suffix(op: &Op) -> &'static str {
    match op {
        Op::Gelu { .. } => "GELU",
        _ => op.op_type(),
    }
}
