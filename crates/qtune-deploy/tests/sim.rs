//! The simulation's integer layers (`Op::IntegerLayer` on the int8 kernels)
//! against the float form they replace (integer-valued float Conv/MatMul +
//! Mul + QuantizeLinear), bit for bit, on the workload models quantized for
//! bm1684x with a max-calibrated table of their golden input.

use std::path::PathBuf;

use qtune_deploy::{PlanRequest, Processor, SimOptions, integer_exact_with, quantize};
use qtune_exec::{Executor, Keep, NoHook, PrepareOptions, RunOptions};
use qtune_ir::{Graph, Op, ValueId};
use qtune_quant::{CalibrationRow, CalibrationTable, QuantMode};
use qtune_tensor::Tensor;

fn workloads() -> PathBuf {
    let root = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ));
    assert!(
        root.is_dir(),
        "{} is missing: run scripts/fetch-workloads.sh",
        root.display()
    );
    root
}

/// The prepared float graph and its first golden sample.
fn model(name: &str) -> (Graph, Vec<(ValueId, Tensor)>) {
    let root = workloads();
    let graph = qtune_onnx::import_onnx(
        &root.join(format!("models/{name}.onnx")),
        &Default::default(),
    )
    .unwrap();
    // The canonical Top graph every tool quantizes: BatchNorm folded, Relu
    // and Clip(0, max) fused into their producers.
    let (graph, _) = qtune_exec::prepare_top(graph).unwrap();
    let golden = qtune_tensor::read_npz(&root.join(format!("golden/{name}/input.npz"))).unwrap();
    let inputs = graph
        .inputs
        .iter()
        .map(|&id| {
            let v = graph.value(id);
            let batch = graph.shape_of(id).unwrap().0[0];
            let (_, t) = golden
                .iter()
                .find(|(n, _)| *n == v.name)
                .unwrap_or_else(|| panic!("{name}: no golden input `{}`", v.name));
            (id, t.slice_outer(0, batch).unwrap())
        })
        .collect();
    (graph, inputs)
}

