//! Imports each workload model and checks it against what the `onnx` Python
//! package reports (the counts below were taken with `onnx.load` and
//! `collections.Counter(n.op_type for n in graph.node)`; Constant nodes are
//! not counted because they become constant values).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qtune_onnx::{ImportOptions, import_onnx_with_info};

const MODELS_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/workloads/models"
);

struct Case {
    file: &'static str,
    opset: i64,
    inputs: &'static [(&'static str, &'static [usize])],
    outputs: &'static [&'static str],
    op_counts: &'static [(&'static str, usize)],
    /// Initializers plus Constant nodes.
    constants: usize,
}

const CASES: &[Case] = &[
    Case {
        file: "efficientnet_lite0.onnx",
        opset: 13,
        inputs: &[("input", &[1, 3, 224, 224])],
        outputs: &["logits"],
        op_counts: &[
            ("Add", 9),
            ("BatchNormalization", 49),
            ("Clip", 33),
            ("Conv", 49),
            ("Gemm", 1),
            ("GlobalAveragePool", 1),
            ("Reshape", 1),
        ],
        constants: 250,
    },
    Case {
        file: "minilm_l6_s128.onnx",
        opset: 14,
        inputs: &[
            ("input_ids", &[1, 128]),
            ("attention_mask", &[1, 128]),
            ("token_type_ids", &[1, 128]),
        ],
        outputs: &["last_hidden_state", "sentence_embedding"],
        op_counts: &[
            ("Add", 58),
            ("And", 1),
            ("Cast", 2),
            ("Clip", 2),
            ("Div", 21),
            ("Erf", 6),
            ("Expand", 2),
            ("Flatten", 1),
            ("Gather", 3),
            ("Gemm", 30),
            ("MatMul", 18),
            ("Mul", 32),
            ("Pow", 13),
            ("ReduceL2", 1),
            ("ReduceMean", 26),
            ("ReduceSum", 2),
            ("Reshape", 43),
            ("Softmax", 6),
            ("Sqrt", 13),
            ("Sub", 13),
            ("Transpose", 24),
            ("Unsqueeze", 1),
            ("Where", 1),
        ],
        constants: 121,
    },
    Case {
        file: "mobilenetv2_nsfw.onnx",
        opset: 13,
        inputs: &[("input_1", &[1, 3, 224, 224])],
        outputs: &["dense_3"],
        op_counts: &[
            ("Add", 10),
            ("AveragePool", 1),
            ("BatchNormalization", 52),
            ("Clip", 35),
            ("Conv", 52),
            ("Flatten", 1),
            ("Gemm", 3),
            ("Relu", 2),
            ("Softmax", 1),
        ],
        constants: 268,
    },
    Case {
        file: "ppocr_v4_det640.onnx",
        opset: 12,
        inputs: &[("x", &[1, 3, 640, 640])],
        outputs: &["sigmoid_0.tmp_0"],
        op_counts: &[
            ("Add", 87),
            ("Clip", 24),
            ("Concat", 1),
            ("Conv", 62),
            ("ConvTranspose", 2),
            ("Div", 24),
            ("GlobalAveragePool", 10),
            ("HardSigmoid", 10),
            ("Mul", 58),
            ("Relu", 12),
            ("Resize", 6),
            ("Sigmoid", 1),
        ],
        constants: 203,
    },
    Case {
        file: "yolov8n_320.onnx",
        opset: 17,
        inputs: &[("images", &[1, 3, 320, 320])],
        outputs: &["output0"],
        op_counts: &[
            ("Add", 8),
            ("Concat", 19),
            ("Conv", 64),
            ("Div", 1),
            ("MaxPool", 3),
            ("Mul", 58),
            ("Reshape", 5),
            ("Resize", 2),
            ("Sigmoid", 58),
            ("Slice", 2),
            ("Softmax", 1),
            ("Split", 9),
            ("Sub", 2),
            ("Transpose", 1),
        ],
        constants: 143,
    },
    Case {
        file: "yolox_det416.onnx",
        opset: 11,
        inputs: &[("images", &[1, 3, 416, 416])],
        outputs: &["output"],
        op_counts: &[
            ("Add", 7),
            ("Concat", 18),
            ("Conv", 83),
            ("MaxPool", 3),
            ("Mul", 74),
            ("Reshape", 3),
            ("Resize", 2),
            ("Sigmoid", 80),
            ("Slice", 8),
            ("Transpose", 1),
        ],
        constants: 176,
    },
];

