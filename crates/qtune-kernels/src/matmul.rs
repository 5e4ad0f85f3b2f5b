//! Batched matrix multiply over strided operands: ONNX `MatMul`
//! (<https://onnx.ai/onnx/operators/onnx__MatMul.html>, opset 1-13: numpy `matmul`, batch axes
//! broadcast, 1-D operands promoted and the promoted axis removed), with the operand
//! transposes of TPU-MLIR's `top.MatMul` (`left_transpose` / `right_transpose`: the last two
//! axes of an operand are stored swapped) and, through [`matmul_strided`], any strided layout
//! of the batch axes (for example `[B, S, H, D]` operands seen as `H` batches of `S x D`,
//! TPU-MLIR's `hdim_is_batch`).
//!
//! Products of at most [`crate::rowvec::MAX_ROWS`] rows (batch-1 fully connected layers) run
//! on [`crate::rowvec`]. Every other form runs on the `gemm` crate's micro-kernels through the
//! same tiles (see [`crate::gemm_kernel`]): C is cut into tiles whose size depends only on the
//! shape, never on the thread count, so every element of C is computed by the same arithmetic
//! for any number of threads. A right operand shared by every batch (a 2-D weight, or stride 0 on every batch axis)
//! against a left operand whose batches are stacked rows is run as one tall product.

use std::mem::MaybeUninit;

use crate::Parallelism;
use crate::gemm_kernel::{MatRef, gemm_tile};
use crate::util::{SendPtr, broadcast_strides, for_each_tile, par_for_work};

/// Rows of C per tile. After the `gemm` crate's internal transpose (it wants a column-major
/// destination) the rows of C are its columns, which it runs six at a time; up to 48 of them it
/// reads the right operand in place instead of re-packing it for every call, which on the
/// 128-row products of a BERT layer measured 3-5 % faster than 64- or 96-row tiles, and the
/// same on 1024 rows.
const TILE_ROWS: usize = 48;
/// Largest number of columns of C per tile.
const TILE_COLS_MAX: usize = 512;
/// Column tiles are split (in multiples of [`COL_QUANTUM`]) until there are at least this many
/// tiles, so that a batch-1 product spreads over the threads in pieces small enough to balance;
/// a single 128 x 384 product is 18 tiles of 48 x 64. Measured: 48 x 64 tiles run as fast as
/// one 128 x 384 call on one thread.
const MIN_TILES: usize = 16;
/// Column tiles are multiples of 64: the `gemm` crate's widest micro-kernel covers 64 rows of
/// its (transposed) problem, i.e. 64 columns of C.
const COL_QUANTUM: usize = 64;
/// Column tiles are not split below this many flops: the call overhead would dominate.
const MIN_TILE_FLOPS: usize = 1 << 18;

/// One operand of [`matmul_strided`]: element `(batch index b, row i, column j)` of the matrix
/// is `data[Σ b_t * batch_strides[t] + i * row_stride + j * col_stride]`. A batch stride of 0
/// broadcasts the operand along that axis.
#[derive(Clone, Copy, Debug)]
pub struct StridedMatrix<'a> {
    /// The operand's buffer.
    pub data: &'a [f32],
    /// One stride per output batch axis (0 = broadcast).
    pub batch_strides: &'a [usize],
    /// Distance between consecutive rows.
    pub row_stride: usize,
    /// Distance between consecutive columns.
    pub col_stride: usize,
}

impl<'a> StridedMatrix<'a> {
    /// A dense row-major `rows x cols` matrix per batch (or its transpose, when `transposed`:
    /// stored `cols x rows`), batches `rows * cols` apart along the given strides (in matrices).
    pub(crate) fn dense(
        data: &'a [f32],
        batch_strides: &'a [usize],
        rows: usize,
        cols: usize,
        transposed: bool,
    ) -> Self {
        let (row_stride, col_stride) = if transposed { (1, rows) } else { (cols, 1) };
        StridedMatrix {
            data,
            batch_strides,
            row_stride,
            col_stride,
        }
    }

    /// Largest element offset addressed for the given batch dims and matrix extents.
    fn max_offset(&self, batch_dims: &[usize], rows: usize, cols: usize) -> usize {
        let batch: usize = batch_dims
            .iter()
            .zip(self.batch_strides)
            .map(|(&d, &s)| d.saturating_sub(1) * s)
            .sum();
        batch + rows.saturating_sub(1) * self.row_stride + cols.saturating_sub(1) * self.col_stride
    }
}

