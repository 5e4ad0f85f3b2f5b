//! The quantization plan and the QDQ graph on small graphs with hand-made
//! tables, and the identity plan on a real model.

use std::path::PathBuf;

use qtune_deploy::{PlanRequest, Processor, Range, build_qdq, quantize};
use qtune_exec::{Executor, Keep, NoHook, PrepareOptions};
use qtune_ir::{ConvAttrs, Graph, Op, ValueId};
use qtune_quant::{CalibrationRow, CalibrationTable, QuantMode};
use qtune_tensor::{DType, Shape, Tensor};

fn table(rows: &[(&str, f64, f64)]) -> CalibrationTable {
    CalibrationTable {
        rows: rows
            .iter()
            .map(|&(n, th, min)| CalibrationRow::new(n, th, min, th))
            .collect(),
        ..Default::default()
    }
}

/// A table for [`two_branches`]: signed inputs and Conv outputs, unsigned
/// Relu and Concat outputs.
fn branch_table() -> CalibrationTable {
    table(&[
        ("x", 1.7, -1.7),
        ("a", 5.0, -5.0),
        ("ra", 4.0, 0.0),
        ("b", 9.0, -9.0),
        ("rb", 8.0, 0.0),
        ("y", 6.0, 0.0),
    ])
}

fn int8(t: &CalibrationTable) -> PlanRequest<'_> {
    PlanRequest {
        quantize: QuantMode::Int8,
        calibration: Some(t),
        qtable: &[],
        fp_type: QuantMode::F16,
        asymmetric: false,
        matmul_per_channel: false,
        weight_only: Default::default(),
    }
}

fn conv_weight(out: usize, inp: usize, seed: u32) -> Tensor {
    let n = out * inp * 9;
    let data: Vec<f32> = (0..n)
        .map(|i| {
            let u = u32::try_from(i)
                .unwrap()
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed);
            // Channel c gets a range that grows with c.
            let c = i / (inp * 9);
            ((u >> 8) as f32 / 16_777_216.0 - 0.5) * (1.0 + c as f32)
        })
        .collect();
    Tensor::from_f32(vec![out, inp, 3, 3], data).unwrap()
}

/// x -> Conv a -> Relu ra ┐
///   -> Conv b -> Relu rb ┴-> Concat y
fn two_branches() -> Graph {
    let mut g = Graph::new("branches");
    let x = g.add_value("x", DType::F32, Some(Shape(vec![1, 2, 6, 6])));
    g.inputs.push(x);
    let conv = ConvAttrs {
        pads: vec![1, 1, 1, 1],
        group: 1,
        ..Default::default()
    };
    let branch = |g: &mut Graph, name: &str, seed: u32| -> ValueId {
        let w = g.add_constant(format!("{name}_w"), conv_weight(3, 2, seed));
        let c = g.add_value(name, DType::F32, None);
        g.add_node(
            name,
            Op::Conv(conv.clone()),
            vec![Some(x), Some(w)],
            vec![c],
        );
        let r = g.add_value(format!("r{name}"), DType::F32, None);
        g.add_node(format!("r{name}"), Op::Relu, vec![Some(c)], vec![r]);
        r
    };
    let ra = branch(&mut g, "a", 1);
    let rb = branch(&mut g, "b", 2);
    let y = g.add_value("y", DType::F32, None);
    g.add_node(
        "y",
        Op::Concat { axis: 1 },
        vec![Some(ra), Some(rb)],
        vec![y],
    );
    g.outputs.push(y);
    let (g, _) = qtune_exec::prepare(g, &PrepareOptions::default()).unwrap();
    g
}

fn input() -> Tensor {
    let data: Vec<f32> = (0..72).map(|i| ((i * 7) % 13) as f32 * 0.3 - 1.7).collect();
    Tensor::from_f32(vec![1, 2, 6, 6], data).unwrap()
}

fn run(g: &Graph, x: Tensor) -> Tensor {
    let (g, _) = qtune_exec::prepare(g.clone(), &PrepareOptions::default()).unwrap();
    let exec = Executor::new(g).unwrap();
    let id = exec.graph().inputs[0];
    let mut r = exec
        .run_samples(vec![vec![(id, x)]], &Keep::Outputs, |_| NoHook)
        .unwrap();
    let (values, _) = r.pop().unwrap();
    values.get(exec.graph().outputs[0]).unwrap().clone()
}

/// The values of `name` after its QuantizeLinear / DequantizeLinear pair in
/// the QDQ graph `g`, on [`input`].
fn dequantized(g: &Graph, name: &str) -> Vec<f32> {
    let v = g.find_value(name).unwrap();
    let consumer = |input: ValueId, pick: fn(&Op) -> bool| {
        g.nodes()
            .find(|(_, n)| pick(&n.op) && n.inputs.first() == Some(&Some(input)))
            .map(|(_, n)| n.outputs[0])
            .unwrap_or_else(|| panic!("no Q/DQ after `{}`", g.value(input).name))
    };
    let q = consumer(v, |op| matches!(op, Op::QuantizeLinear { .. }));
    let dq = consumer(q, |op| matches!(op, Op::DequantizeLinear { .. }));
    let mut g = g.clone();
    g.outputs = vec![dq];
    run(&g, input()).as_f32().unwrap().to_vec()
}

