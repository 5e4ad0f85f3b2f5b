//! Readers as tolerant as TPU-MLIR's, and loud about it: qtables with
//! lower-case modes, one-token lines, other models' op names and
//! weight-only modes; calibration tables with rows that are not finite; and
//! the names of the exported QDQ model's inputs and outputs.

use std::path::{Path, PathBuf};

use crate::common::{
    deploy_int8_bm1684x, input_shapes, model, preprocess_flags, qtune, run_ok, scratch, stderr_of,
    tool, transform_workload, workloads,
};

/// A max-method table of `mlir` on two samples (fast; the values do not
/// matter to these tests).
fn quick_table(dir: &Path, name: &str, mlir: &Path) -> PathBuf {
    let dataset = if name == "minilm_l6_s128" {
        workloads().join("text/calib")
    } else {
        workloads().join("images/calib")
    };
    let table = dir.join(format!("{name}_cali_table"));
    run_ok(
        tool("run_calibration")
            .current_dir(dir)
            .arg(mlir)
            .arg("--dataset")
            .arg(dataset)
            .args(["--input_num", "2", "--cali_method", "max", "-o"])
            .arg(&table),
    );
    table
}

/// The ops-per-precision count of a deploy summary (`93 F16, 1 F32`).
fn count_of(summary: &str, mode: &str) -> usize {
    summary
        .split([',', '(', ')'])
        .find_map(|part| part.trim().strip_suffix(&format!(" {mode}"))?.parse().ok())
        .unwrap_or(0)
}

fn warning_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect()
}

#[test]
fn qtable_skips_what_tpu_mlir_skips_with_one_warning_and_strict_refuses() {
    let dir = scratch("readers_qtable");
    let mlir = transform_workload(&dir, "mobilenetv2_nsfw");
    let deploy = |qtable: &str, strict: bool, out: &str| {
        let mut cmd = tool("model_deploy");
        cmd.current_dir(&dir)
            .arg("--mlir")
            .arg(&mlir)
            .args(["--quantize", "F16", "--quantize_table", qtable])
            .args(["--model", out]);
        if strict {
            cmd.arg("--strict");
        }
        cmd.output().unwrap()
    };
    // Lower-case modes apply, as TPU-MLIR upper-cases them.
    std::fs::write(dir.join("ok"), "dense_3_Softmax f32\n").unwrap();
    let ok = deploy("ok", false, "ok.onnx");
    assert!(ok.status.success(), "{}", stderr_of(&ok));
    assert!(
        warning_lines(&stderr_of(&ok)).is_empty(),
        "{}",
        stderr_of(&ok)
    );
    assert_eq!(count_of(&stderr_of(&ok), "F32"), 1, "{}", stderr_of(&ok));
    // Another model's names and a one-token line: skipped, one warning
    // line that counts and lists them, the other rows still apply.
    std::fs::write(
        dir.join("q"),
        "# from another model\ndense_3_Softmax f32\nmobilenetv20_features_relu0_fwd_Relu F16\n\
         lonely_op\n/model.22/Sub_output_0_Sub bf16\n",
    )
    .unwrap();
    let out = deploy("q", false, "q.onnx");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let warnings = warning_lines(&err);
    assert_eq!(warnings.len(), 1, "{err}");
    let w = warnings[0];
    for part in [
        "qtable `q`: 3 line(s) that TPU-MLIR skips",
        "2 naming no op of the model",
        "line 3 `mobilenetv20_features_relu0_fwd_Relu`",
        "line 5 `/model.22/Sub_output_0_Sub`",
        "1 with one token (line 4 `lonely_op`)",
    ] {
        assert!(w.contains(part), "`{part}` not in: {w}");
    }
    assert_eq!(count_of(&err, "F32"), 1, "{err}");
    assert!(dir.join("q.onnx").is_file());
    // --strict: the same lines are an error, exit 2, nothing written.
    let out = deploy("q", true, "strict.onnx");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("error: qtable `q`: 3 line(s)") && err.contains("--strict"),
        "{err}"
    );
    assert!(!dir.join("strict.onnx").exists());
    // A clean qtable passes --strict.
    let out = deploy("ok", true, "ok_strict.onnx");
    assert!(out.status.success(), "{}", stderr_of(&out));
    // Weight-only rows on ops without a MatMul/Gemm weight are refused by
    // name (TPU-MLIR would quietly run them in F16); rows for other models
    // are not looked at, as in TPU-MLIR.
    std::fs::write(
        dir.join("w"),
        "dense_3_Softmax W8F16\nConv1_relu_Clip w4bf16\nelsewhere_MatMul W4F16\n",
    )
    .unwrap();
    let out = deploy("w", false, "w.onnx");
    let all = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let err = all.lines().find(|l| l.starts_with("error:")).unwrap_or("");
    assert!(
        err.contains("qtable row `Conv1_relu_Clip W4BF16`")
            && err.contains("(Conv) is not a MatMul/Gemm with a constant 2-D weight")
            && err.contains("write BF16")
            && !err.contains("elsewhere_MatMul"),
        "{all}"
    );
    // An unknown mode is an error naming the line (TPU-MLIR aborts on it).
    std::fs::write(dir.join("bad"), "dense_3_Softmax INT9\n").unwrap();
    let out = deploy("bad", false, "bad.onnx");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad, line 1") && err.contains("`INT9`"),
        "{err}"
    );
    // Every command that reads a qtable has --strict.
    for sub in ["run", "classify", "detect", "deploy"] {
        let out = run_ok(qtune().args([sub, "--help"]));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("--strict"),
            "qtune {sub} --help"
        );
    }
}

