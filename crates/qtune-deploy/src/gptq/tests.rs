use super::*;
use crate::test_rng::Rng;
use crate::weight_only::{WeightMethod, quantize, quantize_on_grids};

/// Largest deviation of `U^T U H` from the identity.
const INVERSE_TOLERANCE: f64 = 1e-9;

/// Calibration inputs with correlated columns (`rows x k`): a random mix
/// of a few latent factors plus noise, some columns much larger than
/// others, as transformer activations are.
fn inputs(rng: &mut Rng, rows: usize, k: usize) -> Vec<f32> {
    let latent = 4;
    let mix: Vec<f64> = (0..latent * k).map(|_| rng.normal()).collect();
    let gain: Vec<f64> = (0..k).map(|c| if c % 7 == 3 { 6.0 } else { 1.0 }).collect();
    let mut x = Vec::with_capacity(rows * k);
    for _ in 0..rows {
        let z: Vec<f64> = (0..latent).map(|_| rng.normal()).collect();
        for c in 0..k {
            let v: f64 =
                (0..latent).map(|l| z[l] * mix[l * k + c]).sum::<f64>() + 0.3 * rng.normal();
            #[allow(clippy::cast_possible_truncation)]
            x.push((v * gain[c]) as f32);
        }
    }
    x
}

fn weights(rng: &mut Rng, n: usize, k: usize) -> Vec<f32> {
    #[allow(clippy::cast_possible_truncation)]
    (0..n * k)
        .map(|i| {
            let v = rng.normal() * 0.05;
            // A few outliers, as trained weights have.
            (if i % 37 == 5 { v * 6.0 } else { v }) as f32
        })
        .collect()
}

fn hessian_of(x: &[f32], k: usize) -> Hessian {
    let mut h = Hessian::new(k);
    h.add_rows(x);
    h
}

/// `||X W^T - X Q^T||^2` computed from the inputs directly (not from H).
fn output_error(x: &[f32], w: &[f32], q: &[f32], n: usize, k: usize) -> f64 {
    let mut e = 0.0;
    for row in x.chunks_exact(k) {
        for r in 0..n {
            let d: f64 = (0..k)
                .map(|c| f64::from(row[c]) * (f64::from(w[r * k + c]) - f64::from(q[r * k + c])))
                .sum();
            e += d * d;
        }
    }
    e
}

fn wo(group_size: usize, method: WeightMethod, act_order: bool) -> WeightOnly {
    WeightOnly {
        group_size,
        symmetric: false,
        method,
        act_order,
        damp_ppm: 0,
        clip_by_output: false,
    }
}

#[test]
fn inverse_cholesky_factor_inverts() {
    let mut rng = Rng(7);
    let k = 9;
    let x = inputs(&mut rng, 40, k);
    let mut h = hessian_of(&x, k).sum;
    for i in 0..k {
        h[i * k + i] += 0.1;
    }
    let u = inverse_cholesky_upper(&h, k).expect("positive definite");
    for a in 0..k {
        for b in 0..a {
            assert_eq!(u[a * k + b], 0.0, "U is upper triangular");
        }
    }
    // (U^T U) H = I.
    for i in 0..k {
        for j in 0..k {
            let mut v = 0.0;
            for p in 0..k {
                let inv: f64 = (0..k).map(|t| u[t * k + i] * u[t * k + p]).sum();
                v += inv * h[p * k + j];
            }
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((v - want).abs() < INVERSE_TOLERANCE, "({i},{j}): {v}");
        }
    }
    // Not positive definite: refused.
    let mut bad = h.clone();
    bad[0] = -1.0;
    assert!(inverse_cholesky_upper(&bad, k).is_none());
}

