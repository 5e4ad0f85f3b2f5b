//! 2-D convolution, ONNX `Conv` semantics (opset 1-22) for NCHW f32: explicit pads
//! `[top, left, bottom, right]` (the caller resolves `auto_pad`), strides, dilations, groups.
//!
//! Strategy:
//! * depthwise (`group == C == M`): a hand-written direct kernel; maps up to 28x28 run 16
//!   channels at a time in one vector (AVX-512, see `dw_avx512`), larger ones (and CPUs
//!   without AVX-512) plane by plane over zero-padded phase planes; both sum in the same
//!   order, so they give the same bits;
//! * 1x1, stride 1, no padding: the input plane is already the GEMM right-hand side;
//! * otherwise im2col of a fixed-width spatial tile into a per-thread scratch buffer, then
//!   `gemm` on that tile.
//!
//! Tiles are `(image, group, block of output channels, block of output pixels)` with fixed
//! sizes, so results are bit-identical for any thread count.

use crate::Parallelism;
use crate::direct::PackedConvWeights;
use crate::gemm_kernel::{MatRef, gemm_tile};
use crate::simd::dispatch;
use crate::unary::{UnaryOp, add_bias_then_apply, apply_in_place};
use crate::util::{SendPtr, for_each_tile};
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Largest number of output pixels per GEMM tile.
const MAX_TILE_PIXELS: usize = 256;
/// Smallest pixel tile used to create more tiles on small outputs.
const MIN_TILE_PIXELS: usize = 64;
/// Pixel tiles of small outputs are rounded up to a multiple of this: the rows of the
/// `gemm` crate's widest AVX-512 micro-kernel (4 vectors of 16 pixels). Tiles of 96 pixels
/// (a 26x26 map in 8 tiles) ran a third of their work in its 2-vector kernel.
const GEMM_TILE_ROWS: usize = 64;
/// Largest number of output channels per GEMM tile.
const MAX_TILE_CHANNELS: usize = 512;
/// Smallest channel tile used to create more tiles on tiny outputs.
const MIN_TILE_CHANNELS: usize = 16;
/// Channel tiles are rounded up to a multiple of this. Small, so that a split into
/// [`MIN_TILES`] gives tiles of nearly equal size: 160 channels in 8 tiles of 20 rather than
/// 5 tiles of 32, which left one of two threads idle for a fifth of the layer.
const TILE_CHANNEL_STEP: usize = 4;
/// Number of tiles a convolution is cut into at least, when its shape allows, so that
/// two or more threads have work to share. A constant: never the thread count.
const MIN_TILES: usize = 8;
/// Work, in flop-equivalents per input and output element, that a depthwise convolution
/// costs on top of its flops when deciding whether to spread it over threads: it is bound
/// by per-plane (or per-block) overhead and memory traffic, so a 960-channel 7x7 layer (under
/// 1 MFLOP) takes about 25 us on one thread (80 us before the channel-blocked kernel), and
/// used to run there.
const DW_WORK_PER_ELEMENT: usize = 64;

/// Fixed tiling of one convolution's GEMMs: `(pixels, channels)` per tile.
///
/// It depends on the shape only. Pixels are split first; channels are split only when pixel
/// tiles alone give fewer than [`MIN_TILES`] tiles, because the channel tiles of a pixel
/// tile each pack its pixel panel again (inside the `gemm` crate) and need its im2col block
/// built before them (`im2col_gemm` then builds the blocks in a pass of their own).
fn conv_tiles(units: usize, ohw: usize, m_g: usize) -> (usize, usize) {
    let units = units.max(1);
    let tile_pixels = if units * ohw.div_ceil(MAX_TILE_PIXELS) >= MIN_TILES {
        MAX_TILE_PIXELS
    } else {
        let splits = MIN_TILES.div_ceil(units);
        ohw.div_ceil(splits)
            .next_multiple_of(GEMM_TILE_ROWS)
            .clamp(MIN_TILE_PIXELS, MAX_TILE_PIXELS)
    };
    let pixel_tiles = units * ohw.div_ceil(tile_pixels);
    let tile_channels = if pixel_tiles >= MIN_TILES {
        MAX_TILE_CHANNELS
    } else {
        let splits = MIN_TILES.div_ceil(pixel_tiles);
        m_g.div_ceil(splits)
            .next_multiple_of(TILE_CHANNEL_STEP)
            .clamp(MIN_TILE_CHANNELS, MAX_TILE_CHANNELS)
    };
    (tile_pixels, tile_channels)
}

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
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub(crate) c_g: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
    pub(crate) dh: usize,
    pub(crate) dw: usize,
    pub(crate) pt: usize,
    pub(crate) pl: usize,
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
    conv2d_fused(input, in_dims, weight, w_dims, bias, p, None, out, par);
}

/// [`conv2d`] followed by an elementwise activation (e.g. `Relu`, `Clip` for ReLU6,
/// `Silu`, `HardSwish`) applied to each output tile while it is still in cache, instead
/// of a separate pass over the output. The result is bit-identical to `conv2d` followed by
/// [`crate::unary`] with the same op.
///
/// # Panics
/// Same shape contract as [`conv2d`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fused(
    input: &[f32],
    in_dims: [usize; 4],
    weight: &[f32],
    w_dims: [usize; 4],
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    activation: Option<UnaryOp>,
    out: &mut [f32],
    par: Parallelism,
) {
    let [n, c, _, _] = in_dims;
    let [m, c_g, kh, kw] = w_dims;
    let g = p.group;
    let Some(geom) = checked_geom(input, in_dims, weight, w_dims, bias, p, out) else {
        return;
    };
    let (oh, ow) = (geom.oh, geom.ow);
    // `flops` only decides whether to use threads; tiling never depends on it.
    let mut flops = 2 * n * m * oh * ow * c_g * kh * kw;
    if g == c && g == m {
        flops += DW_WORK_PER_ELEMENT * (input.len() + out.len());
    }
    let par = crate::util::par_for_work(par, flops);
    if g == c && g == m {
        depthwise(input, weight, bias, &geom, c, activation, out, par);
    } else if crate::pointwise::uses_pointwise(in_dims, w_dims, p) {
        let packed = PackedConvWeights::pointwise(weight, w_dims);
        let data = packed
            .pointwise_data()
            .expect("packed for the pointwise kernel");
        crate::pointwise::conv2d_pointwise(
            input,
            n,
            c,
            oh * ow,
            m,
            data,
            bias,
            activation,
            out,
            par,
        );
    } else if let Some(variant) = crate::winograd::takes(weight, in_dims, w_dims, p) {
        let packed = PackedConvWeights::winograd(variant, weight, w_dims);
        let (_, data) = packed.winograd_data().expect("packed for Winograd");
        crate::winograd::conv2d_winograd(
            variant, input, in_dims, m, data, bias, &geom, activation, out, par,
        );
    } else if crate::chanvec::uses_chanvec(in_dims, w_dims, p) {
        let packed = PackedConvWeights::chanvec(weight, w_dims, g);
        let data = packed
            .chanvec_data()
            .expect("packed for the channel-vector kernel");
        crate::chanvec::conv2d_chanvec(
            input, in_dims, m, g, data, bias, &geom, activation, out, par,
        );
    } else if crate::direct::conv2d_uses_direct(in_dims, w_dims, p) {
        let packed = PackedConvWeights::new(weight, w_dims, g);
        crate::direct::conv2d_direct(input, in_dims, &packed, bias, &geom, activation, out, par);
    } else {
        im2col_gemm(
            input, in_dims, weight, m, bias, g, &geom, activation, out, par,
        );
    }
}

/// Checks the shape contract of [`conv2d`] (panicking with the argument's name) and
/// returns the geometry, or `None` when the output is empty.
fn checked_geom(
    input: &[f32],
    in_dims: [usize; 4],
    weight: &[f32],
    w_dims: [usize; 4],
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    out: &[f32],
) -> Option<Geom> {
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
        return None;
    }
    Some(Geom {
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
    })
}

/// Views an output buffer that the caller has not initialised as `f32`s, for the kernels
/// below that write every element before anything reads it.
///
/// # Safety
/// The caller must only write to the returned slice before reading an element, and must
/// write every element it later reads (the convolution kernels write every output element
/// exactly once with plain stores: the `gemm` crate is called without `read_dst`, the
/// depthwise planes are copied in, and the bias and activation passes only read elements
/// their own tile has just written).
pub(crate) unsafe fn assume_written(out: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; see the function's contract for
    // why no uninitialised element is ever read.
    unsafe { &mut *(std::ptr::from_mut(out) as *mut [f32]) }
}

/// [`conv2d_fused`] into a buffer that need not be initialised (a fresh `Vec`'s spare
/// capacity): the executor allocates every Conv output, and zero-filling it first was a
/// full extra pass over memory (plus a parallel region for large outputs) that the
/// convolution overwrites anyway. Every element of `out` is written; the result is
/// bit-identical to [`conv2d_fused`].
///
/// # Panics
/// Same shape contract as [`conv2d`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fused_uninit(
    input: &[f32],
    in_dims: [usize; 4],
    weight: &[f32],
    w_dims: [usize; 4],
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    activation: Option<UnaryOp>,
    out: &mut [MaybeUninit<f32>],
    par: Parallelism,
) {
    // SAFETY: `conv2d_fused` writes every output element before reading it (see
    // `assume_written`); the differential tests fill outputs with NaN first to check that.
    let out = unsafe { assume_written(out) };
    conv2d_fused(
        input, in_dims, weight, w_dims, bias, p, activation, out, par,
    );
}

