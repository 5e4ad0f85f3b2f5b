//! Products of a few rows with a matrix, `C (m x n) = A (m x k) * B (k x n)` for `m` up to
//! [`MAX_ROWS`]: the fully connected layers of a classifier at batch 1. The `gemm` crate packs
//! both operands on every call and fills its register tiles with one row; this kernel reads
//! `B` packed once per model ([`FewRowsWeights`]) as panels of 16 columns, each panel one
//! contiguous stream over the depth, four panels at a time.
//!
//! Each element of `C` is one chain of fused multiply-adds over the depth in order, from
//! zero: `c = fma(a[k-1], b[k-1], ... fma(a[1], b[1], fma(a[0], b[0], 0)))`, then added to
//! the old `C` when accumulating. The tiling and the thread count change no bit, nor does
//! the layout `B` came in (`MatMul`'s `[k, n]`, or `Gemm`'s `transB` `[n, k]`): both are
//! packed into the same panels, once per model by the executor for constant weights, or on
//! every call here otherwise.

use crate::Parallelism;
use crate::matmul::StridedMatrix;
use crate::util::{SendPtr, for_each_tile, par_for_work};
use std::mem::MaybeUninit;

/// Largest number of rows of `A` this kernel takes.
pub(crate) const MAX_ROWS: usize = 4;
/// Columns of a panel (one vector; the pointwise kernel's packed block).
const PANEL: usize = crate::pointwise::BLOCK;
/// Panels per tile (one register per panel and row).
const TILE_PANELS: usize = 4;

/// Whether this kernel runs a product of this shape (on this CPU).
pub(crate) fn applies(batch: usize, m: usize, k: usize, n: usize) -> bool {
    batch == 1 && (1..=MAX_ROWS).contains(&m) && k > 0 && n > 0 && available()
}

