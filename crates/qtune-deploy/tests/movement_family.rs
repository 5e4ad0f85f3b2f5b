//! Every op of the data-movement family (the registry in
//! `qtune-ir/src/movement.rs`) end to end, each as a two-node ONNX model
//! built with python `onnx` (opset 17): `x -> Neg -> op -> y`, the Neg
//! giving the op a producer for the backward range rules.
//!
//! - imported and run by qtune against ONNX Runtime's output (the oracle:
//!   `python3` with `onnx`, `onnxruntime` and `numpy`, required);
//! - written to Top `.mlir` (the registry's Top op, a file `mlir-opt`
//!   parses) and read back as the same op: the same output bits;
//! - exported to ONNX (opset 17) and run by ONNX Runtime again: the same
//!   output;
//! - planned all-int8 for bm1684x: an op the registry keeps in float
//!   (`tpu_float`) is float in the plan, the others int8; with the op's
//!   output calibrated at twice its input's threshold, the ranges end where
//!   the registry's rule says
//!   (forward rules: the output takes the input's; backward rules: the
//!   input takes the output's; the others: each keeps its own), and the QDQ
//!   export puts a QuantizeLinear after the op exactly when the two differ.
//!
//! A new entry of the registry needs its model in `MAKE_MODELS` (the
//! script fails on a name it does not know).

mod common;
use common::{
    bits, close, import_and_export, int8_request, mlir_parses, onnxruntime, python, run_x, scratch,
};

use qtune_deploy::{Processor, quantize};
use qtune_ir::mlir::{MlirWriteOptions, read_top_mlir, write_top_mlir};
use qtune_ir::movement::{MOVEMENT_OPS, MoveRange, MoveSpec};
use qtune_ir::{Graph, NodeId, Op};
use qtune_quant::{CalibrationRow, CalibrationTable, QuantMode};
use qtune_tensor::read_npz;

/// Writes `<dir>/<op>.onnx` for each op named after the folder, and
/// `<dir>/in.npz`.
const MAKE_MODELS: &str = r#"
import sys, numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto
out = sys.argv[1]
dims = [1, 4, 6, 8]
n = int(np.prod(dims))
x = ((np.arange(n) * 37 % n) / n * 6 - 2.5).astype(np.float32).reshape(dims)
np.savez(f"{out}/in.npz", x=x)
i64 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)
# name -> (attributes, constant inputs after the data, extra data inputs,
# output dims)
cases = {
    "Reshape": ({}, [i64("shape", [1, 4, 48])], 0, [[1, 4, 48]]),
    "Flatten": ({"axis": 1}, [], 0, [[1, 192]]),
    "Squeeze": ({}, [i64("axes", [0])], 0, [[4, 6, 8]]),
    "Unsqueeze": ({}, [i64("axes", [2])], 0, [[1, 4, 1, 6, 8]]),
    "Identity": ({}, [], 0, [dims]),
    "Transpose": ({"perm": [0, 2, 3, 1]}, [], 0, [[1, 6, 8, 4]]),
    "SpaceToDepth": ({"blocksize": 2}, [], 0, [[1, 16, 3, 4]]),
    "DepthToSpace": ({"blocksize": 2, "mode": "DCR"}, [], 0, [[1, 1, 12, 16]]),
    "Slice": ({}, [i64("starts", [1]), i64("ends", [5]), i64("axes", [3]), i64("steps", [2])],
              0, [[1, 4, 6, 2]]),
    "Split": ({"axis": 1}, [i64("split", [1, 3])], 0, [[1, 1, 6, 8], [1, 3, 6, 8]]),
    "Gather": ({"axis": 1}, [i64("indices", [2, 0])], 0, [[1, 2, 6, 8]]),
    "Concat": ({"axis": 1}, [], 1, [[1, 8, 6, 8]]),
    "Tile": ({}, [i64("repeats", [1, 2, 1, 1])], 0, [[1, 8, 6, 8]]),
    "Expand": ({}, [i64("shape", [2, 4, 6, 8])], 0, [[2, 4, 6, 8]]),
}
for name in sys.argv[2:]:
    attrs, consts, extra, ydims = cases[name]
    outs = ["y"] + [f"y{i + 2}" for i in range(len(ydims) - 1)]
    nodes = [
        helper.make_node("Neg", ["x"], ["t"], name="neg"),
        helper.make_node(name, ["t"] * (1 + extra) + [c.name for c in consts], outs,
                         name=name.lower(), **attrs),
    ]
    g = helper.make_graph(nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, d) for o, d in zip(outs, ydims)],
        initializer=consts)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, f"{out}/{name}.onnx")
"#;

/// The graph's data-movement node.
fn movement_node(g: &Graph) -> NodeId {
    let found: Vec<NodeId> = g
        .nodes()
        .filter(|(_, n)| n.op.movement().is_some())
        .map(|(id, _)| id)
        .collect();
    assert_eq!(found.len(), 1, "one data-movement node");
    found[0]
}

