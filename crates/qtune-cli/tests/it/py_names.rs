//! The seed's `.py` spellings (`model_transform.py`, `run_calibration.py`,
//! `model_deploy.py`, ...): links made next to the binaries by the build
//! (target/<profile>) and by `qtune install-py-names` (after `cargo
//! install`), running exactly like the plain names.

use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin;
use qtune_cli::py_names::PY_TOOLS;

use crate::common::{run_ok, scratch, stderr_of, tool, transform_mobilenet_as, workloads};

/// The seed's commands, run under `tool_name` (plain or `.py`) in `dir`,
/// with the workload model and images for the seed's `.pt` and ImageNet
/// folder, 4 calibration images instead of 100 (speed), and `.onnx`
/// outputs for the seed's `.bmodel`s. Returns the deploy's stderr lines
/// that do not hold timings.
fn seed_steps(dir: &Path, py: bool) -> Vec<String> {
    let name = |t: &str| if py { format!("{t}.py") } else { t.to_string() };
    // Step 1: model_transform.py --model_name mobilenet_v2 --model_def
    // ../mobilenet_v2.pt --input_shapes [[1,3,224,224]] --resize_dims 256,256
    // --mean 123.675,116.28,103.53 --scale 0.0171,0.0175,0.0174
    // --pixel_format rgb --mlir mobilenet_v2.mlir
    transform_mobilenet_as(&name("model_transform"), dir, "mobilenet_v2", None, None);
    // Step 2: run_calibration.py mobilenet_v2.mlir --dataset ../ILSVRC2012
    // --input_num 100 --cali_method use_mse -o mobilenet_v2_cali_table
    run_ok(
        tool(&name("run_calibration"))
            .current_dir(dir)
            .arg("mobilenet_v2.mlir")
            .arg("--dataset")
            .arg(workloads().join("images/calib"))
            .args(["--input_num", "4", "--cali_method", "use_mse"])
            .args(["-o", "mobilenet_v2_cali_table"]),
    );
    // Step 3: model_deploy.py --mlir mobilenet_v2.mlir --quantize F32
    // --processor bm1684 --model mobilenet_v2_bm1684_f32.bmodel
    run_ok(tool(&name("model_deploy")).current_dir(dir).args([
        "--mlir",
        "mobilenet_v2.mlir",
        "--quantize",
        "F32",
        "--processor",
        "bm1684",
        "--model",
        "mobilenet_v2_bm1684_f32.onnx",
    ]));
    // Step 4: model_deploy.py --mlir mobilenet_v2.mlir --quantize INT8
    // --processor bm1684 --calibration_table mobilenet_v2_cali_table
    // --model mobilenet_v2_bm1684_int8_sym.bmodel
    let out = run_ok(tool(&name("model_deploy")).current_dir(dir).args([
        "--mlir",
        "mobilenet_v2.mlir",
        "--quantize",
        "INT8",
        "--processor",
        "bm1684",
        "--calibration_table",
        "mobilenet_v2_cali_table",
        "--model",
        "mobilenet_v2_bm1684_int8_sym.onnx",
    ]));
    stderr_of(&out)
        .lines()
        .filter(|l| !l.starts_with("wrote"))
        .map(str::to_string)
        .collect()
}

