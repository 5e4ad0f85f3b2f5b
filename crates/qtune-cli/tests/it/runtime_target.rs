//! `--processor onnxruntime` (the QDQ-runtime profile): the export's Q/DQ
//! placement read back independently with the onnx package, ONNX Runtime's
//! optimised graph running integer kernels, and ONNX Runtime agreeing with
//! qtune's simulation of the same plan.

use std::path::{Path, PathBuf};

use crate::common::{
    qtune, run_ok, scratch, stderr_of, stdout_of, tool, transform_workload, workloads,
};

fn oracle() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/runtime_target.py"
    ))
}

fn agreement_script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/qdq_agreement.py"
    ))
}

fn python(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new("python3")
        .args(args)
        .output()
        .expect("python3 runs");
    (
        out.status.success(),
        format!("{}{}", stdout_of(&out), stderr_of(&out)),
    )
}

/// Transform, calibrate (kl on the calibration set), deploy INT8 for
/// `onnxruntime`; then the three checks. `min_integer` is the least share of
/// Conv/MatMul/Gemm layers ONNX Runtime must run on integer kernels.
fn check(name: &str, min_integer: f64, min_cos: f64, min_mean: f64) {
    check_with(name, &[], &[], min_integer, min_cos, min_mean);
}

/// [`check`] with extra run_calibration flags (`calibrate`: with `--sq` the
/// smoothed `<table>_sq.mlir` is deployed) and extra model_deploy / `qtune
/// run` flags (`deploy`).
fn check_with(
    name: &str,
    calibrate: &[&str],
    deploy: &[&str],
    min_integer: f64,
    min_cos: f64,
    min_mean: f64,
) {
    let tag = calibrate
        .iter()
        .chain(deploy)
        .map(|f| f.trim_start_matches('-'))
        .collect::<Vec<_>>()
        .join("_");
    let dir = scratch(&format!(
        "runtime_target_{name}{}{tag}",
        if tag.is_empty() { "" } else { "_" }
    ));
    let mlir = transform_workload(&dir, name);
    let (dataset, num) = if name == "minilm_l6_s128" {
        (workloads().join("text/calib"), "100")
    } else {
        (workloads().join("images/calib"), "65")
    };
    let table = dir.join(format!("{name}_cali_table"));
    run_ok(
        tool("run_calibration")
            .arg(&mlir)
            .arg("--dataset")
            .arg(&dataset)
            .args(["--input_num", num])
            .args(calibrate)
            .arg("-o")
            .arg(&table),
    );
    let mlir = if calibrate.contains(&"--sq") {
        dir.join(format!("{name}_cali_table_sq.mlir"))
    } else {
        mlir
    };
    let onnx = dir.join(format!("{name}_rt.onnx"));
    run_ok(
        tool("model_deploy")
            .arg("--mlir")
            .arg(&mlir)
            .args(["--quantize", "INT8", "--processor", "onnxruntime"])
            .args(deploy)
            .arg("--calibration_table")
            .arg(&table)
            .arg("--model")
            .arg(&onnx),
    );
    let (ok, text) = python(&[oracle().as_os_str(), "placement".as_ref(), onnx.as_os_str()]);
    println!("{name} placement: {text}");
    assert!(
        ok,
        "{name}: Q/DQ placement is not the runtime profile's:\n{text}"
    );
    let frac = min_integer.to_string();
    let (ok, text) = python(&[
        oracle().as_os_str(),
        "kernels".as_ref(),
        onnx.as_os_str(),
        frac.as_ref(),
    ]);
    println!("{name} kernels: {text}");
    assert!(
        ok,
        "{name}: ONNX Runtime runs too few integer kernels (< {min_integer}):\n{text}"
    );
    agree(
        name,
        &dir,
        &mlir,
        &table,
        &onnx,
        deploy,
        (min_cos, min_mean),
    );
}

fn agree(
    name: &str,
    dir: &Path,
    mlir: &Path,
    table: &Path,
    onnx: &Path,
    deploy: &[&str],
    (min_cos, min_mean): (f64, f64),
) {
    let inputs = dir.join("val_inputs.npz");
    let (ok, text) = python(&[
        agreement_script().as_os_str(),
        "inputs".as_ref(),
        workloads().as_os_str(),
        name.as_ref(),
        inputs.as_os_str(),
    ]);
    assert!(ok, "{text}");
    let sim = dir.join("sim.npz");
    run_ok(
        qtune()
            .arg("run")
            .arg(mlir)
            .arg("--input")
            .arg(&inputs)
            .arg("-o")
            .arg(&sim)
            .arg("--calibration_table")
            .arg(table)
            .args(["--processor", "onnxruntime"])
            .args(deploy),
    );
    let (c, m) = (min_cos.to_string(), min_mean.to_string());
    let (ok, text) = python(&[
        agreement_script().as_os_str(),
        "compare".as_ref(),
        onnx.as_os_str(),
        inputs.as_os_str(),
        sim.as_os_str(),
        c.as_ref(),
        m.as_ref(),
    ]);
    println!("{name} agreement: {text}");
    assert!(
        ok,
        "{name}: ONNX Runtime and qtune's simulation disagree (min {min_cos}, mean {min_mean}):\n{text}"
    );
}

/// 35 of efficientnet's 50 layers fuse into QLinearConv / QGemm (measured);
/// the 15 left are the convolutions whose output is not re-quantized (read by
/// a residual Add or the pooling head), which ORT runs as DQ + float Conv.
#[test]
fn runtime_profile_efficientnet_lite0() {
    check("efficientnet_lite0", 0.6, 0.999, 0.9995);
}

/// Every one of MiniLM's 48 MatMul/Gemm runs on an integer kernel (QGemm,
/// QLinearMatMul, MatMulIntegerToFloat). Agreement: a one-step code flip at
/// a grid boundary (ORT's integer accumulation vs the simulation's float
/// one) cascades through the attention grids in a few samples, as in
/// deploy.rs's bm1684x MiniLM test: measured min 0.978, mean 0.9985.
#[test]
fn runtime_profile_minilm_l6_s128() {
    check("minilm_l6_s128", 1.0, 0.95, 0.995);
}

/// `--sq --sq_scope all` (every MatMul/Gemm smoothed, 12 of them through an
/// inserted float Mul) with `--asymmetric`, QUALITY.md's best MiniLM runtime
/// export: the inserted Muls stay float (placement), all 48 MatMul/Gemm
/// still run on integer kernels, and ONNX Runtime agrees with qtune's
/// simulation of the smoothed model.
#[test]
fn runtime_profile_minilm_l6_s128_smoothed_everywhere() {
    check_with(
        "minilm_l6_s128",
        &["--sq", "--sq_scope", "all"],
        &["--asymmetric"],
        1.0,
        0.95,
        0.995,
    );
}
