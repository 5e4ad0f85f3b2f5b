//! Differential tests of the transformer kernels (batched / broadcast / transposed / strided
//! matmul, softmax, layer normalisation, GELU) against their reference twins, bit-identity of
//! the fused kernels with the decomposed graphs they replace, and thread-count determinism.

use crate::reference as r;
use crate::tests::{
    Rng, TOL_ELEMENTWISE_ABS, TOL_ELEMENTWISE_REL, TOL_PER_TERM, assert_close, bits,
    check_deterministic,
};
use crate::*;

/// Absolute error allowed on GELU against the f64 reference, per unit of `|x|`: the erf
/// approximation is within 1.5e-7, and `x * (erf + 1) * 0.5` adds a few f32 roundings.
const TOL_GELU_PER_UNIT: f32 = 2.5e-7;
/// Relative error of the tanh form (sigmoid via the vectorised exponential).
const TOL_GELU_TANH_REL: f32 = 2e-6;
/// Relative error of layer normalisation on rows of values in [-1, 1] (two f32 sums of up to
/// a few hundred terms, a division and a square root).
const TOL_LAYER_NORM: f32 = 2e-5;

// ---------------------------------------------------------------- matmul

struct MatMulCase {
    a: &'static [usize],
    a_trans: bool,
    b: &'static [usize],
    b_trans: bool,
}

const fn mm(a: &'static [usize], a_trans: bool, b: &'static [usize], b_trans: bool) -> MatMulCase {
    MatMulCase {
        a,
        a_trans,
        b,
        b_trans,
    }
}

/// The broadcast forms of ONNX `MatMul` and the transposed operands, with odd sizes and
/// sizes that cross the tile edges (48 rows, 64 / 512 columns).
const MATMUL_CASES: &[MatMulCase] = &[
    // Attention: Q K^T and P V on [B, H, S, D].
    mm(&[2, 3, 17, 8], false, &[2, 3, 8, 19], false),
    mm(&[2, 3, 17, 8], false, &[2, 3, 19, 8], true),
    mm(&[2, 3, 17, 19], false, &[2, 3, 19, 8], false),
    mm(&[1, 12, 128, 32], false, &[1, 12, 32, 128], false),
    mm(&[1, 12, 128, 128], false, &[1, 12, 128, 32], false),
    // A 2-D right operand (a weight) under batch axes: one tall product.
    mm(&[2, 37, 23], false, &[23, 70], false),
    mm(&[1, 130, 70], false, &[70, 600], false),
    mm(&[3, 1, 50, 9], false, &[9, 65], false),
    // Broadcast batch axes, both ways, with size-1 axes.
    mm(&[3, 1, 5, 7], false, &[4, 7, 6], false),
    mm(&[1, 5, 7], false, &[3, 7, 2], false),
    mm(&[5, 7], false, &[3, 7, 6], false),
    mm(&[1, 2, 1, 5, 7], false, &[2, 1, 3, 7, 4], false),
    // 1-D operands.
    mm(&[7], false, &[3, 7, 5], false),
    mm(&[3, 5, 7], false, &[7], false),
    mm(&[7], false, &[7], false),
    mm(&[7], true, &[3, 7], true),
    // Transposed operands.
    mm(&[2, 7, 5], true, &[2, 7, 6], false),
    mm(&[2, 7, 5], true, &[2, 6, 7], true),
    mm(&[60, 130], true, &[600, 60], true),
    // Empty inner dimension, empty batch, empty rows.
    mm(&[2, 3, 0], false, &[0, 4], false),
    mm(&[0, 3, 4], false, &[4, 5], false),
    mm(&[2, 0, 4], false, &[2, 4, 5], false),
];

