//! Bad input: one clear line naming the problem, exit code 2, no panic.

use qtune_tensor::{Tensor, read_npz, write_npz};

use crate::common::*;

fn assert_clean_failure(out: &std::process::Output, needles: &[&str]) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

#[test]
fn truncated_model() {
    let dir = scratch("err_truncated");
    let bytes = std::fs::read(model("mobilenetv2_nsfw")).unwrap();
    let path = dir.join("cut.onnx");
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let out = qtune().arg("info").arg(&path).output().unwrap();
    assert_clean_failure(&out, &["cut.onnx", "not a valid ONNX model"]);
}

#[test]
fn unsupported_op() {
    let dir = scratch("err_unsupported");
    // The ONNX model is rewritten by flipping an op type string in place:
    // "Softmax" -> "Softmix" (every occurrence, names included) keeps the
    // protobuf lengths intact.
    let mut bytes = std::fs::read(model("mobilenetv2_nsfw")).unwrap();
    let pat = b"Softmax";
    let hits: Vec<usize> = bytes
        .windows(pat.len())
        .enumerate()
        .filter(|(_, w)| *w == pat)
        .map(|(i, _)| i)
        .collect();
    assert!(!hits.is_empty());
    for pos in hits {
        bytes[pos + 5] = b'i';
    }
    let path = dir.join("unsupported.onnx");
    std::fs::write(&path, &bytes).unwrap();
    let out = qtune().arg("info").arg(&path).output().unwrap();
    assert_clean_failure(&out, &["op type 'Softmix'", "not support", "Conv"]);
}

#[test]
fn npz_with_wrong_shape() {
    let dir = scratch("err_shape");
    let t = Tensor::from_f32(vec![1, 3, 200, 224], vec![0.0; 3 * 200 * 224]).unwrap();
    write_npz(&dir.join("in.npz"), &[("input_1".into(), t)]).unwrap();
    let out = qtune()
        .arg("run")
        .arg(model("mobilenetv2_nsfw"))
        .arg("--input")
        .arg(dir.join("in.npz"))
        .arg("-o")
        .arg(dir.join("out.npz"))
        .output()
        .unwrap();
    assert_clean_failure(&out, &["input_1", "[1,3,224,224]", "[1,3,200,224]"]);
    assert!(!dir.join("out.npz").exists(), "no output on failure");
}

#[test]
fn npz_missing_an_input() {
    let dir = scratch("err_missing");
    let golden = read_npz(&workloads().join("golden/minilm_l6_s128/input.npz")).unwrap();
    let partial: Vec<_> = golden
        .into_iter()
        .filter(|(n, _)| n != "attention_mask")
        .collect();
    write_npz(&dir.join("in.npz"), &partial).unwrap();
    let out = qtune()
        .arg("run")
        .arg(model("minilm_l6_s128"))
        .arg("--input")
        .arg(dir.join("in.npz"))
        .arg("-o")
        .arg(dir.join("out.npz"))
        .output()
        .unwrap();
    assert_clean_failure(&out, &["attention_mask", "in.npz"]);
}

#[test]
fn missing_files() {
    let out = qtune()
        .arg("info")
        .arg("/nonexistent/model.onnx")
        .output()
        .unwrap();
    assert_clean_failure(&out, &["/nonexistent/model.onnx"]);
    let out = qtune()
        .arg("run")
        .arg(model("mobilenetv2_nsfw"))
        .args(["--input", "/nonexistent/in.npz", "-o", "/tmp/x.npz"])
        .output()
        .unwrap();
    assert_clean_failure(&out, &["/nonexistent/in.npz"]);
}

/// `run_sensitive_layer --sensitivity_table` without `-o` runs no method
/// search: the search's own flags are refused, not ignored.
#[test]
fn sensitivity_report_alone_refuses_search_flags() {
    for extra in [
        &["--max_float_layers", "3"][..],
        &["--tune_num", "2"],
        &["--histogram_bin_num", "1024"],
        &["--resume"],
        &["--report", "r.html"],
    ] {
        let out = tool("run_sensitive_layer")
            .arg("/nonexistent/m.mlir")
            .args(["--dataset", "/nonexistent", "--calibration_table", "t"])
            .args(["--sensitivity_table", "s.md"])
            .args(extra)
            .output()
            .unwrap();
        assert_clean_failure(&out, &[extra[0], "runs only with -o"]);
    }
}