/// Output dims of ONNX `MatMul` for the given operand dims (1-D operands promoted, batch axes
/// broadcast); `None` if the inner dimensions differ or the batch axes do not broadcast.
/// `a_trans` / `b_trans` say that the operand's last two axes are stored swapped (ignored for
/// 1-D operands).
pub fn matmul_out_dims(
    a_dims: &[usize],
    a_trans: bool,
    b_dims: &[usize],
    b_trans: bool,
) -> Option<Vec<usize>> {
    let p = Promoted::new(a_dims, a_trans, b_dims, b_trans)?;
    Some(p.out_dims())
}

/// The operands of an ONNX `MatMul` after 1-D promotion.
struct Promoted {
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    batch_dims: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
    a_trans: bool,
    b_trans: bool,
    a_vector: bool,
    b_vector: bool,
}

impl Promoted {
    fn new(a_dims: &[usize], a_trans: bool, b_dims: &[usize], b_trans: bool) -> Option<Self> {
        if a_dims.is_empty() || b_dims.is_empty() {
            return None;
        }
        let a_vector = a_dims.len() == 1;
        let b_vector = b_dims.len() == 1;
        // ONNX promotes a 1-D left operand to [1, k] and a 1-D right operand to [k, 1]; a
        // vector has nothing to transpose.
        let a_trans = a_trans && !a_vector;
        let b_trans = b_trans && !b_vector;
        let (a_batch, m, ka) = if a_vector {
            (Vec::new(), 1, a_dims[0])
        } else {
            let r = a_dims.len();
            let (rows, cols) = (a_dims[r - 2], a_dims[r - 1]);
            let (m, k) = if a_trans { (cols, rows) } else { (rows, cols) };
            (a_dims[..r - 2].to_vec(), m, k)
        };
        let (b_batch, kb, n) = if b_vector {
            (Vec::new(), b_dims[0], 1)
        } else {
            let r = b_dims.len();
            let (rows, cols) = (b_dims[r - 2], b_dims[r - 1]);
            let (k, n) = if b_trans { (cols, rows) } else { (rows, cols) };
            (b_dims[..r - 2].to_vec(), k, n)
        };
        if ka != kb {
            return None;
        }
        let batch_dims = crate::binary::broadcast_shape(&a_batch, &b_batch)?;
        Some(Promoted {
            a_batch,
            b_batch,
            batch_dims,
            m,
            k: ka,
            n,
            a_trans,
            b_trans,
            a_vector,
            b_vector,
        })
    }

    fn out_dims(&self) -> Vec<usize> {
        let mut d = self.batch_dims.clone();
        if !self.a_vector {
            d.push(self.m);
        }
        if !self.b_vector {
            d.push(self.n);
        }
        d
    }
}

/// ONNX `MatMul`: `out = a @ b` with numpy broadcasting of the batch axes; `out` has the
/// dims of [`matmul_out_dims`] (row-major).
///
/// # Panics
/// Shape contract: panics if the dims do not multiply (see [`matmul_out_dims`]) or a slice
/// length does not match its dims.
pub fn matmul(
    a: &[f32],
    a_dims: &[usize],
    b: &[f32],
    b_dims: &[usize],
    out: &mut [f32],
    par: Parallelism,
) {
    matmul_transposed(a, a_dims, false, b, b_dims, false, out, par);
}

/// [`matmul`] into an uninitialised buffer (the executor's output, without a zero-fill pass
/// first); every element of `out` is written.
///
/// # Panics
/// As [`matmul`].
pub fn matmul_uninit(
    a: &[f32],
    a_dims: &[usize],
    b: &[f32],
    b_dims: &[usize],
    out: &mut [MaybeUninit<f32>],
    par: Parallelism,
) {
    transposed(a, a_dims, false, b, b_dims, false, out, par);
}

/// [`matmul`] with operands whose last two axes are stored swapped (`a_trans`: `a` is stored
/// `[.., k, m]`; `b_trans`: `b` is stored `[.., n, k]`), TPU-MLIR's `left_transpose` /
/// `right_transpose`; attention's `Q K^T` is `b_trans` on a `[B, H, S, D]` key.
///
/// # Panics
/// As [`matmul`].
pub fn matmul_transposed(
    a: &[f32],
    a_dims: &[usize],
    a_trans: bool,
    b: &[f32],
    b_dims: &[usize],
    b_trans: bool,
    out: &mut [f32],
    par: Parallelism,
) {
    transposed(a, a_dims, a_trans, b, b_dims, b_trans, as_uninit(out), par);
}

