//! Matrix multiply: ONNX `MatMul` / `Gemm` core (`C = A * B`, optional transposes, optional
//! accumulation into C), built on the `gemm` crate's microkernels.
//!
//! `gemm::gemm` is always called with `gemm::Parallelism::None` on fixed-size tiles of C;
//! the tiles are spread over rayon by this crate. The tile size never depends on the
//! thread count, so the arithmetic for each element of C is the same for any number of
//! threads.

use crate::Parallelism;
use crate::util::{SendPtr, for_each_tile};

/// Rows of C per tile.
const TILE_M: usize = 256;
/// Columns of C per tile.
const TILE_N: usize = 512;

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

fn views(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_trans: bool,
    b: &[f32],
    b_trans: bool,
) -> (MatRef, MatRef) {
    let a_view = if a_trans {
        MatRef {
            ptr: a.as_ptr(),
            rs: 1,
            cs: m as isize,
        }
    } else {
        MatRef {
            ptr: a.as_ptr(),
            rs: k as isize,
            cs: 1,
        }
    };
    let b_view = if b_trans {
        MatRef {
            ptr: b.as_ptr(),
            rs: 1,
            cs: k as isize,
        }
    } else {
        MatRef {
            ptr: b.as_ptr(),
            rs: n as isize,
            cs: 1,
        }
    };
    (a_view, b_view)
}

/// Tiled `C(m x n) = A * B` over raw views; tiles of `TILE_M x TILE_N`.
fn tiled(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    c: SendPtr<f32>,
    accumulate: bool,
    par: Parallelism,
) {
    let tm = m.div_ceil(TILE_M);
    let tn = n.div_ceil(TILE_N);
    let (a, b) = (SendView(a), SendView(b));
    for_each_tile(tm * tn, par, |t| {
        let (a, b) = (a.get(), b.get());
        let i0 = (t / tn) * TILE_M;
        let j0 = (t % tn) * TILE_N;
        let mm = TILE_M.min(m - i0);
        let nn = TILE_N.min(n - j0);
        let a_t = MatRef {
            ptr: a.ptr.wrapping_offset(i0 as isize * a.rs),
            ..a
        };
        let b_t = MatRef {
            ptr: b.ptr.wrapping_offset(j0 as isize * b.cs),
            ..b
        };
        // SAFETY: tile (i0, j0) lies inside C, A and B; tiles write disjoint parts of C.
        unsafe {
            gemm_tile(
                mm,
                nn,
                k,
                c.get().add(i0 * n + j0),
                n as isize,
                a_t,
                b_t,
                accumulate,
            )
        };
    });
}

#[derive(Clone, Copy)]
struct SendView(MatRef);
impl SendView {
    fn get(self) -> MatRef {
        self.0
    }
}
// SAFETY: the views are read-only for the duration of the parallel loop.
unsafe impl Send for SendView {}
// SAFETY: as above.
unsafe impl Sync for SendView {}

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
    let (av, bv) = views(m, k, n, a, a_trans, b, b_trans);
    let par = crate::util::par_for_work(par, 2 * m * n * k);
    tiled(m, k, n, av, bv, SendPtr(c.as_mut_ptr()), accumulate, par);
}

/// Batched matmul `C[i] = A[i] * B[i]` for `i in 0..batch`, ONNX `MatMul` with leading
/// batch axes. `a_stride` / `b_stride` are the element distances between consecutive
/// matrices (0 broadcasts one matrix over the batch); C is dense `[batch, m, n]`.
/// Broadcasting patterns that are not a single batch stride are handled by the caller
/// with a loop over calls.
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
    let tm = m.div_ceil(TILE_M);
    let tn = n.div_ceil(TILE_N);
    let per = tm * tn;
    let cp = SendPtr(c.as_mut_ptr());
    let (a_all, b_all) = (a, b);
    let par = crate::util::par_for_work(par, 2 * batch * m * n * k);
    for_each_tile(batch * per, par, |t| {
        let bi = t / per;
        let r = t % per;
        let (av, bv) = views(
            m,
            k,
            n,
            &a_all[bi * a_stride..],
            a_trans,
            &b_all[bi * b_stride..],
            b_trans,
        );
        let i0 = (r / tn) * TILE_M;
        let j0 = (r % tn) * TILE_N;
        let mm = TILE_M.min(m - i0);
        let nn = TILE_N.min(n - j0);
        let a_t = MatRef {
            ptr: av.ptr.wrapping_offset(i0 as isize * av.rs),
            ..av
        };
        let b_t = MatRef {
            ptr: bv.ptr.wrapping_offset(j0 as isize * bv.cs),
            ..bv
        };
        // SAFETY: the tile lies inside matrix `bi` of C; tiles write disjoint parts of C.
        unsafe {
            gemm_tile(
                mm,
                nn,
                k,
                cp.get().add(bi * m * n + i0 * n + j0),
                n as isize,
                a_t,
                b_t,
                false,
            )
        };
    });
}
