//! Winograd F(4x4, 3x3) and F(2x2, 3x3) for the dense 3x3 stride-1 convolutions, on CPUs
//! with AVX-512 (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).
//!
//! F(4x4, 3x3) is described below; F(2x2, 3x3) ([`Variant::F23`], for narrow maps) is the
//! same with 2x2 output tiles from 4x4 input tiles, 16 points, and transforms of additions
//! only ([`preferred`] picks one per layer).
//!
//! Each 4x4 output tile comes from a 6x6 input tile `d`: `Y = Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A`.
//! The 36 element-wise products summed over the input channels are 36 matrix products,
//! `M[p] = U[p] · V[p]` for `p` in `0..36`, with `U[p]` the `[m][c]` transformed weights
//! (computed once per model, in `f64`, rounded to `f32`) and `V[p]` the `[c][tiles]`
//! transformed input. A 3x3 layer thus costs 36 multiply-adds per 16 outputs per input
//! channel instead of 144, plus the two transforms.
//!
//! - Tiles are numbered row-major over the output map and cut into blocks of at most
//!   [`BLOCK_TILES`], as even as they can be; when a map has too few blocks for two
//!   threads, the output channels are split too ([`tasks`], from the shape only). A task
//!   transforms its block's input into `V`, one `[36][48]` panel per input channel; runs
//!   the 36 products on the pointwise kernel's register tiles (the weights are packed as
//!   36 pointwise weight sets, and a point's rows are one panel apart); and transforms
//!   `M` (a panel per output channel) back into the output, adding the bias and applying
//!   the activation.
//! - The input transform goes channel by channel and prefetches the next channel's
//!   window: the planes lie far apart, and on the large maps the loads missed the caches.
//! - The transforms run on 16 horizontally adjacent tiles at a time, one per vector lane: a
//!   tile's column `j` is element `4 t + j` of its input row, gathered by two permutes.
//! - Every step's arithmetic is fixed by the shape and a tile's position, so results are
//!   the same for any thread count; they differ from the direct kernel's in the last bits
//!   (the golden tests hold the models to cosine 0.99999 against ONNX Runtime, and the
//!   differential test bounds the error against an `f64` reference).
//! - `QTUNE_WINOGRAD=0` turns it off (the direct kernel then runs these layers).

use crate::conv::Geom;
use crate::pointwise::{BLOCK, Dst, split_activation};
use crate::unary::UnaryOp;
use crate::util::{SendPtr, for_each_tile};
use crate::{Conv2dParams, Parallelism};
use std::cell::RefCell;
use std::sync::OnceLock;

/// Side of an F(4x4, 3x3) output tile.
const TILE: usize = 4;
/// Transform points of F(4x4, 3x3) (`6 x 6`), the most of either variant.
const POINTS: usize = 36;
/// f32 lanes of one vector.
const LANES: usize = 16;
/// Largest number of tiles of one block (three of the pointwise kernel's 16-pixel vectors).
pub(crate) const BLOCK_TILES: usize = 48;
/// Floats of one channel's transformed block, `[36 points][48 tiles]`.
const PANEL: usize = POINTS * BLOCK_TILES;
/// Tasks a convolution is cut into at least when its shape allows, so that two threads
/// share it (never the thread count).
const MIN_TASKS: usize = 2;

/// The two algorithms: F(4x4, 3x3) (6x6 input tiles, 36 points, 4x fewer multiply-adds)
/// for maps with long rows of tiles, F(2x2, 3x3) (4x4 input tiles, 16 points, 2.25x fewer,
/// and transforms of additions only) for narrow maps, whose rows of 2x2 tiles are twice as
/// long and fill twice the vector lanes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Variant {
    F43,
    F23,
}

impl Variant {
    /// Side of an output tile.
    fn tile(self) -> usize {
        match self {
            Variant::F43 => TILE,
            Variant::F23 => 2,
        }
    }

    /// Transform points.
    fn points(self) -> usize {
        match self {
            Variant::F43 => POINTS,
            Variant::F23 => 16,
        }
    }

    /// Floats of one channel's transformed block, `[points][48 tiles]`.
    fn panel(self) -> usize {
        self.points() * BLOCK_TILES
    }

    /// `G`: `U = G g Gᵀ`.
    fn g(self) -> &'static [[f64; 3]] {
        match self {
            Variant::F43 => &G,
            Variant::F23 => &G23,
        }
    }
}

/// `G` of F(2x2, 3x3).
const G23: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// `G` of F(4x4, 3x3): `U = G g Gᵀ`.
const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

#[cfg(test)]
thread_local! {
    /// Forces the choice on this thread (tests): 1 F(4x4, 3x3) on every shape it can take,
    /// 3 F(2x2, 3x3), 2 neither, 0 the shape rule.
    pub(crate) static FORCE: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

thread_local! {
    /// Per-thread `V` and `M` of a block, reused across blocks and calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether `QTUNE_WINOGRAD` leaves the algorithm on (read once).
fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("QTUNE_WINOGRAD").map_or(true, |v| v != "0"))
}

