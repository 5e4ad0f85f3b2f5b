//! Packing: weights once per model, activations per panel.
//!
//! A weight block holds `MR` output channels for the whole reduction,
//! `[k4][MR][4]` (four consecutive reduction elements of a channel form the
//! 32-bit word `vpdpbusd` broadcasts). An activation panel holds `PANEL`
//! columns (output pixels or matrix rows), `[k4][PANEL][4]`: four
//! consecutive reduction elements of one column are the four bytes one
//! int32 lane sums. Reduction lengths are padded to a multiple of 4 with
//! zero weights.

use super::{ConvGeometry, MR, PANEL};

/// An int8 weight packed for the kernels of this module, with the per-channel
/// weight sums the zero-point correction needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedInt8 {
    /// Output channels (all groups).
    pub(crate) m: usize,
    /// Reduction length per group.
    pub(crate) k: usize,
    pub(crate) k4: usize,
    pub(crate) groups: usize,
    /// Output channels per group.
    pub(crate) m_g: usize,
    pub(crate) m_blocks: usize,
    data: Vec<i8>,
    pub(crate) wsum: Vec<i32>,
    /// Depthwise weights `[m][kh * kw]` widened to i32 (instead of `data`).
    pub(crate) depthwise: Option<Vec<i32>>,
    /// The OIHW dims of a convolution weight.
    conv_dims: Option<[usize; 4]>,
}

/// Layout of a matrix weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatrixLayout {
    /// `[m][k]`: Gemm with `transB`.
    OutputsByReduction,
    /// `[k][m]`: MatMul, Gemm without `transB`.
    ReductionByOutputs,
}

impl PackedInt8 {
    /// Packs an OIHW convolution weight `[m, c / group, kh, kw]`.
    pub fn conv(w: &[i8], dims: [usize; 4], group: usize) -> PackedInt8 {
        let [m, cg, kh, kw] = dims;
        assert!(group >= 1 && m.is_multiple_of(group), "int8 pack: groups");
        let k = cg * kh * kw;
        assert_eq!(w.len(), m * k, "int8 pack: weight length");
        let wsum: Vec<i32> = w
            .chunks(k.max(1))
            .map(|r| r.iter().map(|&v| i32::from(v)).sum())
            .collect();
        if cg == 1 && group > 1 {
            return PackedInt8 {
                m,
                k,
                k4: k.div_ceil(4),
                groups: group,
                m_g: m / group,
                m_blocks: 0,
                data: Vec::new(),
                wsum,
                depthwise: Some(w.iter().map(|&v| i32::from(v)).collect()),
                conv_dims: Some(dims),
            };
        }
        let mut p = Self::blocks(m, k, group, |c, kk| w[c * k + kk]);
        p.wsum = wsum;
        p.conv_dims = Some(dims);
        p
    }

    /// Packs a matrix weight with `m` outputs and reduction length `k`.
    pub fn matrix(w: &[i8], m: usize, k: usize, layout: MatrixLayout) -> PackedInt8 {
        assert_eq!(w.len(), m * k, "int8 pack: weight length");
        let at = |c: usize, kk: usize| match layout {
            MatrixLayout::OutputsByReduction => w[c * k + kk],
            MatrixLayout::ReductionByOutputs => w[kk * m + c],
        };
        let mut p = Self::blocks(m, k, 1, at);
        p.wsum = (0..m)
            .map(|c| (0..k).map(|kk| i32::from(at(c, kk))).sum())
            .collect();
        p
    }

    fn blocks(m: usize, k: usize, groups: usize, at: impl Fn(usize, usize) -> i8) -> PackedInt8 {
        let m_g = m / groups;
        let k4 = k.div_ceil(4);
        let m_blocks = m_g.div_ceil(MR);
        let block = k4 * MR * 4;
        let mut data = vec![0i8; groups * m_blocks * block];
        for g in 0..groups {
            for mb in 0..m_blocks {
                let dst = &mut data[(g * m_blocks + mb) * block..][..block];
                for r in 0..MR.min(m_g - mb * MR) {
                    let c = g * m_g + mb * MR + r;
                    for kk in 0..k {
                        dst[(kk / 4) * MR * 4 + r * 4 + kk % 4] = at(c, kk);
                    }
                }
            }
        }
        PackedInt8 {
            m,
            k,
            k4,
            groups,
            m_g,
            m_blocks,
            data,
            wsum: Vec::new(),
            depthwise: None,
            conv_dims: None,
        }
    }

    /// Output channels.
    pub fn outputs(&self) -> usize {
        self.m
    }

