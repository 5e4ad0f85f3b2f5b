//! Helpers of the op-family tests (`unary_family.rs`, `binary_family.rs`, `movement_family.rs`,
//! `reduce_family.rs`, `pool_family.rs`): a scratch folder, the python oracles, a run of a
//! one-node graph, the all-int8 plan request.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use qtune_deploy::PlanRequest;
use qtune_exec::{Executor, Keep, NoHook, PrepareOptions};
use qtune_ir::Graph;
use qtune_quant::{CalibrationTable, QuantMode};
use qtune_tensor::Tensor;

/// A fresh folder for test `test` of `family`.
pub fn scratch(family: &str, test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qtune_{family}_{test}_{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `python3 args...`; it must succeed.
pub fn python(args: &[&OsStr]) {
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("python3 with onnx, onnxruntime and numpy is required for this test");
    assert!(
        out.status.success(),
        "python3 failed (onnx, onnxruntime and numpy are required):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `python3 ort_run.py --run MODEL IN OUT ...` for each `(model, in, out)`.
pub fn onnxruntime(runs: &[(PathBuf, PathBuf, PathBuf)]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qtune-exec/tests/ort_run.py");
    let mut args: Vec<std::ffi::OsString> = vec![script.into()];
    for (model, input, output) in runs {
        args.extend(["--run".into(), model.into(), input.into(), output.into()]);
    }
    python(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
}

/// Imports `<dir>/<stem>.onnx` and prepares it, writes its ONNX export to
/// `<stem>_export.onnx`, and queues ONNX Runtime runs of both on
/// `<dir>/in.npz` (outputs `<stem>_ort.npz` and `<stem>_ort_export.npz`).
/// Returns the imported model's first op and the prepared graph.
pub fn import_and_export(
    dir: &Path,
    stem: &str,
    runs: &mut Vec<(PathBuf, PathBuf, PathBuf)>,
) -> (qtune_ir::Op, Graph) {
    let graph = qtune_onnx::import_onnx(&dir.join(format!("{stem}.onnx")), &Default::default())
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
    let op = graph.nodes().next().unwrap().1.op.clone();
    let (prepared, _) = qtune_exec::prepare(graph, &PrepareOptions::default()).unwrap();
    qtune_onnx::write_onnx(
        &prepared,
        &dir.join(format!("{stem}_export.onnx")),
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{stem}: export: {e}"));
    for (model, out) in [("", "ort"), ("_export", "ort_export")] {
        runs.push((
            dir.join(format!("{stem}{model}.onnx")),
            dir.join("in.npz"),
            dir.join(format!("{stem}_{out}.npz")),
        ));
    }
    (op, prepared)
}

/// The first output of `graph` on the inputs `feeds` (by name).
pub fn run(graph: Graph, feeds: &[(String, Tensor)]) -> Tensor {
    let (exec, _) = Executor::from_graph(graph, &PrepareOptions::default()).unwrap();
    let g = exec.graph();
    let sample = g
        .inputs
        .iter()
        .map(|&id| {
            let name = &g.value(id).name;
            let (_, t) = feeds
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no input `{name}`"));
            (id, t.clone())
        })
        .collect();
    let results = exec
        .run_samples(vec![sample], &Keep::Outputs, |_| NoHook)
        .unwrap();
    results[0].0.get(g.outputs[0]).unwrap().clone()
}

/// The first output of `graph` on its one input, named `x`.
pub fn run_x(graph: Graph, x: &Tensor) -> Tensor {
    run(graph, &[("x".to_string(), x.clone())])
}

/// The bits of each element (a float's IEEE bits, a boolean as 0 or 1),
/// for comparisons that must be exact.
pub fn bits(t: &Tensor) -> Vec<u32> {
    match t.as_bool() {
        Ok(b) => b.iter().map(|&v| u32::from(v)).collect(),
        Err(_) => t.to_f32_vec().iter().map(|v| v.to_bits()).collect(),
    }
}

/// The elements of a float tensor as f64.
pub fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_f32_vec().into_iter().map(f64::from).collect()
}

/// Asserts that `ours` has `reference`'s dims and is within `tol` of it,
/// relative to each reference value (at least 1), and prints the largest
/// difference.
pub fn close(stem: &str, what: &str, ours: &Tensor, reference: &Tensor, tol: f64) {
    assert_eq!(ours.dims(), reference.dims(), "{stem}: {what} dims");
    let worst = f64s(ours)
        .iter()
        .zip(f64s(reference))
        .map(|(p, q)| (p - q).abs() / q.abs().max(1.0))
        .fold(0f64, f64::max);
    println!("{stem:<18} vs {what}: max relative difference {worst:.2e}");
    assert!(worst <= tol, "{stem}: {worst:e} from {what}");
}

/// All-int8 with `table`, F16 for the float layers, symmetric.
pub fn int8_request(table: &CalibrationTable) -> PlanRequest<'_> {
    PlanRequest {
        quantize: QuantMode::Int8,
        calibration: Some(table),
        qtable: &[],
        fp_type: QuantMode::F16,
        asymmetric: false,
        matmul_per_channel: false,
        weight_only: Default::default(),
    }
}

/// `mlir-opt` (Debian's mlir-19-tools), required under CI: `text` must
/// parse (generic syntax, unregistered dialect).
pub fn mlir_parses(dir: &Path, stem: &str, text: &str) {
    let opt = PathBuf::from("/usr/lib/llvm-19/bin/mlir-opt");
    if !opt.is_file() {
        assert!(
            std::env::var("CI").is_err(),
            "mlir-opt is required under CI (apt-get install mlir-19-tools)"
        );
        return;
    }
    let path = dir.join(format!("{stem}.mlir"));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(opt)
        .arg("--allow-unregistered-dialect")
        .arg(&path)
        .arg("-o")
        .arg(dir.join(format!("{stem}_parsed.mlir")))
        .output()
        .expect("mlir-opt runs");
    assert!(
        out.status.success(),
        "{stem}: mlir-opt rejected the file: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}