/// Which Winograd algorithm a convolution of these shapes runs on (on this CPU), if any.
pub(crate) fn variant(
    in_dims: [usize; 4],
    w_dims: [usize; 4],
    p: &Conv2dParams,
) -> Option<Variant> {
    let [_, c, _, _] = in_dims;
    let [m, c_g, kh, kw] = w_dims;
    #[cfg(test)]
    if crate::direct::DIRECT_ALWAYS.get() {
        return None;
    }
    let takes = kh == 3
        && kw == 3
        && p.strides == [1, 1]
        && p.dilations == [1, 1]
        && p.group == 1
        && c_g == c
        && c > 0
        // One input and one output channel is the depthwise kernel's.
        && !(c == 1 && m == 1)
        && crate::direct::direct_available()
        && enabled();
    if !takes {
        return None;
    }
    let od = crate::conv2d_out_dims(in_dims, w_dims, p);
    if od[2] * od[3] == 0 {
        return None;
    }
    #[cfg(test)]
    match FORCE.get() {
        1 => return Some(Variant::F43),
        3 => return Some(Variant::F23),
        2 => return None,
        _ => {}
    }
    preferred(c, m, od[2], od[3])
}

/// Which Winograd algorithm a convolution of these shapes and weights runs on: [`variant`],
/// unless every weight is an integer. Integer weights are the int8 simulation's float form
/// (`qtune_deploy::sim`: codes times codes, summed exactly in f32 while the sums stay below
/// 2^24), which a direct sum keeps exact and the transforms would not (their `1/6` and
/// `1/24` round).
pub(crate) fn takes(
    weight: &[f32],
    in_dims: [usize; 4],
    w_dims: [usize; 4],
    p: &Conv2dParams,
) -> Option<Variant> {
    variant(in_dims, w_dims, p).filter(|_| weight.iter().any(|w| w.fract() != 0.0))
}

/// Which Winograd algorithm runs a 3x3 layer of depth `c`, `m` output channels and an
/// `oh x ow` output faster than the direct kernel, if one does: measured per layer on the
/// detection workloads (one thread, CPU time; BENCHMARKS.md). The transforms work on runs
/// of up to 16 horizontally adjacent tiles, so narrow maps pay them at a fraction of their
/// width (20x20 has runs of 5 4x4 tiles, 10 2x2 ones); maps whose side is not a multiple
/// of the tile compute outputs past the edge (13x13 computes 16x16 with 4x4 tiles, 14x14
/// with 2x2 ones); shallow layers (16 channels) gain nothing.
///
/// F(2x2, 3x3) needs at least 7 tiles per row (maps from 13 wide): on 10x10 maps it won
/// alone (yolov8n 128 -> 128: 98 against 157 us, weights in cache) but lost inside the
/// model (`qtune bench --profile`, `QTUNE_WINOGRAD=0` against on: its six 10x10 layers
/// 207-227 us direct, 223-258 on F(2x2, 3x3), the last two 59-61 against 85-88), where
/// its weights, 16/9 of the direct kernel's, come from memory; YOLOX's 13x13 layers gained
/// a little inside the model too (192 -> 192: 710 -> 687 us).
pub(crate) fn preferred(c: usize, m: usize, oh: usize, ow: usize) -> Option<Variant> {
    let waste =
        |t: usize| (oh.next_multiple_of(t) * ow.next_multiple_of(t)) as f64 / (oh * ow) as f64;
    if c < 24 || m < 16 {
        None
    } else if ow.div_ceil(TILE) >= 7 && waste(TILE) <= 1.25 {
        Some(Variant::F43)
    } else if ow.div_ceil(2) >= 7 && waste(2) <= 1.25 {
        Some(Variant::F23)
    } else {
        None
    }
}

/// Floats of the packed weights of `m` output channels at depth `c`.
pub(crate) fn packed_len(variant: Variant, m: usize, c: usize) -> usize {
    variant.points() * point_stride(m, c)
}

/// Floats of one point's packed weights (a pointwise weight set, `[m / 16][c][16]`).
fn point_stride(m: usize, c: usize) -> usize {
    m.div_ceil(BLOCK) * c * BLOCK
}

