//! The portable microkernel: the VNNI tile's arithmetic in plain Rust,
//! compiled per feature level (`qtune_simd::dispatch`).

use super::{MR, PANEL, TILE_COLS};

qtune_simd::dispatch! {
    /// Same contract and result as `vnni::tile` (with slices checked).
    pub(super) fn tile(
        nv: usize,
        k4: usize,
        a: &[i8],
        x: &[u8],
        xs: usize,
        tile: &mut [[i32; PANEL]; MR],
        j: usize,
    ) {
        let n = 16 * nv.clamp(1, TILE_COLS / 16);
        for row in tile.iter_mut() {
            row[j..j + n].fill(0);
        }
        for kk in 0..k4 {
            let xr = &x[kk * xs..][..4 * n];
            let ar = &a[kk * MR * 4..][..MR * 4];
            for (r, row) in tile.iter_mut().enumerate() {
                let w = [
                    i32::from(ar[r * 4]),
                    i32::from(ar[r * 4 + 1]),
                    i32::from(ar[r * 4 + 2]),
                    i32::from(ar[r * 4 + 3]),
                ];
                for (o, q) in row[j..j + n].iter_mut().zip(xr.chunks_exact(4)) {
                    let s = i32::from(q[0]) * w[0]
                        + i32::from(q[1]) * w[1]
                        + i32::from(q[2]) * w[2]
                        + i32::from(q[3]) * w[3];
                    *o = o.wrapping_add(s);
                }
            }
        }
    }
}
