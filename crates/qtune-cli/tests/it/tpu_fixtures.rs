//! Fixtures from TPU-MLIR itself (issue 13, item 6): the `.mlir` files
//! TPU-MLIR wrote (`../shared/reference/tpu-mlir-files/`) parsed and, for
//! the ops qtune runs, run with made-up weights of the right shapes; and a
//! hand-written `.mlir` in TPU-MLIR's canonical form (activations fused into
//! Conv / Add as `do_relu` + `relu_limit`, ops named after their last fused
//! member) deployed with a table keyed by exactly those names, the QDQ
//! export checked against ONNX Runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use qtune_tensor::{Tensor, read_npz, write_npz};

use crate::common::{qtune, run_ok, scratch, stderr_of, stdout_of, tool};

/// The folder of files written by TPU-MLIR (see its README.md).
fn fixtures() -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/tpu-mlir-files"
    ));
    assert!(p.is_dir(), "{} is missing", p.display());
    p
}

/// Deterministic made-up values in `[lo, hi)` (xorshift64; no weights are
/// published for these graphs, and the tests must not depend on a seed of
/// the machine).
fn made_up(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            #[allow(clippy::cast_precision_loss)]
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

fn tensor(dims: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_f32(dims.to_vec(), v).expect("made-up tensor")
}

/// `#locN = loc("name")` lines of a TPU-MLIR print: alias -> name.
fn loc_aliases(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (alias, rest) = l.split_once(" = loc(\"")?;
            let name = rest.strip_suffix("\")")?;
            alias
                .starts_with("#loc")
                .then(|| (alias.to_string(), name.to_string()))
        })
        .collect()
}

/// The name an op line is called by: its `loc(#locN)` alias resolved.
fn loc_of(line: &str, aliases: &HashMap<String, String>) -> String {
    let start = line.rfind("loc(").expect("op line without loc") + 4;
    let alias = line[start..].trim_end().trim_end_matches(')');
    aliases
        .get(alias)
        .unwrap_or_else(|| panic!("no #loc for `{alias}` in `{line}`"))
        .clone()
}

/// `tensor<3x1x1x1xf32>` -> [3, 1, 1, 1] (float32 only: every weight of the
/// fixtures is).
fn dims_of(ty: &str) -> Vec<usize> {
    let inner = ty
        .strip_prefix("tensor<")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or_else(|| panic!("not a tensor type: {ty}"));
    let mut parts: Vec<&str> = inner.split('x').collect();
    assert_eq!(parts.pop(), Some("f32"), "{ty}");
    parts
        .iter()
        .map(|d| d.parse().expect("static dimension"))
        .collect()
}

/// The `top.Weight` ops of a TPU-MLIR print: (loc name, dims), in order.
fn top_weights(text: &str) -> Vec<(String, Vec<usize>)> {
    let aliases = loc_aliases(text);
    text.lines()
        .filter(|l| l.contains("= \"top.Weight\"()"))
        .map(|l| {
            let ty = l
                .split("-> ")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .expect("weight result type");
            (loc_of(l, &aliases), dims_of(ty))
        })
        .collect()
}

/// The module's `module.weight_file` (qtune's reader opens it next to the
/// `.mlir`, as TPU-MLIR does).
fn weight_file(text: &str) -> String {
    let start = text
        .find("module.weight_file = \"")
        .expect("module.weight_file")
        + "module.weight_file = \"".len();
    let len = text[start..].find('"').expect("closing quote");
    text[start..start + len].to_string()
}

/// The 1-based line of the first line containing `needle`, and the line.
fn line_of<'a>(text: &'a str, needle: &str) -> (usize, &'a str) {
    text.lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .map(|(i, l)| (i + 1, l))
        .unwrap_or_else(|| panic!("no line with `{needle}`"))
}

