//! The AVX-512 VNNI microkernel: an `MR x 16 NV` int32 tile of
//! `vpdpbusd` accumulators over a packed weight block and activation panel.

use std::arch::x86_64::{
    __m512i, _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_si512,
    _mm512_storeu_si512,
};

use super::{MR, PANEL};

/// `tile[r][j + 16 v + l] = sum_kk sum_t a[kk][r][t] * x[kk * xs + 4 (16 v + l) + t]`
/// for `v < nv` (1 to 4).
///
/// # Safety
/// The CPU must have AVX-512 F/BW and VNNI; `a` must hold `k4 * MR * 4`
/// bytes, `x` at least `(k4 - 1) * xs + 64 nv` bytes, and `j + 16 nv <= PANEL`.
pub(super) unsafe fn tile(
    nv: usize,
    k4: usize,
    a: &[i8],
    x: &[u8],
    xs: usize,
    tile: &mut [[i32; PANEL]; MR],
    j: usize,
) {
    debug_assert!(j + 16 * nv <= PANEL);
    debug_assert!(a.len() >= k4 * MR * 4);
    debug_assert!(k4 == 0 || x.len() >= (k4 - 1) * xs + 64 * nv);
    // SAFETY: forwarded from the caller.
    unsafe {
        match nv {
            1 => tile_n::<1>(k4, a, x, xs, tile, j),
            2 => tile_n::<2>(k4, a, x, xs, tile, j),
            3 => tile_n::<3>(k4, a, x, xs, tile, j),
            _ => tile_n::<4>(k4, a, x, xs, tile, j),
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_n<const NV: usize>(
    k4: usize,
    a: &[i8],
    x: &[u8],
    xs: usize,
    tile: &mut [[i32; PANEL]; MR],
    j: usize,
) {
    let mut acc = [[_mm512_setzero_si512(); NV]; MR];
    let (ap, xp) = (a.as_ptr(), x.as_ptr());
    for kk in 0..k4 {
        let mut xv = [_mm512_setzero_si512(); NV];
        for (v, xv) in xv.iter_mut().enumerate() {
            // SAFETY: within `x` by the caller's contract.
            *xv = unsafe { _mm512_loadu_si512(xp.add(kk * xs + 64 * v).cast::<__m512i>()) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: within `a` by the caller's contract; any alignment.
            let w4 = unsafe { ap.add((kk * MR + r) * 4).cast::<i32>().read_unaligned() };
            let w = _mm512_set1_epi32(w4);
            for (acc, &xv) in acc.iter_mut().zip(&xv) {
                // Unsigned activation bytes times signed weight bytes.
                *acc = _mm512_dpbusd_epi32(*acc, xv, w);
            }
        }
    }
    for (row, acc) in tile.iter_mut().zip(&acc) {
        for (v, &acc) in acc.iter().enumerate() {
            let dst = &mut row[j + 16 * v..j + 16 * v + 16];
            // SAFETY: 16 int32 lanes, the slice just checked.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast::<__m512i>(), acc) };
        }
    }
}
