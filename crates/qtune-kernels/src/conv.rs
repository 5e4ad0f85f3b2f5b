//! 2-D convolution, ONNX `Conv` semantics (opset 1-22) for NCHW f32: explicit pads
//! `[top, left, bottom, right]` (the caller resolves `auto_pad`), strides, dilations, groups.
//!
//! Strategy:
//! * depthwise (`group == C == M`): a hand-written direct kernel, rows processed as slice
//!   windows with the padded border columns separated from the interior;
//! * 1x1, stride 1, no padding: the input plane is already the GEMM right-hand side;
//! * otherwise im2col of a fixed-width spatial tile into a per-thread scratch buffer, then
//!   `gemm` on that tile.
//!
//! Tiles are `(image, group, block of output channels, block of output pixels)` with fixed
//! sizes, so results are bit-identical for any thread count.

use crate::Parallelism;
use crate::gemm_kernel::{MatRef, gemm_tile};
use crate::simd::dispatch;
use crate::util::{SendPtr, for_each_tile};
use std::cell::RefCell;

/// Output pixels per GEMM tile.
const TILE_PIXELS: usize = 256;
/// Output channels per GEMM tile when a group's output has many pixel tiles (then the
/// im2col buffer is built once per pixel tile and shared by all channels).
const TILE_CHANNELS_WIDE: usize = 512;
/// Output channels per GEMM tile for small spatial outputs and 1x1 convolutions, so deep
/// layers (7x7, 14x14 outputs) still split into enough tiles to keep threads busy.
const TILE_CHANNELS_NARROW: usize = 64;
/// A group's output counts as "many pixel tiles" from this many on.
const MANY_PIXEL_TILES: usize = 8;

/// Attributes of a 2-D convolution (ONNX `Conv`), with `auto_pad` already resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Conv2dParams {
    /// `[stride_h, stride_w]`, each >= 1.
    pub strides: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// `[dilation_h, dilation_w]`, each >= 1.
    pub dilations: [usize; 2],
    /// Number of groups; divides both input and output channels.
    pub group: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            group: 1,
        }
    }
}

impl Conv2dParams {
    /// Builds parameters from every field (the struct is `#[non_exhaustive]`).
    pub fn new(strides: [usize; 2], pads: [usize; 4], dilations: [usize; 2], group: usize) -> Self {
        Self {
            strides,
            pads,
            dilations,
            group,
        }
    }
}

/// Output extent of one spatial axis of a convolution or pooling window, floor mode.
/// Returns 0 when the (dilated) window does not fit.
pub(crate) fn conv_out_len(
    input: usize,
    pad_begin: usize,
    pad_end: usize,
    k: usize,
    stride: usize,
    dilation: usize,
) -> usize {
    let span = (k - 1) * dilation + 1;
    let padded = input + pad_begin + pad_end;
    if padded < span {
        0
    } else {
        (padded - span) / stride + 1
    }
}

/// Output dims `[n, m, oh, ow]` of [`conv2d`] for input `[n, c, h, w]` and weight
/// `[m, c/group, kh, kw]`.
pub fn conv2d_out_dims(in_dims: [usize; 4], w_dims: [usize; 4], p: &Conv2dParams) -> [usize; 4] {
    let oh = conv_out_len(
        in_dims[2],
        p.pads[0],
        p.pads[2],
        w_dims[2],
        p.strides[0],
        p.dilations[0],
    );
    let ow = conv_out_len(
        in_dims[3],
        p.pads[1],
        p.pads[3],
        w_dims[3],
        p.strides[1],
        p.dilations[1],
    );
    [in_dims[0], w_dims[0], oh, ow]
}

/// Geometry of one convolution, shared by the tile workers.
#[derive(Clone, Copy)]
struct Geom {
    c_g: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
}