fn matmul_case(rng: &mut Rng, c: &MatMulCase) {
    let name = format!(
        "matmul {:?}{} x {:?}{}",
        c.a,
        if c.a_trans { "^T" } else { "" },
        c.b,
        if c.b_trans { "^T" } else { "" }
    );
    let od = matmul_out_dims(c.a, c.a_trans, c.b, c.b_trans).expect("case dims multiply");
    let a = rng.vec(c.a.iter().product());
    let b = rng.vec(c.b.iter().product());
    let n_out: usize = od.iter().product();
    let mut want = vec![f32::NAN; n_out];
    r::matmul(&a, c.a, c.a_trans, &b, c.b, c.b_trans, &mut want);
    let k = if c.a.len() == 1 {
        c.a[0]
    } else if c.a_trans {
        c.a[c.a.len() - 2]
    } else {
        c.a[c.a.len() - 1]
    };
    let run = |par| {
        // NaN-filled: every output element must be written.
        let mut got = vec![f32::NAN; n_out];
        matmul_transposed(&a, c.a, c.a_trans, &b, c.b, c.b_trans, &mut got, par);
        got
    };
    let got = run(Parallelism::Sequential);
    assert_close(&name, &got, &want, TOL_PER_TERM * (k + 1) as f32, 0.0);
    check_deterministic(&name, run);
    if !c.a_trans && !c.b_trans {
        let mut plain = vec![f32::NAN; n_out];
        matmul(&a, c.a, &b, c.b, &mut plain, Parallelism::Rayon);
        assert_eq!(
            bits(&plain),
            bits(&got),
            "{name}: matmul vs matmul_transposed"
        );
    }
}

#[test]
fn matmul_matches_reference_in_every_broadcast_form() {
    let mut rng = Rng::new(101);
    for c in MATMUL_CASES {
        matmul_case(&mut rng, c);
    }
}

#[test]
fn matmul_matches_reference_on_random_shapes() {
    let mut rng = Rng::new(102);
    for _ in 0..40 {
        let (m, k, n) = (rng.range(1, 70), rng.range(1, 40), rng.range(1, 140));
        let (h, bsz) = (rng.range(1, 4), rng.range(1, 3));
        let (a_trans, b_trans) = (rng.range(0, 1) == 1, rng.range(0, 1) == 1);
        // The left operand is batched, broadcast over B or over H, or 2-D.
        let a_dims: Vec<usize> = match rng.range(0, 3) {
            0 => vec![bsz, h],
            1 => vec![1, h],
            2 => vec![bsz, 1],
            _ => vec![],
        };
        let b_dims: Vec<usize> = match rng.range(0, 2) {
            0 => vec![bsz, h],
            1 => vec![h],
            _ => vec![],
        };
        let with = |mut v: Vec<usize>, rows: usize, cols: usize, t: bool| {
            if t {
                v.extend([cols, rows]);
            } else {
                v.extend([rows, cols]);
            }
            &*Box::leak(v.into_boxed_slice())
        };
        let c = MatMulCase {
            a: with(a_dims, m, k, a_trans),
            a_trans,
            b: with(b_dims, k, n, b_trans),
            b_trans,
        };
        matmul_case(&mut rng, &c);
    }
}

#[test]
fn matmul_strided_runs_heads_of_bshd_operands_in_place() {
    // Q and K stored [B, S, H, D] (before the usual Transpose to [B, H, S, D]): seen as
    // B * H batches of S x D through strides, Q K^T must equal the product of the
    // transposed tensors.
    let mut rng = Rng::new(103);
    let (bsz, s, h, d) = (2, 19, 3, 8);
    let q = rng.vec(bsz * s * h * d);
    let kx = rng.vec(bsz * s * h * d);
    let mut q_t = vec![0.0; q.len()];
    let mut k_t = vec![0.0; kx.len()];
    r::transpose(&q, &[bsz, s, h, d], &[0, 2, 1, 3], &mut q_t);
    r::transpose(&kx, &[bsz, s, h, d], &[0, 2, 3, 1], &mut k_t);
    let mut want = vec![0.0; bsz * h * s * s];
    r::matmul(
        &q_t,
        &[bsz, h, s, d],
        false,
        &k_t,
        &[bsz, h, d, s],
        false,
        &mut want,
    );
    let batch_strides = [s * h * d, d];
    let run = |par| {
        let a = StridedMatrix {
            data: &q,
            batch_strides: &batch_strides,
            row_stride: h * d,
            col_stride: 1,
        };
        // K^T: row p (of D) is column p of a head's S x D slab.
        let b = StridedMatrix {
            data: &kx,
            batch_strides: &batch_strides,
            row_stride: 1,
            col_stride: h * d,
        };
        let mut got = vec![f32::NAN; bsz * h * s * s];
        matmul_strided(&[bsz, h], s, d, s, a, b, &mut got, par);
        got
    };
    assert_close(
        "strided Q K^T",
        &run(Parallelism::Sequential),
        &want,
        TOL_PER_TERM * (d + 1) as f32,
        0.0,
    );
    check_deterministic("strided Q K^T", run);
}