/// The lazy-batch form gives the same bits as the column-at-a-time form,
/// for group sizes that divide, are multiples of, or neither, the block.
#[test]
fn lazy_batches_match_the_reference_bit_for_bit() {
    struct Case {
        k: usize,
        group: usize,
        bits: u32,
        act_order: bool,
        clip: bool,
        symmetric: bool,
    }
    let cases = [
        Case {
            k: 48,
            group: 16,
            bits: 4,
            act_order: false,
            clip: false,
            symmetric: false,
        },
        Case {
            k: 48,
            group: 4,
            bits: 4,
            act_order: false,
            clip: true,
            symmetric: false,
        },
        Case {
            k: 48,
            group: 12,
            bits: 4,
            act_order: false,
            clip: false,
            symmetric: false,
        },
        Case {
            k: 48,
            group: 12,
            bits: 4,
            act_order: true,
            clip: false,
            symmetric: true,
        },
        Case {
            k: 40,
            group: 0,
            bits: 4,
            act_order: false,
            clip: false,
            symmetric: false,
        },
        Case {
            k: 40,
            group: 0,
            bits: 8,
            act_order: true,
            clip: true,
            symmetric: false,
        },
        Case {
            k: 48,
            group: 16,
            bits: 8,
            act_order: true,
            clip: false,
            symmetric: false,
        },
    ];
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let mut rng = Rng(100 + i as u64);
        let n = 10;
        let x = inputs(&mut rng, 64, c.k);
        let w = weights(&mut rng, n, c.k);
        let h = hessian_of(&x, c.k);
        for output_clip in [false, c.clip] {
            let opts = GptqOptions {
                act_order: c.act_order,
                clip_grid: c.clip,
                output_clip,
                block: 8,
                ..Default::default()
            };
            let mut o = wo(c.group, WeightMethod::Gptq, c.act_order);
            o.symmetric = c.symmetric;
            let fast = gptq(&w, n, c.k, &h.sum, c.bits, o, opts, FloatFormat::F16).unwrap();
            let slow =
                gptq_reference(&w, n, c.k, &h.sum, c.bits, o, opts, FloatFormat::F16).unwrap();
            if fast != slow {
                failures.push((i, output_clip));
            }
        }
    }
    assert!(failures.is_empty(), "cases {failures:?} differ");
}

/// GPTQ's output error on the calibration inputs is below round to
/// nearest's on the same grids (and below TPU-MLIR's RTN), with and
/// without act-order, per group and per channel.
#[test]
fn gptq_output_error_is_below_rtn() {
    let (n, k) = (16, 64);
    let mut rng = Rng(3);
    let x = inputs(&mut rng, 256, k);
    let w = weights(&mut rng, n, k);
    let h = hessian_of(&x, k);
    for group in [0, 16] {
        let rtn = quantize(
            &w,
            n,
            k,
            4,
            wo(group, WeightMethod::Rtn, false),
            FloatFormat::F16,
        );
        let rtn_e = output_error(&x, &w, &rtn.dequantized(), n, k);
        let grids = quantize_on_grids(
            &w,
            k,
            4,
            wo(group, WeightMethod::Rtn, false),
            false,
            FloatFormat::F16,
        );
        let grids_e = output_error(&x, &w, &grids.dequantized(), n, k);
        for act_order in [false, true] {
            let opts = GptqOptions {
                act_order,
                ..Default::default()
            };
            let q = gptq(
                &w,
                n,
                k,
                &h.sum,
                4,
                wo(group, WeightMethod::Gptq, act_order),
                opts,
                FloatFormat::F16,
            )
            .unwrap();
            let e = output_error(&x, &w, &q.dequantized(), n, k);
            assert!(
                e < 0.8 * rtn_e.min(grids_e),
                "group {group}, act_order {act_order}: GPTQ {e} vs RTN {rtn_e} / {grids_e}"
            );
        }
    }
}

/// With uncorrelated inputs (diagonal H) there is nothing to compensate:
/// GPTQ gives round to nearest on the same grids.
#[test]
fn diagonal_hessian_gives_round_to_nearest() {
    let (n, k) = (6, 32);
    let mut rng = Rng(11);
    let w = weights(&mut rng, n, k);
    let mut h = vec![0f64; k * k];
    for i in 0..k {
        h[i * k + i] = 1.0 + rng.next();
    }
    for group in [0, 8] {
        let o = wo(group, WeightMethod::Gptq, false);
        let q = gptq(&w, n, k, &h, 4, o, GptqOptions::default(), FloatFormat::F16).unwrap();
        let r = quantize_on_grids(&w, k, 4, o, false, FloatFormat::F16);
        assert_eq!(q, r, "group {group}");
    }
}

/// Solves `a x = b` (`m x m`) by Gaussian elimination with partial
/// pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, m: usize) -> Vec<f64> {
    for col in 0..m {
        let piv = (col..m)
            .max_by(|&i, &j| a[i * m + col].abs().total_cmp(&a[j * m + col].abs()))
            .unwrap();
        for t in 0..m {
            a.swap(col * m + t, piv * m + t);
        }
        b.swap(col, piv);
        for i in col + 1..m {
            let f = a[i * m + col] / a[col * m + col];
            for t in col..m {
                a[i * m + t] -= f * a[col * m + t];
            }
            b[i] -= f * b[col];
        }
    }
    let mut x = vec![0f64; m];
    for i in (0..m).rev() {
        let s: f64 = (i + 1..m).map(|t| a[i * m + t] * x[t]).sum();
        x[i] = (b[i] - s) / a[i * m + i];
    }
    x
}

