//! model_deploy: the seed's commands, its errors, and the QDQ ONNX model
//! checked against ONNX Runtime on every validation sample of the six
//! workloads.

use std::path::{Path, PathBuf};

use crate::common::{
    deploy_int8_bm1684x, input_shapes, model, preprocess_flags, qtune, run_ok, scratch, stderr_of,
    stdout_of, tool, transform_mobilenet, transform_workload, workloads,
};

/// ONNX Runtime running the exported QDQ model vs qtune's simulation of the
/// same quantized model: the lowest output cosine allowed on any sample.
const MIN_AGREEMENT_COS: f64 = 0.999;

/// MiniLM's bounds. Its all-int8 model (0.71 cosine to float) amplifies a
/// single code flipped by float rounding: ONNX Runtime 1.32's
/// LayerNormalization kernel rounds differently from a sequential float32
/// one (about 1e-6 relative, on nearly every element), which after the F16
/// rounding and the int8 grid flips one code in tens of thousands in some
/// samples, and the attention grids downstream turn that one flip into
/// thousands (measured: sample 35 of the validation set, one flipped code in
/// layer 0's output LayerNorm, 130,858 differing codes two layers on). Every
/// quantized tensor agrees code for code up to the first such flip; most
/// samples agree to 0.9999 at the output, a few chaotic ones do not, so the
/// test bounds the mean and the worst sample instead of every sample.
const MINILM_MIN_COS: f64 = 0.9;
const MINILM_MIN_MEAN_COS: f64 = 0.995;

/// model_transform + run_calibration (kl, the calibration set) in `dir`;
/// returns the .mlir and the table.
fn transform_and_calibrate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    transform_workload(dir, name);
    let (dataset, num) = if name == "minilm_l6_s128" {
        (workloads().join("text/calib"), "100")
    } else {
        (workloads().join("images/calib"), "65")
    };
    let table = format!("{name}_cali_table");
    run_ok(
        tool("run_calibration")
            .current_dir(dir)
            .arg(format!("{name}.mlir"))
            .arg("--dataset")
            .arg(&dataset)
            .args(["--input_num", num, "-o", &table]),
    );
    (dir.join(format!("{name}.mlir")), dir.join(table))
}

fn python_ready() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import onnxruntime, numpy, PIL"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with onnxruntime, numpy and pillow is required for this test (pip install onnxruntime numpy pillow)"
    );
}

fn script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/qdq_agreement.py"
    ))
}

/// Calibrates `name` with kl, deploys it INT8 for bm1684x, and compares
/// ONNX Runtime on the QDQ model with `qtune run` on the quantized model,
/// sample by sample over the validation set.
fn agreement(name: &str) {
    agreement_within(name, MIN_AGREEMENT_COS, None);
}