#[test]
fn gemm_tiles_do_not_depend_on_threads_for_transformer_shapes() {
    // The batch-1 shapes of a BERT layer are cut into many tiles; every tiling must give the
    // same bits on 1 and 2 threads, and accumulation must add onto C.
    let mut rng = Rng::new(104);
    for (m, k, n) in [(128, 384, 384), (128, 1536, 384), (49, 65, 577)] {
        let a = rng.vec(m * k);
        let b = rng.vec(k * n);
        let c0 = rng.vec(m * n);
        check_deterministic("gemm accumulate", |par| {
            let mut c = c0.clone();
            gemm(m, k, n, &a, false, &b, false, &mut c, true, par);
            c
        });
        let mut got = c0.clone();
        gemm(
            m,
            k,
            n,
            &a,
            false,
            &b,
            false,
            &mut got,
            true,
            Parallelism::Rayon,
        );
        let mut want = c0.clone();
        r::gemm(m, k, n, &a, false, &b, false, &mut want, true);
        assert_close(
            &format!("gemm {m}x{k}x{n} accumulate"),
            &got,
            &want,
            TOL_PER_TERM * (k + 1) as f32,
            0.0,
        );
    }
}

// ---------------------------------------------------------------- elementwise in place

#[test]
fn binary_in_place_is_bit_identical_to_binary() {
    // The LayerNorm and GELU patterns (row vectors, per-row scalars, scalars) and plain
    // same-shape operands, with the overwritten operand on either side.
    let mut rng = Rng::new(110);
    let full: &[usize] = &[2, 37, 19];
    let others: &[&[usize]] = &[&[2, 37, 19], &[2, 37, 1], &[19], &[], &[1, 1, 19], &[37, 1]];
    let ops = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
    ];
    let x: Vec<f32> = rng
        .vec(full.iter().product())
        .iter()
        .map(|v| v * 3.0)
        .collect();
    let mut cases: Vec<(&[usize], Vec<f32>)> = others
        .iter()
        .map(|d| (*d, rng.vec(d.iter().product())))
        .collect();
    // The exponent shortcuts of Pow.
    cases.push((&[], vec![2.0]));
    cases.push((&[], vec![1.0]));
    for (other_dims, y) in &cases {
        for op in ops {
            let name = format!("{op:?} {full:?} with {other_dims:?}");
            // Pow of negative bases with fractional exponents is NaN either way, fine.
            let mut want = vec![0.0; x.len()];
            binary(
                op,
                &x,
                full,
                y,
                other_dims,
                &mut want,
                Parallelism::Sequential,
            );
            let mut left = x.clone();
            binary_in_place(
                op,
                InPlace::Left,
                &mut left,
                full,
                y,
                other_dims,
                Parallelism::Rayon,
            );
            assert_eq!(bits(&left), bits(&want), "{name}, left in place");
            let mut want_r = vec![0.0; x.len()];
            binary(
                op,
                y,
                other_dims,
                &x,
                full,
                &mut want_r,
                Parallelism::Sequential,
            );
            let mut right = x.clone();
            binary_in_place(
                op,
                InPlace::Right,
                &mut right,
                full,
                y,
                other_dims,
                Parallelism::Rayon,
            );
            assert_eq!(bits(&right), bits(&want_r), "{name}, right in place");
        }
    }
}

// ---------------------------------------------------------------- transpose