/// The closed form GPTQ follows: with columns `0..i` fixed to their codes,
/// the other weights are the least-squares optimum
/// `w_R = w0_R - H_RR^-1 H_RF (q_F - w0_F)` of `(w - w0)^T H (w - w0)`
/// (dampened H), and column `i` is rounded from that value. Computed here
/// by solving the linear system from scratch at every step, per channel
/// (the grid is fixed from the original row).
#[test]
fn codes_match_the_least_squares_closed_form() {
    let (n, k) = (5, 8);
    let mut rng = Rng(21);
    let x = inputs(&mut rng, 30, k);
    let w = weights(&mut rng, n, k);
    let h = hessian_of(&x, k).sum;
    let o = wo(0, WeightMethod::Gptq, false);
    let q = gptq(&w, n, k, &h, 4, o, GptqOptions::default(), FloatFormat::F16).unwrap();
    let crate::weight_only::Codes::U8(codes) = &q.codes else {
        panic!("uint codes")
    };
    #[allow(clippy::cast_precision_loss)]
    let damp = 0.01 * (0..k).map(|i| h[i * k + i]).sum::<f64>() / k as f64;
    let mut hd = h.clone();
    for i in 0..k {
        hd[i * k + i] += damp;
    }
    let (scheme, _) = Scheme::of(&w, k, 4, o);
    let mut mismatches = 0;
    for r in 0..n {
        let w0: Vec<f64> = w[r * k..(r + 1) * k]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let grid = group_grid(&w[r * k..(r + 1) * k], scheme, false, FloatFormat::F16);
        let mut fixed: Vec<f64> = Vec::new();
        for i in 0..k {
            // Current value of column i given the fixed columns 0..i.
            let wi = if i == 0 {
                w0[0]
            } else {
                let m = k - i;
                let hrr: Vec<f64> = (i..k)
                    .flat_map(|a| (i..k).map(move |b| (a, b)))
                    .map(|(a, b)| hd[a * k + b])
                    .collect();
                let rhs: Vec<f64> = (i..k)
                    .map(|a| (0..i).map(|f| hd[a * k + f] * (fixed[f] - w0[f])).sum())
                    .collect();
                let delta = solve(hrr, rhs, m);
                w0[i] - delta[0]
            };
            #[allow(clippy::cast_possible_truncation)]
            let code = grid.code(wi as f32);
            if (code - f32::from(codes[r * k + i])).abs() > 0.0 {
                mismatches += 1;
            }
            fixed.push(f64::from((code - grid.zero_point) * grid.scale));
        }
    }
    assert_eq!(mismatches, 0, "codes differing from the closed form");
}

#[test]
fn dead_inputs_and_bad_hessians() {
    let (n, k) = (3, 8);
    let mut rng = Rng(5);
    let w = weights(&mut rng, n, k);
    // An input that is always zero: row and column 2 of H are zero.
    let mut x = inputs(&mut rng, 20, k);
    for row in x.chunks_exact_mut(k) {
        row[2] = 0.0;
    }
    let h = hessian_of(&x, k).sum;
    let o = wo(0, WeightMethod::Gptq, true);
    let q = gptq(
        &w,
        n,
        k,
        &h,
        4,
        o,
        GptqOptions {
            act_order: true,
            ..Default::default()
        },
        FloatFormat::F16,
    );
    assert!(q.is_ok());
    let mut nan = h.clone();
    nan[3] = f64::NAN;
    let e = gptq(
        &w,
        n,
        k,
        &nan,
        4,
        o,
        GptqOptions::default(),
        FloatFormat::F16,
    )
    .unwrap_err();
    assert!(e.contains("not finite"), "{e}");
    let e = gptq(
        &w,
        n,
        k,
        &h[..10],
        4,
        o,
        GptqOptions::default(),
        FloatFormat::F16,
    )
    .unwrap_err();
    assert!(e.contains("expected 8 x 8"), "{e}");
}