/// [`conv2d_fused_uninit`] with the weights already packed for the direct kernel (the
/// executor packs each Conv's constant weights once per model instead of once per call).
/// `weight` is still needed: shapes the direct kernel does not take, and CPUs without
/// AVX-512, use it. The result is bit-identical to [`conv2d_fused`] on `weight`.
///
/// # Panics
/// Same shape contract as [`conv2d`]; also if `packed` was not packed from `w_dims` and
/// `p.group`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fused_packed_uninit(
    input: &[f32],
    in_dims: [usize; 4],
    weight: &[f32],
    w_dims: [usize; 4],
    packed: Option<&PackedConvWeights>,
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    activation: Option<UnaryOp>,
    out: &mut [MaybeUninit<f32>],
    par: Parallelism,
) {
    let Some(packed) = packed else {
        conv2d_fused_uninit(
            input, in_dims, weight, w_dims, bias, p, activation, out, par,
        );
        return;
    };
    assert!(
        packed.w_dims() == w_dims && packed.group() == p.group,
        "conv2d_fused_packed_uninit: packed weights are for another shape"
    );
    enum Kernel<'a> {
        Pointwise(&'a [f32]),
        Winograd(crate::winograd::Variant, &'a [f32]),
        ChanVec(&'a [f32]),
        Direct,
    }
    let kernel = if let Some(data) = packed
        .pointwise_data()
        .filter(|_| crate::pointwise::uses_pointwise(in_dims, w_dims, p))
    {
        Kernel::Pointwise(data)
    } else if let Some((variant, data)) = packed
        .winograd_data()
        .filter(|&(v, _)| crate::winograd::variant(in_dims, w_dims, p) == Some(v))
    {
        Kernel::Winograd(variant, data)
    } else if let Some(data) = packed
        .chanvec_data()
        .filter(|_| crate::chanvec::uses_chanvec(in_dims, w_dims, p))
    {
        Kernel::ChanVec(data)
    } else if packed.is_direct() && crate::direct::conv2d_uses_direct(in_dims, w_dims, p) {
        Kernel::Direct
    } else {
        conv2d_fused_uninit(
            input, in_dims, weight, w_dims, bias, p, activation, out, par,
        );
        return;
    };
    // SAFETY: each of the four kernels writes every output element before reading it: the
    // pointwise and Winograd register tiles store each element once and their activation
    // passes read only those; the direct and channel-vector kernels' epilogues store each
    // tile's outputs with the bias added, then apply the activation to those.
    let out = unsafe { assume_written(out) };
    let Some(geom) = checked_geom(input, in_dims, weight, w_dims, bias, p, out) else {
        return;
    };
    let [n, c, _, _] = in_dims;
    let m = w_dims[0];
    let flops = 2 * n * m * geom.oh * geom.ow * w_dims[1] * w_dims[2] * w_dims[3];
    let par = crate::util::par_for_work(par, flops);
    match kernel {
        Kernel::Pointwise(data) => crate::pointwise::conv2d_pointwise(
            input,
            n,
            c,
            geom.oh * geom.ow,
            m,
            data,
            bias,
            activation,
            out,
            par,
        ),
        Kernel::Winograd(variant, data) => crate::winograd::conv2d_winograd(
            variant, input, in_dims, m, data, bias, &geom, activation, out, par,
        ),
        Kernel::ChanVec(data) => crate::chanvec::conv2d_chanvec(
            input, in_dims, m, p.group, data, bias, &geom, activation, out, par,
        ),
        Kernel::Direct => {
            crate::direct::conv2d_direct(input, in_dims, packed, bias, &geom, activation, out, par)
        }
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
    activation: Option<UnaryOp>,
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
    let (tile_pixels, tile_channels) = conv_tiles(n * g, ohw, m_g);
    let tp = ohw.div_ceil(tile_pixels);
    let tc = m_g.div_ceil(tile_channels);
    let per_group = tp * tc;
    let outp = SendPtr(out.as_mut_ptr());
    // When the channels are split, the channel tiles of a pixel tile share one im2col block,
    // built first (in its own parallel pass): each used to build its own copy, and on the
    // 13x13 and 26x26 maps of YOLOX, cut into three channel tiles, the im2col was done
    // three times.
    let shared = !pointwise && tc > 1;
    let per_block = kdim * tile_pixels;
    let mut blocks: Vec<f32> = Vec::new();
    if shared {
        blocks.reserve_exact(n * g * tp * per_block);
        let blocksp = SendPtr(blocks.as_mut_ptr());
        for_each_tile(n * g * tp, par, |u| {
            let (ng, pi) = (u / tp, u % tp);
            let (ni, gi) = (ng / g, ng % g);
            let j0 = pi * tile_pixels;
            let nn = tile_pixels.min(ohw - j0);
            let plane0 = (ni * c + gi * geo.c_g) * h * w;
            // SAFETY: block `u` is `u * per_block..` of the reserved capacity, written by
            // this task only; nothing reads it before the pass ends (and then only these
            // `kdim * nn` elements, all written by `im2col_tile`).
            let col = unsafe {
                std::slice::from_raw_parts_mut(blocksp.get().add(u * per_block), kdim * nn)
            };
            IM2COL_ROWS.with(|rows| {
                let x = &input[plane0..plane0 + geo.c_g * h * w];
                im2col_tile(x, &geo, j0, nn, col, &mut rows.borrow_mut());
            });
        });
    }
    let blocks_ptr = SendPtr(blocks.as_mut_ptr());
    for_each_tile(n * g * per_group, par, |t| {
        let ng = t / per_group;
        let (ni, gi) = (ng / g, ng % g);
        let r = t % per_group;
        let (ci, pi) = (r / tp, r % tp);
        let m0 = ci * tile_channels;
        let mm = tile_channels.min(m_g - m0);
        let j0 = pi * tile_pixels;
        let nn = tile_pixels.min(ohw - j0);
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
        } else if shared {
            let rhs = MatRef {
                // The block of pixel tile `pi` of image and group `ng` (see above).
                ptr: blocks_ptr.get().wrapping_add((ng * tp + pi) * per_block),
                rs: nn as isize,
                cs: 1,
            };
            // SAFETY: the block's `kdim * nn` elements were written by the first pass.
            unsafe { gemm_tile(mm, nn, kdim, dst, ohw as isize, lhs, rhs, false) };
        } else {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < kdim * nn {
                    s.resize(kdim * nn, 0.0);
                }
                let col = &mut s[..kdim * nn];
                IM2COL_ROWS.with(|rows| {
                    let x = &input[plane0..plane0 + geo.c_g * h * w];
                    im2col_tile(x, &geo, j0, nn, col, &mut rows.borrow_mut());
                });
                let rhs = MatRef {
                    ptr: col.as_ptr(),
                    rs: nn as isize,
                    cs: 1,
                };
                // SAFETY: views are inside `col`, `weight` and `out`.
                unsafe { gemm_tile(mm, nn, kdim, dst, ohw as isize, lhs, rhs, false) };
            });
        }
        if bias.is_some() || activation.is_some() {
            for i in 0..mm {
                // SAFETY: row i of this tile, columns j0..j0+nn, written by this tile only.
                let row = unsafe { std::slice::from_raw_parts_mut(dst.add(i * ohw), nn) };
                match bias {
                    Some(b) => add_bias_then_apply(row, b[gi * m_g + m0 + i], activation),
                    None => {
                        if let Some(act) = activation {
                            apply_in_place(act, row);
                        }
                    }
                }
            }
        }
    });
}

/// The part of a pixel tile on one output row: `len` pixels from output `(oy, ox0)`, at
/// column `d` of the tile.
#[derive(Clone, Copy)]
struct Segment {
    d: usize,
    len: usize,
    oy: usize,
    ox0: usize,
}

/// Where the kernel column `kx` reads: output columns `lo..hi` read the input, the others
/// the padding; output column `ox` reads input column `ox * sw + off`, which is element
/// `ox + shift` of column phase `phase` (`phase = off mod sw`, `shift = off div sw`).
#[derive(Clone, Copy)]
struct KernelColumn {
    lo: usize,
    hi: usize,
    off: isize,
    phase: usize,
    shift: isize,
}

/// `dst.fill(0.0)` in whole vectors, without a `memset` call (see [`copy_row`]).
#[inline(always)]
pub(crate) fn zero_row(dst: &mut [f32]) {
    let mut chunks = dst.chunks_exact_mut(16);
    for c in &mut chunks {
        let c: &mut [f32; 16] = c.try_into().expect("16 elements");
        *c = [0.0; 16];
    }
    let rest = chunks.into_remainder();
    let n = rest.len();
    let mut i = 0;
    if i + 8 <= n {
        let c: &mut [f32; 8] = (&mut rest[i..i + 8]).try_into().expect("8 elements");
        *c = [0.0; 8];
        i += 8;
    }
    if i + 4 <= n {
        let c: &mut [f32; 4] = (&mut rest[i..i + 4]).try_into().expect("4 elements");
        *c = [0.0; 4];
        i += 4;
    }
    for v in &mut rest[i..] {
        *v = 0.0;
    }
}

thread_local! {
    /// Per-thread input rows of strided convolutions, split into column phases.
    static IM2COL_ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

dispatch! {
/// Fills `col` (`[c_g*kh*kw, nn]`, row-major) with the im2col columns for output pixels
/// `j0..j0+nn` of one group; `x` holds that group's `c_g` input planes; `rows` is scratch.
///
/// The tile's output-row segments and each kernel column's valid range are worked out
/// once per tile, and rows are copied and zeroed in whole vectors: per segment bounds
/// arithmetic and a `memmove` call per copy made the im2col of a YOLOX 3x3 layer cost
/// more than half of its GEMM. With a column stride, each input row the tile reads is
/// split into its column phases once per channel, so every copy is contiguous.
fn im2col_tile(x: &[f32], g: &Geom, j0: usize, nn: usize, col: &mut [f32], rows: &mut Vec<f32>) {
    let (h, w, sw) = (g.h, g.w, g.sw);
    let mut segs: Vec<Segment> = Vec::with_capacity(nn / g.ow + 2);
    let (mut j, mut d) = (j0, 0);
    while d < nn {
        let (oy, ox0) = (j / g.ow, j % g.ow);
        let len = (g.ow - ox0).min(nn - d);
        segs.push(Segment { d, len, oy, ox0 });
        d += len;
        j += len;
    }
    let kcols: Vec<KernelColumn> = (0..g.kw)
        .map(|kx| {
            let off = (kx * g.dw) as isize - g.pl as isize;
            // Valid ox: 0 <= ox * sw + off < w.
            let lo = if off >= 0 { 0 } else { (-off) as usize }.div_ceil(sw).min(g.ow);
            let hi = if (w as isize) <= off {
                0
            } else {
                ((w as isize - off) as usize).div_ceil(sw)
            }
            .clamp(lo, g.ow);
            KernelColumn {
                lo,
                hi,
                off,
                phase: off.rem_euclid(sw as isize) as usize,
                shift: off.div_euclid(sw as isize),
            }
        })
        .collect();
    // Input rows the tile reads (strided case only).
    let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
        return;
    };
    let iy_lo = ((first.oy * g.sh) as isize - g.pt as isize).clamp(0, h as isize) as usize;
    let iy_hi = ((last.oy * g.sh + (g.kh - 1) * g.dh + 1) as isize - g.pt as isize)
        .clamp(iy_lo as isize, h as isize) as usize;
    let pw = w.div_ceil(sw);
    if sw > 1 && rows.len() < (iy_hi - iy_lo) * sw * pw {
        rows.resize((iy_hi - iy_lo) * sw * pw, 0.0);
    }
    let mut r = 0;
    for ci in 0..g.c_g {
        let plane = &x[ci * h * w..(ci + 1) * h * w];
        if sw == 2 {
            for iy in iy_lo..iy_hi {
                let irow = &plane[iy * w..(iy + 1) * w];
                let at = (iy - iy_lo) * 2 * pw;
                let (even, odd) = rows[at..at + 2 * pw].split_at_mut(pw);
                let pairs = deinterleave(irow, even, odd);
                if w > 2 * pairs {
                    even[pairs] = irow[2 * pairs];
                }
            }
        } else if sw > 1 {
            for iy in iy_lo..iy_hi {
                let irow = &plane[iy * w..(iy + 1) * w];
                for p in 0..sw.min(w) {
                    let n = (w - p).div_ceil(sw);
                    let at = ((iy - iy_lo) * sw + p) * pw;
                    strided_copy(&mut rows[at..at + n], &irow[p..], sw);
                }
            }
        }
        for ky in 0..g.kh {
            for kc in &kcols {
                let dst = &mut col[r * nn..(r + 1) * nn];
                r += 1;
                for s in &segs {
                    let seg = &mut dst[s.d..s.d + s.len];
                    let iy = (s.oy * g.sh + ky * g.dh) as isize - g.pt as isize;
                    if iy < 0 || iy >= h as isize {
                        zero_row(seg);
                        continue;
                    }
                    let iy = iy as usize;
                    let a = kc.lo.clamp(s.ox0, s.ox0 + s.len) - s.ox0;
                    let b = kc.hi.clamp(s.ox0, s.ox0 + s.len) - s.ox0;
                    let b = b.max(a);
                    zero_row(&mut seg[..a]);
                    zero_row(&mut seg[b..]);
                    if b > a {
                        let ox = (s.ox0 + a) as isize;
                        let src = if sw == 1 {
                            &plane[iy * w + (ox + kc.off) as usize..]
                        } else {
                            let at = ((iy - iy_lo) * sw + kc.phase) * pw;
                            &rows[at + (ox + kc.shift) as usize..]
                        };
                        copy_row(&mut seg[a..b], src);
                    }
                }
            }
        }
    }
}
}

