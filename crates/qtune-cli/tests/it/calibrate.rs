//! `run_calibration` (and `qtune calibrate`), run as the seed runs it, with
//! workload paths and few samples.

use std::collections::HashMap;
use std::path::PathBuf;

use assert_cmd::Command;
use qtune_tensor::read_npz;

use crate::common::*;

/// `--cali_method max` must reproduce the float activations' abs-max up to
/// float formatting (7 decimals) and f32 rounding.
const MAX_METHOD_REL_TOL: f64 = 1e-6;
/// Absolute slack of the table's 7-decimal numbers.
const SEVEN_DECIMALS: f64 = 5e-8;

fn run_calibration() -> Command {
    Command::cargo_bin("run_calibration").expect("run_calibration binary")
}

fn calib_images() -> PathBuf {
    workloads().join("images/calib")
}

/// `(threshold, min, max)` of a table row.
type Row = (f64, f64, f64);

/// Rows by name and the row order of a table.
fn parse_table(text: &str) -> (Vec<String>, HashMap<String, Row>) {
    let mut order = Vec::new();
    let mut rows = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 4, "row `{line}`");
        for v in &f[1..] {
            let decimals = v.split('.').nth(1).map_or(0, str::len);
            assert_eq!(decimals, 7, "row `{line}`: 7 decimals expected");
        }
        let num = |s: &str| s.parse::<f64>().unwrap();
        order.push(f[0].to_string());
        rows.insert(f[0].to_string(), (num(f[1]), num(f[2]), num(f[3])));
    }
    (order, rows)
}

/// The op names of a .mlir in op order (Input and every op but Weight/None).
fn mlir_op_names(text: &str) -> Vec<String> {
    let mut locs = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("#loc")
            && let Some((id, body)) = rest.split_once(" = loc(")
        {
            locs.insert(
                id.to_string(),
                body.trim_end_matches(')').trim_matches('"').to_string(),
            );
        }
    }
    let mut names = Vec::new();
    for line in text.lines() {
        let Some(start) = line.find("\"top.") else {
            continue;
        };
        let op = &line[start + 5..];
        let op = &op[..op.find('"').unwrap()];
        if op == "Weight" || op == "None" {
            continue;
        }
        let loc = line
            .rsplit("loc(#loc")
            .next()
            .unwrap()
            .trim_end_matches(')');
        names.push(locs[loc].clone());
    }
    names
}

#[test]
fn seed_case2_mse_writes_tpu_mlir_table() {
    let dir = scratch("calibrate_seed_mse");
    transform_mobilenet(&dir, "mobilenet_v2", None, None);
    // Seed: run_calibration mobilenet_v2.mlir --dataset ../ILSVRC2012 --input_num 100
    //       --cali_method use_mse -o mobilenet_v2_cali_table
    let out = run_calibration()
        .current_dir(&dir)
        .arg("mobilenet_v2.mlir")
        .arg("--dataset")
        .arg(calib_images())
        .args(["--input_num", "8", "--cali_method", "use_mse"])
        .args(["-o", "mobilenet_v2_cali_table"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout_of(&out).contains("with mse on 8 sample(s)"),
        "{}",
        stdout_of(&out)
    );
    let text = std::fs::read_to_string(dir.join("mobilenet_v2_cali_table")).unwrap();
    assert!(!dir.join("mobilenet_v2_cali_table.1").exists());
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("# mlir version: ") && lines[0].ends_with(" cali version 1.0"));
    assert_eq!(lines[1], "# mlir: mobilenet_v2.mlir");
    assert!(lines[2].starts_with("# genetated time: "));
    assert_eq!(
        &lines[3..10],
        &[
            "# quantization threshold calculation method: mse",
            "# histogram number: 2048",
            "# sample number: 8",
            "###",
            "# tune number: 5",
            "###",
            "# op_name    threshold    min    max",
        ]
    );
    let mlir = std::fs::read_to_string(dir.join("mobilenet_v2.mlir")).unwrap();
    let (order, rows) = parse_table(&text);
    assert_eq!(order, mlir_op_names(&mlir));
    // Input op: mse threshold is the abs-max (spec 3.3.5).
    let (th, min, max) = rows["input_1"];
    assert!((th - min.abs().max(max.abs())).abs() <= SEVEN_DECIMALS);
    for (name, (th, min, max)) in &rows {
        assert!(
            *th >= 1e-5 && *th <= min.abs().max(max.abs()) + SEVEN_DECIMALS,
            "{name}"
        );
    }
    let qtable = std::fs::read_to_string(dir.join("shape_pattern_qtable")).unwrap();
    assert!(qtable.contains("# chip: bm1684x\n# total layers: 0 (unique list blow)\n"));
}