/// Views an initialised buffer as one the kernels may write to without reading; they only
/// store initialised values into it, so it stays initialised.
pub(crate) fn as_uninit(out: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and every writer stores initialised
    // f32 values only.
    unsafe { &mut *(std::ptr::from_mut(out) as *mut [MaybeUninit<f32>]) }
}

fn transposed(
    a: &[f32],
    a_dims: &[usize],
    a_trans: bool,
    b: &[f32],
    b_dims: &[usize],
    b_trans: bool,
    out: &mut [MaybeUninit<f32>],
    par: Parallelism,
) {
    let p = Promoted::new(a_dims, a_trans, b_dims, b_trans).unwrap_or_else(|| {
        panic!("matmul: dims {a_dims:?} (transposed {a_trans}) and {b_dims:?} (transposed {b_trans}) do not multiply")
    });
    assert_eq!(
        a.len(),
        a_dims.iter().product::<usize>(),
        "matmul: a length"
    );
    assert_eq!(
        b.len(),
        b_dims.iter().product::<usize>(),
        "matmul: b length"
    );
    assert_eq!(
        out.len(),
        p.out_dims().iter().product::<usize>(),
        "matmul: output length"
    );
    let (m, k, n) = (p.m, p.k, p.n);
    // Batch strides in elements: the operand's own row-major strides over its batch axes,
    // scaled by its matrix size, 0 on broadcast axes.
    let scale = |v: Vec<usize>, s: usize| -> Vec<usize> { v.into_iter().map(|x| x * s).collect() };
    let a_bs = scale(broadcast_strides(&p.a_batch, &p.batch_dims), m * k);
    let b_bs = scale(broadcast_strides(&p.b_batch, &p.batch_dims), k * n);
    let av = StridedMatrix::dense(a, &a_bs, m, k, p.a_trans);
    let bv = StridedMatrix::dense(b, &b_bs, k, n, p.b_trans);
    run(&p.batch_dims, m, k, n, av, bv, out, false, par);
}

/// The general batched product: `out[b] = a[b] (m x k) * b[b] (k x n)` for every multi-index
/// `b` of `batch_dims`, with both operands given as strided views; `out` is dense
/// `[batch_dims.., m, n]`.
///
/// # Panics
/// Shape contract: panics if a view has not one stride per batch axis, or addresses an element
/// beyond its slice, or `out` has the wrong length.
pub fn matmul_strided(
    batch_dims: &[usize],
    m: usize,
    k: usize,
    n: usize,
    a: StridedMatrix,
    b: StridedMatrix,
    out: &mut [f32],
    par: Parallelism,
) {
    run(batch_dims, m, k, n, a, b, as_uninit(out), false, par);
}

