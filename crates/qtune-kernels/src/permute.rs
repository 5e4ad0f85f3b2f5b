//! ONNX `Transpose` (<https://onnx.ai/onnx/operators/onnx__Transpose.html>, opset 1-21) for
//! the executor, in blocks and over threads: the shapes are merged into the fewest strided
//! axes first; when the innermost output axis is contiguous in the input (attention's
//! `[B, S, H, D] -> [B, H, S, D]`) every output row is one vector copy; otherwise (the key's
//! `[B, S, H, D] -> [B, H, D, S]`) the output is a stack of 2-D transposes, done in 8 x 8
//! blocks: eight contiguous input runs are loaded, then written out as eight contiguous output
//! runs. Pure data movement, so the result never depends on the blocking or the thread count.

use crate::Parallelism;
use crate::util::{SendPtr, for_each_tile, merge_axes, strides};

/// Side of the square blocks of the 2-D transposes.
const BLOCK: usize = 8;
/// Output elements per parallel task (rounded to whole rows or planes).
const CHUNK: usize = 32 * 1024;

/// ONNX `Transpose`: `out` has dims `dims[perm[i]]`. Same contract as [`crate::transpose`],
/// with the work spread over the threads for large tensors.
///
/// # Panics
/// Shape contract: panics if `perm` is not a permutation of `0..dims.len()` or a slice
/// length does not match `dims`.
pub fn transpose_blocked<T: Copy + Send + Sync>(
    input: &[T],
    dims: &[usize],
    perm: &[usize],
    out: &mut [T],
    par: Parallelism,
) {
    if size_of::<T>() == 4 && align_of::<T>() == 4 {
        // 4-byte elements (f32, i32) move as u32 bit patterns through the vector blocks.
        // SAFETY: `T` has the size and alignment of `u32`, and elements are only copied.
        let (input, out) = unsafe {
            (
                std::slice::from_raw_parts(input.as_ptr().cast::<u32>(), input.len()),
                std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u32>(), out.len()),
            )
        };
        return run(input, dims, perm, out, par, full_block_u32());
    }
    run(input, dims, perm, out, par, full_block::<T>);
}

/// Transposes one full [`BLOCK`] x [`BLOCK`] block: output row `i` (at `dst + i * dst_row`)
/// gets the input elements `src + j * src_col + i`, `j < BLOCK`.
type FullBlock<T> = unsafe fn(&[T], usize, usize, *mut T, usize);

