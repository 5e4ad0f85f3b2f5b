//! Depthwise convolution (one input channel per group, any channel
//! multiplier): a direct kernel over the zero-point-centred input plane.
//!
//! The padded plane is split into `s_h x s_w` phase planes (phase `(py,
//! px)` holds the padded pixels `(s_h yy + py, s_w xx + px)`), so that every
//! tap reads its phase plane at unit stride: output `(oy, ox)` under tap
//! `(ky, kx)` reads phase `(ky dh % s_h, kx dw % s_w)` at `(oy + ky dh /
//! s_h, ox + kx dw / s_w)`. Each tap is then one contiguous multiply-add
//! over the whole output plane, laid out with the phase plane's row width
//! (the extra columns are computed and dropped), which vectorizes without
//! per-row tails. The reduction is exact integer arithmetic, so it equals
//! the packed product of the other convolutions bit for bit.

use std::cell::RefCell;

use super::{ConvGeometry, Int8In, OutPtr, OutputStage, PackedInt8, write_row_by};
use crate::Parallelism;
use crate::util::for_each_tile;

#[derive(Default)]
struct Scratch {
    /// The padded, centred plane.
    plane: Vec<i16>,
    /// The phase planes, one after the other.
    phases: Vec<i16>,
    /// Accumulators, `[oh][phase width]`.
    acc: Vec<i32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
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
    let [n, c, _, _] = geom.input;
    let [_, m, _, _] = geom.output();
    let [_, _, kh, kw] = geom.weight;
    let m_g = m / c;
    let taps = w
        .depthwise
        .as_deref()
        .expect("depthwise convolutions are packed as such");
    for_each_tile(n * m, par, |t| {
        let (b, oc) = (t / m, t % m);
        let job = Channel {
            x,
            x_zp,
            geom,
            stage,
            out,
            b,
            oc,
            ic: oc / m_g,
            taps: &taps[oc * kh * kw..][..kh * kw],
        };
        SCRATCH.with(|s| channel(&job, &mut s.borrow_mut()));
    });
}

/// One output channel of one sample.
struct Channel<'a> {
    x: Int8In<'a>,
    x_zp: i32,
    geom: &'a ConvGeometry,
    stage: &'a OutputStage<'a>,
    out: OutPtr,
    b: usize,
    oc: usize,
    ic: usize,
    /// The channel's `kh * kw` weights.
    taps: &'a [i32],
}

qtune_simd::dispatch! {
    /// Computes and writes one output channel: centring, phase planes, taps
    /// and the output stage in one call compiled per feature level (the
    /// maps of late layers are 7x7, where a dispatched call per row or tap
    /// cost more than its work).
    fn channel(j: &Channel<'_>, s: &mut Scratch) {
        let geom = j.geom;
        let [_, c, h, wd] = geom.input;
        let [_, m, oh, ow] = geom.output();
        let [_, _, kh, kw] = geom.weight;
        let [pt, pl, pb, pr] = geom.pads;
        let [sh, sw] = geom.strides;
        let [dh, dw] = geom.dilations;
        let (hp, wp) = (h + pt + pb, wd + pl + pr);
        // Phase planes: `ph` rows of `pw`, with room for the farthest tap read
        // from the last accumulator row (`oh - 1 + (kh - 1) dh / sh`, columns
        // up to `pw - 1 + (kw - 1) dw / sw`, so one more row).
        let pw = wp.div_ceil(sw);
        let ph = (oh + (kh - 1) * dh / sh + 2).max(hp.div_ceil(sh));
        let unit = sh == 1 && sw == 1;
        // With unit strides the padded plane is the only phase.
        let (plane_rows, plane_cols) = if unit { (ph, pw) } else { (hp, wp) };
        s.plane.clear();
        s.plane.resize(plane_rows * plane_cols, 0);
        let base = (j.b * c + j.ic) * h * wd;
        for y in 0..h {
            let dst = &mut s.plane[(y + pt) * plane_cols + pl..][..wd];
            let at = base + y * wd;
            match j.x {
                Int8In::U8(v) => centre(&v[at..at + wd], j.x_zp, dst),
                Int8In::I8(v) => centre(&v[at..at + wd], j.x_zp, dst),
            }
        }
        let phases: &[i16] = if unit {
            &s.plane
        } else {
            s.phases.clear();
            s.phases.resize(sh * sw * ph * pw, 0);
            for py in 0..sh {
                for px in 0..sw {
                    let dst = &mut s.phases[(py * sw + px) * ph * pw..][..ph * pw];
                    for (yy, y) in (py..hp).step_by(sh).enumerate() {
                        let src = &s.plane[y * wp..][..wp];
                        let row = &mut dst[yy * pw..][..pw];
                        if sw == 2 {
                            // Deinterleaving pairs vectorizes; a general stride does not.
                            for (d, p) in row.iter_mut().zip(src[px..].chunks_exact(2)) {
                                *d = p[0];
                            }
                            if (wp - px) % 2 == 1 {
                                row[(wp - px) / 2] = src[wp - 1];
                            }
                        } else {
                            for (d, &v) in row.iter_mut().zip(src.iter().skip(px).step_by(sw)) {
                                *d = v;
                            }
                        }
                    }
                }
            }
            &s.phases
        };
        s.acc.clear();
        s.acc.resize(oh * pw, 0);
        for ky in 0..kh {
            for kx in 0..kw {
                let (py, yy) = ((ky * dh) % sh, (ky * dh) / sh);
                let (px, xx) = ((kx * dw) % sw, (kx * dw) / sw);
                let phase = &phases[(py * sw + px) * ph * pw..][..ph * pw];
                let src = &phase[yy * pw + xx..][..oh * pw];
                let w = j.taps[ky * kw + kx];
                // acc += w * src
                for (a, &x) in s.acc.iter_mut().zip(src) {
                    *a = a.wrapping_add(i32::from(x) * w);
                }
            }
        }
        let corr = j.stage.bias.map_or(0, |bias| bias[j.oc]);
        for oy in 0..oh {
            let o = ((j.b * m + j.oc) * oh + oy) * ow;
            // SAFETY: tile (b, oc) alone writes this output plane.
            unsafe {
                write_row_by::<false>(j.out, j.stage, j.oc, corr, &s.acc[oy * pw..][..ow], o, 1);
            }
        }
    }
}

/// Codes minus a zero point of the same type: `dst[i] = src[i] - zp`, in
/// [-255, 255].
#[inline(always)]
fn centre<T: Copy + Into<i32>>(src: &[T], zp: i32, dst: &mut [i16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        #[allow(clippy::cast_possible_truncation)]
        let v = (s.into() - zp) as i16;
        *d = v;
    }
}
