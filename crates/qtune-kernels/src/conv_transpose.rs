//! 2-D transposed convolution, ONNX `ConvTranspose` semantics (opset 1-22) for NCHW f32:
//! weight `[C, M/group, kh, kw]`, explicit pads `[top, left, bottom, right]`, strides,
//! dilations, groups and `output_padding`. The caller resolves `auto_pad` and
//! `output_shape` into pads (ONNX spec formula) before calling.
//!
//! Output extent per axis: `stride * (in - 1) + output_padding + (k - 1) * dilation + 1
//! - pad_begin - pad_end`.
//!
//! Strategy: GEMM `cols[(oc, ky, kx), pixel] = W^T * X` on fixed blocks of output channels,
//! then col2im scatter-add into the output (initialised with the bias). Tiles are
//! `(image, group, channel block)`, so results are bit-identical for any thread count.

use crate::Parallelism;
use crate::gemm_kernel::{MatRef, gemm_tile};
use crate::util::{SendPtr, for_each_tile};
use std::cell::RefCell;

/// Output channels per tile.
const TILE_CHANNELS: usize = 16;

/// Attributes of ONNX `ConvTranspose` with `auto_pad` / `output_shape` already resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConvTranspose2dParams {
    /// `[stride_h, stride_w]`, each >= 1.
    pub strides: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// `[dilation_h, dilation_w]`, each >= 1.
    pub dilations: [usize; 2],
    /// Number of groups; divides the input channels and the output channels.
    pub group: usize,
    /// Extra rows / columns added at the bottom / right of the output.
    pub output_padding: [usize; 2],
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        Self {
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            group: 1,
            output_padding: [0, 0],
        }
    }
}

impl ConvTranspose2dParams {
    /// Builds parameters from every field (the struct is `#[non_exhaustive]`).
    pub fn new(
        strides: [usize; 2],
        pads: [usize; 4],
        dilations: [usize; 2],
        group: usize,
        output_padding: [usize; 2],
    ) -> Self {
        Self {
            strides,
            pads,
            dilations,
            group,
            output_padding,
        }
    }
}

/// Output dims `[n, m, oh, ow]` of [`conv_transpose2d`] for input `[n, c, h, w]` and
/// weight `[c, m/group, kh, kw]`. An axis whose pads exceed the full extent gives 0.
pub fn conv_transpose2d_out_dims(
    in_dims: [usize; 4],
    w_dims: [usize; 4],
    p: &ConvTranspose2dParams,
) -> [usize; 4] {
    let len = |i: usize, a: usize| {
        let full = p.strides[a] * in_dims[2 + a].saturating_sub(1)
            + p.output_padding[a]
            + (w_dims[2 + a].max(1) - 1) * p.dilations[a]
            + 1;
        full.saturating_sub(p.pads[i] + p.pads[i + 2])
    };
    [in_dims[0], w_dims[1] * p.group, len(0, 0), len(1, 1)]
}

