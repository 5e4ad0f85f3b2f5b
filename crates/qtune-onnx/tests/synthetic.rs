//! Small models built here with prost: error messages, legacy rewrites,
//! constants, naming and external data.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use qtune_ir::{CoordMode, Graph, NearestMode, Op};
use qtune_onnx::proto::attribute_proto::AttributeType;
use qtune_onnx::proto::tensor_proto::{DataLocation, DataType};
use qtune_onnx::proto::tensor_shape_proto::{Dimension, dimension};
use qtune_onnx::proto::type_proto::{Tensor as TensorType, Value as TypeValue};
use qtune_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use qtune_onnx::{ImportOptions, OnnxError, import_onnx, import_onnx_bytes};

// ---- builders ----

fn dim(d: i64) -> Dimension {
    Dimension {
        value: Some(dimension::Value::DimValue(d)),
        ..Default::default()
    }
}

fn value_info(name: &str, elem: DataType, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn f32_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    value_info(
        name,
        DataType::Float,
        dims.iter().map(|&d| dim(d)).collect(),
    )
}

fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Floats as i32),
        floats: v.to_vec(),
        ..Default::default()
    }
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(Bytes::from(v.to_string())),
        ..Default::default()
    }
}

fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(Bytes::from(
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        )),
        ..Default::default()
    }
}

fn model(opset: i64, graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("qtune-test".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// A graph x[1,3,8,8] -> nodes -> outputs.
fn graph(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>, outputs: &[&str]) -> GraphProto {
    GraphProto {
        name: Some("test".into()),
        node: nodes,
        initializer: initializers,
        input: vec![f32_info("x", &[1, 3, 8, 8])],
        output: outputs.iter().map(|o| f32_info(o, &[])).collect(),
        ..Default::default()
    }
}

fn import(m: &ModelProto) -> Result<Graph, OnnxError> {
    import_onnx_bytes(
        Bytes::from(m.encode_to_vec()),
        None,
        &ImportOptions::default(),
    )
}

fn import_err(m: &ModelProto) -> String {
    match import(m) {
        Ok(_) => panic!("import should fail"),
        Err(e) => e.to_string(),
    }
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn ops(g: &Graph) -> Vec<(String, Op)> {
    g.nodes()
        .map(|(_, n)| (n.name.clone(), n.op.clone()))
        .collect()
}

// ---- error messages ----

#[test]
fn unsupported_op_names_node_and_lists_supported_ops() {
    let m = model(
        13,
        graph(
            vec![node("foo", "Bar", &["x"], &["y"], vec![])],
            vec![],
            &["y"],
        ),
    );
    let err = import_err(&m);
    assert!(
        err.starts_with("node 'foo' has op type 'Bar', which qtune does not support; supported: Conv, ConvTranspose, "),
        "{err}"
    );
}

#[test]
fn bad_attribute_speaks_in_one_voice() {
    let w = f32_tensor("w", &[4, 3, 3, 3], &[0.0; 108]);
    let conv = node(
        "conv1",
        "Conv",
        &["x", "w"],
        &["y"],
        vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1])],
    );
    let err = import_err(&model(13, graph(vec![conv], vec![w], &["y"])));
    assert_eq!(
        err,
        "node conv1 (Conv), attribute 'pads': expected 4 values, got 2"
    );
}