/// A max table of every float tensor of one run (thresholds as TPU-MLIR's
/// `max` method: the absolute maximum).
fn max_table(graph: &Graph, inputs: &[(ValueId, Tensor)]) -> CalibrationTable {
    let exec = Executor::new(graph.clone()).unwrap();
    let values = exec
        .run(
            inputs.to_vec(),
            &RunOptions::new(Keep::All, Default::default()),
            &mut NoHook,
        )
        .unwrap();
    let rows = values
        .iter()
        .filter_map(|(id, t)| {
            let v = t.as_f32().ok()?;
            let (lo, hi) = v
                .iter()
                .fold((0f32, 0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            let th = f64::from(lo.abs().max(hi)).max(1e-5);
            Some(CalibrationRow::new(
                &graph.value(id).name,
                th,
                f64::from(lo),
                f64::from(hi),
            ))
        })
        .collect();
    CalibrationTable {
        rows,
        ..Default::default()
    }
}

fn bits(t: &Tensor) -> Vec<u64> {
    use qtune_tensor::TensorData as D;
    match t.data() {
        D::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        D::U8(v) => v.iter().map(|&x| u64::from(x)).collect(),
        D::I8(v) => v.iter().map(|&x| u64::from(x.cast_unsigned())).collect(),
        D::I32(v) => v.iter().map(|&x| u64::from(x.cast_unsigned())).collect(),
        D::I64(v) => v.iter().map(|&x| x.cast_unsigned()).collect(),
        D::Bool(v) => v.iter().map(|&x| u64::from(x)).collect(),
    }
}

/// `fused_relus`: whether the workload's int8 layers carry fused Relus
/// (`do_relu`), which the integer layers must clamp exactly as the float
/// form does.
fn check(name: &str, fused_relus: bool) {
    let (graph, inputs) = model(name);
    let table = max_table(&graph, &inputs);
    let req = PlanRequest {
        quantize: QuantMode::Int8,
        calibration: Some(&table),
        qtable: &[],
        fp_type: QuantMode::F16,
        asymmetric: false,
        matmul_per_channel: false,
        weight_only: Default::default(),
    };
    let q = quantize(&graph, Processor::Bm1684x, &req).unwrap();
    let build = |opts: SimOptions| {
        let sim = integer_exact_with(&q.qdq, opts);
        Executor::from_graph(sim, &PrepareOptions::default())
            .unwrap()
            .0
    };
    let int = build(SimOptions::default());
    let float = build(SimOptions::float_form());
    let layers = int
        .graph()
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::IntegerLayer(_)))
        .count();
    assert!(layers > 0, "{name}: no integer layer was built");
    let relu_layers = int
        .graph()
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::IntegerLayer(_)) && n.relu.is_some())
        .count();
    assert_eq!(
        relu_layers > 0,
        fused_relus,
        "{name}: {relu_layers} integer layers with a fused Relu"
    );
    assert!(
        int.integer_tail_count() > 0,
        "{name}: no requantization to fuse"
    );
    let named = |exec: &Executor, keep: Keep| -> Vec<(String, Tensor)> {
        let g = exec.graph();
        let ids: Vec<ValueId> = g.inputs.clone();
        let inputs: Vec<(ValueId, Tensor)> = ids
            .iter()
            .map(|&id| {
                let n = &g.value(id).name;
                let (_, t) = inputs
                    .iter()
                    .find(|(i, _)| graph.value(*i).name == *n)
                    .unwrap();
                (id, t.clone())
            })
            .collect();
        let values = exec
            .run(
                inputs,
                &RunOptions::new(keep, Default::default()),
                &mut NoHook,
            )
            .unwrap();
        values
            .iter()
            .map(|(id, t)| (g.value(id).name.clone(), t.clone()))
            .collect()
    };
    // Every tensor both graphs compute (the requantized codes, the
    // dequantized layer outputs, the float tensors), unfused.
    let a = named(&int, Keep::All);
    let b = named(&float, Keep::All);
    let mut compared = 0;
    for (n, t) in &a {
        if let Some((_, u)) = b.iter().find(|(m, _)| m == n) {
            assert_eq!(t.dims(), u.dims(), "{name}: `{n}`");
            assert!(bits(t) == bits(u), "{name}: `{n}` differs");
            compared += 1;
        }
    }
    assert!(
        compared > layers,
        "{name}: only {compared} tensors in common"
    );
    // The outputs with the requantization fused into the integer layers.
    let a = named(&int, Keep::Outputs);
    let b = named(&float, Keep::Outputs);
    assert_eq!(a.len(), b.len());
    for ((n, t), (_, u)) in a.iter().zip(&b) {
        assert!(bits(t) == bits(u), "{name}: output `{n}` differs (fused)");
    }
    // The QDQ model as written to ONNX and read back (what `qtune run
    // model_int8.onnx` simulates) gets the same integer layers.
    let path = std::env::temp_dir().join(format!("qtune_sim_{name}_{}.onnx", std::process::id()));
    qtune_onnx::write_onnx(&q.qdq, &path, &Default::default()).unwrap();
    let mut back = qtune_onnx::import_onnx(&path, &Default::default()).unwrap();
    std::fs::remove_file(&path).unwrap();
    // As `qtune_cli::model::load_model` reads a QDQ model: the exported
    // `Conv -> Relu -> QuantizeLinear` chains fused again.
    qtune_ir::passes::fuse_relus(&mut back);
    let sim = integer_exact_with(&back, SimOptions::default());
    let reread = sim
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::IntegerLayer(_)))
        .count();
    assert_eq!(
        reread, layers,
        "{name}: integer layers of the re-imported QDQ model"
    );
    let reread_relu = sim
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::IntegerLayer(_)) && n.relu.is_some())
        .count();
    assert_eq!(
        reread_relu, relu_layers,
        "{name}: fused Relus of the re-imported QDQ model's integer layers"
    );
    println!(
        "{name}: {layers} integer layers ({relu_layers} with a fused Relu, {} requantizations \
         fused), {compared} tensors equal",
        int.integer_tail_count()
    );
}

#[test]
fn integer_layers_equal_float_form_mobilenetv2_nsfw() {
    check("mobilenetv2_nsfw", true);
}

#[test]
fn integer_layers_equal_float_form_efficientnet_lite0() {
    check("efficientnet_lite0", true);
}

#[test]
fn integer_layers_equal_float_form_yolov8n_320() {
    check("yolov8n_320", false);
}

#[test]
fn integer_layers_equal_float_form_yolox_det416() {
    check("yolox_det416", false);
}

#[test]
fn integer_layers_equal_float_form_ppocr_v4_det640() {
    check("ppocr_v4_det640", true);
}

#[test]
fn integer_layers_equal_float_form_minilm_l6_s128() {
    check("minilm_l6_s128", false);
}