thread_local! {
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Transposed 2-D convolution (ONNX `ConvTranspose`): input `[n, c, h, w]`, weight
/// `[c, m/group, kh, kw]`, optional bias `[m]`, output `[n, m, oh, ow]` allocated by the
/// caller (see [`conv_transpose2d_out_dims`]).
///
/// # Panics
/// Shape contract: panics if `group` does not divide `c`, if a stride or dilation is 0, or if
/// a slice length does not match its dims.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d(
    input: &[f32],
    in_dims: [usize; 4],
    weight: &[f32],
    w_dims: [usize; 4],
    bias: Option<&[f32]>,
    p: &ConvTranspose2dParams,
    out: &mut [f32],
    par: Parallelism,
) {
    let [n, c, h, w] = in_dims;
    let [wc, m_g, kh, kw] = w_dims;
    let g = p.group;
    assert!(
        g >= 1 && c % g == 0,
        "conv_transpose2d: group {g} must divide C={c}"
    );
    assert_eq!(wc, c, "conv_transpose2d: weight dim 0 must be C");
    assert!(
        p.strides.iter().chain(&p.dilations).all(|&s| s >= 1),
        "conv_transpose2d: zero stride or dilation"
    );
    let od = conv_transpose2d_out_dims(in_dims, w_dims, p);
    let (m, oh, ow) = (od[1], od[2], od[3]);
    assert_eq!(input.len(), n * c * h * w, "conv_transpose2d: input length");
    assert_eq!(
        weight.len(),
        c * m_g * kh * kw,
        "conv_transpose2d: weight length"
    );
    assert_eq!(
        out.len(),
        n * m * oh * ow,
        "conv_transpose2d: output length"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), m, "conv_transpose2d: bias length");
    }
    if out.is_empty() {
        return;
    }
    let c_g = c / g;
    let (hw, ohw, kk) = (h * w, oh * ow, kh * kw);
    let tc = m_g.div_ceil(TILE_CHANNELS);
    let par = crate::util::par_for_work(par, 2 * n * c * hw * m_g * kk);
    let outp = SendPtr(out.as_mut_ptr());
    for_each_tile(n * g * tc, par, |t| {
        let (ng, bi) = (t / tc, t % tc);
        let (ni, gi) = (ng / g, ng % g);
        let m0 = bi * TILE_CHANNELS;
        let mb = TILE_CHANNELS.min(m_g - m0);
        let oc0 = ni * m + gi * m_g + m0;
        // SAFETY: channels oc0..oc0+mb of image ni belong to this tile only.
        let o = unsafe { std::slice::from_raw_parts_mut(outp.get().add(oc0 * ohw), mb * ohw) };
        for (i, plane) in o.chunks_exact_mut(ohw).enumerate() {
            plane.fill(bias.map_or(0.0, |b| b[gi * m_g + m0 + i]));
        }
        if hw == 0 || c_g == 0 {
            return;
        }
        COLS.with(|cols| {
            let mut cols = cols.borrow_mut();
            let rows = mb * kk;
            if cols.len() < rows * hw {
                cols.resize(rows * hw, 0.0);
            }
            let cols = &mut cols[..rows * hw];
            let lhs = MatRef {
                ptr: weight[gi * c_g * m_g * kk + m0 * kk..].as_ptr(),
                rs: 1,
                cs: (m_g * kk) as isize,
            };
            let rhs = MatRef {
                ptr: input[(ni * c + gi * c_g) * hw..].as_ptr(),
                rs: hw as isize,
                cs: 1,
            };
            // SAFETY: views are inside `weight`, `input` and `cols`.
            unsafe {
                gemm_tile(
                    rows,
                    hw,
                    c_g,
                    cols.as_mut_ptr(),
                    hw as isize,
                    lhs,
                    rhs,
                    false,
                )
            };
            for (i, plane) in o.chunks_exact_mut(ohw).enumerate() {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let src = &cols[((i * kh + ky) * kw + kx) * hw..][..hw];
                        col2im_row(src, plane, h, w, oh, ow, ky, kx, p);
                    }
                }
            }
        });
    });
}

/// Adds one `(ky, kx)` row of the column matrix into an output plane.
#[allow(clippy::too_many_arguments)]
fn col2im_row(
    src: &[f32],
    plane: &mut [f32],
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    ky: usize,
    kx: usize,
    p: &ConvTranspose2dParams,
) {
    let [sh, sw] = p.strides;
    let off_x = (kx * p.dilations[1]) as isize - p.pads[1] as isize;
    // Valid ix: 0 <= ix * sw + off_x < ow.
    let lo = if off_x >= 0 {
        0
    } else {
        ((-off_x) as usize).div_ceil(sw)
    };
    let hi = if (ow as isize) <= off_x {
        0
    } else {
        ((ow as isize - off_x) as usize).div_ceil(sw).min(w)
    };
    if hi <= lo {
        return;
    }
    for iy in 0..h {
        let y = (iy * sh + ky * p.dilations[0]) as isize - p.pads[0] as isize;
        if y < 0 || y >= oh as isize {
            continue;
        }
        let orow = &mut plane[y as usize * ow..(y as usize + 1) * ow];
        let srow = &src[iy * w + lo..iy * w + hi];
        let x0 = (lo * sw) as isize + off_x;
        let x0 = x0 as usize;
        if sw == 1 {
            for (o, s) in orow[x0..x0 + srow.len()].iter_mut().zip(srow) {
                *o += *s;
            }
        } else {
            for (o, s) in orow[x0..].iter_mut().step_by(sw).zip(srow) {
                *o += *s;
            }
        }
    }
}