/// 2-D convolution (ONNX `Conv`): input `[n, c, h, w]`, weight `[m, c/group, kh, kw]`,
/// optional bias `[m]`, output `[n, m, oh, ow]` allocated by the caller (see
/// [`conv2d_out_dims`]).
///
/// # Panics
/// Shape contract: panics if `group` does not divide `c` and `m`, if `w_dims[1] != c/group`,
/// if a stride or dilation is 0, or if a slice length does not match its dims.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    input: &[f32],
    in_dims: [usize; 4],
    weight: &[f32],
    w_dims: [usize; 4],
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    out: &mut [f32],
    par: Parallelism,
) {
    let [n, c, h, w] = in_dims;
    let [m, c_g, kh, kw] = w_dims;
    let g = p.group;
    assert!(
        g >= 1 && c % g == 0 && m % g == 0,
        "conv2d: group {g} must divide C={c} and M={m}"
    );
    assert_eq!(c_g, c / g, "conv2d: weight dim 1 must be C/group");
    assert!(
        p.strides.iter().chain(&p.dilations).all(|&s| s >= 1),
        "conv2d: zero stride or dilation"
    );
    let od = conv2d_out_dims(in_dims, w_dims, p);
    let (oh, ow) = (od[2], od[3]);
    assert_eq!(input.len(), n * c * h * w, "conv2d: input length");
    assert_eq!(weight.len(), m * c_g * kh * kw, "conv2d: weight length");
    assert_eq!(out.len(), n * m * oh * ow, "conv2d: output length");
    if let Some(b) = bias {
        assert_eq!(b.len(), m, "conv2d: bias length");
    }
    if out.is_empty() {
        return;
    }
    let geom = Geom {
        c_g,
        h,
        w,
        kh,
        kw,
        oh,
        ow,
        sh: p.strides[0],
        sw: p.strides[1],
        dh: p.dilations[0],
        dw: p.dilations[1],
        pt: p.pads[0],
        pl: p.pads[1],
    };
    if g == c && g == m {
        depthwise(input, weight, bias, &geom, c, out, par);
    } else {
        im2col_gemm(input, in_dims, weight, m, bias, g, &geom, out, par);
    }
}

thread_local! {
    /// Per-thread im2col scratch, reused across tiles and calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

#[allow(clippy::too_many_arguments)]
fn im2col_gemm(
    input: &[f32],
    in_dims: [usize; 4],
    weight: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    g: usize,
    geo: &Geom,
    out: &mut [f32],
    par: Parallelism,
) {
    let [n, c, h, w] = in_dims;
    let geo = *geo;
    let m_g = m / g;
    let kdim = geo.c_g * geo.kh * geo.kw;
    let ohw = geo.oh * geo.ow;
    let pointwise = geo.kh == 1
        && geo.kw == 1
        && geo.sh == 1
        && geo.sw == 1
        && geo.pt == 0
        && geo.pl == 0
        && geo.oh == h
        && geo.ow == w;
    let tp = ohw.div_ceil(TILE_PIXELS);
    // The channel tile depends on the shape only, never on the thread count.
    let tile_channels = if !pointwise && tp >= MANY_PIXEL_TILES {
        TILE_CHANNELS_WIDE
    } else {
        TILE_CHANNELS_NARROW
    };
    let tc = m_g.div_ceil(tile_channels);
    let per_group = tp * tc;
    let outp = SendPtr(out.as_mut_ptr());
    for_each_tile(n * g * per_group, par, |t| {
        let ng = t / per_group;
        let (ni, gi) = (ng / g, ng % g);
        let r = t % per_group;
        let (ci, pi) = (r / tp, r % tp);
        let m0 = ci * tile_channels;
        let mm = tile_channels.min(m_g - m0);
        let j0 = pi * TILE_PIXELS;
        let nn = TILE_PIXELS.min(ohw - j0);
        let plane0 = (ni * c + gi * geo.c_g) * h * w;
        let lhs = MatRef {
            ptr: weight[(gi * m_g + m0) * kdim..].as_ptr(),
            rs: kdim as isize,
            cs: 1,
        };
        let oc0 = ni * m + gi * m_g + m0;
        // SAFETY: tile (oc0.., j0..) is inside `out`; tiles write disjoint parts of it.
        let dst = unsafe { outp.get().add(oc0 * ohw + j0) };
        if pointwise {
            let rhs = MatRef {
                ptr: input[plane0 + j0..].as_ptr(),
                rs: (h * w) as isize,
                cs: 1,
            };
            // SAFETY: views are inside `input`, `weight` and `out`.
            unsafe { gemm_tile(mm, nn, kdim, dst, ohw as isize, lhs, rhs, false) };
        } else {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < kdim * nn {
                    s.resize(kdim * nn, 0.0);
                }
                let col = &mut s[..kdim * nn];
                im2col_tile(&input[plane0..plane0 + geo.c_g * h * w], &geo, j0, nn, col);
                let rhs = MatRef {
                    ptr: col.as_ptr(),
                    rs: nn as isize,
                    cs: 1,
                };
                // SAFETY: views are inside `col`, `weight` and `out`.
                unsafe { gemm_tile(mm, nn, kdim, dst, ohw as isize, lhs, rhs, false) };
            });
        }
        if let Some(b) = bias {
            for (i, &bv) in b[gi * m_g + m0..][..mm].iter().enumerate() {
                // SAFETY: row i of this tile, columns j0..j0+nn, written by this tile only.
                let row = unsafe { std::slice::from_raw_parts_mut(dst.add(i * ohw), nn) };
                for v in row.iter_mut() {
                    *v += bv;
                }
            }
        }
    });
}