/// Largest depth (input channels) of the pointwise convolution in
/// [`conv2d_pointwise_depthwise`]: up to it the `gemm` crate sums each output element in one
/// pass over the depth whatever the tile shape, so the fused result equals the unfused one.
pub const POINTWISE_DEPTHWISE_MAX_DEPTH: usize = 512;
/// Intermediate elements per tile of [`conv2d_pointwise_depthwise`] (about 384 KiB, so a
/// tile's expanded planes stay in L2 between the two convolutions).
const PW_DW_TILE_ELEMENTS: usize = 96 * 1024;
/// Channel tiles of [`conv2d_pointwise_depthwise`] on the plane path are a multiple of this:
/// the columns of the `gemm` crate's AVX-512 micro-kernel.
const PW_DW_CHANNEL_STEP: usize = 6;
/// Tiles per image [`conv2d_pointwise_depthwise`] makes at least when the channels allow, so
/// that two threads share a pair evenly. Fitting the cache budget alone made 5 tiles of the
/// 144-channel pairs of 56x56 maps (3 for one thread, 2 for the other: a fifth of the pair
/// with one thread idle) and 2 of the 28x28 ones (nothing to rebalance when one thread runs
/// late). A constant: never the thread count.
const PW_DW_MIN_TILES: usize = 8;

thread_local! {
    /// Per-thread intermediate planes of [`conv2d_pointwise_depthwise`].
    static PW_DW_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A pointwise convolution (1x1, stride 1, no padding, one group; `pw_weight` is `[m, c]`)
/// followed by a depthwise convolution of its output (`dw_weight` is `[m, 1, kh, kw]`), each
/// with an optional bias and activation, without materialising the `[n, m, h, w]`
/// intermediate: each tile expands a few channels into a per-thread buffer that stays in
/// cache and runs the depthwise kernel on it. This is the expansion + depthwise pair of
/// MobileNetV2-style blocks, where the expanded tensor (4.8 MB at 112x112) otherwise goes
/// to memory and back.
///
/// Bit-identical to [`conv2d_fused`] on the pointwise convolution followed by
/// [`conv2d_fused`] on the depthwise one, for any thread count.
///
/// # Panics
/// Shape contract as [`conv2d`]; also panics if `c` is 0 or above
/// [`POINTWISE_DEPTHWISE_MAX_DEPTH`] or if the depthwise weight is not `[m, 1, kh, kw]`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_pointwise_depthwise(
    input: &[f32],
    in_dims: [usize; 4],
    pw_weight: &[f32],
    pw_bias: Option<&[f32]>,
    pw_activation: Option<UnaryOp>,
    dw_weight: &[f32],
    dw_dims: [usize; 4],
    dw_bias: Option<&[f32]>,
    dw_params: &Conv2dParams,
    dw_activation: Option<UnaryOp>,
    out: &mut [f32],
    par: Parallelism,
) {
    pointwise_depthwise(
        input,
        in_dims,
        (pw_weight, None),
        pw_bias,
        pw_activation,
        dw_weight,
        dw_dims,
        dw_bias,
        dw_params,
        dw_activation,
        out,
        par,
    );
}

/// [`conv2d_pointwise_depthwise`] with the pointwise weights also packed beforehand, if
/// given (see [`PackedConvWeights::for_conv`]).
#[allow(clippy::too_many_arguments)]
fn pointwise_depthwise(
    input: &[f32],
    in_dims: [usize; 4],
    (pw_weight, pw_packed): (&[f32], Option<&PackedConvWeights>),
    pw_bias: Option<&[f32]>,
    pw_activation: Option<UnaryOp>,
    dw_weight: &[f32],
    dw_dims: [usize; 4],
    dw_bias: Option<&[f32]>,
    dw_params: &Conv2dParams,
    dw_activation: Option<UnaryOp>,
    out: &mut [f32],
    par: Parallelism,
) {
    let [n, c, h, w] = in_dims;
    let [m, one, kh, kw] = dw_dims;
    assert!(
        (1..=POINTWISE_DEPTHWISE_MAX_DEPTH).contains(&c),
        "conv2d_pointwise_depthwise: depth {c} out of range"
    );
    assert!(
        one == 1 && dw_params.group == m,
        "conv2d_pointwise_depthwise: second convolution must be depthwise"
    );
    assert!(
        dw_params
            .strides
            .iter()
            .chain(&dw_params.dilations)
            .all(|&s| s >= 1),
        "conv2d_pointwise_depthwise: zero stride or dilation"
    );
    let hw = h * w;
    let od = conv2d_out_dims([n, m, h, w], dw_dims, dw_params);
    let (oh, ow) = (od[2], od[3]);
    let ohw = oh * ow;
    let kk = kh * kw;
    assert_eq!(
        input.len(),
        n * c * hw,
        "conv2d_pointwise_depthwise: input length"
    );
    assert_eq!(
        pw_weight.len(),
        m * c,
        "conv2d_pointwise_depthwise: pointwise weight length"
    );
    assert_eq!(
        dw_weight.len(),
        m * kk,
        "conv2d_pointwise_depthwise: depthwise weight length"
    );
    assert_eq!(
        out.len(),
        n * m * ohw,
        "conv2d_pointwise_depthwise: output length"
    );
    if let Some(b) = pw_bias {
        assert_eq!(
            b.len(),
            m,
            "conv2d_pointwise_depthwise: pointwise bias length"
        );
    }
    if let Some(b) = dw_bias {
        assert_eq!(
            b.len(),
            m,
            "conv2d_pointwise_depthwise: depthwise bias length"
        );
    }
    if out.is_empty() || hw == 0 {
        return;
    }
    let geom = Geom {
        c_g: 1,
        h,
        w,
        kh,
        kw,
        oh,
        ow,
        sh: dw_params.strides[0],
        sw: dw_params.strides[1],
        dh: dw_params.dilations[0],
        dw: dw_params.dilations[1],
        pt: dw_params.pads[0],
        pl: dw_params.pads[1],
    };
    let blocked = dw_blocked(&geom);
    // Channels per tile: as many planes as fit the budget, but at least PW_DW_MIN_TILES
    // tiles per batch when there are channels enough, evened out over the tiles (no sliver
    // tile) and rounded up to whole 6-column blocks of the `gemm` crate's AVX-512
    // micro-kernel, or to whole 16-channel blocks of the channel-blocked depthwise kernel
    // (whose partial blocks cost as much as full ones). Shape (and CPU) only, never the
    // thread count; the tiling does not change any result bit (each output element is one
    // sum in the `gemm` crate and one plane's taps, whichever tile holds it).
    // The pointwise half runs on the kernel the lone pointwise convolution of this shape
    // runs on (the same bits), with its packed weights if given.
    let pw_dims = [m, c, 1, 1];
    let owned;
    let pw_packed = if crate::pointwise::uses_pointwise(in_dims, pw_dims, &Conv2dParams::default())
    {
        Some(
            match pw_packed
                .filter(|p| p.w_dims() == pw_dims)
                .and_then(PackedConvWeights::pointwise_data)
            {
                Some(data) => data,
                None => {
                    owned = PackedConvWeights::pointwise(pw_weight, pw_dims);
                    owned
                        .pointwise_data()
                        .expect("packed for the pointwise kernel")
                }
            },
        )
    } else {
        None
    };
    let pw_channel = crate::pointwise::channel_oriented(c, hw);
    let target = (PW_DW_TILE_ELEMENTS / hw).max(2);
    let step = if blocked {
        dw_block_channels()
    } else if pw_packed.is_some() {
        crate::pointwise::channel_step(c, hw)
    } else {
        PW_DW_CHANNEL_STEP
    };
    let wanted = m.div_ceil(target).max(PW_DW_MIN_TILES.div_ceil(n));
    let cb = m.div_ceil(wanted).next_multiple_of(step);
    let tiles = m.div_ceil(cb);
    let flops = 2 * n * m * hw * c + 2 * n * m * ohw * kk;
    let par = crate::util::par_for_work(par, flops);
    let outp = SendPtr(out.as_mut_ptr());
    for_each_tile(n * tiles, par, |t| {
        let (ni, ti) = (t / tiles, t % tiles);
        let m0 = ti * cb;
        let mm = cb.min(m - m0);
        PW_DW_SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < mm * hw {
                s.resize(mm * hw, 0.0);
            }
            let mid = &mut s[..mm * hw];
            if let Some(data) = pw_packed {
                let pw = (pw_channel, data);
                pointwise_planes(input, ni, c, hw, pw, (m0, mm), pw_bias, pw_activation, mid);
            } else {
                let lhs = MatRef {
                    ptr: pw_weight[m0 * c..].as_ptr(),
                    rs: c as isize,
                    cs: 1,
                };
                let rhs = MatRef {
                    ptr: input[ni * c * hw..].as_ptr(),
                    rs: hw as isize,
                    cs: 1,
                };
                // SAFETY: views are inside `pw_weight`, `input` and `mid`.
                unsafe { gemm_tile(mm, hw, c, mid.as_mut_ptr(), hw as isize, lhs, rhs, false) };
                // The same per-element steps as `im2col_gemm`: bias, then the activation.
                for (i, row) in mid.chunks_exact_mut(hw).enumerate() {
                    match pw_bias {
                        Some(b) => add_bias_then_apply(row, b[m0 + i], pw_activation),
                        None => {
                            if let Some(act) = pw_activation {
                                apply_in_place(act, row);
                            }
                        }
                    }
                }
            }
            // SAFETY: planes (ni, m0..m0 + mm) of `out`, written by this tile only.
            let o = unsafe {
                std::slice::from_raw_parts_mut(outp.get().add((ni * m + m0) * ohw), mm * ohw)
            };
            let dw_w = &dw_weight[m0 * kk..(m0 + mm) * kk];
            let dw_b = dw_bias.map(|b| &b[m0..m0 + mm]);
            if blocked {
                #[cfg(target_arch = "x86_64")]
                DW_BLOCK_SCRATCH.with(|d| {
                    let mut d = d.borrow_mut();
                    // SAFETY: `blocked` implies `dw_blocks_available`.
                    unsafe { dw_avx512::dw_blocks(mid, dw_w, dw_b, 0, mm, o, &geom, &mut d) };
                });
            } else {
                DW_SCRATCH.with(|d| {
                    dw_planes(mid, dw_w, dw_b, 0, mm, o, &geom, &mut d.borrow_mut());
                });
            }
            if let Some(act) = dw_activation {
                apply_in_place(act, o);
            }
        });
    });
}