    /// Reduction length (per group).
    pub fn reduction(&self) -> usize {
        self.k
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * (self.wsum.len() + self.depthwise.as_ref().map_or(0, Vec::len))
    }

    pub(crate) fn block(&self, g: usize, mb: usize) -> &[i8] {
        let block = self.k4 * MR * 4;
        &self.data[(g * self.m_blocks + mb) * block..][..block]
    }

    pub(crate) fn matches_conv(&self, geom: &ConvGeometry) -> bool {
        self.conv_dims == Some(geom.weight) && self.groups == geom.group
    }
}

qtune_simd::dispatch! {
/// The im2col panel of columns `p0..p0 + cols` (output pixels of sample
/// `b`, group `g`): `panel[kk][j][t]` is input element `4 kk + t` of the
/// reduction `(ci, ky, kx)` for pixel `p0 + j`, as an unsigned code
/// (`^ flip`); padding reads `pad` (the zero point's code). Compiled per
/// instruction set (AVX-512 / AVX2 / baseline), like the other packing.
pub(crate) fn im2col_panel(
    x: &[u8],
    flip: u8,
    pad: u8,
    geom: &ConvGeometry,
    b: usize,
    g: usize,
    p0: usize,
    cols: usize,
    k4: usize,
    panel: &mut [u8],
) {
    let [_, c, h, w] = geom.input;
    let [_, cg, kh, kw] = geom.weight;
    let [_, _, _, ow] = geom.output();
    let k = cg * kh * kw;
    let pointwise = kh == 1
        && kw == 1
        && geom.strides == [1, 1]
        && geom.pads == [0; 4]
        && geom.output()[2..] == geom.input[2..];
    let mut rows = [[0u8; PANEL]; 4];
    // Reduction row r = (ci, ky, kx), counted up instead of divided out
    // (three divisions per row cost as much as copying it).
    let (mut ci, mut ky, mut kx) = (0usize, 0usize, 0usize);
    let start_pixel = (p0 / ow, p0 % ow);
    for kk in 0..k4 {
        for (t, row) in rows.iter_mut().enumerate() {
            let r = kk * 4 + t;
            if r >= k {
                row[..cols].fill(0);
                continue;
            }
            let plane = &x[(b * c + g * cg + ci) * h * w..][..h * w];
            if pointwise {
                for (d, &s) in row[..cols].iter_mut().zip(&plane[p0..p0 + cols]) {
                    *d = s ^ flip;
                }
            } else {
                fetch_row(plane, flip, pad, geom, ow, ky, kx, start_pixel, &mut row[..cols]);
            }
            kx += 1;
            if kx == kw {
                kx = 0;
                ky += 1;
                if ky == kh {
                    ky = 0;
                    ci += 1;
                }
            }
        }
        let dst = &mut panel[kk * PANEL * 4..][..cols * 4];
        let [r0, r1, r2, r3] = &rows;
        interleave_slices([r0, r1, r2, r3], dst);
    }
}
}

/// `dst[i] = src[i] ^ flip` (`src` as long as `dst`). The rows of small
/// maps are shorter than one AVX-512 vector, where the compiler's loop runs
/// scalar: this copies 16-byte blocks, the last one overlapping the one
/// before it (each byte gets the same value either way).
#[inline(always)]
fn copy_stride1(dst: &mut [u8], src: &[u8], flip: u8) {
    let n = dst.len();
    let src = &src[..n];
    let block = |d: &mut [u8], s: &[u8]| {
        if let (Ok(d), Ok(s)) = (<&mut [u8; 16]>::try_from(d), <&[u8; 16]>::try_from(s)) {
            *d = s.map(|b| b ^ flip);
        }
    };
    if n >= 16 {
        let mut i = 0;
        while i + 16 <= n {
            block(&mut dst[i..i + 16], &src[i..i + 16]);
            i += 16;
        }
        if i < n {
            block(&mut dst[n - 16..], &src[n - 16..]);
        }
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s ^ flip;
        }
    }
}