/// Packs `weight` (`[m, c, 3, 3]`) as the 36 transformed weight sets `U[p] = (G g Gᵀ)[p]`,
/// each laid out for the pointwise kernel, into `data` (zeros, [`packed_len`] of them).
///
/// Each `U` element is `((-0 + a0) + a1) + a2` in f64 for the three products `a` of its
/// row and column (the order of `Iterator::sum`, kept by the test's one-output-at-a-time
/// reference), rounded once to f32. The 16 output channels of a packed block are computed
/// side by side (the loops vectorise): searches build executors, and with them this
/// packing, many times.
pub(crate) fn pack(variant: Variant, weight: &[f32], m: usize, c: usize, data: &mut [f32]) {
    assert_eq!(weight.len(), m * c * 9, "winograd: weight length");
    assert_eq!(
        data.len(),
        packed_len(variant, m, c),
        "winograd: packed length"
    );
    let g_rows = variant.g();
    let alpha = g_rows.len();
    let stride = point_stride(m, c);
    for b in 0..m.div_ceil(BLOCK) {
        let lanes = BLOCK.min(m - b * BLOCK);
        for ci in 0..c {
            // g[k][l]: tap `k` of output channel `16 b + l`.
            let mut g = [[0.0f64; BLOCK]; 9];
            for l in 0..lanes {
                let src = &weight[((b * BLOCK + l) * c + ci) * 9..][..9];
                for (k, &v) in src.iter().enumerate() {
                    g[k][l] = f64::from(v);
                }
            }
            // t = G g, per lane.
            let mut t = [[[0.0f64; BLOCK]; 3]; 6];
            for (ti, gi) in t.iter_mut().zip(g_rows) {
                for (j, tij) in ti.iter_mut().enumerate() {
                    for (l, v) in tij.iter_mut().enumerate() {
                        *v = -0.0 + gi[0] * g[j][l] + gi[1] * g[3 + j][l] + gi[2] * g[6 + j][l];
                    }
                }
            }
            let at = (b * c + ci) * BLOCK;
            for (i, ti) in t.iter().take(alpha).enumerate() {
                for (j, gj) in g_rows.iter().enumerate() {
                    let dst = &mut data[(i * alpha + j) * stride + at..][..lanes];
                    for (l, d) in dst.iter_mut().enumerate() {
                        let u = -0.0 + ti[0][l] * gj[0] + ti[1][l] * gj[1] + ti[2][l] * gj[2];
                        *d = u as f32;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packing equals a one-output-at-a-time computation with `Iterator::sum`, bit for
    /// bit (zeros of both signs included), on a shape whose last block is partial.
    #[test]
    fn pack_equals_one_at_a_time() {
        let (m, c) = (37, 5);
        let mut weight: Vec<f32> = (0..m * c * 9)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 97.0)
            .collect();
        weight[0..9].fill(0.0);
        weight[9..18].fill(-0.0);
        let mut fast = vec![0.0; packed_len(Variant::F43, m, c)];
        pack(Variant::F43, &weight, m, c, &mut fast);
        let mut want = vec![0.0f32; packed_len(Variant::F43, m, c)];
        let stride = point_stride(m, c);
        for co in 0..m {
            for ci in 0..c {
                let g = &weight[(co * c + ci) * 9..][..9];
                let mut t = [[0.0f64; 3]; 6];
                for (i, row) in t.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|k| G[i][k] * f64::from(g[k * 3 + j])).sum();
                    }
                }
                let at = (co / BLOCK * c + ci) * BLOCK + co % BLOCK;
                for i in 0..6 {
                    for j in 0..6 {
                        let u: f64 = (0..3).map(|k| t[i][k] * G[j][k]).sum();
                        want[(i * 6 + j) * stride + at] = u as f32;
                    }
                }
            }
        }
        assert_eq!(crate::tests::bits(&fast), crate::tests::bits(&want));
    }
}

/// The convolution of `input` (`[n, c, h, w]`) with 3x3 weights packed by [`pack`] for `m`
/// output channels into `out` (`[n, m, oh, ow]`), every element of which it writes. The
/// caller has checked the shapes (stride 1, dilation 1, one group) and that AVX-512 is
/// available.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_winograd(
    variant: Variant,
    input: &[f32],
    in_dims: [usize; 4],
    m: usize,
    packed: &[f32],
    bias: Option<&[f32]>,
    geom: &Geom,
    activation: Option<UnaryOp>,
    out: &mut [f32],
    par: Parallelism,
) {
    let [n, c, h, w] = in_dims;
    let (oh, ow) = (geom.oh, geom.ow);
    assert_eq!(input.len(), n * c * h * w, "winograd: input length");
    assert_eq!(out.len(), n * m * oh * ow, "winograd: output length");
    assert_eq!(
        packed.len(),
        packed_len(variant, m, c),
        "winograd: packed length"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), m, "winograd: bias length");
    }
    if out.is_empty() {
        return;
    }
    let map = Map {
        h,
        w,
        c,
        m,
        pt: geom.pt,
        pl: geom.pl,
        oh,
        ow,
        tx: ow.div_ceil(variant.tile()),
    };
    let tiles = oh.div_ceil(variant.tile()) * map.tx;
    let (points, panel) = (variant.points(), variant.panel());
    let (bt, blocks, part) = tasks(n, tiles, m);
    let parts = m.div_ceil(part);
    let stride = point_stride(m, c);
    let (clamp, rest) = split_activation(activation);
    let outp = SendPtr(out.as_mut_ptr());
    for_each_tile(n * blocks * parts, par, |task| {
        let (ni, bi, pi) = (task / (blocks * parts), task / parts % blocks, task % parts);
        let t0 = bi * bt;
        let nt = bt.min(tiles - t0);
        let (m0, mm) = (pi * part, part.min(m - pi * part));
        let x = &input[ni * c * h * w..(ni + 1) * c * h * w];
        // SAFETY: image `ni`'s output planes, inside `out`; the task writes the outputs of
        // its own tiles and channels only, and no two tasks share both.
        let y = unsafe { outp.get().add(ni * m * oh * ow) };
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            // `V` and `M` hold one `[36][48]` panel per channel (the transforms write and
            // read one channel's 36 points together); the pointwise kernel reads a point's
            // rows at a stride of one panel, so `V` has a panel of slack at its end.
            let (vlen, mlen) = ((c + 1) * panel, m * panel);
            if s.len() < vlen + mlen {
                s.resize(vlen + mlen, 0.0);
            }
            let (v, mo) = s.split_at_mut(vlen);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512 checked by the caller; `v` and `mo` hold `c + 1` and `m`
            // panels; `x` is the image's input; `y` is valid for its `m` output planes.
            unsafe {
                match variant {
                    Variant::F43 => avx512::input_transform(x, &map, t0, nt, v),
                    Variant::F23 => avx512::input_transform_23(x, &map, t0, nt, v),
                }
                for p in 0..points {
                    crate::pointwise::tile(
                        false,
                        &v[p * BLOCK_TILES..],
                        panel,
                        c,
                        &packed[p * stride..(p + 1) * stride],
                        (m0, mm),
                        (0, nt),
                        None,
                        None,
                        Dst {
                            ptr: mo[m0 * panel + p * BLOCK_TILES..].as_mut_ptr(),
                            stride: panel,
                        },
                    );
                }
                let ch = (m0, mm);
                match variant {
                    Variant::F43 => {
                        avx512::output_transform(mo, &map, t0, nt, ch, bias, clamp, rest, y);
                    }
                    Variant::F23 => {
                        avx512::output_transform_23(mo, &map, t0, nt, ch, bias, clamp, rest, y);
                    }
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("Winograd needs AVX-512 ({x:?} {y:?} {v:?} {mo:?} {clamp:?} {rest:?})");
        });
    });
}

