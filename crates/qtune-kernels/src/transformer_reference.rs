//! Slow reference twins of the transformer kernels ([`crate::matmul()`],
//! [`crate::layer_norm`], [`crate::gelu`]), re-exported from [`crate::reference`]: naive loops
//! straight from the operator definitions, in f64, rounded to f32 once at the end.

use crate::GeluApproximation;
use crate::reference::unravel;

/// ONNX `MatMul` by output multi-index (numpy `matmul`: 1-D operands promoted, batch axes
/// broadcast), with the operands' last two axes stored swapped when `a_trans` / `b_trans`;
/// f64 accumulation. `out` has the dims of [`crate::matmul_out_dims`].
///
/// # Panics
/// If the dims do not multiply.
pub fn matmul(
    a: &[f32],
    a_dims: &[usize],
    a_trans: bool,
    b: &[f32],
    b_dims: &[usize],
    b_trans: bool,
    out: &mut [f32],
) {
    // Promote 1-D operands as ONNX does.
    let (a_dims, a_trans): (Vec<usize>, bool) = if a_dims.len() == 1 {
        (vec![1, a_dims[0]], false)
    } else {
        (a_dims.to_vec(), a_trans)
    };
    let (b_dims, b_trans): (Vec<usize>, bool) = if b_dims.len() == 1 {
        (vec![b_dims[0], 1], false)
    } else {
        (b_dims.to_vec(), b_trans)
    };
    let (ra, rb) = (a_dims.len(), b_dims.len());
    let (m, k) = if a_trans {
        (a_dims[ra - 1], a_dims[ra - 2])
    } else {
        (a_dims[ra - 2], a_dims[ra - 1])
    };
    let (kb, n) = if b_trans {
        (b_dims[rb - 1], b_dims[rb - 2])
    } else {
        (b_dims[rb - 2], b_dims[rb - 1])
    };
    assert_eq!(k, kb, "reference::matmul: inner dimensions differ");
    let a_batch = &a_dims[..ra - 2];
    let b_batch = &b_dims[..rb - 2];
    let batch_dims = crate::broadcast_shape(a_batch, b_batch)
        .expect("reference::matmul: batch axes must broadcast");
    let batch: usize = batch_dims.iter().product();
    assert_eq!(out.len(), batch * m * n, "reference::matmul: output length");
    // Flat index of an operand's matrix for an output batch multi-index.
    let operand_batch = |idx: &[usize], dims: &[usize]| -> usize {
        let off = idx.len() - dims.len();
        dims.iter().enumerate().fold(0, |acc, (i, &d)| {
            acc * d + if d == 1 { 0 } else { idx[off + i] }
        })
    };
    for bi in 0..batch {
        let idx = unravel(bi, &batch_dims);
        let a0 = operand_batch(&idx, a_batch) * m * k;
        let b0 = operand_batch(&idx, b_batch) * k * n;
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if a_trans {
                        a[a0 + p * m + i]
                    } else {
                        a[a0 + i * k + p]
                    };
                    let bv = if b_trans {
                        b[b0 + j * k + p]
                    } else {
                        b[b0 + p * n + j]
                    };
                    s += f64::from(av) * f64::from(bv);
                }
                out[(bi * m + i) * n + j] = s as f32;
            }
        }
    }
}

/// Layer normalisation over the axes from `axis` on (ONNX `LayerNormalization`, opset 17), in
/// f64: `(x - mean) / sqrt(var + epsilon) * scale + bias` with the biased variance.
///
/// # Panics
/// If `axis > dims.len()` or a length does not match.
pub fn layer_norm(
    x: &[f32],
    dims: &[usize],
    axis: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    epsilon: f32,
    out: &mut [f32],
) {
    let inner: usize = dims[axis..].iter().product();
    assert_eq!(out.len(), x.len(), "reference::layer_norm: output length");
    if inner == 0 {
        return;
    }
    for (o, row) in out.chunks_exact_mut(inner).zip(x.chunks_exact(inner)) {
        let n = inner as f64;
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let r = (var + f64::from(epsilon)).sqrt();
        for (i, (o, &v)) in o.iter_mut().zip(row).enumerate() {
            let s = scale.map_or(1.0, |s| f64::from(s[i]));
            let b = bias.map_or(0.0, |b| f64::from(b[i]));
            *o = ((f64::from(v) - mean) / r * s + b) as f32;
        }
    }
}

/// Layer normalisation of contiguous rows of `n` values in ONNX Runtime's CPU arithmetic
/// (`layer_norm_impl.cc: ComputeJob`), one row at a time and one element at a time: the
/// scalar twin of [`crate::layer_norm_sequential_in_place`], which must match it bit for bit.
///
/// # Panics
/// If `n == 0` while `x` is not empty, or a length does not match.
pub fn layer_norm_sequential(
    x: &mut [f32],
    n: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    epsilon: f32,
) {
    if x.is_empty() {
        return;
    }
    assert!(
        n > 0 && x.len().is_multiple_of(n),
        "reference::layer_norm_sequential: length"
    );
    let count = n as f32;
    for row in x.chunks_exact_mut(n) {
        let mut sum = 0f32;
        let mut sum_sq = 0f32;
        for &v in row.iter() {
            sum += v;
            let sq = v * v;
            sum_sq += sq;
        }
        let mean = sum / count;
        let den = (sum_sq / count - mean * mean + epsilon).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            let mut y = (*v - mean) / den;
            if let Some(s) = scale {
                y *= s[i];
            }
            if let Some(b) = bias {
                y += b[i];
            }
            *v = y;
        }
    }
}

/// GELU in f64 (ONNX `Gelu`, opset 20): `0.5 x (1 + erf(x / sqrt 2))`, or with
/// [`GeluApproximation::Tanh`] `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
pub fn gelu(x: &mut [f32], approximation: GeluApproximation) {
    for v in x.iter_mut() {
        let xd = f64::from(*v);
        let y = match approximation {
            GeluApproximation::Erf => {
                0.5 * xd * (1.0 + crate::reference::erf_taylor(xd / std::f64::consts::SQRT_2))
            }
            GeluApproximation::Tanh => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * xd * (1.0 + (c * (xd + 0.044_715 * xd * xd * xd)).tanh())
            }
        };
        *v = y as f32;
    }
}
