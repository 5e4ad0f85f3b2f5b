//! Weight-only modes (W8F16, W8BF16, W4F16, W4BF16, `--q_group_size`,
//! `--q_symmetric`): the integer weights against an independent numpy
//! computation of TPU-MLIR's rules (`tests/weight_only_oracle.py`), the
//! exported model in ONNX Runtime against qtune's simulation on every
//! validation sentence / image, a qtable mixing INT8 and weight-only
//! layers, and the flag errors.

use std::path::{Path, PathBuf};

use crate::common::{
    qtune, run_ok, scratch, stderr_of, stdout_of, tool, transform_workload, workloads,
};

/// ONNX Runtime on the export vs qtune's simulation: lowest cosine allowed
/// on any sample (issue 14's bar).
const MIN_COS: f64 = 0.999;

fn tests_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests"))
}

fn python(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new("python3")
        .args(args)
        .output()
        .expect("python3 with numpy, onnx and onnxruntime (pip install numpy onnx onnxruntime)")
}

/// How many of the 60 validation sentences the MiniLM weight-only tests
/// compare (every third). Their agreement is code for code, so a third of
/// the set checks the same kernels at a third of the suite's time.
const VAL_SENTENCES: usize = 20;

/// The validation inputs of `name` (for MiniLM `VAL_SENTENCES` of them,
/// spread over the set) stacked into `dir/val_inputs.npz`.
fn val_inputs(dir: &Path, name: &str) -> PathBuf {
    let inputs = dir.join("val_inputs.npz");
    let limit = VAL_SENTENCES.to_string();
    let mut args = vec![
        tests_dir().join("qdq_agreement.py").into_os_string(),
        "inputs".into(),
        workloads().into_os_string(),
        name.into(),
        inputs.clone().into_os_string(),
    ];
    if name == "minilm_l6_s128" {
        args.push(limit.into());
    }
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = python(&args);
    assert!(out.status.success(), "{}", stderr_of(&out));
    inputs
}

/// The numpy oracle on the `bits`-bit weight-only weights of `onnx`.
fn check_codes(
    name: &str,
    onnx: &Path,
    bits: u32,
    group: usize,
    symmetric: bool,
    fmt: &str,
) -> String {
    let source = workloads().join("models").join(format!("{name}.onnx"));
    let (bits, group) = (bits.to_string(), group.to_string());
    let out = python(&[
        tests_dir().join("weight_only_oracle.py").as_os_str(),
        "codes".as_ref(),
        source.as_os_str(),
        onnx.as_os_str(),
        bits.as_ref(),
        group.as_ref(),
        if symmetric { "1" } else { "0" }.as_ref(),
        fmt.as_ref(),
    ]);
    let text = stdout_of(&out);
    println!("{}: {text}", onnx.display());
    assert!(
        out.status.success() && text.contains(", 0 mismatched;"),
        "{}: integer weights differ from the numpy computation:\n{text}{}",
        onnx.display(),
        stderr_of(&out)
    );
    text
}

/// ONNX Runtime on `onnx` vs `sim` on every sample of `inputs`.
fn check_agreement(onnx: &Path, inputs: &Path, sim: &Path) -> String {
    let out = python(&[
        tests_dir().join("qdq_agreement.py").as_os_str(),
        "compare".as_ref(),
        onnx.as_os_str(),
        inputs.as_os_str(),
        sim.as_os_str(),
        MIN_COS.to_string().as_ref(),
    ]);
    let text = stdout_of(&out);
    println!("{}: {text}", onnx.display());
    assert!(
        out.status.success(),
        "{}: ONNX Runtime and qtune disagree below {MIN_COS}:\n{text}{}",
        onnx.display(),
        stderr_of(&out)
    );
    text
}

