//! Export: import -> export -> import gives the same graph (ops, attributes,
//! constants, names), on the six workload models and on small graphs built
//! here for the cases the workloads do not reach (attributes opset 17 takes
//! as inputs, RoundFloat, constant outputs, empty and repeated names).
//!
//! Running exported models in ONNX Runtime is tested in
//! `qtune-exec/tests/onnx_export.rs`, which can prepare graphs first.

use std::path::PathBuf;

use bytes::Bytes;
use prost::Message;
use qtune_ir::{ClipAttrs, FloatFormat, Graph, Op, ReduceAttrs, ValueId};
use qtune_onnx::proto::ModelProto;
use qtune_onnx::{
    EXPORT_OPSET, ExportOptions, ImportOptions, OnnxError, export_onnx, import_onnx,
    import_onnx_bytes, write_onnx,
};
use qtune_tensor::{DType, Shape, Tensor, TensorData};

const MODELS: &[&str] = &[
    "efficientnet_lite0",
    "minilm_l6_s128",
    "mobilenetv2_nsfw",
    "ppocr_v4_det640",
    "yolov8n_320",
    "yolox_det416",
];

fn models_dir() -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads/models"
    ));
    assert!(
        p.is_dir(),
        "{} is missing: run scripts/fetch-workloads.sh to create the workloads next to the repository",
        p.display()
    );
    p
}

fn reimport(bytes: Vec<u8>) -> Graph {
    import_onnx_bytes(Bytes::from(bytes), None, &ImportOptions::default())
        .unwrap_or_else(|e| panic!("re-import: {e}"))
}

fn round_trip(g: &Graph) -> (Vec<u8>, Graph) {
    let bytes = export_onnx(g, &ExportOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let again = reimport(bytes.clone());
    (bytes, again)
}

/// Bitwise tensor equality (NaN-safe, and -0.0 differs from 0.0).
fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    if a.dims() != b.dims() {
        return false;
    }
    match (a.data(), b.data()) {
        (TensorData::F32(x), TensorData::F32(y)) => x
            .iter()
            .zip(y.iter())
            .all(|(p, q)| p.to_bits() == q.to_bits()),
        (x, y) => x == y,
    }
}

fn name_of(g: &Graph, v: Option<ValueId>) -> String {
    v.map_or_else(String::new, |v| g.value(v).name.clone())
}

/// Every difference between two graphs, compared by names: inputs (dtype,
/// shape), outputs, nodes in order (name, op with attributes, input and
/// output names) and every constant a node reads (bit for bit).
fn differences(a: &Graph, b: &Graph) -> Vec<String> {
    let mut diffs = Vec::new();
    let io = |g: &Graph, ids: &[ValueId]| -> Vec<(String, DType, Option<Shape>)> {
        ids.iter()
            .map(|&i| {
                let v = g.value(i);
                (v.name.clone(), v.dtype, v.shape.clone())
            })
            .collect()
    };
    if io(a, &a.inputs) != io(b, &b.inputs) {
        diffs.push(format!(
            "inputs: {:?} vs {:?}",
            io(a, &a.inputs),
            io(b, &b.inputs)
        ));
    }
    let names = |g: &Graph, ids: &[ValueId]| -> Vec<String> {
        ids.iter().map(|&i| g.value(i).name.clone()).collect()
    };
    if names(a, &a.outputs) != names(b, &b.outputs) {
        diffs.push(format!(
            "outputs: {:?} vs {:?}",
            names(a, &a.outputs),
            names(b, &b.outputs)
        ));
    }
    if a.node_count() != b.node_count() {
        diffs.push(format!("{} nodes vs {}", a.node_count(), b.node_count()));
    }
    for ((_, na), (_, nb)) in a.nodes().zip(b.nodes()) {
        let ins_a: Vec<String> = na.inputs.iter().map(|&i| name_of(a, i)).collect();
        let ins_b: Vec<String> = nb.inputs.iter().map(|&i| name_of(b, i)).collect();
        let outs_a: Vec<String> = na.outputs.iter().map(|&o| name_of(a, Some(o))).collect();
        let outs_b: Vec<String> = nb.outputs.iter().map(|&o| name_of(b, Some(o))).collect();
        if na.name != nb.name || na.op != nb.op || ins_a != ins_b || outs_a != outs_b {
            diffs.push(format!(
                "node {} {:?} {ins_a:?} -> {outs_a:?}\n  vs {} {:?} {ins_b:?} -> {outs_b:?}",
                na.name, na.op, nb.name, nb.op
            ));
            continue;
        }
        for (&ia, &ib) in na.inputs.iter().zip(&nb.inputs) {
            let (Some(ia), Some(ib)) = (ia, ib) else {
                continue;
            };
            match (a.constant_of(ia), b.constant_of(ib)) {
                (None, None) => {}
                (Some(x), Some(y)) if same_tensor(x, y) => {}
                (x, y) => diffs.push(format!(
                    "node {}: constant '{}' differs ({:?} vs {:?})",
                    na.name,
                    a.value(ia).name,
                    x.map(|t| (t.dtype(), t.dims().to_vec())),
                    y.map(|t| (t.dtype(), t.dims().to_vec()))
                )),
            }
        }
    }
    diffs
}

