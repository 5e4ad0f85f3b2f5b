//! Every op of the pooling family (the registry in `qtune-ir/src/pool.rs`)
//! end to end, as one-node ONNX models built with python `onnx` (opset 17;
//! the windowed ops with a 3x3 window, strides 2, pads 1, and `ceil_mode` on
//! the max pool, `count_include_pad` on the average pool):
//!
//! - imported and run by qtune against ONNX Runtime's output (the oracle:
//!   `python3` with `onnx`, `onnxruntime` and `numpy`, required);
//! - written to Top `.mlir` (the registry's Top op, a file `mlir-opt`
//!   parses) and read back as the same op: the same output bits;
//! - exported to ONNX (opset 17) and run by ONNX Runtime again: the same
//!   output;
//! - planned int8 for bm1684x and bm1684 with the output calibrated wider
//!   than the input: the output takes the input's range exactly when the
//!   registry says so (max pools everywhere, average pools on BM1684 only).
//!
//! A new entry of the registry is covered without a change here.

mod common;
use common::{
    bits, close, import_and_export, int8_request, mlir_parses, onnxruntime, python, run_x, scratch,
};

use qtune_deploy::{Processor, quantize};
use qtune_ir::mlir::{MlirWriteOptions, read_top_mlir, write_top_mlir};
use qtune_ir::pool::{POOL_OPS, PoolKind, PoolRange};
use qtune_quant::{CalibrationRow, CalibrationTable};
use qtune_tensor::read_npz;

/// Writes `<dir>/<op>.onnx` for each `op:kind:global` argument and
/// `<dir>/in.npz`.
const MAKE_MODELS: &str = r#"
import sys, numpy as np, onnx
from onnx import helper, TensorProto
out = sys.argv[1]
dims = [1, 3, 10, 9]
n = int(np.prod(dims))
x = ((np.arange(n) * 37 % n) / n * 6 - 2.5).astype(np.float32).reshape(dims)
np.savez(f"{out}/in.npz", x=x)
for arg in sys.argv[2:]:
    name, kind, glob = arg.split(":")
    kw = {}
    if glob == "true":
        ydims = dims[:2] + [1, 1]
    else:
        kw = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
        if kind == "Max":
            kw["ceil_mode"] = 1
            ydims = dims[:2] + [-(-(d + 2 - 3) // 2) + 1 for d in dims[2:]]
        else:
            kw["count_include_pad"] = 1
            ydims = dims[:2] + [(d + 2 - 3) // 2 + 1 for d in dims[2:]]
    node = helper.make_node(name, ["x"], ["y"], name=name.lower(), **kw)
    g = helper.make_graph([node], name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ydims)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, f"{out}/{name}.onnx")
"#;

#[test]
fn every_pool_matches_onnxruntime_round_trips_and_plans() {
    let dir = scratch("pool", "family");
    let mut make: Vec<std::ffi::OsString> =
        vec!["-c".into(), MAKE_MODELS.into(), dir.clone().into()];
    for spec in POOL_OPS {
        make.push(format!("{}:{:?}:{}", spec.name, spec.kind, spec.global).into());
    }
    python(&make.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let x = read_npz(&dir.join("in.npz")).unwrap().remove(0).1;

    let mut runs = vec![];
    let mut cases = vec![];
    for spec in POOL_OPS {
        let stem = spec.name;
        let (op, prepared) = import_and_export(&dir, stem, &mut runs);
        assert!(
            op.pool()
                .is_some_and(|(s, w)| std::ptr::eq(s, spec) && w.is_none() == spec.global),
            "{stem}: imported as {op:?}"
        );
        cases.push((spec, stem, prepared));
    }
    onnxruntime(&runs);

    for (spec, stem, prepared) in cases {
        let reference = read_npz(&dir.join(format!("{stem}_ort.npz"))).unwrap();
        let ours = run_x(prepared.clone(), &x);
        close(stem, "onnxruntime", &ours, &reference[0].1, 1e-6);
        let exported = read_npz(&dir.join(format!("{stem}_ort_export.npz"))).unwrap();
        close(
            stem,
            "its export in onnxruntime",
            &exported[0].1,
            &reference[0].1,
            1e-6,
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
        let op = &read.nodes().next().unwrap().1.op;
        assert!(
            op.pool().is_some_and(|(s, _)| std::ptr::eq(s, spec)),
            "{stem}: read back as {op:?}"
        );
        assert_eq!(
            bits(&ours),
            bits(&run_x(read, &x)),
            "{stem}: the .mlir round trip changed the output"
        );

        // The chips' range rules: the output is calibrated at twice the
        // input's threshold, so it keeps its own range unless the rule
        // gives it the input's.
        let m = x.to_f32_vec().iter().fold(0f32, |m, v| m.max(v.abs()));
        let m = f64::from(m);
        let y_name = prepared.value(prepared.outputs[0]).name.clone();
        let table = CalibrationTable {
            rows: vec![
                CalibrationRow::new("x", m, -m, m),
                CalibrationRow::new(&y_name, 2.0 * m, -2.0 * m, 2.0 * m),
            ],
            ..Default::default()
        };
        let req = int8_request(&table);
        for processor in [Processor::Bm1684x, Processor::Bm1684] {
            let shares = match spec.range {
                PoolRange::SharesRange => true,
                PoolRange::OwnRangeButBm1684 => processor == Processor::Bm1684,
            };
            let q = quantize(&prepared, processor, &req).unwrap_or_else(|e| panic!("{stem}: {e}"));
            let (rx, ry) = (
                q.plan.range(prepared.inputs[0]).unwrap(),
                q.plan.range(prepared.outputs[0]).unwrap(),
            );
            assert_eq!(
                rx.hi == ry.hi,
                shares,
                "{stem} on {processor:?}: input {rx:?}, output {ry:?}"
            );
        }
        // Max pools share ranges, average pools do not (TPU-MLIR).
        assert_eq!(
            spec.range == PoolRange::SharesRange,
            spec.kind == PoolKind::Max,
            "{stem}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
