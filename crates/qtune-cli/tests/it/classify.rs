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
