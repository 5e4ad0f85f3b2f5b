//! Slow, obviously-correct reference kernels: naive loops over output indices, written
//! straight from the ONNX operator definitions. They exist for differential tests of the
//! fast kernels and share no code with them beyond the small coordinate helpers of
//! `Resize` and the op attribute enums.
//!
//! Arithmetic is in f64 where that makes the reference more trustworthy; results are
//! rounded to f32 at the end.

use crate::conv::conv_out_len;
use crate::pool::pool_out_len;
use crate::resize::{nearest_index, source_coord};
use crate::{
    BinaryOp, Conv2dParams, ConvTranspose2dParams, CoordinateTransformMode, NearestMode,
    Pool2dParams, ReduceOp, UnaryOp,
};

pub use crate::transformer_reference::{gelu, layer_norm, layer_norm_sequential, matmul};

fn numel(d: &[usize]) -> usize {
    d.iter().product()
}

/// Unravels flat index `i` into a multi-index of `dims`.
pub(crate) fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        idx[d] = i % dims[d];
        i /= dims[d];
    }
    idx
}

fn ravel(idx: &[usize], dims: &[usize]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Index into an operand of shape `dims` broadcast to an output multi-index.
fn broadcast_index(out_idx: &[usize], dims: &[usize]) -> usize {
    let off = out_idx.len() - dims.len();
    let idx: Vec<usize> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| if d == 1 { 0 } else { out_idx[off + i] })
        .collect();
    ravel(&idx, dims)
}

/// `C = A * B` (or `C += A * B`), f64 accumulation.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    a_trans: bool,
    b: &[f32],
    b_trans: bool,
    c: &mut [f32],
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let av = if a_trans { a[p * m + i] } else { a[i * k + p] };
                let bv = if b_trans { b[j * k + p] } else { b[p * n + j] };
                s += f64::from(av) * f64::from(bv);
            }
            let prev = if accumulate {
                f64::from(c[i * n + j])
            } else {
                0.0
            };
            c[i * n + j] = (prev + s) as f32;
        }
    }
}

/// ONNX `Conv`, one output element at a time.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    input: &[f32],
    in_dims: [usize; 4],
    weight: &[f32],
    w_dims: [usize; 4],
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    out: &mut [f32],
) {
    let [n, c, h, w] = in_dims;
    let [m, cg, kh, kw] = w_dims;
    let mg = m / p.group;
    let oh = conv_out_len(h, p.pads[0], p.pads[2], kh, p.strides[0], p.dilations[0]);
    let ow = conv_out_len(w, p.pads[1], p.pads[3], kw, p.strides[1], p.dilations[1]);
    assert_eq!(out.len(), n * m * oh * ow);
    for ni in 0..n {
        for oc in 0..m {
            let g = oc / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias.map_or(0.0, |b| f64::from(b[oc]));
                    for ci in 0..cg {
                        let ic = g * cg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.strides[0] + ky * p.dilations[0]) as isize
                                    - p.pads[0] as isize;
                                let ix = (ox * p.strides[1] + kx * p.dilations[1]) as isize
                                    - p.pads[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = input[((ni * c + ic) * h + iy as usize) * w + ix as usize];
                                let wv = weight[((oc * cg + ci) * kh + ky) * kw + kx];
                                s += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    out[((ni * m + oc) * oh + oy) * ow + ox] = s as f32;
                }
            }
        }
    }
}

