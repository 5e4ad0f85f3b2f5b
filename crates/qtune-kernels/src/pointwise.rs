//! Pointwise convolution (1x1, stride 1, no padding, one group) on CPUs with AVX-512: the
//! input planes are read in place, the weights come packed once per model, and each output
//! element is one chain of fused multiply-adds over the whole depth, kept in a register
//! from the first term to the store (bias and Relu / Clip applied on the way out).
//!
//! The `gemm` crate, which ran these layers before, packs both operands on every call and
//! rounds its pixel tiles to its 64-row micro-kernel: on 7x7 and 14x14 maps (49 and 196
//! pixels) that is a quarter of its work wasted, where ONNX Runtime's channel-blocked
//! layout loses nothing.
//!
//! Two orientations of the register tile, chosen from the shape:
//! * **pixels** ([`MR`] channels x [`NV`] vectors of 16 pixels): the weights are broadcast,
//!   the input rows loaded as vectors (the last one masked); for large maps;
//! * **channels** (up to [`CP`] pixels x [`CV`] vectors of 16 channels): the input is
//!   broadcast, the packed weights loaded as vectors, and each result vector scattered to
//!   its 16 output planes; for small maps, where whole pixel vectors would be mostly
//!   padding.
//!
//! Both sum `w[co][0] x[0][p] + ... + w[co][k-1] x[k-1][p]` with one FMA per term in depth
//! order starting from 0, then add the bias, then clamp: the order of
//! [`crate::reference::conv2d_fma_ordered`] and of the direct kernel, so the orientation and
//! the tiling change no bit, and results are the same for any thread count.
//!
//! Weights are packed as `[m / 16][k][16]` (the last block padded with zeros): a pixel tile
//! broadcasts 8 consecutive floats of one depth row, a channel tile loads 16.

use crate::unary::{UnaryOp, apply_in_place};
use crate::util::{SendPtr, for_each_tile};
use crate::{Conv2dParams, Parallelism};

/// Output channels per packed weight block (one vector).
pub(crate) const BLOCK: usize = 16;
/// Output channels of a pixel-oriented register tile.
const MR: usize = 8;
/// Pixel vectors of a pixel-oriented register tile (`MR * NV = 24` accumulators).
const NV: usize = 3;
/// Channel vectors of a channel-oriented register tile.
const CV: usize = 3;
/// Largest pixel count of a channel-oriented register tile (`CP * CV = 24` accumulators).
const CP: usize = 8;
/// f32 lanes of one vector.
const LANES: usize = 16;
/// L1 bytes the weights and input of one depth chunk of a channel-oriented tile may take.
const L1_BYTES: usize = 24 * 1024;
/// Largest pixel tile of the channel orientation (its partial sums live on the stack).
const MAX_CHANNEL_PIXELS: usize = 64;
/// Tiles a convolution is cut into at least when its shape allows, so that two or more
/// threads share it (never the thread count).
const MIN_TILES: usize = 8;
/// Largest pixel tile of the pixel orientation: 4 register-tile columns, so a tile's input
/// panel (`k` rows of 192 floats) is read from L1 or L2 by every channel block.
const TILE_PIXELS: usize = 4 * NV * LANES;
/// Largest channel tile.
const TILE_CHANNELS: usize = 256;

