//! Direct 2-D convolution (no im2col) for the dense (non-depthwise) layers, on CPUs with
//! AVX-512: the 3x3 and strided convolutions of the detection models, where im2col copied
//! every input element `kh * kw` times and the `gemm` crate packed the copy once more.
//!
//! Layout ("wide rows", the same idea as the depthwise plane kernel): the zero-padded input
//! of a tile's rows is split into `sh * sw` column/row phases,
//! `P[pr][pc][i][j] = padded[i * sh + pr][j * sw + pc]`, each of row pitch `wq = ow + rx`.
//! Output pixel `(oy, ox)` gets the "wide" index `oy * wq + ox`, and tap `(ky, kx)` reads
//! phase `((ky dh) % sh, (kx dw) % sw)` at the constant offset `((ky dh) / sh) * wq +
//! (kx dw) / sw` from it: every tap of every output row is one contiguous run of the
//! window, for any stride, dilation and padding. The `wq - ow` columns past each row are
//! computed and dropped.
//!
//! Arithmetic: weights are packed once (per model, by the executor; see
//! [`PackedConvWeights`]) into blocks of [`MR`] output channels, `[group][block][c_g][kh kw]
//! [MR]`. A micro-kernel keeps `MR x NV` vectors of 16 wide output pixels in registers and
//! adds `w * x` with fused multiply-adds in the order `ci`, then `(ky, kx)` row-major, a tap
//! over the padding adding `w * 0`, starting from 0; the bias is added after the sum, then
//! the activation. [`crate::reference::conv2d_fma_ordered`] sums in the same order and the
//! differential tests compare bit for bit. The depth is cut into chunks (so the window part
//! a micro-tile reads stays in L1, see [`L1_WINDOW_BYTES`]); the partial sums go
//! through memory between chunks unchanged, so chunking does not change the bits.
//!
//! Tiles are `(image, group, block of output rows, block of output channels)`, sized from
//! the shape only: results are bit-identical for any thread count.

use crate::conv::{Geom, assume_written, copy_row, deinterleave, strided_copy, zero_row};
use crate::simd::dispatch;
use crate::unary::{UnaryOp, apply_in_place};
use crate::util::{SendPtr, for_each_tile};
use crate::{Conv2dParams, Parallelism};
use std::cell::RefCell;

/// Output channels per weight block and micro-kernel (rows of the register tile).
pub(crate) const MR: usize = 8;
/// Vectors of 16 wide output pixels per micro-kernel (its columns): `MR * NV = 24`
/// accumulators, plus `NV` input vectors and a broadcast weight, of the 32 registers.
const NV: usize = 3;
/// f32 lanes of one vector.
const LANES: usize = 16;
/// Bytes of window one register tile may read per depth chunk (of a 32-48 KiB L1 data
/// cache, the rest holds the weights it streams and the wide output).
const L1_WINDOW_BYTES: usize = 20 * 1024;
/// Wide output pixels per tile (before splitting for threads).
const TILE_PIXELS: usize = 512;
/// Output channels per tile (before splitting for threads): a multiple of [`MR`].
const TILE_CHANNELS: usize = 64;
/// Tiles a convolution is cut into at least, when its shape allows (never the thread count).
const MIN_TILES: usize = 8;
/// Slack after every window plane, so a micro-tile may read whole vectors past the last
/// wide pixel it needs (those lanes are computed and dropped).
const SLACK: usize = NV * LANES;
/// Floats ahead of the micro-kernel's weight stream that it prefetches into L1. Inside a
/// model the weights of a layer come from memory (the other layers evicted them): on
/// yolov8n's 10x10 layers, which read each weight for 100 outputs only, prefetching them
/// 1 KiB ahead took 128 -> 128 from 198 to 174 us and 256 -> 64 from 194 to 172 (its 64
/// layers in one sequence, `convlayers`, one thread, CPU time).
const WEIGHT_PREFETCH: usize = 256;

/// Weights of a convolution packed for the direct kernel: `[group][block][c_g][kh kw][MR]`,
/// the last block of each group padded with zero weights. Built once per model by the
/// executor (and per call by [`crate::conv2d_fused`] when no packed copy is given).
#[derive(Clone)]
pub struct PackedConvWeights {
    w_dims: [usize; 4],
    group: usize,
    blocks: usize,
    /// The kernel these are packed for.
    kind: Packing,
    /// The packed floats, 64-byte aligned (whole vectors of the packed blocks never straddle
    /// two cache lines); `len` of them are used.
    data: Vec<Lanes>,
    len: usize,
}

/// Packs `weight` (`[m, c/group, kh, kw]`) in blocks of `width` output channels,
/// `[group][m_g / width][c_g kh kw][width]`, into `data` (zeros; the last block of each group
/// keeps zero weights past `m_g`): the direct kernel's layout (`width` [`MR`]) and the
/// channel-vector kernel's (16).
pub(crate) fn pack_channel_blocks(
    weight: &[f32],
    w_dims: [usize; 4],
    group: usize,
    width: usize,
    data: &mut [f32],
) {
    let [m, c_g, kh, kw] = w_dims;
    let m_g = m / group;
    let blocks = m_g.div_ceil(width);
    let kk = c_g * kh * kw;
    assert_eq!(data.len(), group * blocks * kk * width, "packed length");
    for gi in 0..group {
        for oc in 0..m_g {
            let (b, r) = (oc / width, oc % width);
            let src = &weight[(gi * m_g + oc) * kk..(gi * m_g + oc + 1) * kk];
            let base = (gi * blocks + b) * kk * width;
            for (k, &v) in src.iter().enumerate() {
                data[base + k * width + r] = v;
            }
        }
    }
}