/// The fixture with its `top.AbsAdd` (an op qtune need not run) cut out:
/// the function returns the AbsAdd's operand instead. Everything else stays
/// as TPU-MLIR printed it (`#loc` aliases, `top.None`, module attributes).
/// Returns the text and the SSA name now returned.
fn without_absadd(text: &str) -> (String, String) {
    let (_, abs) = line_of(text, "\"top.AbsAdd\"");
    // `    %4 = "top.AbsAdd"(%3) {...`
    let result = abs
        .trim_start()
        .split(' ')
        .next()
        .expect("result")
        .to_string();
    let operand = abs
        .split("\"top.AbsAdd\"(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("operand")
        .to_string();
    let ret = format!("return {result} :");
    assert_eq!(text.matches(&ret).count(), 1, "the AbsAdd is not returned");
    let cut: String = text
        .lines()
        .filter(|l| !l.contains("\"top.AbsAdd\""))
        .map(|l| format!("{}\n", l.replace(&ret, &format!("return {operand} :"))))
        .collect();
    (cut, operand)
}

/// The float attribute `key = <value> : f64` of an op line.
fn f64_attr(line: &str, key: &str) -> f64 {
    let start = line.find(&format!("{key} = ")).expect("attribute") + key.len() + 3;
    line[start..]
        .split([' ', ',', '}'])
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("attribute {key} of `{line}`"))
}

/// The fixture's computation without its AbsAdd, computed here in f64 from
/// the op's definition in TPU-MLIR (TopOps.td): a depthwise 1x1 Conv
/// (`test.mlir`: the BatchNorm merged into weight and bias), or a BatchNorm
/// whose gamma and beta are `none`, i.e. 1 and 0 (`test_origin.mlir`).
fn reference(text: &str, weights: &BTreeMap<String, Vec<f32>>, x: &[f32], c: usize) -> Vec<f64> {
    let hw = x.len() / c;
    let per_channel = |f: &dyn Fn(usize, f64) -> f64| -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| f(i / hw, f64::from(v)))
            .collect()
    };
    if text.contains("\"top.Conv\"") {
        let (_, conv) = line_of(text, "\"top.Conv\"");
        // What this reference computes: one 1x1 filter per channel, no pads.
        for attr in [
            "group = 3 : i64",
            "kernel_shape = [1, 1]",
            "pads = [0, 0, 0, 0]",
            "strides = [1, 1]",
            "do_relu = false",
        ] {
            assert!(conv.contains(attr), "`{attr}` not in {conv}");
        }
        let w = &weights["input0_bn_merged_to_weight"];
        let b = &weights["input0_bn_merged_to_bias"];
        per_channel(&|ch, v| f64::from(w[ch]) * v + f64::from(b[ch]))
    } else {
        let (_, bn) = line_of(text, "\"top.BatchNorm\"");
        assert!(bn.contains("%0, %0)"), "gamma and beta are not none: {bn}");
        let eps = f64_attr(bn, "epsilon");
        let mean = &weights["input0_bn_mean"];
        let var = &weights["input0_bn_var"];
        per_channel(&|ch, v| (v - f64::from(mean[ch])) / (f64::from(var[ch]) + eps).sqrt())
    }
}