fn models_dir() -> PathBuf {
    let dir = PathBuf::from(MODELS_DIR);
    assert!(
        dir.is_dir(),
        "workload models not found at {}; run scripts/fetch-workloads.sh first",
        dir.display()
    );
    dir
}

fn check(case: &Case, dir: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    let path = dir.join(case.file);
    let (graph, info) = match import_onnx_with_info(&path, &ImportOptions::default()) {
        Ok(g) => g,
        Err(e) => return vec![format!("import failed: {e}")],
    };
    if info.opset != case.opset {
        failures.push(format!("opset {} != {}", info.opset, case.opset));
    }

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, node) in graph.nodes() {
        *counts.entry(node.op.op_type()).or_default() += 1;
    }
    let expected: BTreeMap<&str, usize> = case.op_counts.iter().copied().collect();
    if counts != expected {
        failures.push(format!("op counts {counts:?}\n  expected {expected:?}"));
    }

    let inputs: Vec<(String, Vec<usize>)> = graph
        .inputs
        .iter()
        .map(|&i| {
            let v = graph.value(i);
            (
                v.name.clone(),
                v.shape.as_ref().map(|s| s.0.clone()).unwrap_or_default(),
            )
        })
        .collect();
    let expected_inputs: Vec<(String, Vec<usize>)> = case
        .inputs
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect();
    if inputs != expected_inputs {
        failures.push(format!("inputs {inputs:?} != {expected_inputs:?}"));
    }

    let outputs: Vec<&str> = graph
        .outputs
        .iter()
        .map(|&o| graph.value(o).name.as_str())
        .collect();
    if outputs != case.outputs {
        failures.push(format!("outputs {outputs:?} != {:?}", case.outputs));
    }

    let constants = graph.values().filter(|(_, v)| v.constant.is_some()).count();
    if constants != case.constants {
        failures.push(format!(
            "{constants} constants, expected {}",
            case.constants
        ));
    }
    // Constants carry their shapes and dtypes; inputs are not constants.
    for (_, v) in graph.values() {
        if let Some(t) = &v.constant
            && (v.shape.as_ref() != Some(t.shape()) || v.dtype != t.dtype())
        {
            failures.push(format!(
                "constant '{}' has inconsistent shape/dtype",
                v.name
            ));
        }
    }
    if let Err(e) = graph.check_topological() {
        failures.push(format!("not topological: {e}"));
    }
    failures
}

#[test]
fn workload_models_import_like_onnx_sees_them() {
    let dir = models_dir();
    let mut report = String::new();
    for case in CASES {
        for f in check(case, &dir) {
            report.push_str(&format!("{}: {f}\n", case.file));
        }
    }
    assert!(report.is_empty(), "\n{report}");
}

#[test]
fn node_names_are_kept() {
    let dir = models_dir();
    let graph = qtune_onnx::import_onnx(&dir.join("yolov8n_320.onnx"), &ImportOptions::default())
        .expect("yolov8n imports");
    let names: std::collections::HashSet<&str> =
        graph.nodes().map(|(_, n)| n.name.as_str()).collect();
    assert_eq!(names.len(), graph.node_count(), "node names are unique");
    // The first conv of yolov8n, as torch.onnx.export named it.
    assert!(
        names.contains("/model.0/conv/Conv"),
        "{:?}",
        names.iter().take(5).collect::<Vec<_>>()
    );
}

#[test]
fn model_info_reports_producer() {
    let dir = models_dir();
    let model = qtune_onnx::read_model(&dir.join("efficientnet_lite0.onnx")).expect("decodes");
    let info = qtune_onnx::model_info(&model, "efficientnet_lite0.onnx").expect("info");
    assert_eq!(info.producer, "pytorch 2.15.0");
    assert_eq!(info.ir_version, 7);
    assert_eq!(info.opset, 13);
}

#[test]
fn truncated_model_is_not_a_valid_onnx_model() {
    let dir = models_dir();
    let bytes = std::fs::read(dir.join("ppocr_v4_det640.onnx")).expect("read model");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qtune_onnx_truncated.onnx");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write truncated copy");
    let err = qtune_onnx::import_onnx(&path, &ImportOptions::default())
        .expect_err("a truncated model must not import")
        .to_string();
    assert!(
        err.contains("qtune_onnx_truncated.onnx") && err.contains("is not a valid ONNX model"),
        "{err}"
    );
}