#[test]
fn concat_branches_share_the_output_range() {
    let g = two_branches();
    let t = branch_table();
    let q = quantize(&g, Processor::Bm1684x, &int8(&t)).unwrap();
    let r = |name: &str| q.plan.range(g.find_value(name).unwrap()).unwrap();
    let concat = Range::symmetric(0.0, 6.0);
    // Backward into the Concat inputs, then through the Relus into the Convs.
    assert_eq!(r("ra"), concat);
    assert_eq!(r("rb"), concat);
    assert_eq!(r("a"), concat);
    assert_eq!(r("b"), concat);
    assert_eq!(r("x"), Range::symmetric(-1.7, 1.7));
    // The Relus and the Concat are on their inputs' grid: only x, a and b
    // get a Q/DQ pair.
    assert_eq!(q.report.quantized_tensors, 3);
    assert_eq!(q.report.int8_weights, 2);
}

#[test]
fn unsigned_after_relu_signed_otherwise_and_always_signed_on_cv18xx() {
    let g = two_branches();
    let t = branch_table();
    let q = quantize(&g, Processor::Bm1684x, &int8(&t)).unwrap();
    let y = q.plan.range(g.find_value("y").unwrap()).unwrap();
    assert!(!y.signed());
    assert_eq!(y.scale(), (6.0f64 / 255.0) as f32);
    let x = q.plan.range(g.find_value("x").unwrap()).unwrap();
    assert!(x.signed());
    assert_eq!(x.scale(), (1.7f64 / 127.0) as f32);
    let cv = quantize(&g, Processor::Cv183x, &int8(&t)).unwrap();
    let y = cv.plan.range(g.find_value("y").unwrap()).unwrap();
    assert_eq!(y, Range::symmetric(-6.0, 6.0));
    assert_eq!(y.scale(), (6.0f64 / 127.0) as f32);
}

#[test]
fn identity_plan_is_the_float_graph() {
    let g = two_branches();
    let t = table(&[]);
    let req = PlanRequest {
        quantize: QuantMode::F32,
        calibration: Some(&t),
        qtable: &[],
        fp_type: QuantMode::F16,
        asymmetric: false,
        matmul_per_channel: false,
        weight_only: Default::default(),
    };
    let q = quantize(&g, Processor::Bm1684x, &req).unwrap();
    assert_eq!(q.report, Default::default());
    assert_eq!(q.qdq.node_count(), g.node_count());
    let a = run(&g, input());
    let b = run(&q.qdq, input());
    assert_eq!(a, b);
}

#[test]
fn identity_plan_reproduces_mobilenet_bit_for_bit() {
    let root = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ));
    assert!(
        root.is_dir(),
        "{} is missing: run scripts/fetch-workloads.sh",
        root.display()
    );
    let graph = qtune_onnx::import_onnx(
        &root.join("models/mobilenetv2_nsfw.onnx"),
        &Default::default(),
    )
    .unwrap();
    let mut opts = PrepareOptions::default();
    opts.fold_batchnorm = true;
    let (graph, _) = qtune_exec::prepare(graph, &opts).unwrap();
    let req = PlanRequest {
        quantize: QuantMode::F32,
        calibration: None,
        qtable: &[],
        fp_type: QuantMode::F16,
        asymmetric: false,
        matmul_per_channel: false,
        weight_only: Default::default(),
    };
    let q = quantize(&graph, Processor::Bm1684x, &req).unwrap();
    let golden = qtune_tensor::read_npz(&root.join("golden/mobilenetv2_nsfw/input.npz")).unwrap();
    let x = golden[0].1.slice_outer(0, 1).unwrap();
    assert_eq!(run(&graph, x.clone()), run(&q.qdq, x));
}

#[test]
fn qtable_f16_layer_is_rounded_and_close() {
    let g = two_branches();
    let t = branch_table();
    let qtable = vec![("a".to_string(), QuantMode::F16)];
    let req = PlanRequest {
        quantize: QuantMode::Int8,
        calibration: Some(&t),
        qtable: &qtable,
        fp_type: QuantMode::F16,
        asymmetric: false,
        matmul_per_channel: false,
        weight_only: Default::default(),
    };
    let q = quantize(&g, Processor::Bm1684x, &req).unwrap();
    // The input and the output of `a` are rounded (its weight is a rounded constant).
    assert_eq!(q.report.rounded_tensors, 2);
    let bad = vec![("nope".to_string(), QuantMode::F16)];
    let req = PlanRequest {
        qtable: &bad,
        ..req
    };
    let err = quantize(&g, Processor::Bm1684x, &req)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`nope`"), "{err}");
}