/// Which kernel a [`PackedConvWeights`] is packed for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Packing {
    /// The direct kernel: `[group][block][c_g][kh kw][MR]`.
    Direct,
    /// The pointwise kernel: `[m / 16][c][16]` (see [`crate::pointwise`]).
    Pointwise,
    /// Winograd: 36 (F(4x4, 3x3)) or 16 (F(2x2, 3x3)) transformed pointwise sets (see
    /// [`crate::winograd`]).
    Winograd(crate::winograd::Variant),
    /// The channel-vector kernel: `[group][m_g / 16][c_g][kh kw][16]` (see
    /// [`crate::chanvec`]).
    ChanVec,
}

impl std::fmt::Debug for PackedConvWeights {
    /// The shape only: the data is as large as the weights.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedConvWeights")
            .field("w_dims", &self.w_dims)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl PackedConvWeights {
    /// Packs `weight` (`[m, c/group, kh, kw]`, ONNX layout).
    ///
    /// # Panics
    /// If `group` is 0 or does not divide `m`, or `weight` does not hold `w_dims`.
    pub fn new(weight: &[f32], w_dims: [usize; 4], group: usize) -> Self {
        let [m, c_g, kh, kw] = w_dims;
        assert!(
            group >= 1 && m.is_multiple_of(group),
            "PackedConvWeights: group {group} must divide M={m}"
        );
        assert_eq!(
            weight.len(),
            m * c_g * kh * kw,
            "PackedConvWeights: weight length"
        );
        let blocks = (m / group).div_ceil(MR);
        let len = group * blocks * c_g * kh * kw * MR;
        let mut data = aligned_zeros(len);
        pack_channel_blocks(
            weight,
            w_dims,
            group,
            MR,
            &mut lanes_as_f32_mut(&mut data)[..len],
        );
        Self {
            w_dims,
            group,
            blocks,
            kind: Packing::Direct,
            data,
            len,
        }
    }

    /// Packs `weight` for the kernel a convolution of these shapes runs on (on this CPU):
    /// the pointwise kernel, Winograd, the channel-vector kernel, the direct one, or `None`
    /// for the others (which read the ONNX layout).
    pub fn for_conv(
        weight: &[f32],
        in_dims: [usize; 4],
        w_dims: [usize; 4],
        p: &Conv2dParams,
    ) -> Option<Self> {
        if crate::pointwise::uses_pointwise(in_dims, w_dims, p) {
            Some(Self::pointwise(weight, w_dims))
        } else if let Some(variant) = crate::winograd::takes(weight, in_dims, w_dims, p) {
            Some(Self::winograd(variant, weight, w_dims))
        } else if crate::chanvec::uses_chanvec(in_dims, w_dims, p) {
            Some(Self::chanvec(weight, w_dims, p.group))
        } else if conv2d_uses_direct(in_dims, w_dims, p) {
            Some(Self::new(weight, w_dims, p.group))
        } else {
            None
        }
    }

    /// Packs a 1x1 convolution's weights for the pointwise kernel.
    pub(crate) fn pointwise(weight: &[f32], w_dims: [usize; 4]) -> Self {
        let [m, c, kh, kw] = w_dims;
        assert!(
            kh == 1 && kw == 1,
            "PackedConvWeights: pointwise weights must be 1x1"
        );
        let len = m.div_ceil(crate::pointwise::BLOCK) * c * crate::pointwise::BLOCK;
        let mut data = aligned_zeros(len);
        crate::pointwise::pack(weight, m, c, &mut lanes_as_f32_mut(&mut data)[..len]);
        Self {
            w_dims,
            group: 1,
            blocks: m.div_ceil(crate::pointwise::BLOCK),
            kind: Packing::Pointwise,
            data,
            len,
        }
    }

    /// Packs a 3x3 convolution's weights (one group) for Winograd.
    pub(crate) fn winograd(
        variant: crate::winograd::Variant,
        weight: &[f32],
        w_dims: [usize; 4],
    ) -> Self {
        let [m, c, kh, kw] = w_dims;
        assert!(
            kh == 3 && kw == 3,
            "PackedConvWeights: Winograd weights must be 3x3"
        );
        let len = crate::winograd::packed_len(variant, m, c);
        let mut data = aligned_zeros(len);
        crate::winograd::pack(
            variant,
            weight,
            m,
            c,
            &mut lanes_as_f32_mut(&mut data)[..len],
        );
        Self {
            w_dims,
            group: 1,
            blocks: m.div_ceil(crate::pointwise::BLOCK),
            kind: Packing::Winograd(variant),
            data,
            len,
        }
    }

    /// Packs a convolution's weights for the channel-vector kernel.
    pub(crate) fn chanvec(weight: &[f32], w_dims: [usize; 4], group: usize) -> Self {
        let len = crate::chanvec::packed_len(w_dims, group);
        let mut data = aligned_zeros(len);
        pack_channel_blocks(
            weight,
            w_dims,
            group,
            crate::chanvec::BLOCK,
            &mut lanes_as_f32_mut(&mut data)[..len],
        );
        Self {
            w_dims,
            group,
            blocks: (w_dims[0] / group).div_ceil(crate::chanvec::BLOCK),
            kind: Packing::ChanVec,
            data,
            len,
        }
    }

    /// The channel-vector kernel's packed weights, if packed for it.
    pub(crate) fn chanvec_data(&self) -> Option<&[f32]> {
        (self.kind == Packing::ChanVec).then(|| self.floats())
    }

    /// The packed floats.
    fn floats(&self) -> &[f32] {
        &lanes_as_f32(&self.data)[..self.len]
    }

    /// The pointwise kernel's packed weights, if packed for it.
    pub(crate) fn pointwise_data(&self) -> Option<&[f32]> {
        (self.kind == Packing::Pointwise).then(|| self.floats())
    }

    /// The Winograd transformed weights and their algorithm, if packed for it.
    pub(crate) fn winograd_data(&self) -> Option<(crate::winograd::Variant, &[f32])> {
        match self.kind {
            Packing::Winograd(variant) => Some((variant, self.floats())),
            _ => None,
        }
    }

    /// Whether these are packed for the direct kernel.
    pub(crate) fn is_direct(&self) -> bool {
        self.kind == Packing::Direct
    }

    /// The weight dims `[m, c/group, kh, kw]` this was packed from.
    pub fn w_dims(&self) -> [usize; 4] {
        self.w_dims
    }

    /// The number of groups this was packed for.
    pub fn group(&self) -> usize {
        self.group
    }
}

#[cfg(test)]
thread_local! {
    /// Makes [`direct_available`] false on this thread, so that tests cover the im2col path
    /// (what CPUs without AVX-512 run) too.
    pub(crate) static DIRECT_OFF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
thread_local! {
    /// Makes [`conv2d_uses_direct`] ignore its size rules (not the CPU) on this thread, so
    /// that the differential tests run every geometry through the direct kernel.
    pub(crate) static DIRECT_ALWAYS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the direct kernel can run on this CPU.
pub(crate) fn direct_available() -> bool {
    #[cfg(test)]
    if DIRECT_OFF.get() {
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

/// Smallest depth `c/group * kh * kw` for the direct kernel. The RGB first layers (depth 27)
/// ran 1.1-1.4x slower on it than on im2col + `gemm` (one thread): with so few multiply-adds
/// per output, building the window and the epilogue weigh more than im2col does.
const MIN_DEPTH: usize = 64;

/// Smallest output map of a strided layer on the direct kernel. The stride-2 layers with
/// 13x13 and 10x10 outputs ran 1.03-1.18x slower on it (one thread): the wide rows round
/// up to whole vectors, 13 % more work at 13x13, and the four phase planes fill L1 sooner.
const MIN_STRIDED_PIXELS: usize = 16 * 16;

/// Whether a convolution of this shape runs on the direct kernel (on this CPU). Depthwise
/// layers have their own kernel; 1x1 layers with stride 1 and no padding stay on the `gemm`
/// crate, which reads their input in place already (the direct kernel in place measured
/// 5-15 % slower on the YOLOX 1x1 layers, up to 2x on those with 1 or 4 output channels,
/// which fill a fraction of its 8-channel blocks).
pub fn conv2d_uses_direct(in_dims: [usize; 4], w_dims: [usize; 4], p: &Conv2dParams) -> bool {
    let [_, c, _, _] = in_dims;
    let [m, c_g, kh, kw] = w_dims;
    let group = p.group;
    let depthwise = group == c && group == m;
    let pointwise = kh == 1 && kw == 1 && p.strides == [1, 1] && p.pads == [0; 4];
    let od = crate::conv2d_out_dims(in_dims, w_dims, p);
    let small_strided = p.strides != [1, 1] && od[2] * od[3] < MIN_STRIDED_PIXELS;
    #[cfg(test)]
    if DIRECT_ALWAYS.get() {
        return !depthwise && c_g * kh * kw > 0 && direct_available();
    }
    !depthwise && !pointwise && !small_strided && c_g * kh * kw >= MIN_DEPTH && direct_available()
}

/// The fixed plan of one call: window layout and tiling, from the shape only.
///
/// Window layout, per input channel and used phase `(py, px)`: phase row `R` (input row
/// `R sh + py`) is window row `t = R + rtop`, and phase column `C` (input column
/// `C sw + px`) sits at `t wq + gl + C`. Between the data of two rows lies one run of
/// `wq - ncols` zeros that is both the right padding of one row and the left padding of
/// the next, so `wq = ncols + max(left, right padding)`: a 3x3 "same" convolution computes
/// one dropped column per row, not two. Rows above and below the input are zero rows.
struct Plan {
    g: Geom,
    /// Row pitch of the window and of the wide output.
    wq: usize,
    /// Zeros before the first data column of a window row.
    gl: usize,
    /// Zero rows above the first input row of every phase.
    rtop: usize,
    /// Window rows per phase plane holding data or padding (`t < trows`).
    trows: usize,
    /// Phase planes per channel.
    phases: usize,
    /// Whether some tap reads phase `id` (`id = py * sw + px`).
    used: Vec<bool>,
    /// Offset of each tap `(ky, kx)` (row-major) from the wide index, in the window.
    taps: Vec<isize>,
    /// Elements per phase plane of the window (its rows, one zero row, slack).
    plen: usize,
    /// Elements per channel of the window.
    cst: usize,
    rows_per_tile: usize,
    channels_per_tile: usize,
    /// Channels per depth chunk.
    kc: usize,
}

/// Phase and shift of a tap along one axis: input index `o s + k d - pad` is
/// `(o + q) s + p` with `p = (k d - pad) mod s`, `q = (k d - pad) div s` (floor).
fn phase_shift(k: usize, d: usize, pad: usize, s: usize) -> (usize, isize) {
    let off = (k * d) as isize - pad as isize;
    (
        off.rem_euclid(s as isize) as usize,
        off.div_euclid(s as isize),
    )
}

/// Entries `p, p + s, ...` below `n`: the rows (columns) of phase `p`.
fn phase_len(n: usize, p: usize, s: usize) -> usize {
    if p < n { (n - p).div_ceil(s) } else { 0 }
}

impl Plan {
    fn new(g: &Geom, m_g: usize, units: usize) -> Self {
        let (mut qy_min, mut qy_max, mut qx_min) = (isize::MAX, isize::MIN, isize::MAX);
        let mut gr = 0isize;
        let mut max_cols = 0;
        for ky in 0..g.kh {
            let (_, qy) = phase_shift(ky, g.dh, g.pt, g.sh);
            qy_min = qy_min.min(qy);
            qy_max = qy_max.max(qy);
        }
        for kx in 0..g.kw {
            let (px, qx) = phase_shift(kx, g.dw, g.pl, g.sw);
            qx_min = qx_min.min(qx);
            let ncols = phase_len(g.w, px, g.sw);
            max_cols = max_cols.max(ncols);
            // Columns past the data that the last output column reads.
            gr = gr.max(g.ow as isize - 1 + qx - (ncols as isize - 1));
        }
        let gl = (-qx_min).max(0) as usize;
        let gap = gl.max(gr.max(0) as usize);
        let wq = (max_cols + gap).max(g.ow).max(1);
        let rtop = (-qy_min).max(0) as usize;
        let trows = (g.oh as isize + qy_max + rtop as isize).max(1) as usize;
        let rows = Self::row_tiling(g.oh, wq, g.ow);
        // Enough tiles for two or more threads: channels first (a row block's window part
        // is shared, so channel tiles cost nothing extra), then rows down to about 128
        // wide pixels.
        let mut rows = rows;
        let mut chans = m_g.next_multiple_of(MR).min(TILE_CHANNELS);
        loop {
            let tiles = units * g.oh.div_ceil(rows) * m_g.div_ceil(chans);
            if tiles >= MIN_TILES {
                break;
            }
            if chans > 2 * MR {
                chans = (chans / 2).next_multiple_of(MR);
            } else if rows > 1 && rows * wq >= 2 * 128 {
                rows = rows.div_ceil(2);
            } else if chans > MR {
                chans = MR;
            } else {
                break;
            }
        }
        let phases = g.sh * g.sw;
        let plen = (trows + 1) * wq + SLACK;
        let cst = phases * plen;
        let mut used = vec![false; phases];
        let mut taps = Vec::with_capacity(g.kh * g.kw);
        for ky in 0..g.kh {
            let (py, qy) = phase_shift(ky, g.dh, g.pt, g.sh);
            for kx in 0..g.kw {
                let (px, qx) = phase_shift(kx, g.dw, g.pl, g.sw);
                let id = py * g.sw + px;
                used[id] = true;
                let row = (qy + rtop as isize) as usize;
                let col = (qx + gl as isize) as usize;
                taps.push((id * plen + row * wq + col) as isize);
            }
        }
        // Depth chunk: as many channels as keep the window part one register tile reads
        // within an L1 budget. Per channel and used phase, the tile reads one run of
        // `NV * 16` wide pixels (plus the tap columns' spread) per distinct tap row: a 3x3
        // stride-2 layer reads about twice the cache lines of a stride-1 one (4 phases).
        let mut lines = 0;
        for id in 0..phases {
            let (mut rows_seen, mut cmin, mut cmax) = (Vec::new(), usize::MAX, 0);
            for (t, &off) in taps.iter().enumerate() {
                let (ky, kx) = (t / g.kw, t % g.kw);
                let (py, _) = phase_shift(ky, g.dh, g.pt, g.sh);
                let (px, _) = phase_shift(kx, g.dw, g.pl, g.sw);
                if py * g.sw + px != id {
                    continue;
                }
                let rel = off as usize - id * plen;
                let (row, col) = (rel / wq, rel % wq);
                if !rows_seen.contains(&row) {
                    rows_seen.push(row);
                }
                cmin = cmin.min(col);
                cmax = cmax.max(col);
            }
            if !rows_seen.is_empty() {
                lines += rows_seen.len() * ((NV * LANES + cmax - cmin).div_ceil(LANES) + 1);
            }
        }
        let kc = (L1_WINDOW_BYTES / (lines * 64).max(1)).clamp(1, g.c_g);
        // Chunks of equal size: a short last chunk pays the partial sums' round trip for
        // few multiply-adds.
        let kc = g.c_g.div_ceil(g.c_g.div_ceil(kc));
        Self {
            g: *g,
            wq,
            gl,
            rtop,
            trows,
            phases,
            used,
            taps,
            plen,
            cst,
            rows_per_tile: rows,
            channels_per_tile: chans,
            kc,
        }
    }

    /// Output rows per tile: about [`TILE_PIXELS`] wide pixels, choosing among nearby row
    /// counts the one that computes the fewest vectors in all (each tile rounds its wide
    /// length up to whole vectors).
    fn row_tiling(oh: usize, wq: usize, ow: usize) -> usize {
        let target = (TILE_PIXELS / wq).clamp(1, oh);
        let lo = (target / 2).max(1);
        let hi = (target + target / 2).clamp(1, oh);
        let cost = |r: usize| -> usize {
            (0..oh)
                .step_by(r)
                .map(|oy0| ((r.min(oh - oy0) - 1) * wq + ow).div_ceil(LANES))
                .sum()
        };
        // Ties go to the larger tile (fewer per-tile costs).
        (lo..=hi).rev().min_by_key(|&r| cost(r)).unwrap_or(target)
    }

    /// Writes the window of input channels `0..x.len() / (h w)` of one group (`x`: their
    /// input planes) into `win` (their `cst`-element parts of the window): every element a
    /// valid wide pixel's taps read, the padding as zeros.
    fn fill_window(&self, x: &[f32], win: &mut [f32]) {
        let g = &self.g;
        let (h, w, wq, gl) = (g.h, g.w, self.wq, self.gl);
        for ci in 0..x.len() / (h * w) {
            let plane = &x[ci * h * w..(ci + 1) * h * w];
            for id in 0..self.phases {
                let base = ci * self.cst + id * self.plen;
                // Every element of the window is written (it is not zero-initialised): the
                // planes no tap reads and the slack after each plane's rows as zeros.
                if !self.used[id] {
                    zero_row(&mut win[base..base + self.plen]);
                    continue;
                }
                zero_row(&mut win[base + (self.trows + 1) * wq..base + self.plen]);
                let (py, px) = (id / g.sw, id % g.sw);
                if g.sw == 2 && px == 0 && self.used[id + 1] {
                    self.fill_pair(plane, ci, py, win);
                    continue;
                }
                if g.sw == 2 && px == 1 && self.used[id - 1] {
                    continue; // Filled with its even twin.
                }
                let (nrows, ncols) = (phase_len(h, py, g.sh), phase_len(w, px, g.sw));
                // One row past `trows`: the last row's right padding is the zero run at the
                // start of the next row.
                let dst_plane = &mut win[base..base + (self.trows + 1) * wq];
                for (t, row) in dst_plane.chunks_exact_mut(wq).enumerate() {
                    let r = t as isize - self.rtop as isize;
                    if r < 0 || r >= nrows as isize || ncols == 0 {
                        zero_row(row);
                        continue;
                    }
                    let iy = r as usize * g.sh + py;
                    let src = &plane[iy * w..(iy + 1) * w];
                    zero_row(&mut row[..gl]);
                    zero_row(&mut row[gl + ncols..]);
                    if g.sw == 1 {
                        copy_row(&mut row[gl..gl + ncols], &src[px..]);
                    } else {
                        strided_copy(&mut row[gl..gl + ncols], &src[px..], g.sw);
                    }
                }
            }
        }
    }
}

impl Plan {
    /// [`Self::fill_window`] for both column phases of phase row `py` of a stride-2
    /// convolution at once: each input row is de-interleaved in one pass (two strided
    /// copies read it twice and made the stride-2 layers with large inputs slower than
    /// im2col).
    fn fill_pair(&self, plane: &[f32], ci: usize, py: usize, win: &mut [f32]) {
        let g = &self.g;
        let (h, w, wq, gl) = (g.h, g.w, self.wq, self.gl);
        let nrows = phase_len(h, py, g.sh);
        let (n0, n1) = (phase_len(w, 0, 2), phase_len(w, 1, 2));
        let id = py * 2;
        let base = ci * self.cst + id * self.plen;
        let rows = (self.trows + 1) * wq;
        let (p0, p1) = win[base..base + 2 * self.plen].split_at_mut(self.plen);
        for (t, (r0, r1)) in p0[..rows]
            .chunks_exact_mut(wq)
            .zip(p1[..rows].chunks_exact_mut(wq))
            .enumerate()
        {
            let r = t as isize - self.rtop as isize;
            if r < 0 || r >= nrows as isize {
                zero_row(r0);
                zero_row(r1);
                continue;
            }
            let iy = r as usize * g.sh + py;
            let src = &plane[iy * w..(iy + 1) * w];
            zero_row(&mut r0[..gl]);
            zero_row(&mut r0[gl + n0..]);
            zero_row(&mut r1[..gl]);
            zero_row(&mut r1[gl + n1..]);
            let pairs = deinterleave(src, &mut r0[gl..gl + n0], &mut r1[gl..gl + n1]);
            if n0 > pairs {
                r0[gl + pairs] = src[2 * pairs];
            }
        }
    }
}

/// One vector of f32, 64-byte aligned (the wide output scratch).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Lanes(pub(crate) [f32; LANES]);

/// Input elements per task of [`per_channel_copy`] (a run of whole channels, at least one).
const FILL_ELEMENTS: usize = 1 << 16;

/// A copy of `input` (`[n, c, h, w]`, `groups` groups of channels) built channel by channel
/// for a kernel's compute pass (the direct kernel's phase-plane window, the channel-vector
/// kernel's padded planes): `per_channel` floats for each input channel of each image, in
/// the input's channel order, written by `fill(planes, dst)` for runs of channels of one
/// group (their `h w` input planes, their `per_channel`-float parts of the copy) in one
/// parallel pass of about [`FILL_ELEMENTS`] input elements a task.
///
/// `fill` must write every element of `dst`: the copy is not zeroed first (tests poison it
/// with NaN, so an element it forgets fails their comparisons).
pub(crate) fn per_channel_copy(
    input: &[f32],
    in_dims: [usize; 4],
    groups: usize,
    per_channel: usize,
    par: Parallelism,
    fill: impl Fn(&[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let [n, c, h, w] = in_dims;
    let c_g = c / groups;
    let need = n * c * per_channel;
    let mut copy: Vec<f32> = Vec::with_capacity(need);
    {
        // SAFETY: the pass below writes every one of the `need` elements (each task its
        // channels' parts, `fill` all of each part) before the caller reads any.
        let all = unsafe { assume_written(&mut copy.spare_capacity_mut()[..need]) };
        #[cfg(test)]
        all.fill(f32::NAN);
        let allp = SendPtr(all.as_mut_ptr());
        let hw = h * w;
        let per_task = (FILL_ELEMENTS / hw.max(1)).clamp(1, c_g.max(1));
        let tasks_per_unit = c_g.div_ceil(per_task);
        for_each_tile(n * groups * tasks_per_unit, par, |t| {
            let (unit, k) = (t / tasks_per_unit, t % tasks_per_unit);
            let ci0 = k * per_task;
            let nc = per_task.min(c_g - ci0);
            // Channel `unit * c_g + ci0` of the flattened `[n * c]` channels.
            let ch0 = unit * c_g + ci0;
            // SAFETY: channels `ch0..ch0 + nc` of the copy, written by this task only; the
            // buffer outlives the loop.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(allp.get().add(ch0 * per_channel), nc * per_channel)
            };
            fill(&input[ch0 * hw..(ch0 + nc) * hw], dst);
        });
    }
    // SAFETY: all `need` elements were written above.
    unsafe { copy.set_len(need) };
    copy
}

thread_local! {
    static WIDE: RefCell<Vec<Lanes>> = const { RefCell::new(Vec::new()) };
}

/// The direct convolution (see the module docs) of `input` (`[n, c, h, w]`) into `out`
/// (`[n, m, oh, ow]`), every element of which it writes. The caller has checked the
/// shapes, that [`direct_available`] holds, and that `packed` holds these weights.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_direct(
    input: &[f32],
    in_dims: [usize; 4],
    packed: &PackedConvWeights,
    bias: Option<&[f32]>,
    geom: &Geom,
    activation: Option<UnaryOp>,
    out: &mut [f32],
    par: Parallelism,
) {
    let n = in_dims[0];
    let m = packed.w_dims[0];
    let groups = packed.group;
    let m_g = m / groups;
    let plan = Plan::new(geom, m_g, n * groups);
    let g = &plan.g;
    let ohw = g.oh * g.ow;
    let row_tiles = g.oh.div_ceil(plan.rows_per_tile);
    let chan_tiles = m_g.div_ceil(plan.channels_per_tile);
    let per_unit = row_tiles * chan_tiles;
    let outp = SendPtr(out.as_mut_ptr());
    let kk = g.kh * g.kw;
    // The window of every image and group, built once in a parallel pass of its own and
    // shared by the tiles (each tile building its rows' window made the channel tiles of a
    // row block repeat the copy: 6-12 times on the stride-2 layers).
    //
    // The window is allocated per call and every element written once by the fill (no
    // zeroing pass). A window kept per thread across calls was tried: it never returns to
    // the allocator, and glibc then kept its mmap threshold at the 128 KiB default, so the
    // executor's large tensors were mmapped and faulted in again on every run (22,000 page
    // faults and about 15 % of a ppocr_v4_det640 run; freeing a large block per call, as
    // im2col's shared blocks did, raises the threshold).
    let win = per_channel_copy(input, in_dims, groups, plan.cst, par, |x, dst| {
        plan.fill_window(x, dst);
    });
    let win_ref: &[f32] = &win;
    for_each_tile(n * groups * per_unit, par, |t| {
        let (unit, r) = (t / per_unit, t % per_unit);
        let (ni, gi) = (unit / groups, unit % groups);
        let (rt, ct) = (r / chan_tiles, r % chan_tiles);
        let oy0 = rt * plan.rows_per_tile;
        let nr = plan.rows_per_tile.min(g.oh - oy0);
        let m0 = ct * plan.channels_per_tile;
        let mm = plan.channels_per_tile.min(m_g - m0);
        let wide_len = (nr - 1) * plan.wq + g.ow;
        let nvec = wide_len.div_ceil(LANES);
        let blocks = mm.div_ceil(MR);
        WIDE.with(|wide| {
            let mut wide = wide.borrow_mut();
            if wide.len() < blocks * MR * nvec {
                wide.resize(blocks * MR * nvec, Lanes([0.0; LANES]));
            }
            let wide = &mut wide[..blocks * MR * nvec];
            let wbase = &packed.floats()[((gi * packed.blocks + m0 / MR) * g.c_g * kk) * MR..];
            let x = &win_ref[unit * g.c_g * plan.cst..(unit + 1) * g.c_g * plan.cst];
            run_tile(&plan, &x[oy0 * plan.wq..], wbase, blocks, nvec, wide);
            // Epilogue: the valid columns into the output planes, adding the bias (and
            // clamping, for Relu / Clip) in the same pass; other activations then run over
            // each channel's rows (contiguous in the output). The same operations in the
            // same order as a copy followed by `add_bias_then_apply`.
            let (lo, hi, rest) = match activation {
                Some(UnaryOp::Relu) => (0.0, f32::INFINITY, None),
                Some(UnaryOp::Clip { lo, hi }) => (lo, hi, None),
                other => (f32::NEG_INFINITY, f32::INFINITY, other),
            };
            let clamp = rest.is_none() && activation.is_some();
            for i in 0..mm {
                let oc = gi * m_g + m0 + i;
                let src = lanes_as_f32(&wide[i * nvec..(i + 1) * nvec]);
                // SAFETY: rows oy0..oy0 + nr of channel `oc` of image `ni`, written by this
                // tile only.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        outp.get().add((ni * m + oc) * ohw + oy0 * g.ow),
                        nr * g.ow,
                    )
                };
                let b = bias.map(|b| b[oc]);
                for (r, row) in dst.chunks_exact_mut(g.ow).enumerate() {
                    store_row(row, &src[r * plan.wq..r * plan.wq + g.ow], b, clamp, lo, hi);
                }
                if let Some(act) = rest
                    && nr < g.oh
                {
                    apply_in_place(act, dst);
                }
            }
            if let Some(act) = rest
                && nr == g.oh
            {
                // The tile's channels are whole planes, one contiguous run: one call for
                // them all (a call per 100-pixel plane of a 10x10 map cost about a third
                // more than the SiLU itself).
                // SAFETY: channels m0..m0 + mm of group gi of image ni, written above by this
                // tile only.
                let all = unsafe {
                    std::slice::from_raw_parts_mut(
                        outp.get().add((ni * m + gi * m_g + m0) * ohw),
                        mm * ohw,
                    )
                };
                apply_in_place(act, all);
            }
        });
    });
}

dispatch! {
/// `dst[i] = src[i] (+ bias)`, then clamped to `[lo, hi]` when `clamp` (`x < lo -> lo`, then
/// `x > hi -> hi`: NaN stays NaN, as in the activation kernels).
fn store_row(dst: &mut [f32], src: &[f32], bias: Option<f32>, clamp: bool, lo: f32, hi: f32) {
    let src = &src[..dst.len()];
    match (bias, clamp) {
        (Some(b), true) => {
            for (d, &v) in dst.iter_mut().zip(src) {
                let x = v + b;
                let x = if x < lo { lo } else { x };
                *d = if x > hi { hi } else { x };
            }
        }
        (Some(b), false) => {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v + b;
            }
        }
        (None, true) => {
            for (d, &v) in dst.iter_mut().zip(src) {
                let x = if v < lo { lo } else { v };
                *d = if x > hi { hi } else { x };
            }
        }
        (None, false) => dst.copy_from_slice(src),
    }
}
}

/// `len` zeros (rounded up to whole vectors), 64-byte aligned.
pub(crate) fn aligned_zeros(len: usize) -> Vec<Lanes> {
    vec![Lanes([0.0; LANES]); len.div_ceil(LANES)]
}

fn lanes_as_f32_mut(v: &mut [Lanes]) -> &mut [f32] {
    // SAFETY: `Lanes` is `LANES` f32s with no padding (64 bytes, aligned to 64).
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), v.len() * LANES) }
}

