//! The catalogue of hostile inputs (issue 16): crafted sizes, overflows,
//! NaN and infinities, wrong dtypes, corrupt images, unknown ops, empty and
//! huge files, across the commands. Each case must exit 2 with one line
//! naming the file and the problem, without a panic or an abort, and leave
//! no file behind (its directory holds exactly what it held before).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;
use qtune_onnx::proto::attribute_proto::AttributeType;
use qtune_onnx::proto::tensor_proto::{DataLocation, DataType};
use qtune_onnx::proto::tensor_shape_proto::{Dimension, dimension};
use qtune_onnx::proto::type_proto::{Tensor as TensorType, Value as TypeValue};
use qtune_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use qtune_tensor::{Tensor, write_npz};

use crate::common::*;

// ---- ONNX builders ----

/// A value whose negative extents are unknown (no dim_value).
fn info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: (d >= 0).then_some(dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        name: Some(format!("{}_node", outputs.first().copied().unwrap_or("n"))),
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

fn f32_init(name: &str, dims: &[i64], v: Vec<f32>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: v,
        ..Default::default()
    }
}

fn i64_init(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![i64::try_from(v.len()).unwrap()],
        data_type: Some(DataType::Int64 as i32),
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

/// A model with input `x` [1,3,4,4], output `y` and the given nodes.
fn onnx(nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> Vec<u8> {
    onnx_with_input(nodes, inits, &[1, 3, 4, 4])
}

fn onnx_with_input(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, x: &[i64]) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("hostile".into()),
            node: nodes,
            initializer: inits,
            input: vec![info("x", x)],
            output: vec![info("y", &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The valid base model: Conv (2 filters, pads 1) then Relu.
fn conv_relu(w: TensorProto) -> Vec<u8> {
    onnx(
        vec![
            node(
                "Conv",
                &["x", "w", "b"],
                &["c"],
                vec![ints("pads", &[1, 1, 1, 1])],
            ),
            node("Relu", &["c"], &["y"], vec![]),
        ],
        vec![w, f32_init("b", &[2], vec![0.1, -0.1])],
    )
}

fn good_weight() -> TensorProto {
    f32_init(
        "w",
        &[2, 3, 3, 3],
        (0..54).map(|i| (i as f32 - 27.0) / 54.0).collect(),
    )
}

/// `x` through one op with constant parameter inputs.
fn one_op(op: &str, params: Vec<TensorProto>, attrs: Vec<AttributeProto>) -> Vec<u8> {
    let mut inputs = vec!["x".to_string()];
    inputs.extend(params.iter().map(|t| t.name.clone().unwrap_or_default()));
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    onnx(vec![node(op, &inputs, &["y"], attrs)], params)
}

// ---- npy / zip / image builders ----

fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zip archive of stored members, as `numpy.savez` writes it;
/// `declared` overrides the uncompressed size written in the headers.
fn stored_zip(entries: &[(&str, Vec<u8>)], declared: Option<u32>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = u32::try_from(out.len()).unwrap();
        let size = u32::try_from(data.len()).unwrap();
        let usize_ = declared.unwrap_or(size);
        let crc = crc32(data);
        let name_len = u16::try_from(name.len()).unwrap();
        let mut local = Vec::new();
        local.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        local.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        local.extend_from_slice(&crc.to_le_bytes());
        local.extend_from_slice(&size.to_le_bytes());
        local.extend_from_slice(&usize_.to_le_bytes());
        local.extend_from_slice(&name_len.to_le_bytes());
        local.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&local);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&usize_.to_le_bytes());
        central.extend_from_slice(&name_len.to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = u32::try_from(out.len()).unwrap();
    let cd_len = u32::try_from(central.len()).unwrap();
    let n = u16::try_from(entries.len()).unwrap();
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&cd_len.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(data.len()).unwrap().to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// A PNG header claiming `w x h` RGB pixels, with an IDAT chunk of a few
/// (undecodable) bytes when `idat`.
fn png_header(w: u32, h: u32, idat: bool) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend(png_chunk(b"IHDR", &ihdr));
    if idat {
        out.extend(png_chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00]));
    }
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// A BMP header claiming `w x h` 24-bit pixels over a few bytes.
fn bmp_header(w: i32, h: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&70u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    out.extend_from_slice(&[0x80; 16]);
    out
}

/// A real JPEG whose frame header claims 65500 x 65500 pixels.
fn huge_jpeg() -> Vec<u8> {
    let mut b = std::fs::read(workloads().join("images/calib/darknet_dog.jpg")).unwrap();
    let at = b
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
        .expect("a SOF marker");
    // marker (2), length (2), precision (1), height (2), width (2)
    b[at + 5..at + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]);
    b
}

/// Pseudo-random bytes (xorshift), the same on every run.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

// ---- the base .mlir ----

const BASE_MLIR: &str = include_str!("../../../qtune-ir/tests/fixtures/tpu_mlir_conv_relu.mlir");
const WEIGHT_FILE: &str = "conv2drelu_top_f32_all_weight.npz";

fn write_base_weights(dir: &Path, weight_len: usize) {
    write_npz(
        &dir.join(WEIGHT_FILE),
        &[
            (
                "conv.weight".into(),
                Tensor::from_f32(
                    vec![weight_len],
                    (0..weight_len).map(|i| i as f32 / 60.0 - 0.4).collect(),
                )
                .unwrap(),
            ),
            (
                "conv.bias".into(),
                Tensor::from_f32(vec![2], vec![0.1, -0.2]).unwrap(),
            ),
        ],
    )
    .unwrap();
}

// ---- the catalogue ----

struct Case {
    name: &'static str,
    /// The tool (a workspace binary) and its arguments, run in the case's
    /// own directory.
    tool: &'static str,
    args: Vec<String>,
    /// Each must appear in the one-line message: the file, then the problem.
    needles: Vec<&'static str>,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `model_transform` of the ONNX file `f`.
fn transform(f: &str) -> (&'static str, Vec<String>) {
    (
        "model_transform",
        s(&["--model_name", "m", "--model_def", f, "--mlir", "m.mlir"]),
    )
}

/// `model_deploy` (F32) of the .mlir `f`.
fn deploy_f32(f: &str) -> (&'static str, Vec<String>) {
    (
        "model_deploy",
        s(&[
            "--mlir",
            f,
            "--quantize",
            "F32",
            "--processor",
            "bm1684x",
            "--model",
            "out.onnx",
        ]),
    )
}

/// `qtune run` of the base .mlir on the npz `f`.
fn run_on(f: &str) -> (&'static str, Vec<String>) {
    (
        "qtune",
        s(&["run", "base.mlir", "--input", f, "-o", "out.npz"]),
    )
}

/// `run_calibration` of the base .mlir over the dataset `d`.
fn calibrate_on(d: &str) -> (&'static str, Vec<String>) {
    (
        "run_calibration",
        s(&[
            "base.mlir",
            "--dataset",
            d,
            "--input_num",
            "2",
            "--tune_num",
            "0",
            "-o",
            "table",
        ]),
    )
}

/// `run_calibration` of the base .mlir over the data list `l`.
fn calibrate_list(l: &str) -> (&'static str, Vec<String>) {
    (
        "run_calibration",
        s(&[
            "base.mlir",
            "--data_list",
            l,
            "--input_num",
            "1",
            "--tune_num",
            "0",
            "-o",
            "table",
        ]),
    )
}

/// INT8 `model_deploy` of the base .mlir with table `t` (and qtable `q`).
fn deploy_int8(t: &str, q: Option<&str>) -> (&'static str, Vec<String>) {
    let mut a = s(&[
        "--mlir",
        "base.mlir",
        "--quantize",
        "INT8",
        "--processor",
        "bm1684x",
        "--calibration_table",
        t,
        "--model",
        "out.onnx",
    ]);
    if let Some(q) = q {
        a.extend(s(&["--quantize_table", q]));
    }
    ("model_deploy", a)
}

/// Writes each case's files into `dir/<case>` and returns the cases.
fn catalogue(root: &Path, good_table: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &'static str,
                   files: Vec<(&str, Vec<u8>)>,
                   (tool, args): (&'static str, Vec<String>),
                   needles: &[&'static str]| {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (f, bytes) in files {
            if let Some(p) = Path::new(f).parent() {
                std::fs::create_dir_all(d.join(p)).unwrap();
            }
            std::fs::write(d.join(f), bytes).unwrap();
        }
        cases.push(Case {
            name,
            tool,
            args,
            needles: needles.to_vec(),
        });
    };
    let mlir = |text: &str| text.as_bytes().to_vec();

    // ---- ONNX (model_transform) ----
    add(
        "onnx_empty",
        vec![("e.onnx", vec![])],
        transform("e.onnx"),
        &["e.onnx", "no opset"],
    );
    add(
        "onnx_random",
        vec![("r.onnx", noise(4096, 1))],
        transform("r.onnx"),
        &["r.onnx", "not a valid ONNX model"],
    );
    let base = conv_relu(good_weight());
    add(
        "onnx_truncated",
        vec![("t.onnx", base[..base.len() / 2].to_vec())],
        transform("t.onnx"),
        &["t.onnx", "not a valid ONNX model"],
    );
    add(
        "onnx_dims_overflow",
        vec![(
            "o.onnx",
            conv_relu(f32_init("w", &[1 << 32, 1 << 32, 5, 5], vec![0.5; 200])),
        )],
        transform("o.onnx"),
        &["o.onnx", "'w'", "overflow"],
    );
    add(
        "onnx_negative_dim",
        vec![(
            "n.onnx",
            conv_relu(f32_init("w", &[-2, 3, 3, 3], vec![0.5; 54])),
        )],
        transform("n.onnx"),
        &["n.onnx", "'w'", "-2"],
    );
    let mut short = good_weight();
    short.float_data.clear();
    short.raw_data = Some(Bytes::from(vec![0u8; 8]));
    add(
        "onnx_raw_data_short",
        vec![("s.onnx", conv_relu(short))],
        transform("s.onnx"),
        &["s.onnx", "'w'", "8"],
    );
    add(
        "onnx_float_data_count",
        vec![(
            "f.onnx",
            conv_relu(f32_init("w", &[2, 3, 3, 3], vec![0.5; 53])),
        )],
        transform("f.onnx"),
        &["f.onnx", "'w'", "53"],
    );
    let mut string_w = good_weight();
    string_w.float_data.clear();
    string_w.data_type = Some(DataType::String as i32);
    add(
        "onnx_string_tensor",
        vec![("st.onnx", conv_relu(string_w))],
        transform("st.onnx"),
        &["st.onnx", "'w'", "STRING"],
    );
    let mut external = good_weight();
    external.float_data.clear();
    external.data_location = Some(DataLocation::External as i32);
    external.external_data = vec![StringStringEntryProto {
        key: Some("location".into()),
        value: Some("missing.bin".into()),
    }];
    add(
        "onnx_external_missing",
        vec![("ex.onnx", conv_relu(external))],
        transform("ex.onnx"),
        &["ex.onnx", "missing.bin"],
    );
    add(
        "onnx_huge_input",
        vec![(
            "h.onnx",
            onnx_with_input(
                vec![node("Relu", &["x"], &["y"], vec![])],
                vec![],
                &[1, 3, 1 << 20, 1 << 20],
            ),
        )],
        transform("h.onnx"),
        &["h.onnx", "`x`", "more than this machine's memory"],
    );
    add(
        "onnx_reshape_bad_extent",
        vec![(
            "rs.onnx",
            one_op("Reshape", vec![i64_init("shape", &[-3, 16])], vec![]),
        )],
        transform("rs.onnx"),
        &["rs.onnx", "y_node", "Reshape", "-3"],
    );
    add(
        "onnx_reshape_two_minus_one",
        vec![(
            "r2.onnx",
            one_op("Reshape", vec![i64_init("shape", &[-1, -1])], vec![]),
        )],
        transform("r2.onnx"),
        &["r2.onnx", "y_node", "Reshape", "more than one -1"],
    );
    add(
        "onnx_reshape_count",
        vec![(
            "rc.onnx",
            one_op("Reshape", vec![i64_init("shape", &[5, 10])], vec![]),
        )],
        transform("rc.onnx"),
        &["rc.onnx", "y_node", "cannot reshape 48"],
    );
    add(
        "onnx_expand_negative",
        vec![(
            "en.onnx",
            one_op("Expand", vec![i64_init("shape", &[1, 3, -4, 4])], vec![]),
        )],
        transform("en.onnx"),
        &["en.onnx", "y_node", "Expand", "-4"],
    );
    add(
        "onnx_expand_huge",
        vec![(
            "eh.onnx",
            one_op(
                "Expand",
                vec![i64_init("shape", &[1 << 20, 1 << 20, 3, 4, 4])],
                vec![],
            ),
        )],
        transform("eh.onnx"),
        &[
            "eh.onnx",
            "y_node",
            "Expand",
            "more than this machine's memory",
        ],
    );
    let resize = |scales: Vec<f32>| {
        onnx(
            vec![node("Resize", &["x", "", "scales"], &["y"], vec![])],
            vec![f32_init("scales", &[4], scales)],
        )
    };
    add(
        "onnx_resize_nan_scale",
        vec![("rn.onnx", resize(vec![1.0, 1.0, f32::NAN, 2.0]))],
        transform("rn.onnx"),
        &["rn.onnx", "y_node", "Resize", "NaN"],
    );
    add(
        "onnx_resize_negative_scale",
        vec![("rneg.onnx", resize(vec![1.0, 1.0, -2.0, 2.0]))],
        transform("rneg.onnx"),
        &["rneg.onnx", "y_node", "Resize", "-2"],
    );
    add(
        "onnx_resize_huge_scale",
        vec![("rh.onnx", resize(vec![1.0, 1.0, 1e15, 1e15]))],
        transform("rh.onnx"),
        &["rh.onnx", "y_node", "Resize"],
    );
    add(
        "onnx_resize_zero_size",
        vec![(
            "rz.onnx",
            onnx(
                vec![node("Resize", &["x", "", "", "sizes"], &["y"], vec![])],
                vec![i64_init("sizes", &[1, 3, 0, 4])],
            ),
        )],
        transform("rz.onnx"),
        &["rz.onnx", "y_node", "Resize", "positive"],
    );
    add(
        "onnx_slice_step_zero",
        vec![(
            "sl.onnx",
            one_op(
                "Slice",
                vec![
                    i64_init("starts", &[0]),
                    i64_init("ends", &[2]),
                    i64_init("axes", &[2]),
                    i64_init("steps", &[0]),
                ],
                vec![],
            ),
        )],
        transform("sl.onnx"),
        &["sl.onnx", "y_node", "Slice", "step 0"],
    );
    add(
        "onnx_slice_bad_axis",
        vec![(
            "sa.onnx",
            one_op(
                "Slice",
                vec![
                    i64_init("starts", &[0]),
                    i64_init("ends", &[2]),
                    i64_init("axes", &[9]),
                ],
                vec![],
            ),
        )],
        transform("sa.onnx"),
        &["sa.onnx", "y_node", "Slice", "axis 9"],
    );
    add(
        "onnx_gather_out_of_range",
        vec![(
            "g.onnx",
            one_op(
                "Gather",
                vec![i64_init("idx", &[1, 7])],
                vec![int("axis", 2)],
            ),
        )],
        transform("g.onnx"),
        &["g.onnx", "y_node", "Gather", "index 7"],
    );
    add(
        "onnx_transpose_bad_perm",
        vec![(
            "tp.onnx",
            one_op("Transpose", vec![], vec![ints("perm", &[0, 1, 1, 3])]),
        )],
        transform("tp.onnx"),
        &["tp.onnx", "y_node", "Transpose", "perm"],
    );
    add(
        "onnx_concat_bad_axis",
        vec![("ca.onnx", one_op("Concat", vec![], vec![int("axis", 7)]))],
        transform("ca.onnx"),
        &["ca.onnx", "y_node", "Concat", "axis"],
    );
    add(
        "onnx_unknown_op_cumsum",
        vec![(
            "cs.onnx",
            one_op("CumSum", vec![i64_init("axis", &[2])], vec![]),
        )],
        transform("cs.onnx"),
        &["cs.onnx", "CumSum"],
    );
    add(
        "onnx_tile_overflow",
        vec![(
            "ti.onnx",
            one_op(
                "Tile",
                vec![i64_init("repeats", &[1, 1, 1 << 40, 1 << 40])],
                vec![],
            ),
        )],
        transform("ti.onnx"),
        &["ti.onnx", "y_node", "Tile", "overflow"],
    );
    add(
        "onnx_tile_negative",
        vec![(
            "tn.onnx",
            one_op("Tile", vec![i64_init("repeats", &[1, 1, -2, 2])], vec![]),
        )],
        transform("tn.onnx"),
        &["tn.onnx", "y_node", "Tile", "repeats"],
    );
    add(
        "onnx_depth_to_space_overflow",
        vec![(
            "d2s.onnx",
            one_op("DepthToSpace", vec![], vec![int("blocksize", 1 << 33)]),
        )],
        transform("d2s.onnx"),
        &["d2s.onnx", "y_node", "DepthToSpace", "blocksize"],
    );
    add(
        "onnx_unknown_op_pad",
        vec![(
            "pd.onnx",
            one_op(
                "Pad",
                vec![i64_init("pads", &[0, 0, 1, 1, 0, 0, 1, 1])],
                vec![],
            ),
        )],
        transform("pd.onnx"),
        &["pd.onnx", "Pad"],
    );
    add(
        "onnx_conv_channels",
        vec![(
            "cc.onnx",
            conv_relu(f32_init("w", &[2, 5, 3, 3], vec![0.5; 90])),
        )],
        transform("cc.onnx"),
        &["cc.onnx", "c_node", "Conv"],
    );
    add(
        "onnx_cycle",
        vec![(
            "cy.onnx",
            onnx(
                vec![
                    node("Add", &["x", "z"], &["a"], vec![]),
                    node("Relu", &["a"], &["z"], vec![]),
                    node("Relu", &["a"], &["y"], vec![]),
                ],
                vec![],
            ),
        )],
        transform("cy.onnx"),
        &["cy.onnx", "cycle"],
    );
    add(
        "onnx_undefined_input",
        vec![(
            "ud.onnx",
            onnx(vec![node("Add", &["x", "ghost"], &["y"], vec![])], vec![]),
        )],
        transform("ud.onnx"),
        &["ud.onnx", "ghost"],
    );

    // ---- .mlir (model_deploy F32) ----
    add(
        "mlir_empty",
        vec![("e.mlir", vec![])],
        deploy_f32("e.mlir"),
        &["e.mlir"],
    );
    add(
        "mlir_garbage",
        vec![("g.mlir", noise(2000, 2))],
        deploy_f32("g.mlir"),
        &["g.mlir"],
    );
    add(
        "mlir_truncated",
        vec![("t.mlir", mlir(&BASE_MLIR[..BASE_MLIR.len() / 2]))],
        deploy_f32("t.mlir"),
        &["t.mlir"],
    );
    add(
        "mlir_weight_overflow",
        vec![(
            "w.mlir",
            mlir(&BASE_MLIR.replace(
                "tensor<2x3x3x3xf32>",
                "tensor<4294967296x4294967296x5x5xf32>",
            )),
        )],
        deploy_f32("w.mlir"),
        &["w.mlir", "conv.weight", "overflows"],
    );
    add(
        "mlir_weight_count",
        vec![("c.mlir", mlir(BASE_MLIR))],
        deploy_f32("c.mlir"),
        &["c.mlir", "conv.weight", "has 10 elements"],
    );
    add(
        "mlir_weight_file_missing",
        vec![("m.mlir", mlir(&BASE_MLIR.replace(WEIGHT_FILE, "gone.npz")))],
        deploy_f32("m.mlir"),
        &["gone.npz"],
    );
    add(
        "mlir_huge_input",
        vec![(
            "h.mlir",
            mlir(&BASE_MLIR.replace("1x3x4x4xf32", "1x3x1048576x1048576xf32")),
        )],
        deploy_f32("h.mlir"),
        &["h.mlir", "more than this machine's memory"],
    );
    add(
        "mlir_unknown_op",
        vec![(
            "u.mlir",
            mlir(&BASE_MLIR.replace("top.AvgPool", "top.Frobnicate")),
        )],
        deploy_f32("u.mlir"),
        &["u.mlir", "top.Frobnicate"],
    );

    // ---- npz / npy inputs ----
    add(
        "npz_empty",
        vec![("e.npz", vec![])],
        run_on("e.npz"),
        &["e.npz"],
    );
    add(
        "npz_random",
        vec![("r.npz", noise(3000, 3))],
        run_on("r.npz"),
        &["r.npz"],
    );
    add(
        "npz_huge_header",
        vec![(
            "h.npz",
            stored_zip(
                &[("input.npy", npy("<f4", "(1099511627776,)", &[0; 16]))],
                None,
            ),
        )],
        run_on("h.npz"),
        &["h.npz", "input", "more than this machine's memory"],
    );
    add(
        "npz_header_overflow",
        vec![(
            "o.npz",
            stored_zip(
                &[(
                    "input.npy",
                    npy("<f4", "(4294967296, 4294967296, 16)", &[0; 16]),
                )],
                None,
            ),
        )],
        run_on("o.npz"),
        &["o.npz", "input", "overflows"],
    );
    add(
        "npz_short_data",
        vec![(
            "s.npz",
            stored_zip(&[("input.npy", npy("<f4", "(1, 3, 4, 4)", &[0; 40]))], None),
        )],
        run_on("s.npz"),
        &["s.npz", "input", "needs 192 data bytes"],
    );
    add(
        "npz_member_size_lie",
        vec![(
            "l.npz",
            stored_zip(
                &[(
                    "input.npy",
                    npy("<f4", "(1, 3, 4, 4)", &f32_bytes(&[0.5; 48])),
                )],
                Some(u32::MAX),
            ),
        )],
        run_on("l.npz"),
        &["l.npz"],
    );
    add(
        "npz_float16",
        vec![(
            "f.npz",
            stored_zip(&[("input.npy", npy("<f2", "(1, 3, 4, 4)", &[0; 96]))], None),
        )],
        run_on("f.npz"),
        &["f.npz", "input", "unsupported element type"],
    );
    add(
        "npz_wrong_dtype",
        vec![(
            "i.npz",
            stored_zip(
                &[("input.npy", npy("<i8", "(1, 3, 4, 4)", &[0; 384]))],
                None,
            ),
        )],
        run_on("i.npz"),
        &["input", "float32", "int64"],
    );
    add(
        "npz_bad_header",
        vec![(
            "b.npz",
            stored_zip(
                &[("input.npy", npy("<f4", "(1, 3, x, 4)", &[0; 192]))],
                None,
            ),
        )],
        run_on("b.npz"),
        &["b.npz", "input"],
    );
    add(
        "compare_random",
        vec![("a.npz", noise(500, 4)), ("b.npz", noise(500, 5))],
        ("qtune", s(&["compare", "a.npz", "b.npz"])),
        &["a.npz"],
    );
    add(
        "calib_npy_nan",
        vec![
            (
                "nan.npy",
                npy(
                    "<f4",
                    "(1, 3, 4, 4)",
                    &f32_bytes(&[[0.5; 47].as_slice(), &[f32::NAN]].concat()),
                ),
            ),
            ("list.txt", b"nan.npy\n".to_vec()),
        ],
        calibrate_list("list.txt"),
        &["nan.npy", "element 47", "NaN", "finite"],
    );
    add(
        "calib_npz_inf",
        vec![
            (
                "inf.npz",
                stored_zip(
                    &[(
                        "input.npy",
                        npy(
                            "<f4",
                            "(1, 3, 4, 4)",
                            &f32_bytes(&[[f32::INFINITY].as_slice(), &[0.5; 47]].concat()),
                        ),
                    )],
                    None,
                ),
            ),
            ("list.txt", b"inf.npz\n".to_vec()),
        ],
        calibrate_list("list.txt"),
        &["inf.npz", "element 0", "inf", "finite"],
    );
    add(
        "calib_npy_huge",
        vec![
            ("h.npy", npy("<f4", "(1099511627776,)", &[0; 8])),
            ("list.txt", b"h.npy\n".to_vec()),
        ],
        calibrate_list("list.txt"),
        &["h.npy", "more than this machine's memory"],
    );

    // ---- images (run_calibration --dataset) ----
    add(
        "image_random_jpg",
        vec![("d/a.jpg", noise(5000, 6))],
        calibrate_on("d"),
        &["a.jpg"],
    );
    add(
        "image_empty_jpg",
        vec![("d/e.jpg", vec![])],
        calibrate_on("d"),
        &["e.jpg"],
    );
    add(
        "image_huge_jpeg",
        vec![("d/h.jpg", huge_jpeg())],
        calibrate_on("d"),
        &["h.jpg", "65500 x 65500", "OpenCV"],
    );
    add(
        "image_huge_png",
        vec![("d/h.png", png_header(100_000, 100_000, true))],
        calibrate_on("d"),
        &["h.png", "100000 x 100000"],
    );
    add(
        "image_png_no_data",
        vec![("d/n.png", png_header(8, 8, false))],
        calibrate_on("d"),
        &["n.png"],
    );
    add(
        "image_huge_bmp",
        vec![("d/h.bmp", bmp_header(1 << 30, 1 << 20))],
        calibrate_on("d"),
        &["h.bmp"],
    );
    add(
        "image_truncated_png",
        vec![("d/t.png", png_header(8, 8, true)[..20].to_vec())],
        calibrate_on("d"),
        &["t.png"],
    );

    // ---- calibration tables and qtables (model_deploy INT8) ----
    let table_with = |row: &str| -> Vec<u8> {
        let mut t = good_table
            .lines()
            .filter(|l| !l.starts_with("3_Conv "))
            .collect::<Vec<_>>()
            .join("\n");
        t.push('\n');
        t.push_str(row);
        t.push('\n');
        t.into_bytes()
    };
    add(
        "table_not_a_number",
        vec![("t.txt", table_with("3_Conv abc -1.0 1.0"))],
        deploy_int8("t.txt", None),
        &["t.txt", "3_Conv", "not a number"],
    );
    add(
        "table_three_fields",
        vec![("t.txt", table_with("3_Conv 1.0 -1.0"))],
        deploy_int8("t.txt", None),
        &["t.txt", "expected 4"],
    );
    add(
        "table_binary",
        vec![("t.txt", noise(300, 7))],
        deploy_int8("t.txt", None),
        &["t.txt"],
    );
    add(
        "table_five_fields",
        vec![("t.txt", table_with("3_Conv 1.0 -1.0 1.0 7"))],
        deploy_int8("t.txt", None),
        &["t.txt", "expected 4"],
    );
    add(
        "qtable_bad_mode",
        vec![
            ("t.txt", good_table.as_bytes().to_vec()),
            ("q.txt", b"3_Conv INT9\n".to_vec()),
        ],
        deploy_int8("t.txt", Some("q.txt")),
        &["q.txt", "INT9"],
    );
    add(
        "qtable_missing_mode",
        vec![
            ("t.txt", good_table.as_bytes().to_vec()),
            ("q.txt", b"3_Conv\n".to_vec()),
        ],
        // A one-token line is skipped with a warning, as TPU-MLIR skips it;
        // --strict makes it the error this case expects.
        {
            let (tool, mut args) = deploy_int8("t.txt", Some("q.txt"));
            args.push("--strict".into());
            (tool, args)
        },
        &["q.txt", "3_Conv"],
    );
    add(
        "qtable_binary",
        vec![
            ("t.txt", good_table.as_bytes().to_vec()),
            ("q.txt", noise(300, 8)),
        ],
        deploy_int8("t.txt", Some("q.txt")),
        &["q.txt"],
    );

    // ---- flags that carry sizes ----
    add(
        "flag_negative_input_shape",
        vec![("m.onnx", conv_relu(good_weight()))],
        (
            "model_transform",
            s(&[
                "--model_name",
                "m",
                "--model_def",
                "m.onnx",
                "--input_shapes",
                "[[1,3,-4,4]]",
                "--mlir",
                "m.mlir",
            ]),
        ),
        &["--input_shapes", "-4"],
    );
    add(
        "flag_huge_input_shape",
        vec![(
            "m.onnx",
            onnx_with_input(
                vec![node("Relu", &["x"], &["y"], vec![])],
                vec![],
                &[1, 3, -1, -1],
            ),
        )],
        (
            "model_transform",
            s(&[
                "--model_name",
                "m",
                "--model_def",
                "m.onnx",
                "--input_shapes",
                "[[1,3,1048576,1048576]]",
                "--mlir",
                "m.mlir",
            ]),
        ),
        &["m.onnx", "more than this machine's memory"],
    );
    cases
}

fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

#[test]
fn catalogue_of_hostile_inputs_exits_2_with_the_file_and_problem() {
    let root = scratch("hostile_catalogue");
    // The base model and its table: valid, so that each case breaks one
    // thing only.
    let base = root.join("_base");
    std::fs::create_dir_all(base.join("d")).unwrap();
    std::fs::write(base.join("base.mlir"), BASE_MLIR).unwrap();
    write_base_weights(&base, 54);
    std::fs::copy(
        workloads().join("images/calib/darknet_dog.jpg"),
        base.join("d/dog.jpg"),
    )
    .unwrap();
    run_ok(
        tool("run_calibration")
            .current_dir(&base)
            .args(["base.mlir", "--dataset", "d", "--input_num", "1"])
            .args(["--tune_num", "0", "--no_time", "-o", "table.txt"]),
    );
    let good_table = std::fs::read_to_string(base.join("table.txt")).unwrap();
    assert!(good_table.contains("\n3_Conv "), "{good_table}");

    let cases = catalogue(&root, &good_table);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let dir = root.join(case.name);
        // Every case sees the valid base files unless it wrote its own.
        for f in ["base.mlir", WEIGHT_FILE] {
            if !dir.join(f).exists() {
                std::fs::copy(base.join(f), dir.join(f)).unwrap();
            }
        }
        if case.name == "mlir_weight_count" {
            write_base_weights(&dir, 10);
        }
        let before = listing(&dir);
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin(case.tool))
            .current_dir(&dir)
            .args(&case.args)
            .output()
            .unwrap();
        let err = stderr_of(&out);
        let after = listing(&dir);
        let mut problems = Vec::new();
        if out.status.code() != Some(2) {
            problems.push(format!("exit {:?}", out.status.code()));
        }
        if err.contains("panicked") {
            problems.push("panicked".into());
        }
        let lines: Vec<&str> = err
            .trim_end()
            .lines()
            .filter(|l| !l.starts_with("warning:"))
            .collect();
        if lines.len() != 1 {
            problems.push(format!("{} lines", lines.len()));
        }
        for n in &case.needles {
            if !err.contains(n) {
                problems.push(format!("no `{n}`"));
            }
        }
        if before != after {
            let new: Vec<_> = after.difference(&before).collect();
            problems.push(format!("files left behind: {new:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({} {}): {}\n    stderr: {}",
                case.name,
                case.tool,
                case.args.join(" "),
                problems.join("; "),
                err.trim_end().replace('\n', "\n            ")
            ));
        }
    }
    eprintln!("{} hostile inputs tried", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Writes the base `.mlir` model, its weights, a one-photo dataset `d` and
/// its calibration table `table.txt` into `dir`.
fn base_with_table(dir: &Path) {
    std::fs::create_dir_all(dir.join("d")).unwrap();
    std::fs::write(dir.join("base.mlir"), BASE_MLIR).unwrap();
    write_base_weights(dir, 54);
    std::fs::copy(
        workloads().join("images/calib/darknet_dog.jpg"),
        dir.join("d/dog.jpg"),
    )
    .unwrap();
    run_ok(
        tool("run_calibration")
            .current_dir(dir)
            .args(["base.mlir", "--dataset", "d", "--input_num", "1"])
            .args(["--tune_num", "0", "--no_time", "-o", "table.txt"]),
    );
}

/// A non-finite threshold parses (Python's `float` reads `nan` and `inf`)
/// and the row is ignored, as TPU-MLIR's importer ignores it: the tensor is
/// uncalibrated, so the INT8 deploy fails naming it, after a warning that
/// names the row and every op that writes or reads the tensor. Those ops in
/// the qtable deploy.
#[test]
fn non_finite_table_rows_warn_with_the_ops_they_affect() {
    let dir = scratch("hostile_nan_row");
    base_with_table(&dir);
    let table = std::fs::read_to_string(dir.join("table.txt")).unwrap();
    let table: String = table
        .lines()
        .map(|l| {
            if let Some(rest) = l.strip_prefix("3_Conv ") {
                let f: Vec<&str> = rest.split(' ').collect();
                format!("3_Conv nan {} {}\n", f[1], f[2])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(dir.join("nan.txt"), table).unwrap();
    let out = tool("model_deploy")
        .current_dir(&dir)
        .args(["--mlir", "base.mlir", "--quantize", "INT8"])
        .args(["--processor", "bm1684x", "--calibration_table", "nan.txt"])
        .args(["--model", "out.onnx"])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!dir.join("out.onnx").exists(), "{err}");
    assert!(
        err.contains("error: ") && err.contains("`3_Conv`") && err.contains("nan.txt"),
        "{err}"
    );
    // One warning line for the table, naming the row and its ops.
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    let warning = warnings[0];
    assert!(
        warning.starts_with("warning: calibration table `nan.txt`: 1 row(s) with a number that is not finite are ignored"),
        "{warning}"
    );
    assert!(
        warning.contains("3_Conv (nan 0.0000000 6.0000000)"),
        "{warning}"
    );
    // The Conv with its fused Relu6 writes it (it keeps the name of the
    // .mlir's loc), the pool reads it; nothing else touches it.
    let ops = warning
        .split_once("`3_Conv`: ops affected: ")
        .unwrap_or_else(|| panic!("{warning}"))
        .1;
    assert_eq!(
        ops,
        "3_Conv (top.Conv do_relu relu_limit=6, writes it), \
         4_GlobalAveragePool (top.AvgPool, reads it)",
        "{warning}"
    );
    // The ops the warning names, kept in float by the qtable: the deploy
    // succeeds, and the warning is still given.
    std::fs::write(dir.join("q.txt"), "3_Conv F16\n4_GlobalAveragePool F16\n").unwrap();
    let out = run_ok(
        tool("model_deploy")
            .current_dir(&dir)
            .args(["--mlir", "base.mlir", "--quantize", "INT8"])
            .args(["--processor", "bm1684x", "--calibration_table", "nan.txt"])
            .args(["--quantize_table", "q.txt", "--model", "out.onnx"]),
    );
    assert!(stderr_of(&out).contains(warning), "{}", stderr_of(&out));
    assert!(dir.join("out.onnx").exists());
    // A finite table gives no such warning.
    let out = run_ok(
        tool("model_deploy")
            .current_dir(&dir)
            .args(["--mlir", "base.mlir", "--quantize", "INT8"])
            .args(["--processor", "bm1684x", "--calibration_table", "table.txt"])
            .args(["--model", "out2.onnx"]),
    );
    assert!(
        !stderr_of(&out).contains("not finite"),
        "{}",
        stderr_of(&out)
    );
}

/// Two runs writing the same outputs at once each leave whole files: after
/// both, every output equals a lone run's, and no temporary is left.
#[test]
fn concurrent_runs_writing_the_same_outputs_leave_whole_files() {
    let dir = scratch("hostile_concurrent");
    std::fs::write(dir.join("base.mlir"), BASE_MLIR).unwrap();
    write_base_weights(&dir, 54);
    let deploy = || {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("model_deploy"));
        c.current_dir(&dir)
            .args(["--mlir", "base.mlir", "--quantize", "F32"])
            .args(["--processor", "bm1684x", "--model", "out.onnx"]);
        c
    };
    let out = deploy().output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let lone = std::fs::read(dir.join("out.onnx")).unwrap();
    std::fs::remove_file(dir.join("out.onnx")).unwrap();
    for round in 0..5 {
        let children: Vec<_> = (0..2)
            .map(|_| {
                deploy()
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "round {round}");
        }
        assert_eq!(
            std::fs::read(dir.join("out.onnx")).unwrap(),
            lone,
            "round {round}"
        );
        let temporaries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(temporaries.is_empty(), "{temporaries:?}");
    }
}
