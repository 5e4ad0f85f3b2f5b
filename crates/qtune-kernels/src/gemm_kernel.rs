//! Matrix multiply: ONNX `MatMul` / `Gemm` core (`C = A * B`, optional transposes, optional
//! accumulation into C), built on the `gemm` crate's microkernels.
//!
//! `gemm::gemm` is always called with `gemm::Parallelism::None` on tiles of C whose size
//! depends only on the shape (chosen in [`crate::matmul`], which also runs the batched and
//! strided forms); the tiles are spread over rayon by this crate. The tile size never depends
//! on the thread count, so the arithmetic for each element of C is the same for any number of
//! threads.

use crate::Parallelism;
use crate::matmul::{self, StridedMatrix, as_uninit};
use crate::rowvec::FewRowsWeights;

/// A strided matrix view passed to the `gemm` crate: element `(i, j)` is at
/// `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

/// `dst(m x n) = lhs(m x k) * rhs(k x n)` (or `dst += ...` when `accumulate`), one call into
/// the `gemm` crate without internal threading.
///
/// # Safety
/// All three views must be valid for the given extents and `dst` must not alias the inputs.
pub(crate) unsafe fn gemm_tile(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    lhs: MatRef,
    rhs: MatRef,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: (i, j) is inside the dst view.
                    unsafe { *dst.offset(i as isize * dst_rs + j as isize) = 0.0 };
                }
            }
        }
        return;
    }
    // gemm computes dst := alpha * dst + beta * lhs * rhs, reading dst only if read_dst.
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `C = A * B`, or `C += A * B` when `accumulate`. ONNX `MatMul` (2-D) and the matrix part of
/// `Gemm` (the caller applies `alpha`, `beta` and `C` bias).
///
/// `A` is `m x k` row-major (or `k x m` when `a_trans`), `B` is `k x n` (or `n x k` when
/// `b_trans`), `C` is `m x n`.
///
/// # Panics
/// Shape contract: panics if a slice is shorter than its matrix.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_trans: bool,
    b: &[f32],
    b_trans: bool,
    c: &mut [f32],
    accumulate: bool,
    par: Parallelism,
) {
    assert!(
        a.len() >= m * k,
        "gemm: A has {} elements, needs {}",
        a.len(),
        m * k
    );
    assert!(
        b.len() >= k * n,
        "gemm: B has {} elements, needs {}",
        b.len(),
        k * n
    );
    assert!(
        c.len() >= m * n,
        "gemm: C has {} elements, needs {}",
        c.len(),
        m * n
    );
    let av = StridedMatrix::dense(a, &[], m, k, a_trans);
    let bv = StridedMatrix::dense(b, &[], k, n, b_trans);
    matmul::run(
        &[],
        m,
        k,
        n,
        av,
        bv,
        as_uninit(&mut c[..m * n]),
        accumulate,
        par,
    );
}

/// Whether a product of `m` rows, depth `k` and `n` columns runs on the few-row kernel here
/// (at most [`crate::FEW_ROWS_MAX`] rows, on a CPU with AVX-512), so that packing its `B`
/// beforehand ([`FewRowsWeights`], [`gemm_few_rows`]) is of use.
pub fn gemm_few_rows_applies(m: usize, k: usize, n: usize) -> bool {
    crate::rowvec::applies(1, m, k, n)
}

/// [`gemm`] with `B` packed beforehand ([`FewRowsWeights`]) for a product of at most
/// [`crate::FEW_ROWS_MAX`] rows, on the kernel [`gemm`] runs such products on: the same bits.
/// A shape that kernel does not take (or a CPU without AVX-512) returns `false` with `c`
/// untouched; the caller then runs [`gemm`].
///
/// # Panics
/// If a slice is too short for its dims.
pub fn gemm_few_rows(
    m: usize,
    a: &[f32],
    a_trans: bool,
    b: &FewRowsWeights,
    c: &mut [f32],
    accumulate: bool,
    par: Parallelism,
) -> bool {
    let (k, n) = b.dims();
    if !gemm_few_rows_applies(m, k, n) {
        return false;
    }
    assert!(a.len() >= m * k, "gemm_few_rows: A too short");
    assert!(c.len() >= m * n, "gemm_few_rows: C too short");
    let av = StridedMatrix::dense(a, &[], m, k, a_trans);
    crate::rowvec::run_packed(m, &av, b, as_uninit(&mut c[..m * n]), accumulate, par);
    true
}

/// Batched matmul `C[i] = A[i] * B[i]` for `i in 0..batch`, ONNX `MatMul` with leading
/// batch axes. `a_stride` / `b_stride` are the element distances between consecutive
/// matrices (0 broadcasts one matrix over the batch); C is dense `[batch, m, n]`.
/// Other broadcasting patterns and layouts: [`crate::matmul()`],
/// [`crate::matmul_strided`].
///
/// # Panics
/// Shape contract: panics if a slice is too short for `batch` matrices at its stride.
#[allow(clippy::too_many_arguments)]
pub fn batched_gemm(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_stride: usize,
    a_trans: bool,
    b: &[f32],
    b_stride: usize,
    b_trans: bool,
    c: &mut [f32],
    par: Parallelism,
) {
    if batch == 0 {
        return;
    }
    assert!(
        a.len() >= (batch - 1) * a_stride + m * k,
        "batched_gemm: A too short"
    );
    assert!(
        b.len() >= (batch - 1) * b_stride + k * n,
        "batched_gemm: B too short"
    );
    assert!(c.len() >= batch * m * n, "batched_gemm: C too short");
    let (a_bs, b_bs) = ([a_stride], [b_stride]);
    let av = StridedMatrix::dense(a, &a_bs, m, k, a_trans);
    let bv = StridedMatrix::dense(b, &b_bs, k, n, b_trans);
    matmul::run(
        &[batch],
        m,
        k,
        n,
        av,
        bv,
        as_uninit(&mut c[..batch * m * n]),
        false,
        par,
    );
}