#[test]
fn attribute_errors_cover_type_value_and_unknown_names() {
    struct Case {
        attrs: Vec<AttributeProto>,
        expected: &'static str,
    }
    let cases = [
        Case {
            attrs: vec![string("kernel_shape", "3")],
            expected: "node c (Conv), attribute 'kernel_shape': expected type INTS, got STRING",
        },
        Case {
            attrs: vec![ints("strides", &[0, 1])],
            expected: "node c (Conv), attribute 'strides': expected positive values, got [0, 1]",
        },
        Case {
            attrs: vec![int("group", 0)],
            expected: "node c (Conv), attribute 'group': expected a positive value, got 0",
        },
        Case {
            attrs: vec![string("auto_pad", "SAME")],
            expected: "node c (Conv), attribute 'auto_pad': expected NOTSET, SAME_UPPER, SAME_LOWER or VALID, got 'SAME'",
        },
        Case {
            attrs: vec![int("padding", 1)],
            expected: "node c (Conv), attribute 'padding': not an attribute of Conv",
        },
        Case {
            attrs: vec![ints("kernel_shape", &[3, 3, 3])],
            expected: "node c (Conv), attribute 'kernel_shape': qtune runs 1-D and 2-D convolutions; got 3 spatial axes",
        },
    ];
    let mut failures = Vec::new();
    for case in cases {
        let w = f32_tensor("w", &[4, 3, 3, 3], &[0.0; 108]);
        let conv = node("c", "Conv", &["x", "w"], &["y"], case.attrs);
        let err = import_err(&model(13, graph(vec![conv], vec![w], &["y"])));
        if !err.starts_with(case.expected) {
            failures.push(format!("got      {err}\nexpected {}", case.expected));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn rejected_features_say_why() {
    struct Case {
        opset: i64,
        node: NodeProto,
        expected: &'static str,
    }
    let cases = [
        Case {
            opset: 13,
            node: node(
                "r",
                "Resize",
                &["x", "", "s"],
                &["y"],
                vec![string("mode", "cubic")],
            ),
            expected: "node r (Resize), attribute 'mode': 'cubic' is not supported",
        },
        Case {
            opset: 13,
            node: node(
                "r",
                "Resize",
                &["x", "", "s"],
                &["y"],
                vec![string(
                    "coordinate_transformation_mode",
                    "tf_crop_and_resize",
                )],
            ),
            expected: "node r (Resize), attribute 'coordinate_transformation_mode': 'tf_crop_and_resize' is not supported",
        },
        Case {
            opset: 13,
            node: node(
                "r",
                "Resize",
                &["x", "", "s"],
                &["y"],
                vec![int("exclude_outside", 1)],
            ),
            expected: "node r (Resize), attribute 'exclude_outside': 1 is not supported",
        },
        Case {
            opset: 18,
            node: node(
                "r",
                "Resize",
                &["x", "", "s"],
                &["y"],
                vec![int("antialias", 1)],
            ),
            expected: "node r (Resize), attribute 'antialias': 1 is not supported",
        },
        Case {
            opset: 18,
            node: node(
                "r",
                "Resize",
                &["x", "", "s"],
                &["y"],
                vec![string("keep_aspect_ratio_policy", "not_larger")],
            ),
            expected: "node r (Resize), attribute 'keep_aspect_ratio_policy': 'not_larger' is not supported",
        },
        Case {
            opset: 15,
            node: node(
                "bn",
                "BatchNormalization",
                &["x", "s", "s", "s", "s"],
                &["y"],
                vec![int("training_mode", 1)],
            ),
            expected: "node bn (BatchNormalization), attribute 'training_mode': training mode (1) is not supported",
        },
        Case {
            opset: 13,
            node: node("sq", "Squeeze", &["x"], &["y"], vec![ints("axes", &[0])]),
            expected: "node sq (Squeeze), attribute 'axes': is an input, not an attribute, from opset 13",
        },
        Case {
            opset: 13,
            node: node(
                "cast",
                "Cast",
                &["x"],
                &["y"],
                vec![int("to", DataType::Double as i64)],
            ),
            expected: "node cast (Cast), attribute 'to': element type DOUBLE is not supported",
        },
        Case {
            opset: 13,
            node: node(
                "mp",
                "MaxPool",
                &["x"],
                &["y", "idx"],
                vec![ints("kernel_shape", &[2, 2])],
            ),
            expected: "node mp (MaxPool): output 1 'idx' (Indices output) is used",
        },
        Case {
            opset: 13,
            node: node("add", "Add", &["x"], &["y"], vec![]),
            expected: "node add (Add): expected 2 inputs, got 1",
        },
        // The data-movement family's import (`qtune_ir::movement::import`)
        // speaks in the same voice: a wrong type, a wrong value, an unknown
        // attribute and a wrong input count.
        Case {
            opset: 13,
            node: node("t", "Transpose", &["x"], &["y"], vec![string("perm", "0")]),
            expected: "node t (Transpose), attribute 'perm': expected type INTS, got STRING",
        },
        Case {
            opset: 13,
            node: node(
                "t",
                "Transpose",
                &["x"],
                &["y"],
                vec![ints("perm", &[0, 0])],
            ),
            expected: "node t (Transpose), attribute 'perm': [0, 0] is not a permutation",
        },
        Case {
            opset: 13,
            node: node("c", "Concat", &["x"], &["y"], vec![int("axes", 0)]),
            expected: "node c (Concat), attribute 'axes': not an attribute of Concat (known: axis)",
        },
        Case {
            opset: 13,
            node: node("r", "Reshape", &["x"], &["y"], vec![]),
            expected: "node r (Reshape): expected 2 inputs, got 1",
        },
    ];
    let mut failures = Vec::new();
    for case in cases {
        let s = f32_tensor("s", &[3], &[1.0; 3]);
        let mut g = graph(vec![case.node], vec![s], &["y"]);
        // Make the MaxPool case's Indices output used.
        g.output.push(f32_info("idx", &[]));
        g.output
            .retain(|o| o.name.as_deref() != Some("idx") || case.expected.contains("idx"));
        match import(&model(case.opset, g)) {
            Ok(_) => failures.push(format!("no error, expected {}", case.expected)),
            Err(e) if !e.to_string().starts_with(case.expected) => {
                failures.push(format!("got      {e}\nexpected {}", case.expected));
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn foreign_domains_and_opsets_are_rejected() {
    let mut n = node("attn", "Attention", &["x"], &["y"], vec![]);
    n.domain = Some("com.microsoft".into());
    let err = import_err(&model(13, graph(vec![n], vec![], &["y"])));
    assert!(
        err.contains("node 'attn'") && err.contains("com.microsoft"),
        "{err}"
    );

    let m = model(
        5,
        graph(
            vec![node("r", "Relu", &["x"], &["y"], vec![])],
            vec![],
            &["y"],
        ),
    );
    let err = import_err(&m);
    assert!(err.contains("opset 5"), "{err}");

    let mut m = model(13, graph(vec![], vec![], &["x"]));
    m.opset_import.clear();
    let err = import_err(&m);
    assert!(err.contains("no opset of the default ONNX domain"), "{err}");
}

#[test]
fn dynamic_input_needs_input_shapes() {
    let batch = Dimension {
        value: Some(dimension::Value::DimParam("batch".into())),
        ..Default::default()
    };
    let mut g = graph(
        vec![node("r", "Relu", &["x"], &["y"], vec![])],
        vec![],
        &["y"],
    );
    g.input = vec![value_info(
        "x",
        DataType::Float,
        vec![batch, dim(3), dim(8), dim(8)],
    )];
    let m = model(13, g);
    let bytes = Bytes::from(m.encode_to_vec());
    let err = import_onnx_bytes(bytes.clone(), None, &ImportOptions::default())
        .expect_err("dynamic dim without overrides")
        .to_string();
    assert_eq!(
        err,
        "input 'x' has a dynamic dimension (dim 0 = 'batch'); give --input_shapes"
    );

    let opts = ImportOptions::with_input_shapes(vec![vec![4, 3, 8, 8]]);
    let graph = import_onnx_bytes(bytes.clone(), None, &opts).expect("imports with overrides");
    assert_eq!(
        graph
            .value(graph.inputs[0])
            .shape
            .as_ref()
            .map(|s| s.0.clone()),
        Some(vec![4, 3, 8, 8])
    );

    let opts = ImportOptions::with_input_shapes(vec![vec![4, 5, 8, 8]]);
    let err = import_onnx_bytes(bytes.clone(), None, &opts)
        .expect_err("static dim mismatch")
        .to_string();
    assert!(err.contains("input 'x' dim 1 is 3"), "{err}");

    let opts = ImportOptions::with_input_shapes(vec![vec![1, 3, 8, 8], vec![1]]);
    let err = import_onnx_bytes(bytes, None, &opts)
        .expect_err("too many shapes")
        .to_string();
    assert!(
        err.contains("2 shapes given, but the model has 1 inputs"),
        "{err}"
    );
}

#[test]
fn unsupported_input_dtype_names_the_input() {
    let mut g = graph(
        vec![node("r", "Relu", &["x"], &["y"], vec![])],
        vec![],
        &["y"],
    );
    g.input = vec![value_info("x", DataType::Float16, vec![dim(1)])];
    let err = import_err(&model(13, g));
    assert!(
        err.contains("tensor 'x'") && err.contains("FLOAT16") && err.contains("graph input"),
        "{err}"
    );
}

// ---- external data ----

fn external_model(location: &str, offset: usize) -> ModelProto {
    let w = TensorProto {
        name: Some("w".into()),
        dims: vec![2],
        data_type: Some(DataType::Float as i32),
        data_location: Some(DataLocation::External as i32),
        external_data: vec![
            StringStringEntryProto {
                key: Some("location".into()),
                value: Some(location.into()),
            },
            StringStringEntryProto {
                key: Some("offset".into()),
                value: Some(offset.to_string()),
            },
            StringStringEntryProto {
                key: Some("length".into()),
                value: Some("8".into()),
            },
        ],
        ..Default::default()
    };
    model(
        13,
        graph(
            vec![node("add", "Add", &["x", "w"], &["y"], vec![])],
            vec![w],
            &["y"],
        ),
    )
}

#[test]
fn external_data_is_loaded_relative_to_the_model() {
    let dir = tmp_dir("qtune_onnx_external_ok");
    let mut data = vec![0u8; 4];
    data.extend(1.5f32.to_le_bytes());
    data.extend((-3.0f32).to_le_bytes());
    std::fs::write(dir.join("weights.bin"), data).expect("write data");
    let path = dir.join("model.onnx");
    std::fs::write(&path, external_model("weights.bin", 4).encode_to_vec()).expect("write model");
    let g = import_onnx(&path, &ImportOptions::default()).expect("imports");
    let w = g
        .constant_of(g.find_value("w").expect("w"))
        .expect("w is constant");
    assert_eq!(w.as_f32().expect("f32"), &[1.5, -3.0]);
}

#[test]
fn missing_external_data_names_file_and_tensor() {
    let dir = tmp_dir("qtune_onnx_external_missing");
    let path = dir.join("model.onnx");
    std::fs::write(&path, external_model("missing.bin", 0).encode_to_vec()).expect("write model");
    let err = import_onnx(&path, &ImportOptions::default())
        .expect_err("missing data file")
        .to_string();
    assert!(
        err.contains("tensor 'w'") && err.contains("missing.bin"),
        "{err}"
    );

    // Data that ends before offset + length.
    std::fs::write(dir.join("short.bin"), [0u8; 6]).expect("write data");
    std::fs::write(&path, external_model("short.bin", 0).encode_to_vec()).expect("write model");
    let err = import_onnx(&path, &ImportOptions::default())
        .expect_err("short file")
        .to_string();
    assert!(
        err.contains("tensor 'w'") && err.contains("past the end"),
        "{err}"
    );
}

// ---- constants, names, order ----

#[test]
fn constants_and_initializer_inputs_become_constant_values() {
    let constant = |name: &str, out: &str, attr: AttributeProto| {
        node(name, "Constant", &[], &[out], vec![attr])
    };
    let nodes = vec![
        constant(
            "c0",
            "cv",
            tensor_attr("value", f32_tensor("", &[2], &[1.0, 2.0])),
        ),
        constant(
            "c1",
            "cf",
            AttributeProto {
                name: Some("value_float".into()),
                r#type: Some(AttributeType::Float as i32),
                f: Some(0.5),
                ..Default::default()
            },
        ),
        constant("c2", "cfs", floats("value_floats", &[1.0, 2.0, 3.0])),
        constant("c3", "ci", int("value_int", 7)),
        constant("c4", "cis", ints("value_ints", &[1, -1])),
        node("add", "Add", &["x", "b"], &["y"], vec![]),
    ];
    let mut g = graph(nodes, vec![f32_tensor("b", &[1], &[1.0])], &["y"]);
    // "b" is listed as an input too: it stays a constant.
    g.input.push(f32_info("b", &[1]));
    let graph = import(&model(13, g)).expect("imports");
    assert_eq!(graph.inputs.len(), 1);
    assert_eq!(graph.node_count(), 1);
    let c = |n: &str| {
        graph
            .constant_of(graph.find_value(n).expect(n))
            .expect(n)
            .clone()
    };
    assert_eq!(c("cv").as_f32().expect("f32"), &[1.0, 2.0]);
    assert_eq!(c("cf").dims(), &[] as &[usize]);
    assert_eq!(c("cfs").dims(), &[3]);
    assert_eq!(c("ci").as_i64().expect("i64"), &[7]);
    assert_eq!(c("cis").as_i64().expect("i64"), &[1, -1]);
    assert!(
        graph
            .constant_of(graph.find_value("b").expect("b"))
            .is_some()
    );
}

#[test]
fn empty_and_duplicate_node_names_are_made_unique() {
    let nodes = vec![
        node("", "Relu", &["x"], &["a"], vec![]),
        node("dup", "Sigmoid", &["a"], &["b"], vec![]),
        node("dup", "Tanh", &["b"], &["c"], vec![]),
    ];
    let g = import(&model(13, graph(nodes, vec![], &["c"]))).expect("imports");
    let names: Vec<String> = ops(&g).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a_Relu", "dup", "dup_1"]);
}

#[test]
fn out_of_order_nodes_are_sorted() {
    let nodes = vec![
        node("second", "Sigmoid", &["a"], &["b"], vec![]),
        node("first", "Relu", &["x"], &["a"], vec![]),
    ];
    let g = import(&model(13, graph(nodes, vec![], &["b"]))).expect("imports");
    let names: Vec<String> = ops(&g).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["first", "second"]);

    let cycle = vec![
        node("p", "Relu", &["q_out"], &["p_out"], vec![]),
        node("q", "Relu", &["p_out"], &["q_out"], vec![]),
    ];
    let err = import_err(&model(13, graph(cycle, vec![], &["p_out"])));
    assert!(err.contains("cycle"), "{err}");
}

// ---- legacy forms and rewrites ----

#[test]
fn legacy_forms_are_rewritten() {
    // Softmax opset 11 over axis 1 of a rank-4 tensor: flatten semantics.
    let m = model(
        11,
        graph(
            vec![node("sm", "Softmax", &["x"], &["y"], vec![int("axis", 1)])],
            vec![],
            &["y"],
        ),
    );
    let g = import(&m).expect("imports");
    let types: Vec<&str> = g.nodes().map(|(_, n)| n.op.op_type()).collect();
    assert_eq!(types, ["Flatten", "Softmax", "Shape", "Reshape"]);
    assert!(
        g.find_value("y")
            .is_some_and(|y| g.value(y).producer.is_some())
    );

    // Axis 3 of the rank-4 input is the last axis: a plain Softmax.
    let m = model(
        11,
        graph(
            vec![node("sm", "Softmax", &["x"], &["y"], vec![int("axis", 3)])],
            vec![],
            &["y"],
        ),
    );
    assert_eq!(
        ops(&import(&m).expect("imports")),
        [("sm".to_string(), Op::Softmax { axis: 3 })]
    );

    // Opset 13 default axis is -1.
    let m = model(
        13,
        graph(
            vec![node("sm", "Softmax", &["x"], &["y"], vec![])],
            vec![],
            &["y"],
        ),
    );
    assert_eq!(
        ops(&import(&m).expect("imports")),
        [("sm".to_string(), Op::Softmax { axis: -1 })]
    );

    // Upsample opset 9 -> Resize(x, -, scales), asymmetric + floor.
    let scales = f32_tensor("scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
    let m = model(
        9,
        graph(
            vec![node("up", "Upsample", &["x", "scales"], &["y"], vec![])],
            vec![scales],
            &["y"],
        ),
    );
    let g = import(&m).expect("imports");
    let (_, n) = g.nodes().next().expect("one node");
    match &n.op {
        Op::Resize(a) => {
            assert_eq!(a.coord_mode, CoordMode::Asymmetric);
            assert_eq!(a.nearest_mode, NearestMode::Floor);
        }
        other => panic!("expected Resize, got {other:?}"),
    }
    assert_eq!(n.inputs.len(), 3);
    assert!(n.inputs[1].is_none());

    // Slice opset 9 attributes -> constant inputs.
    let m = model(
        9,
        graph(
            vec![node(
                "sl",
                "Slice",
                &["x"],
                &["y"],
                vec![ints("starts", &[0]), ints("ends", &[2]), ints("axes", &[1])],
            )],
            vec![],
            &["y"],
        ),
    );
    let g = import(&m).expect("imports");
    let (_, n) = g.nodes().next().expect("one node");
    assert_eq!(n.inputs.len(), 4);
    let ends = g.constant_of(n.inputs[2].expect("ends")).expect("constant");
    assert_eq!(ends.as_i64().expect("i64"), &[2]);

    // Dropout -> Identity, mask dropped.
    let m = model(
        13,
        graph(
            vec![node("d", "Dropout", &["x"], &["y", "mask"], vec![])],
            vec![],
            &["y"],
        ),
    );
    let g = import(&m).expect("imports");
    assert_eq!(ops(&g), [("d".to_string(), Op::Identity)]);
    assert!(g.find_value("mask").is_none());

    // Clip opset 6 keeps its bounds as attributes.
    let clip = node(
        "clip",
        "Clip",
        &["x"],
        &["y"],
        vec![
            AttributeProto {
                name: Some("min".into()),
                r#type: Some(AttributeType::Float as i32),
                f: Some(0.0),
                ..Default::default()
            },
            AttributeProto {
                name: Some("max".into()),
                r#type: Some(AttributeType::Float as i32),
                f: Some(6.0),
                ..Default::default()
            },
        ],
    );
    let g = import(&model(7, graph(vec![clip], vec![], &["y"]))).expect("imports");
    assert_eq!(
        ops(&g)[0].1,
        Op::Clip(qtune_ir::ClipAttrs {
            min: Some(0.0),
            max: Some(6.0)
        })
    );
}