#[test]
fn transpose_blocked_matches_reference() {
    let mut rng = Rng::new(109);
    let cases: &[(&[usize], &[usize])] = &[
        // Attention: [B, S, H, D] -> [B, H, S, D], -> [B, H, D, S], and back.
        (&[1, 128, 12, 32], &[0, 2, 1, 3]),
        (&[1, 128, 12, 32], &[0, 2, 3, 1]),
        (&[2, 12, 128, 32], &[0, 2, 1, 3]),
        // Odd sizes around the 8 x 8 blocks, unit axes, a plain 2-D transpose, rank 5.
        (&[3, 17, 5, 9], &[0, 2, 3, 1]),
        (&[2, 1, 13, 1, 7], &[4, 2, 0, 3, 1]),
        (&[33, 70], &[1, 0]),
        (&[7, 8, 9], &[2, 1, 0]),
        (&[4, 5, 6], &[1, 2, 0]),
        (&[1, 1, 1], &[2, 0, 1]),
        (&[6, 300, 2], &[2, 0, 1]),
        (&[5, 0, 3], &[2, 1, 0]),
    ];
    for &(dims, perm) in cases {
        let name = format!("transpose {dims:?} {perm:?}");
        let x = rng.vec(dims.iter().product());
        let mut want = vec![0.0; x.len()];
        r::transpose(&x, dims, perm, &mut want);
        check_deterministic(&name, |par| {
            let mut got = vec![f32::NAN; x.len()];
            transpose_blocked(&x, dims, perm, &mut got, par);
            assert_eq!(bits(&got), bits(&want), "{name}");
            got
        });
        // Other element types move the same way.
        let xi: Vec<i64> = (0..x.len() as i64).collect();
        let mut wi = vec![0i64; x.len()];
        r::transpose(&xi, dims, perm, &mut wi);
        let mut gi = vec![-1i64; x.len()];
        transpose_blocked(&xi, dims, perm, &mut gi, Parallelism::Rayon);
        assert_eq!(gi, wi, "{name} (i64)");
    }
}

// ---------------------------------------------------------------- softmax

#[test]
fn softmax_matches_reference_on_every_axis_and_row_length() {
    let mut rng = Rng::new(105);
    let shapes: &[&[usize]] = &[
        &[3, 1],
        &[2, 5],
        &[4, 16],
        &[3, 17],
        &[1, 2, 7, 128],
        &[2, 300],
        &[2, 3, 5, 33],
        &[2, 700, 3],
    ];
    for dims in shapes {
        let x: Vec<f32> = rng
            .vec(dims.iter().product())
            .iter()
            .map(|v| v * 30.0)
            .collect();
        for axis in 0..dims.len() {
            let name = format!("softmax {dims:?} axis {axis}");
            let mut want = x.clone();
            r::softmax(&mut want, dims, axis);
            let run = |par| {
                let mut got = x.clone();
                softmax(&mut got, dims, axis, par);
                got
            };
            assert_close(
                &name,
                &run(Parallelism::Sequential),
                &want,
                TOL_ELEMENTWISE_ABS,
                TOL_ELEMENTWISE_REL,
            );
            check_deterministic(&name, run);
        }
    }
}

#[test]
fn softmax_edge_rows() {
    // An attention mask row (-3.4e38 on the padding), an all -inf row (NaN, as ONNX
    // Runtime), a row with a NaN (NaN), a constant row (uniform).
    let n = 20;
    let mut x = vec![0.0f32; 4 * n];
    for (i, v) in x[..n].iter_mut().enumerate() {
        *v = if i < 5 { i as f32 } else { -3.4e38 };
    }
    x[n..2 * n].fill(f32::NEG_INFINITY);
    x[2 * n + 3] = f32::NAN;
    x[3 * n..].fill(2.5);
    let mut want = x.clone();
    r::softmax(&mut want[..n], &[1, n], 1);
    softmax(&mut x, &[4, n], 1, Parallelism::Sequential);
    assert_close(
        "masked row",
        &x[..n],
        &want[..n],
        TOL_ELEMENTWISE_ABS,
        TOL_ELEMENTWISE_REL,
    );
    assert!(x[n..2 * n].iter().all(|v| v.is_nan()), "all -inf row");
    assert!(x[2 * n..3 * n].iter().all(|v| v.is_nan()), "row with a NaN");
    assert!(
        x[3 * n..]
            .iter()
            .all(|&v| (v - 1.0 / n as f32).abs() <= TOL_ELEMENTWISE_ABS),
        "constant row"
    );
}

// ---------------------------------------------------------------- layer norm