/// How a convolution of `n` images of `tiles` tiles and `m` output channels is cut into
/// tasks, from the shape only: `(tiles per block, blocks per image, channels per part)`.
/// Blocks hold at most [`BLOCK_TILES`] tiles, as evenly as they can (49 tiles are 25 and
/// 24, not 48 and 1); when that leaves fewer than [`MIN_TASKS`] tasks, the output channels
/// are split too (in multiples of 16; each part transforms the block's input again).
fn tasks(n: usize, tiles: usize, m: usize) -> (usize, usize, usize) {
    let mut blocks = tiles.div_ceil(BLOCK_TILES).max(1);
    // A small odd count of blocks becomes even: 3 blocks (the 100 tiles of a 20x20 map)
    // ran on two threads as 2 + 1, the layer 1.3-1.5x faster than on one thread instead
    // of about 2x. The smaller blocks fill their vectors as well (25 tiles in two vectors
    // of 16, against 34 in three). Splitting the output channels of the three blocks
    // instead (each part transforming its block's input again) was slower on one and on
    // two threads.
    if blocks > 1 && blocks < 8 && blocks % 2 == 1 {
        blocks += 1;
    }
    let bt = tiles.div_ceil(blocks).max(1);
    let mut parts = 1;
    while n * blocks * parts < MIN_TASKS && m.div_ceil(BLOCK) > parts {
        parts += 1;
    }
    let part = m
        .div_ceil(parts)
        .next_multiple_of(BLOCK)
        .min(m.next_multiple_of(BLOCK));
    (bt, blocks, part.max(1))
}

/// The shapes the transforms need.
struct Map {
    h: usize,
    w: usize,
    c: usize,
    m: usize,
    pt: usize,
    pl: usize,
    oh: usize,
    ow: usize,
    /// Tiles per row of tiles.
    tx: usize,
}

/// A run of at most 16 adjacent tiles of one row of tiles, the unit the transforms
/// vectorise over.
#[derive(Clone, Copy, Default)]
struct Run {
    /// The block-local index of its first tile.
    tl: usize,
    /// Its row of tiles.
    ty: usize,
    /// The column of its first tile.
    tx: usize,
    /// Its tiles.
    count: usize,
}

