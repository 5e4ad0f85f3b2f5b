//! `model_transform`, run as the seed runs it, with workload paths.

use assert_cmd::Command;
use qtune_tensor::read_npz;

use crate::common::*;

fn model_transform() -> Command {
    Command::cargo_bin("model_transform").expect("model_transform binary")
}

#[test]
fn seed_example_writes_mlir_weights_and_test_files() {
    let dir = scratch("transform_seed");
    let w = workloads();
    // The seed's mobilenet_v2 command with the model and photo pointed at the workloads.
    let out = model_transform()
        .current_dir(&dir)
        .args(["--model_name", "mobilenet_v2", "--model_def"])
        .arg(model("mobilenetv2_nsfw"))
        .args([
            "--input_shapes",
            "[[1,3,224,224]]",
            "--resize_dims",
            "256,256",
        ])
        .args([
            "--mean",
            "123.675,116.28,103.53",
            "--scale",
            "0.0171,0.0175,0.0174",
            "--pixel_format",
            "rgb",
        ])
        .arg("--test_input")
        .arg(w.join("images/val/skimage_astronaut.jpg"))
        .args([
            "--test_result",
            "mobilenet_v2_top_outputs.npz",
            "--mlir",
            "mobilenet_v2.mlir",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = std::fs::read_to_string(dir.join("mobilenet_v2.mlir")).unwrap();
    assert!(text.starts_with("module @mobilenet_v2 attributes {module.chip = \"ALL\", module.platform = \"ONNX\", module.state = \"TOP_F32\""));
    assert!(text.contains("module.weight_file = \"mobilenet_v2_top_f32_all_weight.npz\""));
    assert!(
        text.contains("resize_dims = [256, 256]")
            && text.contains("scale = [1.710000e-02, 1.750000e-02, 1.740000e-02]"),
        "{}",
        &text[..1200]
    );
    assert!(dir.join("mobilenet_v2_top_f32_all_weight.npz").is_file());
    let input = read_npz(&dir.join("mobilenet_v2_in_f32.npz")).unwrap();
    assert_eq!(input[0].0, "input_1");
    assert_eq!(input[0].1.dims(), &[1, 3, 224, 224]);
    let all = read_npz(&dir.join("mobilenet_v2_top_outputs.npz")).unwrap();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "input_1");
    assert!(names.contains(&"dense_3_Softmax"), "{names:?}");
    // 52 Convs (BatchNorm folded, ReLU6 fused), and the npz holds one
    // tensor per op keyed by the op's TPU-MLIR name.
    assert_eq!(text.matches("\"top.Conv\"").count(), 52);
    let ops = crate::canonical::op_names(&text);
    assert!(ops.iter().all(|o| names.contains(&o.as_str())), "{ops:?}");
    assert!(ops.len() > 52, "{ops:?}");
    // qtune runs the .mlir directly and agrees with the test result.
    let run = qtune()
        .current_dir(&dir)
        .args([
            "run",
            "mobilenet_v2.mlir",
            "--input",
            "mobilenet_v2_in_f32.npz",
            "-o",
            "out.npz",
        ])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr_of(&run));
    let out = read_npz(&dir.join("out.npz")).unwrap();
    let reference = all.iter().find(|(n, _)| n == "dense_3_Softmax").unwrap();
    assert_eq!(out[0].1, reference.1);
}

#[test]
fn output_names_cut_the_graph() {
    let dir = scratch("transform_cut");
    let out = model_transform()
        .current_dir(&dir)
        .args(["--model_name", "yolox", "--model_def"])
        .arg(model("yolox_det416"))
        .args([
            "--input_shapes",
            "[[1,3,416,416]]",
            "--scale",
            "1,1,1",
            "--keep_aspect_ratio",
            "--pad_value",
            "114",
        ])
        .args(["--output_names=images", "--mlir", "cut.mlir"])
        .output()
        .unwrap();
    // Cutting at the input leaves nothing to compute.
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let info = qtune()
        .arg("info")
        .arg(model("yolox_det416"))
        .output()
        .unwrap();
    let conv = stdout_of(&info)
        .lines()
        .find(|l| l.contains(" top.Conv -> "))
        .and_then(|l| l.split(" -> ").nth(1))
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .to_string();
    let out = model_transform()
        .current_dir(&dir)
        .args(["--model_name", "yolox", "--model_def"])
        .arg(model("yolox_det416"))
        .args([
            "--input_shapes",
            "[[1,3,416,416]]",
            "--output_names",
            &conv,
            "--mlir",
            "cut.mlir",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = std::fs::read_to_string(dir.join("cut.mlir")).unwrap();
    assert_eq!(
        text.matches("\"top.Conv\"").count(),
        1,
        "only the first conv is left"
    );
}

#[test]
fn transform_errors_are_clear_and_leave_no_files() {
    let dir = scratch("transform_errors");
    let w = workloads();
    let base = |cmd: &mut Command| {
        cmd.current_dir(&dir)
            .args(["--model_name", "m", "--model_def"])
            .arg(model("mobilenetv2_nsfw"))
            .args(["--mlir", "m.mlir"]);
    };
    let mut c = model_transform();
    base(&mut c);
    let out = c.args(["--pixel_format", "yuv"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("pixel_format") && stderr_of(&out).contains("yuv"),
        "{}",
        stderr_of(&out)
    );

    let bad = dir.join("bad.jpg");
    std::fs::write(&bad, b"not a jpeg").unwrap();
    let mut c = model_transform();
    base(&mut c);
    let out = c.arg("--test_input").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("bad.jpg"), "{}", stderr_of(&out));

    let mut c = model_transform();
    base(&mut c);
    let out = c
        .arg("--test_input")
        .arg(w.join("golden/minilm_l6_s128/input.npz"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("input_1"), "{}", stderr_of(&out));

    let out = model_transform()
        .current_dir(&dir)
        .args([
            "--model_name",
            "m",
            "--model_def",
            "missing.onnx",
            "--mlir",
            "x.mlir",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("missing.onnx"));
    assert!(!dir.join("x.mlir").exists());
}