fn available() -> bool {
    #[cfg(test)]
    if OFF.get() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        qtune_simd::has_avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
thread_local! {
    /// Turns this kernel off on this thread (tests compare it with the `gemm` crate path).
    pub(crate) static OFF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The right operand of a few-row product, `k x n`, packed as panels of 16 columns:
/// `[n / 16][k][16]`, the last panel padded with zeros.
#[derive(Debug, Clone)]
pub struct FewRowsWeights {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl FewRowsWeights {
    /// Packs `b`, stored `[k, n]`, or `[n, k]` when `transposed` (ONNX `Gemm`'s `transB`).
    ///
    /// # Panics
    /// If `b` does not hold `k * n` elements.
    pub fn new(b: &[f32], k: usize, n: usize, transposed: bool) -> Self {
        assert_eq!(b.len(), k * n, "FewRowsWeights: B length");
        let (rs, cs) = if transposed { (1, k) } else { (n, 1) };
        Self::from_strided(b, k, n, rs, cs)
    }

    fn from_strided(b: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> Self {
        let mut data = vec![0.0; n.div_ceil(PANEL) * k * PANEL];
        crate::pointwise::pack_strided(b, k, n, (rs, cs), &mut data);
        FewRowsWeights { k, n, data }
    }

    /// `(k, n)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// `out = a * b` (or `out += a * b` when `accumulate`) for one `m x k` by `k x n` product
/// ([`applies`] held), `a` and `b` at offset 0 of their views: `b` packed on this call.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    m: usize,
    k: usize,
    n: usize,
    a: &StridedMatrix,
    b: &StridedMatrix,
    out: &mut [MaybeUninit<f32>],
    accumulate: bool,
    par: Parallelism,
) {
    assert!(
        k > 0 && n > 0 && (k - 1) * b.row_stride + (n - 1) * b.col_stride < b.data.len(),
        "rowvec: B too short for its strides"
    );
    let packed = FewRowsWeights::from_strided(b.data, k, n, b.row_stride, b.col_stride);
    run_packed(m, a, &packed, out, accumulate, par);
}

/// [`run`] with `b` packed beforehand.
pub(crate) fn run_packed(
    m: usize,
    a: &StridedMatrix,
    b: &FewRowsWeights,
    out: &mut [MaybeUninit<f32>],
    accumulate: bool,
    par: Parallelism,
) {
    let (k, n) = (b.k, b.n);
    assert!(applies(1, m, k, n), "rowvec: shape {m}x{k}x{n} not taken");
    assert_eq!(out.len(), m * n, "rowvec: output length");
    assert!(
        (m - 1) * a.row_stride + (k - 1) * a.col_stride < a.data.len(),
        "rowvec: A too short for its strides"
    );
    // A's rows gathered dense (at most MAX_ROWS x k, small).
    let mut ad = Vec::with_capacity(m * k);
    for i in 0..m {
        ad.extend((0..k).map(|kk| a.data[i * a.row_stride + kk * a.col_stride]));
    }
    let panels = n.div_ceil(PANEL);
    let tiles = panels.div_ceil(TILE_PANELS);
    let par = par_for_work(par, 2 * m * k * n);
    let outp = SendPtr(out.as_mut_ptr().cast::<f32>());
    for_each_tile(tiles, par, |t| {
        let p0 = t * TILE_PANELS;
        let np = TILE_PANELS.min(panels - p0);
        let j0 = p0 * PANEL;
        let nn = (np * PANEL).min(n - j0);
        let panel_data = &b.data[p0 * k * PANEL..(p0 + np) * k * PANEL];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `applies` checked AVX-512; rows `0..m` of `out` hold columns `j0..j0 + nn`
        // at stride `n`, written by this tile only.
        unsafe {
            let d = outp.get().add(j0);
            match m {
                1 => avx512::tile::<1>(&ad, k, panel_data, np, d, n, nn, accumulate),
                2 => avx512::tile::<2>(&ad, k, panel_data, np, d, n, nn, accumulate),
                3 => avx512::tile::<3>(&ad, k, panel_data, np, d, n, nn, accumulate),
                _ => avx512::tile::<4>(&ad, k, panel_data, np, d, n, nn, accumulate),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("rowvec needs AVX-512 ({panel_data:?} {nn} {accumulate})");
    });
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MAX_ROWS, PANEL, TILE_PANELS};
    use std::arch::x86_64::*;

    /// Panel rows ahead of the loads that the tile prefetches (the weights come from
    /// memory: other layers evicted them).
    const PREFETCH_ROWS: usize = 16;

    /// Rows `0..R` of `A` (`a`, dense `R x k`) times the `np` panels of `panels`, into the
    /// `nn` columns from `dst` of `R` rows at stride `ldc`. Fixed counts, so that the
    /// `R x 4` sums stay in registers (a partial tile repeats its last panel's loads).
    ///
    /// # Safety
    /// AVX-512 F; `dst` valid for `R` rows of `nn <= np * 16` elements at stride `ldc`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn tile<const R: usize>(
        a: &[f32],
        k: usize,
        panels: &[f32],
        np: usize,
        dst: *mut f32,
        ldc: usize,
        nn: usize,
        accumulate: bool,
    ) {
        assert!(
            (1..=MAX_ROWS).contains(&R)
                && (1..=TILE_PANELS).contains(&np)
                && a.len() >= R * k
                && panels.len() >= np * k * PANEL
                && nn <= np * PANEL,
            "rowvec tile: bounds"
        );
        let mut acc = [[_mm512_setzero_ps(); TILE_PANELS]; R];
        let src: [*const f32; TILE_PANELS] =
            std::array::from_fn(|p| panels.as_ptr().wrapping_add(p.min(np - 1) * k * PANEL));
        for kk in 0..k {
            for s in src {
                // A hint only: the address is not dereferenced.
                _mm_prefetch::<_MM_HINT_T0>(
                    s.wrapping_add((kk + PREFETCH_ROWS) * PANEL).cast::<i8>(),
                );
            }
            for (i, row_acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(a[i * k + kk]);
                for (p, c) in row_acc.iter_mut().enumerate() {
                    // SAFETY: row `kk` of panel `min(p, np - 1)`, inside `panels`.
                    let y = unsafe { _mm512_loadu_ps(src[p].add(kk * PANEL)) };
                    *c = _mm512_fmadd_ps(x, y, *c);
                }
            }
        }
        for (i, row_acc) in acc.iter().enumerate() {
            for (p, &c) in row_acc.iter().enumerate().take(np) {
                let left = nn.saturating_sub(p * PANEL);
                if left == 0 {
                    break;
                }
                let mask: __mmask16 = if left >= PANEL {
                    0xffff
                } else {
                    (1u16 << left) - 1
                };
                // SAFETY: columns `p * 16..` under `mask` of row `i` lie inside the tile.
                let d = unsafe { dst.add(i * ldc + p * PANEL) };
                let r = if accumulate {
                    // SAFETY: as above.
                    _mm512_add_ps(unsafe { _mm512_maskz_loadu_ps(mask, d) }, c)
                } else {
                    c
                };
                // SAFETY: as above.
                unsafe { _mm512_mask_storeu_ps(d, mask, r) };
            }
        }
    }
}
