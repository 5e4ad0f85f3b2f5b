//! ONNX -> canonical Top graph -> `.mlir` -> read -> prepare -> run must give
//! the same output bits as running the canonical graph, for the six
//! workload models: the writer and the reader keep every op as it is (fused
//! ops included), so the arithmetic is the same op for op.

use std::path::{Path, PathBuf};
use std::process::Command;

use qtune_exec::{Executor, Keep, NoHook, PrepareOptions, prepare_top};
use qtune_ir::Graph;
use qtune_ir::mlir::{MlirWriteOptions, read_top_mlir, write_top_mlir};
use qtune_tensor::{Tensor, read_npz};

const MODELS: &[&str] = &[
    "efficientnet_lite0",
    "mobilenetv2_nsfw",
    "yolox_det416",
    "yolov8n_320",
    "ppocr_v4_det640",
    "minilm_l6_s128",
];

/// Where `apt-get install -y mlir-19-tools` puts `mlir-opt` (Debian 12).
const MLIR_OPT: &str = "/usr/lib/llvm-19/bin/mlir-opt";

fn workloads() -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ));
    assert!(
        p.join("golden").is_dir(),
        "{} is missing: run scripts/fetch-workloads.sh to create the workloads next to the repository",
        p.display()
    );
    p
}

fn prepared(name: &str) -> Graph {
    let root = workloads();
    let graph = qtune_onnx::import_onnx(
        &root.join(format!("models/{name}.onnx")),
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    prepare_top(graph)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .0
}

/// Runs sample 0 of the golden input; inputs are matched by position.
fn run(name: &str, graph: Graph) -> Vec<Tensor> {
    let root = workloads();
    let inputs = read_npz(&root.join(format!("golden/{name}/input.npz"))).unwrap();
    let (exec, _) = Executor::from_graph(graph, &PrepareOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let g = exec.graph();
    let sample: Vec<_> = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, inputs[i].1.slice_outer(0, 1).unwrap()))
        .collect();
    let results = exec
        .run_samples(vec![sample], &Keep::Outputs, |_| NoHook)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    g.outputs
        .iter()
        .map(|&o| results[0].0.get(o).unwrap().clone())
        .collect()
}

fn write(name: &str, graph: &Graph) -> (String, Vec<(String, Tensor)>) {
    write_top_mlir(graph, &MlirWriteOptions::new(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn six_models_round_trip_bit_exactly() {
    let mut failures = Vec::new();
    for name in MODELS {
        let graph = prepared(name);
        // The golden inputs are ordered as the graph inputs.
        let input_names: Vec<String> = graph
            .inputs
            .iter()
            .map(|&i| graph.value(i).name.clone())
            .collect();
        let root = workloads();
        let npz = read_npz(&root.join(format!("golden/{name}/input.npz"))).unwrap();
        let npz_names: Vec<&str> = npz.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(input_names, npz_names, "{name}: input order");

        let (text, weights) = write(name, &graph);
        let (read, _) = read_top_mlir(&text, &weights, &format!("{name}.mlir"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(read.outputs.len(), graph.outputs.len(), "{name}: outputs");
        let expected = run(name, graph);
        let got = run(name, read);
        for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
            let same = e.dims() == g.dims()
                && e.dtype() == g.dtype()
                && e.to_f32_vec()
                    .iter()
                    .zip(g.to_f32_vec())
                    .all(|(a, b)| a.to_bits() == b.to_bits());
            println!(
                "{name:<20} output {i}: {}",
                if same { "bit-identical" } else { "DIFFERS" }
            );
            if !same {
                failures.push(format!("{name} output {i}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "round trip changed outputs: {failures:?}"
    );
}

#[test]
fn written_text_reads_back_to_the_same_text() {
    // Writing what was read gives the same text: names do not gain suffixes.
    let name = "yolov8n_320";
    let (text, weights) = write(name, &prepared(name));
    let (read, _) = read_top_mlir(&text, &weights, "a.mlir").unwrap();
    let (again, _) = write(name, &read);
    if text != again {
        let first = text
            .lines()
            .zip(again.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("first:  {a}\nsecond: {b}"));
        panic!("the second write differs:\n{}", first.unwrap_or_default());
    }
}

fn mlir_opt() -> Option<&'static Path> {
    let p = Path::new(MLIR_OPT);
    p.is_file().then_some(p)
}

/// `mlir-opt --allow-unregistered-dialect` parses every written file. Skips
/// when the binary is absent, except under CI (`CI=true`), where it fails.
#[test]
fn mlir_opt_parses_written_files() {
    let Some(bin) = mlir_opt() else {
        assert!(
            std::env::var("CI").map(|v| v != "true").unwrap_or(true),
            "{MLIR_OPT} is missing: install it with `apt-get install -y mlir-19-tools`"
        );
        eprintln!("skipping: {MLIR_OPT} not found");
        return;
    };
    let dir = std::env::temp_dir().join(format!("qtune-mlir-opt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in MODELS {
        let (text, _) = write(name, &prepared(name));
        let path = dir.join(format!("{name}.mlir"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin)
            .arg("--allow-unregistered-dialect")
            .arg("-o")
            .arg("/dev/null")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: mlir-opt rejected the file:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