/// Depthwise ONNX `Conv` (`group == C == M`, weight `[C, 1, kh, kw]`) summed in f32 in the
/// order the fast kernel promises: the bias, then `w * x` for every tap in `(ky, kx)`
/// row-major order, a tap over the padding adding `w * 0`; each product and sum rounded
/// separately (no fused multiply-add). The fast depthwise kernels must match it bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_conv2d_f32(
    input: &[f32],
    in_dims: [usize; 4],
    weight: &[f32],
    k: [usize; 2],
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    out: &mut [f32],
) {
    let [n, c, h, w] = in_dims;
    let [kh, kw] = k;
    assert_eq!(p.group, c, "depthwise reference: group must equal C");
    let oh = conv_out_len(h, p.pads[0], p.pads[2], kh, p.strides[0], p.dilations[0]);
    let ow = conv_out_len(w, p.pads[1], p.pads[3], kw, p.strides[1], p.dilations[1]);
    assert_eq!(out.len(), n * c * oh * ow);
    for ni in 0..n {
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0f32, |b| b[ch]);
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * p.strides[0] + ky * p.dilations[0]) as isize
                                - p.pads[0] as isize;
                            let ix = (ox * p.strides[1] + kx * p.dilations[1]) as isize
                                - p.pads[1] as isize;
                            let inside = iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize;
                            let xv = if inside {
                                input[((ni * c + ch) * h + iy as usize) * w + ix as usize]
                            } else {
                                0.0
                            };
                            acc += weight[(ch * kh + ky) * kw + kx] * xv;
                        }
                    }
                    out[((ni * c + ch) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
}

/// ONNX `ConvTranspose`, scattering each input element.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d(
    input: &[f32],
    in_dims: [usize; 4],
    weight: &[f32],
    w_dims: [usize; 4],
    bias: Option<&[f32]>,
    p: &ConvTranspose2dParams,
    out: &mut [f32],
) {
    let [n, c, h, w] = in_dims;
    let [_, mg, kh, kw] = w_dims;
    let m = mg * p.group;
    let cg = c / p.group;
    let full = |i: usize, k: usize, a: usize| {
        p.strides[a] * (i - 1) + p.output_padding[a] + (k - 1) * p.dilations[a] + 1
    };
    let oh = full(h, kh, 0) - p.pads[0] - p.pads[2];
    let ow = full(w, kw, 1) - p.pads[1] - p.pads[3];
    assert_eq!(out.len(), n * m * oh * ow);
    let mut acc = vec![0.0f64; out.len()];
    for ni in 0..n {
        for oc in 0..m {
            for i in 0..oh * ow {
                acc[(ni * m + oc) * oh * ow + i] = bias.map_or(0.0, |b| f64::from(b[oc]));
            }
        }
        for ic in 0..c {
            let g = ic / cg;
            for iy in 0..h {
                for ix in 0..w {
                    let xv = f64::from(input[((ni * c + ic) * h + iy) * w + ix]);
                    for o in 0..mg {
                        let oc = g * mg + o;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let y = (iy * p.strides[0] + ky * p.dilations[0]) as isize
                                    - p.pads[0] as isize;
                                let x = (ix * p.strides[1] + kx * p.dilations[1]) as isize
                                    - p.pads[1] as isize;
                                if y < 0 || x < 0 || y >= oh as isize || x >= ow as isize {
                                    continue;
                                }
                                let wv = f64::from(weight[((ic * mg + o) * kh + ky) * kw + kx]);
                                acc[((ni * m + oc) * oh + y as usize) * ow + x as usize] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = a as f32;
    }
}

fn pool(input: &[f32], in_dims: [usize; 4], p: &Pool2dParams, out: &mut [f32], is_max: bool) {
    let [n, c, h, w] = in_dims;
    let oh = pool_out_len(
        h,
        p.pads[0],
        p.pads[2],
        p.kernel[0],
        p.strides[0],
        p.dilations[0],
        p.ceil_mode,
    );
    let ow = pool_out_len(
        w,
        p.pads[1],
        p.pads[3],
        p.kernel[1],
        p.strides[1],
        p.dilations[1],
        p.ceil_mode,
    );
    assert_eq!(out.len(), n * c * oh * ow);
    for pl in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut mx = f32::NEG_INFINITY;
                let mut sum = 0.0f64;
                let mut valid = 0usize;
                let mut padded = 0usize;
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let iy =
                            (oy * p.strides[0] + ky * p.dilations[0]) as isize - p.pads[0] as isize;
                        let ix =
                            (ox * p.strides[1] + kx * p.dilations[1]) as isize - p.pads[1] as isize;
                        let in_pad = iy < (h + p.pads[2]) as isize && ix < (w + p.pads[3]) as isize;
                        if in_pad {
                            padded += 1;
                        }
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let v = input[(pl * h + iy as usize) * w + ix as usize];
                        mx = mx.max(v);
                        sum += f64::from(v);
                        valid += 1;
                    }
                }
                let div = if p.count_include_pad { padded } else { valid };
                out[(pl * oh + oy) * ow + ox] = if is_max {
                    mx
                } else {
                    (sum / div as f64) as f32
                };
            }
        }
    }
}

/// ONNX `MaxPool`.
pub fn max_pool2d(input: &[f32], in_dims: [usize; 4], p: &Pool2dParams, out: &mut [f32]) {
    pool(input, in_dims, p, out, true);
}

/// ONNX `AveragePool`.
pub fn avg_pool2d(input: &[f32], in_dims: [usize; 4], p: &Pool2dParams, out: &mut [f32]) {
    pool(input, in_dims, p, out, false);
}

