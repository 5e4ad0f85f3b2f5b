//! model_transform writes TPU-MLIR's canonical Top graph (issue 13): for
//! each workload, BatchNorm folded, activations fused into their producer,
//! x*sigmoid(x) as top.SiLU, the float function unchanged against ONNX
//! Runtime's golden outputs, and the file parsed by mlir-opt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common::{
    model, qtune, run_ok, scratch, stdout_of, tool, transform_workload, workloads,
};

const WORKLOADS: [&str; 6] = [
    "efficientnet_lite0",
    "mobilenetv2_nsfw",
    "yolox_det416",
    "yolov8n_320",
    "ppocr_v4_det640",
    "minilm_l6_s128",
];

/// The ops of a `.mlir` text: SSA result -> (op type, operands), from lines
/// like `%5 = "top.SiLU"(%4) : ...`.
fn ops_of(text: &str) -> Vec<(String, String, Vec<String>)> {
    let mut ops = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((res, rest)) = line.split_once(" = \"") else {
            continue;
        };
        if !res.starts_with('%') {
            continue;
        }
        let Some((op, rest)) = rest.split_once("\"(") else {
            continue;
        };
        let args = rest.split_once(')').map_or("", |(a, _)| a);
        let operands = args
            .split(',')
            .map(str::trim)
            .filter(|a| a.starts_with('%'))
            .map(String::from)
            .collect();
        ops.push((res.to_string(), op.to_string(), operands));
    }
    ops
}

fn oracle(name: &str, run: &Path) -> HashMap<String, f64> {
    let golden = workloads().join(format!("golden/{name}/output.npz"));
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/canonical_oracle.py"
        ))
        .arg(model(name))
        .arg(&golden)
        .arg(run)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{name}: oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_of(&out)
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().expect("number")))
        .collect()
}

fn mlir_opt() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/lib/llvm-19/bin/mlir-opt");
    if p.is_file() {
        Some(p)
    } else {
        assert!(
            std::env::var("CI").is_err(),
            "mlir-opt is required under CI (apt-get install mlir-19-tools)"
        );
        None
    }
}

fn canonical(name: &str) {
    let dir = scratch(&format!("canonical_{name}"));
    let mlir = transform_workload(&dir, name);
    let text = std::fs::read_to_string(&mlir).expect("mlir text");
    let ops = ops_of(&text);
    let producer: HashMap<&str, &str> = ops
        .iter()
        .map(|(r, op, _)| (r.as_str(), op.as_str()))
        .collect();
    let count = |t: &str| ops.iter().filter(|(_, op, _)| op == t).count();
    assert_eq!(count("top.BatchNorm"), 0, "{name}: a top.BatchNorm is left");
    // An activation right after a Conv is fused into it (do_relu /
    // relu_limit), never a separate op reading the Conv's output.
    for (res, op, args) in &ops {
        if matches!(op.as_str(), "top.Relu" | "top.Clip") {
            let from = args.first().and_then(|a| producer.get(a.as_str()));
            assert_ne!(
                from,
                Some(&"top.Conv"),
                "{name}: {op} {res} reads a Conv's output"
            );
        }
    }
    // The float function: the golden inputs through the .mlir.
    let run = dir.join("run.npz");
    run_ok(
        qtune()
            .arg("run")
            .arg(&mlir)
            .arg("--input")
            .arg(workloads().join(format!("golden/{name}/input.npz")))
            .arg("-o")
            .arg(&run),
    );
    let facts = oracle(name, &run);
    let info = stdout_of(&run_ok(qtune().arg("info").arg(&mlir)));
    let after = info
        .split("ops (")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .expect("info's op count");
    println!(
        "{name}: {} ONNX nodes -> {after} Top ops ({} SiLU, {} fused do_relu); min cos vs ONNX Runtime {}",
        facts["nodes"],
        count("top.SiLU"),
        text.matches("do_relu = true").count(),
        facts["min_cos"]
    );
    assert!(
        facts["min_cos"] >= 0.99999,
        "{name}: the canonical graph computes another function (cos {})",
        facts["min_cos"]
    );
    // Every x*sigmoid(x) of the source is one top.SiLU.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let silu = facts["silu"] as usize;
    assert_eq!(count("top.SiLU"), silu, "{name}: SiLU count");
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let nodes = facts["nodes"] as usize;
    assert!(
        after < nodes,
        "{name}: {after} ops is not fewer than {nodes}"
    );
    if let Some(opt) = mlir_opt() {
        let out = std::process::Command::new(opt)
            .arg("--allow-unregistered-dialect")
            .arg(&mlir)
            .arg("-o")
            .arg(dir.join("parsed.mlir"))
            .output()
            .expect("mlir-opt");
        assert!(
            out.status.success(),
            "{name}: mlir-opt rejected the file: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn canonical_efficientnet_lite0() {
    canonical("efficientnet_lite0");
}

#[test]
fn canonical_mobilenetv2_nsfw() {
    canonical("mobilenetv2_nsfw");
}

#[test]
fn canonical_yolox_det416() {
    canonical("yolox_det416");
}

#[test]
fn canonical_yolov8n_320() {
    canonical("yolov8n_320");
}

#[test]
fn canonical_ppocr_v4_det640() {
    canonical("ppocr_v4_det640");
}

#[test]
fn canonical_minilm_l6_s128() {
    canonical("minilm_l6_s128");
}

/// The workload list above is the workloads' own list.
#[test]
fn canonical_covers_every_workload() {
    let mut names: Vec<String> = std::fs::read_dir(workloads().join("golden"))
        .expect("golden dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut ours: Vec<String> = WORKLOADS.iter().map(|s| (*s).to_string()).collect();
    ours.sort();
    assert_eq!(names, ours);
}

/// The op names of a `.mlir` text: the `loc` of every op line but weights
/// (TPU-MLIR's op names; `top.Input` included), from `#locN = loc("name")`
/// aliases or inline `loc("name")`.
pub fn op_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut alias = HashMap::new();
    for line in text.lines() {
        if let Some((a, rest)) = line.split_once(" = loc(\"")
            && a.starts_with("#loc")
            && let Some((name, _)) = rest.split_once('"')
        {
            alias.insert(a.trim().to_string(), name.to_string());
        }
    }
    let mut names = std::collections::BTreeSet::new();
    // Weights and `top.None` are operands, not ops.
    let is_op = |l: &&str| {
        l.contains(" = \"top.") && !l.contains("\"top.Weight\"") && !l.contains("\"top.None\"")
    };
    for line in text.lines().filter(is_op) {
        let Some((_, l)) = line.rsplit_once(" loc(") else {
            continue;
        };
        let l = l.trim_end().trim_end_matches(')');
        let name = match l.strip_prefix('"') {
            Some(inline) => inline.trim_end_matches('"').to_string(),
            None => match alias.get(l) {
                Some(n) => n.clone(),
                None => continue,
            },
        };
        names.insert(name);
    }
    names
}

fn weighted_nodes(onnx: &Path) -> (Vec<String>, Vec<String>) {
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/canonical_oracle.py"
        ))
        .arg("weights")
        .arg(onnx)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut int8, mut float) = (Vec::new(), Vec::new());
    for line in stdout_of(&out).lines() {
        match line.split_once(' ') {
            Some(("int8", n)) => int8.push(n.to_string()),
            Some(("float", n)) => float.push(n.to_string()),
            _ => panic!("oracle line {line}"),
        }
    }
    (int8, float)
}