#[test]
fn non_finite_rows_are_ignored_as_tpu_mlir_ignores_them() {
    let dir = scratch("readers_non_finite");
    let name = "mobilenetv2_nsfw";
    let mlir = transform_workload(&dir, name);
    let table = quick_table(&dir, name, &mlir);
    let text = std::fs::read_to_string(&table).unwrap();
    // A row for a tensor the model does not have: ignored with a warning.
    let ghost = dir.join("ghost");
    std::fs::write(&ghost, format!("{text}ghost_Conv nan -inf inf\n")).unwrap();
    let out = tool("model_deploy")
        .arg("--mlir")
        .arg(&mlir)
        .arg("--calibration_table")
        .arg(&ghost)
        .arg("--model")
        .arg(dir.join("ghost.onnx"))
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(out.status.success(), "{err}");
    let warnings = warning_lines(&err);
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("1 row(s) with a number that is not finite")
            && warnings[0].contains("ghost_Conv (nan -inf inf)"),
        "{err}"
    );
    // A real tensor's row that is not finite (the input's, read by the
    // first INT8 Conv): TPU-MLIR leaves that tensor uncalibrated, so the
    // INT8 op reading it cannot be quantized.
    let victim = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let broken: String = text
        .lines()
        .map(|l| {
            if l.split(' ').next() == Some(victim.as_str()) {
                format!("{victim} inf 0.0000000 inf\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let bad = dir.join("bad");
    std::fs::write(&bad, broken).unwrap();
    let out = tool("model_deploy")
        .arg("--mlir")
        .arg(&mlir)
        .arg("--calibration_table")
        .arg(&bad)
        .arg("--model")
        .arg(dir.join("bad.onnx"))
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{victim} (inf 0.0000000 inf)")),
        "{err}"
    );
    assert!(
        err.contains(&format!("no row for tensor `{victim}`")),
        "{err}"
    );
}

/// The ONNX model's graph input and output names, by ONNX's own reader.
fn onnx_io_names(path: &Path) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, onnx\n\
             g = onnx.load(sys.argv[1], load_external_data=False).graph\n\
             init = {i.name for i in g.initializer}\n\
             print([i.name for i in g.input if i.name not in init], [o.name for o in g.output])",
        )
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// ONNX Runtime loads `path`; returns its input and output names.
fn ort_io_names(path: &Path) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, onnxruntime as ort\n\
             s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
             print([i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()])",
        )
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// model_transform, a quick table and model_deploy INT8: the QDQ model has
/// exactly the source ONNX model's input and output names, in order.
fn qdq_keeps_names(name: &str) {
    let dir = scratch(&format!("readers_names_{name}"));
    let mlir = transform_workload(&dir, name);
    let table = quick_table(&dir, name, &mlir);
    let onnx = dir.join(format!("{name}_int8.onnx"));
    deploy_int8_bm1684x(&mlir, &table, &onnx);
    let want = onnx_io_names(&model(name));
    assert_eq!(ort_io_names(&onnx), want, "{name}");
}

#[test]
fn qdq_keeps_onnx_names_efficientnet_lite0() {
    qdq_keeps_names("efficientnet_lite0");
}

#[test]
fn qdq_keeps_onnx_names_mobilenetv2_nsfw() {
    qdq_keeps_names("mobilenetv2_nsfw");
}

#[test]
fn qdq_keeps_onnx_names_yolox_det416() {
    qdq_keeps_names("yolox_det416");
}

#[test]
fn qdq_keeps_onnx_names_yolov8n_320() {
    qdq_keeps_names("yolov8n_320");
}

#[test]
fn qdq_keeps_onnx_names_ppocr_v4_det640() {
    qdq_keeps_names("ppocr_v4_det640");
}

#[test]
fn qdq_keeps_onnx_names_minilm_l6_s128() {
    qdq_keeps_names("minilm_l6_s128");
}

/// A `.onnx` given straight to model_deploy keeps its names too, while the
/// `_tpu_outputs.npz` and the reference check keep TPU-MLIR's op names (the
/// keys of TPU-MLIR's own npz files).
#[test]
fn onnx_source_names_and_op_named_npz() {
    let dir = scratch("readers_names_onnx_source");
    let name = "efficientnet_lite0";
    let img = workloads().join("images/val/ultralytics_bus.jpg");
    run_ok(
        tool("model_transform")
            .current_dir(&dir)
            .args(["--model_name", name, "--model_def"])
            .arg(model(name))
            .args(["--input_shapes", input_shapes(name)])
            .args(preprocess_flags(name))
            .arg("--test_input")
            .arg(&img)
            .args(["--test_result", "top_outputs.npz", "--mlir", "e.mlir"]),
    );
    let table = quick_table(&dir, name, &dir.join("e.mlir"));
    let onnx = dir.join("e_int8.onnx");
    run_ok(
        tool("model_deploy")
            .current_dir(&dir)
            .arg("--mlir")
            .arg(model(name))
            .arg("--calibration_table")
            .arg(&table)
            .args(["--test_input", &format!("{name}_in_f32.npz")])
            .args(["--test_reference", "top_outputs.npz", "--model"])
            .arg(&onnx),
    );
    assert_eq!(ort_io_names(&onnx), onnx_io_names(&model(name)));
    let npz = qtune_tensor::read_npz(&dir.join("e_int8_tpu_outputs.npz")).unwrap();
    assert!(
        npz.iter().any(|(n, _)| n == "logits_Gemm"),
        "{:?}",
        npz.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
}