/// ONNX `GlobalAveragePool`.
pub fn global_avg_pool(input: &[f32], in_dims: [usize; 4], out: &mut [f32]) {
    let hw = in_dims[2] * in_dims[3];
    for (i, o) in out.iter_mut().enumerate() {
        let s: f64 = input[i * hw..(i + 1) * hw]
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        *o = (s / hw as f64) as f32;
    }
}

/// ONNX `BatchNormalization` (inference), straight from the formula.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    input: &[f32],
    in_dims: &[usize],
    scale: &[f32],
    bias: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f32,
    out: &mut [f32],
) {
    let c = in_dims[1];
    let inner: usize = in_dims[2..].iter().product();
    for (i, o) in out.iter_mut().enumerate() {
        let ch = (i / inner) % c;
        let x = f64::from(input[i]);
        let y = (x - f64::from(mean[ch])) / (f64::from(var[ch]) + f64::from(epsilon)).sqrt()
            * f64::from(scale[ch])
            + f64::from(bias[ch]);
        *o = y as f32;
    }
}

/// Unary ops evaluated in f64.
pub fn unary_f64(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        UnaryOp::Clip { lo, hi } => x.max(f64::from(lo)).min(f64::from(hi)),
        UnaryOp::LeakyRelu { alpha } => {
            if x >= 0.0 {
                x
            } else {
                f64::from(alpha) * x
            }
        }
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::HardSigmoid { alpha, beta } => {
            (f64::from(alpha) * x + f64::from(beta)).clamp(0.0, 1.0)
        }
        UnaryOp::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        UnaryOp::Erf => erf_taylor(x),
        UnaryOp::Gelu => 0.5 * x * (1.0 + erf_taylor(x / std::f64::consts::SQRT_2)),
        UnaryOp::GeluTanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x.powi(3))).tanh())
        }
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        UnaryOp::Round => x.round_ties_even(),
        UnaryOp::Reciprocal => 1.0 / x,
        UnaryOp::Elu { alpha } => {
            if x > 0.0 {
                x
            } else {
                f64::from(alpha) * (x.exp() - 1.0)
            }
        }
        UnaryOp::Softplus => (1.0 + x.exp()).ln(),
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
    }
}

/// erf by its Maclaurin series (alternating; fine in f64 for |x| <= 3), and by the
/// continued fraction of erfc beyond.
pub fn erf_taylor(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax <= 3.0 {
        let mut s = 0.0;
        let mut pow = ax; // x^(2n+1) / n!
        for n in 0..200 {
            let t = pow / (2 * n + 1) as f64;
            s += if n % 2 == 0 { t } else { -t };
            pow *= ax * ax / (n + 1) as f64;
            if t.abs() < 1e-18 {
                break;
            }
        }
        s * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))).
        let mut f = ax;
        for k in (1..60).rev() {
            f = ax + (k as f64 / 2.0) / f;
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / f
    };
    r.copysign(x)
}

/// Unary op, elementwise, via f64.
pub fn unary(op: UnaryOp, x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = unary_f64(op, f64::from(*v)) as f32;
    }
}

/// Broadcasting binary op by multi-index.
pub fn binary(
    op: BinaryOp,
    a: &[f32],
    a_dims: &[usize],
    b: &[f32],
    b_dims: &[usize],
    out: &mut [f32],
) {
    let od =
        crate::broadcast_shape(a_dims, b_dims).expect("reference::binary: shapes must broadcast");
    for (i, o) in out.iter_mut().enumerate() {
        let idx = unravel(i, &od);
        let x = a[broadcast_index(&idx, a_dims)];
        let y = b[broadcast_index(&idx, b_dims)];
        *o = crate::binary::apply(op, x, y);
    }
}

/// Softmax along `axis`, in f64.
pub fn softmax(x: &mut [f32], dims: &[usize], axis: usize) {
    let n = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let outer: usize = dims[..axis].iter().product();
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let mx = (0..n)
                .map(|k| f64::from(x[at(k)]))
                .fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = (0..n).map(|k| (f64::from(x[at(k)]) - mx).exp()).sum();
            for k in 0..n {
                x[at(k)] = ((f64::from(x[at(k)]) - mx).exp() / s) as f32;
            }
        }
    }
}