/// Every command refuses a flag it does not honour (exit 2, the flag and,
/// for run_calibration's modes, the mode named) before any work: the
/// standalone tools through clap (their flag structs lack the flag),
/// run_calibration per `--search` mode through its validation stage.
#[test]
fn inapplicable_flags_are_refused_by_every_command() {
    let base = |name: &str| {
        let mut c = tool(name);
        c.arg("/nonexistent/m.mlir");
        c
    };
    // Clap's own refusal: the flag is not in the command's flag struct.
    let search: &[&str] = &[
        "/nonexistent/m.mlir",
        "--dataset",
        "/nonexistent",
        "--calibration_table",
        "t",
        "-o",
        "q",
    ];
    let fp: &[&str] = &["/nonexistent/m.mlir", "--processor", "bm1684x", "-o", "q"];
    let transform: &[&str] = &[
        "--model_name",
        "m",
        "--model_def",
        "/nonexistent/m.onnx",
        "--mlir",
        "m.mlir",
    ];
    let deploy: &[&str] = &["--mlir", "/nonexistent/m.mlir", "--model", "o.onnx"];
    let clap_cases: [(&str, &[&str], &[&str], &str); 9] = [
        (
            "run_qtable",
            search,
            &["--quantize_method_list", "KL"],
            "'--quantize_method_list'",
        ),
        (
            "run_qtable",
            search,
            &["--benchmark_method", "cos"],
            "'--benchmark_method'",
        ),
        ("run_qtable", search, &["--tune_num", "3"], "'--tune_num'"),
        (
            "run_sensitive_layer",
            search,
            &["--min_layer_cos", "0.9"],
            "'--min_layer_cos'",
        ),
        (
            "run_sensitive_layer",
            search,
            &["--loss_table", "l.txt"],
            "'--loss_table'",
        ),
        (
            "run_sensitive_layer",
            search,
            &["--benchmark_method", "snr"],
            "'--benchmark_method'",
        ),
        ("fp_forward", fp, &["--resume"], "'--resume'"),
        ("model_transform", transform, &["--resume"], "'--resume'"),
        (
            "model_deploy",
            deploy,
            &["--inference_num", "3"],
            "'--inference_num'",
        ),
    ];
    for (name, args, extra, needle) in clap_cases {
        let out = tool(name).args(args).args(extra).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{name} {extra:?}: {err}");
        assert!(
            err.contains("unexpected argument") && err.contains(needle),
            "{name} {extra:?}: {err}"
        );
    }
    // model_deploy's comparison flags need what they compare.
    let out = tool("model_deploy")
        .args(["--mlir", "/nonexistent/m.mlir", "--model", "o.onnx"])
        .args(["--tolerance", "0.9,0.9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("--test_reference"),
        "{}",
        stderr_of(&out)
    );

    // run_calibration: the mode's validation stage, one line naming both.
    let cali_cases: [(&[&str], &str); 15] = [
        (
            &["--resume"],
            "--resume is not honoured by run_calibration plain calibration (no --search) without --bc",
        ),
        (
            &["--search", "fast_search", "--quantize_method_list", "KL"],
            "--quantize_method_list is not honoured by run_calibration --search fast_search",
        ),
        (
            &["--search", "search_threshold", "--loss_table", "l.txt"],
            "--loss_table is not honoured by run_calibration --search search_threshold",
        ),
        (
            &["--search", "mix_search", "--tune_num", "3"],
            "--tune_num is not honoured by run_calibration --search mix_search",
        ),
        (
            &["--search", "search_qtable", "--cali_method", "kl"],
            "--cali_method is not honoured by run_calibration --search search_qtable",
        ),
        (
            &["--search", "search_qtable", "--min_layer_cos", "0.9"],
            "--min_layer_cos is not honoured by run_calibration --search search_qtable",
        ),
        (
            &["--search", "search_threshold", "--max_float_layers", "3"],
            "--max_float_layers is not honoured by run_calibration --search search_threshold",
        ),
        (
            &["--search", "fast_search", "--report", "r.html"],
            "--report is not honoured by run_calibration --search fast_search",
        ),
        (
            &["--search", "mix_search", "--benchmark_method", "snr"],
            "--benchmark_method is not honoured by run_calibration --search mix_search",
        ),
        (
            &["--inference_num", "10"],
            "--inference_num is not honoured by run_calibration plain calibration (no --search)",
        ),
        (
            &["--expected_cos", "0.9"],
            "--expected_cos is not honoured by run_calibration plain calibration (no --search) without --bc",
        ),
        (
            &["--loss_table", "l.txt"],
            "--loss_table is not honoured by run_calibration plain calibration",
        ),
        (
            &["--search", "search_qtable", "--range", "mean"],
            "--range is not honoured by run_calibration --search search_qtable",
        ),
        (
            &["--sq_alpha", "0.7"],
            "--sq_alpha sets up SmoothQuant, which runs only with --sq",
        ),
        (
            &["--sq_scope", "all"],
            "--sq_scope sets up SmoothQuant, which runs only with --sq",
        ),
    ];
    for (extra, needle) in cali_cases {
        let out = base("run_calibration")
            .args(["--dataset", "/nonexistent", "-o", "t"])
            .args(extra)
            .output()
            .unwrap();
        assert_clean_failure(&out, &[needle]);
    }
    // The same through `qtune calibrate`; a flag left at its default value
    // is not "given".
    let out = qtune()
        .args([
            "calibrate",
            "/nonexistent/m.mlir",
            "--dataset",
            "/nonexistent",
            "-o",
            "t",
        ])
        .args(["--search", "fast_search", "--max_float_layers", "3"])
        .output()
        .unwrap();
    assert_clean_failure(
        &out,
        &["--max_float_layers is not honoured by run_calibration --search fast_search"],
    );
    let out = qtune()
        .args([
            "calibrate",
            "/nonexistent/m.mlir",
            "--dataset",
            "/nonexistent",
            "-o",
            "t",
        ])
        .args(["--search", "mix_search"])
        .output()
        .unwrap();
    assert_clean_failure(&out, &["--search mix_search needs --quantize_table"]);
}