#[test]
fn workload_models_round_trip() {
    let dir = models_dir();
    let mut failures = Vec::new();
    for name in MODELS {
        let g = import_onnx(&dir.join(format!("{name}.onnx")), &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (bytes, again) = round_trip(&g);
        let diffs = differences(&g, &again);
        println!(
            "{name:<20} {} nodes, {} bytes exported, {} differences",
            g.node_count(),
            bytes.len(),
            diffs.len()
        );
        failures.extend(diffs.into_iter().take(5).map(|d| format!("{name}: {d}")));
        // Exporting the re-imported graph writes the same bytes.
        let (bytes2, _) = round_trip(&again);
        if bytes != bytes2 {
            failures.push(format!("{name}: the second export differs from the first"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn model_header_and_atomic_write() {
    let g = import_onnx(
        &models_dir().join("mobilenetv2_nsfw.onnx"),
        &ImportOptions::default(),
    )
    .unwrap();
    let bytes = export_onnx(&g, &ExportOptions::default()).unwrap();
    let m = ModelProto::decode(bytes.as_slice()).unwrap();
    assert_eq!(m.ir_version, Some(qtune_onnx::EXPORT_IR_VERSION));
    assert_eq!(m.producer_name.as_deref(), Some("qtune"));
    assert_eq!(m.opset_import.len(), 1);
    assert_eq!(m.opset_import[0].domain.as_deref(), Some(""));
    assert_eq!(m.opset_import[0].version, Some(EXPORT_OPSET));
    let graph = m.graph.unwrap();
    assert!(
        graph
            .initializer
            .iter()
            .all(|t| t.raw_data.is_some() && t.float_data.is_empty())
    );

    let dir = std::env::temp_dir().join(format!("qtune-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.onnx");
    std::fs::write(&path, b"old").unwrap();
    write_onnx(&g, &path, &ExportOptions::default()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "no temp file left"
    );
    let e = write_onnx(&g, &dir.join("missing/m.onnx"), &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing/m.onnx"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn f32_input(g: &mut Graph, name: &str, dims: &[usize]) -> ValueId {
    let id = g.add_value(name, DType::F32, Some(Shape::new(dims)));
    g.inputs.push(id);
    id
}

fn out(g: &mut Graph, name: &str) -> ValueId {
    g.add_value(name, DType::F32, None)
}

/// A node's name, op, and the integer values of its constant inputs after
/// the first (`None` for omitted or non-constant ones).
type NodeSummary = (String, Op, Vec<Option<Vec<i64>>>);

/// Attributes the IR holds but opset 17 takes as inputs come back as
/// constant inputs with the same values; RoundFloat comes back as one node.
#[test]
fn attributes_moved_to_inputs_and_round_float() {
    let mut g = Graph::new("moved");
    let x = f32_input(&mut g, "x", &[1, 4, 1, 6]);
    let sq = out(&mut g, "sq");
    g.add_node(
        "squeeze",
        Op::Squeeze {
            axes: Some(vec![2]),
        },
        vec![Some(x)],
        vec![sq],
    );
    let unsq = out(&mut g, "unsq");
    g.add_node(
        "unsqueeze",
        Op::Unsqueeze {
            axes: Some(vec![0]),
        },
        vec![Some(sq)],
        vec![unsq],
    );
    let (s0, s1) = (out(&mut g, "s0"), out(&mut g, "s1"));
    g.add_node(
        "split",
        Op::Split {
            axis: 2,
            split: Some(vec![1, 3]),
        },
        vec![Some(unsq)],
        vec![s0, s1],
    );
    let rs = out(&mut g, "rs");
    g.add_node(
        "rsum",
        Op::ReduceSum(ReduceAttrs {
            axes: Some(vec![-1]),
            keepdims: true,
            noop_with_empty_axes: false,
        }),
        vec![Some(s1)],
        vec![rs],
    );
    // ReduceMean with an axes input (opset 18 form) becomes the attribute.
    let axes = g.add_constant("mean_axes", Tensor::from_i64(vec![1], vec![1]).unwrap());
    let rm = out(&mut g, "rm");
    g.add_node(
        "rmean",
        Op::ReduceMean(ReduceAttrs::default()),
        vec![Some(s0), Some(axes)],
        vec![rm],
    );
    let clip = out(&mut g, "clip");
    g.add_node(
        "clip",
        Op::Clip(ClipAttrs {
            min: None,
            max: Some(6.0),
        }),
        vec![Some(rm)],
        vec![clip],
    );
    let h = out(&mut g, "h");
    g.add_node(
        "to_half",
        Op::RoundFloat(FloatFormat::F16),
        vec![Some(clip)],
        vec![h],
    );
    let b = out(&mut g, "b");
    g.add_node(
        "to_bf16",
        Op::RoundFloat(FloatFormat::BF16),
        vec![Some(rs)],
        vec![b],
    );
    g.outputs = vec![h, b];

    let (bytes, again) = round_trip(&g);
    let m = ModelProto::decode(bytes.as_slice()).unwrap();
    let types: Vec<&str> = m
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "Squeeze",
            "Unsqueeze",
            "Split",
            "ReduceSum",
            "ReduceMean",
            "Clip",
            "Cast",
            "Cast",
            "Cast",
            "Cast"
        ]
    );

    let ops: Vec<NodeSummary> = again
        .nodes()
        .map(|(_, n)| {
            let consts = n
                .inputs
                .iter()
                .skip(1)
                .map(|i| {
                    i.and_then(|i| again.constant_of(i))
                        .map(|t| t.to_i64_vec().unwrap_or_else(|_| vec![-999]))
                })
                .collect();
            (n.name.clone(), n.op.clone(), consts)
        })
        .collect();
    let expected = vec![
        ("squeeze", Op::Squeeze { axes: None }, vec![Some(vec![2])]),
        (
            "unsqueeze",
            Op::Unsqueeze { axes: None },
            vec![Some(vec![0])],
        ),
        (
            "split",
            Op::Split {
                axis: 2,
                split: None,
            },
            vec![Some(vec![1, 3])],
        ),
        (
            "rsum",
            Op::ReduceSum(ReduceAttrs::default()),
            vec![Some(vec![-1])],
        ),
        (
            "rmean",
            Op::ReduceMean(ReduceAttrs {
                axes: Some(vec![1]),
                ..Default::default()
            }),
            vec![],
        ),
        (
            "clip",
            Op::Clip(ClipAttrs {
                min: None,
                max: None,
            }),
            // [min (omitted), max (f32, shown as -999)]
            vec![None, Some(vec![-999])],
        ),
        ("to_half", Op::RoundFloat(FloatFormat::F16), vec![]),
        ("to_bf16", Op::RoundFloat(FloatFormat::BF16), vec![]),
    ];
    let expected: Vec<NodeSummary> = expected
        .into_iter()
        .map(|(n, o, c)| (n.to_string(), o, c))
        .collect();
    assert_eq!(ops, expected);
    let clip_node = again.nodes().nth(5).unwrap().1;
    let max = again.constant_of(clip_node.inputs[2].unwrap()).unwrap();
    assert_eq!(max.as_f32().unwrap(), &[6.0]);
    assert_eq!(max.dims(), &[] as &[usize]);
    // RoundFloat outputs keep their names; the half-precision middle
    // values do not survive the re-import.
    assert_eq!(again.value(again.outputs[0]).name, "h");
    assert!(again.find_value("h_f16").is_none());

    // A second round trip is now exact.
    let (_, third) = round_trip(&again);
    let diffs = differences(&again, &third);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

/// Constant outputs, empty optional inputs, empty and repeated node names,
/// empty value names, names the exporter would invent that already exist,
/// and every initializer element type.
#[test]
fn names_constants_and_optional_inputs() {
    let mut g = Graph::new("");
    let x = f32_input(&mut g, "x", &[1, 2, 4, 4]);
    // A value already named like the Clip bound the exporter would add.
    let taken = g.add_constant("c_max", Tensor::scalar_f32(1.0));
    let c = out(&mut g, "c");
    g.add_node(
        "c",
        Op::Clip(ClipAttrs {
            min: Some(-1.0),
            max: Some(2.0),
        }),
        vec![Some(x)],
        vec![c],
    );
    let scales = g.add_constant(
        "scales",
        Tensor::from_f32(vec![4], vec![1.0, 1.0, 2.0, 2.0]).unwrap(),
    );
    // Resize with the roi omitted (None -> "").
    let r = out(&mut g, "");
    g.add_node(
        "",
        Op::Resize(Default::default()),
        vec![Some(c), None, Some(scales)],
        vec![r],
    );
    let r2 = out(&mut g, "r2");
    g.add_node("dup", Op::Relu, vec![Some(r)], vec![r2]);
    let r3 = out(&mut g, "r3");
    g.add_node("dup", Op::Add, vec![Some(r2), Some(taken)], vec![r3]);
    let konst = g.add_constant(
        "konst",
        Tensor::new(vec![3], TensorData::I8(vec![-128, 0, 127].into())).unwrap(),
    );
    let typed: Vec<ValueId> = [
        TensorData::I32(vec![-5, 7].into()),
        TensorData::U8(vec![0, 255].into()),
        TensorData::Bool(vec![true, false].into()),
        TensorData::I64(vec![i64::MIN, i64::MAX].into()),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, d)| g.add_constant(format!("typed{i}"), Tensor::new(vec![2], d).unwrap()))
    .collect();
    g.add_constant("unused", Tensor::scalar_f32(3.0));
    g.outputs = vec![r3, konst];
    g.outputs.extend(typed);

    let bytes = export_onnx(&g, &ExportOptions::default()).unwrap();
    let m = ModelProto::decode(bytes.as_slice()).unwrap();
    let gp = m.graph.as_ref().unwrap();
    assert_eq!(gp.name.as_deref(), Some("qtune"));
    let node_names: Vec<&str> = gp.node.iter().map(|n| n.name.as_deref().unwrap()).collect();
    assert_eq!(
        node_names,
        [
            "konst_Constant",
            "typed0_Constant",
            "typed1_Constant",
            "typed2_Constant",
            "typed3_Constant",
            "c",
            "value_4_Resize",
            "dup",
            "dup_1"
        ]
    );
    let resize = &gp.node[6];
    assert_eq!(resize.input, ["c", "", "scales"]);
    assert_eq!(resize.output, ["value_4"]);
    assert_eq!(gp.node[5].input, ["x", "c_min", "c_max_1"]);
    let inits: Vec<&str> = gp
        .initializer
        .iter()
        .map(|t| t.name.as_deref().unwrap())
        .collect();
    assert_eq!(inits, ["c_max", "scales", "c_min", "c_max_1"]);

    let again = reimport(bytes);
    assert_eq!(again.outputs.len(), 6);
    for (&a, &b) in g.outputs.iter().zip(&again.outputs).skip(1) {
        let (ta, tb) = (g.constant_of(a).unwrap(), again.constant_of(b).unwrap());
        assert_eq!(ta, tb, "{}", g.value(a).name);
        assert_eq!(g.value(a).name, again.value(b).name);
    }
    assert!(again.find_value("unused").is_none());
}

#[test]
fn what_opset_17_cannot_express_is_an_error_naming_the_node() {
    let mut g = Graph::new("bad");
    let x = f32_input(&mut g, "x", &[1, 2, 8, 8]);
    let axes = f32_input(&mut g, "axes", &[1]);
    let y = out(&mut g, "y");
    g.add_node(
        "mean1",
        Op::ReduceMean(ReduceAttrs::default()),
        vec![Some(x), Some(axes)],
        vec![y],
    );
    g.outputs = vec![y];
    let e = export_onnx(&g, &ExportOptions::default()).unwrap_err();
    assert!(matches!(e, OnnxError::ExportNode { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("mean1 (ReduceMean)") && e.contains("not a constant"),
        "{e}"
    );

    let mut g = Graph::new("bad");
    let x = f32_input(&mut g, "x", &[1, 2, 8, 8]);
    let y = out(&mut g, "y");
    g.add_node(
        "pool",
        Op::AveragePool(qtune_ir::PoolAttrs {
            kernel_shape: vec![2, 2],
            dilations: vec![2, 2],
            ..Default::default()
        }),
        vec![Some(x)],
        vec![y],
    );
    g.outputs = vec![y, y];
    let e = export_onnx(&g, &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("listed twice"), "{e}");
    g.outputs = vec![y];
    let e = export_onnx(&g, &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pool (AveragePool)") && e.contains("dilations"),
        "{e}"
    );
}
