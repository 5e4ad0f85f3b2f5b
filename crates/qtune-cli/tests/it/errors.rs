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
