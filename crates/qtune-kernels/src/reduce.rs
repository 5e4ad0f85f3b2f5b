//! Reductions over a set of axes, ONNX `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin`,
//! `ReduceProd`, `ReduceL1`, `ReduceL2`, `ReduceSumSquare` (opset 1-22; axes given as
//! normalised, sorted, unique indices; `keepdims` only changes the output shape and is left
//! to the caller; an empty `axes` with `noop_with_empty_axes = 0` is the caller passing
//! every axis).
//!
//! Max/Min propagate NaN (as ONNX Runtime). Empty reductions give the identity
//! (`0`, `-inf`, `inf`, `1`; Mean gives NaN as 0/0).

use crate::pool::sum_f32;
use crate::util::{merge_axes, numel, row_offset, strides};

/// A reduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
    /// Product.
    Prod,
    /// Sum of absolute values.
    L1,
    /// Square root of the sum of squares.
    L2,
    /// Sum of squares.
    SumSquare,
}

impl ReduceOp {
    pub(crate) fn init(self) -> f32 {
        match self {
            ReduceOp::Max => f32::NEG_INFINITY,
            ReduceOp::Min => f32::INFINITY,
            ReduceOp::Prod => 1.0,
            _ => 0.0,
        }
    }
    #[inline(always)]
    pub(crate) fn map(self, x: f32) -> f32 {
        match self {
            ReduceOp::L1 => x.abs(),
            ReduceOp::L2 | ReduceOp::SumSquare => x * x,
            _ => x,
        }
    }
    #[inline(always)]
    pub(crate) fn combine(self, acc: f32, x: f32) -> f32 {
        match self {
            ReduceOp::Max if acc.is_nan() || x.is_nan() => f32::NAN,
            ReduceOp::Min if acc.is_nan() || x.is_nan() => f32::NAN,
            ReduceOp::Max => acc.max(x),
            ReduceOp::Min => acc.min(x),
            ReduceOp::Prod => acc * x,
            _ => acc + x,
        }
    }
    pub(crate) fn finish(self, acc: f32, count: usize) -> f32 {
        match self {
            ReduceOp::Mean => acc / count as f32,
            ReduceOp::L2 => acc.sqrt(),
            _ => acc,
        }
    }
}

/// Output dims (with `keepdims = 1`) of [`reduce`].
pub fn reduce_out_dims(dims: &[usize], axes: &[usize]) -> Vec<usize> {
    dims.iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect()
}

/// Reduces `input` (`dims`) over `axes` into `out`, whose length is the product of the kept
/// axes (see [`reduce_out_dims`]).
///
/// # Panics
/// Shape contract: panics if an axis is out of range or a slice length does not match.
pub fn reduce(op: ReduceOp, input: &[f32], dims: &[usize], axes: &[usize], out: &mut [f32]) {
    assert!(
        axes.iter().all(|&a| a < dims.len()),
        "reduce: axes {axes:?} out of range for rank {}",
        dims.len()
    );
    assert_eq!(input.len(), numel(dims), "reduce: input length");
    let od = reduce_out_dims(dims, axes);
    assert_eq!(out.len(), numel(&od), "reduce: output length");
    let count: usize = axes.iter().map(|&a| dims[a]).product();
    out.fill(op.init());
    if !input.is_empty() {
        let os = strides(&od);
        let os: Vec<usize> = os
            .iter()
            .enumerate()
            .map(|(i, &s)| if axes.contains(&i) { 0 } else { s })
            .collect();
        let (md, ms) = merge_axes(dims, &[strides(dims), os]);
        let inner = *md.last().unwrap_or(&1);
        let oi = *ms[1].last().unwrap_or(&0);
        for (r, row) in input.chunks_exact(inner).enumerate() {
            let o = row_offset(r, &md, &ms[1]);
            if oi == 0 {
                let v = fold_row(op, row);
                out[o] = op.combine(out[o], v);
            } else {
                for (ov, x) in out[o..o + inner].iter_mut().zip(row) {
                    *ov = op.combine(*ov, op.map(*x));
                }
            }
        }
    }
    for v in out.iter_mut() {
        *v = op.finish(*v, count);
    }
}

fn fold_row(op: ReduceOp, row: &[f32]) -> f32 {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => sum_f32(row),
        _ => row.iter().fold(op.init(), |a, &x| op.combine(a, op.map(x))),
    }
}