#[test]
fn seed_case2_default_kl_is_tuned() {
    let dir = scratch("calibrate_seed_kl");
    transform_mobilenet(&dir, "mobilenet_v2", None, None);
    // Seed: run_calibration mobilenet_v2.mlir --dataset ../ILSVRC2012 --input_num 100 -o mobilenet_v2_cali_table
    let out = run_calibration()
        .current_dir(&dir)
        .arg("mobilenet_v2.mlir")
        .arg("--dataset")
        .arg(calib_images())
        .args(["--input_num", "4", "--tune_num", "2"])
        .args(["-o", "mobilenet_v2_cali_table"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = std::fs::read_to_string(dir.join("mobilenet_v2_cali_table")).unwrap();
    assert!(!dir.join("mobilenet_v2_cali_table.1").exists());
    assert!(text.contains("# quantization threshold calculation method: ['kl']\n"));
    assert!(text.contains("# sample number: 4\n###\n# tune number: 2\n###\n"));
    let (order, rows) = parse_table(&text);
    assert_eq!(order.len(), rows.len());
    for (name, (th, min, max)) in &rows {
        assert!(
            *th >= 1e-5 && *th <= min.abs().max(max.abs()) + SEVEN_DECIMALS,
            "{name}"
        );
    }
    // Without tuning: the plain method name, `<table>.1` renamed, and
    // tuning only ever raised thresholds.
    let out = run_calibration()
        .current_dir(&dir)
        .arg("mobilenet_v2.mlir")
        .arg("--dataset")
        .arg(calib_images())
        .args(["--input_num", "4", "--tune_num", "0", "-o", "untuned"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let untuned_text = std::fs::read_to_string(dir.join("untuned")).unwrap();
    assert!(!dir.join("untuned.1").exists());
    assert!(untuned_text.contains("# quantization threshold calculation method: kl\n"));
    let (untuned_order, untuned) = parse_table(&untuned_text);
    assert_eq!(untuned_order, order);
    let mut raised = 0;
    for (name, (th, min, max)) in &rows {
        let (th0, min0, max0) = untuned[name];
        assert!(*th >= th0, "{name}: tuning lowered {th0} to {th}");
        assert_eq!((*min, *max), (min0, max0), "{name}");
        raised += usize::from(*th > th0);
    }
    assert!(raised > 0, "tuning changed nothing");
}

#[test]
fn one_and_two_threads_give_identical_tables() {
    let dir = scratch("calibrate_threads");
    transform_mobilenet(&dir, "mobilenet_v2", None, None);
    let run = |threads: &str, method: &str, out_name: &str| {
        let out = Command::cargo_bin("qtune")
            .unwrap()
            .current_dir(&dir)
            .args(["calibrate", "mobilenet_v2.mlir", "--dataset"])
            .arg(calib_images())
            .args([
                "--input_num",
                "3",
                "--tune_num",
                "1",
                "--no_time",
                "--quiet",
            ])
            .args([
                "--cali_method",
                method,
                "--threads",
                threads,
                "-o",
                out_name,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        std::fs::read(dir.join(out_name)).unwrap()
    };
    for method in ["kl", "percentile9999", "aciq_laplace"] {
        let one = run("1", method, &format!("{method}_t1"));
        let two = run("2", method, &format!("{method}_t2"));
        assert!(
            one == two,
            "{method}: tables differ between 1 and 2 threads"
        );
        let text = String::from_utf8(one).unwrap();
        assert!(!text.contains("genetated time"));
    }
}

#[test]
fn max_method_equals_abs_max_of_float_activations() {
    let dir = scratch("calibrate_max");
    let w = workloads();
    let images = ["darknet_dog.jpg", "darknet_eagle.jpg", "darknet_horses.jpg"];
    // The preprocessed inputs come from model_transform's --test_input
    // (an independent path), one npz per image.
    let mut npz_list = String::new();
    let mut image_list = String::new();
    for (i, img) in images.iter().enumerate() {
        let name = format!("m{i}");
        let input = transform_mobilenet(&dir, &name, Some(&w.join("images/calib").join(img)), None);
        npz_list.push_str(&format!(
            "{}\n",
            input.file_name().unwrap().to_string_lossy()
        ));
        image_list.push_str(&format!("{}\n", w.join("images/calib").join(img).display()));
    }
    std::fs::write(dir.join("npz_list.txt"), npz_list).unwrap();
    std::fs::write(dir.join("image_list.txt"), image_list).unwrap();
    // Every float activation of every image, by `qtune run --dump_all`.
    let mut expected: HashMap<String, f64> = HashMap::new();
    // Per image (min, max), for `--range mean`.
    let mut extremes: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for i in 0..images.len() {
        let out = Command::cargo_bin("qtune")
            .unwrap()
            .current_dir(&dir)
            .args([
                "run",
                "mobilenet_v2.mlir",
                "--input",
                &format!("m{i}_in_f32.npz"),
            ])
            .args(["--dump_all", "-o", &format!("all{i}.npz")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        for (name, t) in read_npz(&dir.join(format!("all{i}.npz"))).unwrap() {
            let v = t.to_f32_vec();
            let lo = v.iter().fold(f64::INFINITY, |m, &x| m.min(f64::from(x)));
            let hi = v
                .iter()
                .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
            extremes.entry(name.clone()).or_default().push((lo, hi));
            let m = v.iter().fold(0.0f64, |m, x| m.max(f64::from(x.abs())));
            let e = expected.entry(name).or_insert(0.0);
            *e = e.max(m);
        }
    }
    for list in ["npz_list.txt", "image_list.txt"] {
        let out = run_calibration()
            .current_dir(&dir)
            .args(["mobilenet_v2.mlir", "--data_list", list])
            .args(["--cali_method", "use_max", "-o", "cali_max", "--quiet"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{list}: {}", stderr_of(&out));
        let text = std::fs::read_to_string(dir.join("cali_max")).unwrap();
        let (order, rows) = parse_table(&text);
        assert_eq!(order.len(), expected.len(), "{list}");
        let mut failures = Vec::new();
        for (name, (th, _, _)) in &rows {
            let want = expected[name].max(1e-5);
            if (th - want).abs() > MAX_METHOD_REL_TOL * want + SEVEN_DECIMALS {
                failures.push(format!("{name}: table {th}, activations {want}"));
            }
        }
        assert!(failures.is_empty(), "{list}: {failures:#?}");
    }
    // `--range mean`: the min/max columns are the means of the per-image
    // extremes of the same dumps; the thresholds stay max's.
    let out = run_calibration()
        .current_dir(&dir)
        .args(["mobilenet_v2.mlir", "--data_list", "npz_list.txt"])
        .args([
            "--cali_method",
            "use_max",
            "--range",
            "mean",
            "-o",
            "cali_mean",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let (_, rows) = parse_table(&std::fs::read_to_string(dir.join("cali_mean")).unwrap());
    let mut failures = Vec::new();
    let mut moved = 0;
    for (name, &(th, lo, hi)) in &rows {
        let e = &extremes[name];
        let n = e.len() as f64;
        let (want_lo, want_hi) = (
            e.iter().map(|p| p.0).sum::<f64>() / n,
            e.iter().map(|p| p.1).sum::<f64>() / n,
        );
        if expected[name] <= 1e-5 {
            continue;
        }
        let off = |a: f64, b: f64| (a - b).abs() > MAX_METHOD_REL_TOL * b.abs() + SEVEN_DECIMALS;
        if off(lo, want_lo) || off(hi, want_hi) || off(th, expected[name]) {
            failures.push(format!(
                "{name}: table ({th}, {lo}, {hi}), dumps ({}, {want_lo}, {want_hi})",
                expected[name]
            ));
        }
        moved += usize::from(hi < expected[name] - 1e-6);
    }
    assert!(failures.is_empty(), "--range mean: {failures:#?}");
    assert!(
        moved > 0,
        "no max column below the observed max: the mean was not taken"
    );
}

#[test]
fn bad_inputs_fail_with_one_line_and_no_table() {
    let dir = scratch("calibrate_errors");
    transform_mobilenet(&dir, "mobilenet_v2", None, None);
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::write(dir.join("empty/notes.txt"), "not an image").unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["--dataset", "no_such_folder"], "no such folder"),
        (
            &["--dataset", "empty", "--transformer", "True"],
            "--transformer True keeps the transformer pattern layers in float during a mixed-precision search",
        ),
        (
            &["--dataset", "empty", "--transformer", "maybe"],
            "--transformer maybe: expected True or False",
        ),
        (&["--dataset", "empty"], "no usable file"),
        (&["--data_list", "no_such_list.txt"], "no_such_list.txt"),
        (
            &["--dataset", "empty", "--search", "search_qtable"],
            "--search search_qtable needs --quantize_table",
        ),
        (
            &["--dataset", "empty", "--search", "search_qtable", "--we"],
            "--we and --bc go with plain calibration or --search search_threshold",
        ),
        (
            &["--dataset", "empty", "--we", "--bc", "--smc"],
            "--smc is not yet supported by qtune",
        ),
    ];
    let mut failures = Vec::new();
    for (extra, message) in cases {
        let out = run_calibration()
            .current_dir(&dir)
            .arg("mobilenet_v2.mlir")
            .args(extra)
            .args(["-o", "cali_table"])
            .output()
            .unwrap();
        let err = stderr_of(&out);
        if out.status.code() != Some(2)
            || err.lines().count() != 1
            || !err.contains(message)
            || dir.join("cali_table").exists()
            || dir.join("cali_table.1").exists()
        {
            failures.push(format!(
                "{extra:?}: code {:?}, stderr {err:?}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn max_method_matches_onnxruntime_minmax() {
    let python_ok = std::process::Command::new("python3")
        .args(["-c", "import onnxruntime.quantization, onnx, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    // The oracle is required: .ci/run installs it, so a missing one is a
    // failure, not a skip.
    assert!(
        python_ok,
        "python3 with onnxruntime, onnx and numpy is required for this test (pip install onnxruntime onnx numpy)"
    );
    let dir = scratch("calibrate_ort_minmax");
    let w = workloads();
    let mut npz = Vec::new();
    for (i, img) in ["darknet_dog.jpg", "darknet_kite.jpg"].iter().enumerate() {
        let name = format!("m{i}");
        let input = transform_mobilenet(&dir, &name, Some(&w.join("images/calib").join(img)), None);
        npz.push(input);
    }
    let script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ort_minmax.py"));
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--run-calibration")
        .arg(assert_cmd::cargo::cargo_bin("run_calibration"))
        .arg("--model")
        .arg(model("mobilenetv2_nsfw"))
        .arg("--workdir")
        .arg(&dir)
        .args(&npz)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout_of(&out),
        stderr_of(&out)
    );
}

#[test]
fn killed_run_leaves_the_old_table_intact() {
    let dir = scratch("calibrate_kill");
    transform_mobilenet(&dir, "mobilenet_v2", None, None);
    let old = "# an older table\ninput_1 1.0000000 -1.0000000 1.0000000\n";
    std::fs::write(dir.join("cali_table"), old).unwrap();
    // A long run whatever the machine: the photos repeated to 3,000 samples.
    let mut photos: Vec<PathBuf> = std::fs::read_dir(calib_images())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "jpg" || x == "JPEG" || x == "jpeg")
        })
        .collect();
    photos.sort();
    assert!(!photos.is_empty());
    let list: String = (0..3000)
        .map(|i| format!("{}\n", photos[i % photos.len()].display()))
        .collect();
    std::fs::write(dir.join("long_list.txt"), list).unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("run_calibration"))
        .current_dir(&dir)
        .arg("mobilenet_v2.mlir")
        .arg("--data_list")
        .arg("long_list.txt")
        .args(["-o", "cali_table", "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    let _ = child.wait();
    assert!(!finished, "the run ended before it could be killed");
    assert_eq!(
        std::fs::read_to_string(dir.join("cali_table")).unwrap(),
        old
    );
}

#[test]
fn onnx_with_preprocessing_flags_matches_its_mlir() {
    let dir = scratch("calibrate_onnx");
    transform_mobilenet(&dir, "mobilenet_v2", None, None);
    let run = |model_arg: PathBuf, flags: &[&str], out_name: &str| {
        let out = run_calibration()
            .current_dir(&dir)
            .arg(model_arg)
            .args(flags)
            .arg("--dataset")
            .arg(calib_images())
            .args(["--input_num", "2", "--cali_method", "percentile9999"])
            .args(["-o", out_name, "--quiet", "--no_time"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        let text = std::fs::read_to_string(dir.join(out_name)).unwrap();
        // Everything but the `# mlir:` line.
        text.lines()
            .filter(|l| !l.starts_with("# mlir:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let from_mlir = run(PathBuf::from("mobilenet_v2.mlir"), &[], "from_mlir");
    let from_onnx = run(
        model("mobilenetv2_nsfw"),
        &[
            "--resize_dims",
            "256,256",
            "--mean",
            "123.675,116.28,103.53",
            "--scale",
            "0.0171,0.0175,0.0174",
            "--pixel_format",
            "rgb",
        ],
        "from_onnx",
    );
    assert!(from_mlir == from_onnx, "tables differ");
    // Preprocessing flags on a .mlir are refused (it carries its own).
    let out = run_calibration()
        .current_dir(&dir)
        .args(["mobilenet_v2.mlir", "--mean", "1,2,3", "--dataset"])
        .arg(calib_images())
        .args(["-o", "refused"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("carries its own"),
        "{}",
        stderr_of(&out)
    );
    assert!(!dir.join("refused").exists());
}