/// [`conv2d_pointwise_depthwise`] into a buffer that need not be initialised (see
/// [`conv2d_fused_uninit`]), with the pointwise weights packed beforehand if given
/// ([`PackedConvWeights::for_conv`]; other packings are ignored). Every element of `out`
/// is written.
///
/// # Panics
/// Same contract as [`conv2d_pointwise_depthwise`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_pointwise_depthwise_uninit(
    input: &[f32],
    in_dims: [usize; 4],
    pw_weight: &[f32],
    pw_packed: Option<&PackedConvWeights>,
    pw_bias: Option<&[f32]>,
    pw_activation: Option<UnaryOp>,
    dw_weight: &[f32],
    dw_dims: [usize; 4],
    dw_bias: Option<&[f32]>,
    dw_params: &Conv2dParams,
    dw_activation: Option<UnaryOp>,
    out: &mut [MaybeUninit<f32>],
    par: Parallelism,
) {
    // An empty input plane leaves the output untouched in the kernel: define it as zeros.
    if in_dims[2] * in_dims[3] == 0 {
        out.fill(MaybeUninit::new(0.0));
    }
    // SAFETY: the kernel writes every output element before reading it (it computes each
    // tile's planes in a scratch buffer and copies them in, then applies the activation).
    let out = unsafe { assume_written(out) };
    pointwise_depthwise(
        input,
        in_dims,
        (pw_weight, pw_packed),
        pw_bias,
        pw_activation,
        dw_weight,
        dw_dims,
        dw_bias,
        dw_params,
        dw_activation,
        out,
        par,
    );
}

/// The pointwise half of a pair tile: channels `m0..m0 + mm` of image `ni` into `mid`
/// (`[mm][hw]`), on the pointwise kernel in the orientation `channel` with `packed`
/// weights, then the activation: the same steps as the lone pointwise convolution.
#[allow(clippy::too_many_arguments)]
fn pointwise_planes(
    input: &[f32],
    ni: usize,
    c: usize,
    hw: usize,
    (channel, packed): (bool, &[f32]),
    (m0, mm): (usize, usize),
    bias: Option<&[f32]>,
    activation: Option<UnaryOp>,
    mid: &mut [f32],
) {
    let (clamp, rest) = crate::pointwise::split_activation(activation);
    let x = &input[ni * c * hw..(ni + 1) * c * hw];
    let dst = crate::pointwise::Dst {
        ptr: mid.as_mut_ptr(),
        stride: hw,
    };
    // SAFETY: `packed` exists only when `uses_pointwise` held (AVX-512); `mid` holds the
    // tile's `mm` planes.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        crate::pointwise::tile(
            channel,
            x,
            hw,
            c,
            packed,
            (m0, mm),
            (0, hw),
            bias,
            clamp,
            dst,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the pointwise kernel needs AVX-512 ({channel} {x:?} {packed:?} {clamp:?})");
    if let Some(act) = rest {
        for row in mid.chunks_exact_mut(hw) {
            apply_in_place(act, row);
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
    activation: Option<UnaryOp>,
    out: &mut [f32],
    par: Parallelism,
) {
    let ohw = geo.oh * geo.ow;
    #[cfg(target_arch = "x86_64")]
    if dw_blocked(geo) {
        // Whole blocks of channels per tile (the last tile may end with a partial one).
        let planes_per_tile = (DW_TILE_OUTPUTS / (DW_BLOCK * ohw)).max(1) * DW_BLOCK;
        crate::util::for_each_chunk_mut(out, planes_per_tile * ohw, par, |ti, o| {
            DW_BLOCK_SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                let p0 = ti * planes_per_tile;
                // SAFETY: `dw_blocks_available` checked the CPU features.
                unsafe { dw_avx512::dw_blocks(input, weight, bias, p0, c, o, geo, &mut s) };
            });
            if let Some(act) = activation {
                apply_in_place(act, o);
            }
        });
        return;
    }
    // Several small planes per tile, so per-call costs (dispatch, scratch, rayon) are
    // paid once per tile; the count depends on the shape only.
    let planes_per_tile = (DW_TILE_OUTPUTS / ohw).max(1);
    if dw_rows_apply(geo) {
        let (clamp, rest) = crate::pointwise::split_activation(activation);
        let kk = geo.kh * geo.kw;
        let hw = geo.h * geo.w;
        crate::util::for_each_chunk_mut(out, planes_per_tile * ohw, par, |ti, o| {
            DW_ROWS.with(|rows| {
                let mut rows = rows.borrow_mut();
                for (i, plane) in o.chunks_exact_mut(ohw).enumerate() {
                    let pi = ti * planes_per_tile + i;
                    let ch = pi % c;
                    let b = bias.map_or(0.0, |b| b[ch]);
                    let x = &input[pi * hw..(pi + 1) * hw];
                    let wt = &weight[ch * kk..(ch + 1) * kk];
                    dw3x3s1_rows(x, wt, b, clamp, plane, geo, &mut rows);
                    if let Some(act) = rest {
                        apply_in_place(act, plane);
                    }
                }
            });
        });
        return;
    }
    crate::util::for_each_chunk_mut(out, planes_per_tile * ohw, par, |ti, o| {
        DW_SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            dw_planes(input, weight, bias, ti * planes_per_tile, c, o, geo, &mut s);
        });
        if let Some(act) = activation {
            apply_in_place(act, o);
        }
    });
}

/// Whether a depthwise convolution of geometry `g` that is not channel-blocked runs row
/// by row ([`dw3x3s1_rows`]): 3x3, stride 1, no dilation, maps at least a vector wide.
/// MobileNetV2's and EfficientNet's 112x112 layer (32 channels), one thread, CPU time:
/// 247-265 -> 207-219 us in a sequence of the model's convolutions (`convlayers`), 180-213
/// -> 184-190 us inside the model (`qtune bench --profile`, alternated, a slow spell).
fn dw_rows_apply(g: &Geom) -> bool {
    (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) == (3, 3, 1, 1, 1, 1) && g.ow >= 16
}

thread_local! {
    /// Per-thread row ring of [`dw3x3s1_rows`].
    static DW_ROWS: RefCell<DwRows> = const {
        RefCell::new(DwRows { buf: Vec::new(), holds: [isize::MIN; 3] })
    };
}

/// Three zero-padded input rows, slot `iy mod 3` holding row `holds[slot]`.
struct DwRows {
    buf: Vec<f32>,
    holds: [isize; 3],
}

dispatch! {
/// One 3x3 stride-1 depthwise plane, row by row: each input row is copied once into a
/// zero-padded row of a three-row ring (in L1), and each output row is summed from the
/// ring straight into the output, then clamped (`clamp`: Relu / Clip, the comparisons of
/// the activation kernel) while in L1. Same order as [`dw_planes`]: the bias, then the 9
/// taps row-major, products and sums rounded separately, padded taps adding `w * 0`.
fn dw3x3s1_rows(
    x: &[f32],
    wt: &[f32],
    bias: f32,
    clamp: Option<(f32, f32)>,
    out: &mut [f32],
    g: &Geom,
    rows: &mut DwRows,
) {
    let (h, w, ow) = (g.h, g.w, g.ow);
    let rw = ow + 2;
    if rows.buf.len() < 3 * rw {
        rows.buf.resize(3 * rw, 0.0);
    }
    rows.holds = [isize::MIN; 3];
    let mut w9 = [0.0f32; 9];
    w9.copy_from_slice(&wt[..9]);
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    for (oy, o) in out.chunks_exact_mut(ow).enumerate() {
        for ky in 0..3 {
            let iy = (oy + ky) as isize - g.pt as isize;
            let slot = iy.rem_euclid(3) as usize;
            if rows.holds[slot] != iy {
                let r = &mut rows.buf[slot * rw..(slot + 1) * rw];
                if iy < 0 || iy >= h as isize {
                    r.fill(0.0);
                } else {
                    // Padded column j is input column j - pl.
                    let src = &x[iy as usize * w..(iy as usize + 1) * w];
                    let n = w.min(rw - g.pl);
                    // The edges are a column or two: loops, not `memset` calls.
                    for v in &mut r[..g.pl] {
                        *v = 0.0;
                    }
                    copy_row(&mut r[g.pl..g.pl + n], src);
                    for v in &mut r[g.pl + n..] {
                        *v = 0.0;
                    }
                }
                rows.holds[slot] = iy;
            }
        }
        let slot = |ky: usize| ((oy + ky) as isize - g.pt as isize).rem_euclid(3) as usize;
        let (s0, s1, s2) = (slot(0), slot(1), slot(2));
        let b = &rows.buf;
        let r0 = &b[s0 * rw..s0 * rw + rw];
        let r1 = &b[s1 * rw..s1 * rw + rw];
        let r2 = &b[s2 * rw..s2 * rw + rw];
        #[cfg(target_arch = "x86_64")]
        if dw_rows_avx512::available() {
            // SAFETY: AVX-512 F checked.
            unsafe { dw_rows_avx512::row3x3(o, [r0, r1, r2], &w9, bias, clamp) };
            continue;
        }
        let t = [
            r0,
            &r0[1..],
            &r0[2..],
            r1,
            &r1[1..],
            &r1[2..],
            r2,
            &r2[1..],
            &r2[2..],
        ];
        taps_fixed(o, t, w9, bias);
        if clamp.is_some() {
            for d in o.iter_mut() {
                let v = if *d < lo { lo } else { *d };
                *d = if v > hi { hi } else { v };
            }
        }
    }
}
}

