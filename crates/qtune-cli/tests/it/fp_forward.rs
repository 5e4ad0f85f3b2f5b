//! fp_forward: the seed's command, its qtable, and model_deploy reading it.

use std::path::PathBuf;

use assert_cmd::Command;

use crate::common::{scratch, stderr_of, tool};

#[test]
fn seed_command_writes_a_qtable_model_deploy_reads() {
    let dir = scratch("fp_forward");
    let demo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/demo"));
    let ok = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        out
    };
    ok(tool("model_transform")
        .current_dir(&dir)
        .args(["--model_name", "e", "--model_def"])
        .arg(demo.join("efficientnet_lite0.onnx"))
        .args([
            "--input_shapes",
            "[[1,3,224,224]]",
            "--resize_dims",
            "224,224",
        ])
        .args(["--pixel_format", "rgb", "--mean", "127,127,127"])
        .args([
            "--scale",
            "0.0078125,0.0078125,0.0078125",
            "--mlir",
            "e.mlir",
        ]));
    // The seed's form: fp_forward MLIR --quantize INT8 --processor P --fpfwd_outputs a,b -o Q
    let out = ok(tool("fp_forward").current_dir(&dir).args([
        "e.mlir",
        "--quantize",
        "INT8",
        "--processor",
        "bm1684x",
        "--fpfwd_outputs",
        "/_conv_head/Conv_output_0_Conv,missing_op",
        "--no_time",
        "-o",
        "e_qtable",
    ]));
    assert!(
        stderr_of(&out).contains("warning, op: missing_op not found in mlir file"),
        "{}",
        stderr_of(&out)
    );
    // In the canonical graph the head Conv, its folded BatchNorm and its
    // ReLU6 are one op named after the ReLU6 (`/_swish_1/Clip_output_0_Clip`):
    // the Conv's own ONNX name is not an op, so only the warning is left.
    let text = std::fs::read_to_string(dir.join("e_qtable")).unwrap();
    assert!(
        text.starts_with("# chip: bm1684x  mix_mode: F16\n"),
        "{text}"
    );
    // Canonical names: the head (Conv + BN + ReLU6) and everything after it;
    // block 0's depthwise Conv (+ BN + ReLU6) through its projection Conv
    // (+ BN, no activation: TPU-MLIR keeps the Conv's name).
    ok(tool("fp_forward").current_dir(&dir).args([
        "e.mlir",
        "--processor",
        "bm1684x",
        "--fpfwd_outputs",
        "/_swish_1/Clip_output_0_Clip",
        "--fpfwd_blocks",
        "/_blocks.0/_swish/Clip_output_0_Clip:/_blocks.0/_project_conv/Conv_output_0_Conv",
        "--no_time",
        "-o",
        "e_qtable",
    ]));
    let text = std::fs::read_to_string(dir.join("e_qtable")).unwrap();
    let layers: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        layers,
        [
            "/_blocks.0/_swish/Clip_output_0_Clip F16",
            "/_blocks.0/_project_conv/Conv_output_0_Conv F16",
            "/_swish_1/Clip_output_0_Clip F16",
            "/_avg_pooling/GlobalAveragePool_output_0_GlobalAveragePool F16",
            "/Reshape_output_0_Reshape F16",
            "logits_Gemm F16",
        ],
        "{text}"
    );
    assert!(text.contains("# number of F16 layer: 6\n"), "{text}");
    // model_deploy reads it: 6 F16 layers, with --quantize F32 for the rest (no table needed).
    let out = ok(tool("model_deploy").current_dir(&dir).args([
        "--mlir",
        "e.mlir",
        "--quantize",
        "F32",
        "--quantize_table",
        "e_qtable",
        "--model",
        "e_mix.onnx",
    ]));
    assert!(stderr_of(&out).contains("6 F16"), "{}", stderr_of(&out));
    // bm1684 has no F16.
    let out = tool("fp_forward")
        .current_dir(&dir)
        .args(["e.mlir", "--processor", "bm1684", "--fp_type", "F16"])
        .args(["--fpfwd_outputs", "logits_Gemm", "-o", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("F16"), "{}", stderr_of(&out));
}
