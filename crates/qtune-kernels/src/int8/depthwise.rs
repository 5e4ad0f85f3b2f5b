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
            acc.resize(ow, 0);
            let base = (b * c + ic) * h * wd;
            for y in 0..h {
                let dst = &mut plane[(y + pt) * wp + pl..][..wd];
                for (i, d) in dst.iter_mut().enumerate() {
                    // In [-255, 255] for codes and zero points of one byte type.
                    #[allow(clippy::cast_possible_truncation)]
                    {
                        *d = x.centred(base + y * wd + i, x_zp) as i16;
                    }
                }
            }
            let [sh, sw] = geom.strides;
            let [dh, dw] = geom.dilations;
            for oy in 0..oh {
                acc.fill(0);
                for ky in 0..kh {
                    let row = &plane[(oy * sh + ky * dh) * wp..][..wp];
                    for kx in 0..kw {
                        let src = &row[kx * dw..];
                        let wv = wk[ky * kw + kx];
                        if sw == 1 {
                            tap_unit(acc, &src[..ow], wv);
                        } else {
                            tap_strided(acc, src, sw, wv);
                        }
                    }
                }
                let o = ((b * m + oc) * oh + oy) * ow;
                // SAFETY: tile (b, oc) alone writes this output plane.
                unsafe { write_row(out, stage, oc, corr, acc, o, 1) };
            }
        });
    });
}

qtune_simd::dispatch! {
    fn tap_unit(acc: &mut [i32], src: &[i16], w: i32) {
        for (a, &s) in acc.iter_mut().zip(src) {
            *a = a.wrapping_add(i32::from(s) * w);
        }
    }
}

qtune_simd::dispatch! {
    fn tap_strided(acc: &mut [i32], src: &[i16], stride: usize, w: i32) {
        for (a, &s) in acc.iter_mut().zip(src.iter().step_by(stride)) {
            *a = a.wrapping_add(i32::from(s) * w);
        }
    }
}