/// The decomposed LayerNorm of a PyTorch export, run with qtune's elementwise and reduction
/// kernels: ReduceMean, Sub, Pow(2), ReduceMean, Add(eps), Sqrt, Div, Mul(scale), Add(bias).
fn decomposed_layer_norm(
    x: &[f32],
    dims: &[usize],
    scale: &[f32],
    bias: &[f32],
    eps: f32,
) -> Vec<f32> {
    let par = Parallelism::Sequential;
    let last = dims.len() - 1;
    let rows: usize = dims[..last].iter().product();
    let mut rd = dims.to_vec();
    rd[last] = 1;
    let mut mean = vec![0.0; rows];
    reduce(ReduceOp::Mean, x, dims, &[last], &mut mean);
    let mut d = vec![0.0; x.len()];
    binary(BinaryOp::Sub, x, dims, &mean, &rd, &mut d, par);
    let mut sq = vec![0.0; x.len()];
    binary(BinaryOp::Pow, &d, dims, &[2.0], &[], &mut sq, par);
    let mut var = vec![0.0; rows];
    reduce(ReduceOp::Mean, &sq, dims, &[last], &mut var);
    let mut ve = vec![0.0; rows];
    binary(BinaryOp::Add, &var, &rd, &[eps], &[], &mut ve, par);
    unary(UnaryOp::Sqrt, &mut ve, par);
    let mut y = vec![0.0; x.len()];
    binary(BinaryOp::Div, &d, dims, &ve, &rd, &mut y, par);
    let wd = [dims[last]];
    let mut ys = vec![0.0; x.len()];
    binary(BinaryOp::Mul, &y, dims, scale, &wd, &mut ys, par);
    let mut out = vec![0.0; x.len()];
    binary(BinaryOp::Add, &ys, dims, bias, &wd, &mut out, par);
    out
}

#[test]
fn layer_norm_matches_reference_and_the_decomposed_graph() {
    let mut rng = Rng::new(106);
    for dims in [
        vec![3, 1],
        vec![2, 7],
        vec![5, 16],
        vec![1, 4, 33],
        vec![1, 128, 384],
        vec![700, 40],
    ] {
        let n = *dims.last().unwrap_or(&1);
        let x: Vec<f32> = rng
            .vec(dims.iter().product())
            .iter()
            .map(|v| v * 3.0 + 0.5)
            .collect();
        let (scale, bias) = (rng.vec(n), rng.vec(n));
        let eps = 1e-5;
        let name = format!("layer_norm {dims:?}");
        let axis = dims.len() - 1;
        let mut want = vec![0.0; x.len()];
        r::layer_norm(&x, &dims, axis, Some(&scale), Some(&bias), eps, &mut want);
        let run = |par| {
            let mut got = vec![f32::NAN; x.len()];
            layer_norm(
                &x,
                &dims,
                axis,
                Some(&scale),
                Some(&bias),
                eps,
                &mut got,
                par,
            );
            got
        };
        let got = run(Parallelism::Sequential);
        assert_close(&name, &got, &want, TOL_LAYER_NORM, TOL_LAYER_NORM);
        check_deterministic(&name, run);
        assert_eq!(
            bits(&got),
            bits(&decomposed_layer_norm(&x, &dims, &scale, &bias, eps)),
            "{name}: differs from the decomposed graph"
        );
        let mut inplace = x.clone();
        layer_norm_in_place(
            &mut inplace,
            &dims,
            axis,
            Some(&scale),
            Some(&bias),
            eps,
            Parallelism::Rayon,
        );
        assert_eq!(bits(&inplace), bits(&got), "{name}: in place");
    }
}

/// The executor's LayerNorm (ONNX Runtime's arithmetic) against its scalar twin, bit for bit:
/// odd row lengths, row counts around the 8-row groups, with and without the affine terms,
/// rows with a large mean (where `sum_sq / n - mean^2` cancels), 1 and 2 threads.
#[test]
fn layer_norm_sequential_matches_its_scalar_twin_bit_for_bit() {
    let mut rng = Rng::new(107);
    for (rows, n) in [
        (1, 1),
        (3, 5),
        (7, 33),
        (8, 16),
        (9, 384),
        (17, 7),
        (128, 384),
        (300, 64),
    ] {
        for (offset, affine) in [(0.5, true), (40.0, true), (-3.0, false)] {
            let x: Vec<f32> = rng.vec(rows * n).iter().map(|v| v * 3.0 + offset).collect();
            let (scale, bias) = (rng.vec(n), rng.vec(n));
            let (s, b) = if affine {
                (Some(&scale[..]), Some(&bias[..]))
            } else {
                (None, None)
            };
            let name = format!("layer_norm_sequential {rows}x{n} offset {offset}");
            let mut want = x.clone();
            r::layer_norm_sequential(&mut want, n, s, b, 1e-5);
            let run = |par| {
                let mut got = x.clone();
                layer_norm_sequential_in_place(&mut got, n, s, b, 1e-5, par);
                got
            };
            let got = run(Parallelism::Sequential);
            assert_eq!(
                bits(&got),
                bits(&want),
                "{name}: differs from the scalar twin"
            );
            check_deterministic(&name, run);
        }
    }
}