/// The output-error clip search (`--q_awq_clip`) picks, per group, the
/// shrink factor whose codes give the least `||X_g d||^2` computed from the
/// inputs themselves (not from `H`), and its total output error is not
/// above the weight-error clip search's nor TPU-MLIR's min / max grid's.
#[test]
fn output_clip_picks_the_least_output_error_per_group() {
    use crate::weight_only::{OUTPUT_CLIP_STEPS, Scheme, quantize_on_output_grids};
    let (k, n, g, rows) = (48, 6, 16, 80);
    let mut rng = Rng(77);
    let x = inputs(&mut rng, rows, k);
    let w = weights(&mut rng, n, k);
    let h = hessian_of(&x, k);
    let o = WeightOnly {
        group_size: g,
        ..Default::default()
    };
    let q = quantize_on_output_grids(&w, k, 4, o, FloatFormat::F16, &h.sum);
    let (scheme, _) = Scheme::of(&w, k, 4, o);
    // ||X_g d||^2 of one group, from the rows of x.
    let group_error = |c0: usize, d: &[f64]| -> f64 {
        x.chunks_exact(k)
            .map(|row| {
                let y: f64 = (0..g).map(|t| f64::from(row[c0 + t]) * d[t]).sum();
                y * y
            })
            .sum()
    };
    for r in 0..n {
        for grp in 0..k / g {
            let vals = &w[r * k + grp * g..r * k + (grp + 1) * g];
            let (lo, hi) = vals
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let mut best = (f64::INFINITY, 0f32, 0f32);
            for i in 0..OUTPUT_CLIP_STEPS {
                let grid = scheme.grid(lo, hi, 1.0 - i as f32 * 0.025, FloatFormat::F16);
                let d: Vec<f64> = vals
                    .iter()
                    .map(|&v| f64::from(v - grid.dequantize(v)))
                    .collect();
                let e = group_error(grp * g, &d);
                if e < best.0 * (1.0 - 1e-9) {
                    best = (e, grid.scale, grid.zero_point);
                }
            }
            let at = r * (k / g) + grp;
            assert_eq!(
                (q.scale[at], f32::from(q.zero_point[at])),
                (best.1, best.2),
                "row {r}, group {grp}"
            );
        }
    }
    let weight_clip = quantize_on_grids(&w, k, 4, o, true, FloatFormat::F16);
    let plain = quantize_on_grids(&w, k, 4, o, false, FloatFormat::F16);
    let e = |qw: &QuantizedWeight| output_error(&x, &w, &qw.dequantized(), n, k);
    assert!(e(&q) <= e(&weight_clip), "{} vs {}", e(&q), e(&weight_clip));
    assert!(e(&q) < e(&plain), "{} vs {}", e(&q), e(&plain));
}

/// `X_q`: the float inputs `x_f` as a quantized model would give them
/// (each value moved by a few percent, correlated across columns).
fn perturbed(rng: &mut Rng, xf: &[f32], k: usize) -> Vec<f32> {
    let tilt: Vec<f64> = (0..k).map(|_| 1.0 + 0.05 * rng.normal()).collect();
    #[allow(clippy::cast_possible_truncation)]
    xf.iter()
        .enumerate()
        .map(|(i, &v)| (f64::from(v) * tilt[i % k] + 0.05 * rng.normal()) as f32)
        .collect()
}

/// `X_q^T X_f`, one product at a time in f64.
fn cross_of(xq: &[f32], xf: &[f32], k: usize) -> Vec<f64> {
    let mut c = vec![0f64; k * k];
    for (a, b) in xq.chunks_exact(k).zip(xf.chunks_exact(k)) {
        for i in 0..k {
            for j in 0..k {
                c[i * k + j] += f64::from(a[i]) * f64::from(b[j]);
            }
        }
    }
    c
}

/// `||X_f w - X_q v||^2` per output channel summed, from the rows.
fn target_error(xf: &[f32], xq: &[f32], w: &[f32], v: &[f32], n: usize, k: usize) -> f64 {
    let mut e = 0.0;
    for (rf, rq) in xf.chunks_exact(k).zip(xq.chunks_exact(k)) {
        for r in 0..n {
            let d: f64 = (0..k)
                .map(|c| {
                    f64::from(rf[c]) * f64::from(w[r * k + c])
                        - f64::from(rq[c]) * f64::from(v[r * k + c])
                })
                .sum();
            e += d * d;
        }
    }
    e
}