/// [`matmul_strided`], optionally accumulating into `out` (`out += a * b`): the body of
/// [`crate::gemm()`] and [`crate::batched_gemm`] too. Without `accumulate`, `out` is only
/// written (it may be uninitialised); with it, `out` must be initialised.
pub(crate) fn run(
    batch_dims: &[usize],
    m: usize,
    k: usize,
    n: usize,
    a: StridedMatrix,
    b: StridedMatrix,
    out: &mut [MaybeUninit<f32>],
    accumulate: bool,
    par: Parallelism,
) {
    let batch: usize = batch_dims.iter().product();
    assert_eq!(
        a.batch_strides.len(),
        batch_dims.len(),
        "matmul: a has {} batch strides for {} batch axes",
        a.batch_strides.len(),
        batch_dims.len()
    );
    assert_eq!(
        b.batch_strides.len(),
        batch_dims.len(),
        "matmul: b has {} batch strides for {} batch axes",
        b.batch_strides.len(),
        batch_dims.len()
    );
    assert_eq!(out.len(), batch * m * n, "matmul: output length");
    if out.is_empty() {
        return;
    }
    if k > 0 {
        assert!(
            a.max_offset(batch_dims, m, k) < a.data.len(),
            "matmul: a ({} elements) is too short for its strides",
            a.data.len()
        );
        assert!(
            b.max_offset(batch_dims, k, n) < b.data.len(),
            "matmul: b ({} elements) is too short for its strides",
            b.data.len()
        );
    }
    // A right operand shared by every batch against left batches that are stacked rows at one
    // row stride: one (batch * m) x k product.
    if batch > 1 && b.batch_strides.iter().all(|&s| s == 0) && rows_stack(batch_dims, m, &a) {
        let none: [usize; 0] = [];
        let a1 = StridedMatrix {
            batch_strides: &none,
            ..a
        };
        let b1 = StridedMatrix {
            batch_strides: &none,
            ..b
        };
        return run(&[], batch * m, k, n, a1, b1, out, accumulate, par);
    }
    // A few rows (a batch-1 fully connected layer): B packed into column panels on this call
    // (the executor packs constant weights once, see `gemm_few_rows`), then streamed once.
    if crate::rowvec::applies(batch, m, k, n) {
        crate::rowvec::run(m, k, n, &a, &b, out, accumulate, par);
        return;
    }
    let a_off = batch_offsets(batch_dims, a.batch_strides);
    let b_off = batch_offsets(batch_dims, b.batch_strides);
    let (tm, tn) = choose_tiles(batch, m, k, n);
    let (row_tiles, col_tiles) = (m.div_ceil(tm), n.div_ceil(tn));
    let per_batch = row_tiles * col_tiles;
    let par = par_for_work(par, 2 * batch * m * n * k.max(1));
    let c = SendPtr(out.as_mut_ptr().cast::<f32>());
    let (ap, bp) = (SendConst(a.data.as_ptr()), SendConst(b.data.as_ptr()));
    let (ars, acs) = (a.row_stride as isize, a.col_stride as isize);
    let (brs, bcs) = (b.row_stride as isize, b.col_stride as isize);
    for_each_tile(batch * per_batch, par, |t| {
        let bi = t / per_batch;
        let r = t % per_batch;
        let i0 = (r / col_tiles) * tm;
        let j0 = (r % col_tiles) * tn;
        let mm = tm.min(m - i0);
        let nn = tn.min(n - j0);
        let lhs = MatRef {
            ptr: ap.get().wrapping_add(a_off[bi] + i0 * a.row_stride),
            rs: ars,
            cs: acs,
        };
        let rhs = MatRef {
            ptr: bp.get().wrapping_add(b_off[bi] + j0 * b.col_stride),
            rs: brs,
            cs: bcs,
        };
        // SAFETY: the bounds of both views were checked above for every batch, row and
        // column; the tile (bi, i0, j0) is inside `out`, and tiles write disjoint parts of it.
        unsafe {
            gemm_tile(
                mm,
                nn,
                k,
                c.get().add(bi * m * n + i0 * n + j0),
                n as isize,
                lhs,
                rhs,
                accumulate,
            )
        };
    });
}

/// Whether the `m`-row matrices of `a` over `batch_dims` are one stack of rows at `a`'s row
/// stride (batch `b` starts `m * row_stride * flat(b)` after batch 0), so the batches can be
/// run as one taller matrix. Size-1 batch axes are ignored.
fn rows_stack(batch_dims: &[usize], m: usize, a: &StridedMatrix) -> bool {
    let mut expected = m * a.row_stride;
    for (&d, &s) in batch_dims.iter().zip(a.batch_strides).rev() {
        if d == 1 {
            continue;
        }
        if s != expected {
            return false;
        }
        expected *= d;
    }
    true
}

/// Element offset of every batch (flat, row-major over `batch_dims`) for the given strides.
fn batch_offsets(batch_dims: &[usize], strides: &[usize]) -> Vec<usize> {
    let mut offs = vec![0usize];
    for (&d, &s) in batch_dims.iter().zip(strides) {
        offs = offs
            .iter()
            .flat_map(|&o| (0..d).map(move |i| o + i * s))
            .collect();
    }
    offs
}

/// Tile size `(rows, columns)` of C for a product of the given shape. Depends on the shape
/// only (never on the thread count), so results are the same for any number of threads.
pub(crate) fn choose_tiles(batch: usize, m: usize, k: usize, n: usize) -> (usize, usize) {
    let tm = m.clamp(1, TILE_ROWS);
    let mut tn = n.clamp(1, TILE_COLS_MAX);
    let row_tiles = batch * m.div_ceil(tm);
    while row_tiles * n.div_ceil(tn) < MIN_TILES && tn > COL_QUANTUM {
        let half = tn.div_ceil(2).next_multiple_of(COL_QUANTUM);
        if half >= tn || 2 * tm * half * k < MIN_TILE_FLOPS {
            break;
        }
        tn = half;
    }
    (tm, tn)
}

/// A read-only pointer shared by the tiles.
#[derive(Clone, Copy)]
struct SendConst(*const f32);
impl SendConst {
    fn get(self) -> *const f32 {
        self.0
    }
}
// SAFETY: the operands are only read, and outlive the parallel loop.
unsafe impl Send for SendConst {}
// SAFETY: as above.
unsafe impl Sync for SendConst {}