/// Deploys `mlir` with `flags`, runs the simulation with the same flags on
/// `inputs`, and checks codes and agreement.
fn deploy_and_check(
    dir: &Path,
    mlir: &Path,
    inputs: &Path,
    tag: &str,
    flags: &[&str],
) -> (PathBuf, String) {
    let onnx = dir.join(format!("{tag}.onnx"));
    let out = run_ok(
        tool("model_deploy")
            .arg("--mlir")
            .arg(mlir)
            .args(["--processor", "bm1684x"])
            .args(flags)
            .arg("--model")
            .arg(&onnx),
    );
    let summary = stderr_of(&out);
    let sim = dir.join(format!("{tag}_sim.npz"));
    run_ok(
        qtune()
            .arg("run")
            .arg(mlir)
            .arg("--input")
            .arg(inputs)
            .arg("-o")
            .arg(&sim)
            .args(["--processor", "bm1684x"])
            .args(flags),
    );
    let text = check_agreement(&onnx, inputs, &sim);
    (onnx, format!("{summary}{text}"))
}

#[test]
fn minilm_weight_only_codes_match_numpy_and_onnx_runtime_matches_simulation() {
    let name = "minilm_l6_s128";
    let dir = scratch("weight_only_minilm");
    let mlir = transform_workload(&dir, name);
    let inputs = val_inputs(&dir, name);
    // (mode, bits, group, symmetric, float type): per channel and per group,
    // 8 and 4 bits, F16 and BF16, asymmetric and symmetric groups. 4-bit
    // layers are written as MatMulNBits when the group is a multiple of 16
    // (per channel: K = 384 and 1536, blocks of 128 and 512), else (group 8)
    // as DequantizeLinear.
    let configs: [(&str, u32, usize, bool, &str); 5] = [
        ("W8F16", 8, 0, false, "F16"),
        ("W4F16", 4, 128, false, "F16"),
        ("W8BF16", 8, 64, true, "BF16"),
        ("W4BF16", 4, 0, false, "BF16"),
        ("W4F16", 4, 8, true, "F16"),
    ];
    for (mode, bits, group, symmetric, fmt) in configs {
        let g = group.to_string();
        let mut flags = vec!["--quantize", mode];
        if group > 0 {
            flags.extend(["--q_group_size", &g]);
        }
        if symmetric {
            flags.push("--q_symmetric");
        }
        let tag = format!("{mode}_g{group}{}", if symmetric { "s" } else { "" });
        let (onnx, text) = deploy_and_check(&dir, &mlir, &inputs, &tag, &flags);
        // Every MatMul/Gemm with a weight (6 layers x 6) is weight-only;
        // nothing is int8-quantized; every sentence was compared.
        assert!(
            text.contains(&format!("36 {mode}")) && text.contains("0 tensors quantized"),
            "{text}"
        );
        assert!(
            text.contains(&format!("over {VAL_SENTENCES} samples (0 below")),
            "{text}"
        );
        let nbits = bits == 4 && group % 16 == 0;
        assert_eq!(
            text.contains("36 4-bit weight-only layers as com.microsoft MatMulNBits"),
            nbits,
            "{text}"
        );
        let oracle = check_codes(name, &onnx, bits, group, symmetric, fmt);
        let want = if nbits {
            "(36 as MatMulNBits)"
        } else {
            "(0 as MatMulNBits)"
        };
        assert!(oracle.contains(want), "{oracle}");
    }
}

