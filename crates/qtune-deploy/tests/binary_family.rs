//! Every op of the elementwise binary family (the registry in
//! `qtune-ir/src/binary.rs`) end to end, as one-node ONNX models built with
//! python `onnx`, in three forms: two tensors (broadcast), `x op c` and
//! `c op x` with a one-element constant:
//!
//! - imported and run by qtune against ONNX Runtime's output (the oracle:
//!   `python3` with `onnx`, `onnxruntime` and `numpy`, required);
//! - written to Top `.mlir` and read back: the Top op the registry names
//!   for the form (`top.AddConst`, `top.Reciprocal`, `top.CompareConst`,
//!   ...), a file `mlir-opt` parses, the same op read back, and the same
//!   output bits;
//! - the arithmetic ops quantized for bm1684x with a max table: the plan's
//!   ranges follow the registry's range rule, and the simulation is close to
//!   float.
//!
//! A new entry of the registry is covered without a change here.

mod common;
use common::{bits, close, f64s, int8_request, mlir_parses, onnxruntime, python, run, scratch};

use qtune_deploy::{Processor, quantize};
use qtune_exec::{PrepareOptions, prepare};
use qtune_ir::binary::{BINARY_OPS, BinaryKind, BinaryRange, BinarySpec};
use qtune_ir::mlir::{MlirWriteOptions, read_top_mlir, write_top_mlir};
use qtune_ir::{Graph, Op};
use qtune_quant::{CalibrationRow, CalibrationTable, QuantMode};
use qtune_tensor::compare::similarity;
use qtune_tensor::{Tensor, read_npz};

/// Writes `<dir>/<op>_<form>.onnx` and its input `<op>_<form>_in.npz` for
/// each `op:kind` (kind `arith`, `compare` or `logic`) and each form:
/// `tensors` (`y = op(a [2,3,8,8], b [1,3,1,8])`), `rhs` (`op(a, c)`) and
/// `lhs` (`op(c, a)`), `c` a constant of shape `[]`; opset 17. The logic
/// ops have the tensor form only (their constant is not a float).
const MAKE_MODELS: &str = r#"
import sys, numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto
out = sys.argv[1]
dims, bdims = [2, 3, 8, 8], [1, 3, 1, 8]
n, nb = int(np.prod(dims)), int(np.prod(bdims))
# Deterministic values: a over [-3, 4] (asymmetric, so that Max and Min
# with a constant change its range), b over [-2, 2] without 0.
a = ((np.arange(n) * 7 % n) / n * 7 - 3).astype(np.float32).reshape(dims)
b = ((np.arange(nb) * 5 % nb) / nb * 3 + 0.5).astype(np.float32)
b = np.where(np.arange(nb) % 2 == 0, b, -b).astype(np.float32).reshape(bdims)
for arg in sys.argv[2:]:
    name, kind = arg.split(":")
    if name == "Pow":
        a_, b_, c = np.abs(a) / 2 + 0.5, b, np.float32(1.5)
    elif kind == "compare":
        # Multiples of 0.5, so that Equal has hits.
        a_, b_, c = np.round(a * 2) / 2, np.round(b * 2) / 2, np.float32(0.5)
    elif kind == "logic":
        a_, b_, c = a > 0, b > 0, None
    else:
        a_, b_, c = a, b, np.float32(1.75)
    ty = TensorProto.BOOL if kind == "logic" else TensorProto.FLOAT
    oty = TensorProto.FLOAT if kind == "arith" else TensorProto.BOOL
    forms = ["tensors"] + ([] if c is None else ["rhs", "lhs"])
    for form in forms:
        ins = {"tensors": ["a", "b"], "rhs": ["a", "c"], "lhs": ["c", "a"]}[form]
        inits = [] if form == "tensors" else [numpy_helper.from_array(np.array(c, np.float32), "c")]
        inputs = [helper.make_tensor_value_info("a", ty, dims)]
        feeds = {"a": a_.astype(np.float32) if ty == TensorProto.FLOAT else a_}
        if form == "tensors":
            inputs.append(helper.make_tensor_value_info("b", ty, bdims))
            feeds["b"] = b_.astype(np.float32) if ty == TensorProto.FLOAT else b_
        node = helper.make_node(name, ins, ["y"], name=name.lower())
        g = helper.make_graph([node], name, inputs,
            [helper.make_tensor_value_info("y", oty, dims)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m, full_check=True)
        onnx.save(m, f"{out}/{name}_{form}.onnx")
        np.savez(f"{out}/{name}_{form}_in.npz", **feeds)
"#;

fn kind(spec: &BinarySpec) -> &'static str {
    match spec.kind {
        BinaryKind::Arith { .. } => "arith",
        BinaryKind::Compare { .. } => "compare",
        BinaryKind::Logic(_) => "logic",
    }
}

