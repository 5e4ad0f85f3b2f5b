use super::*;
use qtune_ir::{GemmAttrs, Graph, Op};
use qtune_tensor::{DType, Shape};

use crate::WeightMethod;
use crate::test_rng::Rng;

/// Inputs with a few large channels (as transformer activations have).
fn inputs(rng: &mut Rng, rows: usize, k: usize) -> Vec<f32> {
    let gain: Vec<f64> = (0..k)
        .map(|c| match c % 11 {
            3 => 12.0,
            7 => 0.05,
            _ => 1.0,
        })
        .collect();
    #[allow(clippy::cast_possible_truncation)]
    (0..rows * k)
        .map(|i| (rng.normal() * gain[i % k]) as f32)
        .collect()
}

fn weights(rng: &mut Rng, n: usize, k: usize) -> Vec<f32> {
    #[allow(clippy::cast_possible_truncation)]
    (0..n * k).map(|_| (rng.normal() * 0.05) as f32).collect()
}

/// `||X W^T - (X / s) Q(diag(s) W)^T||^2` from the rows of `x` (not from
/// a Hessian), in f64, `Q` as the chip holds it.
#[allow(clippy::too_many_arguments)]
fn direct_error(
    x: &[f32],
    wt: &[f32],
    n: usize,
    k: usize,
    s: &[f64],
    bits: u32,
    wo: WeightOnly,
    clip: bool,
) -> f64 {
    #[allow(clippy::cast_possible_truncation)]
    let scaled: Vec<f32> = (0..n * k)
        .map(|i| (f64::from(wt[i]) * s[i % k]) as f32)
        .collect();
    let mut q = quantize_on_grids(&scaled, k, bits, wo, clip, FloatFormat::F16).dequantized();
    round_to(&mut q, FloatFormat::F16);
    let mut e = 0.0;
    for row in x.chunks_exact(k) {
        for r in 0..n {
            let mut y = 0.0;
            let mut yq = 0.0;
            for c in 0..k {
                y += f64::from(row[c]) * f64::from(wt[r * k + c]);
                yq += f64::from(row[c]) / s[c] * f64::from(q[r * k + c]);
            }
            e += (y - yq).powi(2);
        }
    }
    e
}

/// The chosen alpha is the argmin of the output errors computed from the
/// inputs themselves; every error agrees with the Hessian form; the scaled
/// weights beat the unscaled ones (alpha 0) on inputs with large channels;
/// 4 and 8 bits, groups and per channel, min / max and clip grids.
#[test]
fn alpha_is_the_argmin_of_the_direct_output_errors() {
    let (rows, k) = (96, 64);
    let cases = [(4, 16, false), (4, 0, false), (4, 32, true), (8, 0, false)];
    for (case, (bits, group, clip)) in cases.into_iter().enumerate() {
        let mut rng = Rng(0x9e37_79b9 + case as u64);
        let x = inputs(&mut rng, rows, k);
        let mut h = Hessian::new(k);
        h.add_rows(&x);
        let layers = [
            (weights(&mut rng, 24, k), 24usize),
            (weights(&mut rng, 8, k), 8usize),
        ];
        let wo = WeightOnly {
            group_size: group,
            ..Default::default()
        };
        let (best, errors) = search_alpha(&layers, &h, bits, wo, clip, FloatFormat::F16);
        let direct: Vec<f64> = (0..ALPHA_STEPS)
            .map(|i| {
                let s = scales(&h.mean_abs(), alpha(i));
                layers
                    .iter()
                    .map(|(w, n)| direct_error(&x, w, *n, k, &s, bits, wo, clip))
                    .sum()
            })
            .collect();
        for (i, (a, b)) in errors.iter().zip(&direct).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.max(1e-12),
                "case {case}, alpha {}: Hessian form {a} vs direct {b}",
                alpha(i)
            );
        }
        let argmin = (0..ALPHA_STEPS).fold(0, |m, i| if direct[i] < direct[m] { i } else { m });
        assert_eq!(best, argmin, "case {case}: errors {direct:?}");
        if bits == 4 {
            assert!(
                direct[best] < 0.9 * direct[0],
                "case {case}: AWQ {} vs unscaled {}",
                direct[best],
                direct[0]
            );
        }
    }
}