/// The file without its `# genetated time:` line.
fn without_time(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("# genetated time:"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn seed_commands_with_py_names_run_verbatim() {
    let py_dir = scratch("py_names_seed_py");
    let plain_dir = scratch("py_names_seed_plain");
    let py_log = seed_steps(&py_dir, true);
    let plain_log = seed_steps(&plain_dir, false);
    assert_eq!(py_log, plain_log);
    // Same files, byte for byte (the table up to its time line).
    for f in [
        "mobilenet_v2.mlir",
        "mobilenet_v2_top_f32_all_weight.npz",
        "mobilenet_v2_bm1684_f32.onnx",
        "mobilenet_v2_bm1684_int8_sym.onnx",
    ] {
        let a = std::fs::read(py_dir.join(f)).unwrap();
        let b = std::fs::read(plain_dir.join(f)).unwrap();
        assert!(
            a == b && !a.is_empty(),
            "{f} differs between the .py and plain runs"
        );
    }
    assert_eq!(
        without_time(&py_dir.join("mobilenet_v2_cali_table")),
        without_time(&plain_dir.join("mobilenet_v2_cali_table"))
    );
    // The seed's .bmodel output: the same explanation and exit code.
    let bmodel = |t: &str| {
        tool(t)
            .current_dir(&py_dir)
            .args(["--mlir", "mobilenet_v2.mlir", "--quantize", "F32"])
            .args(["--model", "mobilenet_v2_bm1684_f32.bmodel"])
            .output()
            .unwrap()
    };
    let (a, b) = (bmodel("model_deploy.py"), bmodel("model_deploy"));
    assert_eq!(a.status.code(), Some(2));
    assert_eq!(
        (a.status.code(), stderr_of(&a)),
        (b.status.code(), stderr_of(&b))
    );
    // The other tools TPU-MLIR ships as .py answer like their plain names
    // (the usage line names the tool as it was called).
    for t in ["fp_forward", "run_qtable", "run_sensitive_layer"] {
        let a = run_ok(tool(&format!("{t}.py")).arg("--help"));
        let b = run_ok(tool(t).arg("--help"));
        let a = String::from_utf8_lossy(&a.stdout).replace(&format!("{t}.py"), t);
        let b = String::from_utf8_lossy(&b.stdout).into_owned();
        assert!(b.contains("Usage: "), "{b}");
        assert_eq!(a, b, "{t}.py --help");
    }
}

/// What `cargo install` leaves: the bin targets, nothing else, in one
/// directory (hard links to this build's binaries, to save the copies).
fn installed(dir_name: &str, tools: &[&str]) -> PathBuf {
    let dir = scratch(dir_name);
    for t in tools {
        let file = format!("{t}{}", std::env::consts::EXE_SUFFIX);
        std::fs::hard_link(cargo_bin(t), dir.join(&file)).unwrap();
    }
    dir
}

#[test]
fn install_py_names_links_the_installed_tools() {
    let mut all = vec!["qtune"];
    all.extend(PY_TOOLS);
    let bin = installed("py_names_install", &all);
    let qtune = bin.join(format!("qtune{}", std::env::consts::EXE_SUFFIX));
    let out = run_ok(assert_cmd::Command::new(&qtune).arg("install-py-names"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.matches("created ").count(), 6, "{text}");
    for t in PY_TOOLS {
        let py = bin.join(format!("{t}.py"));
        let a = run_ok(assert_cmd::Command::new(&py).arg("--version"));
        let b = run_ok(assert_cmd::Command::new(bin.join(t)).arg("--version"));
        assert_eq!(a.stdout, b.stdout, "{t}.py");
        assert!(!a.stdout.is_empty());
    }
    // Running it again finds the links in place.
    let out = run_ok(assert_cmd::Command::new(&qtune).arg("install-py-names"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.matches("present ").count(), 6, "{text}");

    // A file of another origin under a .py name (TPU-MLIR's own script, say)
    // is left alone and named; a missing tool is named.
    let other = installed("py_names_install_other", &all[..3]);
    std::fs::write(other.join("model_transform.py"), "# TPU-MLIR's script\n").unwrap();
    let out = assert_cmd::Command::new(&qtune)
        .args(["install-py-names", "--dir"])
        .arg(&other)
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("model_transform.py` exists and is not a link"),
        "{err}"
    );
    assert!(err.contains("fp_forward` is missing"), "{err}");
    assert_eq!(
        std::fs::read_to_string(other.join("model_transform.py")).unwrap(),
        "# TPU-MLIR's script\n"
    );
}