fn run<T: Copy + Send + Sync>(
    input: &[T],
    dims: &[usize],
    perm: &[usize],
    out: &mut [T],
    par: Parallelism,
    full: FullBlock<T>,
) {
    crate::layout::check_transpose(input.len(), dims, perm, out.len());
    if out.is_empty() {
        return;
    }
    let in_st = strides(dims);
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let src: Vec<usize> = perm.iter().map(|&p| in_st[p]).collect();
    let (md, ms) = merge_axes(&out_dims, &[src, strides(&out_dims)]);
    let src = &ms[0];
    let r = md.len();
    let inner = md[r - 1];
    let par = crate::util::par_for_work(par, out.len());
    let base = SendPtr(out.as_mut_ptr());
    if src[r - 1] == 1 {
        // Every output row is a contiguous run of the input; rows go in groups along the
        // second-to-last axis, whose input stride is constant.
        let group = if r >= 2 { md[r - 2] } else { 1 };
        let group_src = if r >= 2 { src[r - 2] } else { 0 };
        let groups = out.len() / (inner * group);
        let per_task = (CHUNK / (inner * group)).max(1);
        let outer_dims = &md[..r.saturating_sub(2)];
        let outer_src = &src[..r.saturating_sub(2)];
        for_each_tile(groups.div_ceil(per_task), par, |t| {
            for g in t * per_task..groups.min((t + 1) * per_task) {
                let from = offset_all(g, outer_dims, outer_src);
                let to = g * group * inner;
                // SAFETY: group `g` of `out` is `to .. to + group * inner`, inside `out`, which
                // outlives the loop; each group is written by one task only.
                let o =
                    unsafe { std::slice::from_raw_parts_mut(base.get().add(to), group * inner) };
                for (i, row) in o.chunks_exact_mut(inner).enumerate() {
                    let f = from + i * group_src;
                    row.copy_from_slice(&input[f..f + inner]);
                }
            }
        });
        return;
    }
    // The output axis that is contiguous in the input (the input's own last axis, merged).
    // It exists: merging keeps a stride-1 source axis unless it has extent 1, and then the
    // whole input is one row (handled above).
    let Some(p) = (0..r - 1).rev().find(|&i| src[i] == 1) else {
        // No unit-stride axis left after merging (only possible for extent-1 axes): copy
        // element by element.
        for (i, o) in out.iter_mut().enumerate() {
            *o = input[offset_all(i, &md, src)];
        }
        return;
    };
    // Out = planes x [rows = md[p] (input-contiguous), ..., cols = md[r - 1]]: every
    // (plane, row-block) pair is a task; a plane is everything but axes p and r - 1.
    let (rows, cols) = (md[p], md[r - 1]);
    let col_src = src[r - 1];
    let row_dst: usize = md[p + 1..].iter().product();
    let plane_dims: Vec<usize> = (0..r - 1).filter(|&i| i != p).map(|i| md[i]).collect();
    let plane_src: Vec<usize> = (0..r - 1).filter(|&i| i != p).map(|i| src[i]).collect();
    let out_st = strides(&md);
    let plane_dst: Vec<usize> = (0..r - 1).filter(|&i| i != p).map(|i| out_st[i]).collect();
    let planes: usize = plane_dims.iter().product();
    let row_blocks = rows.div_ceil(BLOCK);
    let blocks_per_task = (CHUNK / (BLOCK * cols)).max(1);
    let tasks_per_plane = row_blocks.div_ceil(blocks_per_task);
    for_each_tile(planes * tasks_per_plane, par, |t| {
        let (pl, tb) = (t / tasks_per_plane, t % tasks_per_plane);
        let from = offset_all(pl, &plane_dims, &plane_src);
        let to = offset_all(pl, &plane_dims, &plane_dst);
        let rb0 = tb * blocks_per_task;
        let rb1 = row_blocks.min(rb0 + blocks_per_task);
        for rb in rb0..rb1 {
            let r0 = rb * BLOCK;
            let h = BLOCK.min(rows - r0);
            let mut c0 = 0;
            while c0 < cols {
                let w = BLOCK.min(cols - c0);
                // SAFETY: the block's output elements `to + (r0 + i) * row_dst + c0 + j`
                // (i < h, j < w) lie inside `out`; blocks of different tasks cover disjoint
                // (plane, row) ranges, so no element is written twice.
                unsafe {
                    block(
                        full,
                        input,
                        from + r0 + c0 * col_src,
                        col_src,
                        base.get().add(to + r0 * row_dst + c0),
                        row_dst,
                        h,
                        w,
                    )
                };
                c0 += w;
            }
        }
    });
}

/// Transposes one block of `h x w` (at most [`BLOCK`] each): output row `i < h` (at
/// `dst + i * dst_row`) gets the `w` input elements `src + j * src_col + i`, `j < w`.
///
/// # Safety
/// `dst` must be valid for the `h` rows of `w` elements at stride `dst_row`, and the input
/// elements must lie inside `input`.
#[inline(always)]
unsafe fn block<T: Copy>(
    full: FullBlock<T>,
    input: &[T],
    src: usize,
    src_col: usize,
    dst: *mut T,
    dst_row: usize,
    h: usize,
    w: usize,
) {
    if h == BLOCK && w == BLOCK {
        // SAFETY: forwarded from the caller.
        unsafe { full(input, src, src_col, dst, dst_row) };
        return;
    }
    for i in 0..h {
        for j in 0..w {
            // SAFETY: as above.
            unsafe { *dst.add(i * dst_row + j) = input[src + j * src_col + i] };
        }
    }
}

/// The portable full block: eight contiguous input runs into a fixed-size array, then
/// eight contiguous output runs.
///
/// # Safety
/// As [`block`].
unsafe fn full_block<T: Copy>(
    input: &[T],
    src: usize,
    src_col: usize,
    dst: *mut T,
    dst_row: usize,
) {
    let mut t: [[T; BLOCK]; BLOCK] = [[input[src]; BLOCK]; BLOCK];
    for (j, tj) in t.iter_mut().enumerate() {
        let s = src + j * src_col;
        tj.copy_from_slice(&input[s..s + BLOCK]);
    }
    let rows: [[T; BLOCK]; BLOCK] = std::array::from_fn(|i| std::array::from_fn(|j| t[j][i]));
    for (i, row) in rows.iter().enumerate() {
        // SAFETY: row i of the block is inside `out` (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), dst.add(i * dst_row), BLOCK) };
    }
}