#[test]
fn scales_are_normalised_and_alpha_zero_is_identity() {
    let m = [0.5, 2.0, 8.0, 0.0];
    assert_eq!(scales(&m, 0.0), vec![1.0; 4]);
    let s = scales(&m, 0.5);
    let (lo, hi) = s
        .iter()
        .fold((f64::INFINITY, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
    assert!((lo * hi - 1.0).abs() < 1e-12);
    assert!((s[2] / s[1] - 2.0).abs() < 1e-12);
}

#[test]
fn scaled_hessian_is_the_hessian_of_the_scaled_inputs() {
    let mut rng = Rng(7);
    let k = 8;
    let x = inputs(&mut rng, 20, k);
    let s: Vec<f64> = (0..k).map(|c| 0.5 + c as f64 * 0.25).collect();
    let mut h = Hessian::new(k);
    h.add_rows(&x);
    #[allow(clippy::cast_possible_truncation)]
    let xs: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| (f64::from(v) / s[i % k]) as f32)
        .collect();
    let mut hs = Hessian::new(k);
    hs.add_rows(&xs);
    let t = h.scaled_inputs(&s);
    for (a, b) in t
        .sum
        .iter()
        .chain(&t.row_sum)
        .chain(&t.abs_sum)
        .zip(hs.sum.iter().chain(&hs.row_sum).chain(&hs.abs_sum))
    {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn reshape_tracking_splits_and_merges_trailing_channels() {
    // [B, S, 384] -> [B, S, 12, 32]: the channels are the last two axes.
    assert_eq!(
        track_reshape(&[2], &[1, 128, 384], &[1, 128, 12, 32]),
        Some(vec![2, 3])
    );
    // ... and back.
    assert_eq!(
        track_reshape(&[2, 3], &[1, 128, 12, 32], &[1, 128, 384]),
        Some(vec![2])
    );
    // [B, S, C] -> [B * S, C].
    assert_eq!(
        track_reshape(&[2], &[1, 128, 384], &[128, 384]),
        Some(vec![1])
    );
    // Channels not trailing (after a transpose), or mixed with rows.
    assert_eq!(
        track_reshape(&[1, 3], &[1, 12, 128, 32], &[1, 12, 4096]),
        None
    );
    assert_eq!(track_reshape(&[1], &[128, 384], &[256, 192]), None);
}

/// A float graph: `h = LN(x)` (over the last axis, gamma / beta) read by a
/// Q-like and a V-like Gemm; `V` split into 2 heads, `P V` with `P` a
/// constant-free activation (`x x^T` per head), merged back and read by
/// an output projection MatMul with a fused bias. With `residual`, the LN
/// output also feeds an Add.
fn attention_graph(residual: bool) -> Graph {
    let mut rng = Rng(42);
    let (s, c, heads) = (6usize, 8usize, 2usize);
    let d = c / heads;
    let mut g = Graph::new("awq");
    let x = g.add_value("x", DType::F32, Some(Shape::from(vec![s, c])));
    g.inputs.push(x);
    let mut cst = |g: &mut Graph, name: &str, dims: Vec<usize>, scale: f64, offset: f64| {
        let n: usize = dims.iter().product();
        #[allow(clippy::cast_possible_truncation)]
        let v: Vec<f32> = (0..n)
            .map(|_| (rng.normal() * scale + offset) as f32)
            .collect();
        g.add_constant(name, Tensor::from_f32(dims, v).unwrap())
    };
    let gamma = cst(&mut g, "gamma", vec![c], 0.3, 1.0);
    let beta = cst(&mut g, "beta", vec![c], 0.3, 0.0);
    let wq = cst(&mut g, "wq", vec![c, c], 0.3, 0.0);
    let wv = cst(&mut g, "wv", vec![c, c], 0.3, 0.0);
    let bv = cst(&mut g, "bv", vec![c], 0.3, 0.0);
    let wo = cst(&mut g, "wo", vec![c, c], 0.3, 0.0);
    let bo = cst(&mut g, "bo", vec![c], 0.3, 0.0);
    let shape4 = g.add_constant(
        "shape4",
        Tensor::from_i64(vec![4], vec![1, s as i64, heads as i64, d as i64]).unwrap(),
    );
    let shape2 = g.add_constant(
        "shape2",
        Tensor::from_i64(vec![2], vec![s as i64, c as i64]).unwrap(),
    );
    let val = |g: &mut Graph, name: &str, dims: Vec<usize>| {
        g.add_value(name, DType::F32, Some(Shape::from(dims)))
    };
    let h = val(&mut g, "h", vec![s, c]);
    g.add_node(
        "ln",
        Op::LayerNormalization {
            axis: -1,
            epsilon: 1e-5,
        },
        vec![Some(x), Some(gamma), Some(beta)],
        vec![h],
    );
    let q = val(&mut g, "q", vec![s, c]);
    g.add_node("q_proj", Op::MatMul, vec![Some(h), Some(wq)], vec![q]);
    let v = val(&mut g, "v", vec![s, c]);
    g.add_node(
        "v_proj",
        Op::Gemm(GemmAttrs::default()),
        vec![Some(h), Some(wv), Some(bv)],
        vec![v],
    );
    let v4 = val(&mut g, "v4", vec![1, s, heads, d]);
    g.add_node(
        "v_reshape",
        Op::Reshape { allowzero: false },
        vec![Some(v), Some(shape4)],
        vec![v4],
    );
    let vt = val(&mut g, "vt", vec![1, heads, s, d]);
    g.add_node(
        "v_transpose",
        Op::Transpose {
            perm: Some(vec![0, 2, 1, 3]),
        },
        vec![Some(v4)],
        vec![vt],
    );
    let q4 = val(&mut g, "q4", vec![1, s, heads, d]);
    g.add_node(
        "q_reshape",
        Op::Reshape { allowzero: false },
        vec![Some(q), Some(shape4)],
        vec![q4],
    );
    let qt = val(&mut g, "qt", vec![1, heads, s, d]);
    g.add_node(
        "q_transpose",
        Op::Transpose {
            perm: Some(vec![0, 2, 1, 3]),
        },
        vec![Some(q4)],
        vec![qt],
    );
    let qtt = val(&mut g, "qtt", vec![1, heads, d, s]);
    g.add_node(
        "q_transpose2",
        Op::Transpose {
            perm: Some(vec![0, 1, 3, 2]),
        },
        vec![Some(qt)],
        vec![qtt],
    );
    let p = val(&mut g, "p", vec![1, heads, s, s]);
    g.add_node("scores", Op::MatMul, vec![Some(qt), Some(qtt)], vec![p]);
    let ctx = val(&mut g, "ctx", vec![1, heads, s, d]);
    g.add_node("pv", Op::MatMul, vec![Some(p), Some(vt)], vec![ctx]);
    let ct = val(&mut g, "ct", vec![1, s, heads, d]);
    g.add_node(
        "ctx_transpose",
        Op::Transpose {
            perm: Some(vec![0, 2, 1, 3]),
        },
        vec![Some(ctx)],
        vec![ct],
    );
    let c2 = val(&mut g, "c2", vec![s, c]);
    g.add_node(
        "ctx_reshape",
        Op::Reshape { allowzero: false },
        vec![Some(ct), Some(shape2)],
        vec![c2],
    );
    let y = val(&mut g, "y", vec![s, c]);
    g.add_node(
        "o_proj",
        Op::MatMul,
        vec![Some(c2), Some(wo), Some(bo)],
        vec![y],
    );
    let out = if residual {
        let r = val(&mut g, "r", vec![s, c]);
        g.add_node("residual", Op::Add, vec![Some(y), Some(h)], vec![r]);
        r
    } else {
        y
    };
    g.outputs.push(out);
    g
}

fn run(g: &Graph, x: &Tensor) -> Vec<f32> {
    let exec = qtune_exec::Executor::new(g.clone()).unwrap();
    let opts = qtune_exec::RunOptions::new(
        qtune_exec::Keep::Outputs,
        qtune_kernels::Parallelism::Sequential,
    );
    let out = exec
        .run(
            vec![(g.inputs[0], x.clone())],
            &opts,
            &mut qtune_exec::NoHook,
        )
        .unwrap();
    out.get(g.outputs[0]).unwrap().to_f32_vec()
}

/// On a graph with the attention pattern, the LN site (Q and V read it)
/// and the V -> O site are folded; the scaled graph computes the same
/// outputs; with a residual reader of the LN output only V -> O is.
#[test]
fn folds_are_exact_and_refused_where_they_would_not_be() {
    for residual in [false, true] {
        let g = attention_graph(residual);
        let mode_of = |id: NodeId| weight_layer(&g, id).map(|_| QuantMode::W4F16);
        let (sites, unscaled) = fold_sites(&g, &mode_of);
        let names: Vec<Vec<String>> = sites
            .iter()
            .map(|s| s.layers.iter().map(|&l| g.node(l).name.clone()).collect())
            .collect();
        if residual {
            assert_eq!(names, vec![vec!["o_proj".to_string()]]);
            assert_eq!(unscaled.len(), 1, "{unscaled:?}");
            assert!(unscaled[0].reason.contains("residual"), "{unscaled:?}");
        } else {
            assert_eq!(
                names,
                vec![
                    vec!["q_proj".to_string(), "v_proj".to_string()],
                    vec!["o_proj".to_string()]
                ]
            );
        }
        let mut rng = Rng(3);
        let x = Tensor::from_f32(vec![6, 8], inputs(&mut rng, 6, 8)).unwrap();
        let mut hessians = Hessians::new();
        for (name, input) in [("wq", "h"), ("wv", "h"), ("wo", "c2")] {
            // The Hessians of the real inputs, from a graph whose values
            // are outputs.
            let mut probe = g.clone();
            let v = probe.find_value(input).unwrap();
            probe.outputs = vec![v];
            let xs = run(&probe, &x);
            let mut h = Hessian::new(8);
            h.add_rows(&xs);
            hessians.insert(name.to_string(), Arc::new(h));
        }
        let wo = WeightOnly {
            method: WeightMethod::Rtn,
            ..Default::default()
        };
        let mut searched = g.clone();
        let report = apply_awq(&mut searched, &mut hessians, &mode_of, wo).unwrap();
        assert_eq!(report.scaled.len(), sites.len());
        // The folds with scales far from 1 (whatever the search chose).
        let mut scaled = g.clone();
        for site in &sites {
            let s: Vec<f64> = (0..8).map(|c| 0.25 + 0.5 * c as f64).collect();
            fold_scales(&mut scaled, site, &s).unwrap();
        }
        let a = run(&g, &x);
        let b = run(&scaled, &x);
        assert_ne!(
            g.constant_of(g.find_value("wo").unwrap()),
            scaled.constant_of(g.find_value("wo").unwrap())
        );
        let c = run(&searched, &x);
        for (i, (p, q)) in a.iter().zip(&c).enumerate() {
            assert!(
                (p - q).abs() <= 1e-4 * p.abs().max(1.0),
                "searched, residual {residual}, output {i}: {p} vs {q}"
            );
        }
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!(
                (p - q).abs() <= 1e-4 * p.abs().max(1.0),
                "residual {residual}, output {i}: {p} vs {q}"
            );
        }
    }
}
