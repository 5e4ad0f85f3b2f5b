//! The Top-dialect `.mlir` writer and reader: a snapshot of the writer's
//! text, TPU-MLIR-style fixtures, and hostile input.
//!
//! Regenerate the snapshot with `UPDATE_SNAPSHOTS=1 cargo test -p qtune-ir --test mlir`.

use std::path::PathBuf;

use qtune_ir::mlir::{MlirAttr, MlirError, MlirWriteOptions, read_top_mlir, write_top_mlir};
use qtune_ir::{ClipAttrs, ConvAttrs, FusedRelu, GemmAttrs, Graph, NodeId, Op, infer_node};
use qtune_tensor::{DType, Shape, Tensor};

fn tests_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests"))
}

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (i as f32 - n as f32 / 2.0) * scale)
        .collect()
}

/// input -> Conv -> Clip(0, 6) -> Split -> Concat -> GlobalAveragePool ->
/// Flatten -> Gemm(transB) -> Softmax, with shapes inferred.
fn small_model() -> Graph {
    let mut g = Graph::new("small");
    let x = g.add_value("input", DType::F32, Some(Shape::new(vec![1, 3, 8, 8])));
    g.inputs.push(x);
    let w = g.add_constant(
        "conv.weight",
        Tensor::from_f32(vec![4, 3, 3, 3], ramp(108, 0.01)).unwrap(),
    );
    let b = g.add_constant(
        "conv.bias",
        Tensor::from_f32(vec![4], vec![0.1, -0.2, 0.3, 0.0]).unwrap(),
    );
    let lo = g.add_constant("clip_min", Tensor::scalar_f32(0.0));
    let hi = g.add_constant("clip_max", Tensor::scalar_f32(6.0));
    let split = g.add_constant(
        "split_sizes",
        Tensor::from_i64(vec![2], vec![1, 3]).unwrap(),
    );
    let fw = g.add_constant(
        "fc.weight",
        Tensor::from_f32(vec![5, 4], ramp(20, 0.1)).unwrap(),
    );
    let fb = g.add_constant("fc.bias", Tensor::from_f32(vec![5], vec![0.0; 5]).unwrap());
    let add = |g: &mut Graph, op: Op, ins: Vec<Option<qtune_ir::ValueId>>, outs: &[&str]| {
        let ids: Vec<_> = outs
            .iter()
            .map(|n| g.add_value(*n, DType::F32, None))
            .collect();
        let name = format!("{}_{}", outs[0], op.op_type());
        g.add_node(name, op, ins, ids.clone());
        ids
    };
    let conv = ConvAttrs {
        kernel_shape: vec![3, 3],
        strides: vec![2, 2],
        pads: vec![1, 1, 1, 1],
        dilations: vec![1, 1],
        group: 1,
        ..Default::default()
    };
    let c = add(
        &mut g,
        Op::Conv(conv),
        vec![Some(x), Some(w), Some(b)],
        &["conv_out"],
    );
    let r = add(
        &mut g,
        Op::Clip(ClipAttrs {
            min: None,
            max: None,
        }),
        vec![Some(c[0]), Some(lo), Some(hi)],
        &["relu6"],
    );
    let s = add(
        &mut g,
        Op::Split {
            axis: 1,
            split: None,
        },
        vec![Some(r[0]), Some(split)],
        &["part0", "part1"],
    );
    let cat = add(
        &mut g,
        Op::Concat { axis: 1 },
        vec![Some(s[1]), Some(s[0])],
        &["joined"],
    );
    let p = add(
        &mut g,
        Op::GlobalAveragePool,
        vec![Some(cat[0])],
        &["pooled"],
    );
    let f = add(&mut g, Op::Flatten { axis: 1 }, vec![Some(p[0])], &["flat"]);
    let gemm = GemmAttrs {
        trans_b: true,
        ..Default::default()
    };
    let fc = add(
        &mut g,
        Op::Gemm(gemm),
        vec![Some(f[0]), Some(fw), Some(fb)],
        &["logits"],
    );
    let sm = add(
        &mut g,
        Op::Softmax { axis: 1 },
        vec![Some(fc[0])],
        &["prob"],
    );
    g.outputs.push(sm[0]);
    // model_transform names the ops as TPU-MLIR does before writing.
    qtune_ir::passes::name_as_top_ops(&mut g);
    for i in 0..g.node_count() {
        let id = NodeId::from_index(i);
        let outs = infer_node(&g, id).unwrap();
        let ids = g.node(id).outputs.clone();
        for (o, inf) in ids.into_iter().zip(outs) {
            g.value_mut(o).shape = Some(inf.shape);
            g.value_mut(o).dtype = inf.dtype;
        }
    }
    g
}