fn lanes_as_f32(v: &[Lanes]) -> &[f32] {
    // SAFETY: `Lanes` is `LANES` f32s with no padding (64 bytes, aligned to 64).
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len() * LANES) }
}

/// The register tiles of one tile: for each depth chunk, each group of [`NV`] vectors of
/// wide pixels, each block of [`MR`] channels. `x` is the window from the tile's first
/// row, `wbase` the tile's first weight block, `wide` the `[blocks * MR][nvec]` output.
fn run_tile(plan: &Plan, x: &[f32], wbase: &[f32], blocks: usize, nvec: usize, wide: &mut [Lanes]) {
    let g = &plan.g;
    let kk = g.kh * g.kw;
    let c_g = g.c_g;
    let mut ci0 = 0;
    while ci0 < c_g {
        let kc = plan.kc.min(c_g - ci0);
        let mut v0 = 0;
        while v0 < nvec {
            let nv = NV.min(nvec - v0);
            for b in 0..blocks {
                let w = &wbase[(b * c_g + ci0) * kk * MR..(b * c_g + ci0 + kc) * kk * MR];
                let xs = &x[ci0 * plan.cst + v0 * LANES..];
                let acc = &mut wide[b * MR * nvec + v0..];
                let args = MicroArgs {
                    kc,
                    taps: &plan.taps,
                    cst: plan.cst,
                    acc_stride: nvec,
                    load: ci0 > 0,
                };
                micro(nv, kk, xs, w, acc, &args);
            }
            v0 += nv;
        }
        ci0 += kc;
    }
}