#[cfg(test)]
thread_local! {
    /// Forces this kernel, and an orientation, on this thread (tests): 1 pixels, 2 channels
    /// (on maps it can take), 0 the shape's rules.
    pub(crate) static FORCE: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Whether a convolution of these shapes runs on the pointwise kernel (on this CPU).
pub(crate) fn uses_pointwise(in_dims: [usize; 4], w_dims: [usize; 4], p: &Conv2dParams) -> bool {
    let [_, c, _, _] = in_dims;
    let [_, c_g, kh, kw] = w_dims;
    #[cfg(test)]
    if crate::direct::DIRECT_ALWAYS.get() {
        return false;
    }
    kh == 1
        && kw == 1
        && p.strides == [1, 1]
        && p.pads == [0; 4]
        && p.group == 1
        && c_g == c
        && crate::direct::direct_available()
        && preferred(c, w_dims[0], in_dims[2] * in_dims[3])
}

/// Whether this kernel runs a pointwise convolution of depth `k`, `m` output channels and
/// `hw` pixels faster than the `gemm` crate: measured per layer on the six workloads (one
/// thread, CPU time, alternated; BENCHMARKS.md). It wins on maps up to 8x8 (channel
/// orientation, at the machine's peak), on maps up to 28x28 whose weights stay in L2, and
/// on the wide expansions of large maps (16 -> 96 on 112x112); the `gemm` crate's packed
/// panels stay ahead on the detectors' large maps with few output channels, and on layers
/// with fewer than 16 output channels (a register tile of 8 channels computing 1 or 4).
pub(crate) fn preferred(k: usize, m: usize, hw: usize) -> bool {
    #[cfg(test)]
    if FORCE.get() != 0 {
        return true;
    }
    if m < 16 {
        return false;
    }
    if channel_oriented(k, hw) {
        return true;
    }
    if hw <= 28 * 28 {
        return k * m <= 96 * 1024;
    }
    k <= 32 && m >= 64
}

/// Packs `weight` (`[m, k]`, the ONNX `[m, k, 1, 1]`) as `[m / 16][k][16]` into `data`
/// (zeros, `m.div_ceil(16) * k * 16` of them).
pub(crate) fn pack(weight: &[f32], m: usize, k: usize, data: &mut [f32]) {
    assert_eq!(weight.len(), m * k, "pointwise: weight length");
    pack_strided(weight, k, m, (1, k), data);
}

/// Packs a `k x m` matrix whose element `(depth kk, column co)` is `src[kk * rs + co * cs]`
/// as panels of 16 columns, `[m / 16][k][16]`, into `data` (zeros, `m.div_ceil(16) * k * 16`
/// of them; the last panel's padding stays zero): the layout of this kernel's weights and of
/// the few-row product's right operand ([`crate::rowvec`]).
pub(crate) fn pack_strided(
    src: &[f32],
    k: usize,
    m: usize,
    (rs, cs): (usize, usize),
    data: &mut [f32],
) {
    assert_eq!(
        data.len(),
        m.div_ceil(BLOCK) * k * BLOCK,
        "pointwise: packed length"
    );
    if k == 0 || m == 0 {
        return;
    }
    assert!(
        (k - 1) * rs + (m - 1) * cs < src.len(),
        "pointwise: source too short for its strides"
    );
    for co in 0..m {
        let (b, r) = (co / BLOCK, co % BLOCK);
        for kk in 0..k {
            data[(b * k + kk) * BLOCK + r] = src[kk * rs + co * cs];
        }
    }
}

/// Whether the channel orientation serves a map of `hw` pixels at depth `k`: a pixel tile
/// computes `ceil(hw / 16) * 16` pixels for `hw` (31 % more on 7x7 maps); a channel tile
/// computes every pixel but scatters its results, about one cycle per output against `k / 32`
/// for its multiply-adds.
pub(crate) fn channel_oriented(k: usize, hw: usize) -> bool {
    // The partial sums of a tile live on the stack.
    if hw > MAX_CHANNEL_PIXELS {
        return false;
    }
    #[cfg(test)]
    match FORCE.get() {
        1 => return false,
        2 => return true,
        _ => {}
    }
    let pixel_cost = hw.next_multiple_of(LANES) as f64 / hw.max(1) as f64;
    let channel_cost = 1.0 + 32.0 / k.max(1) as f64;
    channel_cost < pixel_cost
}

/// Channel tiles of a call are a multiple of this (the register tile's rows, or the packed
/// block the channel orientation loads whole).
pub(crate) fn channel_step(k: usize, hw: usize) -> usize {
    if channel_oriented(k, hw) { BLOCK } else { MR }
}

/// Where one tile's outputs go: element `(co, p)` of the tile (channel `m0 + co`, pixel
/// `p0 + p`) at `dst + co * stride + p`.
#[derive(Clone, Copy)]
pub(crate) struct Dst {
    pub ptr: *mut f32,
    pub stride: usize,
}

/// One tile of one image in the orientation `channel` ([`channel_oriented`], decided once
/// per call by the caller): output channels `m0..m0 + mm` (`m0` a multiple of
/// [`channel_step`]) at pixels `p0..p0 + np`, from `x` (the image's `[k][hw]` input) and
/// `packed` (from [`pack`]), with `bias` (indexed by channel) and `clamp` applied; other
/// activations are the caller's.
///
/// # Safety
/// AVX-512 F must be available; `dst` must be valid for writes of `mm` rows of `np`
/// elements at its stride, not overlapping `x` or `packed`.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn tile(
    channel: bool,
    x: &[f32],
    hw: usize,
    k: usize,
    packed: &[f32],
    (m0, mm): (usize, usize),
    (p0, np): (usize, usize),
    bias: Option<&[f32]>,
    clamp: Option<(f32, f32)>,
    dst: Dst,
) {
    assert!(
        x.len() >= k * hw && p0 + np <= hw,
        "pointwise: input too short"
    );
    assert!(
        packed.len() >= (m0 + mm).div_ceil(BLOCK) * k * BLOCK,
        "pointwise: packed weights too short"
    );
    if let Some(b) = bias {
        assert!(b.len() >= m0 + mm, "pointwise: bias too short");
    }
    if mm == 0 || np == 0 {
        return;
    }
    let job = Job {
        x,
        hw,
        k,
        packed,
        m0,
        mm,
        p0,
        np,
        bias: bias.map(|b| b.as_ptr()),
        clamp,
        dst,
    };
    // SAFETY: the asserts above bound every read; the caller vouches for `dst` and the CPU.
    unsafe {
        if channel {
            assert!(
                m0.is_multiple_of(BLOCK),
                "pointwise: channel tile not block-aligned"
            );
            channel_tile(&job);
        } else {
            assert!(m0.is_multiple_of(MR), "pointwise: channel tile not aligned");
            pixel_tile(&job);
        }
    }
}

