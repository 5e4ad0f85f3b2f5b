//! `run_calibration --we` and `--we --bc` (seed case 4) and `--sq`: the
//! transformed model is a new .mlir beside the table, it computes the same
//! function as the input model (--we, --sq) or a closer int8 one (--bc),
//! and the table is keyed by its op names.

use std::path::Path;

use assert_cmd::Command;
use qtune_tensor::read_npz;

use crate::common::*;

/// Equalization and smoothing only reassociate float products.
const SAME_FUNCTION_REL_TOL: f64 = 1e-5;

fn run_calibration() -> Command {
    Command::cargo_bin("run_calibration").expect("run_calibration binary")
}

/// The graph outputs of `model` on `input`, via `qtune run`.
fn run_outputs(dir: &Path, model: &str, input: &Path, out: &str) -> Vec<Vec<f32>> {
    let res = qtune()
        .current_dir(dir)
        .args(["run", model, "--input"])
        .arg(input)
        .args(["-o", out])
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", stderr_of(&res));
    read_npz(&dir.join(out))
        .unwrap()
        .into_iter()
        .map(|(_, t)| t.to_f32_vec())
        .collect()
}

fn assert_same_function(a: &[Vec<f32>], b: &[Vec<f32>]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        let scale = x.iter().fold(0.0f64, |m, v| m.max(f64::from(v.abs())));
        let diff = x
            .iter()
            .zip(y)
            .fold(0.0f64, |m, (p, q)| m.max(f64::from((p - q).abs())));
        assert!(
            diff <= SAME_FUNCTION_REL_TOL * scale,
            "outputs differ by {diff:e} (scale {scale:e})"
        );
    }
}

/// The loc names of a .mlir.
fn loc_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once(" = loc(\"").map(|(_, r)| r))
        .map(|r| r.trim_end_matches("\")").to_string())
        .collect()
}

