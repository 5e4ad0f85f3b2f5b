//! Every op of the reduction family (the registry in
//! `qtune-ir/src/reduce.rs`) end to end, as one-node ONNX models built with
//! python `onnx`, in three forms: axes as an attribute (opset 17; ReduceSum
//! takes them as an input from 13), axes as input 1 (opset 18), and no axes
//! (every axis):
//!
//! - imported and run by qtune against ONNX Runtime's output (the oracle:
//!   `python3` with `onnx`, `onnxruntime` and `numpy`, required);
//! - written to Top `.mlir` (`top.Reduce` with the registry's mode, a file
//!   `mlir-opt` parses) and read back: the same output bits;
//! - exported to ONNX (opset 17) and run by ONNX Runtime again: the same
//!   output;
//! - planned for bm1684x (float, TPU-MLIR has no int8 reduction there) and
//!   CV18xx (int8 exactly when the registry says its lowering has one).
//!
//! A new entry of the registry is covered without a change here.

mod common;
use common::{
    close, import_and_export, int8_request, mlir_parses, onnxruntime, python, run_x, scratch,
};

use qtune_deploy::{Processor, quantize};
use qtune_ir::mlir::{MlirWriteOptions, read_top_mlir, write_top_mlir};
use qtune_ir::reduce::REDUCE_OPS;
use qtune_quant::{CalibrationRow, CalibrationTable, QuantMode};
use qtune_tensor::{Tensor, read_npz};

/// Writes `<dir>/<op>_<form>.onnx` and `<dir>/in.npz` for each op: forms
/// `attr` (opset 17, axes [1, -1] as an attribute, or as an input when the
/// op took them so by 17, keepdims 0), `input` (opset 18, axes [2] as input
/// 1, keepdims 1) and `all` (opset 17, no axes, keepdims 1).
const MAKE_MODELS: &str = r#"
import sys, numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto
out = sys.argv[1]
dims = [2, 3, 4, 5]
n = int(np.prod(dims))
x = ((np.arange(n) * 37 % n) / n * 6 - 2.5).astype(np.float32).reshape(dims)
np.savez(f"{out}/in.npz", x=x)
for arg in sys.argv[2:]:
    name, since = arg.split(":")
    since = int(since)
    forms = {
        "attr": (17, [1, -1], 0),
        "input": (18, [2], 1),
        "all": (17, None, 1),
    }
    for form, (opset, axes, keep) in forms.items():
        ins, inits, kw = ["x"], [], {"keepdims": keep}
        if axes is not None and opset >= since:
            ins.append("axes")
            inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        elif axes is not None:
            kw["axes"] = axes
        ax = tuple(range(len(dims))) if axes is None else tuple(a % len(dims) for a in axes)
        ydims = list(np.sum(x, axis=ax, keepdims=bool(keep)).shape)
        node = helper.make_node(name, ins, ["y"], name=name.lower(), **kw)
        g = helper.make_graph([node], name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ydims)], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = 8
        onnx.checker.check_model(m, full_check=True)
        onnx.save(m, f"{out}/{name}_{form}.onnx")
"#;

const FORMS: [&str; 3] = ["attr", "input", "all"];

#[test]
fn every_reduction_matches_onnxruntime_round_trips_and_plans() {
    let dir = scratch("reduce", "family");
    let mut make: Vec<std::ffi::OsString> =
        vec!["-c".into(), MAKE_MODELS.into(), dir.clone().into()];
    for spec in REDUCE_OPS {
        make.push(format!("{}:{}", spec.name, spec.axes_input_from).into());
    }
    python(&make.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let x = read_npz(&dir.join("in.npz")).unwrap().remove(0).1;

    // qtune's import, run and ONNX export of every case; then ONNX Runtime
    // on the originals and the exports.
    let mut runs = vec![];
    let mut cases = vec![];
    for spec in REDUCE_OPS {
        for form in FORMS {
            let stem = format!("{}_{form}", spec.name);
            let (op, prepared) = import_and_export(&dir, &stem, &mut runs);
            assert!(
                op.reduce().is_some_and(|(s, _)| std::ptr::eq(s, spec)),
                "{stem}: imported as {op:?}"
            );
            cases.push((spec, stem, prepared));
        }
    }
    onnxruntime(&runs);

    for (spec, stem, prepared) in cases {
        let reference = read_npz(&dir.join(format!("{stem}_ort.npz"))).unwrap();
        let ours = run_x(prepared.clone(), &x);
        close(&stem, "onnxruntime", &ours, &reference[0].1, 1e-5);
        let exported = read_npz(&dir.join(format!("{stem}_ort_export.npz"))).unwrap();
        close(
            &stem,
            "its export in onnxruntime",
            &exported[0].1,
            &reference[0].1,
            1e-5,
        );

        // Through the Top dialect.
        let (text, weights) = write_top_mlir(&prepared, &MlirWriteOptions::new(&stem)).unwrap();
        assert!(
            text.contains("\"top.Reduce\"") && text.contains(&format!("\"{}\"", spec.top_mode)),
            "{stem}: not written as top.Reduce {}:\n{text}",
            spec.top_mode
        );
        mlir_parses(&dir, &stem, &text);
        let (read, _) = read_top_mlir(&text, &weights, &format!("{stem}.mlir"))
            .unwrap_or_else(|e| panic!("{stem}: {e}\n{text}"));
        let back = run_x(read, &x);
        assert_eq!(
            ours.to_f32_vec()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            back.to_f32_vec()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            "{stem}: the .mlir round trip changed the output"
        );

        // The chips' rules.
        let row = |name: &str, t: &Tensor| {
            let m = t.to_f32_vec().iter().fold(0f32, |m, v| m.max(v.abs()));
            CalibrationRow::new(name, f64::from(m), -f64::from(m), f64::from(m))
        };
        let y_name = prepared.value(prepared.outputs[0]).name.clone();
        let table = CalibrationTable {
            rows: vec![row("x", &x), row(&y_name, &ours)],
            ..Default::default()
        };
        let req = int8_request(&table);
        let node_id = prepared.nodes().next().unwrap().0;
        for (processor, int8) in [
            (Processor::Bm1684x, false),
            (Processor::Cv183x, spec.cv18xx_int8),
        ] {
            let q = quantize(&prepared, processor, &req).unwrap_or_else(|e| panic!("{stem}: {e}"));
            let mode = q.plan.mode(node_id);
            assert_eq!(
                mode == QuantMode::Int8,
                int8,
                "{stem} on {processor:?}: {mode}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