fn agreement_within(name: &str, min_cos: f64, min_mean: Option<f64>) -> (PathBuf, PathBuf) {
    python_ready();
    let dir = scratch(&format!("deploy_agree_{name}"));
    let (mlir, table) = transform_and_calibrate(&dir, name);
    let onnx = dir.join(format!("{name}_int8.onnx"));
    deploy_int8_bm1684x(&mlir, &table, &onnx);
    let inputs = dir.join("val_inputs.npz");
    let out = std::process::Command::new("python3")
        .arg(script())
        .arg("inputs")
        .arg(workloads())
        .arg(name)
        .arg(&inputs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let sim = dir.join("sim.npz");
    run_ok(
        qtune()
            .arg("run")
            .arg(&mlir)
            .arg("--input")
            .arg(&inputs)
            .arg("-o")
            .arg(&sim)
            .arg("--calibration_table")
            .arg(&table)
            .args(["--processor", "bm1684x"]),
    );
    let out = std::process::Command::new("python3")
        .arg(script())
        .arg("compare")
        .arg(&onnx)
        .arg(&inputs)
        .arg(&sim)
        .arg(min_cos.to_string())
        .args(min_mean.map(|m| m.to_string()))
        .output()
        .unwrap();
    let text = stdout_of(&out);
    println!("{name}: {text}");
    assert!(
        out.status.success(),
        "{name}: ONNX Runtime and qtune disagree below {min_cos} (mean {min_mean:?}):\n{text}{}",
        stderr_of(&out)
    );
    (dir, mlir)
}

#[test]
fn qdq_agrees_with_simulation_efficientnet_lite0() {
    agreement("efficientnet_lite0");
}

#[test]
fn qdq_agrees_with_simulation_mobilenetv2_nsfw() {
    agreement("mobilenetv2_nsfw");
}

#[test]
fn qdq_agrees_with_simulation_yolox_det416() {
    agreement("yolox_det416");
}

#[test]
fn qdq_agrees_with_simulation_yolov8n_320() {
    agreement("yolov8n_320");
}

#[test]
fn qdq_agrees_with_simulation_ppocr_v4_det640() {
    agreement("ppocr_v4_det640");
}

#[test]
fn qdq_agrees_with_simulation_minilm_l6_s128() {
    let (dir, mlir) = agreement_within("minilm_l6_s128", MINILM_MIN_COS, Some(MINILM_MIN_MEAN_COS));
    // The output bounds above are loose because of the cascade; the codes
    // themselves are held tight: in every sample, every quantized tensor
    // agrees code for code up to the first flip, and that flip touches at
    // most 1e-4 of its tensor's codes, by one step.
    let out = std::process::Command::new("python3")
        .arg(script())
        .arg("codes")
        .arg(assert_cmd::cargo::cargo_bin("qtune"))
        .arg(&mlir)
        .arg(dir.join("minilm_l6_s128_cali_table"))
        .arg(dir.join("minilm_l6_s128_int8.onnx"))
        .arg(dir.join("val_inputs.npz"))
        .arg("0.0001")
        .output()
        .unwrap();
    let text = stdout_of(&out);
    println!("{text}");
    assert!(
        out.status.success(),
        "minilm: codes disagree beyond one float-rounding flip:\n{text}{}",
        stderr_of(&out)
    );
}

/// The seed's model_deploy commands (F32, INT8, INT8 with a qtable) on the
/// seed's model name, with workload paths and `.onnx` outputs; plus the
/// reference check and the .bmodel explanation.
#[test]
fn seed_commands_run_with_onnx_outputs() {
    let dir = scratch("deploy_seed");
    let img = workloads().join("images/val/ultralytics_bus.jpg");
    transform_mobilenet(
        &dir,
        "mobilenet_v2",
        Some(&img),
        Some("mobilenet_v2_top_outputs.npz"),
    );
    run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg("mobilenet_v2.mlir")
            .arg("--dataset")
            .arg(workloads().join("images/calib"))
            .args(["--input_num", "65", "-o", "mobilenet_v2_cali_table"]),
    );
    // Step 3 of the seed: F32.
    run_ok(tool("model_deploy").current_dir(&dir).args([
        "--mlir",
        "mobilenet_v2.mlir",
        "--quantize",
        "F32",
        "--processor",
        "bm1684",
        "--model",
        "mobilenet_v2_bm1684_f32.onnx",
    ]));
    // Step 4: symmetric INT8.
    let sym = run_ok(tool("model_deploy").current_dir(&dir).args([
        "--mlir",
        "mobilenet_v2.mlir",
        "--quantize",
        "INT8",
        "--processor",
        "bm1684",
        "--calibration_table",
        "mobilenet_v2_cali_table",
        "--model",
        "mobilenet_v2_bm1684_int8_sym.onnx",
    ]));
    // Checked against the float reference: bm1684x (per-channel weights)
    // passes TPU-MLIR's INT8 tolerance; a stricter one fails with exit 1 and
    // writes nothing.
    let out = run_ok(tool("model_deploy").current_dir(&dir).args([
        "--mlir",
        "mobilenet_v2.mlir",
        "--quantize",
        "INT8",
        "--processor",
        "bm1684x",
        "--calibration_table",
        "mobilenet_v2_cali_table",
        "--test_input",
        "mobilenet_v2_in_f32.npz",
        "--test_reference",
        "mobilenet_v2_top_outputs.npz",
        "--model",
        "mobilenet_v2_bm1684x_int8_sym.onnx",
    ]));
    assert!(stdout_of(&out).contains("1 passed"), "{}", stdout_of(&out));
    let out = tool("model_deploy")
        .current_dir(&dir)
        .args([
            "--mlir",
            "mobilenet_v2.mlir",
            "--quantize",
            "INT8",
            "--processor",
            "bm1684",
            "--calibration_table",
            "mobilenet_v2_cali_table",
            "--test_input",
            "mobilenet_v2_in_f32.npz",
            "--test_reference",
            "mobilenet_v2_top_outputs.npz",
            "--tolerance",
            "0.9999,0.999",
            "--model",
            "strict.onnx",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("below tolerance"),
        "{}",
        stderr_of(&out)
    );
    assert!(!dir.join("strict.onnx").exists());
    // Mixed precision: a qtable as search_qtable writes it.
    std::fs::write(
        dir.join("mobilenet_v2_qtable"),
        "# op_name   quantize_mode\nConv1_relu_Clip F32\ndense_3_lin_Gemm F32\n",
    )
    .unwrap();
    let out = run_ok(tool("model_deploy").current_dir(&dir).args([
        "--mlir",
        "mobilenet_v2.mlir",
        "--quantize",
        "INT8",
        "--processor",
        "bm1684",
        "--calibration_table",
        "mobilenet_v2_cali_table",
        "--quantize_table",
        "mobilenet_v2_qtable",
        "--model",
        "mobilenet_v2_bm1684_int8_mix.onnx",
    ]));
    // The summary counts ops per precision: two more F32 than all-INT8.
    let f32_ops = |text: &str| -> usize {
        text.split([',', '(', ')'])
            .find_map(|part| part.trim().strip_suffix(" F32")?.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        f32_ops(&stderr_of(&out)),
        f32_ops(&stderr_of(&sym)) + 2,
        "{}\n{}",
        stderr_of(&sym),
        stderr_of(&out)
    );
    for f in [
        "mobilenet_v2_bm1684_f32.onnx",
        "mobilenet_v2_bm1684_int8_sym.onnx",
        "mobilenet_v2_bm1684_int8_mix.onnx",
    ] {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert!(bytes.len() > 1_000_000, "{f} is {} bytes", bytes.len());
    }
    // The F32 deploy is the float model, a drop-in for it: run on the same
    // input, it gives the source ONNX model's output under the same name.
    for (m, out) in [
        (dir.join("mobilenet_v2_bm1684_f32.onnx"), "f32_out.npz"),
        (model("mobilenetv2_nsfw"), "float_out.npz"),
    ] {
        let o = run_ok(qtune().current_dir(&dir).arg("run").arg(&m).args([
            "--input",
            "mobilenet_v2_in_f32.npz",
            "-o",
            out,
        ]));
        assert!(stderr_of(&o).contains("wrote"));
    }
    let out = run_ok(qtune().current_dir(&dir).args([
        "compare",
        "f32_out.npz",
        "float_out.npz",
        "--tolerance",
        "0.99999,0.9999",
    ]));
    assert!(stdout_of(&out).contains("1 passed"), "{}", stdout_of(&out));

    // A .bmodel names what qtune writes instead and exits 2.
    let out = tool("model_deploy")
        .current_dir(&dir)
        .args([
            "--mlir",
            "mobilenet_v2.mlir",
            "--quantize",
            "INT8",
            "--processor",
            "bm1684",
            "--calibration_table",
            "mobilenet_v2_cali_table",
            "--model",
            "mobilenet_v2_bm1684_int8_sym.bmodel",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("TPU-MLIR") && err.contains("mobilenet_v2_bm1684_int8_sym.onnx"),
        "{err}"
    );
    assert!(!dir.join("mobilenet_v2_bm1684_int8_sym.bmodel").exists());
}

#[test]
fn bad_tables_are_named() {
    let dir = scratch("deploy_errors");
    run_ok(
        tool("model_transform")
            .current_dir(&dir)
            .args(["--model_name", "m", "--model_def"])
            .arg(model("mobilenetv2_nsfw"))
            .args(["--input_shapes", input_shapes("mobilenetv2_nsfw")])
            .args(preprocess_flags("mobilenetv2_nsfw"))
            .args(["--mlir", "m.mlir"]),
    );
    // INT8 without a table.
    let out = tool("model_deploy")
        .current_dir(&dir)
        .args([
            "--mlir",
            "m.mlir",
            "--quantize",
            "INT8",
            "--model",
            "m.onnx",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("calibration table"),
        "{}",
        stderr_of(&out)
    );
    // A table that misses a tensor names it.
    std::fs::write(dir.join("t"), "# header\ninput_1 1.0 -1.0 1.0\n").unwrap();
    let out = tool("model_deploy")
        .current_dir(&dir)
        .args([
            "--mlir",
            "m.mlir",
            "--calibration_table",
            "t",
            "--model",
            "m.onnx",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("no row for tensor") && err.contains("table `t`"),
        "{err}"
    );
    // A qtable layer that is not in the model: TPU-MLIR ignores it, qtune
    // too, with a warning naming it; --strict refuses it (readers.rs has
    // the details).
    std::fs::write(dir.join("q"), "nope F16\n").unwrap();
    let out = tool("model_deploy")
        .current_dir(&dir)
        .args([
            "--mlir",
            "m.mlir",
            "--quantize",
            "F16",
            "--quantize_table",
            "q",
            "--strict",
        ])
        .args(["--model", "m.onnx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("`nope`"), "{}", stderr_of(&out));
    // An unknown processor.
    let out = tool("model_deploy")
        .current_dir(&dir)
        .args([
            "--mlir",
            "m.mlir",
            "--processor",
            "bm9999",
            "--model",
            "m.onnx",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("bm1684x"), "{}", stderr_of(&out));
    assert!(!dir.join("m.onnx").exists());
}

/// The examples run on the fake-quantized model (tables) and on the
/// deployed QDQ ONNX model, with the same results: qtune runs a QDQ model's
/// int8 layers on integers, as its simulation does.
#[test]
fn classify_and_detect_run_quantized_and_deployed_models_alike() {
    let dir = scratch("deploy_examples");
    let demo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/demo"));
    let flags = [
        "--resize_dims",
        "224,224",
        "--pixel_format",
        "rgb",
        "--mean",
        "127,127,127",
        "--scale",
        "0.0078125,0.0078125,0.0078125",
    ];
    run_ok(
        tool("model_transform")
            .current_dir(&dir)
            .args(["--model_name", "e", "--model_def"])
            .arg(demo.join("efficientnet_lite0.onnx"))
            .args(["--input_shapes", "[[1,3,224,224]]"])
            .args(flags)
            .args(["--mlir", "e.mlir"]),
    );
    run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg("e.mlir")
            .arg("--dataset")
            .arg(demo.join("images"))
            .args(["--input_num", "32", "-o", "e_cali_table"]),
    );
    run_ok(tool("model_deploy").current_dir(&dir).args([
        "--mlir",
        "e.mlir",
        "--calibration_table",
        "e_cali_table",
        "--model",
        "e_int8.onnx",
    ]));
    let classify = |model: &str, extra: &[&str]| {
        let out = run_ok(
            qtune()
                .current_dir(&dir)
                .args(["classify", model, "--dataset"])
                .arg(demo.join("images"))
                .arg("--labels")
                .arg(demo.join("imagenet1k_classes.txt"))
                .args(extra),
        );
        stdout_of(&out)
    };
    let float = classify("e.mlir", &[]);
    let fake = classify("e.mlir", &["--calibration_table", "e_cali_table"]);
    let deployed = classify("e_int8.onnx", &flags);
    assert_eq!(fake, deployed);
    assert_ne!(
        float, fake,
        "the quantized model printed the float probabilities"
    );
    // Top-1 agreement with the float model on the 32 photos.
    let top1 = |s: &str| -> Vec<String> {
        s.lines()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| !w[0].starts_with(' ') && w[1].starts_with(' '))
            .map(|w| w[1].rsplit(' ').next().unwrap_or("").to_string())
            .collect()
    };
    let (a, b) = (top1(&float), top1(&fake));
    assert_eq!(a.len(), 32);
    let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert!(agree >= 26, "top-1 agreement {agree}/32");

    // Detection on a YOLOv8 model: tables vs deployed QDQ give the same boxes.
    let y = workloads().join("models/yolov8n_320.onnx");
    let yflags = preprocess_flags("yolov8n_320");
    run_ok(
        tool("model_transform")
            .current_dir(&dir)
            .args(["--model_name", "y", "--model_def"])
            .arg(&y)
            .args(["--input_shapes", input_shapes("yolov8n_320")])
            .args(yflags)
            .args(["--mlir", "y.mlir"]),
    );
    run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg("y.mlir")
            .arg("--dataset")
            .arg(workloads().join("images/calib"))
            .args(["--input_num", "16", "-o", "y_cali_table"]),
    );
    run_ok(tool("model_deploy").current_dir(&dir).args([
        "--mlir",
        "y.mlir",
        "--calibration_table",
        "y_cali_table",
        "--model",
        "y_int8.onnx",
    ]));
    let img = workloads().join("images/val/matplotlib_grace_hopper.jpg");
    let fake = run_ok(
        qtune()
            .current_dir(&dir)
            .args([
                "detect",
                "y.mlir",
                "--calibration_table",
                "y_cali_table",
                "--input",
            ])
            .arg(&img)
            .args(["-o", "boxes.png"]),
    );
    // The .onnx takes the preprocessing flags.
    let deployed = run_ok(
        qtune()
            .current_dir(&dir)
            .args(["detect", "y_int8.onnx", "--input"])
            .arg(&img)
            .args(yflags),
    );
    assert_eq!(stdout_of(&fake), stdout_of(&deployed));
    assert!(
        !stdout_of(&fake).trim().is_empty(),
        "no box on the portrait"
    );
    assert!(dir.join("boxes.png").is_file());
}