#[test]
fn seed_case4_we_with_fixed_method() {
    let dir = scratch("calibrate_seed_case4_we");
    let image = workloads()
        .join("images/val")
        .read_dir()
        .unwrap()
        .next()
        .unwrap();
    let input = transform_mobilenet(&dir, "mobilenet_v2", Some(&image.unwrap().path()), None);
    let original = std::fs::read(dir.join("mobilenet_v2.mlir")).unwrap();
    // Seed case 4 without --bc: run_calibration mlir.file --we --dataset data_path
    //   --input_num 100 --processor bm1684 --cali_method use_mse -o cali_table
    let out = run_calibration()
        .current_dir(&dir)
        .args(["mobilenet_v2.mlir", "--we", "--dataset"])
        .arg(workloads().join("images/calib"))
        .args(["--input_num", "100", "--processor", "bm1684"])
        .args(["--cali_method", "use_mse", "-o", "cali_table"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = stdout_of(&out);
    assert!(
        stdout.contains("weight equalization: 2 Conv pair(s), 0 not converged"),
        "{stdout}"
    );
    assert!(stdout.contains("cali_table_we.mlir"), "{stdout}");
    for f in [
        "cali_table",
        "cali_table_we.mlir",
        "cali_table_we_weight.npz",
        "shape_pattern_qtable",
        "Weight_Equalization",
    ] {
        assert!(dir.join(f).exists(), "{f} is missing");
    }
    assert_eq!(
        std::fs::read(dir.join("mobilenet_v2.mlir")).unwrap(),
        original,
        "the input model is never modified"
    );
    let log = std::fs::read_to_string(dir.join("Weight_Equalization")).unwrap();
    let first = log.lines().next().unwrap();
    assert!(
        first.starts_with("INFO:root:Cross Layer WE: ") && first.contains(" Groups: 1 Iter: 1"),
        "{first}"
    );
    assert!(
        log.lines()
            .nth(1)
            .unwrap()
            .starts_with("INFO:root:>>>loss:")
    );
    // The table is keyed by the equalized model's op names.
    let mlir = std::fs::read_to_string(dir.join("cali_table_we.mlir")).unwrap();
    let locs = loc_names(&mlir);
    let table = std::fs::read_to_string(dir.join("cali_table")).unwrap();
    assert!(table.contains("# mlir: cali_table_we.mlir\n"));
    for row in table.lines().filter(|l| !l.starts_with('#')) {
        let name = row.split(' ').next().unwrap();
        assert!(locs.iter().any(|l| l == name), "row `{name}` is not an op");
    }
    let before = run_outputs(&dir, "mobilenet_v2.mlir", &input, "before.npz");
    let after = run_outputs(&dir, "cali_table_we.mlir", &input, "after.npz");
    assert_same_function(&before, &after);
}

#[test]
fn sq_on_minilm_keeps_the_function() {
    let dir = scratch("calibrate_sq_minilm");
    let mut cmd = Command::cargo_bin("model_transform").unwrap();
    let out = cmd
        .current_dir(&dir)
        .args(["--model_name", "minilm", "--model_def"])
        .arg(model("minilm_l6_s128"))
        .args(["--input_shapes", input_shapes("minilm_l6_s128")])
        .args(["--mlir", "minilm.mlir"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let out = run_calibration()
        .current_dir(&dir)
        .args(["minilm.mlir", "--sq", "--sq_alpha", "0.5", "--data_list"])
        .arg(write_list(&dir))
        .args(["--cali_method", "use_max", "-o", "t"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = stdout_of(&out);
    assert!(
        stdout.contains("SmoothQuant (alpha 0.5): 12 LayerNorm(s)"),
        "{stdout}"
    );
    let log = std::fs::read_to_string(dir.join("SmoothQuant")).unwrap();
    assert!(
        log.starts_with("INFO:root:SmoothQuant alpha: 0.5\n"),
        "{log}"
    );
    let golden = workloads().join("golden/minilm_l6_s128/input.npz");
    let before = run_outputs(&dir, "minilm.mlir", &golden, "before.npz");
    let after = run_outputs(&dir, "t_sq.mlir", &golden, "after.npz");
    assert_same_function(&before, &after);
}

/// A data list of four MiniLM calibration samples.
fn write_list(dir: &Path) -> std::path::PathBuf {
    let list = dir.join("list.txt");
    let text: String = (0..4)
        .map(|i| {
            format!(
                "{}\n",
                workloads()
                    .join(format!("text/calib/calib_{i:03}.npz"))
                    .display()
            )
        })
        .collect();
    std::fs::write(&list, text).unwrap();
    list
}

/// Held-out samples: how much lower the mean output cosine of the
/// bias-corrected int8 model may be than without --bc (sampling noise on
/// three images; the correction is fitted on other images).
const BC_NOT_WORSE_TOL: f64 = 0.005;

/// Plain cosine in f64 (also used by the sensitivity test in `search.rs`).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        d += x * y;
        na += x * x;
        nb += y * y;
    }
    d / (na.sqrt() * nb.sqrt())
}

/// The int8 (bm1684) outputs of `model` quantized with `table` on `input`.
fn int8_outputs(dir: &Path, model: &str, table: &str, input: &Path, out: &str) -> Vec<f32> {
    let res = qtune()
        .current_dir(dir)
        .args(["run", model, "--input"])
        .arg(input)
        .args(["-o", out, "--calibration_table", table])
        .args(["--processor", "bm1684"])
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", stderr_of(&res));
    read_npz(&dir.join(out)).unwrap().remove(0).1.to_f32_vec()
}

#[test]
fn seed_case4_we_bc_with_fixed_method() {
    let _heavy = memory_heavy();
    let dir = scratch("calibrate_seed_case4_we_bc");
    // Three held-out images (images/val; calibration uses images/calib).
    let mut held_out = Vec::new();
    let mut images: Vec<_> = workloads()
        .join("images/val")
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    images.sort();
    for (k, image) in images.iter().take(3).enumerate() {
        let input = transform_mobilenet(&dir, "mobilenet_v2", Some(image), None);
        let kept = dir.join(format!("held_out_{k}.npz"));
        std::fs::rename(&input, &kept).unwrap();
        held_out.push(kept);
    }
    let original = std::fs::read(dir.join("mobilenet_v2.mlir")).unwrap();
    // Seed case 4, fixed method, verbatim but for the paths:
    //   run_calibration mlir.file --we --bc --dataset data_path --input_num 100
    //   --processor bm1684 --cali_method use_mse --bc_inference_num 100 -o cali_table
    let out = run_calibration()
        .current_dir(&dir)
        .args(["mobilenet_v2.mlir", "--we", "--bc", "--dataset"])
        .arg(workloads().join("images/calib"))
        .args(["--input_num", "100", "--processor", "bm1684"])
        .args(["--cali_method", "use_mse", "--bc_inference_num", "100"])
        .args(["-o", "cali_table"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = stdout_of(&out);
    assert!(
        stdout.contains("bias correction on 65 sample(s): 52 Conv(s) with a bias visited"),
        "{stdout}"
    );
    for f in [
        "cali_table",
        "cali_table_we.mlir",
        "cali_table_we_bc.mlir",
        "cali_table_we_bc_weight.npz",
        "shape_pattern_qtable",
        "Weight_Equalization",
        "Bias_Correction",
    ] {
        assert!(dir.join(f).exists(), "{f} is missing");
    }
    assert_eq!(
        std::fs::read(dir.join("mobilenet_v2.mlir")).unwrap(),
        original,
        "the input model is never modified"
    );
    let log = std::fs::read_to_string(dir.join("Bias_Correction")).unwrap();
    assert!(log.starts_with("INFO:root:old_layer_cos:"), "{log}");
    for needle in [
        " bias correction applied, layer_cos:",
        "INFO:root:>>>run result:\nINFO:root:int8 outputs_cos:",
        "INFO:root:bias correction statistic:\n",
        "INFO:root:best mix model outputs_cos:",
        "INFO:root:total time:",
    ] {
        assert!(log.contains(needle), "`{needle}` is missing:\n{log}");
    }
    // The final table is the corrected model's.
    let table = std::fs::read_to_string(dir.join("cali_table")).unwrap();
    assert!(table.contains("# mlir: cali_table_we_bc.mlir\n"), "{table}");
    let locs = loc_names(&std::fs::read_to_string(dir.join("cali_table_we_bc.mlir")).unwrap());
    for row in table.lines().filter(|l| !l.starts_with('#')) {
        let name = row.split(' ').next().unwrap();
        assert!(locs.iter().any(|l| l == name), "row `{name}` is not an op");
    }

    // The same without --bc, for the held-out comparison.
    let out = run_calibration()
        .current_dir(&dir)
        .args(["mobilenet_v2.mlir", "--we", "--dataset"])
        .arg(workloads().join("images/calib"))
        .args(["--input_num", "100", "--processor", "bm1684"])
        .args(["--cali_method", "use_mse", "-o", "no_bc"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let (mut with_bc, mut without) = (0.0, 0.0);
    for (k, input) in held_out.iter().enumerate() {
        let float = run_outputs(&dir, "mobilenet_v2.mlir", input, &format!("f{k}.npz"));
        let bc = int8_outputs(
            &dir,
            "cali_table_we_bc.mlir",
            "cali_table",
            input,
            &format!("bc{k}.npz"),
        );
        let plain = int8_outputs(&dir, "no_bc_we.mlir", "no_bc", input, &format!("p{k}.npz"));
        with_bc += cosine(&float[0], &bc) / held_out.len() as f64;
        without += cosine(&float[0], &plain) / held_out.len() as f64;
    }
    println!("held-out output cosine: --we {without:.5}, --we --bc {with_bc:.5}");
    assert!(
        with_bc >= without - BC_NOT_WORSE_TOL,
        "--bc made the held-out output cosine worse: {with_bc} < {without}"
    );
}