#[test]
fn int8_model_with_weight_only_qtable_rows_runs_in_onnx_runtime() {
    let name = "mobilenetv2_nsfw";
    let dir = scratch("weight_only_mixed");
    let mlir = transform_workload(&dir, name);
    run_ok(
        tool("run_calibration")
            .current_dir(&dir)
            .arg(&mlir)
            .arg("--dataset")
            .arg(workloads().join("images/calib"))
            .args(["--input_num", "16", "-o", "cali"]),
    );
    // The two hidden fully connected layers (fused Relu) weight-only, the
    // rest INT8.
    std::fs::write(
        dir.join("qtable"),
        "dense_1_relu_Relu W8F16\ndense_2_relu_Relu W4F16\n",
    )
    .unwrap();
    let table = dir.join("cali").display().to_string();
    let qtable = dir.join("qtable").display().to_string();
    let inputs = val_inputs(&dir, name);
    let flags = [
        "--quantize",
        "INT8",
        "--calibration_table",
        &table,
        "--quantize_table",
        &qtable,
    ];
    let (onnx, text) = deploy_and_check(&dir, &mlir, &inputs, "mixed", &flags);
    assert!(
        text.contains("1 W8F16, 1 W4F16")
            && text.contains("2 weight-only weights")
            && text.contains("(1 4-bit weight-only layers as com.microsoft MatMulNBits)"),
        "{text}"
    );
    assert!(text.contains("over 32 samples (0 below"), "{text}");
    check_codes(name, &onnx, 8, 0, false, "F16");
    // dense_2: K = 1280 per channel, written as blocks of 256.
    let oracle = check_codes(name, &onnx, 4, 0, false, "F16");
    assert!(oracle.contains("(1 as MatMulNBits)"), "{oracle}");
}