fn is_spec(op: &Op, spec: &MoveSpec) -> bool {
    op.movement().is_some_and(|s| std::ptr::eq(s, spec))
}

#[test]
fn every_movement_op_matches_onnxruntime_round_trips_and_plans() {
    let dir = scratch("movement", "family");
    let mut make: Vec<std::ffi::OsString> =
        vec!["-c".into(), MAKE_MODELS.into(), dir.clone().into()];
    make.extend(MOVEMENT_OPS.iter().map(|s| s.name.into()));
    python(&make.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let x = read_npz(&dir.join("in.npz")).unwrap().remove(0).1;

    let mut runs = vec![];
    let mut cases = vec![];
    for spec in MOVEMENT_OPS {
        let stem = spec.name;
        let (_, prepared) = import_and_export(&dir, stem, &mut runs);
        let op = &prepared.node(movement_node(&prepared)).op;
        assert!(is_spec(op, spec), "{stem}: imported as {op:?}");
        cases.push((spec, stem, prepared));
    }
    onnxruntime(&runs);

    let m = f64::from(x.to_f32_vec().iter().fold(0f32, |m, v| m.max(v.abs())));
    for (spec, stem, prepared) in cases {
        let reference = read_npz(&dir.join(format!("{stem}_ort.npz"))).unwrap();
        let ours = run_x(prepared.clone(), &x);
        close(stem, "onnxruntime", &ours, &reference[0].1, 0.0);
        let exported = read_npz(&dir.join(format!("{stem}_ort_export.npz"))).unwrap();
        close(
            stem,
            "its export in onnxruntime",
            &exported[0].1,
            &reference[0].1,
            0.0,
        );

        // Through the Top dialect, back as the same op.
        let (text, weights) = write_top_mlir(&prepared, &MlirWriteOptions::new(stem)).unwrap();
        assert!(
            text.contains(&format!("\"{}\"", spec.top)),
            "{stem}: not written as {}:\n{text}",
            spec.top
        );
        mlir_parses(&dir, stem, &text);
        let (read, _) = read_top_mlir(&text, &weights, &format!("{stem}.mlir"))
            .unwrap_or_else(|e| panic!("{stem}: {e}\n{text}"));
        let op = &read.node(movement_node(&read)).op;
        assert!(is_spec(op, spec), "{stem}: read back as {op:?}");
        assert_eq!(
            bits(&ours),
            bits(&run_x(read, &x)),
            "{stem}: the .mlir round trip changed the output"
        );

        // The range rule: the op's input `t` calibrated at m, its outputs
        // at 2m.
        let id = movement_node(&prepared);
        let node = prepared.node(id);
        let t = node.inputs[0].unwrap();
        let mut rows = vec![
            CalibrationRow::new("x", m, -m, m),
            CalibrationRow::new(&prepared.value(t).name, m, -m, m),
        ];
        for &o in &node.outputs {
            let name = &prepared.value(o).name;
            rows.push(CalibrationRow::new(name, 2.0 * m, -2.0 * m, 2.0 * m));
        }
        let table = CalibrationTable {
            rows,
            ..Default::default()
        };
        let q = quantize(&prepared, Processor::Bm1684x, &int8_request(&table))
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        // An op the TPU profiles keep in float has no int8 range to check.
        let mode = q.plan.mode(id);
        assert_eq!(
            mode == QuantMode::Int8,
            spec.tpu_float.is_none(),
            "{stem}: {mode}"
        );
        if mode != QuantMode::Int8 {
            continue;
        }
        let (t_hi, y_his) = (
            q.plan.range(t).unwrap().hi,
            node.outputs
                .iter()
                .map(|&o| q.plan.range(o).unwrap().hi)
                .collect::<Vec<_>>(),
        );
        let (want_t, want_y) = match spec.range {
            MoveRange::ForwardsFirst | MoveRange::Forwards => (m, m),
            MoveRange::Backwards | MoveRange::IntoInputs => (2.0 * m, 2.0 * m),
            MoveRange::Own => (m, 2.0 * m),
        };
        assert_eq!(t_hi, want_t, "{stem} ({:?}): the input's range", spec.range);
        for hi in &y_his {
            assert_eq!(*hi, want_y, "{stem} ({:?}): the output's range", spec.range);
        }

        // The QDQ export requantizes the op's output exactly when its range
        // differs from its input's.
        let requantized = q.qdq.nodes().any(|(_, n)| {
            matches!(n.op, Op::QuantizeLinear { .. })
                && n.inputs[0].is_some_and(|v| {
                    q.qdq
                        .value(v)
                        .producer
                        .is_some_and(|p| q.qdq.node(p).name == node.name)
                })
        });
        assert_eq!(
            requantized,
            want_t != want_y,
            "{stem}: a QuantizeLinear after the op"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