/// `dst[i] = src[2 i] ^ flip` (`src` holds `2 dst.len() - 1` bytes), in
/// blocks of 16 outputs as [`copy_stride1`].
#[inline(always)]
fn copy_stride2(dst: &mut [u8], src: &[u8], flip: u8) {
    let n = dst.len();
    let block = |d: &mut [u8], s: &[u8]| {
        if let (Ok(d), Ok(s)) = (<&mut [u8; 16]>::try_from(d), <&[u8; 31]>::try_from(s)) {
            *d = std::array::from_fn(|i| s[2 * i] ^ flip);
        }
    };
    if n >= 16 {
        let mut i = 0;
        while i + 16 <= n {
            block(&mut dst[i..i + 16], &src[2 * i..2 * i + 31]);
            i += 16;
        }
        if i < n {
            let j = n - 16;
            block(&mut dst[j..], &src[2 * j..2 * j + 31]);
        }
    } else {
        for (i, d) in dst.iter_mut().enumerate() {
            *d = src[2 * i] ^ flip;
        }
    }
}

/// `s.fill(v)` for the padding at a row's ends, which is 0 to a few bytes
/// wide: a call to `memset` per end cost more than the row's copy on the
/// short rows of small maps (YOLOX's 13 x 13 ... 52 x 52 heads).
#[inline(always)]
fn fill_short(s: &mut [u8], v: u8) {
    match s {
        [] => {}
        [a] => *a = v,
        [a, b] => (*a, *b) = (v, v),
        _ => s.fill(v),
    }
}

/// Input values under kernel tap `(ky, kx)` for output pixels `p0..`,
/// `start_pixel` = `(p0 / ow, p0 % ow)`.
#[inline(always)]
fn fetch_row(
    plane: &[u8],
    flip: u8,
    pad: u8,
    geom: &ConvGeometry,
    ow: usize,
    ky: usize,
    kx: usize,
    start_pixel: (usize, usize),
    row: &mut [u8],
) {
    let [_, _, h, w] = geom.input;
    let [sh, sw] = geom.strides;
    let [dh, dw] = geom.dilations;
    let (pt, pl) = (geom.pads[0], geom.pads[1]);
    let mut j = 0;
    let (mut oy, mut ox) = start_pixel;
    while j < row.len() {
        let n = (ow - ox).min(row.len() - j);
        let seg = &mut row[j..j + n];
        let iy = (oy * sh + ky * dh).wrapping_sub(pt);
        if iy >= h {
            seg.fill(pad);
        } else {
            let src = &plane[iy * w..][..w];
            // Output columns ox + i read input column (ox + i) sw + kx dw - pl;
            // those before `lo` or from `hi` on fall in the padding.
            let x0 = kx * dw;
            let first = ox * sw + x0;
            // (Strides 1 and 2, the common cases, need no division.)
            let steps = |v: usize| match sw {
                1 => v,
                2 => v.div_ceil(2),
                _ => v.div_ceil(sw),
            };
            let lo = steps(pl.saturating_sub(first)).min(n);
            let hi = steps((w + pl).saturating_sub(first)).clamp(lo, n);
            fill_short(&mut seg[..lo], pad);
            fill_short(&mut seg[hi..], pad);
            let start = first + lo * sw - pl;
            // Source and destination cut to the lengths the loop reads, so
            // that it runs without bounds checks, in vectors for stride 1.
            let dst = &mut seg[lo..hi];
            if let Some(last) = dst.len().checked_sub(1) {
                let src = &src[start..=start + last * sw];
                if sw == 1 {
                    copy_stride1(dst, src, flip);
                } else if sw == 2 {
                    copy_stride2(dst, src, flip);
                } else {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = src[i * sw] ^ flip;
                    }
                }
            }
        }
        j += n;
        ox = 0;
        oy += 1;
    }
}

/// The stride-1 convolutions over the padded width: the input padded once
/// per call, `[n, c, hp, wp]` unsigned codes (the padding the zero point's
/// code), makes every im2col row a contiguous run. Reduction element
/// `(ci, ky, kx)` of padded-grid column `q = oy * wp + ox` is
/// `padded[ci][ky * wp + kx + q]`, so a panel row is one slice, and the
/// product runs over `(oh - 1) * wp + ow` columns, of which the `wp - ow`
/// past each output row's end are computed and dropped (their reads stay
/// within the plane).
pub(crate) struct PaddedInput {
    pub(crate) bytes: Vec<u8>,
    /// Padded height and width.
    pub(crate) hp: usize,
    pub(crate) wp: usize,
}

impl PaddedInput {
    /// Whether `geom` is a convolution the padded-width path computes:
    /// strides and dilations 1, and not a plain pointwise one (whose
    /// im2col rows are already contiguous).
    pub(crate) fn applies(geom: &ConvGeometry) -> bool {
        let [_, _, kh, kw] = geom.weight;
        geom.strides == [1, 1]
            && geom.dilations == [1, 1]
            && !(kh == 1 && kw == 1 && geom.pads == [0; 4])
    }