#[test]
fn missing_row_names_the_tensor_and_its_reader() {
    let g = two_branches();
    let t = table(&[("x", 1.7, -1.7), ("a", 5.0, -5.0), ("ra", 4.0, 0.0)]);
    let err = quantize(&g, Processor::Bm1684x, &int8(&t))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`b`") || err.contains("`rb`") || err.contains("`y`"),
        "{err}"
    );
}

/// A fingerprint of the QDQ build of [`two_branches`]: every value's name,
/// shape and constant bits in graph order, every node's op and wiring, and
/// the bits of the output on [`input`].
fn build_fingerprint() -> String {
    let g = two_branches();
    let t = branch_table();
    let q = quantize(&g, Processor::Bm1684x, &int8(&t)).unwrap();
    let (again, _) = build_qdq(&g, &q.plan).unwrap();
    let mut s = String::new();
    for graph in [&q.qdq, &again] {
        for (_, v) in graph.values() {
            let bits: Vec<u32> = v
                .constant
                .as_ref()
                .map(|c| c.to_f32_vec().iter().map(|x| x.to_bits()).collect())
                .unwrap_or_default();
            s.push_str(&format!("{} {:?} {:?}\n", v.name, v.shape, bits));
        }
        for (_, n) in graph.nodes() {
            s.push_str(&format!(
                "{} {:?} {:?} {:?}\n",
                n.name, n.op, n.inputs, n.outputs
            ));
        }
        let out: Vec<u32> = run(graph, input())
            .as_f32()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        s.push_str(&format!("{out:?}\n"));
    }
    s
}

/// Two builds in one process, and a build in another process (its own hash
/// seeds, allocation addresses and thread start-up), give the same graph and
/// outputs bit for bit.
#[test]
fn build_is_deterministic() {
    const CHILD: &str = "QTUNE_PLAN_FINGERPRINT_OUT";
    if let Some(out) = std::env::var_os(CHILD) {
        std::fs::write(out, build_fingerprint()).unwrap();
        return;
    }
    let here = build_fingerprint();
    assert_eq!(here, build_fingerprint(), "two builds in one process");
    let out = std::env::temp_dir().join(format!("qtune-plan-fp-{}", std::process::id()));
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "build_is_deterministic", "--test-threads", "1"])
        .env(CHILD, &out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let there = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    assert_eq!(here, there, "a build in another process differs");
}

#[test]
fn asymmetric_ranges_use_min_max_and_a_zero_point() {
    let g = two_branches();
    let t = branch_table();
    // Rows are (th, min, max = th); make x's observed range lopsided.
    let mut t = t;
    t.rows[0].min = -0.5;
    let req = PlanRequest {
        asymmetric: true,
        ..int8(&t)
    };
    let q = quantize(&g, Processor::Bm1684x, &req).unwrap();
    let x = q.plan.range(g.find_value("x").unwrap()).unwrap();
    assert!(x.asymmetric);
    assert_eq!((x.lo, x.hi), (-0.5, 1.7));
    assert_eq!(x.scale(), (2.2f64 / 255.0) as f32);
    assert_eq!(x.zero_point_u8(), 58); // round(0.5 / (2.2 / 255))
    // Symmetric storage: signed tensors are uint8 with zero point 128.
    let sym = quantize(&g, Processor::Bm1684x, &int8(&t)).unwrap();
    let x = sym.plan.range(g.find_value("x").unwrap()).unwrap();
    assert_eq!(x.zero_point_u8(), 128);
    // The asymmetric graph runs, and values inside x's range survive Q/DQ:
    // the dequantized x equals an independent uint8 fake quantization
    // (round half to even, zero point 58) and is within half a step of x.
    let y = run(&q.qdq, input());
    assert_eq!(y.dims(), &[1, 6, 6, 6]);
    let x_dq = dequantized(&q.qdq, "x");
    let xa = q.plan.range(g.find_value("x").unwrap()).unwrap();
    assert!(xa.asymmetric);
    let (scale, zp) = (xa.scale(), f32::from(xa.zero_point_u8()));
    let mut inside = 0;
    for (&v, &got) in input().as_f32().unwrap().iter().zip(&x_dq) {
        let want = ((v / scale).round_ties_even() + zp).clamp(0.0, 255.0);
        let want = (want - zp) * scale;
        assert_eq!(got.to_bits(), want.to_bits(), "x = {v}: {got} vs {want}");
        if (-0.5..=1.7).contains(&v) {
            inside += 1;
            assert!((got - v).abs() <= scale / 2.0 * 1.0001, "x = {v}: {got}");
        }
    }
    assert!(inside > 10, "too few inputs inside the range: {inside}");
    // cv18xx has no asymmetric mode.
    let err = quantize(&g, Processor::Cv182x, &req)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--asymmetric"), "{err}");
}