/// ONNX `Transpose` by multi-index.
pub fn transpose<T: Copy>(input: &[T], dims: &[usize], perm: &[usize], out: &mut [T]) {
    let od: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    for (i, o) in out.iter_mut().enumerate() {
        let oi = unravel(i, &od);
        let mut ii = vec![0; dims.len()];
        for (k, &p) in perm.iter().enumerate() {
            ii[p] = oi[k];
        }
        *o = input[ravel(&ii, dims)];
    }
}

/// ONNX `Resize`, nearest, by output index.
#[allow(clippy::too_many_arguments)]
pub fn resize_nearest(
    input: &[f32],
    in_dims: [usize; 4],
    out_hw: [usize; 2],
    scales: [f32; 2],
    mode: CoordinateTransformMode,
    nearest: NearestMode,
    out: &mut [f32],
) {
    let [n, c, h, w] = in_dims;
    let [oh, ow] = out_hw;
    for pl in 0..n * c {
        for y in 0..oh {
            let iy = nearest_index(source_coord(mode, y, scales[0], h, oh), nearest, h);
            for x in 0..ow {
                let ix = nearest_index(source_coord(mode, x, scales[1], w, ow), nearest, w);
                out[(pl * oh + y) * ow + x] = input[(pl * h + iy) * w + ix];
            }
        }
    }
}

/// ONNX `Resize`, bilinear, by output index, in f64.
#[allow(clippy::too_many_arguments)]
pub fn resize_linear(
    input: &[f32],
    in_dims: [usize; 4],
    out_hw: [usize; 2],
    scales: [f32; 2],
    mode: CoordinateTransformMode,
    out: &mut [f32],
) {
    let [n, c, h, w] = in_dims;
    let [oh, ow] = out_hw;
    let coord = |o: usize, s: f32, len: usize, olen: usize| {
        let cf = f64::from(source_coord(mode, o, s, len, olen)).clamp(0.0, len as f64 - 1.0);
        let i0 = cf.floor() as usize;
        let i1 = (i0 + 1).min(len - 1);
        (i0, i1, cf - i0 as f64)
    };
    for pl in 0..n * c {
        for y in 0..oh {
            let (y0, y1, fy) = coord(y, scales[0], h, oh);
            for x in 0..ow {
                let (x0, x1, fx) = coord(x, scales[1], w, ow);
                let at = |yy: usize, xx: usize| f64::from(input[(pl * h + yy) * w + xx]);
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bot = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out[(pl * oh + y) * ow + x] = (top * (1.0 - fy) + bot * fy) as f32;
            }
        }
    }
}

/// Reduction by output index, in f64 (Max/Min in f32).
pub fn reduce(op: ReduceOp, input: &[f32], dims: &[usize], axes: &[usize], out: &mut [f32]) {
    let od: Vec<usize> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let count: usize = axes.iter().map(|&a| dims[a]).product();
    let mut acc = vec![None::<f64>; numel(&od)];
    for (i, &v) in input.iter().enumerate() {
        let mut idx = unravel(i, dims);
        for &a in axes {
            idx[a] = 0;
        }
        let o = ravel(&idx, &od);
        let v = f64::from(v);
        let mapped = match op {
            ReduceOp::L1 => v.abs(),
            ReduceOp::L2 | ReduceOp::SumSquare => v * v,
            _ => v,
        };
        acc[o] = Some(match (acc[o], op) {
            (None, _) => mapped,
            (Some(a), ReduceOp::Max) => {
                if a.is_nan() || mapped.is_nan() {
                    f64::NAN
                } else {
                    a.max(mapped)
                }
            }
            (Some(a), ReduceOp::Min) => {
                if a.is_nan() || mapped.is_nan() {
                    f64::NAN
                } else {
                    a.min(mapped)
                }
            }
            (Some(a), ReduceOp::Prod) => a * mapped,
            (Some(a), _) => a + mapped,
        });
    }
    for (o, a) in out.iter_mut().zip(acc) {
        let a = a.unwrap_or(f64::from(op.init()));
        *o = match op {
            ReduceOp::Mean => a / count as f64,
            ReduceOp::L2 => a.sqrt(),
            _ => a,
        } as f32;
    }
}

/// ONNX `Slice` by output multi-index.
pub fn slice<T: Copy>(
    input: &[T],
    dims: &[usize],
    starts: &[usize],
    steps: &[isize],
    out_dims: &[usize],
    out: &mut [T],
) {
    for (i, o) in out.iter_mut().enumerate() {
        let oi = unravel(i, out_dims);
        let ii: Vec<usize> = (0..dims.len())
            .map(|d| (starts[d] as isize + oi[d] as isize * steps[d]) as usize)
            .collect();
        *o = input[ravel(&ii, dims)];
    }
}

