//! The TPU profiles' lowering rules, as each op family states them (its
//! `tpu_float` and `range_flow`, registered in `crate::families`): which
//! ops a chip keeps in float, and how TPU-MLIR's `calibration_process`
//! (`lib/Conversion/TopToTpu/TopToTpu.cpp`, spec 4.2) moves calibrated
//! ranges through them. The deploy plan (`qtune-deploy/src/plan.rs`) applies
//! them; the passes' order and the sign rules of the range table are its.

use crate::{Graph, NodeId, ValueId};

/// TPU-MLIR's processor families, as its lowering rules tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpuChip {
    /// bm1684x, bm1688, bm1690, cv186x.
    Bm1684x,
    Bm1684,
    /// cv183x, cv182x, cv181x, cv180x.
    Cv18xx,
}

/// The float type a chip's lowering keeps an op in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepFloat {
    /// The profile's float type (`--fp_type`, F16 or BF16 by default).
    Profile,
    /// F32, whatever the profile.
    F32,
}

/// A chip's float rule for one node: the float type and why.
pub type TpuFloat = Option<(KeepFloat, &'static str)>;

/// How calibrated ranges flow through one node (the steps of
/// `calibration_process`, spec 4.2).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RangeFlow {
    /// Step 1: the output takes the input's range (Reshape, Permute).
    pub forwards_first: bool,
    /// Step 3: every input takes the output's range (Concat, Max and Min of
    /// tensors).
    pub into_inputs: bool,
    /// Step 4: the producer takes the output's range when the node is its
    /// only reader (Relu, MaxPool, Depth2Space, ...).
    pub backwards: bool,
    /// Step 7: the output takes the input's range.
    pub forwards: bool,
    /// The range the op fixes for its output (Sigmoid's and Softmax's
    /// `[0, 1]`), whatever the calibration measured.
    pub fixed: Option<(f64, f64)>,
}

/// Whether input `i` of `node` is a constant.
pub(crate) fn is_const(graph: &Graph, node: NodeId, i: usize) -> bool {
    input(graph, node, i).is_some_and(|v| graph.constant_of(v).is_some())
}

/// Whether input `i` of `node` is a one-element constant.
pub(crate) fn is_scalar_const(graph: &Graph, node: NodeId, i: usize) -> bool {
    input(graph, node, i)
        .and_then(|v| graph.constant_of(v))
        .is_some_and(|t| t.numel() == 1)
}

/// The rank of input `i` of `node` (0 when unknown).
pub(crate) fn input_rank(graph: &Graph, node: NodeId, i: usize) -> usize {
    input(graph, node, i)
        .and_then(|v| graph.shape_of(v).ok())
        .map_or(0, |s| s.0.len())
}

fn input(graph: &Graph, node: NodeId, i: usize) -> Option<ValueId> {
    graph.node(node).inputs.get(i).copied().flatten()
}
