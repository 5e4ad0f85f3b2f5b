//! Dense 2-D convolution with the output channels in the vector lanes ("channel vectors"),
//! for the strided layers and those of small maps, on CPUs with AVX-512.
//!
//! Each input value is broadcast and multiplied by the weights of 16 output channels at
//! once. A micro-kernel holds `B` blocks of 16 channels for `P` consecutive output pixels of
//! one row in registers; the pixels read their input at the stride from a zero-padded copy
//! of the input, so there are no phase planes and no lane is spent on a column past the row:
//! a 10x10 map computes 100 outputs (the direct kernel computes 112 or 128 wide pixels).
//!
//! Arithmetic: the direct kernel's order (see `direct.rs`): per output, from 0, one fused
//! multiply-add per term in the order input channel, then `(ky, kx)` row-major (a tap over
//! the padding adds `w * 0`); then `+ bias`, then the activation. The results are bit for bit
//! those of [`crate::reference::conv2d_fma_ordered`] and of the direct kernel.
//!
//! Weights are packed once per model (by the executor, see [`crate::direct::PackedConvWeights`],
//! [`crate::direct::pack_channel_blocks`]) as
//! `[group][m_g / 16][c_g][kh kw][16]`, the last block of each group padded with zeros.
//! Tiles are `(image, group, band of output rows, band of channel blocks)`, sized from the
//! shape only: the results are the same for any thread count.

use crate::conv::Geom;
use crate::direct::per_channel_copy;
use crate::unary::{UnaryOp, apply_in_place};
use crate::util::{SendPtr, for_each_tile};
use crate::{Conv2dParams, Parallelism};

/// Output channels per block (one vector).
pub(crate) const BLOCK: usize = 16;
/// Most output pixels per micro-kernel: `2 * 12` accumulators, two weight vectors and a
/// broadcast value of the 32 registers.
const MAX_PIXELS: usize = 12;
/// Channel blocks per tile at most, before splitting for threads.
const TILE_BLOCKS: usize = 4;
/// Tiles a convolution is cut into at least, when its shape allows (never the thread count).
const MIN_TILES: usize = 8;

