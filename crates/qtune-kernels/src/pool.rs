//! 2-D pooling, ONNX `MaxPool` (opset 1-22, without the `Indices` output and
//! `storage_order`), `AveragePool` (opset 1-22), `GlobalAveragePool` and `GlobalMaxPool`
//! for NCHW f32. Pads are explicit `[top, left, bottom, right]` (the caller resolves
//! `auto_pad`).
//!
//! `ceil_mode` follows ONNX Runtime / PyTorch: the last window must start inside the input
//! or the begin padding, otherwise it is dropped. Windows are clipped to the padded input;
//! for `AveragePool` the divisor is the clipped window size when `count_include_pad`
//! (positions added by `ceil_mode` beyond the end padding never count), otherwise the
//! number of input positions in the window. `AveragePool` dilations (opset 19) are
//! supported too.

use crate::Parallelism;
use crate::util::for_each_chunk_mut;

/// Attributes of a 2-D pooling window (ONNX `MaxPool` / `AveragePool`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pool2dParams {
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[stride_h, stride_w]`, each >= 1.
    pub strides: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// `[dilation_h, dilation_w]`, each >= 1.
    pub dilations: [usize; 2],
    /// Round the output extent up instead of down.
    pub ceil_mode: bool,
    /// `AveragePool` only: count padded positions in the divisor.
    pub count_include_pad: bool,
}

impl Pool2dParams {
    /// A `kh x kw` window, stride 1, no padding, no dilation, floor mode.
    pub fn new(kernel: [usize; 2]) -> Self {
        Self {
            kernel,
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
            ceil_mode: false,
            count_include_pad: false,
        }
    }
    /// Sets the strides.
    pub fn strides(mut self, s: [usize; 2]) -> Self {
        self.strides = s;
        self
    }
    /// Sets the pads `[top, left, bottom, right]`.
    pub fn pads(mut self, p: [usize; 4]) -> Self {
        self.pads = p;
        self
    }
    /// Sets the dilations.
    pub fn dilations(mut self, d: [usize; 2]) -> Self {
        self.dilations = d;
        self
    }
    /// Sets `ceil_mode`.
    pub fn ceil_mode(mut self, c: bool) -> Self {
        self.ceil_mode = c;
        self
    }
    /// Sets `count_include_pad`.
    pub fn count_include_pad(mut self, c: bool) -> Self {
        self.count_include_pad = c;
        self
    }
}

pub(crate) fn pool_out_len(
    input: usize,
    pb: usize,
    pe: usize,
    k: usize,
    s: usize,
    d: usize,
    ceil: bool,
) -> usize {
    let span = (k.max(1) - 1) * d + 1;
    let padded = input + pb + pe;
    if padded < span {
        return 0;
    }
    let num = padded - span;
    let mut out = if ceil {
        num.div_ceil(s) + 1
    } else {
        num / s + 1
    };
    if ceil && (out - 1) * s >= input + pb {
        out -= 1;
    }
    out
}

/// Output dims `[n, c, oh, ow]` of a 2-D pooling over input `[n, c, h, w]`.
pub fn pool2d_out_dims(in_dims: [usize; 4], p: &Pool2dParams) -> [usize; 4] {
    let oh = pool_out_len(
        in_dims[2],
        p.pads[0],
        p.pads[2],
        p.kernel[0],
        p.strides[0],
        p.dilations[0],
        p.ceil_mode,
    );
    let ow = pool_out_len(
        in_dims[3],
        p.pads[1],
        p.pads[3],
        p.kernel[1],
        p.strides[1],
        p.dilations[1],
        p.ceil_mode,
    );
    [in_dims[0], in_dims[1], oh, ow]
}

/// Range `[lo, hi)` of output positions whose tap at offset `off` (`o * s + off`) lands in
/// `[0, len)`, clipped to `[0, out_len)`.
fn valid_range(off: isize, s: usize, len: usize, out_len: usize) -> (usize, usize) {
    let lo = if off >= 0 {
        0
    } else {
        ((-off) as usize).div_ceil(s)
    };
    let hi = if (len as isize) <= off {
        0
    } else {
        ((len as isize - off) as usize).div_ceil(s)
    };
    let hi = hi.min(out_len);
    (lo.min(hi), hi)
}

fn check(input: &[f32], in_dims: [usize; 4], p: &Pool2dParams, out: &[f32]) -> [usize; 4] {
    assert!(
        p.strides.iter().chain(&p.dilations).all(|&s| s >= 1),
        "pool2d: zero stride or dilation"
    );
    assert_eq!(
        input.len(),
        in_dims.iter().product::<usize>(),
        "pool2d: input length"
    );
    let od = pool2d_out_dims(in_dims, p);
    assert_eq!(
        out.len(),
        od.iter().product::<usize>(),
        "pool2d: output length"
    );
    od
}

/// Combines window taps of one plane into `out` rows with `f(acc, x)`, starting from
/// `init`; taps outside the input are skipped.
///
/// Separable: a horizontal pass folds the `kw` taps of every input row into `hbuf`
/// (`h x ow`), then a vertical pass folds `kh` of those rows per output row, so a window
/// costs `kh + kw` operations instead of `kh * kw` (SPP-style 13x13 max pools).
#[inline(always)]
fn window_fold(
    x: &[f32],
    h: usize,
    w: usize,
    p: &Pool2dParams,
    out: &mut [f32],
    ow: usize,
    init: f32,
    hbuf: &mut Vec<f32>,
    f: impl Fn(f32, f32) -> f32,
) {
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.strides;
    let [dh, dw] = p.dilations;
    let oh = out.len() / ow;
    hbuf.clear();
    hbuf.resize(h * ow, init);
    for (iy, hrow) in hbuf.chunks_exact_mut(ow).enumerate() {
        let irow = &x[iy * w..(iy + 1) * w];
        for kx in 0..kw {
            let off = (kx * dw) as isize - p.pads[1] as isize;
            let (lo, hi) = valid_range(off, sw, w, ow);
            if hi <= lo {
                continue;
            }
            let start = ((lo * sw) as isize + off) as usize;
            let o = &mut hrow[lo..hi];
            let n = o.len();
            if sw == 1 {
                for (o, v) in o.iter_mut().zip(&irow[start..start + n]) {
                    *o = f(*o, *v);
                }
            } else {
                let src = &irow[start..start + (n - 1) * sw + 1];
                for (i, o) in o.iter_mut().enumerate() {
                    *o = f(*o, src[i * sw]);
                }
            }
        }
    }
    for oy in 0..oh {
        let orow = &mut out[oy * ow..(oy + 1) * ow];
        orow.fill(init);
        for ky in 0..kh {
            let iy = (oy * sh + ky * dh) as isize - p.pads[0] as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            let hrow = &hbuf[iy as usize * ow..(iy as usize + 1) * ow];
            for (o, v) in orow.iter_mut().zip(hrow) {
                *o = f(*o, *v);
            }
        }
    }
}

thread_local! {
    static HBUF: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

crate::simd::dispatch! {
fn max_plane(x: &[f32], h: usize, w: usize, p: &Pool2dParams, out: &mut [f32], ow: usize, hbuf: &mut Vec<f32>) {
    window_fold(x, h, w, p, out, ow, f32::NEG_INFINITY, hbuf, f32::max);
}
}

crate::simd::dispatch! {
fn sum_plane(x: &[f32], h: usize, w: usize, p: &Pool2dParams, out: &mut [f32], ow: usize, hbuf: &mut Vec<f32>) {
    window_fold(x, h, w, p, out, ow, 0.0, hbuf, |a, b| a + b);
}
}

/// ONNX `MaxPool` over input `[n, c, h, w]` into `out` `[n, c, oh, ow]` (see
/// [`pool2d_out_dims`]). NaN inputs are ignored unless the whole window is NaN (`f32::max`).
/// An output whose window holds no input position is `-inf`.
///
/// # Panics
/// Shape contract: panics if a slice length does not match its dims or a stride/dilation is 0.
pub fn max_pool2d(
    input: &[f32],
    in_dims: [usize; 4],
    p: &Pool2dParams,
    out: &mut [f32],
    par: Parallelism,
) {
    let od = check(input, in_dims, p, out);
    let (h, w, ow) = (in_dims[2], in_dims[3], od[3]);
    let (hw, ohw) = (h * w, od[2] * ow);
    if ohw == 0 {
        return;
    }
    if covers_whole_plane(in_dims, p) {
        global_max_pool(input, in_dims, out, par);
        return;
    }
    for_each_chunk_mut(out, ohw, par, |pi, o| {
        HBUF.with(|b| {
            max_plane(
                &input[pi * hw..(pi + 1) * hw],
                h,
                w,
                p,
                o,
                ow,
                &mut b.borrow_mut(),
            )
        });
    });
}

/// ONNX `AveragePool` over input `[n, c, h, w]` into `out` `[n, c, oh, ow]`. An output whose
/// divisor is 0 (no input position and `count_include_pad` false) is NaN, as 0/0.
///
/// # Panics
/// Shape contract: panics if a slice length does not match its dims or a stride/dilation is 0.
pub fn avg_pool2d(
    input: &[f32],
    in_dims: [usize; 4],
    p: &Pool2dParams,
    out: &mut [f32],
    par: Parallelism,
) {
    let od = check(input, in_dims, p, out);
    let (h, w, oh, ow) = (in_dims[2], in_dims[3], od[2], od[3]);
    let (hw, ohw) = (h * w, oh * ow);
    if ohw == 0 {
        return;
    }
    if covers_whole_plane(in_dims, p) {
        global_avg_pool(input, in_dims, out, par);
        return;
    }
    // Divisor factors per output row and column.
    let count =
        |o: usize, len: usize, k: usize, s: usize, d: usize, pb: usize, pe: usize| -> usize {
            let (lo, hi) = if p.count_include_pad {
                (-(pb as isize), (len + pe) as isize)
            } else {
                (0, len as isize)
            };
            (0..k)
                .filter(|&t| {
                    let i = (o * s + t * d) as isize - pb as isize;
                    i >= lo && i < hi
                })
                .count()
        };
    let rows: Vec<usize> = (0..oh)
        .map(|o| {
            count(
                o,
                h,
                p.kernel[0],
                p.strides[0],
                p.dilations[0],
                p.pads[0],
                p.pads[2],
            )
        })
        .collect();
    let cols: Vec<usize> = (0..ow)
        .map(|o| {
            count(
                o,
                w,
                p.kernel[1],
                p.strides[1],
                p.dilations[1],
                p.pads[1],
                p.pads[3],
            )
        })
        .collect();
    for_each_chunk_mut(out, ohw, par, |pi, o| {
        HBUF.with(|b| {
            sum_plane(
                &input[pi * hw..(pi + 1) * hw],
                h,
                w,
                p,
                o,
                ow,
                &mut b.borrow_mut(),
            )
        });
        for (orow, &r) in o.chunks_exact_mut(ow).zip(&rows) {
            for (v, &c) in orow.iter_mut().zip(&cols) {
                *v /= (r * c) as f32;
            }
        }
    });
}

/// True when the single output window is exactly the whole unpadded plane (the global
/// pooling that classifier heads export as `AveragePool` with `kernel = [h, w]`).
fn covers_whole_plane(in_dims: [usize; 4], p: &Pool2dParams) -> bool {
    p.kernel == [in_dims[2], in_dims[3]]
        && p.pads == [0; 4]
        && p.dilations == [1, 1]
        && in_dims[2] * in_dims[3] > 0
}

/// Sum of a slice with 16 independent partial sums (vectorisable, fixed order).
pub(crate) fn sum_f32(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += *v;
        }
    }
    let mut s = 0.0;
    for a in acc {
        s += a;
    }
    for v in chunks.remainder() {
        s += *v;
    }
    s
}

/// ONNX `GlobalAveragePool`: input `[n, c, h, w]` (any number of spatial axes flattened
/// into `h * w`) to `out` `[n, c]` (caller adds the unit axes).
///
/// # Panics
/// Shape contract: panics if `input.len() != n*c*h*w` or `out.len() != n*c`.
pub fn global_avg_pool(input: &[f32], in_dims: [usize; 4], out: &mut [f32], par: Parallelism) {
    let hw = in_dims[2] * in_dims[3];
    assert_eq!(
        input.len(),
        in_dims.iter().product::<usize>(),
        "global_avg_pool: input length"
    );
    assert_eq!(
        out.len(),
        in_dims[0] * in_dims[1],
        "global_avg_pool: output length"
    );
    for_each_chunk_mut(out, 64, par, |ci, o| {
        for (i, v) in o.iter_mut().enumerate() {
            let pi = ci * 64 + i;
            *v = sum_f32(&input[pi * hw..(pi + 1) * hw]) / hw as f32;
        }
    });
}

/// ONNX `GlobalMaxPool`: input `[n, c, h, w]` to `out` `[n, c]`; `-inf` for empty planes.
///
/// # Panics
/// Shape contract: panics if `input.len() != n*c*h*w` or `out.len() != n*c`.
pub fn global_max_pool(input: &[f32], in_dims: [usize; 4], out: &mut [f32], par: Parallelism) {
    let hw = in_dims[2] * in_dims[3];
    assert_eq!(
        input.len(),
        in_dims.iter().product::<usize>(),
        "global_max_pool: input length"
    );
    assert_eq!(
        out.len(),
        in_dims[0] * in_dims[1],
        "global_max_pool: output length"
    );
    for_each_chunk_mut(out, 64, par, |ci, o| {
        for (i, v) in o.iter_mut().enumerate() {
            let pi = ci * 64 + i;
            *v = input[pi * hw..(pi + 1) * hw]
                .iter()
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        }
    });
}