/// The AVX-512 output row of [`dw3x3s1_rows`].
#[cfg(target_arch = "x86_64")]
mod dw_rows_avx512 {
    use std::arch::x86_64::*;

    /// Output vectors summed together: independent chains of nine multiplies and adds, in
    /// registers (the compiler's loop over `taps_fixed` ran one vector at a time).
    const GROUP: usize = 4;

    /// Whether [`row3x3`] can run here (tests can force the portable loop, see
    /// `DW_PLANES_ONLY`).
    pub(super) fn available() -> bool {
        #[cfg(test)]
        if super::DW_PLANES_ONLY.get() {
            return false;
        }
        qtune_simd::has_avx512()
    }

    /// `o[i] = clamp(bias + w[0] r0[i] + w[1] r0[i + 1] + w[2] r0[i + 2] + w[3] r1[i] +
    /// ... + w[8] r2[i + 2])` from three zero-padded ring rows, each product and sum
    /// rounded separately, in that order: the arithmetic of `taps_fixed`, so the same
    /// bits; then the clamp of the activation kernels (NaN stays NaN).
    ///
    /// # Safety
    /// AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn row3x3(
        o: &mut [f32],
        rows: [&[f32]; 3],
        w9: &[f32; 9],
        bias: f32,
        clamp: Option<(f32, f32)>,
    ) {
        let n = o.len();
        assert!(
            rows.iter().all(|r| r.len() >= n + 2),
            "row3x3: short ring row"
        );
        let k = Taps {
            src: std::array::from_fn(|t| rows[t / 3][t % 3..].as_ptr()),
            wv: std::array::from_fn(|t| _mm512_set1_ps(w9[t])),
            b: _mm512_set1_ps(bias),
            clamp: clamp.map(|(lo, hi)| (_mm512_set1_ps(lo), _mm512_set1_ps(hi))),
            dst: o.as_mut_ptr(),
        };
        let full = n / 16;
        let mut v = 0;
        while v + GROUP <= full {
            // SAFETY: vectors `v..v + GROUP` lie inside the output row and, shifted by up
            // to 2, inside the ring rows (`n + 2` floats).
            unsafe { k.group::<GROUP>(v * 16, 0xffff) };
            v += GROUP;
        }
        while v < full {
            // SAFETY: as above.
            unsafe { k.group::<1>(v * 16, 0xffff) };
            v += 1;
        }
        if !n.is_multiple_of(16) {
            // SAFETY: the lanes under the mask lie inside the rows, as above.
            unsafe { k.group::<1>(full * 16, (1u16 << (n % 16)) - 1) };
        }
    }

    /// The operands of [`row3x3`]: the nine tap sources (ring row `t / 3` from column
    /// `t % 3`), the weights and bias as vectors, the clamp bounds, the output row.
    struct Taps {
        src: [*const f32; 9],
        wv: [__m512; 9],
        b: __m512,
        clamp: Option<(__m512, __m512)>,
        dst: *mut f32,
    }

    impl Taps {
        /// `G` vectors from column `i`, their sums in registers, the lanes under `mask`.
        ///
        /// # Safety
        /// AVX-512 F; the lanes under `mask` of the `G` vectors from `i` lie inside the
        /// output row and, from each source, inside its ring row.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn group<const G: usize>(&self, i: usize, mask: __mmask16) {
            let mut acc = [self.b; G];
            for t in 0..9 {
                for (j, a) in acc.iter_mut().enumerate() {
                    // SAFETY: see the function's contract.
                    let x = unsafe { _mm512_maskz_loadu_ps(mask, self.src[t].add(i + j * 16)) };
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(self.wv[t], x));
                }
            }
            for (j, &a) in acc.iter().enumerate() {
                let r = match self.clamp {
                    Some((lo, hi)) => crate::pointwise::avx512::clamp(a, lo, hi),
                    None => a,
                };
                // SAFETY: see the function's contract.
                unsafe { _mm512_mask_storeu_ps(self.dst.add(i + j * 16), mask, r) };
            }
        }
    }
}

/// Padded input pixels (`hpad * wpad`, the interleaved block is 64 bytes per pixel) up to
/// which a depthwise convolution runs channel-blocked ([`dw_avx512::dw_blocks`]) rather
/// than plane by plane, on CPUs with AVX-512. Measured per layer, one thread, CPU time
/// (BENCHMARKS.md): faster up to 56x56 inputs (144 channels 3x3 stride 1 on 56x56: 165 ->
/// 134-147 us; 192 channels on 28x28: 57 -> 45 us; 240 channels 5x5 on 28x28: 163 -> 94
/// us), slower on 112x112 inputs (96 channels stride 2: 230 -> 254-286 us; 32 channels
/// stride 1: level), whose block (800 KB) no longer fits the L2 cache.
const DW_BLOCKED_MAX_PADDED: usize = 60 * 60;

/// Whether a depthwise convolution of geometry `g` runs on [`dw_avx512::dw_blocks`]. Either
/// path gives the same bits.
fn dw_blocked(g: &Geom) -> bool {
    let hpad = (g.oh.max(1) - 1) * g.sh + (g.kh.max(1) - 1) * g.dh + 1;
    let wpad = (g.ow.max(1) - 1) * g.sw + (g.kw.max(1) - 1) * g.dw + 1;
    hpad * wpad <= DW_BLOCKED_MAX_PADDED && dw_blocks_available()
}
/// Channels per block of [`dw_avx512::dw_blocks`]: one AVX-512 vector of f32.
#[cfg(target_arch = "x86_64")]
const DW_BLOCK: usize = 16;

/// One pixel of a channel block: a vector, aligned so that loads and stores of it never
/// straddle two cache lines.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Lanes([f32; DW_BLOCK]);

/// Per-thread scratch of [`dw_avx512::dw_blocks`]: the interleaved padded input block,
/// then the interleaved output block.
#[cfg(target_arch = "x86_64")]
struct DwBlockScratch {
    buf: Vec<Lanes>,
    /// The block's weights, `[kh * kw]` vectors.
    weights: Vec<Lanes>,
    /// Where each input pixel goes in the padded block (`usize::MAX`: outside it).
    pixel_at: Vec<usize>,
    /// The geometry whose padding `buf` holds as zeros and `pixel_at` describes, if any.
    ready_for: Option<Geom>,
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    static DW_BLOCK_SCRATCH: RefCell<DwBlockScratch> = const {
        RefCell::new(DwBlockScratch {
            buf: Vec::new(),
            weights: Vec::new(),
            pixel_at: Vec::new(),
            ready_for: None,
        })
    };
}

#[cfg(test)]
thread_local! {
    /// Makes [`dw_blocks_available`] false on this thread, so that tests cover the
    /// plane-by-plane path on small maps too, and makes the row-by-row path sum with its
    /// portable loop: what CPUs without AVX-512 run.
    pub(crate) static DW_PLANES_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Channels per block of the channel-blocked depthwise kernel (1 where there is none).
fn dw_block_channels() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        DW_BLOCK
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        1
    }
}