/// Both `.mlir` files TPU-MLIR wrote end in `top.AbsAdd`, which qtune does
/// not run: with weights of the right shapes made up, `qtune info` and
/// `qtune run` exit 2 naming the op and its line. Cut off that last op, the
/// rest (a depthwise Conv in `test.mlir`, a BatchNorm with `none` gamma and
/// beta in `test_origin.mlir`) reads and runs, and agrees with the same
/// computation done here.
#[test]
fn tpu_mlir_fixture_mlirs_parse_and_run() {
    for file in ["test.mlir", "test_origin.mlir"] {
        let dir = scratch(&format!("tpu_fixtures_{}", file.replace('.', "_")));
        let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
        std::fs::write(dir.join(file), &text).unwrap();
        let wfile = weight_file(&text);
        let weights = top_weights(&text);
        assert_eq!(weights.len(), 2, "{file}: {weights:?}");

        // Without the weight file, the error names it.
        let out = qtune()
            .current_dir(&dir)
            .args(["info", file])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{file}: {}", stderr_of(&out));
        assert!(
            stderr_of(&out).contains(&wfile),
            "{file}: {}",
            stderr_of(&out)
        );

        // Made-up weights, all positive (one fixture's are a variance).
        let mut values = BTreeMap::new();
        let mut npz = Vec::new();
        for (seed, (name, dims)) in (1u64..).zip(&weights) {
            let v = made_up(seed, dims.iter().product(), 0.25, 1.25);
            npz.push((name.clone(), tensor(dims, v.clone())));
            values.insert(name.clone(), v);
        }
        write_npz(&dir.join(&wfile), &npz).unwrap();

        let aliases = loc_aliases(&text);
        let (_, input_line) = line_of(&text, "\"top.Input\"");
        let input = loc_of(input_line, &aliases);
        let in_dims = [1, 3, 14, 14];
        let x = made_up(99, in_dims.iter().product(), -2.0, 2.0);
        write_npz(
            &dir.join("in.npz"),
            &[(input.clone(), tensor(&in_dims, x.clone()))],
        )
        .unwrap();

        // The whole fixture: exit 2 naming top.AbsAdd and its line.
        let (line, _) = line_of(&text, "\"top.AbsAdd\"");
        for args in [
            vec!["info", file],
            vec!["run", file, "--input", "in.npz", "-o", "out.npz"],
        ] {
            let out = qtune().current_dir(&dir).args(&args).output().unwrap();
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains("`top.AbsAdd`") && err.contains(&format!("{file}:{line}:")),
                "{args:?}: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
        assert!(!dir.join("out.npz").exists());

        // Without the AbsAdd: info and run succeed.
        let (cut, returned) = without_absadd(&text);
        let cut_file = file.replace(".mlir", "_cut.mlir");
        std::fs::write(dir.join(&cut_file), &cut).unwrap();
        let (_, ret_line) = line_of(&cut, &format!("{returned} = "));
        let output = loc_of(ret_line, &aliases);
        let info = run_ok(qtune().current_dir(&dir).args(["info", &cut_file]));
        let info = stdout_of(&info);
        for want in [
            format!("{input} float32 [1,3,14,14]"),
            format!("{output} float32 [1,3,14,14]"),
        ] {
            assert!(info.contains(&want), "`{want}` not in:\n{info}");
        }
        run_ok(
            qtune()
                .current_dir(&dir)
                .args(["run", &cut_file, "--input", "in.npz", "-o", "out.npz"]),
        );
        let got = read_npz(&dir.join("out.npz")).unwrap();
        assert_eq!(got.len(), 1, "{file}");
        let (name, y) = &got[0];
        assert_eq!(name, &output, "{file}");
        assert_eq!(y.dims(), in_dims, "{file}");
        let y = y.to_f32_vec();
        let want = reference(&text, &values, &x, in_dims[1]);
        for (i, (&a, &b)) in y.iter().zip(&want).enumerate() {
            assert!(a.is_finite(), "{file}: element {i} is {a}");
            assert!(
                (f64::from(a) - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{file}: element {i}: qtune {a}, reference {b}"
            );
        }
    }
}

/// A small Top graph as TPU-MLIR's `model_transform` prints it after its
/// canonicalization: Conv+Relu as one `top.Conv` with `do_relu = true`
/// named after the Relu, Conv+Clip(0, 6) with `relu_limit = 6.0` named after
/// the Clip, a linear Conv, Add+Relu as one `top.Add`, a global AvgPool,
/// Flatten as `top.Reshape`, Gemm as `top.MatMul` with its weight already
/// transposed to [K, N]. The fusion and the naming follow TPU-MLIR's
/// `TopFuseRelu` (`lib/Dialect/Top/Canonicalize/Relu.cpp`): the op before a
/// Relu gets `do_relu`, the Relu's `relu_limit` (6 for a Clip(0, 6), which
/// its ONNX frontend reads as a Relu with a limit) and the Relu's loc.
const CANONICAL_MLIR: &str = r#"#loc = loc(unknown)
module attributes {module.chip = "ALL", module.name = "tiny", module.platform = "ONNX", module.state = "TOP_F32", module.weight_file = "tiny_top_f32_all_weight.npz"} {
  func.func @main(%arg0: tensor<1x3x16x16xf32> loc(unknown)) -> tensor<1x4xf32> {
    %0 = "top.None"() : () -> none loc(#loc)
    %1 = "top.Input"(%arg0) {channel_format = "nchw", keep_aspect_ratio = false, keep_ratio_mode = "letterbox", mean = [0.000000e+00, 0.000000e+00, 0.000000e+00], pad_type = "center", pad_value = 0 : i64, pixel_format = "bgr", resize_dims = [16, 16], scale = [1.000000e+00, 1.000000e+00, 1.000000e+00]} : (tensor<1x3x16x16xf32>) -> tensor<1x3x16x16xf32> loc(#loc1)
    %2 = "top.Weight"() : () -> tensor<8x3x3x3xf32> loc(#loc2)
    %3 = "top.Weight"() : () -> tensor<8xf32> loc(#loc3)
    %4 = "top.Conv"(%1, %2, %3) {dilations = [1, 1], do_relu = true, group = 1 : i64, kernel_shape = [3, 3], pads = [1, 1, 1, 1], relu_limit = -1.000000e+00 : f64, strides = [1, 1]} : (tensor<1x3x16x16xf32>, tensor<8x3x3x3xf32>, tensor<8xf32>) -> tensor<1x8x16x16xf32> loc(#loc4)
    %5 = "top.Weight"() : () -> tensor<8x8x3x3xf32> loc(#loc5)
    %6 = "top.Weight"() : () -> tensor<8xf32> loc(#loc6)
    %7 = "top.Conv"(%4, %5, %6) {dilations = [1, 1], do_relu = true, group = 1 : i64, kernel_shape = [3, 3], pads = [1, 1, 1, 1], relu_limit = 6.000000e+00 : f64, strides = [1, 1]} : (tensor<1x8x16x16xf32>, tensor<8x8x3x3xf32>, tensor<8xf32>) -> tensor<1x8x16x16xf32> loc(#loc7)
    %8 = "top.Weight"() : () -> tensor<8x8x1x1xf32> loc(#loc8)
    %9 = "top.Conv"(%4, %8, %0) {dilations = [1, 1], do_relu = false, group = 1 : i64, kernel_shape = [1, 1], pads = [0, 0, 0, 0], relu_limit = -1.000000e+00 : f64, strides = [1, 1]} : (tensor<1x8x16x16xf32>, tensor<8x8x1x1xf32>, none) -> tensor<1x8x16x16xf32> loc(#loc9)
    %10 = "top.Add"(%7, %9) {do_relu = true, relu_limit = -1.000000e+00 : f64} : (tensor<1x8x16x16xf32>, tensor<1x8x16x16xf32>) -> tensor<1x8x16x16xf32> loc(#loc10)
    %11 = "top.AvgPool"(%10) {ceil_mode = false, count_include_pad = false, do_relu = false, keepdims = true, kernel_shape = [16, 16], pads = [0, 0, 0, 0], relu_limit = -1.000000e+00 : f64, strides = [1, 1]} : (tensor<1x8x16x16xf32>) -> tensor<1x8x1x1xf32> loc(#loc11)
    %12 = "top.Reshape"(%11) {shape = [1, 8]} : (tensor<1x8x1x1xf32>) -> tensor<1x8xf32> loc(#loc12)
    %13 = "top.Weight"() : () -> tensor<8x4xf32> loc(#loc13)
    %14 = "top.Weight"() : () -> tensor<4xf32> loc(#loc14)
    %15 = "top.MatMul"(%12, %13, %14) {do_relu = false, left_transpose = false, relu_limit = -1.000000e+00 : f64, right_transpose = false} : (tensor<1x8xf32>, tensor<8x4xf32>, tensor<4xf32>) -> tensor<1x4xf32> loc(#loc15)
    return %15 : tensor<1x4xf32> loc(#loc)
  } loc(#loc)
} loc(#loc)
#loc1 = loc("input")
#loc2 = loc("conv1_w")
#loc3 = loc("conv1_b")
#loc4 = loc("conv1_Relu")
#loc5 = loc("conv2_w")
#loc6 = loc("conv2_b")
#loc7 = loc("conv2_Clip")
#loc8 = loc("conv3_w")
#loc9 = loc("conv3_Conv")
#loc10 = loc("add_Relu")
#loc11 = loc("pool_GlobalAveragePool")
#loc12 = loc("flatten_Flatten")
#loc13 = loc("fc_w")
#loc14 = loc("fc_b")
#loc15 = loc("fc_Gemm")
"#;

/// The tensors of [`CANONICAL_MLIR`] as TPU-MLIR names them: the input and
/// one per op, fused ops under their last member's name.
const CANONICAL_TENSORS: [&str; 8] = [
    "input",
    "conv1_Relu",
    "conv2_Clip",
    "conv3_Conv",
    "add_Relu",
    "pool_GlobalAveragePool",
    "flatten_Flatten",
    "fc_Gemm",
];

/// Its weights: (loc name, dims, scale of the made-up values, bias-like
/// offset). Scales about 1/sqrt(fan-in) keep the activations of order 1-10,
/// so that the ReLU6 clips (checked below) and the linear Conv goes
/// negative (so the Add's fused Relu does something).
const CANONICAL_WEIGHTS: [(&str, &[usize], f32, f32); 7] = [
    ("conv1_w", &[8, 3, 3, 3], 0.4, 0.0),
    ("conv1_b", &[8], 0.35, 0.15),
    ("conv2_w", &[8, 8, 3, 3], 0.5, 0.0),
    ("conv2_b", &[8], 0.75, 0.25),
    ("conv3_w", &[8, 8, 1, 1], 0.7, 0.0),
    ("fc_w", &[8, 4], 1.0, 0.0),
    ("fc_b", &[4], 0.1, 0.0),
];

/// An independent float forward of [`CANONICAL_MLIR`] in numpy (float64),
/// from the ops' definitions: prints the largest difference to qtune's
/// float output and their cosine.
const NUMPY_FORWARD: &str = r#"
import sys
import numpy as np
w = {k: v.astype(np.float64) for k, v in np.load(sys.argv[1]).items()}
x = np.load(sys.argv[2])["input"].astype(np.float64)
got = np.load(sys.argv[3])["fc_Gemm"].astype(np.float64)
def conv(x, k, b, pad):
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, k.shape[0], h, wd))
    for i in range(k.shape[2]):
        for j in range(k.shape[3]):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], k[:, :, i, j])
    return out if b is None else out + b[None, :, None, None]
c1 = np.maximum(conv(x, w["conv1_w"], w["conv1_b"], 1), 0)
c2 = np.clip(conv(c1, w["conv2_w"], w["conv2_b"], 1), 0, 6)
c3 = conv(c1, w["conv3_w"], None, 0)
a = np.maximum(c2 + c3, 0)
p = a.mean(axis=(2, 3))
y = p @ w["fc_w"] + w["fc_b"]
cos = min(float(u @ v / np.linalg.norm(u) / np.linalg.norm(v)) for u, v in zip(y, got))
print(f"max_abs {np.abs(y - got).max():.3e} min_cos {cos:.9f}")
"#;

/// For each Conv of an ONNX model: how its weight is stored (`int8` behind
/// a DequantizeLinear, `float` an initializer or Constant of float32 maybe
/// behind Casts, else what it is), how many of its inputs come out of a
/// DequantizeLinear, and the op types reading its output.
const CONV_WEIGHTS: &str = r#"
import sys, onnx
g = onnx.load(sys.argv[1]).graph
init = {i.name: i.data_type for i in g.initializer}
prod = {o: n for n in g.node for o in n.output}
cons = {}
for n in g.node:
    for i in n.input:
        cons.setdefault(i, []).append(n.op_type)
def const_type(name):
    if name in init:
        return init[name]
    n = prod.get(name)
    if n is not None and n.op_type == "Constant":
        return n.attribute[0].t.data_type
    return None
def kind(name):
    n = prod.get(name)
    while n is not None and n.op_type == "Cast":
        name = n.input[0]
        n = prod.get(name)
    if n is not None and n.op_type == "DequantizeLinear":
        return "int8" if const_type(n.input[0]) == onnx.TensorProto.INT8 else "dq-other"
    t = const_type(name)
    return "float" if t == onnx.TensorProto.FLOAT else f"other:{t}:{n.op_type if n else None}"
for n in g.node:
    if n.op_type == "Conv":
        dq = sum(1 for i in n.input if i in prod and prod[i].op_type == "DequantizeLinear")
        print(n.name, kind(n.input[1]), dq, ",".join(cons.get(n.output[0], [])))
"#;

/// `CONV_WEIGHTS` on `onnx`: node name -> (weight kind, DequantizeLinear
/// inputs, consumers of the output).
fn conv_weights(onnx: &Path) -> BTreeMap<String, (String, usize, String)> {
    let out = std::process::Command::new("python3")
        .args(["-c", CONV_WEIGHTS])
        .arg(onnx)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    stdout_of(&out)
        .lines()
        .map(|l| {
            let p: Vec<&str> = l.split(' ').collect();
            assert_eq!(p.len(), 4, "{l}");
            (
                p[0].to_string(),
                (p[1].to_string(), p[2].parse().unwrap(), p[3].to_string()),
            )
        })
        .collect()
}

fn qdq_script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/qdq_agreement.py"
    ))
}

/// `qdq_agreement.py compare`: ONNX Runtime on `onnx` vs `sim` per sample;
/// returns its report, asserting it passed at `min_cos`.
fn ort_agrees(onnx: &Path, inputs: &Path, sim: &Path, min_cos: f64) -> String {
    let out = std::process::Command::new("python3")
        .arg(qdq_script())
        .arg("compare")
        .arg(onnx)
        .arg(inputs)
        .arg(sim)
        .arg(min_cos.to_string())
        .output()
        .unwrap();
    let text = stdout_of(&out);
    println!("{}: {text}", onnx.display());
    assert!(
        out.status.success(),
        "{}: ONNX Runtime and qtune disagree below {min_cos}:\n{text}{}",
        onnx.display(),
        stderr_of(&out)
    );
    text
}

/// The ops-per-precision count of a deploy summary (`6 INT8, 1 F16`).
fn count_of(summary: &str, mode: &str) -> usize {
    summary
        .split([',', '(', ')'])
        .find_map(|part| part.trim().strip_suffix(&format!(" {mode}"))?.parse().ok())
        .unwrap_or(0)
}

/// The rows of a calibration table: name -> (threshold, min, max).
fn table_rows(path: &Path) -> BTreeMap<String, [f64; 3]> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(p.len(), 4, "{l}");
            let v = |i: usize| p[i].parse::<f64>().unwrap();
            (p[0].to_string(), [v(1), v(2), v(3)])
        })
        .collect()
}

/// A `.mlir` in TPU-MLIR's canonical form and a calibration table in
/// TPU-MLIR's format keyed by its fused op names (computed here from a
/// float run): model_deploy INT8 for bm1684x succeeds, and ONNX Runtime on
/// the QDQ export agrees with `qtune run`'s simulation of the same table on
/// every sample. A qtable row naming a fused Conv floats the whole op (its
/// weight is no int8 in the export) and the mixed export agrees too.
#[test]
fn hand_built_canonical_mlir_with_fused_relu_deploys_and_agrees_with_ort() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import onnx, onnxruntime, numpy"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "python3 with onnx, onnxruntime and numpy is required");
    let dir = scratch("tpu_fixtures_canonical");
    std::fs::write(dir.join("tiny.mlir"), CANONICAL_MLIR).unwrap();
    let weights: Vec<(String, Tensor)> = (10u64..)
        .zip(CANONICAL_WEIGHTS)
        .map(|(seed, (name, dims, scale, offset))| {
            let v = made_up(seed, dims.iter().product(), offset - scale, offset + scale);
            (name.to_string(), tensor(dims, v))
        })
        .collect();
    write_npz(&dir.join("tiny_top_f32_all_weight.npz"), &weights).unwrap();
    // 16 calibration samples and 8 other ones to check on, stacked on axis 0.
    let dims = |n: usize| [n, 3, 16, 16];
    let calib = made_up(1000, dims(16).iter().product(), -2.0, 2.0);
    let val = made_up(2000, dims(8).iter().product(), -2.0, 2.0);
    write_npz(
        &dir.join("calib.npz"),
        &[("input".to_string(), tensor(&dims(16), calib.clone()))],
    )
    .unwrap();
    write_npz(
        &dir.join("val.npz"),
        &[("input".to_string(), tensor(&dims(8), val))],
    )
    .unwrap();

    // qtune reads the fused ops as one op each, under TPU-MLIR's names.
    let info = stdout_of(&run_ok(
        qtune().current_dir(&dir).args(["info", "tiny.mlir"]),
    ));
    assert!(!info.contains("before_relu"), "{info}");
    for want in [
        "conv1_Relu top.Conv do_relu -> conv1_Relu [1,8,16,16]",
        "conv2_Clip top.Conv do_relu relu_limit=6 -> conv2_Clip [1,8,16,16]",
        "add_Relu top.Add do_relu -> add_Relu [1,8,16,16]",
        "fc_Gemm top.MatMul -> fc_Gemm [1,4]",
    ] {
        assert!(info.contains(want), "`{want}` not in:\n{info}");
    }

    // The float model against numpy.
    run_ok(qtune().current_dir(&dir).args([
        "run",
        "tiny.mlir",
        "--input",
        "val.npz",
        "-o",
        "float.npz",
    ]));
    let out = std::process::Command::new("python3")
        .args(["-c", NUMPY_FORWARD])
        .args(["tiny_top_f32_all_weight.npz", "val.npz", "float.npz"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    println!("float vs numpy: {text}");
    let figure = |key: &str| -> f64 {
        text.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    assert!(figure("max_abs") < 1e-4, "{text}");
    assert!(figure("min_cos") > 0.999_999, "{text}");

    // The table, from a float run of the calibration samples with every
    // tensor dumped: TPU-MLIR's format, threshold = abs max (its `max`).
    run_ok(qtune().current_dir(&dir).args([
        "run",
        "tiny.mlir",
        "--input",
        "calib.npz",
        "-o",
        "dump.npz",
        "--dump_all",
    ]));
    let dump = read_npz(&dir.join("dump.npz")).unwrap();
    let names: BTreeSet<&str> = dump.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        CANONICAL_TENSORS.into_iter().collect::<BTreeSet<_>>(),
        "the float run's tensors are not TPU-MLIR's"
    );
    let mut table = String::from(
        "# genetated time: 2024-01-01 00:00:00.000000\n# histogram number: 2048\n\
         # sample number: 16\n# tune number: 5\n###\n# op_name    threshold    min    max\n",
    );
    let mut stats = BTreeMap::new();
    for (name, t) in &dump {
        let v = t.to_f32_vec();
        let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        table.push_str(&format!(
            "{name} {:.7} {lo:.7} {hi:.7}\n",
            lo.abs().max(hi.abs())
        ));
        stats.insert(name.clone(), (lo, hi));
    }
    // The fused activations act, so the test exercises them: ReLU6 clips at
    // 6, the linear Conv goes negative and the Relus cut at 0.
    assert_eq!(stats["conv2_Clip"], (0.0, 6.0), "{stats:?}");
    assert!(stats["conv3_Conv"].0 < -1.0, "{stats:?}");
    assert_eq!(stats["conv1_Relu"].0, 0.0, "{stats:?}");
    assert_eq!(stats["add_Relu"].0, 0.0, "{stats:?}");
    std::fs::write(dir.join("tiny_cali_table"), &table).unwrap();

    // run_calibration keys its table by the same names: no invented
    // `_before_relu` rows, and the same min and max.
    let ds = dir.join("dataset");
    std::fs::create_dir_all(&ds).unwrap();
    for (i, sample) in calib.chunks(3 * 16 * 16).enumerate() {
        write_npz(
            &ds.join(format!("s{i:02}.npz")),
            &[("input".to_string(), tensor(&dims(1), sample.to_vec()))],
        )
        .unwrap();
    }
    run_ok(tool("run_calibration").current_dir(&dir).args([
        "tiny.mlir",
        "--dataset",
        "dataset",
        "--input_num",
        "16",
        "--cali_method",
        "max",
        "-o",
        "rc_table",
    ]));
    let rows = table_rows(&dir.join("rc_table"));
    assert_eq!(
        rows.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        names,
        "run_calibration's rows"
    );
    for (name, [_, lo, hi]) in &rows {
        let (want_lo, want_hi) = stats[name];
        assert!(
            (lo - f64::from(want_lo)).abs() <= 1e-6 * (1.0 + lo.abs())
                && (hi - f64::from(want_hi)).abs() <= 1e-6 * (1.0 + hi.abs()),
            "{name}: run_calibration {lo} {hi}, dump {want_lo} {want_hi}"
        );
    }

    // Deploy, simulate, compare in ONNX Runtime.
    let deploy = |extra: &[&str], onnx: &str| {
        let out = run_ok(
            tool("model_deploy")
                .current_dir(&dir)
                .args(["--mlir", "tiny.mlir", "--quantize", "INT8"])
                .args(["--processor", "bm1684x"])
                .args(["--calibration_table", "tiny_cali_table"])
                .args(extra)
                .args(["--model", onnx]),
        );
        let err = stderr_of(&out);
        assert!(!err.contains("warning"), "{err}");
        err
    };
    let simulate = |extra: &[&str], out: &str| {
        run_ok(
            qtune()
                .current_dir(&dir)
                .args(["run", "tiny.mlir", "--input", "val.npz", "-o", out])
                .args(["--calibration_table", "tiny_cali_table"])
                .args(["--processor", "bm1684x"])
                .args(extra),
        );
    };
    let summary = deploy(&[], "tiny_int8.onnx");
    assert_eq!(count_of(&summary, "INT8"), 7, "{summary}");
    simulate(&[], "sim.npz");
    let int8 = dir.join("tiny_int8.onnx");
    let val = dir.join("val.npz");
    ort_agrees(&int8, &val, &dir.join("sim.npz"), 0.999);
    // The simulation did quantize (it is not the float run), and the
    // quantized model is close to the float one (the table is a sensible
    // one, not merely one both sides apply alike).
    let output = |f: &str| read_npz(&dir.join(f)).unwrap()[0].1.to_f32_vec();
    assert_ne!(output("sim.npz"), output("float.npz"));
    ort_agrees(&int8, &val, &dir.join("float.npz"), 0.99);
    // Every Conv reads int8 weights; a fused Conv's output is read by its
    // own activation only (the fused op has one quantized output).
    let convs = conv_weights(&int8);
    assert_eq!(
        convs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["conv1_Relu", "conv2_Clip", "conv3_Conv"],
        "{convs:?}"
    );
    assert!(convs.values().all(|(w, _, _)| w == "int8"), "{convs:?}");
    assert_eq!(convs["conv1_Relu"].2, "Relu", "{convs:?}");
    assert_eq!(convs["conv2_Clip"].2, "Clip", "{convs:?}");

    // A qtable row naming the fused Conv+Relu floats the whole op: its
    // Conv reads no int8 weight and no dequantized input, the others stay
    // int8.
    std::fs::write(
        dir.join("tiny_qtable"),
        "# op_name quantize_mode\nconv1_Relu F16\n",
    )
    .unwrap();
    let summary = deploy(&["--quantize_table", "tiny_qtable"], "tiny_mix.onnx");
    assert_eq!(count_of(&summary, "F16"), 1, "{summary}");
    assert_eq!(count_of(&summary, "INT8"), 6, "{summary}");
    let mix = dir.join("tiny_mix.onnx");
    let convs = conv_weights(&mix);
    assert_eq!(convs["conv1_Relu"].0, "float", "{convs:?}");
    assert_eq!(convs["conv1_Relu"].1, 0, "{convs:?}");
    assert_eq!(convs["conv1_Relu"].2, "Relu", "{convs:?}");
    assert_eq!(convs["conv2_Clip"].0, "int8", "{convs:?}");
    assert_eq!(convs["conv3_Conv"].0, "int8", "{convs:?}");
    simulate(&["--quantize_table", "tiny_qtable"], "sim_mix.npz");
    ort_agrees(&mix, &val, &dir.join("sim_mix.npz"), 0.999);
}