fn options() -> MlirWriteOptions {
    let mut o = MlirWriteOptions::new("Small");
    o.input_attrs.push(qtune_ir::mlir::InputAttrs {
        name: "input".into(),
        attrs: vec![
            ("pixel_format".into(), MlirAttr::Str("rgb".into())),
            (
                "mean".into(),
                MlirAttr::F64Array(vec![123.675, 116.28, 103.53]),
            ),
            (
                "scale".into(),
                MlirAttr::F64Array(vec![0.0171, 0.0175, 0.0174]),
            ),
            ("keep_aspect_ratio".into(), MlirAttr::Bool(false)),
            ("resize_dims".into(), MlirAttr::I64Array(vec![8, 8])),
        ],
    });
    o
}

#[test]
fn writer_snapshot() {
    let (text, weights) = write_top_mlir(&small_model(), &options()).unwrap();
    let path = tests_dir().join("snapshots/small_top_f32.mlir");
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_SNAPSHOTS=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        text,
        expected,
        "writer output changed; UPDATE_SNAPSHOTS=1 regenerates {}",
        path.display()
    );
    let names: Vec<&str> = weights.iter().map(|(n, _)| n.as_str()).collect();
    // Clip bounds and split sizes became attributes, not weights.
    assert_eq!(names, ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]);
}

#[test]
fn reader_reads_the_writer_and_keeps_names_and_input_attrs() {
    let (text, weights) = write_top_mlir(&small_model(), &options()).unwrap();
    let (g, inputs) = read_top_mlir(&text, &weights, "small.mlir").unwrap();
    let out = g.value(g.outputs[0]);
    assert_eq!(out.name, "prob_Softmax");
    assert_eq!(out.shape, Some(Shape::new(vec![1, 5])));
    for name in [
        "input",
        "conv_out_Conv",
        "relu6_Clip",
        "part0_Split",
        "part1_Split",
        "flat_Flatten",
    ] {
        assert!(g.find_value(name).is_some(), "{name} missing");
    }
    let ops: Vec<&str> = g.nodes().map(|(_, n)| n.op.op_type()).collect();
    assert_eq!(
        ops,
        [
            "Conv",
            "Clip",
            "Split",
            "Concat",
            "GlobalAveragePool",
            "Flatten",
            "Gemm",
            "Softmax"
        ]
    );
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0].name, "input");
    assert_eq!(inputs[0].attrs.len(), 5);
}

#[test]
fn reads_a_tpu_mlir_fixture_with_fused_relu() {
    let text =
        std::fs::read_to_string(tests_dir().join("fixtures/tpu_mlir_conv_relu.mlir")).unwrap();
    let weights = vec![
        (
            "conv.weight".to_string(),
            Tensor::from_f32(vec![2, 3, 3, 3], ramp(54, 0.1)).unwrap(),
        ),
        (
            "conv.bias".to_string(),
            Tensor::from_f32(vec![2], vec![0.5, -0.5]).unwrap(),
        ),
    ];
    let (g, inputs) = read_top_mlir(&text, &weights, "fixture.mlir").unwrap();
    assert_eq!(g.name, "Conv2dRelu");
    let ops: Vec<(String, &str)> = g
        .nodes()
        .map(|(_, n)| (n.name.clone(), n.op.op_type()))
        .collect();
    // The fused Conv + Relu6 stays one op with one output, named by its loc.
    let expected = [
        ("3_Conv", "Conv"),
        ("4_GlobalAveragePool", "GlobalAveragePool"),
        ("output_Reshape", "Reshape"),
        ("output_Mul", "Mul"),
    ];
    let ops: Vec<(&str, &str)> = ops.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    assert_eq!(ops, expected);
    let conv = g.nodes().next().unwrap().1;
    assert_eq!(conv.relu, Some(FusedRelu { limit: Some(6.0) }));
    assert_eq!(g.value(conv.outputs[0]).name, "3_Conv");
    assert!(g.find_value("3_Conv_before_relu").is_none());
    assert_eq!(
        inputs[0]
            .attrs
            .iter()
            .find(|(k, _)| k == "pixel_format")
            .map(|(_, v)| v.clone()),
        Some(MlirAttr::Str("rgb".into()))
    );
}

#[test]
fn missing_weight_is_reported_with_its_line() {
    let text =
        std::fs::read_to_string(tests_dir().join("fixtures/tpu_mlir_conv_relu.mlir")).unwrap();
    let err = read_top_mlir(&text, &[], "fixture.mlir")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "fixture.mlir:8: weight `conv.weight` is missing from the weight file"
    );
}