/// Fills `col` (`[c_g*kh*kw, nn]`, row-major) with the im2col columns for output pixels
/// `j0..j0+nn` of one group; `x` holds that group's `c_g` input planes.
fn im2col_tile(x: &[f32], g: &Geom, j0: usize, nn: usize, col: &mut [f32]) {
    let (h, w) = (g.h, g.w);
    let mut row = 0;
    for ci in 0..g.c_g {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let dst = &mut col[row * nn..(row + 1) * nn];
                row += 1;
                let mut j = j0;
                let mut d = 0;
                while d < nn {
                    let oy = j / g.ow;
                    let ox0 = j % g.ow;
                    let len = (g.ow - ox0).min(nn - d);
                    let seg = &mut dst[d..d + len];
                    let iy = (oy * g.sh + ky * g.dh) as isize - g.pt as isize;
                    if iy < 0 || iy >= h as isize {
                        seg.fill(0.0);
                    } else {
                        let irow = &plane[iy as usize * w..(iy as usize + 1) * w];
                        let off = (kx * g.dw) as isize - g.pl as isize;
                        // Valid ox: 0 <= ox * sw + off < w.
                        let lo = if off >= 0 { 0 } else { (-off) as usize }.div_ceil(g.sw);
                        let hi = if (w as isize) <= off {
                            0
                        } else {
                            ((w as isize - off) as usize).div_ceil(g.sw)
                        }
                        .min(g.ow);
                        let a = lo.clamp(ox0, ox0 + len) - ox0;
                        let b = hi.clamp(ox0, ox0 + len) - ox0;
                        let b = b.max(a);
                        seg[..a].fill(0.0);
                        seg[b..].fill(0.0);
                        if b > a {
                            let start = ((ox0 + a) * g.sw) as isize + off;
                            let start = start as usize;
                            if g.sw == 1 {
                                seg[a..b].copy_from_slice(&irow[start..start + (b - a)]);
                            } else {
                                for (o, i) in
                                    seg[a..b].iter_mut().zip(irow[start..].iter().step_by(g.sw))
                                {
                                    *o = *i;
                                }
                            }
                        }
                    }
                    d += len;
                    j += len;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn depthwise(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    geo: &Geom,
    c: usize,
    out: &mut [f32],
    par: Parallelism,
) {
    let (hw, ohw, kk) = (geo.h * geo.w, geo.oh * geo.ow, geo.kh * geo.kw);
    crate::util::for_each_chunk_mut(out, ohw, par, |pi, o| {
        let ch = pi % c;
        let b = bias.map_or(0.0, |b| b[ch]);
        DW_SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            dw_plane(
                &input[pi * hw..(pi + 1) * hw],
                &weight[ch * kk..(ch + 1) * kk],
                b,
                o,
                geo,
                &mut s,
            );
        });
    });
}

thread_local! {
    /// Per-thread scratch of the depthwise kernel: phase planes and the wide output.
    static DW_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Depthwise layout of one plane.
///
/// The zero-padded input is split into `sh * sw` phase planes,
/// `P[pr][pc][i][j] = padded[i * sh + pr][j * sw + pc]`, each `hp x wp`. Tap `(ky, kx)`
/// then reads phase `((ky*dh) % sh, (kx*dw) % sw)` at the constant flat offset
/// `((ky*dh) / sh) * wp + (kx*dw) / sw` from the "wide" output index `oy * wp + ox`, so a
/// whole plane is one long contiguous loop per tap set, for any stride and dilation, with
/// no border cases. The `wp - ow` extra columns per row are computed and dropped.
struct DwLayout {
    hp: usize,
    wp: usize,
}

impl DwLayout {
    fn new(g: &Geom) -> Self {
        let ry = ((g.kh - 1) * g.dh) / g.sh;
        let rx = ((g.kw - 1) * g.dw) / g.sw;
        Self {
            hp: g.oh + ry + 1,
            wp: g.ow + rx,
        }
    }
}

/// Fills one phase plane from the unpadded input plane `x`.
fn fill_phase(x: &[f32], g: &Geom, lay: &DwLayout, pr: usize, pc: usize, dst: &mut [f32]) {
    let (h, w, wp) = (g.h, g.w, lay.wp);
    // Columns j whose source column j * sw + pc - pl lies inside the input.
    let off = pc as isize - g.pl as isize;
    let lo = if off >= 0 {
        0
    } else {
        ((-off) as usize).div_ceil(g.sw)
    }
    .min(wp);
    let hi = if (w as isize) <= off {
        0
    } else {
        ((w as isize - off) as usize).div_ceil(g.sw)
    }
    .clamp(lo, wp);
    for (i, row) in dst.chunks_exact_mut(wp).enumerate() {
        let iy = (i * g.sh + pr) as isize - g.pt as isize;
        if iy < 0 || iy >= h as isize || hi == lo {
            row.fill(0.0);
            continue;
        }
        let src = &x[iy as usize * w..(iy as usize + 1) * w];
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
        let start = ((lo * g.sw) as isize + off) as usize;
        if g.sw == 1 {
            row[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
        } else {
            for (d, v) in row[lo..hi]
                .iter_mut()
                .zip(src[start..].iter().step_by(g.sw))
            {
                *d = *v;
            }
        }
    }
}

/// `dst[i] = bias + w[0] * s[0][i] + ... + w[K-1] * s[K-1][i]`, summed in tap order.
#[inline(always)]
fn taps_fixed<const K: usize>(dst: &mut [f32], srcs: [&[f32]; K], wts: [f32; K], bias: f32) {
    let n = dst.len();
    let srcs: [&[f32]; K] = srcs.map(|s| &s[..n]);
    for i in 0..n {
        let mut acc = bias;
        for t in 0..K {
            acc += wts[t] * srcs[t][i];
        }
        dst[i] = acc;
    }
}

/// `dst[i] = (init or dst[i]) + w[0] * s[0][i] + ... + w[K-1] * s[K-1][i]`, in tap order.
#[inline(always)]
fn taps_row<const K: usize>(dst: &mut [f32], srcs: [&[f32]; K], w: &[f32], init: Option<f32>) {
    let n = dst.len();
    let srcs: [&[f32]; K] = srcs.map(|s| &s[..n]);
    let mut wts = [0.0f32; K];
    wts.copy_from_slice(&w[..K]);
    match init {
        Some(b) => taps_fixed(dst, srcs, wts, b),
        None => {
            for i in 0..n {
                let mut acc = dst[i];
                for t in 0..K {
                    acc += wts[t] * srcs[t][i];
                }
                dst[i] = acc;
            }
        }
    }
}

/// Stride-2 columns: builds each padded row once in `tmp` and de-interleaves it into the
/// two column phases.
fn fill_phases_sw2(
    x: &[f32],
    g: &Geom,
    lay: &DwLayout,
    ph: &mut [f32],
    used: &[bool],
    tmp: &mut [f32],
) {
    let (h, w, wp, sh) = (g.h, g.w, lay.wp, g.sh);
    let plane = lay.hp * wp;
    // Padded columns X in [0, 2 wp) map to input column X - pl.
    let lo = g.pl.min(2 * wp);
    let hi = (g.pl + w).min(2 * wp);
    for pr in 0..sh {
        if !used[pr * 2] && !used[pr * 2 + 1] {
            continue;
        }
        let (p0, p1) = ph[pr * 2 * plane..(pr * 2 + 2) * plane].split_at_mut(plane);
        for (i, (r0, r1)) in p0
            .chunks_exact_mut(wp)
            .zip(p1.chunks_exact_mut(wp))
            .enumerate()
        {
            let iy = (i * sh + pr) as isize - g.pt as isize;
            if iy < 0 || iy >= h as isize || hi <= lo {
                r0.fill(0.0);
                r1.fill(0.0);
                continue;
            }
            let src = &x[iy as usize * w..(iy as usize + 1) * w];
            tmp[..lo].fill(0.0);
            tmp[hi..].fill(0.0);
            tmp[lo..hi].copy_from_slice(&src[..hi - lo]);
            for ((pair, a), b) in tmp.chunks_exact(2).zip(r0.iter_mut()).zip(r1.iter_mut()) {
                *a = pair[0];
                *b = pair[1];
            }
        }
    }
}

dispatch! {
/// One depthwise output plane. Accumulation order per output element: bias, then the taps
/// in `(ky, kx)` row-major order, padded taps contributing `w * 0`.
fn dw_plane(x: &[f32], wt: &[f32], bias: f32, out: &mut [f32], g: &Geom, scratch: &mut Vec<f32>) {
    let lay = DwLayout::new(g);
    let (sh, sw, kh, kw) = (g.sh, g.sw, g.kh, g.kw);
    let plane = lay.hp * lay.wp;
    let phases = sh * sw;
    let wide_len = (g.oh - 1) * lay.wp + g.ow;
    let need = phases * plane + g.oh * lay.wp + 2 * lay.wp;
    if scratch.len() < need {
        scratch.resize(need, 0.0);
    }
    let (ph, rest) = scratch.split_at_mut(phases * plane);
    let (wide, tmp) = rest.split_at_mut(g.oh * lay.wp);
    let wide = &mut wide[..wide_len];
    let tmp = &mut tmp[..2 * lay.wp];
    // Only the phases some tap reads are filled.
    let mut used = [false; 64];
    for ky in 0..kh {
        for kx in 0..kw {
            let id = ((ky * g.dh) % sh) * sw + (kx * g.dw) % sw;
            if id < used.len() {
                used[id] = true;
            }
        }
    }
    if sw == 2 && phases <= used.len() {
        fill_phases_sw2(x, g, &lay, ph, &used, tmp);
    } else {
        for (id, dst) in ph.chunks_exact_mut(plane).enumerate() {
            if id >= used.len() || used[id] {
                fill_phase(x, g, &lay, id / sw, id % sw, dst);
            }
        }
    }
    let ph = &*ph;
    let src = |ky: usize, kx: usize| -> &[f32] {
        let (y, xx) = (ky * g.dh, kx * g.dw);
        let id = (y % sh) * sw + xx % sw;
        let off = (y / sh) * lay.wp + xx / sw;
        &ph[id * plane + off..(id + 1) * plane]
    };
    if kh == 3 && kw == 3 {
        let srcs = [src(0, 0), src(0, 1), src(0, 2), src(1, 0), src(1, 1), src(1, 2), src(2, 0), src(2, 1), src(2, 2)];
        let mut w9 = [0.0; 9];
        w9.copy_from_slice(wt);
        taps_fixed(wide, srcs, w9, bias);
    } else {
        // One pass per kernel row, fused over the row's taps when the width is common.
        let n = wide.len();
        for ky in 0..kh {
            let wrow = &wt[ky * kw..(ky + 1) * kw];
            let init = if ky == 0 { Some(bias) } else { None };
            match kw {
                3 => taps_row::<3>(wide, std::array::from_fn(|t| src(ky, t)), wrow, init),
                5 => taps_row::<5>(wide, std::array::from_fn(|t| src(ky, t)), wrow, init),
                7 => taps_row::<7>(wide, std::array::from_fn(|t| src(ky, t)), wrow, init),
                _ => {
                    if let Some(b) = init {
                        wide.fill(b);
                    }
                    for (kx, &wv) in wrow.iter().enumerate() {
                        for (d, s) in wide.iter_mut().zip(&src(ky, kx)[..n]) {
                            *d += wv * *s;
                        }
                    }
                }
            }
        }
    }
    if lay.wp == g.ow {
        out.copy_from_slice(&wide[..out.len()]);
    } else {
        for (oy, orow) in out.chunks_exact_mut(g.ow).enumerate() {
            orow.copy_from_slice(&wide[oy * lay.wp..oy * lay.wp + g.ow]);
        }
    }
}
}
