//! Every op of the elementwise unary family (the registry in
//! `qtune-ir/src/unary.rs`) end to end, as a one-node ONNX model built with
//! python `onnx`:
//!
//! - imported and run by qtune against ONNX Runtime's output (the oracle:
//!   `python3` with `onnx`, `onnxruntime` and `numpy`, required);
//! - written to Top `.mlir` and read back: the op keeps its Top name and
//!   attributes and the output bits;
//! - quantized for bm1684x with a max table and simulated: int8 close to
//!   float.
//!
//! A new entry of the registry is covered without a change here; the
//! attribute values are not the defaults, so that their import, `.mlir` and
//! export paths are exercised.

mod common;
use common::{close, f64s, int8_request, onnxruntime, python, run_x, scratch};

use qtune_deploy::{Processor, quantize};
use qtune_exec::{PrepareOptions, prepare, prepare_top};
use qtune_ir::mlir::{MlirWriteOptions, read_top_mlir, write_top_mlir};
use qtune_ir::unary::{UNARY_OPS, UnarySpec};
use qtune_ir::{Graph, Op};
use qtune_quant::{CalibrationRow, CalibrationTable};
use qtune_tensor::compare::similarity;
use qtune_tensor::{Tensor, read_npz, write_npz};

const DIMS: [usize; 4] = [2, 3, 8, 8];

/// Writes `<dir>/<op>.onnx` for each `(op type, [(attr, value)])`: `Y =
/// op(X)`, X and Y float32 of [`DIMS`], opset 17.
const MAKE_MODELS: &str = r#"
import sys, onnx
from onnx import helper, TensorProto
out = sys.argv[1]
for arg in sys.argv[2:]:
    name, _, attrs = arg.partition(":")
    kw = {}
    for a in filter(None, attrs.split(",")):
        k, v = a.split("=")
        kw[k] = float(v)
    dims = [2, 3, 8, 8]
    node = helper.make_node(name, ["x"], ["y"], name=name.lower(), **kw)
    g = helper.make_graph([node], name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, f"{out}/{name}.onnx")
"#;

/// Attribute values other than the defaults (a `1.5 d + 0.125` of each).
fn attr_values(spec: &UnarySpec) -> Vec<f32> {
    spec.attrs.iter().map(|a| a.default * 1.5 + 0.125).collect()
}

/// 384 values over [-6, 6], or over (0, 6] when the op is not defined on
/// negatives (its registry definition gives NaN there).
fn input(spec: &UnarySpec, params: &[f32]) -> Tensor {
    let n: usize = DIMS.iter().product();
    let signed: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 7.0 % n as f32) / n as f32 * 12.0 - 6.0)
        .collect();
    let v = if signed.iter().any(|&x| (spec.reference)(x, params).is_nan()) {
        signed.iter().map(|x| x.abs() + 0.01).collect()
    } else {
        signed
    };
    Tensor::from_f32(DIMS.to_vec(), v).unwrap()
}