/// Whether [`dw_avx512::dw_blocks`] can run here. Either path gives the same bits, so the
/// choice depends on the CPU only for speed.
fn dw_blocks_available() -> bool {
    #[cfg(test)]
    if DW_PLANES_ONLY.get() {
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

#[cfg(target_arch = "x86_64")]
pub(crate) mod dw_avx512 {
    //! The channel-blocked depthwise kernel: [`DW_BLOCK`] channels at a time, the block's
    //! input planes interleaved into one zero-padded `[hpad][wpad][DW_BLOCK]` image, every
    //! output pixel one vector computed from its taps, the result de-interleaved into the
    //! output planes. On 7x7 and 14x14 maps a single plane is too little work for the
    //! per-plane layout of [`super::dw_planes`] (its fixed costs per plane and its
    //! rounded-up rows were most of the time); here the fixed costs are per block and no
    //! lane is wasted. The (de-)interleaving is a 16x16 transpose in registers.
    //!
    //! Same accumulation order as [`super::dw_planes`]: the bias, then the taps in
    //! `(ky, kx)` row-major order, padded taps adding `w * 0`, products and sums rounded
    //! separately.

    use super::{DW_BLOCK, DwBlockScratch, Geom, Lanes};
    use std::arch::x86_64::*;

    const L: usize = DW_BLOCK;

    /// 16x16 transpose: lane `j` of `out[i]` is lane `i` of `rows[j]`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn transpose16(rows: [__m512; 16]) -> [__m512; 16] {
        // 32-bit interleave of row pairs, then 64-bit interleave of pair pairs: each 128-bit
        // lane k of t2[4q + s] holds the 4x4 sub-block (rows 4q.., columns 4k..) column s.
        let mut t1 = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t1[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
            t1[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
        }
        let mut t2 = [_mm512_setzero_ps(); 16];
        for q in 0..4 {
            let (a0, a1, b0, b1) = (t1[4 * q], t1[4 * q + 1], t1[4 * q + 2], t1[4 * q + 3]);
            let lo = |x: __m512, y: __m512| {
                _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
            };
            let hi = |x: __m512, y: __m512| {
                _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
            };
            t2[4 * q] = lo(a0, b0);
            t2[4 * q + 1] = hi(a0, b0);
            t2[4 * q + 2] = lo(a1, b1);
            t2[4 * q + 3] = hi(a1, b1);
        }
        // Now 128-bit lane k of t2[4q + s] is rows 4q..4q+4 of column 4k + s. Gather the
        // four row groups of each column: first pairs of groups, then the pairs.
        let mut out = [_mm512_setzero_ps(); 16];
        for s in 0..4 {
            let (g0, g1, g2, g3) = (t2[s], t2[4 + s], t2[8 + s], t2[12 + s]);
            // u0: lanes (g0.k0, g0.k2, g1.k0, g1.k2); u1: (g0.k1, g0.k3, g1.k1, g1.k3).
            let u0 = _mm512_shuffle_f32x4::<0b10_00_10_00>(g0, g1);
            let u1 = _mm512_shuffle_f32x4::<0b11_01_11_01>(g0, g1);
            let v0 = _mm512_shuffle_f32x4::<0b10_00_10_00>(g2, g3);
            let v1 = _mm512_shuffle_f32x4::<0b11_01_11_01>(g2, g3);
            // Column 4k + s = (g0.k, g1.k, g2.k, g3.k).
            out[s] = _mm512_shuffle_f32x4::<0b10_00_10_00>(u0, v0);
            out[8 + s] = _mm512_shuffle_f32x4::<0b11_01_11_01>(u0, v0);
            out[4 + s] = _mm512_shuffle_f32x4::<0b10_00_10_00>(u1, v1);
            out[12 + s] = _mm512_shuffle_f32x4::<0b11_01_11_01>(u1, v1);
        }
        out
    }

    /// Mask of the first `n` (at most 16) lanes.
    #[inline]
    fn first_lanes(n: usize) -> __mmask16 {
        if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
    }

    /// Depthwise planes `p0..` of the output tile `out` (whole planes).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    pub(super) unsafe fn dw_blocks(
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        p0: usize,
        c: usize,
        out: &mut [f32],
        g: &Geom,
        scratch: &mut DwBlockScratch,
    ) {
        let (hw, ohw, kk) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
        let hpad = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1;
        let wpad = (g.ow - 1) * g.sw + (g.kw - 1) * g.dw + 1;
        let need = hpad * wpad + ohw.next_multiple_of(L);
        if scratch.buf.len() < need {
            scratch.buf.resize(need, Lanes([0.0; L]));
            scratch.ready_for = None;
        }
        if scratch.ready_for != Some(*g) {
            // The padding is the same for every block of a geometry and no block writes it.
            scratch.buf[..hpad * wpad].fill(Lanes([0.0; L]));
            scratch.pixel_at.clear();
            for iy in 0..g.h {
                for ix in 0..g.w {
                    let (py, px) = (iy + g.pt, ix + g.pl);
                    let at = if py < hpad && px < wpad {
                        py * wpad + px
                    } else {
                        usize::MAX
                    };
                    scratch.pixel_at.push(at);
                }
            }
            scratch.ready_for = Some(*g);
        }
        scratch.weights.resize(kk, Lanes([0.0; L]));
        let (xb, ob) = scratch.buf[..need].split_at_mut(hpad * wpad);
        let pixel_at = &scratch.pixel_at[..hw];
        let wb = &mut scratch.weights[..kk];
        let planes = out.len() / ohw;
        for b0 in (0..planes).step_by(L) {
            let lanes = L.min(planes - b0);
            let mut bb = Lanes([0.0; L]);
            let ch0 = (p0 + b0) % c;
            if ch0 + lanes <= c {
                // Consecutive channels: their `[lanes][kk]` weights, transposed.
                let rows_mask = first_lanes(lanes);
                for k0 in (0..kk).step_by(L) {
                    let n = L.min(kk - k0);
                    let mut rows = [_mm512_setzero_ps(); 16];
                    for (l, r) in rows.iter_mut().enumerate().take(lanes) {
                        let src = &weight[(ch0 + l) * kk + k0..(ch0 + l) * kk + k0 + n];
                        // SAFETY: the masked load reads only the `n` elements of `src`.
                        *r = unsafe { _mm512_maskz_loadu_ps(first_lanes(n), src.as_ptr()) };
                    }
                    let cols = transpose16(rows);
                    for (w, col) in wb[k0..k0 + n].iter_mut().zip(cols) {
                        // SAFETY: `Lanes` is 16 f32s aligned to 64 bytes.
                        unsafe { _mm512_store_ps(w.0.as_mut_ptr(), col) };
                    }
                }
                if let Some(b) = bias {
                    let src = &b[ch0..ch0 + lanes];
                    // SAFETY: the masked load reads only the `lanes` elements of `src`.
                    let v = unsafe { _mm512_maskz_loadu_ps(rows_mask, src.as_ptr()) };
                    // SAFETY: as above.
                    unsafe { _mm512_store_ps(bb.0.as_mut_ptr(), v) };
                }
            } else {
                // The block wraps around to the next image's first channels.
                for l in 0..lanes {
                    let ch = (p0 + b0 + l) % c;
                    bb.0[l] = bias.map_or(0.0, |b| b[ch]);
                    for (t, wt) in wb.iter_mut().enumerate() {
                        wt.0[l] = weight[ch * kk + t];
                    }
                }
            }
            // Interleave: 16 pixels of the 16 planes at a time. Lanes past `lanes` read
            // zeros (a partial last block); they are computed and dropped.
            let first = (p0 + b0) * hw;
            let mut q0 = 0;
            if lanes == L {
                // Whole vectors of a whole block: fixed counts, so the transposed vectors
                // stay in registers (the general loop below spilled them to the stack).
                while q0 + L <= hw {
                    let rows: [__m512; 16] = std::array::from_fn(|l| {
                        let src = &input[first + l * hw + q0..first + l * hw + q0 + L];
                        // SAFETY: `src` holds 16 elements.
                        unsafe { _mm512_loadu_ps(src.as_ptr()) }
                    });
                    let cols = transpose16(rows);
                    let at = &pixel_at[q0..q0 + L];
                    for j in 0..L {
                        if at[j] != usize::MAX {
                            let dst: &mut [f32; L] = &mut xb[at[j]].0;
                            // SAFETY: `dst` is 16 f32s.
                            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), cols[j]) };
                        }
                    }
                    q0 += L;
                }
            }
            for q0 in (q0..hw).step_by(L) {
                let n = L.min(hw - q0);
                let m = first_lanes(n);
                let mut rows = [_mm512_setzero_ps(); 16];
                for (l, r) in rows.iter_mut().enumerate().take(lanes) {
                    let src = &input[first + l * hw + q0..first + l * hw + q0 + n];
                    // SAFETY: the masked load reads only the `n` elements of `src`.
                    *r = unsafe { _mm512_maskz_loadu_ps(m, src.as_ptr()) };
                }
                let cols = transpose16(rows);
                for (j, col) in cols.iter().enumerate().take(n) {
                    let at = pixel_at[q0 + j];
                    if at != usize::MAX {
                        let dst: &mut [f32; L] = &mut xb[at].0;
                        // SAFETY: `dst` is 16 f32s.
                        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), *col) };
                    }
                }
            }
            compute(xb, ob, wb, bb, g, wpad);
            // De-interleave into the output planes.
            let mut q0 = 0;
            if lanes == L {
                // As for the interleave: whole vectors of a whole block.
                while q0 + L <= ohw {
                    let rows: [__m512; 16] = std::array::from_fn(|j| {
                        // SAFETY: `ob[q0 + j]` is 16 f32s, aligned.
                        unsafe { _mm512_load_ps(ob[q0 + j].0.as_ptr()) }
                    });
                    let cols = transpose16(rows);
                    for (l, col) in cols.iter().enumerate() {
                        let dst = &mut out[(b0 + l) * ohw + q0..(b0 + l) * ohw + q0 + L];
                        // SAFETY: `dst` holds 16 elements.
                        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), *col) };
                    }
                    q0 += L;
                }
            }
            for q0 in (q0..ohw).step_by(L) {
                let n = L.min(ohw - q0);
                let m = first_lanes(n);
                let mut rows = [_mm512_setzero_ps(); 16];
                for (j, r) in rows.iter_mut().enumerate().take(n) {
                    // SAFETY: `ob[q0 + j]` is 16 f32s.
                    *r = unsafe { _mm512_loadu_ps(ob[q0 + j].0.as_ptr()) };
                }
                let cols = transpose16(rows);
                for (l, col) in cols.iter().enumerate().take(lanes) {
                    let dst = &mut out[(b0 + l) * ohw + q0..(b0 + l) * ohw + q0 + n];
                    // SAFETY: the masked store writes only the `n` elements of `dst`.
                    unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), m, *col) };
                }
            }
        }
    }

    /// Every output pixel of one block: `ob[oy * ow + ox]` from the taps on `xb`. The
    /// common kernel widths get a copy in which a kernel row's weights stay in registers
    /// and several output pixels share them.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    fn compute(xb: &[Lanes], ob: &mut [Lanes], wb: &[Lanes], bb: Lanes, g: &Geom, wpad: usize) {
        match (g.kw, g.sw, g.dw) {
            (3, 1, 1) => compute_kw::<3, 1>(xb, ob, wb, bb, g, wpad),
            (3, 2, 1) => compute_kw::<3, 2>(xb, ob, wb, bb, g, wpad),
            (5, 1, 1) => compute_kw::<5, 1>(xb, ob, wb, bb, g, wpad),
            (5, 2, 1) => compute_kw::<5, 2>(xb, ob, wb, bb, g, wpad),
            (7, 1, 1) => compute_kw::<7, 1>(xb, ob, wb, bb, g, wpad),
            (7, 2, 1) => compute_kw::<7, 2>(xb, ob, wb, bb, g, wpad),
            _ => compute_any(xb, ob, wb, bb, g, wpad),
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    fn compute_kw<const KW: usize, const SW: usize>(
        xb: &[Lanes],
        ob: &mut [Lanes],
        wb: &[Lanes],
        bb: Lanes,
        g: &Geom,
        wpad: usize,
    ) {
        for oy in 0..g.oh {
            let orow = &mut ob[oy * g.ow..(oy + 1) * g.ow];
            let mut ox = 0;
            while ox + 8 <= g.ow {
                pixels::<KW, SW, 8>(xb, orow, wb, bb, g, wpad, oy, ox);
                ox += 8;
            }
            if ox + 4 <= g.ow {
                pixels::<KW, SW, 4>(xb, orow, wb, bb, g, wpad, oy, ox);
                ox += 4;
            }
            if ox + 2 <= g.ow {
                pixels::<KW, SW, 2>(xb, orow, wb, bb, g, wpad, oy, ox);
                ox += 2;
            }
            if ox < g.ow {
                pixels::<KW, SW, 1>(xb, orow, wb, bb, g, wpad, oy, ox);
            }
        }
    }

    /// Output pixels `ox..ox + P` of row `oy`, kernel width `KW`, column stride `SW`, no
    /// column dilation (all constants, so the window indices need no bounds checks). In
    /// intrinsics: the compiler vectorised the plain loops across pixels, with gathers.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    fn pixels<const KW: usize, const SW: usize, const P: usize>(
        xb: &[Lanes],
        orow: &mut [Lanes],
        wb: &[Lanes],
        bb: Lanes,
        g: &Geom,
        wpad: usize,
        oy: usize,
        ox: usize,
    ) {
        let load = |v: &Lanes| {
            // SAFETY: `Lanes` is 16 f32s aligned to 64 bytes.
            unsafe { _mm512_load_ps(v.0.as_ptr()) }
        };
        let mut acc = [load(&bb); P];
        let span = (P - 1) * SW + KW;
        for ky in 0..g.kh {
            let wr = &wb[ky * KW..(ky + 1) * KW];
            let at = (oy * g.sh + ky * g.dh) * wpad + ox * SW;
            let xs = &xb[at..at + span];
            for kx in 0..KW {
                let w = load(&wr[kx]);
                for (p, a) in acc.iter_mut().enumerate() {
                    // Product then sum, each rounded: the order of the reference.
                    *a = _mm512_add_ps(*a, _mm512_mul_ps(w, load(&xs[p * SW + kx])));
                }
            }
        }
        for (o, a) in orow[ox..ox + P].iter_mut().zip(acc) {
            // SAFETY: as for `load`.
            unsafe { _mm512_store_ps(o.0.as_mut_ptr(), a) };
        }
    }

    /// [`compute`] for any kernel width.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    fn compute_any(xb: &[Lanes], ob: &mut [Lanes], wb: &[Lanes], bb: Lanes, g: &Geom, wpad: usize) {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut a = bb;
                for ky in 0..g.kh {
                    let row = (oy * g.sh + ky * g.dh) * wpad + ox * g.sw;
                    for kx in 0..g.kw {
                        let wt = &wb[ky * g.kw + kx].0;
                        let xv = &xb[row + kx * g.dw].0;
                        for l in 0..L {
                            a.0[l] += wt[l] * xv[l];
                        }
                    }
                }
                ob[oy * g.ow + ox] = a;
            }
        }
    }
}

