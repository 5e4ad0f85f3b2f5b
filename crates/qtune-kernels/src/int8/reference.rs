//! Slow, obviously correct twins of the int8 kernels, for the differential
//! tests: one output element at a time, from the unpacked weights.

use super::pack::MatrixLayout;
use super::{ConvGeometry, Int8In, Int8Out, OutputStage, quantize, rescale};

/// Writes the finished accumulator of output channel `c` to element `i`.
fn store(out: &mut Int8Out, i: usize, acc: i32, c: usize, stage: &OutputStage) {
    let y = rescale(acc, stage.scale_of(c));
    match (out, stage.tail) {
        (Int8Out::F32(o), None) => o[i] = y,
        // The code is an integer within the output type: exact casts.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        (Int8Out::U8(o), Some(t)) => o[i] = quantize(y, &t) as u8,
        #[allow(clippy::cast_possible_truncation)]
        (Int8Out::I8(o), Some(t)) => o[i] = quantize(y, &t) as i8,
        _ => panic!("int8 reference: the output type does not match the output stage"),
    }
}

/// Reference of [`super::conv2d_int8`], with the OIHW weight.
pub fn conv2d_int8_reference(
    x: Int8In,
    x_zp: i32,
    geom: &ConvGeometry,
    w: &[i8],
    stage: &OutputStage,
    mut out: Int8Out,
) {
    let [n, c, h, wd] = geom.input;
    let [_, m, oh, ow] = geom.output();
    let [_, cg, kh, kw] = geom.weight;
    assert_eq!(x.len(), n * c * h * wd);
    assert_eq!(w.len(), m * cg * kh * kw);
    assert_eq!(out.len(), n * m * oh * ow);
    let m_g = m / geom.group;
    for b in 0..n {
        for oc in 0..m {
            let g = oc / m_g;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = stage.bias.map_or(0, |bias| bias[oc]);
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * geom.strides[0] + ky * geom.dilations[0])
                                    .checked_sub(geom.pads[0])
                                    .filter(|&v| v < h);
                                let ix = (ox * geom.strides[1] + kx * geom.dilations[1])
                                    .checked_sub(geom.pads[1])
                                    .filter(|&v| v < wd);
                                // Padding is a real zero: code == zero point.
                                let (Some(iy), Some(ix)) = (iy, ix) else {
                                    continue;
                                };
                                let xi = ((b * c + g * cg + ci) * h + iy) * wd + ix;
                                let wv = i32::from(w[((oc * cg + ci) * kh + ky) * kw + kx]);
                                acc = acc.wrapping_add(x.centred(xi, x_zp) * wv);
                            }
                        }
                    }
                    store(&mut out, ((b * m + oc) * oh + oy) * ow + ox, acc, oc, stage);
                }
            }
        }
    }
}

/// Reference of [`super::matmul_int8`], with the unpacked `m x k` weight.
pub fn matmul_int8_reference(
    x: Int8In,
    x_zp: i32,
    rows: usize,
    k: usize,
    w: &[i8],
    m: usize,
    layout: MatrixLayout,
    stage: &OutputStage,
    mut out: Int8Out,
) {
    assert_eq!(x.len(), rows * k);
    assert_eq!(w.len(), m * k);
    assert_eq!(out.len(), rows * m);
    for r in 0..rows {
        for c in 0..m {
            let mut acc = stage.bias.map_or(0, |bias| bias[c]);
            for kk in 0..k {
                let wv = match layout {
                    MatrixLayout::OutputsByReduction => w[c * k + kk],
                    MatrixLayout::ReductionByOutputs => w[kk * m + c],
                };
                acc = acc.wrapping_add(x.centred(r * k + kk, x_zp) * i32::from(wv));
            }
            store(&mut out, r * m + c, acc, c, stage);
        }
    }
}