/// The full-block kernel for 4-byte elements: the AVX2 register transpose when the CPU has
/// it, else the portable one.
fn full_block_u32() -> FullBlock<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            return avx2::full_block;
        }
    }
    full_block::<u32>
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// The 8 x 8 block in registers: eight 8-lane loads, the classic unpack / shuffle /
    /// 128-bit-permute transpose (pure bit moves: NaN payloads survive), eight stores.
    ///
    /// # Safety
    /// As [`super::block`]; the CPU must support AVX2 (checked by the caller of
    /// [`super::full_block_u32`]).
    pub(super) unsafe fn full_block(
        input: &[u32],
        src: usize,
        src_col: usize,
        dst: *mut u32,
        dst_row: usize,
    ) {
        assert!(
            src + (BLOCK - 1) * src_col + BLOCK <= input.len(),
            "transpose block outside the input"
        );
        // SAFETY: the CPU has AVX2 (caller), the loads are inside `input` (checked above),
        // the stores inside `out` (caller).
        unsafe { transpose8(input.as_ptr().add(src), src_col, dst, dst_row) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn transpose8(src: *const u32, src_col: usize, dst: *mut u32, dst_row: usize) {
        // SAFETY: every pointer below is inside the block (the caller's contract).
        unsafe {
            let ld = |j: usize| _mm256_loadu_ps(src.add(j * src_col).cast::<f32>());
            let (r0, r1, r2, r3) = (ld(0), ld(1), ld(2), ld(3));
            let (r4, r5, r6, r7) = (ld(4), ld(5), ld(6), ld(7));
            // Interleave 32-bit pairs of runs (0,1), (2,3), ...
            let t0 = _mm256_unpacklo_ps(r0, r1);
            let t1 = _mm256_unpackhi_ps(r0, r1);
            let t2 = _mm256_unpacklo_ps(r2, r3);
            let t3 = _mm256_unpackhi_ps(r2, r3);
            let t4 = _mm256_unpacklo_ps(r4, r5);
            let t5 = _mm256_unpackhi_ps(r4, r5);
            let t6 = _mm256_unpacklo_ps(r6, r7);
            let t7 = _mm256_unpackhi_ps(r6, r7);
            // 64-bit pairs: each 128-bit half now holds 4 elements of one output row.
            let u0 = _mm256_shuffle_ps::<0b01_00_01_00>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0b11_10_11_10>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0b01_00_01_00>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0b11_10_11_10>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0b01_00_01_00>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0b11_10_11_10>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0b01_00_01_00>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0b11_10_11_10>(t5, t7);
            // Join the halves of runs 0-3 and 4-7.
            let st = |i: usize, v: __m256| _mm256_storeu_ps(dst.add(i * dst_row).cast::<f32>(), v);
            st(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
            st(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
            st(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
            st(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
            st(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
            st(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
            st(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
            st(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
        }
    }
}

/// Offset of flat index `i` over `dims` (row-major) for the given strides.
fn offset_all(mut i: usize, dims: &[usize], strides: &[usize]) -> usize {
    let mut off = 0;
    for (&d, &s) in dims.iter().zip(strides).rev() {
        off += (i % d) * s;
        i /= d;
    }
    off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_and_vector_blocks_agree() {
        // The portable 4-byte path runs only on CPUs without AVX2: check it here against the
        // dispatched one, on a shape with full and partial blocks.
        let dims = [3, 21, 2, 19];
        let perm = [0, 2, 3, 1];
        let x: Vec<u32> = (0..dims.iter().product::<usize>() as u32).collect();
        let mut portable = vec![0u32; x.len()];
        let mut vector = vec![0u32; x.len()];
        run(
            &x,
            &dims,
            &perm,
            &mut portable,
            Parallelism::Sequential,
            full_block::<u32>,
        );
        run(
            &x,
            &dims,
            &perm,
            &mut vector,
            Parallelism::Sequential,
            full_block_u32(),
        );
        assert_eq!(portable, vector);
        let mut want = vec![0u32; x.len()];
        crate::reference::transpose(&x, &dims, &perm, &mut want);
        assert_eq!(portable, want);
    }
}