/// A max table of the one-node graph: x and y.
fn max_table(graph: &Graph, x: &Tensor, y: &Tensor) -> CalibrationTable {
    let row = |id, t: &Tensor| {
        let v = t.to_f32_vec();
        let (lo, hi) = v
            .iter()
            .fold((0f32, 0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        CalibrationRow::new(
            &graph.value(id).name,
            f64::from(lo.abs().max(hi)).max(1e-5),
            f64::from(lo),
            f64::from(hi),
        )
    };
    CalibrationTable {
        rows: vec![row(graph.inputs[0], x), row(graph.outputs[0], y)],
        ..Default::default()
    }
}

#[test]
fn every_unary_op_matches_onnxruntime_round_trips_and_quantizes() {
    let dir = scratch("unary", "family");
    let specs: Vec<&UnarySpec> = UNARY_OPS.iter().filter(|s| s.onnx.is_some()).collect();
    // The models and inputs.
    let mut make: Vec<std::ffi::OsString> =
        vec!["-c".into(), MAKE_MODELS.into(), dir.clone().into()];
    for spec in &specs {
        let attrs: Vec<String> = spec
            .attrs
            .iter()
            .zip(attr_values(spec))
            .map(|(a, v)| format!("{}={v}", a.name))
            .collect();
        make.push(format!("{}:{}", spec.onnx.unwrap(), attrs.join(",")).into());
        let x = input(spec, &attr_values(spec));
        write_npz(
            &dir.join(format!("{}_in.npz", spec.name)),
            &[("x".to_string(), x)],
        )
        .unwrap();
    }
    let args: Vec<&std::ffi::OsStr> = make.iter().map(|a| a.as_os_str()).collect();
    python(&args);
    // ONNX Runtime on all of them.
    let runs: Vec<_> = specs
        .iter()
        .map(|spec| {
            (
                dir.join(format!("{}.onnx", spec.onnx.unwrap())),
                dir.join(format!("{}_in.npz", spec.name)),
                dir.join(format!("{}_ort.npz", spec.name)),
            )
        })
        .collect();
    onnxruntime(&runs);

    for spec in &specs {
        let name = spec.name;
        let onnx = spec.onnx.unwrap();
        let x = input(spec, &attr_values(spec));
        let ort = read_npz(&dir.join(format!("{name}_ort.npz"))).unwrap();
        let reference = &ort[0].1;

        // Imported with the attributes given, run against ONNX Runtime.
        let graph = qtune_onnx::import_onnx(&dir.join(format!("{onnx}.onnx")), &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let node = graph.nodes().next().unwrap().1.clone();
        let u = node
            .op
            .unary()
            .unwrap_or_else(|| panic!("{name}: imported as {:?}", node.op));
        assert_eq!(u.spec.name, name);
        assert_eq!(
            u.params.as_slice(),
            &attr_values(spec)[..],
            "{name}: attributes"
        );
        let ours = run_x(graph.clone(), &x);
        close(name, "onnxruntime", &ours, reference, 1e-5);

        // Through the Top dialect, as imported (the op itself) and as
        // canonicalized (what the tools write: Neg becomes MulConst(-1)):
        // the same ops, attributes and bits.
        let (prepared, _) = prepare(graph, &PrepareOptions::default()).unwrap();
        let (top, _) = prepare_top(prepared.clone()).unwrap();
        for (i, g) in [prepared, top.clone()].into_iter().enumerate() {
            let (text, weights) = write_top_mlir(&g, &MlirWriteOptions::new(name)).unwrap();
            if i == 0 {
                assert!(
                    text.contains(&format!("\"{}\"", spec.top)),
                    "{name}: {text}"
                );
            }
            let (read, _) = read_top_mlir(&text, &weights, &format!("{name}.mlir"))
                .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
            let ops = |g: &Graph| -> Vec<Op> { g.nodes().map(|(_, n)| n.op.clone()).collect() };
            assert_eq!(ops(&read), ops(&g), "{name}: read back");
            if i == 0 {
                assert_eq!(ops(&read), vec![node.op.clone()], "{name}: read back");
            }
            let before = run_x(g, &x);
            let after = run_x(read, &x);
            assert!(
                before
                    .to_f32_vec()
                    .iter()
                    .zip(after.to_f32_vec())
                    .all(|(p, q)| p.to_bits() == q.to_bits()),
                "{name}: the .mlir round trip changed the output"
            );
        }
        let float = run_x(top.clone(), &x);

        // Quantized: int8 on x and y, close to float.
        let table = max_table(&top, &x, &float);
        let req = int8_request(&table);
        let q = quantize(&top, Processor::Bm1684x, &req).unwrap_or_else(|e| panic!("{name}: {e}"));
        let qnodes = q
            .qdq
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::QuantizeLinear { .. }))
            .count();
        assert!(qnodes >= 1, "{name}: nothing quantized");
        let sim = run_x(q.simulation_graph(), &x);
        let s = similarity(&f64s(&sim), &f64s(&float));
        let range = f64s(&float).iter().fold(0f64, |m, v| m.max(v.abs()));
        println!(
            "{name:<12} int8 vs float: cosine {:.6}, max abs diff {:.3e} (range {range:.3})",
            s.cosine, s.max_abs_diff
        );
        assert!(s.cosine > 0.999, "{name}: cosine {}", s.cosine);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every op with attributes, written without them, takes ONNX's defaults
/// (the registry's), as ONNX Runtime does. (TPU-MLIR's ONNX converter does
/// not always: it reads a missing Elu alpha as 0.)
#[test]
fn missing_attributes_take_the_onnx_defaults() {
    let dir = scratch("unary", "defaults");
    let specs: Vec<&UnarySpec> = UNARY_OPS
        .iter()
        .filter(|s| s.onnx.is_some() && !s.attrs.is_empty())
        .collect();
    assert!(!specs.is_empty());
    let mut make: Vec<std::ffi::OsString> =
        vec!["-c".into(), MAKE_MODELS.into(), dir.clone().into()];
    let mut runs = vec![];
    for spec in &specs {
        let onnx = spec.onnx.unwrap();
        let defaults: Vec<f32> = spec.attrs.iter().map(|a| a.default).collect();
        make.push(format!("{onnx}:").into());
        write_npz(
            &dir.join(format!("{onnx}_in.npz")),
            &[("x".to_string(), input(spec, &defaults))],
        )
        .unwrap();
        runs.push((
            dir.join(format!("{onnx}.onnx")),
            dir.join(format!("{onnx}_in.npz")),
            dir.join(format!("{onnx}_ort.npz")),
        ));
    }
    python(&make.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    onnxruntime(&runs);
    for spec in &specs {
        let onnx = spec.onnx.unwrap();
        let defaults: Vec<f32> = spec.attrs.iter().map(|a| a.default).collect();
        let graph = qtune_onnx::import_onnx(&dir.join(format!("{onnx}.onnx")), &Default::default())
            .unwrap_or_else(|e| panic!("{onnx}: {e}"));
        let op = graph.nodes().next().unwrap().1.op.clone();
        assert_eq!(op, (spec.build)(&defaults), "{onnx}");
        let ours = run_x(graph, &input(spec, &defaults));
        let ort = read_npz(&dir.join(format!("{onnx}_ort.npz"))).unwrap();
        let (a, b) = (f64s(&ours), f64s(&ort[0].1));
        for (p, q) in a.iter().zip(&b) {
            assert!(
                (p - q).abs() <= 1e-5 * q.abs().max(1.0),
                "{onnx}: {p} vs {q}"
            );
        }
        println!("{onnx:<12} with default attributes: as onnxruntime");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