/// One tile's operands (see [`tile`]): input `x` (`[k][hw]`), packed weights, output
/// channels `m0..m0 + mm` at pixels `p0..p0 + np`, the stores' bias and clamp.
struct Job<'a> {
    x: &'a [f32],
    hw: usize,
    k: usize,
    packed: &'a [f32],
    m0: usize,
    mm: usize,
    p0: usize,
    np: usize,
    bias: Option<*const f32>,
    clamp: Option<(f32, f32)>,
    dst: Dst,
}

#[cfg(target_arch = "x86_64")]
unsafe fn pixel_tile(job: &Job) {
    let Job {
        x,
        hw,
        k,
        packed,
        m0,
        mm,
        p0,
        np,
        dst,
        ..
    } = *job;
    let nvec = np.div_ceil(LANES);
    let tail = np - (nvec - 1) * LANES;
    let columns = nvec.div_ceil(NV);
    let blocks = mm.div_ceil(MR);
    // Which operand stays in L1 across the register tiles: the input panel of a column of
    // 48 pixels (`k` rows, reused by every channel block) when it fits, else the weights
    // of a channel block (`k` rows of 8, reused by every column), the input panels then
    // coming from L2 either way.
    let channels_outer = k * NV * LANES * 4 > L1_BYTES;
    for step in 0..columns * blocks {
        let (c, b) = if channels_outer {
            (step % columns, step / columns)
        } else {
            (step / blocks, step % blocks)
        };
        let v0 = c * NV;
        let nv = NV.min(nvec - v0);
        let last = v0 + nv == nvec;
        let mask: u16 = if last && tail < LANES {
            (1u16 << tail) - 1
        } else {
            u16::MAX
        };
        let xs = x.as_ptr().wrapping_add(p0 + v0 * LANES);
        let co = m0 + b * MR;
        let rows = MR.min(m0 + mm - co);
        let w = packed
            .as_ptr()
            .wrapping_add((co / BLOCK) * k * BLOCK + co % BLOCK);
        // SAFETY: rows `co..co + rows` of the tile, pixels `v0 * 16..` of it.
        let d = unsafe { dst.ptr.add((co - m0) * dst.stride + v0 * LANES) };
        let args = PixelArgs {
            hw,
            k,
            mask,
            rows,
            stride: dst.stride,
            bias: job.bias.map(|b| b.wrapping_add(co)),
            clamp: job.clamp,
        };
        // SAFETY: input rows `0..k` at pixels `p0 + v0 * 16..` (the last vector masked
        // to the tile) and `k` packed rows of 16 are inside the slices (asserted by
        // `tile`); `d` is inside the tile.
        unsafe {
            match nv {
                3 => avx512::pixels::<3>(xs, w, d, &args),
                2 => avx512::pixels::<2>(xs, w, d, &args),
                _ => avx512::pixels::<1>(xs, w, d, &args),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
unsafe fn channel_tile(job: &Job) {
    let Job {
        x,
        hw,
        k,
        packed,
        m0,
        mm,
        p0,
        np,
        dst,
        ..
    } = *job;
    assert!(np <= MAX_CHANNEL_PIXELS, "pointwise: channel tile too wide");
    // Pixel tiles of nearly equal size (49 pixels: 7 of 7, not 6 of 8 and one of 1).
    let pt = np.div_ceil(CP);
    // Depth chunks whose weights (`kc` rows of 48) and input (`kc` rows of the tile's
    // pixels) stay in L1 while every pixel tile of a channel block runs over them; the
    // partial sums wait in `partial` between chunks, unchanged.
    let kc = (L1_BYTES / (4 * (CV * LANES + np))).clamp(1, k.max(1));
    let kc = k.div_ceil(k.div_ceil(kc).max(1)).max(1);
    let mut partial = [crate::direct::Lanes([0.0; LANES]); MAX_CHANNEL_PIXELS * CV];
    let mut co = m0;
    while co < m0 + mm {
        let nvec = (m0 + mm - co).div_ceil(LANES).min(CV);
        let chans = (nvec * LANES).min(m0 + mm - co);
        let w = packed.as_ptr().wrapping_add((co / BLOCK) * k * BLOCK);
        let mut k0 = 0;
        loop {
            let kn = kc.min(k - k0);
            let mut done = 0;
            for t in 0..pt {
                let p = np / pt + usize::from(t < np % pt);
                let args = ChannelArgs {
                    hw,
                    k: kn,
                    block: k * BLOCK,
                    chans,
                    stride: dst.stride,
                    bias: job.bias.map(|b| b.wrapping_add(co)),
                    clamp: job.clamp,
                    partial: partial[done * CV..].as_mut_ptr().cast::<f32>(),
                    first: k0 == 0,
                    last: k0 + kn == k,
                };
                let xs = x.as_ptr().wrapping_add(p0 + done + k0 * hw);
                // SAFETY: channels `co..co + chans`, pixels `done..done + p` of the tile.
                let d = unsafe { dst.ptr.add((co - m0) * dst.stride + done) };
                // SAFETY: input rows `k0..k0 + kn` at pixels `p0 + done..+ p`, those rows
                // of the packed blocks of channels `co..co + nvec * 16` (asserted by
                // `tile`), the tile's partial sums, and `d`'s rows.
                unsafe { channel_dispatch(p, nvec, xs, w.wrapping_add(k0 * BLOCK), d, &args) };
                done += p;
            }
            k0 += kn;
            if k0 >= k {
                break;
            }
        }
        co += CV * LANES;
    }
}

/// Calls the channel-oriented register tile for `p` pixels and `nv` channel vectors.
#[cfg(target_arch = "x86_64")]
unsafe fn channel_dispatch(
    p: usize,
    nv: usize,
    x: *const f32,
    w: *const f32,
    d: *mut f32,
    a: &ChannelArgs,
) {
    macro_rules! by_pixels {
        ($v:literal) => {
            // SAFETY: forwarded from the caller.
            unsafe {
                match p {
                    8 => avx512::channels::<8, $v>(x, w, d, a),
                    7 => avx512::channels::<7, $v>(x, w, d, a),
                    6 => avx512::channels::<6, $v>(x, w, d, a),
                    5 => avx512::channels::<5, $v>(x, w, d, a),
                    4 => avx512::channels::<4, $v>(x, w, d, a),
                    3 => avx512::channels::<3, $v>(x, w, d, a),
                    2 => avx512::channels::<2, $v>(x, w, d, a),
                    _ => avx512::channels::<1, $v>(x, w, d, a),
                }
            }
        };
    }
    match nv {
        3 => by_pixels!(3),
        2 => by_pixels!(2),
        _ => by_pixels!(1),
    }
}

/// Arguments of a pixel-oriented register tile besides its pointers.
struct PixelArgs {
    hw: usize,
    k: usize,
    /// Lanes of the last pixel vector inside the tile.
    mask: u16,
    /// Output channels to store (the others are padding of the packed block).
    rows: usize,
    stride: usize,
    bias: Option<*const f32>,
    clamp: Option<(f32, f32)>,
}

/// Arguments of a channel-oriented register tile besides its pointers.
struct ChannelArgs {
    hw: usize,
    /// Depth rows of this chunk.
    k: usize,
    /// Floats per packed block (`16 * depth`).
    block: usize,
    /// The tile's partial sums, `[P][V * 16]`, 64-byte aligned: loaded unless `first`,
    /// stored unless `last`.
    partial: *mut f32,
    first: bool,
    last: bool,
    /// Output channels to store.
    chans: usize,
    stride: usize,
    bias: Option<*const f32>,
    clamp: Option<(f32, f32)>,
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{ChannelArgs, LANES, MR, PixelArgs};
    use std::arch::x86_64::*;
    /// Depth rows (of 16 channels, 64 bytes) ahead of the weight streams that the kernels
    /// prefetch into L1. Inside a model a layer's weights come from memory (the other
    /// layers evicted them); with it, one thread, alternated medians of `qtune bench`:
    /// mobilenetv2_nsfw 4.05 -> 3.83 ms, efficientnet_lite0 5.20 -> 4.95 ms (16 rows, on
    /// a Zen 4). On a Zen 5, 16 -> 48 rows (3 KB ahead: a channel tile spends about 12
    /// cycles a row, so 16 rows hid less than the memory latency): mobilenetv2_nsfw 4.05 ->
    /// 3.85 ms, efficientnet_lite0 5.32 -> 5.05 ms; 32 and 96 rows were no better.
    const PF_ROWS: usize = 48;

    /// `x < lo -> lo`, then `x > hi -> hi`: NaN stays NaN, as in the activation kernels.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn clamp(v: __m512, lo: __m512, hi: __m512) -> __m512 {
        let v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, lo), v, lo);
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, hi), v, hi)
    }

    /// `MR` channels x `V` vectors of pixels: `d[r][v] = clamp(sum_k w[k][r] x[k][v] + b[r])`.
    ///
    /// # Safety
    /// AVX-512 F; `x` readable at rows `0..k` (stride `hw`) for `V` vectors (the last one
    /// under `mask`), `w` at `k` rows of 16 floats from it, `d` writable at `rows` rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn pixels<const V: usize>(
        x: *const f32,
        w: *const f32,
        d: *mut f32,
        a: &PixelArgs,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; MR];
        let mask: __mmask16 = a.mask;
        for kk in 0..a.k {
            // SAFETY: row `kk` of the input and of the packed weights (see above).
            let (xr, wr) = unsafe { (x.add(kk * a.hw), w.add(kk * super::BLOCK)) };
            // A hint only, as in `channels`.
            _mm_prefetch::<_MM_HINT_T0>(wr.wrapping_add(PF_ROWS * super::BLOCK).cast::<i8>());
            let mut xv = [_mm512_setzero_ps(); V];
            for (v, xvv) in xv.iter_mut().enumerate() {
                // SAFETY: as above; the last vector reads only the lanes in `mask`.
                *xvv = unsafe {
                    if v + 1 < V {
                        _mm512_loadu_ps(xr.add(v * LANES))
                    } else {
                        _mm512_maskz_loadu_ps(mask, xr.add(v * LANES))
                    }
                };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: 8 weights of the row (`r < MR <= 16`).
                let wv = _mm512_set1_ps(unsafe { *wr.add(r) });
                for (av, &xvv) in row.iter_mut().zip(&xv) {
                    *av = _mm512_fmadd_ps(wv, xvv, *av);
                }
            }
        }
        let (lo, hi) = a.clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        for (r, row) in acc.iter().enumerate().take(a.rows) {
            // SAFETY: `bias` covers the tile's channels.
            let b = a.bias.map(|b| _mm512_set1_ps(unsafe { *b.add(r) }));
            for (v, &av) in row.iter().enumerate() {
                let mut y = av;
                if let Some(b) = b {
                    y = _mm512_add_ps(y, b);
                }
                if a.clamp.is_some() {
                    y = clamp(y, lo, hi);
                }
                // SAFETY: row `r` of the tile, inside `d` (the last vector masked).
                unsafe {
                    let at = d.add(r * a.stride + v * LANES);
                    if v + 1 < V {
                        _mm512_storeu_ps(at, y);
                    } else {
                        _mm512_mask_storeu_ps(at, mask, y);
                    }
                }
            }
        }
    }

    /// `P` pixels x `V` vectors of 16 channels: `d[16 v + l][p] = clamp(sum_k w[v][k][l]
    /// x[k][p] + b[16 v + l])`, each result vector scattered to its 16 rows.
    ///
    /// # Safety
    /// AVX-512 F; `x` readable at rows `0..k` (stride `hw`) for `P` pixels, `w` at `V`
    /// packed blocks of `k * 16` floats, `d` writable at `chans` rows of `P` pixels.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn channels<const P: usize, const V: usize>(
        x: *const f32,
        w: *const f32,
        d: *mut f32,
        a: &ChannelArgs,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; P];
        let block = a.block;
        if !a.first {
            for (p, row) in acc.iter_mut().enumerate() {
                for (v, av) in row.iter_mut().enumerate() {
                    // SAFETY: the tile's partial sums (see `ChannelArgs::partial`).
                    *av = unsafe { _mm512_load_ps(a.partial.add((p * super::CV + v) * LANES)) };
                }
            }
        }
        for kk in 0..a.k {
            let mut wv = [_mm512_setzero_ps(); V];
            for (v, wvv) in wv.iter_mut().enumerate() {
                // SAFETY: row `kk` of packed block `v`.
                *wvv = unsafe { _mm512_loadu_ps(w.add(v * block + kk * super::BLOCK)) };
                // A hint only: an address past the weights is not read.
                _mm_prefetch::<_MM_HINT_T0>(
                    w.wrapping_add(v * block + (kk + PF_ROWS) * super::BLOCK)
                        .cast::<i8>(),
                );
            }
            // SAFETY: row `kk` of the input, pixels `0..P`.
            let xr = unsafe { x.add(kk * a.hw) };
            for (p, row) in acc.iter_mut().enumerate() {
                // SAFETY: as above.
                let xs = _mm512_set1_ps(unsafe { *xr.add(p) });
                for (av, &wvv) in row.iter_mut().zip(&wv) {
                    *av = _mm512_fmadd_ps(wvv, xs, *av);
                }
            }
        }
        if !a.last {
            for (p, row) in acc.iter().enumerate() {
                for (v, &av) in row.iter().enumerate() {
                    // SAFETY: as above.
                    unsafe { _mm512_store_ps(a.partial.add((p * super::CV + v) * LANES), av) };
                }
            }
            return;
        }
        let (lo, hi) = a.clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let stride = a.stride as i32;
        let index = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(stride),
        );
        for v in 0..V {
            let lanes = a.chans.saturating_sub(v * LANES).min(LANES);
            let mask: __mmask16 = if lanes == LANES {
                0xFFFF
            } else {
                (1u16 << lanes) - 1
            };
            // SAFETY: the bias of the tile's channels, masked to them.
            let b = a
                .bias
                .map(|b| unsafe { _mm512_maskz_loadu_ps(mask, b.add(v * LANES)) });
            for (p, row) in acc.iter().enumerate() {
                let mut y = row[v];
                if let Some(b) = b {
                    y = _mm512_add_ps(y, b);
                }
                if a.clamp.is_some() {
                    y = clamp(y, lo, hi);
                }
                // SAFETY: rows `16 v + l` (`l` in `mask`) of the tile, pixel `p`.
                unsafe {
                    _mm512_mask_i32scatter_ps::<4>(d.add(v * LANES * a.stride + p), mask, index, y);
                }
            }
        }
    }
}

