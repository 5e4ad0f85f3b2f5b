//! qtune-kernels: f32 kernels as plain functions over slices.
//!
//! Layout conventions: every tensor is a dense row-major slice; image tensors are NCHW.
//! The kernels know nothing of graphs or tensor types: the caller (the executor) passes
//! shapes and attributes already validated and normalised (negative axes resolved,
//! ONNX defaults filled in).
//!
//! # Shape contract
//!
//! Kernels trust the caller's shapes. A slice whose length does not match the dims it is
//! passed with is a programming error of the caller: the kernels check the lengths with
//! `assert!` (cheap, once per call) and panic with a message naming the argument. No
//! kernel panics on data values (NaN, infinities, out-of-range floats are all fine).
//!
//! # Threads and determinism
//!
//! Kernels taking a [`Parallelism`] split their work into tiles whose size never depends
//! on the number of threads, and every output element is computed by exactly the same
//! arithmetic sequence whatever the number of threads: results are bit-identical for any
//! thread count. With [`Parallelism::Rayon`] the tiles run on the current rayon pool
//! (use `ThreadPool::install` to choose the pool).
//!
//! # Kernels
//!
//! | area | functions |
//! |---|---|
//! | convolution | [`conv2d`], [`conv2d_fused`] (+ activation), [`conv2d_fused_packed_uninit`] with [`PackedConvWeights`] (weights packed once), [`conv2d_fused_uninit`] and [`conv2d_pointwise_depthwise_uninit`] (into uninitialised buffers), [`conv2d_out_dims`], [`conv_transpose2d`], [`conv_transpose2d_out_dims`] |
//! | matrix multiply | [`gemm()`], [`batched_gemm`], [`matmul()`] (ONNX `MatMul`, broadcasting), [`matmul_transposed`], [`matmul_strided`] |
//! | pooling | [`max_pool2d`], [`avg_pool2d`], [`pool2d_out_dims`], [`global_avg_pool`], [`global_max_pool`] |
//! | normalisation | [`batch_norm`], [`softmax`], [`layer_norm`], [`layer_norm_in_place`] |
//! | elementwise | [`unary`] with [`UnaryOp`], [`binary`] with [`BinaryOp`], [`broadcast_shape`], [`gelu`] / [`gelu_into`] with [`GeluApproximation`] |
//! | reductions | [`reduce`] with [`ReduceOp`], [`reduce_out_dims`] |
//! | int8 layers (integer simulation) | [`int8::conv2d_int8`], [`int8::matmul_int8`] on packed weights ([`int8::PackedInt8`]), VNNI or portable, with fused requantization |
//! | quantization | [`quantize_linear`], [`dequantize_linear`], [`fake_quantize`], [`round_to_f16`], [`round_to_bf16`] |
//! | resize | [`resize_nearest`], [`resize_linear`], [`resize_scales`] |
//! | data movement (generic `T: Copy`) | [`transpose`], [`transpose_blocked`] (blocked, threaded), [`slice()`], [`concat()`], [`gather`], [`expand`], [`where_select`] |
//!
//! # CPU features
//!
//! Hot loops are compiled for the baseline target and again for AVX-512 and AVX2+FMA,
//! chosen at run time (`is_x86_feature_detected!`); no `target-cpu=native` is needed.
//! The GEMM microkernels come from the `gemm` crate (`x86-v4` feature, also dispatched at
//! run time).
//!
//! Every fast kernel has a slow, obviously-correct twin in [`mod@reference`], used by the
//! differential tests.
//!
//! # Which kernel runs a convolution
//!
//! On CPUs with AVX-512, from the shapes ([`PackedConvWeights::for_conv`] packs for it):
//! depthwise layers on the depthwise plane kernel; 1x1 stride-1 layers on the pointwise
//! kernel or the `gemm` crate; dense 3x3 stride-1 layers on Winograd F(4x4, 3x3)
//! (wide maps) or F(2x2, 3x3) (narrow ones) (`QTUNE_WINOGRAD=0` turns it off; its results
//! differ from a direct sum in the last bits, at most about 4e-6 of the terms' magnitude); the other dense layers on the direct kernel;
//! the RGB first layers and every layer on other CPUs on im2col + the `gemm` crate.

// Kernels take shapes and attributes as separate plain arguments on purpose (they know no
// tensor type), so long argument lists are the norm here.
#![allow(clippy::too_many_arguments)]

mod binary;
mod chanvec;
mod conv;
mod conv_transpose;
mod direct;
mod gelu;
mod gemm_kernel;
pub mod int8;
mod layer_norm;
mod layout;
mod matmul;
mod norm;
mod permute;
mod pointwise;
mod pool;
mod quant;
mod reduce;
pub mod reference;
mod resize;
mod rowvec;
mod simd;
pub mod similarity;
mod softmax;
mod transformer_reference;
mod unary;
mod util;
mod winograd;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_transformer;

pub use binary::{BinaryOp, InPlace, binary, binary_in_place, broadcast_shape};
pub use conv::{
    Conv2dParams, POINTWISE_DEPTHWISE_MAX_DEPTH, conv2d, conv2d_fused, conv2d_fused_packed_uninit,
    conv2d_fused_uninit, conv2d_out_dims, conv2d_pointwise_depthwise,
    conv2d_pointwise_depthwise_uninit,
};
pub use conv_transpose::{ConvTranspose2dParams, conv_transpose2d, conv_transpose2d_out_dims};
pub use direct::{PackedConvWeights, conv2d_uses_direct};
pub use gelu::{GeluApproximation, gelu, gelu_into};
pub use gemm_kernel::{batched_gemm, gemm, gemm_few_rows, gemm_few_rows_applies};
pub use layer_norm::{layer_norm, layer_norm_in_place, layer_norm_sequential_in_place};
pub use layout::{concat, expand, gather, slice, transpose, where_select};
pub use matmul::{
    StridedMatrix, matmul, matmul_out_dims, matmul_strided, matmul_transposed, matmul_uninit,
};
pub use norm::{affine_in_place, batch_norm, batch_norm_coefficients, batch_norm_uninit};
pub use permute::transpose_blocked;
pub use pool::{
    Pool2dParams, avg_pool2d, global_avg_pool, global_max_pool, max_pool2d, pool2d_out_dims,
};
pub use quant::{
    QRange, dequantize_linear, fake_quantize, quantize_linear, quantize_linear_i8,
    quantize_linear_reference, quantize_linear_u8, round_to_bf16, round_to_bf16_reference,
    round_to_f16, round_to_f16_reference,
};
pub use reduce::{ReduceOp, reduce, reduce_out_dims};
pub use rowvec::FewRowsWeights;
/// Products with at most this many rows (a batch-1 fully connected layer) stream their
/// right operand once instead of packing it (see `MatMul` / `Gemm`).
pub const FEW_ROWS_MAX: usize = rowvec::MAX_ROWS;
pub use resize::{
    CoordinateTransformMode, NearestMode, resize_linear, resize_nearest, resize_scales,
};
pub use softmax::softmax;
pub use unary::{UnaryOp, unary, unary_into};
pub use util::zeroed;

/// How a kernel may use threads.
///
/// Work is always split into tiles whose size does not depend on the thread count, and each
/// output element is computed by exactly the same arithmetic sequence whatever the number of
/// threads, so results are bit-identical for any thread count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Parallelism {
    /// Everything on the calling thread.
    #[default]
    Sequential,
    /// Tiles are spread over the current rayon thread pool.
    Rayon,
}