fn forms(spec: &BinarySpec) -> &'static [&'static str] {
    match spec.kind {
        BinaryKind::Logic(_) => &["tensors"],
        _ => &["tensors", "rhs", "lhs"],
    }
}

/// The Top op the registry writes for `form`.
fn expected_top(spec: &BinarySpec, form: &str) -> (&'static str, bool) {
    let constant = match form {
        "rhs" => spec.const_form(false),
        "lhs" => spec.const_form(true),
        _ => None,
    };
    match constant {
        Some((c, _)) => (c.op, c.negated),
        None => (spec.top.op, false),
    }
}

/// A max table of the graph's float values.
fn max_table(graph: &Graph, values: &[(qtune_ir::ValueId, &Tensor)]) -> CalibrationTable {
    let rows = values
        .iter()
        .map(|&(id, t)| {
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
        })
        .collect();
    CalibrationTable {
        rows,
        ..Default::default()
    }
}

#[test]
fn every_binary_op_matches_onnxruntime_round_trips_and_quantizes() {
    let dir = scratch("binary", "family");
    let mut make: Vec<std::ffi::OsString> =
        vec!["-c".into(), MAKE_MODELS.into(), dir.clone().into()];
    for spec in BINARY_OPS {
        make.push(format!("{}:{}", spec.name, kind(spec)).into());
    }
    python(&make.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let mut runs = vec![];
    for spec in BINARY_OPS {
        for form in forms(spec) {
            let stem = format!("{}_{form}", spec.name);
            runs.push((
                dir.join(format!("{stem}.onnx")),
                dir.join(format!("{stem}_in.npz")),
                dir.join(format!("{stem}_ort.npz")),
            ));
        }
    }
    onnxruntime(&runs);

    let mut cases = 0;
    for spec in BINARY_OPS {
        for &form in forms(spec) {
            cases += 1;
            let stem = format!("{}_{form}", spec.name);
            let feeds = read_npz(&dir.join(format!("{stem}_in.npz"))).unwrap();
            let ort = read_npz(&dir.join(format!("{stem}_ort.npz"))).unwrap();
            let reference = &ort[0].1;

            // Imported as the registry's op, run against ONNX Runtime.
            let graph =
                qtune_onnx::import_onnx(&dir.join(format!("{stem}.onnx")), &Default::default())
                    .unwrap_or_else(|e| panic!("{stem}: {e}"));
            let node = graph.nodes().next().unwrap().1.clone();
            assert!(
                node.op.binary().is_some_and(|b| std::ptr::eq(b, spec)),
                "{stem}: imported as {:?}",
                node.op
            );
            let ours = run(graph.clone(), &feeds);
            assert_eq!(ours.dims(), reference.dims(), "{stem}");
            assert_eq!(ours.dtype(), reference.dtype(), "{stem}");
            if spec.kind.is_bool() {
                assert_eq!(bits(&ours), bits(reference), "{stem}: as onnxruntime");
            } else {
                close(&stem, "onnxruntime", &ours, reference, 1e-6);
            }

            // Through the Top dialect: the registry's form, the op read back
            // (a negated form reads as the op it names), the same bits.
            let (prepared, _) = prepare(graph, &PrepareOptions::default()).unwrap();
            let (text, weights) = write_top_mlir(&prepared, &MlirWriteOptions::new(&stem)).unwrap();
            let (top_op, negated) = expected_top(spec, form);
            assert!(
                text.contains(&format!("\"{top_op}\"")),
                "{stem}: not written as {top_op}:\n{text}"
            );
            mlir_parses(&dir, &stem, &text);
            let (read, _) = read_top_mlir(&text, &weights, &format!("{stem}.mlir"))
                .unwrap_or_else(|e| panic!("{stem}: {e}\n{text}"));
            let ops: Vec<Op> = read.nodes().map(|(_, n)| n.op.clone()).collect();
            if negated {
                assert_eq!(ops.len(), 1, "{stem}");
                println!("{stem:<16} written as {top_op}, read back as {:?}", ops[0]);
            } else {
                assert_eq!(ops, vec![node.op.clone()], "{stem}: read back");
            }
            let before = run(prepared.clone(), &feeds);
            let after = run(read, &feeds);
            assert_eq!(
                bits(&before),
                bits(&after),
                "{stem}: the .mlir round trip changed the output"
            );

            // Quantized for bm1684x: int8 close to float.
            if spec.kind.is_bool() {
                continue;
            }
            let mut values: Vec<(qtune_ir::ValueId, &Tensor)> = prepared
                .inputs
                .iter()
                .map(|&id| {
                    let name = &prepared.value(id).name;
                    (id, &feeds.iter().find(|(n, _)| n == name).unwrap().1)
                })
                .collect();
            values.push((prepared.outputs[0], &before));
            let table = max_table(&prepared, &values);
            let req = int8_request(&table);
            let q = quantize(&prepared, Processor::Bm1684x, &req)
                .unwrap_or_else(|e| panic!("{stem}: {e}"));
            // The registry's range rule, against the table: `Selects` (Max,
            // Min) gives the inputs the output's range with two tensors
            // (spec 4.2 step 3) and the output the input's range with a
            // constant (step 7); `Own` keeps each value's calibrated range.
            let range = |id| {
                q.plan
                    .range(id)
                    .unwrap_or_else(|| panic!("{stem}: no range"))
            };
            let (a_id, y_id) = (
                prepared
                    .inputs
                    .iter()
                    .copied()
                    .find(|&id| prepared.value(id).name == "a")
                    .unwrap(),
                prepared.outputs[0],
            );
            // (threshold, min) as calibrated: the values a rule ties differ.
            let calibrated = |id| {
                let name = &prepared.value(id).name;
                let r = table.rows.iter().find(|r| &r.name == name).unwrap();
                (r.threshold, r.min)
            };
            assert!(
                prepared
                    .inputs
                    .iter()
                    .any(|&i| calibrated(i) != calibrated(y_id)),
                "{stem}: a weak case"
            );
            let node_id = prepared.nodes().next().unwrap().0;
            let int8 = q.plan.mode(node_id) == QuantMode::Int8;
            match (spec.range, form) {
                _ if !int8 => println!("{stem:<16} kept in {}", q.plan.mode(node_id)),
                (BinaryRange::Selects, "tensors") => {
                    for &i in &prepared.inputs {
                        assert_eq!(range(i), range(y_id), "{stem}: input takes the output's");
                    }
                }
                (BinaryRange::Selects, _) => {
                    assert_eq!(range(y_id), range(a_id), "{stem}: output takes the input's");
                }
                _ => {
                    for id in [a_id, y_id] {
                        assert_eq!(range(id).hi, calibrated(id).0, "{stem}: own range");
                    }
                }
            }
            let sim = run(q.simulation_graph(), &feeds);
            let s = similarity(&f64s(&sim), &f64s(&before));
            println!("{stem:<16} int8 vs float: cosine {:.6}", s.cosine);
            assert!(s.cosine > 0.999, "{stem}: cosine {}", s.cosine);
        }
    }
    assert!(cases >= 26, "{cases}");
    std::fs::remove_dir_all(&dir).unwrap();
}