/// Arguments of one micro-kernel call besides its slices.
struct MicroArgs<'a> {
    /// Channels of this depth chunk.
    kc: usize,
    /// Tap offsets.
    taps: &'a [isize],
    /// Elements per channel in `x`.
    cst: usize,
    /// Vectors per channel row in the wide output.
    acc_stride: usize,
    /// Continue from the partial sums in the wide output (later depth chunks).
    load: bool,
}

/// Dispatches to the micro-kernel for `nv` vectors and the tap count.
fn micro(nv: usize, kk: usize, x: &[f32], w: &[f32], acc: &mut [Lanes], a: &MicroArgs) {
    // Bounds: every read is inside `x` (checked once here, not in the loop).
    let reach =
        (a.kc - 1) * a.cst + a.taps.iter().copied().max().unwrap_or(0) as usize + nv * LANES;
    assert!(reach <= x.len(), "direct conv: window too short");
    assert!(w.len() >= a.kc * kk * MR, "direct conv: weights too short");
    assert!(
        acc.len() >= (MR - 1) * a.acc_stride + nv,
        "direct conv: wide output too short"
    );
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `direct_available` (checked by the caller) implies AVX-512; the asserts
        // above bound every access.
        unsafe {
            match (nv, kk) {
                (3, 9) => avx512::micro::<3, 9>(x, w, acc, a),
                (2, 9) => avx512::micro::<2, 9>(x, w, acc, a),
                (1, 9) => avx512::micro::<1, 9>(x, w, acc, a),
                (3, _) => avx512::micro::<3, 0>(x, w, acc, a),
                (2, _) => avx512::micro::<2, 0>(x, w, acc, a),
                _ => avx512::micro::<1, 0>(x, w, acc, a),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, w, acc, a);
        unreachable!("the direct convolution needs AVX-512");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, Lanes, MR, MicroArgs};
    use std::arch::x86_64::*;

    /// `acc[r][v] (+)= sum over the chunk's (ci, tap) of w[ci][tap][r] * x[ci][tap + 16 v ..]`
    /// for `r < MR`, `v < V`, with one FMA per term in `(ci, tap)` order. `TAPS` is the tap
    /// count when it is a constant the loop can be unrolled for, else 0.
    ///
    /// # Safety
    /// AVX-512 F; the slices must cover the reads and writes (see `super::micro`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn micro<const V: usize, const TAPS: usize>(
        x: &[f32],
        w: &[f32],
        acc_out: &mut [Lanes],
        a: &MicroArgs,
    ) {
        let ntaps = if TAPS == 0 { a.taps.len() } else { TAPS };
        let taps = &a.taps[..ntaps];
        let accp = acc_out.as_mut_ptr().cast::<f32>();
        let stride = a.acc_stride * LANES;
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        if a.load {
            for (r, row) in acc.iter_mut().enumerate() {
                for (v, av) in row.iter_mut().enumerate() {
                    // SAFETY: inside `acc_out` (asserted by the caller); 64-byte aligned.
                    *av = unsafe { _mm512_load_ps(accp.add(r * stride + v * LANES)) };
                }
            }
        }
        let xp = x.as_ptr();
        let mut wp = w.as_ptr();
        for ci in 0..a.kc {
            // SAFETY: channel `ci` of the chunk lies inside `x`.
            let xc = unsafe { xp.add(ci * a.cst) };
            for &t in taps {
                // SAFETY: tap windows of this channel lie inside `x` (see the caller).
                let xt = unsafe { xc.offset(t) };
                let mut xv = [_mm512_setzero_ps(); V];
                for (v, xvv) in xv.iter_mut().enumerate() {
                    // SAFETY: as above.
                    *xvv = unsafe { _mm512_loadu_ps(xt.add(v * LANES)) };
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    // SAFETY: `w` holds `kc * taps * MR` weights.
                    let wv = unsafe { _mm512_set1_ps(*wp.add(r)) };
                    for (av, &xvv) in row.iter_mut().zip(&xv) {
                        *av = _mm512_fmadd_ps(wv, xvv, *av);
                    }
                }
                // A hint only: an address past the weights is not read.
                _mm_prefetch::<_MM_HINT_T0>(wp.wrapping_add(super::WEIGHT_PREFETCH).cast::<i8>());
                // SAFETY: stays inside (or one past) `w`.
                wp = unsafe { wp.add(MR) };
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (v, &av) in row.iter().enumerate() {
                // SAFETY: inside `acc_out`; 64-byte aligned.
                unsafe { _mm512_store_ps(accp.add(r * stride + v * LANES), av) };
            }
        }
    }
}