/// ONNX `Concat` by output multi-index.
pub fn concat<T: Copy>(inputs: &[(&[T], &[usize])], axis: usize, out: &mut [T]) {
    let mut od = inputs[0].1.to_vec();
    od[axis] = inputs.iter().map(|(_, d)| d[axis]).sum();
    for (i, o) in out.iter_mut().enumerate() {
        let mut idx = unravel(i, &od);
        for (data, d) in inputs {
            if idx[axis] < d[axis] {
                *o = data[ravel(&idx, d)];
                break;
            }
            idx[axis] -= d[axis];
        }
    }
}

/// ONNX `Gather` by output multi-index (indices flattened to one axis).
pub fn gather<T: Copy>(input: &[T], dims: &[usize], axis: usize, indices: &[usize], out: &mut [T]) {
    let mut od = dims.to_vec();
    od[axis] = indices.len();
    for (i, o) in out.iter_mut().enumerate() {
        let mut idx = unravel(i, &od);
        idx[axis] = indices[idx[axis]];
        *o = input[ravel(&idx, dims)];
    }
}

/// ONNX `Expand` by output multi-index.
pub fn expand<T: Copy>(input: &[T], dims: &[usize], out_dims: &[usize], out: &mut [T]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = input[broadcast_index(&unravel(i, out_dims), dims)];
    }
}

/// ONNX `Where` by output multi-index.
pub fn where_select<T: Copy>(
    cond: &[bool],
    c_dims: &[usize],
    x: &[T],
    x_dims: &[usize],
    y: &[T],
    y_dims: &[usize],
    out: &mut [T],
) {
    let od = crate::broadcast_shape(c_dims, x_dims)
        .and_then(|d| crate::broadcast_shape(&d, y_dims))
        .expect("reference::where_select: shapes must broadcast");
    for (i, o) in out.iter_mut().enumerate() {
        let idx = unravel(i, &od);
        *o = if cond[broadcast_index(&idx, c_dims)] {
            x[broadcast_index(&idx, x_dims)]
        } else {
            y[broadcast_index(&idx, y_dims)]
        };
    }
}

/// Dense ONNX `Conv` summed in f32 in the order the direct kernel promises (see
/// `direct.rs`): per output element, from 0, one fused multiply-add `w * x + acc` per term in
/// the order input channel, then `(ky, kx)` row-major, a tap over the padding adding
/// `w * 0`; then `+ bias` (rounded), then the activation (`Relu` / `Clip` only: others are
/// approximations whose exact bits belong to the fast kernels). The direct kernel must
/// match it bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fma_ordered(
    input: &[f32],
    in_dims: [usize; 4],
    weight: &[f32],
    w_dims: [usize; 4],
    bias: Option<&[f32]>,
    p: &Conv2dParams,
    clamp: Option<(f32, f32)>,
    out: &mut [f32],
) {
    let [n, c, h, w] = in_dims;
    let [m, cg, kh, kw] = w_dims;
    let mg = m / p.group;
    let oh = conv_out_len(h, p.pads[0], p.pads[2], kh, p.strides[0], p.dilations[0]);
    let ow = conv_out_len(w, p.pads[1], p.pads[3], kw, p.strides[1], p.dilations[1]);
    assert_eq!(out.len(), n * m * oh * ow);
    for ni in 0..n {
        for oc in 0..m {
            let g = oc / mg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0.0f32;
                    for ci in 0..cg {
                        let ic = g * cg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * p.strides[0] + ky * p.dilations[0]) as isize
                                    - p.pads[0] as isize;
                                let ix = (ox * p.strides[1] + kx * p.dilations[1]) as isize
                                    - p.pads[1] as isize;
                                let inside =
                                    iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize;
                                let xv = if inside {
                                    input[((ni * c + ic) * h + iy as usize) * w + ix as usize]
                                } else {
                                    0.0
                                };
                                let wv = weight[((oc * cg + ci) * kh + ky) * kw + kx];
                                s = wv.mul_add(xv, s);
                            }
                        }
                    }
                    if let Some(b) = bias {
                        s += b[oc];
                    }
                    if let Some((lo, hi)) = clamp {
                        // As the fast kernels clamp: NaN stays NaN.
                        s = if s < lo {
                            lo
                        } else if s > hi {
                            hi
                        } else {
                            s
                        };
                    }
                    out[((ni * m + oc) * oh + oy) * ow + ox] = s;
                }
            }
        }
    }
}
