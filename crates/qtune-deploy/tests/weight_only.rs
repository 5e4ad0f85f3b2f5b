//! Weight-only plans on a small MatMul: TPU-MLIR's rules for grouped int4
//! layers (N below the NPU count runs in float; the columns past the last
//! multiple of it are split off in float) and the simulated output against
//! a direct computation with the dequantized weight.

use qtune_deploy::weight_only::{self, WeightOnly};
use qtune_deploy::{DeployError, FloatReason, PlanRequest, Processor, QuantizedModel, quantize};
use qtune_exec::{Executor, Keep, NoHook, PrepareOptions};
use qtune_ir::{FloatFormat, Graph, Op};
use qtune_quant::QuantMode;
use qtune_tensor::{DType, Shape, Tensor};

fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let u = u32::try_from(i)
                .unwrap()
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed);
            (u >> 8) as f32 / 16_777_216.0 - 0.5
        })
        .collect()
}

/// `y = x [2, K] @ W [K, N]`.
fn matmul(k: usize, n: usize) -> (Graph, Vec<f32>) {
    let mut g = Graph::new("mm");
    let x = g.add_value("x", DType::F32, Some(Shape(vec![2, k])));
    g.inputs.push(x);
    let wd = pseudo(k * n, 7);
    let w = g.add_constant("w", Tensor::from_f32(vec![k, n], wd.clone()).unwrap());
    let y = g.add_value("y", DType::F32, Some(Shape(vec![2, n])));
    g.add_node("y", Op::MatMul, vec![Some(x), Some(w)], vec![y]);
    g.outputs.push(y);
    (g, wd)
}

fn request(mode: QuantMode) -> PlanRequest<'static> {
    PlanRequest {
        quantize: mode,
        calibration: None,
        qtable: &[],
        fp_type: QuantMode::F16,
        asymmetric: false,
        matmul_per_channel: false,
        weight_only: Default::default(),
    }
}

/// [`quantize`] with `req`'s weight-only options replaced by `wo`.
fn quantize_with(
    g: &Graph,
    p: Processor,
    req: &PlanRequest,
    wo: WeightOnly,
) -> Result<QuantizedModel, DeployError> {
    quantize(
        g,
        p,
        &PlanRequest {
            weight_only: wo,
            ..req.clone()
        },
    )
}

fn run(g: &Graph, x: Tensor) -> Vec<f32> {
    let (g, _) = qtune_exec::prepare(g.clone(), &PrepareOptions::default()).unwrap();
    let exec = Executor::new(g).unwrap();
    let id = exec.graph().inputs[0];
    let mut r = exec
        .run_samples(vec![vec![(id, x)]], &Keep::Outputs, |_| NoHook)
        .unwrap();
    let (values, _) = r.pop().unwrap();
    values.get(exec.graph().outputs[0]).unwrap().to_f32_vec()
}

fn f16(mut v: Vec<f32>) -> Vec<f32> {
    qtune_kernels::round_to_f16(&mut v);
    v
}

#[test]
fn grouped_int4_below_the_npu_count_runs_in_float() {
    let (g, _) = matmul(64, 48);
    let wo = WeightOnly {
        group_size: 32,
        symmetric: false,
        ..Default::default()
    };
    let q = quantize_with(&g, Processor::Bm1684x, &request(QuantMode::W4F16), wo).unwrap();
    assert_eq!(q.plan.modes, vec![QuantMode::F16]);
    assert!(matches!(q.plan.reasons[0], Some(FloatReason::Chip(_))));
    assert_eq!(q.report.weight_only_weights, 0);
    // The rule is for grouped int4 only.
    let q = quantize_with(&g, Processor::Bm1684x, &request(QuantMode::W8F16), wo).unwrap();
    assert_eq!(q.plan.modes, vec![QuantMode::W8F16]);
    let per_channel = WeightOnly::default();
    let q = quantize_with(
        &g,
        Processor::Bm1684x,
        &request(QuantMode::W4F16),
        per_channel,
    )
    .unwrap();
    assert_eq!(q.plan.modes, vec![QuantMode::W4F16]);
}

#[test]
fn grouped_int4_splits_off_the_columns_past_the_npu_multiple() {
    let (k, n) = (96, 100);
    let (g, wd) = matmul(k, n);
    let wo = WeightOnly {
        group_size: 32,
        symmetric: false,
        ..Default::default()
    };
    let q = quantize_with(&g, Processor::Bm1684x, &request(QuantMode::W4F16), wo).unwrap();
    assert_eq!(q.plan.modes, vec![QuantMode::W4F16]);
    // 64 quantized output channels, 36 float ones.
    let codes = q.qdq.find_value("w_wo4").unwrap();
    let codes = q.qdq.constant_of(codes).unwrap();
    assert_eq!(codes.dims(), &[64 * k / 32, 32]);
    let rest = q.qdq.find_value("w_float_rows").unwrap();
    assert_eq!(q.qdq.constant_of(rest).unwrap().dims(), &[36, k]);
    // The simulated output against y computed directly: the first 64
    // columns with the weight dequantized by weight_only::quantize, the
    // others with the F16 weight; inputs and output rounded to F16.
    let wt: Vec<f32> = (0..n)
        .flat_map(|c| (0..k).map(move |r| (r, c)))
        .map(|(r, c)| wd[r * n + c])
        .collect();
    let qw = weight_only::quantize(&wt[..64 * k], 64, k, 4, wo, FloatFormat::F16);
    let mut w_hat = f16(qw.dequantized());
    w_hat.extend(f16(wt[64 * k..].to_vec()));
    let xd = pseudo(2 * k, 3);
    let xr = f16(xd.clone());
    let want: Vec<f32> = (0..2)
        .flat_map(|i| (0..n).map(move |c| (i, c)))
        .map(|(i, c)| {
            (0..k)
                .map(|r| f64::from(xr[i * k + r]) * f64::from(w_hat[c * k + r]))
                .sum::<f64>() as f32
        })
        .collect();
    let want = f16(want);
    let got = run(
        &q.simulation_graph(),
        Tensor::from_f32(vec![2, k], xd).unwrap(),
    );
    for (j, (a, b)) in got.iter().zip(&want).enumerate() {
        // F16 output: one rounding step of slack for the summation order.
        assert!(
            (a - b).abs() <= b.abs() / 512.0 + 1e-3,
            "output {j}: {a} vs {b}"
        );
    }
    // And the int4 columns really are quantized: not the float weight.
    let exact = f16(wt[..64 * k].to_vec());
    assert!(w_hat[..64 * k].iter().zip(&exact).any(|(a, b)| a != b));
}

#[test]
fn group_size_must_divide_k() {
    let (g, _) = matmul(96, 64);
    let wo = WeightOnly {
        group_size: 64,
        symmetric: false,
        ..Default::default()
    };
    let err = quantize_with(&g, Processor::Bm1684x, &request(QuantMode::W8F16), wo)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--q_group_size 64: does not divide K = 96 of MatMul `y`"),
        "{err}"
    );
}
