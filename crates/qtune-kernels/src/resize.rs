//! ONNX `Resize` (opset 11-22) for 4-D NCHW f32, resizing H and W only (scales for N and C
//! must be 1; the caller checks), `mode` = `nearest` or `linear` (bilinear),
//! `coordinate_transformation_mode` in `half_pixel`, `asymmetric`, `align_corners`,
//! `pytorch_half_pixel`, and for nearest the four `nearest_mode`s. No antialiasing, no
//! `exclude_outside`, no `tf_crop_and_resize`.
//!
//! Coordinates are computed in f32 as ONNX Runtime does. For linear mode the source
//! coordinate is clamped to `[0, in - 1]` (ONNX Runtime); for nearest the rounded index is
//! clamped to `[0, in - 1]`.

use crate::Parallelism;
use crate::util::for_each_chunk_mut;

/// ONNX `coordinate_transformation_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CoordinateTransformMode {
    /// `(x + 0.5) / scale - 0.5`.
    #[default]
    HalfPixel,
    /// `x / scale`.
    Asymmetric,
    /// `x * (in - 1) / (out - 1)` (0 when `out == 1`).
    AlignCorners,
    /// Like half_pixel, but 0 when `out == 1`.
    PytorchHalfPixel,
}

/// ONNX `nearest_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum NearestMode {
    /// Round half down.
    #[default]
    RoundPreferFloor,
    /// Round half up.
    RoundPreferCeil,
    /// Round down.
    Floor,
    /// Round up.
    Ceil,
}

/// Scales `[out_h / in_h, out_w / in_w]`, what ONNX uses when `Resize` is given `sizes`.
pub fn resize_scales(in_dims: [usize; 4], out_hw: [usize; 2]) -> [f32; 2] {
    [
        out_hw[0] as f32 / in_dims[2] as f32,
        out_hw[1] as f32 / in_dims[3] as f32,
    ]
}

/// Source coordinate of output index `x` along an axis.
pub(crate) fn source_coord(
    mode: CoordinateTransformMode,
    x: usize,
    scale: f32,
    in_len: usize,
    out_len: usize,
) -> f32 {
    let xf = x as f32;
    match mode {
        CoordinateTransformMode::HalfPixel => (xf + 0.5) / scale - 0.5,
        CoordinateTransformMode::Asymmetric => xf / scale,
        CoordinateTransformMode::AlignCorners => {
            if out_len == 1 {
                0.0
            } else {
                xf * (in_len as f32 - 1.0) / (out_len as f32 - 1.0)
            }
        }
        CoordinateTransformMode::PytorchHalfPixel => {
            if out_len > 1 {
                (xf + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
    }
}

pub(crate) fn nearest_index(c: f32, mode: NearestMode, in_len: usize) -> usize {
    let i = match mode {
        NearestMode::Floor => c.floor(),
        NearestMode::Ceil => c.ceil(),
        NearestMode::RoundPreferFloor => {
            if c.fract().abs() == 0.5 {
                c.floor()
            } else {
                c.round()
            }
        }
        NearestMode::RoundPreferCeil => {
            if c.fract().abs() == 0.5 {
                c.ceil()
            } else {
                c.round()
            }
        }
    };
    if i.is_nan() || i < 0.0 {
        0
    } else {
        (i as usize).min(in_len.saturating_sub(1))
    }
}

fn check(input: &[f32], in_dims: [usize; 4], out_hw: [usize; 2], out: &[f32]) {
    assert_eq!(
        input.len(),
        in_dims.iter().product::<usize>(),
        "resize: input length"
    );
    assert_eq!(
        out.len(),
        in_dims[0] * in_dims[1] * out_hw[0] * out_hw[1],
        "resize: output length"
    );
}

/// Nearest-neighbour resize of `[n, c, h, w]` to `[n, c, out_hw[0], out_hw[1]]`. `scales`
/// are the ONNX `scales` for H and W (use [`resize_scales`] when `sizes` was given).
///
/// # Panics
/// Shape contract: panics if a slice length does not match its dims.
#[allow(clippy::too_many_arguments)]
pub fn resize_nearest(
    input: &[f32],
    in_dims: [usize; 4],
    out_hw: [usize; 2],
    scales: [f32; 2],
    mode: CoordinateTransformMode,
    nearest: NearestMode,
    out: &mut [f32],
    par: Parallelism,
) {
    check(input, in_dims, out_hw, out);
    let [_, _, h, w] = in_dims;
    let [oh, ow] = out_hw;
    if out.is_empty() {
        return;
    }
    let ys: Vec<usize> = (0..oh)
        .map(|y| nearest_index(source_coord(mode, y, scales[0], h, oh), nearest, h))
        .collect();
    let xs: Vec<usize> = (0..ow)
        .map(|x| nearest_index(source_coord(mode, x, scales[1], w, ow), nearest, w))
        .collect();
    for_each_chunk_mut(out, oh * ow, par, |pi, o| {
        let plane = &input[pi * h * w..(pi + 1) * h * w];
        for (orow, &y) in o.chunks_exact_mut(ow).zip(&ys) {
            let irow = &plane[y * w..(y + 1) * w];
            for (v, &x) in orow.iter_mut().zip(&xs) {
                *v = irow[x];
            }
        }
    });
}

/// Per output index: the two source indices and their weights.
pub(crate) fn linear_taps(
    mode: CoordinateTransformMode,
    scale: f32,
    in_len: usize,
    out_len: usize,
) -> Vec<(usize, usize, f32, f32)> {
    (0..out_len)
        .map(|x| {
            let c = source_coord(mode, x, scale, in_len, out_len);
            let c = c.max(0.0).min(in_len as f32 - 1.0);
            let i0 = (c as usize).min(in_len - 1);
            let i1 = (i0 + 1).min(in_len - 1);
            let d1 = c - i0 as f32;
            (i0, i1, 1.0 - d1, d1)
        })
        .collect()
}

/// Bilinear resize (ONNX `mode = "linear"`) of `[n, c, h, w]` to
/// `[n, c, out_hw[0], out_hw[1]]`.
///
/// # Panics
/// Shape contract: panics if a slice length does not match its dims.
#[allow(clippy::too_many_arguments)]
pub fn resize_linear(
    input: &[f32],
    in_dims: [usize; 4],
    out_hw: [usize; 2],
    scales: [f32; 2],
    mode: CoordinateTransformMode,
    out: &mut [f32],
    par: Parallelism,
) {
    check(input, in_dims, out_hw, out);
    let [_, _, h, w] = in_dims;
    let [oh, ow] = out_hw;
    if out.is_empty() {
        return;
    }
    let ys = linear_taps(mode, scales[0], h, oh);
    let xs = linear_taps(mode, scales[1], w, ow);
    for_each_chunk_mut(out, oh * ow, par, |pi, o| {
        let plane = &input[pi * h * w..(pi + 1) * h * w];
        for (orow, &(y0, y1, wy0, wy1)) in o.chunks_exact_mut(ow).zip(&ys) {
            let r0 = &plane[y0 * w..(y0 + 1) * w];
            let r1 = &plane[y1 * w..(y1 + 1) * w];
            for (v, &(x0, x1, wx0, wx1)) in orow.iter_mut().zip(&xs) {
                *v = r0[x0] * wx0 * wy0
                    + r0[x1] * wx1 * wy0
                    + r1[x0] * wx0 * wy1
                    + r1[x1] * wx1 * wy1;
            }
        }
    });
}
