use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub fn qtune() -> Command {
    Command::cargo_bin("qtune").expect("qtune binary")
}

pub fn workloads() -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ));
    assert!(
        p.join("models").is_dir(),
        "{} is missing: run scripts/fetch-workloads.sh to create the workloads next to the repository",
        p.display()
    );
    p
}

pub fn model(name: &str) -> PathBuf {
    workloads().join(format!("models/{name}.onnx"))
}

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

pub fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// models.toml's preprocessing of the YOLOv8 workload, as flags.
pub const YOLOV8_FLAGS: &[&str] = &[
    "--resize_dims",
    "320,320",
    "--keep_aspect_ratio",
    "--pad_type",
    "normal",
    "--pad_value",
    "0",
    "--pixel_format",
    "rgb",
    "--mean",
    "0,0,0",
    "--scale",
    "0.00392156862745098,0.00392156862745098,0.00392156862745098",
];

/// models.toml's preprocessing of the YOLOX workload, as flags.
pub const YOLOX_FLAGS: &[&str] = &[
    "--resize_dims",
    "416,416",
    "--keep_aspect_ratio",
    "--pad_type",
    "normal",
    "--pad_value",
    "114",
    "--pixel_format",
    "bgr",
    "--mean",
    "0,0,0",
    "--scale",
    "1,1,1",
];

/// models.toml's preprocessing of each workload, as model_transform /
/// classify / detect flags (none for MiniLM's token inputs).
pub fn preprocess_flags(name: &str) -> &'static [&'static str] {
    match name {
        "efficientnet_lite0" => &[
            "--resize_dims",
            "224,224",
            "--pixel_format",
            "rgb",
            "--mean",
            "127,127,127",
            "--scale",
            "0.0078125,0.0078125,0.0078125",
        ],
        "mobilenetv2_nsfw" => &[
            "--resize_dims",
            "224,224",
            "--pixel_format",
            "rgb",
            "--mean",
            "0,0,0",
            "--scale",
            "0.00392156862745098,0.00392156862745098,0.00392156862745098",
        ],
        "yolox_det416" => YOLOX_FLAGS,
        "yolov8n_320" => YOLOV8_FLAGS,
        "ppocr_v4_det640" => &[
            "--resize_dims",
            "640,640",
            "--pixel_format",
            "bgr",
            "--mean",
            "123.675,116.28,103.53",
            "--scale",
            "0.017124753831663668,0.01750700280112045,0.017429193899782137",
        ],
        "minilm_l6_s128" => &[],
        other => panic!("no preprocessing flags for {other}"),
    }
}

/// models.toml's static input shapes of each workload, as `--input_shapes`.
pub fn input_shapes(name: &str) -> &'static str {
    match name {
        "efficientnet_lite0" | "mobilenetv2_nsfw" => "[[1,3,224,224]]",
        "yolox_det416" => "[[1,3,416,416]]",
        "yolov8n_320" => "[[1,3,320,320]]",
        "ppocr_v4_det640" => "[[1,3,640,640]]",
        "minilm_l6_s128" => "[[1,128],[1,128],[1,128]]",
        other => panic!("no input shapes for {other}"),
    }
}

/// The seed's model_transform for mobilenet_v2 (workload model), in `dir`,
/// writing `mobilenet_v2.mlir`; with a test input it also writes the
/// preprocessed input `<name>_in_f32.npz`, whose path is returned, and
/// with a test result name the float model's tensors keyed by op name.
pub fn transform_mobilenet(
    dir: &Path,
    name: &str,
    test_input: Option<&Path>,
    test_result: Option<&str>,
) -> PathBuf {
    transform_mobilenet_as("model_transform", dir, name, test_input, test_result)
}

/// [`transform_mobilenet`] run under the tool name `tool`
/// (`model_transform` or `model_transform.py`).
pub fn transform_mobilenet_as(
    tool: &str,
    dir: &Path,
    name: &str,
    test_input: Option<&Path>,
    test_result: Option<&str>,
) -> PathBuf {
    let mut cmd = Command::cargo_bin(tool).unwrap_or_else(|e| panic!("{tool} binary: {e}"));
    cmd.current_dir(dir)
        .args(["--model_name", name, "--model_def"])
        .arg(model("mobilenetv2_nsfw"))
        .args([
            "--input_shapes",
            "[[1,3,224,224]]",
            "--resize_dims",
            "256,256",
        ])
        .args(["--mean", "123.675,116.28,103.53"])
        .args(["--scale", "0.0171,0.0175,0.0174", "--pixel_format", "rgb"])
        .args(["--mlir", "mobilenet_v2.mlir"]);
    if let Some(img) = test_input {
        cmd.arg("--test_input").arg(img);
    }
    if let Some(r) = test_result {
        cmd.args(["--test_result", r]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    dir.join(format!("{name}_in_f32.npz"))
}

/// Held by tests whose runs need several GB (bias correction on 65 samples
/// holds every sample's Conv outputs), so that two of them never run at
/// once on a small CI machine.
pub static MEMORY_HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`MEMORY_HEAVY`] (a panicking holder does not block the others).
pub fn memory_heavy() -> std::sync::MutexGuard<'static, ()> {
    MEMORY_HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One of the workspace's binaries.
pub fn tool(name: &str) -> Command {
    Command::cargo_bin(name).unwrap_or_else(|e| panic!("{name} binary: {e}"))
}

/// Runs `cmd`, asserting success (its output in the message otherwise).
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout_of(&out),
        stderr_of(&out)
    );
    out
}

/// model_transform of workload `name` with models.toml's shapes and
/// preprocessing, writing `dir/<name>.mlir`, which is returned.
pub fn transform_workload(dir: &Path, name: &str) -> PathBuf {
    run_ok(
        tool("model_transform")
            .current_dir(dir)
            .args(["--model_name", name, "--model_def"])
            .arg(model(name))
            .args(["--input_shapes", input_shapes(name)])
            .args(preprocess_flags(name))
            .args(["--mlir", &format!("{name}.mlir")]),
    );
    dir.join(format!("{name}.mlir"))
}

/// model_deploy `mlir` INT8 for bm1684x with `table`, writing `onnx`.
pub fn deploy_int8_bm1684x(mlir: &Path, table: &Path, onnx: &Path) {
    run_ok(
        tool("model_deploy")
            .arg("--mlir")
            .arg(mlir)
            .args(["--quantize", "INT8", "--processor", "bm1684x"])
            .arg("--calibration_table")
            .arg(table)
            .arg("--model")
            .arg(onnx),
    );
}