/// Output elements per depthwise tile (whole planes; at least one plane).
const DW_TILE_OUTPUTS: usize = 4096;

dispatch! {
/// Depthwise planes `p0..` of the output tile `out` (whole planes).
///
/// Everything that depends on the geometry only (layout, tap offsets, which phase planes
/// are read, the column range each phase copies) is worked out once per call in a
/// [`DwPlan`]; on 7x7 and 14x14 maps, where a plane is a few hundred multiply-adds, working
/// it out per plane (with integer divisions per tap) and zeroing every phase plane again
/// took more time than the taps.
fn dw_planes(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    p0: usize,
    c: usize,
    out: &mut [f32],
    g: &Geom,
    scratch: &mut DwScratch,
) {
    let (hw, ohw, kk) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let plan = DwPlan::new(g);
    let lay = &plan.lay;
    let phases = g.sh * g.sw;
    let need = phases * lay.plane + lay.wide_len;
    let fresh = scratch.buf.len() < need || scratch.zeroed_for != Some(*g);
    if scratch.buf.len() < need {
        scratch.buf.resize(need, 0.0);
    }
    let (ph, rest) = scratch.buf[..need].split_at_mut(phases * lay.plane);
    let wide = &mut rest[..lay.wide_len];
    // The padding of the phase planes is the same for every plane of a geometry and no
    // plane writes it: it is zeroed when the scratch changes geometry, and each plane then
    // writes only the input's columns.
    if fresh {
        ph.fill(0.0);
        scratch.zeroed_for = Some(*g);
    }
    for (i, o) in out.chunks_exact_mut(ohw).enumerate() {
        let pi = p0 + i;
        let ch = pi % c;
        let b = bias.map_or(0.0, |b| b[ch]);
        let x = &input[pi * hw..(pi + 1) * hw];
        fill_phases(x, g, &plan, ph);
        dw_taps(ph, &weight[ch * kk..(ch + 1) * kk], b, wide, g, &plan);
        copy_out(wide, o, g, lay);
    }
}
}

/// Per-thread scratch of the depthwise kernel: the phase planes, then the wide output.
struct DwScratch {
    buf: Vec<f32>,
    /// The geometry whose phase-plane padding `buf` holds as zeros, if any.
    zeroed_for: Option<Geom>,
}

thread_local! {
    static DW_SCRATCH: RefCell<DwScratch> = const {
        RefCell::new(DwScratch {
            buf: Vec::new(),
            zeroed_for: None,
        })
    };
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
    /// Elements per phase plane: `hp * wp` plus [`DW_LANES`] of slack, so the tap loops can
    /// run over a length rounded up to whole vectors (no scalar tail; the extra outputs are
    /// dropped).
    plane: usize,
    /// Length of the "wide" output, `(oh - 1) * wp + ow`, rounded up to [`DW_LANES`].
    wide_len: usize,
}

/// Vector width in f32 lanes the depthwise loops are padded to (one AVX-512 register).
const DW_LANES: usize = 16;

impl DwLayout {
    fn new(g: &Geom) -> Self {
        let ry = ((g.kh - 1) * g.dh) / g.sh;
        let rx = ((g.kw - 1) * g.dw) / g.sw;
        let (hp, wp) = (g.oh + ry + 1, g.ow + rx);
        Self {
            hp,
            wp,
            plane: hp * wp + DW_LANES,
            wide_len: ((g.oh - 1) * wp + g.ow).next_multiple_of(DW_LANES),
        }
    }
}

/// Columns of one phase plane that come from the input (the others are padding).
#[derive(Clone, Copy)]
struct PhaseCols {
    /// Phase-plane columns `lo..hi` are input columns `start, start + sw, ...`.
    lo: usize,
    hi: usize,
    start: usize,
}

/// The geometry-only part of a depthwise convolution, computed once per call of
/// [`dw_planes`].
struct DwPlan {
    lay: DwLayout,
    /// Whether some tap reads phase `id` (`id = pr * sw + pc`).
    used: Vec<bool>,
    /// Input columns of each column phase `pc`.
    cols: Vec<PhaseCols>,
    /// Offset in the phase planes of the window each tap `(ky, kx)` reads, row-major.
    taps: Vec<usize>,
}

impl DwPlan {
    fn new(g: &Geom) -> Self {
        let lay = DwLayout::new(g);
        let mut used = vec![false; g.sh * g.sw];
        let mut taps = Vec::with_capacity(g.kh * g.kw);
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let (y, x) = (ky * g.dh, kx * g.dw);
                let id = (y % g.sh) * g.sw + x % g.sw;
                used[id] = true;
                taps.push(id * lay.plane + (y / g.sh) * lay.wp + x / g.sw);
            }
        }
        let cols = (0..g.sw)
            .map(|pc| {
                // Columns j whose source column j * sw + pc - pl lies inside the input.
                let off = pc as isize - g.pl as isize;
                let lo = if off >= 0 {
                    0
                } else {
                    ((-off) as usize).div_ceil(g.sw)
                }
                .min(lay.wp);
                let hi = if (g.w as isize) <= off {
                    0
                } else {
                    ((g.w as isize - off) as usize).div_ceil(g.sw)
                }
                .clamp(lo, lay.wp);
                let start = if hi > lo {
                    ((lo * g.sw) as isize + off) as usize
                } else {
                    0
                };
                PhaseCols { lo, hi, start }
            })
            .collect();
        Self {
            lay,
            used,
            cols,
            taps,
        }
    }
}

/// `dst.copy_from_slice(&src[..dst.len()])` for the short rows of small maps, in whole
/// vectors and halves of vectors: `copy_from_slice` calls `memmove`, whose call and
/// dispatch cost more than copying a 7- or 14-element row.
#[inline(always)]
pub(crate) fn copy_row(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    let src = &src[..n];
    let mut i = 0;
    while i + 16 <= n {
        let d: &mut [f32; 16] = (&mut dst[i..i + 16]).try_into().expect("16 elements");
        d.copy_from_slice(&src[i..i + 16]);
        i += 16;
    }
    if i + 8 <= n {
        let d: &mut [f32; 8] = (&mut dst[i..i + 8]).try_into().expect("8 elements");
        d.copy_from_slice(&src[i..i + 8]);
        i += 8;
    }
    if i + 4 <= n {
        let d: &mut [f32; 4] = (&mut dst[i..i + 4]).try_into().expect("4 elements");
        d.copy_from_slice(&src[i..i + 4]);
        i += 4;
    }
    // At most three left: unrolled, so the compiler does not turn a loop into `memmove`.
    if i < n {
        dst[i] = src[i];
    }
    if i + 1 < n {
        dst[i + 1] = src[i + 1];
    }
    if i + 2 < n {
        dst[i + 2] = src[i + 2];
    }
}

/// Writes the input columns of the phase planes that some tap reads, from the unpadded
/// input plane `x`; their padding is already zero (see [`dw_planes`]).
#[inline(always)]
fn fill_phases(x: &[f32], g: &Geom, plan: &DwPlan, ph: &mut [f32]) {
    let lay = &plan.lay;
    let (sh, sw, wp, plane) = (g.sh, g.sw, lay.wp, lay.plane);
    if sw == 2 {
        fill_phases_sw2(x, g, lay, ph, &plan.used);
        return;
    }
    let (h, w) = (g.h, g.w);
    for (id, dst) in ph.chunks_exact_mut(plane).enumerate() {
        if !plan.used[id] {
            continue;
        }
        let (pr, pc) = (id / sw, id % sw);
        let PhaseCols { lo, hi, start } = plan.cols[pc];
        let dst = &mut dst[..lay.hp * wp];
        for (i, row) in dst.chunks_exact_mut(wp).enumerate() {
            let iy = (i * sh + pr) as isize - g.pt as isize;
            if iy < 0 || iy >= h as isize || hi == lo {
                continue;
            }
            let src = &x[iy as usize * w..(iy as usize + 1) * w];
            if sw == 1 {
                copy_row(&mut row[lo..hi], &src[start..]);
            } else {
                strided_copy(&mut row[lo..hi], &src[start..], sw);
            }
        }
    }
}

/// `dst[i] = bias + w[0] * s[0][i] + ... + w[K-1] * s[K-1][i]`, summed in tap order.
#[inline(always)]
fn taps_fixed<const K: usize>(dst: &mut [f32], srcs: [&[f32]; K], wts: [f32; K], bias: f32) {
    let n = dst.len();
    let srcs = trim(srcs, n);
    for i in 0..n {
        let mut acc = bias;
        for t in 0..K {
            acc += wts[t] * srcs[t][i];
        }
        dst[i] = acc;
    }
}