    /// `x` (`[n, c, h, w]` codes, `^ flip` makes them unsigned) padded by
    /// `geom.pads` with `pad`.
    pub(crate) fn new(x: &[u8], flip: u8, pad: u8, geom: &ConvGeometry) -> PaddedInput {
        let [n, c, h, w] = geom.input;
        let [pt, pl, pb, pr] = geom.pads;
        let (hp, wp) = (h + pt + pb, w + pl + pr);
        let mut bytes = vec![pad; n * c * hp * wp];
        if h * w == 0 {
            // An empty map: all padding.
            return PaddedInput { bytes, hp, wp };
        }
        for (src, dst) in x.chunks_exact(h * w).zip(bytes.chunks_exact_mut(hp * wp)) {
            for (s, d) in src.chunks_exact(w).zip(dst[pt * wp..].chunks_exact_mut(wp)) {
                copy_stride1(&mut d[pl..pl + w], s, flip);
            }
        }
        PaddedInput { bytes, hp, wp }
    }

    /// Columns of the product: the padded-grid positions from the first
    /// output pixel to the last.
    pub(crate) fn columns(&self, geom: &ConvGeometry) -> usize {
        let [_, _, oh, ow] = geom.output();
        (oh - 1) * self.wp + ow
    }
}

/// Zeros for the reduction rows past `k` (the padding to a multiple of 4).
static ZERO_ROW: [u8; PANEL] = [0; PANEL];

/// The panel of padded-grid columns `q0..q0 + cols` of sample `b`, group
/// `g` ([`PaddedInput`]): `panel[kk][j][t]` is reduction element
/// `4 kk + t` = `(ci, ky, kx)` of column `q0 + j`.
pub(crate) fn padded_panel(
    p: &PaddedInput,
    geom: &ConvGeometry,
    b: usize,
    g: usize,
    q0: usize,
    cols: usize,
    k4: usize,
    panel: &mut [u8],
) {
    let [_, c, _, _] = geom.input;
    let [_, cg, kh, kw] = geom.weight;
    let k = cg * kh * kw;
    let plane = p.hp * p.wp;
    let base = (b * c + g * cg) * plane + q0;
    let (mut ci, mut ky, mut kx) = (0usize, 0usize, 0usize);
    for kk in 0..k4 {
        let rows: [&[u8]; 4] = std::array::from_fn(|t| {
            if kk * 4 + t >= k {
                return &ZERO_ROW[..cols];
            }
            let row = &p.bytes[base + ci * plane + ky * p.wp + kx..][..cols];
            kx += 1;
            if kx == kw {
                kx = 0;
                ky += 1;
                if ky == kh {
                    ky = 0;
                    ci += 1;
                }
            }
            row
        });
        interleave_slices(rows, &mut panel[kk * PANEL * 4..][..cols * 4]);
    }
}

qtune_simd::dispatch! {
    /// `dst[4 j + t] = rows[t][j]` for the `dst.len() / 4` columns: one
    /// little-endian word per column, from zero-extensions, shifts and ors,
    /// which vectorize (a byte shuffle per column did not).
    fn interleave_slices(rows: [&[u8]; 4], dst: &mut [u8]) {
        let [r0, r1, r2, r3] = rows;
        let (words, _) = dst.as_chunks_mut::<4>();
        let n = words.len();
        let (r0, r1, r2, r3) = (&r0[..n], &r1[..n], &r2[..n], &r3[..n]);
        for (((d, &a), &b), (&c, &e)) in words.iter_mut().zip(r0).zip(r1).zip(r2.iter().zip(r3)) {
            let v = u32::from(a) | u32::from(b) << 8 | u32::from(c) << 16 | u32::from(e) << 24;
            *d = v.to_le_bytes();
        }
    }
}

/// The panel of matrix rows `r0..r0 + cols` of `x` (`[rows, k]`):
/// `panel[kk][j][t]` is `x[r0 + j][4 kk + t] ^ flip` (0 past `k`).
pub(crate) fn rows_panel(
    x: &[u8],
    flip: u8,
    k: usize,
    r0: usize,
    cols: usize,
    k4: usize,
    panel: &mut [u8],
) {
    for j in 0..cols {
        let row = &x[(r0 + j) * k..][..k];
        for kk in 0..k4 {
            let d = &mut panel[kk * PANEL * 4 + j * 4..][..4];
            for (t, v) in d.iter_mut().enumerate() {
                *v = row.get(kk * 4 + t).map_or(0, |&b| b ^ flip);
            }
        }
    }
}