/// The refit weight is the minimiser of `||X_f w - X_q v||^2 +
/// lambda ||v - w||^2`: its gradient, computed from the rows (not from
/// `H` and `C`), vanishes, and moving it in any direction costs more.
#[test]
fn asymmetric_target_minimises_the_float_target_error() {
    let (n, k, rows) = (5, 12, 60);
    let mut rng = Rng(23);
    let xf = inputs(&mut rng, rows, k);
    let xq = perturbed(&mut rng, &xf, k);
    let w = weights(&mut rng, n, k);
    let h = hessian_of(&xq, k);
    let damp = 0.05;
    let v = asymmetric_target(&h, &cross_of(&xq, &xf, k), &w, n, damp).unwrap();
    #[allow(clippy::cast_precision_loss)]
    let lambda = damp * (0..k).map(|i| h.sum[i * k + i]).sum::<f64>() / k as f64;
    let objective = |v: &[f32]| {
        target_error(&xf, &xq, &w, v, n, k)
            + lambda
                * v.iter()
                    .zip(&w)
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum::<f64>()
    };
    let scale: f64 = h.sum.iter().map(|v| v.abs()).fold(0.0, f64::max);
    for r in 0..n {
        for c in 0..k {
            // d/dv_rc = 2 (sum_rows xq_c (xq . v_r - xf . w_r) + lambda (v_rc - w_rc)).
            let mut g = lambda * (f64::from(v[r * k + c]) - f64::from(w[r * k + c]));
            for (rf, rq) in xf.chunks_exact(k).zip(xq.chunks_exact(k)) {
                let out: f64 = (0..k)
                    .map(|j| {
                        f64::from(rq[j]) * f64::from(v[r * k + j])
                            - f64::from(rf[j]) * f64::from(w[r * k + j])
                    })
                    .sum();
                g += f64::from(rq[c]) * out;
            }
            let wmax = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(
                g.abs() < 1e-4 * scale * f64::from(wmax),
                "channel {r}, input {c}: gradient {g}"
            );
        }
    }
    let best = objective(&v);
    for step in 0..8 {
        let mut moved = v.clone();
        #[allow(clippy::cast_possible_truncation)]
        for x in &mut moved {
            *x += (1e-3 * rng.normal()) as f32;
        }
        assert!(
            objective(&moved) > best,
            "step {step}: {} <= {best}",
            objective(&moved)
        );
    }
    // Against the untouched weight, the float target error falls.
    assert!(target_error(&xf, &xq, &w, &v, n, k) < 0.5 * target_error(&xf, &xq, &w, &w, n, k));
}

/// When the quantized model's inputs are the float model's, the target is
/// the weight itself.
#[test]
fn asymmetric_target_keeps_the_weight_when_the_inputs_agree() {
    let (n, k) = (4, 10);
    let mut rng = Rng(29);
    let x = inputs(&mut rng, 50, k);
    let w = weights(&mut rng, n, k);
    let h = hessian_of(&x, k);
    let v = asymmetric_target(&h, &h.sum, &w, n, 0.01).unwrap();
    for (i, (a, b)) in v.iter().zip(&w).enumerate() {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1e-3), "{i}: {a} vs {b}");
    }
}

/// Why GPTQ runs on the refit weight: with no dampening the least-squares
/// residual is orthogonal to `X_q`, so for any quantized `q`
/// `||X_f w - X_q q||^2 = ||X_f w - X_q v||^2 + ||X_q (v - q)||^2`, and GPTQ
/// of `v` (which minimises the second term) ends with a lower float target
/// error than GPTQ of `w`.
#[test]
fn gptq_of_the_refit_weight_is_closer_to_the_float_target() {
    let (n, k, rows) = (8, 32, 200);
    let mut rng = Rng(31);
    let xf = inputs(&mut rng, rows, k);
    let xq = perturbed(&mut rng, &xf, k);
    let w = weights(&mut rng, n, k);
    let h = hessian_of(&xq, k);
    let v = asymmetric_target(&h, &cross_of(&xq, &xf, k), &w, n, 1e-9).unwrap();
    let o = wo(16, WeightMethod::Gptq, false);
    let opts = GptqOptions::default();
    let q_v = gptq(&v, n, k, &h.sum, 4, o, opts, FloatFormat::F16)
        .unwrap()
        .dequantized();
    let q_w = gptq(&w, n, k, &h.sum, 4, o, opts, FloatFormat::F16)
        .unwrap()
        .dequantized();
    let total = target_error(&xf, &xq, &w, &q_v, n, k);
    let parts = target_error(&xf, &xq, &w, &v, n, k) + output_error(&xq, &v, &q_v, n, k);
    assert!(
        (total - parts).abs() <= 1e-3 * total,
        "{total} vs {parts} (residual + quantization error)"
    );
    let without = target_error(&xf, &xq, &w, &q_w, n, k);
    assert!(
        total < 0.8 * without,
        "refit {total} vs plain GPTQ {without}"
    );
}