#[test]
fn bad_weight_only_flags_are_refused_with_exit_2() {
    let dir = scratch("weight_only_flags");
    let mlir = transform_workload(&dir, "minilm_l6_s128");
    let deploy = |flags: &[&str], out: &str| {
        let o = tool("model_deploy")
            .arg("--mlir")
            .arg(&mlir)
            .args(flags)
            .arg("--model")
            .arg(dir.join(out))
            .output()
            .unwrap();
        assert!(!dir.join(out).exists(), "{out} written despite the error");
        o
    };
    let cases: [(&[&str], &str); 6] = [
        (
            &["--quantize", "W4F16", "--q_group_size", "0"],
            "--q_group_size 0: expected a positive group size",
        ),
        // MiniLM's K are 384 and 1536: 100 divides neither.
        (
            &["--quantize", "W4F16", "--q_group_size", "100"],
            "--q_group_size 100: does not divide K = 384",
        ),
        (
            &["--quantize", "W8F16", "--q_group_size=-8"],
            "invalid value '-8' for '--q_group_size",
        ),
        (
            &["--quantize", "W8F16", "--q_symmetric"],
            "--q_symmetric needs --q_group_size",
        ),
        (
            &["--quantize", "F16", "--q_group_size", "64"],
            "apply to weight-only layers",
        ),
        (
            &["--quantize", "W8F16", "--processor", "cv183x"],
            "weight-only modes are lowered for bm1684x, bm1688, bm1690 and cv186x only",
        ),
    ];
    for (i, (flags, want)) in cases.iter().enumerate() {
        let out = deploy(flags, &format!("bad{i}.onnx"));
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(
            err.contains(want),
            "{flags:?}: expected `{want}` in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `--q_method clip` and `gptq` (with act-order and the padding mask):
/// the export (same layout: MatMulNBits for 4 bits, DequantizeLinear for 8)
/// agrees in ONNX Runtime with qtune's simulation of the same model on
/// `VAL_SENTENCES` validation sentences (model_deploy's `--test_input` with the stacked
/// sentences), and the codes are not TPU-MLIR's round to nearest.
#[test]
fn minilm_clip_and_gptq_exports_agree_with_simulation() {
    let name = "minilm_l6_s128";
    let dir = scratch("weight_only_gptq");
    let mlir = transform_workload(&dir, name);
    let inputs = val_inputs(&dir, name);
    let calib = workloads().join("text/calib");
    let calib = calib.to_str().unwrap();
    // (tag, flags, bits, group)
    let configs: [(&str, &[&str], u32, usize); 5] = [
        (
            "clip_w4_g128",
            &[
                "--quantize",
                "W4F16",
                "--q_group_size",
                "128",
                "--q_method",
                "clip",
            ],
            4,
            128,
        ),
        (
            "gptq_w4_g128_act",
            &[
                "--quantize",
                "W4F16",
                "--q_group_size",
                "128",
                "--q_method",
                "gptq",
                "--q_act_order",
                "--calibration_data",
                calib,
                "--calibration_num",
                "12",
                "--calibration_mask_input",
                "attention_mask",
            ],
            4,
            128,
        ),
        (
            "gptq_w4_seq_bc",
            &[
                "--quantize",
                "W4F16",
                "--q_group_size",
                "128",
                "--q_method",
                "gptq",
                "--q_sequential",
                "--q_bias_correction",
                "--q_damp",
                "0.1",
                "--calibration_data",
                calib,
                "--calibration_num",
                "4",
                "--calibration_mask_input",
                "attention_mask",
            ],
            4,
            128,
        ),
        (
            "gptq_w4_seq_target",
            &[
                "--quantize",
                "W4F16",
                "--q_group_size",
                "128",
                "--q_method",
                "gptq_clip",
                "--q_sequential",
                "--q_float_target",
                "--q_target_damp",
                "0.5",
                "--calibration_data",
                calib,
                "--calibration_num",
                "4",
                "--calibration_mask_input",
                "attention_mask",
            ],
            4,
            128,
        ),
        (
            "gptq_w8",
            &[
                "--quantize",
                "W8F16",
                "--q_method",
                "gptq_clip",
                "--calibration_data",
                calib,
                "--calibration_num",
                "6",
            ],
            8,
            0,
        ),
    ];
    for (tag, flags, bits, group) in configs {
        let onnx = dir.join(format!("{tag}.onnx"));
        let out = run_ok(
            tool("model_deploy")
                .arg("--mlir")
                .arg(&mlir)
                .args(["--processor", "bm1684x"])
                .args(flags)
                .arg("--test_input")
                .arg(&inputs)
                .arg("--model")
                .arg(&onnx),
        );
        let summary = stderr_of(&out);
        if flags.contains(&"--calibration_data") {
            // Q, K and V read one input: 36 layers, 24 distinct inputs.
            let want = if flags.contains(&"--q_float_target") {
                "GPTQ: 36 layer Hessians (24 distinct inputs, sequential, 36 weights refit to \
                 the float target (damp 0.5))"
            } else if flags.contains(&"--q_sequential") {
                "GPTQ: 36 layer Hessians (24 distinct inputs, sequential, 36 biases corrected)"
            } else {
                "GPTQ: 36 layer Hessians (24 distinct inputs)"
            };
            assert!(summary.contains(want), "{summary}");
        }
        let sim = dir.join(format!("{tag}_tpu_outputs.npz"));
        let text = check_agreement(&onnx, &inputs, &sim);
        assert!(
            text.contains(&format!("over {VAL_SENTENCES} samples (0 below")),
            "{text}"
        );
        // The oracle recomputes TPU-MLIR's rule: these codes must differ.
        let source = workloads().join("models").join(format!("{name}.onnx"));
        let (b, g) = (bits.to_string(), group.to_string());
        let out = python(&[
            tests_dir().join("weight_only_oracle.py").as_os_str(),
            "codes".as_ref(),
            source.as_os_str(),
            onnx.as_os_str(),
            b.as_ref(),
            g.as_ref(),
            "0".as_ref(),
            "F16".as_ref(),
        ]);
        let oracle = stdout_of(&out);
        assert!(
            oracle.contains("36 weights checked") && !oracle.contains(", 0 mismatched;"),
            "{tag}: expected codes other than round to nearest:\n{oracle}{}",
            stderr_of(&out)
        );
    }
}

/// GPTQ's model is the same file whatever the thread count.
#[test]
fn gptq_export_does_not_depend_on_the_thread_count() {
    let dir = scratch("weight_only_gptq_threads");
    let mlir = transform_workload(&dir, "minilm_l6_s128");
    let calib = workloads().join("text/calib");
    let mut files = Vec::new();
    for threads in ["1", "2"] {
        let onnx = dir.join(format!("t{threads}.onnx"));
        run_ok(
            tool("model_deploy")
                .arg("--mlir")
                .arg(&mlir)
                .args(["--quantize", "W4F16", "--q_group_size", "64"])
                .args(["--q_method", "gptq", "--calibration_data"])
                .arg(&calib)
                .args(["--calibration_num", "5", "--threads", threads, "--quiet"])
                .arg("--model")
                .arg(&onnx),
        );
        files.push(std::fs::read(&onnx).unwrap());
    }
    assert!(
        files[0] == files[1],
        "1 and 2 threads wrote different models"
    );
}

#[test]
fn weight_method_flags_that_do_not_apply_are_refused() {
    let dir = scratch("weight_only_method_flags");
    let mlir = transform_workload(&dir, "minilm_l6_s128");
    let calib = workloads().join("text/calib");
    let calib = calib.to_str().unwrap();
    let cases: [(&[&str], &str); 19] = [
        (
            &["--quantize", "W4F16", "--q_awq"],
            "--q_awq: needs --calibration_data DIR",
        ),
        (
            &[
                "--quantize",
                "W4F16",
                "--q_awq_clip",
                "--calibration_data",
                calib,
            ],
            "--q_awq_clip: applies to --q_method clip / gptq_clip only (--q_method is rtn)",
        ),
        (
            &["--quantize", "W4F16", "--q_method", "clip", "--q_awq_clip"],
            "--q_awq_clip: needs --calibration_data DIR",
        ),
        (
            &["--quantize", "F16", "--q_awq", "--calibration_data", calib],
            "--q_awq: applies to weight-only layers",
        ),
        (
            &[
                "--quantize",
                "W4F16",
                "--q_awq",
                "--q_method",
                "gptq",
                "--q_sequential",
                "--calibration_data",
                calib,
            ],
            "--q_awq: not with --q_sequential",
        ),
        (
            &[
                "--quantize",
                "W4F16",
                "--q_method",
                "gptq",
                "--calibration_data",
                calib,
                "--q_bias_correction",
            ],
            "--q_bias_correction: needs --q_sequential",
        ),
        (
            &[
                "--quantize",
                "W4F16",
                "--q_method",
                "gptq",
                "--calibration_data",
                calib,
                "--q_float_target",
            ],
            "--q_float_target: needs --q_sequential",
        ),
        (
            &["--quantize", "W4F16", "--q_float_target"],
            "--q_float_target: applies to --q_method gptq / gptq_clip only (--q_method is rtn)",
        ),
        (
            &[
                "--quantize",
                "W4F16",
                "--q_method",
                "gptq",
                "--calibration_data",
                calib,
                "--q_sequential",
                "--q_target_damp",
                "1",
            ],
            "--q_target_damp: applies to --q_float_target only",
        ),
        (
            &[
                "--quantize",
                "W4F16",
                "--q_method",
                "gptq",
                "--calibration_data",
                calib,
                "--q_sequential",
                "--q_float_target",
                "--q_target_damp",
                "0",
            ],
            "--q_target_damp 0: expected a positive number",
        ),
        (
            &[
                "--quantize",
                "W4F16",
                "--q_method",
                "gptq",
                "--calibration_data",
                calib,
                "--q_damp",
                "0",
            ],
            "--q_damp 0: expected a fraction of the mean Hessian diagonal in (0, 10]",
        ),
        (
            &["--quantize", "W4F16", "--q_method", "awq"],
            "--q_method awq: expected one of rtn, clip, gptq, gptq_clip",
        ),
        (
            &["--quantize", "F16", "--q_method", "clip"],
            "--q_method clip: applies to weight-only layers",
        ),
        (
            &["--quantize", "W4F16", "--q_method", "gptq"],
            "--q_method gptq: needs --calibration_data DIR",
        ),
        (
            &["--quantize", "W4F16", "--q_act_order"],
            "--q_act_order: applies to --q_method gptq / gptq_clip only (--q_method is rtn)",
        ),
        (
            &[
                "--quantize",
                "W4F16",
                "--q_method",
                "clip",
                "--calibration_data",
                calib,
            ],
            "--calibration_data: applies to --q_method gptq / gptq_clip or --q_awq / --q_awq_clip only",
        ),
        (
            &[
                "--quantize",
                "W4F16",
                "--q_method",
                "gptq",
                "--calibration_data",
                calib,
                "--calibration_num",
                "0",
            ],
            "--calibration_num 0: expected a positive count",
        ),
        (
            &[
                "--quantize",
                "W4F16",
                "--q_method",
                "gptq",
                "--calibration_data",
                calib,
                "--calibration_num",
                "2",
                "--calibration_mask_input",
                "mask",
            ],
            "mask input `mask` is not a graph input (the model has: input_ids, attention_mask, token_type_ids)",
        ),
        (
            &[
                "--quantize",
                "W4F16",
                "--q_method",
                "gptq",
                "--calibration_data",
                "/nonexistent/calib",
            ],
            "/nonexistent/calib",
        ),
    ];
    for (i, (flags, want)) in cases.iter().enumerate() {
        let out_path = dir.join(format!("bad{i}.onnx"));
        let out = tool("model_deploy")
            .arg("--mlir")
            .arg(&mlir)
            .args(*flags)
            .arg("--model")
            .arg(&out_path)
            .output()
            .unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(
            err.contains(want),
            "{flags:?}: expected `{want}` in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out_path.exists(), "bad{i}.onnx written despite the error");
    }
}

/// `--q_awq` with `gptq_clip --q_awq_clip` and with `rtn`: the 6 attention output
/// projections are scaled (the other 30 layers have no exact fold in
/// post-LN BERT), and the export agrees in ONNX Runtime with qtune's
/// simulation on `VAL_SENTENCES` validation sentences.
#[test]
fn minilm_awq_exports_agree_with_simulation() {
    let dir = scratch("weight_only_awq");
    let mlir = transform_workload(&dir, "minilm_l6_s128");
    let inputs = val_inputs(&dir, "minilm_l6_s128");
    let calib = workloads().join("text/calib");
    let calib = calib.to_str().unwrap();
    let configs: [(&str, &[&str]); 2] = [
        (
            "awq_gptq_clip",
            &[
                "--q_method",
                "gptq_clip",
                "--q_act_order",
                "--q_damp",
                "0.1",
                "--q_awq_clip",
            ],
        ),
        ("awq_rtn", &[]),
    ];
    for (tag, method) in configs {
        let onnx = dir.join(format!("{tag}.onnx"));
        let out = run_ok(
            tool("model_deploy")
                .arg("--mlir")
                .arg(&mlir)
                .args(["--processor", "bm1684x", "--quantize", "W4F16"])
                .args(["--q_group_size", "128", "--q_awq"])
                .args(method)
                .args(["--calibration_data", calib, "--calibration_num", "8"])
                .args(["--calibration_mask_input", "attention_mask"])
                .arg("--test_input")
                .arg(&inputs)
                .arg("--model")
                .arg(&onnx),
        );
        let summary = stderr_of(&out);
        assert!(
            summary.contains("AWQ: 6 layer inputs scaled")
                && summary.contains("30 layers unscaled"),
            "{summary}"
        );
        let sim = dir.join(format!("{tag}_tpu_outputs.npz"));
        let text = check_agreement(&onnx, &inputs, &sim);
        assert!(
            text.contains(&format!("over {VAL_SENTENCES} samples (0 below")),
            "{text}"
        );
    }
}