/// Tiling of a pointwise convolution over `units` images: `(pixels, channels)` per tile,
/// from the shape only.
fn tiling(units: usize, k: usize, m: usize, hw: usize) -> (usize, usize) {
    let step = channel_step(k, hw);
    let mut px = if channel_oriented(k, hw) {
        hw.min(MAX_CHANNEL_PIXELS)
    } else {
        hw.min(TILE_PIXELS).next_multiple_of(LANES)
    };
    let mut ch = m.next_multiple_of(step).min(TILE_CHANNELS);
    loop {
        let tiles = units * hw.div_ceil(px) * m.div_ceil(ch);
        if tiles >= MIN_TILES {
            break;
        }
        if ch > 2 * step.max(LANES) {
            ch = (ch / 2).next_multiple_of(step);
        } else if px > 2 * LANES {
            px = (px / 2).next_multiple_of(LANES);
        } else if ch > step {
            ch = (ch / 2).next_multiple_of(step);
        } else {
            break;
        }
    }
    (px, ch)
}

/// The pointwise convolution of `input` (`[n, k, hw]`) with weights packed by [`pack`] for
/// `m` output channels into `out` (`[n, m, hw]`), every element of which it writes. The
/// caller has checked the shapes and that AVX-512 is available.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_pointwise(
    input: &[f32],
    n: usize,
    k: usize,
    hw: usize,
    m: usize,
    packed: &[f32],
    bias: Option<&[f32]>,
    activation: Option<UnaryOp>,
    out: &mut [f32],
    par: Parallelism,
) {
    assert_eq!(input.len(), n * k * hw, "pointwise: input length");
    assert_eq!(out.len(), n * m * hw, "pointwise: output length");
    if out.is_empty() {
        return;
    }
    let channel = channel_oriented(k, hw);
    let (px, ch) = tiling(n, k, m, hw);
    let (pt, ct) = (hw.div_ceil(px), m.div_ceil(ch));
    let (clamp, rest) = split_activation(activation);
    let outp = SendPtr(out.as_mut_ptr());
    for_each_tile(n * pt * ct, par, |t| {
        let (ni, r) = (t / (pt * ct), t % (pt * ct));
        let (ci, pi) = (r / pt, r % pt);
        let (m0, p0) = (ci * ch, pi * px);
        let (mm, np) = (ch.min(m - m0), px.min(hw - p0));
        let x = &input[ni * k * hw..(ni + 1) * k * hw];
        let base = (ni * m + m0) * hw + p0;
        let dst = Dst {
            // SAFETY: the tile's first element, inside `out`; tiles write disjoint parts.
            ptr: unsafe { outp.get().add(base) },
            stride: hw,
        };
        // SAFETY: AVX-512 checked by the caller; the tile's rows are inside `out` and
        // written by this tile only.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            tile(
                channel,
                x,
                hw,
                k,
                packed,
                (m0, mm),
                (p0, np),
                bias,
                clamp,
                dst,
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("the pointwise kernel needs AVX-512 ({channel} {x:?}, {clamp:?})");
        if let Some(act) = rest {
            // Whole planes are one contiguous run: one call for all of them (a call per
            // 100-pixel row of a 10x10 map cost about a third more than the SiLU itself).
            let (rows, len) = if np == hw { (1, mm * hw) } else { (mm, np) };
            for i in 0..rows {
                // SAFETY: row `i` of this tile (or all its rows, when they are whole
                // planes), written above by this tile only.
                let row = unsafe { std::slice::from_raw_parts_mut(dst.ptr.add(i * hw), len) };
                apply_in_place(act, row);
            }
        }
    });
}

/// An activation as the clamp the register tiles apply (`Relu`, `Clip`) or the one the
/// caller applies afterwards (the others).
pub(crate) fn split_activation(
    activation: Option<UnaryOp>,
) -> (Option<(f32, f32)>, Option<UnaryOp>) {
    match activation {
        Some(UnaryOp::Relu) => (Some((0.0, f32::INFINITY)), None),
        Some(UnaryOp::Clip { lo, hi }) => (Some((lo, hi)), None),
        other => (None, other),
    }
}