#[test]
fn layer_norm_over_several_axes_and_without_affine() {
    let mut rng = Rng::new(107);
    let dims = [2, 3, 5, 6];
    let x = rng.vec(dims.iter().product());
    for axis in 0..=dims.len() {
        let n: usize = dims[axis..].iter().product();
        let scale = rng.vec(n);
        for (s, b) in [
            (None, None),
            (Some(&scale[..]), None),
            (None, Some(&scale[..])),
        ] {
            let mut want = vec![0.0; x.len()];
            r::layer_norm(&x, &dims, axis, s, b, 1e-3, &mut want);
            let mut got = vec![f32::NAN; x.len()];
            layer_norm(&x, &dims, axis, s, b, 1e-3, &mut got, Parallelism::Rayon);
            assert_close(
                &format!(
                    "layer_norm axis {axis} scale {} bias {}",
                    s.is_some(),
                    b.is_some()
                ),
                &got,
                &want,
                TOL_LAYER_NORM,
                TOL_LAYER_NORM,
            );
        }
    }
}

// ---------------------------------------------------------------- gelu

/// The decomposed GELU of a PyTorch export, with qtune's kernels:
/// `Mul(Mul(x, Add(Erf(Div(x, sqrt 2)), 1)), 0.5)`.
fn decomposed_gelu(x: &[f32]) -> Vec<f32> {
    let par = Parallelism::Sequential;
    let d = [x.len()];
    let mut t = vec![0.0; x.len()];
    binary(
        BinaryOp::Div,
        x,
        &d,
        &[std::f32::consts::SQRT_2],
        &[],
        &mut t,
        par,
    );
    unary(UnaryOp::Erf, &mut t, par);
    let mut u = vec![0.0; x.len()];
    binary(BinaryOp::Add, &t, &d, &[1.0], &[], &mut u, par);
    let mut v = vec![0.0; x.len()];
    binary(BinaryOp::Mul, x, &d, &u, &d, &mut v, par);
    let mut out = vec![0.0; x.len()];
    binary(BinaryOp::Mul, &v, &d, &[0.5], &[], &mut out, par);
    out
}

#[test]
fn gelu_matches_reference_and_the_decomposed_graph() {
    let mut rng = Rng::new(108);
    // Odd length, values over [-8, 8] plus the edges.
    let mut x: Vec<f32> = rng.vec(40_001).iter().map(|v| v * 8.0).collect();
    x.extend([0.0, -0.0, 1e-30, -1e-30, 5.5, -5.5, 30.0, -30.0]);
    for approximation in [GeluApproximation::Erf, GeluApproximation::Tanh] {
        let name = format!("gelu {approximation:?}");
        let mut want = x.clone();
        r::gelu(&mut want, approximation);
        let run = |par| {
            let mut got = x.clone();
            gelu(&mut got, approximation, par);
            got
        };
        let got = run(Parallelism::Sequential);
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let tol = match approximation {
                GeluApproximation::Erf => TOL_GELU_PER_UNIT * x[i].abs().max(1.0),
                _ => TOL_GELU_TANH_REL * w.abs() + TOL_ELEMENTWISE_ABS * 1e-3,
            };
            assert!(
                (g - w).abs() <= tol,
                "{name}: x = {}: got {g}, want {w}",
                x[i]
            );
        }
        check_deterministic(&name, run);
        let mut into = vec![std::mem::MaybeUninit::new(f32::NAN); x.len()];
        gelu_into(&x, &mut into, approximation, Parallelism::Rayon);
        // SAFETY: every element was initialised (with NaN, then by the kernel).
        let into: Vec<f32> = into.iter().map(|v| unsafe { v.assume_init() }).collect();
        assert_eq!(bits(&into), bits(&got), "{name}: gelu_into");
    }
    let mut got = x.clone();
    gelu(&mut got, GeluApproximation::Erf, Parallelism::Sequential);
    assert_eq!(
        bits(&got),
        bits(&decomposed_gelu(&x)),
        "gelu differs from the decomposed graph"
    );
}