#[cfg(test)]
thread_local! {
    /// Makes [`uses_chanvec`] ignore its size rules (not the CPU) on this thread, so that
    /// the differential tests run every geometry through this kernel.
    pub(crate) static ALWAYS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a convolution of this shape runs on this kernel (on this CPU): among the layers
/// the direct kernel takes (so that every result keeps its bits: both sum in the same order),
/// those with a window larger than 1x1 and strides 1 or 2, when either
/// * a stride is 2: every such layer of the detection models ran faster here (one thread,
///   CPU time, `convlayers`: 0.81-0.97 of the direct kernel's time on yolov8n's, YOLOX's
///   24 -> 48 at 208 -> 104 from 2.36 to 1.82 ms), or
/// * the strides are 1 and the output channels fill whole pairs of blocks (`m_g` a multiple
///   of 32): 0.82-0.99 of the direct kernel's time on the 3x3 layers of yolov8n and YOLOX
///   that Winograd does not take (10x10 maps, integer weights), where layers with 16, 24 or
///   48 channels ran 1.12-1.29x slower (a single block's micro-kernel is bound by its
///   broadcasts; 24 channels fill three quarters of a pair).
///
/// 1x1 stride-2 layers ran 3-6 % slower than on the direct kernel and stay there. The small
/// strided maps the direct kernel leaves to im2col (yolov8n's 20 -> 10 layers) ran 4-25 %
/// faster here too, but im2col sums in the `gemm` crate's order: moving them would change
/// their bits, and with them the searches' outputs (YOLOX's search_qtable chose a different
/// set of float layers), so they stay on im2col.
pub(crate) fn uses_chanvec(in_dims: [usize; 4], w_dims: [usize; 4], p: &Conv2dParams) -> bool {
    let [m, _, kh, kw] = w_dims;
    let strides_ok = p.strides.iter().all(|&s| s == 1 || s == 2);
    #[cfg(test)]
    if ALWAYS.get() {
        let ([_, c, _, _], c_g) = (in_dims, w_dims[1]);
        let depthwise = p.group == c && p.group == m;
        return !depthwise && strides_ok && c_g * kh * kw > 0 && crate::direct::direct_available();
    }
    let m_g = m / p.group.max(1);
    let shape_ok = if p.strides == [1, 1] {
        m_g.is_multiple_of(2 * BLOCK)
    } else {
        true
    };
    strides_ok && kh * kw > 1 && shape_ok && crate::direct::conv2d_uses_direct(in_dims, w_dims, p)
}

/// Floats of the packed weights.
pub(crate) fn packed_len(w_dims: [usize; 4], group: usize) -> usize {
    let [m, c_g, kh, kw] = w_dims;
    group * (m / group).div_ceil(BLOCK) * c_g * kh * kw * BLOCK
}

/// The fixed plan of one call, from the shape only.
struct Plan {
    /// Columns of a padded plane.
    wp: usize,
    /// Elements of a padded plane.
    plane: usize,
    /// Offset of each tap `(ky, kx)` (row-major) from its output pixel's first input.
    taps: Vec<usize>,
    /// The last tap's offset, the largest.
    max_tap: usize,
    /// Output rows per tile.
    rows: usize,
    /// Channel blocks per tile.
    blocks: usize,
    /// Pixel runs of one output row: `(first column, length)`, at most [`MAX_PIXELS`] long.
    runs: Vec<(usize, usize)>,
}

impl Plan {
    fn new(g: &Geom, m_g: usize, units: usize) -> Self {
        let hp = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1;
        let wp = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1;
        let mut taps = Vec::with_capacity(g.kh * g.kw);
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                taps.push(ky * g.dh * wp + kx * g.dw);
            }
        }
        // Runs of nearly equal length (13 columns are 7 + 6, not 12 + 1).
        let nruns = g.ow.div_ceil(MAX_PIXELS);
        let base = g.ow / nruns;
        let mut runs = Vec::with_capacity(nruns);
        let mut x0 = 0;
        for r in 0..nruns {
            let len = base + usize::from(r < g.ow % nruns);
            runs.push((x0, len));
            x0 += len;
        }
        // Enough tiles for two or more threads: channel blocks first (every tile reads the
        // whole padded input anyway) but not below a pair, then rows, then single blocks.
        // Three blocks (48 channels) halved to one made every micro-kernel a single block's,
        // bound by its broadcasts: YOLOX's 24 -> 48 at 208 -> 104 took 1.47 ms, against
        // 1.27 ms as a pair and a single block.
        let all_blocks = m_g.div_ceil(BLOCK);
        let (mut rows, mut blocks) = (g.oh, all_blocks.min(TILE_BLOCKS));
        loop {
            let tiles = units * g.oh.div_ceil(rows) * all_blocks.div_ceil(blocks);
            if tiles >= MIN_TILES {
                break;
            }
            if blocks > 2 {
                blocks = (blocks / 2).max(2);
            } else if rows > 1 {
                rows = rows.div_ceil(2);
            } else if blocks > 1 {
                blocks = 1;
            } else {
                break;
            }
        }
        Self {
            wp,
            plane: hp * wp,
            max_tap: taps.last().copied().unwrap_or(0),
            taps,
            rows,
            blocks,
            runs,
        }
    }

    /// Writes the zero-padded planes of the input channels `x` (their `h w` planes) into
    /// `dst` (`plane` elements per channel), every element of it.
    fn fill(&self, g: &Geom, x: &[f32], dst: &mut [f32]) {
        let (h, w, wp) = (g.h, g.w, self.wp);
        for (src, out) in x.chunks_exact(h * w).zip(dst.chunks_exact_mut(self.plane)) {
            for (py, row) in out.chunks_exact_mut(wp).enumerate() {
                let iy = py as isize - g.pt as isize;
                if iy < 0 || iy >= h as isize {
                    row.fill(0.0);
                    continue;
                }
                let src = &src[iy as usize * w..(iy as usize + 1) * w];
                // Padded columns `pl..pl + w` hold the row, clipped to the plane.
                let lo = g.pl.min(wp);
                let hi = (g.pl + w).min(wp);
                row[..lo].fill(0.0);
                row[lo..hi].copy_from_slice(&src[..hi - lo]);
                row[hi..].fill(0.0);
            }
        }
    }
}

