//! Depthwise convolution (one input channel per group, any channel
//! multiplier): a direct kernel over the zero-point-centred input plane,
//! padded once per output channel, accumulating `kh * kw` taps in int32 row
//! by row. The reduction is exact integer arithmetic, so it equals the
//! packed product of the other convolutions bit for bit.

use std::cell::RefCell;

use super::{ConvGeometry, Int8In, OutPtr, OutputStage, PackedInt8, write_row};
use crate::Parallelism;
use crate::util::for_each_tile;

thread_local! {
    static PLANE: RefCell<(Vec<i16>, Vec<i32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

pub(super) fn conv(
    x: Int8In,
    x_zp: i32,
    geom: &ConvGeometry,
    w: &PackedInt8,
    stage: &OutputStage,
    out: OutPtr,
    par: Parallelism,
) {
    let [n, c, h, wd] = geom.input;
    let [_, m, oh, ow] = geom.output();
    let [_, _, kh, kw] = geom.weight;
    let [pt, pl, pb, pr] = geom.pads;
    let (hp, wp) = (h + pt + pb, wd + pl + pr);
    let m_g = m / c;
    let taps = w
        .depthwise
        .as_deref()
        .expect("depthwise convolutions are packed as such");
    for_each_tile(n * m, par, |t| {
        let (b, oc) = (t / m, t % m);
        let ic = oc / m_g;
        let wk = &taps[oc * kh * kw..][..kh * kw];
        let corr = stage.bias.map_or(0, |bias| bias[oc]);
        PLANE.with(|s| {
            let (plane, acc) = &mut *s.borrow_mut();
            plane.clear();
            plane.resize(hp * wp, 0);
            acc.clear();
            let base = (b * c + ic) * h * wd;
            for y in 0..h {
                let dst = &mut plane[(y + pt) * wp + pl..][..wd];
                let at = base + y * wd;
                match x {
                    Int8In::U8(v) => centre_u8(&v[at..at + wd], x_zp, dst),
                    Int8In::I8(v) => centre_i8(&v[at..at + wd], x_zp, dst),
                }
            }
            acc.resize(oh * ow, 0);
            let shape = DwShape {
                kh,
                kw,
                strides: geom.strides,
                dilations: geom.dilations,
                ow,
                wp,
            };
            dw_plane(plane, wk, shape, acc);
            let o = (b * m + oc) * oh * ow;
            // SAFETY: tile (b, oc) alone writes this output plane.
            unsafe { write_row(out, stage, oc, corr, acc, o, 1) };
        });
    });
}

/// Geometry of one depthwise channel over its padded plane.
#[derive(Clone, Copy)]
struct DwShape {
    kh: usize,
    kw: usize,
    strides: [usize; 2],
    dilations: [usize; 2],
    ow: usize,
    /// Padded plane width.
    wp: usize,
}

qtune_simd::dispatch! {
    /// `acc[oy][ox] = sum_taps w[ky][kx] * plane[oy sh + ky dh][ox sw + kx dw]`.
    fn dw_plane(plane: &[i16], w: &[i32], s: DwShape, acc: &mut [i32]) {
        let [sh, sw] = s.strides;
        let [dh, dw] = s.dilations;
        for (oy, row) in acc.chunks_exact_mut(s.ow).enumerate() {
            row.fill(0);
            for ky in 0..s.kh {
                let src = &plane[(oy * sh + ky * dh) * s.wp..][..s.wp];
                for kx in 0..s.kw {
                    let wv = w[ky * s.kw + kx];
                    let src = &src[kx * dw..];
                    if sw == 1 {
                        for (a, &x) in row.iter_mut().zip(&src[..s.ow]) {
                            *a = a.wrapping_add(i32::from(x) * wv);
                        }
                    } else {
                        for (a, &x) in row.iter_mut().zip(src.iter().step_by(sw)) {
                            *a = a.wrapping_add(i32::from(x) * wv);
                        }
                    }
                }
            }
        }
    }
}

// Codes minus a zero point of the same type lie in [-255, 255].
#[allow(clippy::cast_possible_truncation)]
mod centre {
    qtune_simd::dispatch! {
        pub(super) fn centre_u8(src: &[u8], zp: i32, dst: &mut [i16]) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = (i32::from(s) - zp) as i16;
            }
        }
    }
    qtune_simd::dispatch! {
        pub(super) fn centre_i8(src: &[i8], zp: i32, dst: &mut [i16]) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = (i32::from(s) - zp) as i16;
            }
        }
    }
}
use centre::{centre_i8, centre_u8};