#[test]
fn syntax_errors_name_the_line_and_what_was_expected() {
    struct Case {
        text: &'static str,
        expected: &'static str,
    }
    let cases = [
        Case {
            text: "",
            expected: "x.mlir:1: expected `module`, found end of file",
        },
        Case {
            text: "module {\n}",
            expected: "x.mlir:2: the module has no `func.func`",
        },
        Case {
            text: "module {\n  func.func @main(%arg0: tensor<1xf32>) -> tensor<1xf32> {\n    %0 = \"top.Input\"(%arg0 : (tensor<1xf32>) -> tensor<1xf32>\n",
            expected: "x.mlir:3: expected `)` after operands, found `: (tensor<1xf32>) -> ten`",
        },
        Case {
            text: "module {\n func.func @main() -> () {\n  %0 = \"top.Relu\"(%9) : (tensor<1xf32>) -> tensor<1xf32> loc(\"r\")\n  return\n }\n}",
            expected: "x.mlir:3: use of undefined value `%9`",
        },
        Case {
            text: "module {\n func.func @main() -> () {\n  %0 = \"top.Frobnicate\"() : () -> tensor<1xf32> loc(\"r\")\n  return\n }\n}",
            expected: "x.mlir:3: unsupported op `top.Frobnicate` (qtune runs the Top ops listed in docs/tpu-mlir-top-ops.md)",
        },
    ];
    let mut failures = Vec::new();
    for c in &cases {
        match read_top_mlir(c.text, &[], "x.mlir") {
            Err(e) if e.to_string() == c.expected => {}
            other => failures.push(format!(
                "{:?}: got {other:?}, expected {}",
                c.text, c.expected
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn truncated_and_garbage_input_fail_cleanly() {
    let (text, weights) = write_top_mlir(&small_model(), &options()).unwrap();
    // Every prefix that cuts the module short is an error, never a panic.
    let mut cut = 0;
    for end in (0..text.len()).step_by(7) {
        if !text.is_char_boundary(end) {
            continue;
        }
        if let Err(e) = read_top_mlir(&text[..end], &weights, "t.mlir") {
            assert!(matches!(e, MlirError::Parse { .. }), "{e}");
            cut += 1;
        }
    }
    assert!(cut > 0);
    // Pseudo-random bytes from a fixed LCG, and deep nesting.
    const ALPHABET: &[u8] = b"module{}()[]<>%#\"=:,->x0123456789.aefloc \n";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..200 {
        let bytes: Vec<u8> = (0..400)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                ALPHABET[(state >> 33) as usize % ALPHABET.len()]
            })
            .collect();
        let s = String::from_utf8_lossy(&bytes);
        let _ = read_top_mlir(&s, &weights, "g.mlir");
    }
    let deep = format!(
        "module {{ func.func @main() -> () {{ %0 = \"top.Relu\"() {{a = {}}} : () -> none\n return }} }}",
        "[".repeat(100_000)
    );
    assert!(read_top_mlir(&deep, &[], "d.mlir").is_err());
}

#[test]
fn top_ops_doc_is_generated_from_the_op_list() {
    let path = tests_dir().join("../../../docs/tpu-mlir-top-ops.md");
    let text = qtune_ir::mlir::ops::top_ops_markdown();
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
    }
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        doc,
        text,
        "{} is stale; UPDATE_SNAPSHOTS=1 regenerates it",
        path.display()
    );
}

#[test]
fn an_unknown_top_op_is_an_error_naming_it_and_its_line() {
    let text = "module @m attributes {module.chip = \"ALL\", module.platform = \"ONNX\", module.state = \"TOP_F32\", module.weight_file = \"w.npz\"} {\n  func.func @main(%arg0: tensor<1x4xf32> loc(unknown)) -> tensor<1x4xf32> {\n    %0 = \"top.None\"() : () -> none loc(#loc)\n    %1 = \"top.Input\"(%arg0) : (tensor<1x4xf32>) -> tensor<1x4xf32> loc(#loc1)\n    %2 = \"top.AbsAdd\"(%1) {b_val = 1.0 : f64} : (tensor<1x4xf32>) -> tensor<1x4xf32> loc(#loc2)\n    return %2 : tensor<1x4xf32> loc(#loc)\n  } loc(#loc)\n} loc(#loc)\n#loc = loc(unknown)\n#loc1 = loc(\"x\")\n#loc2 = loc(\"y_AbsAdd\")\n";
    let err = read_top_mlir(text, &[], "m.mlir").unwrap_err().to_string();
    assert!(
        err.contains("top.AbsAdd") && err.contains("m.mlir:5"),
        "{err}"
    );
}
