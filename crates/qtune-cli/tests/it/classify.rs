use std::path::PathBuf;

use crate::common::*;

fn demo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/demo"))
}

#[test]
fn classify_bundled_demo_photo() {
    let d = demo();
    let out = qtune()
        .arg("classify")
        .arg(d.join("efficientnet_lite0.onnx"))
        .arg("--dataset")
        .arg(d.join("images/darknet_eagle.jpg"))
        .arg("--labels")
        .arg(d.join("imagenet1k_classes.txt"))
        .args([
            "--resize_dims",
            "224,224",
            "--pixel_format",
            "rgb",
            "--mean",
            "127,127,127",
        ])
        .args(["--scale", "0.0078125,0.0078125,0.0078125", "--top", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let s = stdout_of(&out);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 3, "{s}");
    assert_eq!(lines[0], "darknet_eagle.jpg");
    assert!(
        lines[1].contains("bald eagle") && lines[1].ends_with("(22)"),
        "{s}"
    );
}

#[test]
fn classify_rejects_bad_preprocessing_flags() {
    let d = demo();
    let out = qtune()
        .arg("classify")
        .arg(d.join("efficientnet_lite0.onnx"))
        .arg("--dataset")
        .arg(d.join("images"))
        .args(["--pixel_format", "yuv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("pixel_format") && err.contains("yuv"), "{err}");
}

/// A .mlir from model_transform carries its preprocessing: classify on it
/// without flags prints what classify on the .onnx prints with the flags,
/// and flags on the .mlir are refused.
#[test]
fn classify_mlir_uses_its_own_preprocessing() {
    let d = demo();
    let dir = scratch("classify_mlir");
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
    let out = assert_cmd::Command::cargo_bin("model_transform")
        .unwrap()
        .current_dir(&dir)
        .args(["--model_name", "e", "--model_def"])
        .arg(d.join("efficientnet_lite0.onnx"))
        .args(["--input_shapes", "[[1,3,224,224]]"])
        .args(flags)
        .args(["--mlir", "e.mlir"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let classify = |model: PathBuf, with_flags: bool| {
        let mut cmd = qtune();
        cmd.arg("classify")
            .arg(model)
            .arg("--dataset")
            .arg(d.join("images"))
            .arg("--labels")
            .arg(d.join("imagenet1k_classes.txt"));
        if with_flags {
            cmd.args(flags);
        }
        cmd.output().unwrap()
    };
    let from_onnx = classify(d.join("efficientnet_lite0.onnx"), true);
    let from_mlir = classify(dir.join("e.mlir"), false);
    assert!(from_mlir.status.success(), "{}", stderr_of(&from_mlir));
    assert_eq!(stdout_of(&from_onnx), stdout_of(&from_mlir));
    let refused = classify(dir.join("e.mlir"), true);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr_of(&refused).contains("carries its own"),
        "{}",
        stderr_of(&refused)
    );
}
