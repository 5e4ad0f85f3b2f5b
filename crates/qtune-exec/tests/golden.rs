//! The six real workload models against ONNX Runtime's outputs
//! (`../shared/workloads/golden/<model>/`, made with onnxruntime 1.32, CPU,
//! graph optimisations off). Each golden input stacks two samples on axis 0;
//! batch-1 models run them as two samples.

use std::path::PathBuf;

use qtune_exec::{Executor, Keep, NoHook, PrepareOptions};
use qtune_tensor::compare::similarity;
use qtune_tensor::{Tensor, read_npz};

/// Minimum cosine similarity against ONNX Runtime.
const GOLDEN_MIN_COSINE: f64 = 0.99999;
/// Maximum absolute error, as a fraction of the largest reference magnitude.
const GOLDEN_MAX_ABS_RELATIVE: f64 = 1e-4;

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

fn check_model(name: &str, fold_batchnorm: bool) -> Vec<String> {
    let root = workloads();
    let graph = qtune_onnx::import_onnx(
        &root.join(format!("models/{name}.onnx")),
        &Default::default(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut opts = PrepareOptions::default();
    opts.fold_batchnorm = fold_batchnorm;
    let (exec, _) = Executor::from_graph(graph, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    let inputs = read_npz(&root.join(format!("golden/{name}/input.npz"))).unwrap();
    let expected = read_npz(&root.join(format!("golden/{name}/output.npz"))).unwrap();
    let g = exec.graph();
    // Split the stacked samples.
    let count = inputs[0].1.dims()[0];
    let samples: Vec<Vec<_>> = (0..count)
        .map(|s| {
            g.inputs
                .iter()
                .map(|&id| {
                    let (_, t) = inputs
                        .iter()
                        .find(|(n, _)| *n == g.value(id).name)
                        .expect("input in npz");
                    (id, t.slice_outer(s, s + 1).unwrap())
                })
                .collect()
        })
        .collect();
    let results = exec
        .run_samples(samples, &Keep::Outputs, |_| NoHook)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut failures = Vec::new();
    for (out_name, reference) in &expected {
        let id = g.value_by_name(out_name).unwrap();
        let parts: Vec<Tensor> = results
            .iter()
            .map(|(v, _)| v.get(id).unwrap().clone())
            .collect();
        let got = Tensor::concat_outer(&parts).unwrap();
        assert_eq!(got.dims(), reference.dims(), "{name}/{out_name} shape");
        let a: Vec<f64> = got.to_f32_vec().into_iter().map(f64::from).collect();
        let b: Vec<f64> = reference.to_f32_vec().into_iter().map(f64::from).collect();
        let s = similarity(&a, &b);
        let max_ref = b.iter().fold(0f64, |m, v| m.max(v.abs()));
        let rel = s.max_abs_diff / max_ref;
        println!(
            "{name:<20} {out_name:<20} cosine {:.8} max_abs_diff {:.3e} ({:.3e} of max|ref|)",
            s.cosine, s.max_abs_diff, rel
        );
        if s.cosine < GOLDEN_MIN_COSINE || rel > GOLDEN_MAX_ABS_RELATIVE {
            failures.push(format!(
                "{name}/{out_name}: cosine {:.8}, max abs diff {:.3e} = {rel:.3e} of max|ref|",
                s.cosine, s.max_abs_diff
            ));
        }
    }
    failures
}

const MODELS: &[&str] = &[
    "efficientnet_lite0",
    "mobilenetv2_nsfw",
    "yolox_det416",
    "yolov8n_320",
    "ppocr_v4_det640",
    "minilm_l6_s128",
];

#[test]
fn six_models_match_onnxruntime() {
    let failures: Vec<String> = MODELS.iter().flat_map(|m| check_model(m, false)).collect();
    assert!(
        failures.is_empty(),
        "outputs differ from ONNX Runtime:\n{}",
        failures.join("\n")
    );
}

#[test]
fn batchnorm_folding_keeps_outputs() {
    let failures: Vec<String> = ["efficientnet_lite0", "mobilenetv2_nsfw"]
        .iter()
        .flat_map(|m| check_model(m, true))
        .collect();
    assert!(
        failures.is_empty(),
        "outputs differ from ONNX Runtime after BN folding:\n{}",
        failures.join("\n")
    );
}