/// The convolution (see the module docs) of `input` (`[n, c, h, w]`) into `out`
/// (`[n, m, oh, ow]`), every element of which it writes. The caller has checked the shapes,
/// that [`uses_chanvec`] holds, and that `packed` holds these weights packed by [`pack`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_chanvec(
    input: &[f32],
    in_dims: [usize; 4],
    m: usize,
    groups: usize,
    packed: &[f32],
    bias: Option<&[f32]>,
    g: &Geom,
    activation: Option<UnaryOp>,
    out: &mut [f32],
    par: Parallelism,
) {
    let n = in_dims[0];
    let m_g = m / groups;
    let plan = Plan::new(g, m_g, n * groups);
    let kk = g.kh * g.kw;
    let all_blocks = m_g.div_ceil(BLOCK);
    assert_eq!(
        packed.len(),
        groups * all_blocks * g.c_g * kk * BLOCK,
        "chanvec: packed length"
    );
    // The padded input of every image and group, built once in a parallel pass.
    let units = n * groups;
    let xp = per_channel_copy(input, in_dims, groups, plan.plane, par, |x, dst| {
        plan.fill(g, x, dst);
    });
    let xp: &[f32] = &xp;
    let row_tiles = g.oh.div_ceil(plan.rows);
    let chan_tiles = all_blocks.div_ceil(plan.blocks);
    let per_unit = row_tiles * chan_tiles;
    let ohw = g.oh * g.ow;
    let outp = SendPtr(out.as_mut_ptr());
    let (lo, hi, rest) = match activation {
        Some(UnaryOp::Relu) => (0.0, f32::INFINITY, None),
        Some(UnaryOp::Clip { lo, hi }) => (lo, hi, None),
        other => (f32::NEG_INFINITY, f32::INFINITY, other),
    };
    let clamp = rest.is_none() && activation.is_some();
    let wstride = g.c_g * kk * BLOCK;
    for_each_tile(units * per_unit, par, |t| {
        let (unit, r) = (t / per_unit, t % per_unit);
        let (ni, gi) = (unit / groups, unit % groups);
        let (rt, ct) = (r / chan_tiles, r % chan_tiles);
        let oy0 = rt * plan.rows;
        let nr = plan.rows.min(g.oh - oy0);
        let b0 = ct * plan.blocks;
        let nb = plan.blocks.min(all_blocks - b0);
        let x = &xp[unit * g.c_g * plan.plane..(unit + 1) * g.c_g * plan.plane];
        let wunit = &packed[gi * all_blocks * wstride..(gi + 1) * all_blocks * wstride];
        // The micro-kernel's outputs, before they are transposed into the planes.
        let mut tile = [[0.0f32; BLOCK]; 2 * MAX_PIXELS];
        let mut b = b0;
        while b < b0 + nb {
            let pair = (b0 + nb - b).min(2);
            // Channels of these blocks that exist (the last block may be partial).
            let m_lo = b * BLOCK;
            let m_hi = ((b + pair) * BLOCK).min(m_g);
            let ch_base = ni * m + gi * m_g;
            for oy in oy0..oy0 + nr {
                for &(ox0, len) in &plan.runs {
                    let xoff = oy * g.sh * plan.wp + ox0 * g.sw;
                    let args = Args {
                        x: &x[xoff..],
                        plane: plan.plane,
                        taps: &plan.taps,
                        max_tap: plan.max_tap,
                        kc: g.c_g,
                        w: &wunit[b * wstride..],
                        wstride,
                        sw: g.sw,
                    };
                    micro(pair, len, &args, &mut tile);
                    let store = Store {
                        bias: bias.map(|bs| &bs[gi * m_g + m_lo..gi * m_g + m_hi]),
                        clamp: clamp.then_some((lo, hi)),
                        // SAFETY: pixel `ox0` of row `oy` of channel `m_lo` of this image
                        // and group, inside `out`.
                        dst: unsafe { outp.get().add((ch_base + m_lo) * ohw + oy * g.ow + ox0) },
                        stride: ohw,
                        channels: m_hi - m_lo,
                        pixels: len,
                    };
                    // SAFETY: pixels `ox0..ox0 + len` of row `oy` of channels
                    // `m_lo..m_hi`, written by this tile only; AVX-512 checked by the caller.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        avx512::store(&tile, &store);
                    }
                }
            }
            if let Some(act) = rest {
                for oc in m_lo..m_hi {
                    // SAFETY: rows `oy0..oy0 + nr` of channel `oc`, written above by this
                    // tile only.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            outp.get().add((ch_base + oc) * ohw + oy0 * g.ow),
                            nr * g.ow,
                        )
                    };
                    apply_in_place(act, dst);
                }
            }
            b += pair;
        }
    });
}