/// Cuts every source to length `n` (so the tap loops carry no bounds checks). A plain loop
/// rather than `array::map`, which was not inlined into the target-feature copies.
#[inline(always)]
fn trim<const K: usize>(srcs: [&[f32]; K], n: usize) -> [&[f32]; K] {
    let mut out: [&[f32]; K] = [&[]; K];
    for (o, s) in out.iter_mut().zip(srcs) {
        *o = &s[..n];
    }
    out
}

/// The windows read by the `K` taps `t0..t0 + K` (indices into [`DwPlan::taps`]).
#[inline(always)]
fn tap_srcs<'a, const K: usize>(
    ph: &'a [f32],
    plan: &DwPlan,
    t0: usize,
    n: usize,
) -> [&'a [f32]; K] {
    let mut out: [&[f32]; K] = [&[]; K];
    for (t, o) in out.iter_mut().enumerate() {
        let off = plan.taps[t0 + t];
        *o = &ph[off..off + n];
    }
    out
}

/// `dst[i] = (init or dst[i]) + w[0] * s[0][i] + ... + w[K-1] * s[K-1][i]`, in tap order.
#[inline(always)]
fn taps_row<const K: usize>(dst: &mut [f32], srcs: [&[f32]; K], w: &[f32], init: Option<f32>) {
    let n = dst.len();
    let srcs = trim(srcs, n);
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

/// Stride-2 columns: de-interleaves each input row straight into the two column phases
/// (no intermediate padded row, which caused store-forwarding stalls). The padding is
/// already zero (see [`dw_planes`]).
#[inline(always)]
fn fill_phases_sw2(x: &[f32], g: &Geom, lay: &DwLayout, ph: &mut [f32], used: &[bool]) {
    let (h, w, wp, sh, pl) = (g.h, g.w, lay.wp, g.sh, g.pl);
    let plane = lay.plane;
    for pr in 0..sh {
        if !used[pr * 2] && !used[pr * 2 + 1] {
            continue;
        }
        let (p0, p1) = ph[pr * 2 * plane..(pr * 2 + 2) * plane].split_at_mut(plane);
        let rows = lay.hp * wp;
        for (i, (r0, r1)) in p0[..rows]
            .chunks_exact_mut(wp)
            .zip(p1[..rows].chunks_exact_mut(wp))
            .enumerate()
        {
            let iy = (i * sh + pr) as isize - g.pt as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let src = &x[iy as usize * w..(iy as usize + 1) * w];
            // Input column k sits at padded column k + pl: phase (k + pl) % 2, index (k + pl) / 2.
            let (first, second) = if pl % 2 == 0 { (r0, r1) } else { (r1, r0) };
            let (ja, jb) = (pl / 2, pl.div_ceil(2));
            let pairs = if ja < wp && jb < wp {
                deinterleave(src, &mut first[ja..], &mut second[jb..])
            } else {
                0
            };
            for (k, &v) in src.iter().enumerate().skip(2 * pairs) {
                let xcol = k + pl;
                if xcol / 2 < wp {
                    if xcol % 2 == pl % 2 {
                        first[xcol / 2] = v;
                    } else {
                        second[xcol / 2] = v;
                    }
                }
            }
        }
    }
}

/// `a[j] = src[2j]`, `b[j] = src[2j + 1]` for as many pairs as fit; returns that count.
///
/// Each pair is read as one 64-bit integer and split into its halves: the compiler turns
/// that into vector truncations, while the same loop over `f32` indices (and
/// [`strided_copy`]) stayed scalar.
#[inline(always)]
pub(crate) fn deinterleave(src: &[f32], a: &mut [f32], b: &mut [f32]) -> usize {
    let n = a.len().min(b.len()).min(src.len() / 2);
    let (a, b, src) = (&mut a[..n], &mut b[..n], &src[..2 * n]);
    for j in 0..n {
        // SAFETY: elements 2j and 2j + 1 lie inside `src` (2j + 1 < 2n); the read is
        // unaligned.
        let pair = unsafe { std::ptr::read_unaligned(src.as_ptr().add(2 * j).cast::<u64>()) };
        // The element at the lower address is the low half on a little-endian target.
        let (first, second) = if cfg!(target_endian = "little") {
            (pair as u32, (pair >> 32) as u32)
        } else {
            ((pair >> 32) as u32, pair as u32)
        };
        a[j] = f32::from_bits(first);
        b[j] = f32::from_bits(second);
    }
    n
}

/// The taps of one plane into the wide output. Accumulation order per output element:
/// bias, then the taps in `(ky, kx)` row-major order, padded taps contributing `w * 0`.
#[inline(always)]
fn dw_taps(ph: &[f32], wt: &[f32], bias: f32, wide: &mut [f32], g: &Geom, plan: &DwPlan) {
    let (kh, kw) = (g.kh, g.kw);
    let n = wide.len();
    if kh == 3 && kw == 3 {
        let srcs: [&[f32]; 9] = tap_srcs(ph, plan, 0, n);
        let mut w9 = [0.0; 9];
        w9.copy_from_slice(wt);
        taps_fixed(wide, srcs, w9, bias);
        return;
    }
    // One pass per kernel row, fused over the row's taps when the width is common.
    for ky in 0..kh {
        let t0 = ky * kw;
        let wrow = &wt[t0..t0 + kw];
        let init = if ky == 0 { Some(bias) } else { None };
        match kw {
            3 => taps_row::<3>(wide, tap_srcs(ph, plan, t0, n), wrow, init),
            5 => taps_row::<5>(wide, tap_srcs(ph, plan, t0, n), wrow, init),
            7 => taps_row::<7>(wide, tap_srcs(ph, plan, t0, n), wrow, init),
            _ => {
                if let Some(b) = init {
                    wide.fill(b);
                }
                for (kx, &wv) in wrow.iter().enumerate() {
                    let off = plan.taps[t0 + kx];
                    for (d, s) in wide.iter_mut().zip(&ph[off..off + n]) {
                        *d += wv * *s;
                    }
                }
            }
        }
    }
}

/// Copies the `ow` valid columns of each wide row into the output plane.
#[inline(always)]
fn copy_out(wide: &[f32], out: &mut [f32], g: &Geom, lay: &DwLayout) {
    if lay.wp == g.ow {
        out.copy_from_slice(&wide[..out.len()]);
    } else {
        for (oy, orow) in out.chunks_exact_mut(g.ow).enumerate() {
            copy_row(orow, &wide[oy * lay.wp..]);
        }
    }
}

/// `dst[i] = src[i * stride]`. Stride 2 gets its own loop so the compiler vectorises it
/// with shuffles (a generic `step_by` loop stays scalar).
#[inline(always)]
pub(crate) fn strided_copy(dst: &mut [f32], src: &[f32], stride: usize) {
    let n = dst.len();
    if n == 0 {
        return;
    }
    let src = &src[..(n - 1) * stride + 1];
    if stride == 2 {
        // Fixed-size blocks: the compiler turns each into a couple of shuffles.
        // `src` holds 2n - 1 elements, so a block of 16 outputs needs 32 inputs only while
        // 16 * (b + 1) < n: the last block is left to the scalar tail.
        let blocks = (n - 1) / 16;
        for (d, s) in dst
            .chunks_exact_mut(16)
            .zip(src.chunks_exact(32))
            .take(blocks)
        {
            for j in 0..16 {
                d[j] = s[2 * j];
            }
        }
        for i in blocks * 16..n {
            dst[i] = src[2 * i];
        }
    } else {
        for i in 0..n {
            dst[i] = src[i * stride];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The im2col block, one element at a time.
    fn im2col_naive(x: &[f32], g: &Geom, j0: usize, nn: usize) -> Vec<f32> {
        let mut col = Vec::with_capacity(g.c_g * g.kh * g.kw * nn);
        for ci in 0..g.c_g {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    for j in j0..j0 + nn {
                        let (oy, ox) = (j / g.ow, j % g.ow);
                        let iy = (oy * g.sh + ky * g.dh) as isize - g.pt as isize;
                        let ix = (ox * g.sw + kx * g.dw) as isize - g.pl as isize;
                        let inside = iy >= 0 && ix >= 0 && iy < g.h as isize && ix < g.w as isize;
                        col.push(if inside {
                            x[(ci * g.h + iy as usize) * g.w + ix as usize]
                        } else {
                            0.0
                        });
                    }
                }
            }
        }
        col
    }

    /// The im2col tiles against the naive loop, element for element: random geometries
    /// (strides 1-3, dilations, asymmetric pads, widths below and above a vector) and
    /// tiles that start and end mid-row.
    #[test]
    fn im2col_tile_matches_naive() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = |lo: usize, hi: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            lo + (seed % (hi - lo + 1) as u64) as usize
        };
        let mut rows = Vec::new();
        for case in 0..300 {
            let (kh, kw) = (rnd(1, 5), rnd(1, 5));
            let (dh, dw) = (rnd(1, 2), rnd(1, 2));
            let (sh, sw) = (rnd(1, 3), rnd(1, 3));
            let (pt, pl, pb, pr) = (rnd(0, 2), rnd(0, 2), rnd(0, 2), rnd(0, 2));
            let h = rnd(((kh - 1) * dh + 1).saturating_sub(pt + pb).max(1), 30);
            let w = rnd(((kw - 1) * dw + 1).saturating_sub(pl + pr).max(1), 40);
            let oh = conv_out_len(h, pt, pb, kh, sh, dh);
            let ow = conv_out_len(w, pl, pr, kw, sw, dw);
            if oh * ow == 0 {
                continue;
            }
            let c_g = rnd(1, 4);
            let g = Geom {
                c_g,
                h,
                w,
                kh,
                kw,
                oh,
                ow,
                sh,
                sw,
                dh,
                dw,
                pt,
                pl,
            };
            let x: Vec<f32> = (0..c_g * h * w).map(|i| i as f32 + 1.0).collect();
            let j0 = rnd(0, oh * ow - 1);
            let nn = rnd(1, oh * ow - j0);
            let mut col = vec![f32::NAN; c_g * kh * kw * nn];
            im2col_tile(&x, &g, j0, nn, &mut col, &mut rows);
            let want = im2col_naive(&x, &g, j0, nn);
            assert!(
                col.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "case {case}: h {h} w {w} k {kh}x{kw} s {sh}x{sw} d {dh}x{dw} pads {pt},{pl},{pb},{pr} tile {j0}+{nn}"
            );
        }
    }
}
