//! An integer layer with a fused Relu (the canonical graph's `do_relu` /
//! `relu_limit`) on the executor: the requantization fused into the int8
//! kernel and the unfused path (float output, the Relu, QuantizeLinear) both
//! equal a direct computation of the simulation's arithmetic, with signed
//! output codes so that neither clamp coincides with the code saturation.

use std::sync::Arc;

use qtune_exec::{Executor, Keep, NoHook, Parallelism, PrepareOptions, RunOptions};
use qtune_ir::{ConvAttrs, FusedRelu, Graph, IntegerKind, IntegerLayerAttrs, Op, ValueId};
use qtune_tensor::{DType, Tensor, TensorData};

const X_ZP: i32 = 7;
const Y_ZP: i8 = -20;
/// The Relu's limit in the requantized domain (codes above it clamp).
const LIMIT: f32 = 61.5;
/// Channels, input size, output channels.
const C: usize = 3;
const H: usize = 6;
const W: usize = 7;
const M: usize = 5;

/// A deterministic pseudo-random stream.
fn stream(seed: u32, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| {
            (u32::try_from(i).unwrap() ^ seed)
                .wrapping_mul(2_654_435_761)
                .rotate_left(13)
                .wrapping_mul(40_503)
        })
        .collect()
}

fn weights() -> Vec<i8> {
    stream(11, M * C * 9)
        .iter()
        .map(|&u| ((u >> 7) % 255) as i8)
        .collect()
}

fn bias() -> Vec<i32> {
    stream(5, M)
        .iter()
        .map(|&u| i32::try_from((u >> 9) % 4001).unwrap() - 2000)
        .collect()
}

fn scales() -> Vec<f32> {
    (0..M).map(|c| 0.0009 + 0.00037 * c as f32).collect()
}

fn input() -> Vec<u8> {
    stream(3, C * H * W)
        .iter()
        .map(|&u| (u >> 11) as u8)
        .collect()
}

/// `x -> IntegerLayer(Conv 3x3, pad 1, fused Relu limit) -> v ->
/// QuantizeLinear(scale 1, zero point Y_ZP) -> y`, as `integer_exact`
/// builds a requantized layer.
fn graph() -> (Graph, ValueId, ValueId) {
    let mut g = Graph::new("integer_relu");
    let x = g.add_value("x", DType::U8, Some(vec![1, C, H, W].into()));
    g.inputs.push(x);
    let w = g.add_constant(
        "w",
        Tensor::new(vec![M, C, 3, 3], TensorData::I8(Arc::new(weights()))).unwrap(),
    );
    let b = g.add_constant(
        "b",
        Tensor::new(vec![M], TensorData::I32(Arc::new(bias()))).unwrap(),
    );
    let s = g.add_constant("s", Tensor::from_f32(vec![M], scales()).unwrap());
    let v = g.add_value("v", DType::F32, Some(vec![1, M, H, W].into()));
    let conv = ConvAttrs {
        pads: vec![1, 1, 1, 1],
        group: 1,
        ..Default::default()
    };
    g.add_node_with_relu(
        "layer",
        Op::IntegerLayer(IntegerLayerAttrs {
            kind: IntegerKind::Conv(conv),
            x_zero_point: X_ZP,
        }),
        vec![Some(x), Some(w), Some(b), Some(s)],
        vec![v],
        Some(FusedRelu { limit: Some(LIMIT) }),
    );
    let one = g.add_constant("one", Tensor::scalar_f32(1.0));
    let zp = g.add_constant(
        "zp",
        Tensor::new(Vec::<usize>::new(), TensorData::I8(Arc::new(vec![Y_ZP]))).unwrap(),
    );
    let y = g.add_value("y", DType::I8, Some(vec![1, M, H, W].into()));
    g.add_node(
        "q",
        Op::QuantizeLinear { axis: 1 },
        vec![Some(v), Some(one), Some(zp)],
        vec![y],
    );
    g.outputs.push(y);
    (g, v, y)
}

/// The simulation's arithmetic, directly: exact accumulator, one float
/// multiply, the Relu's clamp, then ONNX QuantizeLinear. Returns the float
/// values (after the clamp), the codes, and how many values each clamp bit.
fn expected() -> (Vec<f32>, Vec<i8>, usize, usize) {
    let (x, w, b, s) = (input(), weights(), bias(), scales());
    let mut floats = Vec::new();
    let mut codes = Vec::new();
    let (mut low, mut high) = (0, 0);
    for m in 0..M {
        for oy in 0..H {
            for ox in 0..W {
                let mut acc = b[m];
                for c in 0..C {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            // Padded coordinates: 1..=H and 1..=W are inside.
                            let (iy, ix) = (oy + ky, ox + kx);
                            if iy < 1 || ix < 1 || iy > H || ix > W {
                                continue;
                            }
                            let xv = i32::from(x[(c * H + iy - 1) * W + ix - 1]) - X_ZP;
                            acc += xv * i32::from(w[((m * C + c) * 3 + ky) * 3 + kx]);
                        }
                    }
                }
                let y = acc as f32 * s[m];
                let y = if y < 0.0 {
                    low += 1;
                    0.0
                } else if y > LIMIT {
                    high += 1;
                    LIMIT
                } else {
                    y
                };
                floats.push(y);
                let q = (y.round_ties_even() + f32::from(Y_ZP)).clamp(-128.0, 127.0);
                codes.push(q as i8);
            }
        }
    }
    (floats, codes, low, high)
}

fn run(exec: &Executor, keep: Keep, par: Parallelism) -> qtune_exec::Values {
    let x = Tensor::new(vec![1, C, H, W], TensorData::U8(Arc::new(input()))).unwrap();
    let id = exec.graph().inputs[0];
    exec.run(vec![(id, x)], &RunOptions::new(keep, par), &mut NoHook)
        .unwrap()
}

#[test]
fn fused_relu_of_an_integer_layer_clamps_before_requantization() {
    let (g, v, y) = graph();
    let (exec, _) = Executor::from_graph(g, &PrepareOptions::default()).unwrap();
    assert_eq!(exec.integer_tail_count(), 1, "the requantization fuses");
    let (floats, codes, low, high) = expected();
    // Both clamps bite, and the clamped values are not where the int8
    // saturation would put them anyway.
    assert!(low > 5 && high > 5, "{low} below 0, {high} above the limit");
    assert!(f32::from(Y_ZP) + LIMIT < 126.0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for par in [Parallelism::Sequential, Parallelism::Rayon] {
        let go = |keep| pool.install(|| run(&exec, keep, par));
        // Fused: the kernel writes the codes.
        let fused = go(Keep::Outputs);
        let TensorData::I8(got) = fused.get(y).unwrap().data() else {
            panic!("int8 codes expected");
        };
        assert_eq!(got.as_slice(), codes.as_slice(), "fused, {par:?}");
        // Unfused (the layer's float output kept): the Relu on the float
        // output, then the QuantizeLinear node.
        let all = go(Keep::All);
        let TensorData::I8(got) = all.get(y).unwrap().data() else {
            panic!("int8 codes expected");
        };
        assert_eq!(got.as_slice(), codes.as_slice(), "unfused, {par:?}");
        let got: Vec<u32> = all
            .get(v)
            .unwrap()
            .as_f32()
            .unwrap()
            .iter()
            .map(|f| f.to_bits())
            .collect();
        let want: Vec<u32> = floats.iter().map(|f| f.to_bits()).collect();
        assert_eq!(got, want, "float output, {par:?}");
    }
}