/// The block's tiles `t0..t0 + nt` as runs, cut at the ends of rows of tiles, into `out`
/// (at most one run per tile); returns how many.
fn runs(map: &Map, t0: usize, nt: usize, out: &mut [Run; BLOCK_TILES]) -> usize {
    let (mut t, mut k) = (t0, 0);
    while t < t0 + nt {
        let (ty, tx) = (t / map.tx, t % map.tx);
        let count = LANES.min(map.tx - tx).min(t0 + nt - t);
        out[k] = Run {
            tl: t - t0,
            ty,
            tx,
            count,
        };
        k += 1;
        t += count;
    }
    k
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK_TILES, LANES, Map, PANEL, Run, TILE, runs};
    use crate::unary::{UnaryOp, apply_in_place};
    use std::arch::x86_64::*;

    /// `Bᵀ x` over one axis for 16 tiles: `x[j]` holds element `j` of each tile's 6.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn bt(x: [__m512; 6]) -> [__m512; 6] {
        {
            let s = |v: f32| _mm512_set1_ps(v);
            [
                _mm512_fmadd_ps(s(4.0), x[0], _mm512_fmadd_ps(s(-5.0), x[2], x[4])),
                _mm512_fmadd_ps(
                    s(-4.0),
                    _mm512_add_ps(x[1], x[2]),
                    _mm512_add_ps(x[3], x[4]),
                ),
                _mm512_fmadd_ps(s(4.0), _mm512_sub_ps(x[1], x[2]), _mm512_sub_ps(x[4], x[3])),
                _mm512_fmadd_ps(s(2.0), _mm512_sub_ps(x[3], x[1]), _mm512_sub_ps(x[4], x[2])),
                _mm512_fmadd_ps(s(2.0), _mm512_sub_ps(x[1], x[3]), _mm512_sub_ps(x[4], x[2])),
                _mm512_fmadd_ps(s(4.0), x[1], _mm512_fmadd_ps(s(-5.0), x[3], x[5])),
            ]
        }
    }

    /// `Aᵀ x` over one axis for 16 tiles: 6 points in, 4 outputs.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn at(x: [__m512; 6]) -> [__m512; 4] {
        {
            let s = |v: f32| _mm512_set1_ps(v);
            let p12 = _mm512_add_ps(x[1], x[2]);
            let m12 = _mm512_sub_ps(x[1], x[2]);
            let p34 = _mm512_add_ps(x[3], x[4]);
            let m34 = _mm512_sub_ps(x[3], x[4]);
            [
                _mm512_add_ps(_mm512_add_ps(x[0], p12), p34),
                _mm512_fmadd_ps(s(2.0), m34, m12),
                _mm512_fmadd_ps(s(4.0), p34, p12),
                _mm512_add_ps(_mm512_fmadd_ps(s(8.0), m34, m12), x[5]),
            ]
        }
    }

    /// A run's window in an input row: its first column `col0 = tile * tx - pl` and, per
    /// vector `q` of `Q` (columns `col0 + 16 q..`), the lanes inside the row of `w` columns.
    fn window<const Q: usize>(tile: usize, tx: usize, pl: usize, w: usize) -> (isize, [u16; Q]) {
        let col0 = (tile * tx) as isize - pl as isize;
        let masks = std::array::from_fn(|q| {
            let mut mask = 0u16;
            for l in 0..LANES {
                let col = col0 + (q * LANES + l) as isize;
                if col >= 0 && (col as usize) < w {
                    mask |= 1 << l;
                }
            }
            mask
        });
        (col0, masks)
    }

    /// Adds the bias, then the clamp when there is one.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn finish(v: __m512, bias: __m512, clamp: Option<(__m512, __m512)>) -> __m512 {
        let v = _mm512_add_ps(v, bias);
        match clamp {
            Some((lo, hi)) => crate::pointwise::avx512::clamp(v, lo, hi),
            None => v,
        }
    }

    /// Stores the first `cols` of the consecutive outputs `outv` (16 per vector) at `dst`,
    /// then applies `rest` to them.
    ///
    /// # Safety
    /// AVX-512 F; `dst` valid for writes of `cols` floats, this task's own.
    #[target_feature(enable = "avx512f")]
    unsafe fn store_row(dst: *mut f32, outv: &[__m512], cols: usize, rest: Option<UnaryOp>) {
        for (q, &val) in outv.iter().enumerate() {
            let n = cols.saturating_sub(q * LANES);
            if n == 0 {
                break;
            }
            // SAFETY: the first `n` of the 16 floats from `dst + 16 q` are among `cols`.
            unsafe { _mm512_mask_storeu_ps(dst.add(q * LANES), lane_mask(n), val) };
        }
        if let Some(act) = rest {
            // SAFETY: the `cols` outputs just stored (see above).
            let done = unsafe { std::slice::from_raw_parts_mut(dst, cols) };
            apply_in_place(act, done);
        }
    }

    /// Columns `T` and `T + 1` of 16 tiles `T` columns wide, from their columns 0 and 1
    /// (`x0`, `x1`): the same columns of the next tile, one lane on; the last lane's come
    /// from `tail`, the window's vector past the run (its elements 0 and 1).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn next_tile_columns(tail: __m512, x0: __m512, x1: __m512) -> (__m512, __m512) {
        let tail = _mm512_castps_si512(tail);
        let shift = |rest: __m512i, x: __m512| {
            _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(rest, _mm512_castps_si512(x)))
        };
        (
            shift(tail, x0),
            shift(_mm512_alignr_epi32::<1>(tail, tail), x1),
        )
    }

    /// Lanes `0..count` set.
    fn lane_mask(count: usize) -> u16 {
        if count >= LANES {
            u16::MAX
        } else {
            (1u16 << count) - 1
        }
    }

    /// The transformed input of the block's tiles, point `p` of tile `tl` of channel `ci` at
    /// `V[ci][p][tl]` (one panel per channel), for the tiles `t0..t0 + nt` (local index
    /// `tl`), for every input channel.
    ///
    /// # Safety
    /// AVX-512 F must be available; `x` holds the image's `[c][h][w]` input and `v` at least
    /// `c` panels.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input_transform(
        x: &[f32],
        map: &Map,
        t0: usize,
        nt: usize,
        v: &mut [f32],
    ) {
        let &Map {
            h, w, c, pt, pl, ..
        } = map;
        assert!(x.len() >= c * h * w && v.len() >= c * PANEL);
        // Column `j` of 16 tiles: elements `j, j + 4, ..., j + 60` of the run's window,
        // lanes 0-7 from its first two vectors, 8-15 from the next two.
        let pick: [__m512i; 4] = std::array::from_fn(|j| {
            let idx: [i32; 16] = std::array::from_fn(|l| (j + 4 * (l % 8)) as i32);
            // SAFETY: 16 i32s read from the array.
            unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
        });
        let zero = _mm512_setzero_ps();
        let vp = v.as_mut_ptr();
        let mut list = [Run::default(); BLOCK_TILES];
        let nr = runs(map, t0, nt, &mut list);
        // Per run: its window's first column and, per vector of the window (columns
        // `col0..col0 + 80` of a row), the lanes inside the map.
        let mut windows = [(0isize, [0u16; 5]); BLOCK_TILES];
        for (run, win) in list[..nr].iter().zip(&mut windows) {
            *win = window(TILE, run.tx, pl, w);
        }
        for ci in 0..c {
            let plane = x[ci * h * w..].as_ptr();
            for (run, &(col0, masks)) in list[..nr].iter().zip(&windows) {
                let mut e = [[zero; 6]; 6];
                for (i, ei) in e.iter_mut().enumerate() {
                    let y = (TILE * run.ty + i) as isize - pt as isize;
                    if y < 0 || y as usize >= h {
                        continue;
                    }
                    let row = plane.wrapping_add(y as usize * w);
                    if ci + 1 < c {
                        // The next channel's same window: its planes are far apart, which
                        // the hardware prefetchers do not follow.
                        let next = row.wrapping_add(h * w).wrapping_offset(col0);
                        for q in 0..5 {
                            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(q * LANES).cast());
                        }
                    }
                    // SAFETY: masked loads touch only the lanes whose columns are inside
                    // this row (the masks above); the others are zero.
                    let r: [__m512; 5] = std::array::from_fn(|q| unsafe {
                        _mm512_maskz_loadu_ps(
                            masks[q],
                            row.wrapping_offset(col0 + (q * LANES) as isize),
                        )
                    });
                    let col = |j: usize| {
                        let lo = _mm512_permutex2var_ps(r[0], pick[j], r[1]);
                        let hi = _mm512_permutex2var_ps(r[2], pick[j], r[3]);
                        _mm512_shuffle_f32x4::<0b01_00_01_00>(lo, hi)
                    };
                    let (x0, x1) = (col(0), col(1));
                    // Columns 4 and 5 of tile `t` are columns 0 and 1 of tile `t + 1`.
                    let (x4, x5) = next_tile_columns(r[4], x0, x1);
                    *ei = bt([x0, x1, col(2), col(3), x4, x5]);
                }
                let store = lane_mask(run.count);
                let columns: [[__m512; 6]; 6] =
                    std::array::from_fn(|nu| std::array::from_fn(|i| e[i][nu]));
                for (nu, column) in columns.iter().enumerate() {
                    let d = bt(*column);
                    for (xi, &val) in d.iter().enumerate() {
                        let at = ci * PANEL + (xi * 6 + nu) * BLOCK_TILES + run.tl;
                        // SAFETY: `tl + count <= 48`, inside channel `ci`'s panel.
                        unsafe { _mm512_mask_storeu_ps(vp.add(at), store, val) };
                    }
                }
            }
        }
    }

    /// The outputs of the block's tiles at channels `m0..m0 + mm` from `M[co][p][tl]`:
    /// `Aᵀ M A`, plus the bias, then the clamp and the other activation.
    ///
    /// # Safety
    /// AVX-512 F must be available; `mo` holds `m` panels; `y` is valid for
    /// writes of the image's `m` output planes, of which the block's tiles are its own.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn output_transform(
        mo: &[f32],
        map: &Map,
        t0: usize,
        nt: usize,
        (m0, mm): (usize, usize),
        bias: Option<&[f32]>,
        clamp: Option<(f32, f32)>,
        rest: Option<UnaryOp>,
        y: *mut f32,
    ) {
        let &Map { m, oh, ow, .. } = map;
        assert!(mo.len() >= m * PANEL);
        // Interleaves 16 tiles' four columns into 64 consecutive outputs.
        // SAFETY: 16 i32s read from the array.
        let idx = |v: [i32; 16]| unsafe { _mm512_loadu_si512(v.as_ptr().cast()) };
        let i1lo = idx([0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23]);
        let i1hi = idx([8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31]);
        let i2a = idx([0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23]);
        let i2b = idx([8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31]);
        let bounds = clamp.map(|(lo, hi)| (_mm512_set1_ps(lo), _mm512_set1_ps(hi)));
        let mp = mo.as_ptr();
        let mut list = [Run::default(); BLOCK_TILES];
        let nr = runs(map, t0, nt, &mut list);
        for co in m0..m0 + mm {
            let b = _mm512_set1_ps(bias.map_or(0.0, |b| b[co]));
            let plane = y.wrapping_add(co * oh * ow);
            for &Run { tl, ty, tx, count } in &list[..nr] {
                let cols = (TILE * count).min(ow - TILE * tx);
                let rows = TILE.min(oh - TILE * ty);
                // SAFETY: point `p` of channel `co`'s panel at tiles `tl..tl + 16`, inside
                // `mo` (48-wide rows; lanes past `count` are read and dropped).
                let load = |p: usize| unsafe {
                    _mm512_loadu_ps(mp.add(co * PANEL + p * BLOCK_TILES + tl).cast())
                };
                let columns: [[__m512; 4]; 6] =
                    std::array::from_fn(|nu| at(std::array::from_fn(|xi| load(xi * 6 + nu))));
                let s: [[__m512; 6]; 4] =
                    std::array::from_fn(|i| std::array::from_fn(|nu| columns[nu][i]));
                for (i, si) in s.iter().enumerate().take(rows) {
                    let r = at(*si).map(|v| finish(v, b, bounds));
                    let l01 = _mm512_permutex2var_ps(r[0], i1lo, r[1]);
                    let h01 = _mm512_permutex2var_ps(r[0], i1hi, r[1]);
                    let l23 = _mm512_permutex2var_ps(r[2], i1lo, r[3]);
                    let h23 = _mm512_permutex2var_ps(r[2], i1hi, r[3]);
                    let outv = [
                        _mm512_permutex2var_ps(l01, i2a, l23),
                        _mm512_permutex2var_ps(l01, i2b, l23),
                        _mm512_permutex2var_ps(h01, i2a, h23),
                        _mm512_permutex2var_ps(h01, i2b, h23),
                    ];
                    let dst = plane.wrapping_add((TILE * ty + i) * ow + TILE * tx);
                    // SAFETY: columns `4 tx..4 tx + cols` of output row `4 ty + i < oh`, the
                    // run's and inside the row.
                    unsafe { store_row(dst, &outv, cols, rest) };
                }
            }
        }
    }

    /// `Bᵀ x` of F(2x2, 3x3) over one axis for 16 tiles.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn bt2(x: [__m512; 4]) -> [__m512; 4] {
        [
            _mm512_sub_ps(x[0], x[2]),
            _mm512_add_ps(x[1], x[2]),
            _mm512_sub_ps(x[2], x[1]),
            _mm512_sub_ps(x[1], x[3]),
        ]
    }

    /// `Aᵀ x` of F(2x2, 3x3) over one axis for 16 tiles: 4 points in, 2 outputs.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn at2(x: [__m512; 4]) -> [__m512; 2] {
        [
            _mm512_add_ps(_mm512_add_ps(x[0], x[1]), x[2]),
            _mm512_sub_ps(_mm512_sub_ps(x[1], x[2]), x[3]),
        ]
    }

    /// [`input_transform`] for F(2x2, 3x3): 4x4 input tiles two columns apart, 16 points.
    ///
    /// # Safety
    /// As [`input_transform`], with `v` holding `c` panels of 16 points.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input_transform_23(
        x: &[f32],
        map: &Map,
        t0: usize,
        nt: usize,
        v: &mut [f32],
    ) {
        const T: usize = 2;
        const PANEL23: usize = 16 * BLOCK_TILES;
        let &Map {
            h, w, c, pt, pl, ..
        } = map;
        assert!(x.len() >= c * h * w && v.len() >= c * PANEL23);
        // Columns 0 and 1 of 16 tiles: elements `j, j + 2, ..., j + 30` of the window.
        let pick: [__m512i; 2] = std::array::from_fn(|j| {
            let idx: [i32; 16] = std::array::from_fn(|l| (j + T * l) as i32);
            // SAFETY: 16 i32s read from the array.
            unsafe { _mm512_loadu_si512(idx.as_ptr().cast()) }
        });
        let zero = _mm512_setzero_ps();
        let vp = v.as_mut_ptr();
        let mut list = [Run::default(); BLOCK_TILES];
        let nr = runs(map, t0, nt, &mut list);
        let mut windows = [(0isize, [0u16; 3]); BLOCK_TILES];
        for (run, win) in list[..nr].iter().zip(&mut windows) {
            *win = window(T, run.tx, pl, w);
        }
        for ci in 0..c {
            let plane = x[ci * h * w..].as_ptr();
            for (run, &(col0, masks)) in list[..nr].iter().zip(&windows) {
                let mut e = [[zero; 4]; 4];
                for (i, ei) in e.iter_mut().enumerate() {
                    let y = (T * run.ty + i) as isize - pt as isize;
                    if y < 0 || y as usize >= h {
                        continue;
                    }
                    let row = plane.wrapping_add(y as usize * w);
                    if ci + 1 < c {
                        let next = row.wrapping_add(h * w).wrapping_offset(col0);
                        for q in 0..3 {
                            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(q * LANES).cast());
                        }
                    }
                    // SAFETY: masked loads touch only the lanes whose columns are inside
                    // this row (the masks above); the others are zero.
                    let r: [__m512; 3] = std::array::from_fn(|q| unsafe {
                        _mm512_maskz_loadu_ps(
                            masks[q],
                            row.wrapping_offset(col0 + (q * LANES) as isize),
                        )
                    });
                    let x0 = _mm512_permutex2var_ps(r[0], pick[0], r[1]);
                    let x1 = _mm512_permutex2var_ps(r[0], pick[1], r[1]);
                    // Columns 2 and 3 of tile `t` are columns 0 and 1 of tile `t + 1`.
                    let (x2, x3) = next_tile_columns(r[2], x0, x1);
                    *ei = bt2([x0, x1, x2, x3]);
                }
                let store = lane_mask(run.count);
                let columns: [[__m512; 4]; 4] =
                    std::array::from_fn(|nu| std::array::from_fn(|i| e[i][nu]));
                for (nu, column) in columns.iter().enumerate() {
                    let d = bt2(*column);
                    for (xi, &val) in d.iter().enumerate() {
                        let at = ci * PANEL23 + (xi * 4 + nu) * BLOCK_TILES + run.tl;
                        // SAFETY: `tl + count <= 48`, inside channel `ci`'s panel.
                        unsafe { _mm512_mask_storeu_ps(vp.add(at), store, val) };
                    }
                }
            }
        }
    }

    /// [`output_transform`] for F(2x2, 3x3).
    ///
    /// # Safety
    /// As [`output_transform`], with `mo` holding `m` panels of 16 points.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn output_transform_23(
        mo: &[f32],
        map: &Map,
        t0: usize,
        nt: usize,
        (m0, mm): (usize, usize),
        bias: Option<&[f32]>,
        clamp: Option<(f32, f32)>,
        rest: Option<UnaryOp>,
        y: *mut f32,
    ) {
        const T: usize = 2;
        const PANEL23: usize = 16 * BLOCK_TILES;
        let &Map { m, oh, ow, .. } = map;
        assert!(mo.len() >= m * PANEL23);
        // Interleaves 16 tiles' two columns into 32 consecutive outputs.
        // SAFETY: 16 i32s read from the array.
        let idx = |v: [i32; 16]| unsafe { _mm512_loadu_si512(v.as_ptr().cast()) };
        let ilo = idx([0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23]);
        let ihi = idx([8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31]);
        let bounds = clamp.map(|(lo, hi)| (_mm512_set1_ps(lo), _mm512_set1_ps(hi)));
        let mp = mo.as_ptr();
        let mut list = [Run::default(); BLOCK_TILES];
        let nr = runs(map, t0, nt, &mut list);
        for co in m0..m0 + mm {
            let b = _mm512_set1_ps(bias.map_or(0.0, |b| b[co]));
            let plane = y.wrapping_add(co * oh * ow);
            for &Run { tl, ty, tx, count } in &list[..nr] {
                let cols = (T * count).min(ow - T * tx);
                let rows = T.min(oh - T * ty);
                // SAFETY: point `p` of channel `co`'s panel at tiles `tl..tl + 16`, inside
                // `mo` (48-wide rows; lanes past `count` are read and dropped).
                let load = |p: usize| unsafe {
                    _mm512_loadu_ps(mp.add(co * PANEL23 + p * BLOCK_TILES + tl).cast())
                };
                let columns: [[__m512; 2]; 4] =
                    std::array::from_fn(|nu| at2(std::array::from_fn(|xi| load(xi * 4 + nu))));
                let s: [[__m512; 4]; 2] =
                    std::array::from_fn(|i| std::array::from_fn(|nu| columns[nu][i]));
                for (i, si) in s.iter().enumerate().take(rows) {
                    let r = at2(*si).map(|v| finish(v, b, bounds));
                    let outv = [
                        _mm512_permutex2var_ps(r[0], ilo, r[1]),
                        _mm512_permutex2var_ps(r[0], ihi, r[1]),
                    ];
                    let dst = plane.wrapping_add((T * ty + i) * ow + T * tx);
                    // SAFETY: columns `2 tx..2 tx + cols` of output row `2 ty + i < oh`, the
                    // run's and inside the row.
                    unsafe { store_row(dst, &outv, cols, rest) };
                }
            }
        }
    }
}