/// A qtable written by a search names only ops of the canonical `.mlir`,
/// and `model_deploy` with it floats exactly those ops: the Conv/Gemm/MatMul
/// nodes of the QDQ export whose weights are float are the ones the chip
/// keeps in float without a qtable plus the qtable's weighted rows, checked
/// on the exported ONNX files (not on qtune's own summaries).
pub fn assert_qtable_floats_exactly(
    dir: &Path,
    mlir: &str,
    table: &str,
    qtable: &str,
    processor: &str,
) {
    let text = std::fs::read_to_string(dir.join(mlir)).expect("mlir");
    let ops = op_names(&text);
    let rows: Vec<String> = std::fs::read_to_string(dir.join(qtable))
        .expect("qtable")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert!(!rows.is_empty(), "{qtable} has no rows");
    for r in &rows {
        assert!(
            ops.contains(r),
            "{qtable} names `{r}`, which is not an op of {mlir}"
        );
    }
    let deploy = |qt: Option<&str>, out: &str| {
        let mut cmd = tool("model_deploy");
        cmd.current_dir(dir)
            .args([
                "--mlir",
                mlir,
                "--quantize",
                "INT8",
                "--processor",
                processor,
            ])
            .args(["--calibration_table", table, "--model", out]);
        if let Some(q) = qt {
            cmd.args(["--quantize_table", q]);
        }
        run_ok(&mut cmd);
        weighted_nodes(&dir.join(out))
    };
    let (_, base_float) = deploy(None, "qtable_check_int8.onnx");
    let (mixed_int8, mixed_float) = deploy(Some(qtable), "qtable_check_mix.onnx");
    let weighted: std::collections::BTreeSet<&String> =
        mixed_int8.iter().chain(&mixed_float).collect();
    let mut expected: std::collections::BTreeSet<&String> = base_float.iter().collect();
    let weighted_rows: Vec<&String> = rows.iter().filter(|r| weighted.contains(r)).collect();
    expected.extend(weighted_rows.iter().copied());
    let got: std::collections::BTreeSet<&String> = mixed_float.iter().collect();
    assert_eq!(
        got, expected,
        "float Conv/Gemm/MatMul nodes of the mixed export vs the qtable's rows"
    );
    println!(
        "{qtable}: {} rows, all ops of {mlir}; {} weighted rows float in the export, {} float without the qtable",
        rows.len(),
        weighted_rows.len(),
        base_float.len()
    );
}