/// Where and how a micro-kernel's outputs are stored.
struct Store<'a> {
    /// The biases of the stored channels.
    bias: Option<&'a [f32]>,
    /// `(lo, hi)` when the activation is a clamp (Relu, Clip).
    clamp: Option<(f32, f32)>,
    /// The first channel's first pixel.
    dst: *mut f32,
    /// Floats between two channels' planes.
    stride: usize,
    channels: usize,
    pixels: usize,
}

/// Arguments of one micro-kernel call.
struct Args<'a> {
    /// The padded input from the first pixel's first input (channel 0).
    x: &'a [f32],
    /// Elements per padded channel plane.
    plane: usize,
    /// Tap offsets.
    taps: &'a [usize],
    /// The largest of them.
    max_tap: usize,
    /// Input channels.
    kc: usize,
    /// The first block's packed weights.
    w: &'a [f32],
    /// Floats between two blocks' weights.
    wstride: usize,
    /// Column stride (1 or 2).
    sw: usize,
}

/// Dispatches to the micro-kernel for `blocks` (1 or 2) blocks of `pixels` (1 to
/// [`MAX_PIXELS`]) pixels, writing `out[bi * MAX_PIXELS + p]`.
fn micro(blocks: usize, pixels: usize, a: &Args, out: &mut [[f32; BLOCK]; 2 * MAX_PIXELS]) {
    // Bounds: every read is inside `x` and `w` (checked once here, not in the loop).
    let reach = (a.kc - 1) * a.plane + a.max_tap + (pixels - 1) * a.sw + 1;
    assert!(reach <= a.x.len(), "chanvec: input too short");
    assert!(
        a.w.len() >= (blocks - 1) * a.wstride + a.kc * a.taps.len() * BLOCK,
        "chanvec: weights too short"
    );
    assert!((1..=2).contains(&blocks) && (1..=MAX_PIXELS).contains(&pixels));
    assert!(a.sw == 1 || a.sw == 2, "chanvec: column stride {}", a.sw);
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! arms {
            ($($p:literal)*) => {
                match (blocks, pixels, a.sw) {
                    $(
                        (1, $p, 1) => avx512::micro::<1, $p, 1>(a, out),
                        (1, $p, _) => avx512::micro::<1, $p, 2>(a, out),
                        (_, $p, 1) => avx512::micro::<2, $p, 1>(a, out),
                        (_, $p, _) => avx512::micro::<2, $p, 2>(a, out),
                    )*
                    _ => unreachable!("chanvec: {pixels} pixels"),
                }
            };
        }
        // SAFETY: `uses_chanvec` (checked by the caller) implies AVX-512; the asserts above
        // bound every access.
        unsafe { arms!(1 2 3 4 5 6 7 8 9 10 11 12) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, out);
        unreachable!("the channel-vector convolution needs AVX-512");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Args, BLOCK, MAX_PIXELS, Store};
    use crate::conv::dw_avx512::transpose16;
    use std::arch::x86_64::*;

    /// Stores `tile[bi * MAX_PIXELS + p][lane]` (channel `bi * 16 + lane`, pixel `p`) as
    /// `s.channels` rows of `s.pixels` outputs: transposed 16 channels at a time, then per
    /// channel `+ bias` and the clamp, `x < lo -> lo` then `x > hi -> hi` (NaN stays NaN),
    /// as the direct kernel's epilogue.
    ///
    /// # Safety
    /// AVX-512 F; `s.dst` must be valid for the rows written.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn store(tile: &[[f32; BLOCK]; 2 * MAX_PIXELS], s: &Store) {
        let mask: __mmask16 = (1u16 << s.pixels) - 1;
        for bi in 0..s.channels.div_ceil(BLOCK) {
            let rows: [__m512; 16] = std::array::from_fn(|p| {
                if p < s.pixels {
                    // SAFETY: 16 floats.
                    unsafe { _mm512_loadu_ps(tile[bi * MAX_PIXELS + p].as_ptr()) }
                } else {
                    _mm512_setzero_ps()
                }
            });
            let cols = transpose16(rows);
            for (lane, &col) in cols.iter().enumerate() {
                let ch = bi * BLOCK + lane;
                if ch >= s.channels {
                    break;
                }
                let mut v = col;
                if let Some(b) = s.bias {
                    v = _mm512_add_ps(v, _mm512_set1_ps(b[ch]));
                }
                if let Some((lo, hi)) = s.clamp {
                    // `max(lo, v)` is `lo > v ? lo : v` and `min(hi, v)` is
                    // `hi < v ? hi : v`: a NaN `v` stays, as in the scalar clamp.
                    v = _mm512_max_ps(_mm512_set1_ps(lo), v);
                    v = _mm512_min_ps(_mm512_set1_ps(hi), v);
                }
                // SAFETY: channel `ch`'s row of `s.pixels` outputs (the caller's contract).
                unsafe { _mm512_mask_storeu_ps(s.dst.add(ch * s.stride), mask, v) };
            }
        }
    }

    /// `out[b * MAX_PIXELS + p] = sum over (ci, tap) of w[b][ci][tap] * x[ci][tap + p SW]`,
    /// one FMA per term in `(ci, tap)` order from 0, for `b < B`, `p < P`.
    ///
    /// # Safety
    /// AVX-512 F; the slices must cover the reads (see `super::micro`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn micro<const B: usize, const P: usize, const SW: usize>(
        a: &Args,
        out: &mut [[f32; BLOCK]; 2 * MAX_PIXELS],
    ) {
        let kk = a.taps.len();
        let mut acc = [[_mm512_setzero_ps(); B]; P];
        let xp = a.x.as_ptr();
        let wp = a.w.as_ptr();
        for ci in 0..a.kc {
            // SAFETY: channel `ci`'s plane and weights lie inside the slices (see above).
            let (xc, wc) = unsafe { (xp.add(ci * a.plane), wp.add(ci * kk * BLOCK)) };
            for (t, &off) in a.taps.iter().enumerate() {
                // SAFETY: as above.
                let xt = unsafe { xc.add(off) };
                let mut wv = [_mm512_setzero_ps(); B];
                for (bi, v) in wv.iter_mut().enumerate() {
                    // SAFETY: inside `w`; packed blocks are 64-byte aligned.
                    *v = unsafe { _mm512_load_ps(wc.add(bi * a.wstride + t * BLOCK)) };
                }
                for (p, ap) in acc.iter_mut().enumerate() {
                    // SAFETY: inside `x`.
                    let xv = unsafe { _mm512_set1_ps(*xt.add(p * SW)) };
                    for (av, &w) in ap.iter_mut().zip(&wv) {
                        *av = _mm512_fmadd_ps(w, xv, *av);
                    }
                }
            }
        }
        for (p, ap) in acc.iter().enumerate() {
            for (bi, &v) in ap.iter().enumerate() {
                // SAFETY: `out[bi * MAX_PIXELS + p]` is 16 floats.
                unsafe { _mm512_storeu_ps(out[bi * MAX_PIXELS + p].as_mut_ptr(), v) };
            }
        }
    }
}
