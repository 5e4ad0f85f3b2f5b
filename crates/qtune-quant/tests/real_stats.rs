//! Differential test on real statistics (issue 4 acceptance): every threshold method of the
//! Rust [`TensorStats`] against the numpy reference `tests/reference/cali_reference.py`, on the
//! activations of mobilenetv2_nsfw for the first four calibration images.
//!
//! The activations come from `tests/reference/dump_activations.py` (the workloads' reference
//! preprocessing, ONNX Runtime inference with every float tensor as an output): both sides read
//! the same float32 arrays, so the test checks the threshold math only, on the value
//! distributions calibration really sees (ReLU6 plateaus, BatchNorm outputs, depthwise convs,
//! softmax probabilities, the [0, 1] image input). Every method's threshold and the table's
//! min/max columns must agree within `REFERENCE_REL` relative, for every tensor.

use qtune_quant::{CalibrationMethod as M, PercentileSchedule, StatsConfig, TensorStats};
use qtune_tensor::read_npz;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// Relative tolerance (issue 4): the implementations differ only in the summation order of
/// f64 means.
const REFERENCE_REL: f64 = 1e-5;
const WORKLOADS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/workloads");
const MODEL: &str = "mobilenetv2_nsfw";
const IMAGES: usize = 4;
/// Every tensor of the model (1 = no subsampling); the whole test takes a few seconds.
const STRIDE: usize = 1;

fn python(script: &str, args: &[&OsStr]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(script);
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 must be installed to run the reference");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn thresholds_match_numpy_reference_on_mobilenetv2_activations() {
    let workloads = PathBuf::from(WORKLOADS);
    assert!(
        workloads.join("models/models.toml").is_file(),
        "workloads not found at {}; run scripts/fetch-workloads.sh",
        workloads.display()
    );
    let dir = std::env::temp_dir().join(format!("qtune-quant-real-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let npz = dir.join("activations.npz");
    let spec = dir.join("spec.txt");
    let images = IMAGES.to_string();
    let stride = STRIDE.to_string();
    python(
        "dump_activations.py",
        &[
            workloads.as_os_str(),
            OsStr::new(MODEL),
            OsStr::new(&images),
            OsStr::new(&stride),
            npz.as_os_str(),
            spec.as_os_str(),
        ],
    );
    let reference_text = python("cali_reference.py", &[npz.as_os_str(), spec.as_os_str()]);
    let mut reference: HashMap<(String, String), (f64, f64, f64)> = HashMap::new();
    for line in reference_text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |s: &str| s.parse::<f64>().unwrap();
        reference.insert(
            (f[0].to_string(), f[1].to_string()),
            (num(f[2]), num(f[3]), num(f[4])),
        );
    }
    let tensors: HashMap<String, qtune_tensor::Tensor> =
        read_npz(&npz).unwrap().into_iter().collect();
    let spec_text = std::fs::read_to_string(&spec).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    let mut config = StatsConfig::with_methods(&M::ALL);
    config.torch_observer = true;
    let mut failures = Vec::new();
    let mut checked = 0usize;
    let mut check = |tensor: &str, what: &str, got: (f64, f64, f64)| {
        let want = reference[&(tensor.to_string(), what.to_string())];
        let ok = |a: f64, b: f64| a == b || (a - b).abs() <= REFERENCE_REL * a.abs().max(b.abs());
        if !(ok(got.0, want.0) && ok(got.1, want.1) && ok(got.2, want.2)) {
            failures.push(format!("{tensor} {what}: rust {got:?}, numpy {want:?}"));
        }
        checked += 1;
    };
    let mut tensor_count = 0;
    for line in spec_text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(' ').collect();
        let (name, op_index, op_count, batches) = (
            f[0],
            f[1].parse::<usize>().unwrap(),
            f[2].parse::<usize>().unwrap(),
            f[3].parse::<usize>().unwrap(),
        );
        let data = tensors[name].as_f32().unwrap();
        let size = data.len() / batches;
        let schedule = PercentileSchedule::new(op_index, op_count, batches);
        let mut stats = TensorStats::new(name, &config, schedule).unwrap();
        for x in data.chunks_exact(size) {
            stats.observe(x).unwrap();
        }
        let t = stats.thresholds().unwrap();
        for m in M::ALL {
            check(name, m.name(), t.table_row(m).unwrap());
        }
        check(
            name,
            "abs_percentile",
            (t.abs_percentile.unwrap(), 0.0, 0.0),
        );
        check(
            name,
            "torch_observer",
            (t.torch_observer.unwrap(), 0.0, 0.0),
        );
        let bins = stats.histogram().map_or(0, |h| h.counts().len());
        check(
            name,
            "kl_bins",
            (f64::from(u32::try_from(bins).unwrap()), 0.0, 0.0),
        );
        tensor_count += 1;
    }
    // mobilenetv2_nsfw: the input and 157 node outputs.
    assert!(
        tensor_count >= 150,
        "only {tensor_count} tensors were dumped"
    );
    assert_eq!(checked, tensor_count * 9);
    assert!(
        failures.is_empty(),
        "{} mismatches: {failures:#?}",
        failures.len()
    );
}
