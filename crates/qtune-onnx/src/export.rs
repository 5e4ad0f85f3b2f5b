//! IR [`Graph`] to ONNX `ModelProto`: the inverse of the importer.
//!
//! Spec: <https://onnx.ai/onnx/operators/>. The exporter writes one opset of
//! the default domain, [`EXPORT_OPSET`] (17), with IR version
//! [`EXPORT_IR_VERSION`] (8, the version that introduced opset 17), so that
//! every written model is valid for exactly one documented set of operator
//! versions whatever opset the source model used. Opset 17 is the newest
//! opset before `Reduce*` axes moved to inputs and the first one ONNX
//! Runtime 1.1x and later run with every op here; per-axis
//! QuantizeLinear/DequantizeLinear need opset 13 or later.
//!
//! What is written:
//! - Graph inputs and outputs become `ValueInfoProto`s with the value's
//!   element type and, when known, its static shape. Intermediate values get
//!   no `value_info`: before shape inference their types are placeholders.
//!   Export prepared graphs (shape inference done): ONNX Runtime runs a model
//!   whose outputs have no shape, but `onnx.checker` rejects it.
//! - Constants read by nodes become initializers with little-endian
//!   `raw_data`; unused constants are dropped. A constant that is also a
//!   graph output is defined by a `Constant` node instead (ONNX Runtime
//!   rejects initializers listed as graph outputs in some versions, and the
//!   importer reads a `Constant` node back as the same constant value).
//! - Every node keeps its name and op type; names that are empty or
//!   repeated get the importer's `<first output>_<OpType>` form or a `_1`,
//!   `_2`, ... suffix. Value names are kept (they are unique in the IR);
//!   names the exporter invents never collide with them.
//! - Omitted optional inputs (`None`) are written as `""`, and trailing ones
//!   are dropped.
//!
//! Opset 17 differs from what the IR may hold in these places:
//! - Attributes that opset 17 takes as inputs become constant inputs:
//!   Squeeze/Unsqueeze `axes`, Split `split`, ReduceSum `axes` (all inputs
//!   from opset 13) and Clip `min`/`max` (inputs from opset 11).
//! - ReduceMean/ReduceL2/ReduceMax/ReduceMin take `axes` as an attribute
//!   until opset 18: an axes input (from an opset-18 model) must be constant
//!   and is written as the attribute; their `noop_with_empty_axes` does not
//!   exist in opset 17 and can only be exported when it changes nothing.
//! - AveragePool has no `dilations` before opset 19; only all-ones
//!   dilations are exported.
//! - [`Op::RoundFloat`] (qtune-internal) becomes `Cast(to=FLOAT16|BFLOAT16)`
//!   followed by `Cast(to=FLOAT)`; the importer reads that pair back as one
//!   RoundFloat. The first Cast keeps the node's name and writes
//!   `<output>_f16` / `<output>_bf16`; the second writes the original output.
//! - Importer rewrites are exported in their rewritten form: Dropout as
//!   Identity, Upsample and Resize-10 as Resize-11+ with an empty `roi`,
//!   legacy Slice attributes as inputs, pre-13 Softmax as Flatten, Softmax,
//!   Shape, Reshape.

use std::collections::HashSet;
use std::path::Path;

use bytes::Bytes;
use prost::Message;
use qtune_ir::onnx_node::{ExportInput, ExportInputs, NodeError, OnnxOut, OnnxValue};
use qtune_ir::{FloatFormat, GeluApproximation, Graph, Node, Op, ValueId, families};
use qtune_tensor::Tensor;

use crate::OnnxError;
use crate::proto::attribute_proto::AttributeType;
use crate::proto::tensor_proto::DataType;
use crate::proto::tensor_shape_proto::{Dimension, dimension};
use crate::proto::type_proto::{Tensor as TensorType, Value as TypeValue};
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use crate::tensor::{onnx_dtype, tensor_to_proto};

/// The default-domain opset every exported model imports.
pub const EXPORT_OPSET: i64 = 17;
/// The IR version of exported models (the one that introduced opset 17).
pub const EXPORT_IR_VERSION: i64 = 8;

/// Protobuf messages cannot exceed 2 GiB; larger models would need external
/// data, which the exporter does not write.
const MAX_MODEL_BYTES: usize = 2 * 1024 * 1024 * 1024 - 1;

/// Options for [`export_onnx`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExportOptions {
    /// `producer_version` of the model; the qtune version by default.
    pub producer_version: String,
    /// The graph's name; the IR graph's name (or "qtune" when it has none)
    /// by default.
    pub graph_name: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            graph_name: None,
        }
    }
}

/// Builds the `ModelProto` of `graph`; see the module docs for the mapping.
pub fn export_model(graph: &Graph, opts: &ExportOptions) -> Result<ModelProto, OnnxError> {
    graph.check_topological()?;
    let mut ex = Exporter::new(graph);
    let graph_proto = ex.export(opts)?;
    Ok(ModelProto {
        ir_version: Some(EXPORT_IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(EXPORT_OPSET),
        }],
        producer_name: Some("qtune".to_string()),
        producer_version: Some(opts.producer_version.clone()),
        graph: Some(graph_proto),
        ..Default::default()
    })
}

/// Exports `graph` as a serialized ONNX `ModelProto`.
pub fn export_onnx(graph: &Graph, opts: &ExportOptions) -> Result<Vec<u8>, OnnxError> {
    encode_model(&export_model(graph, opts)?)
}

/// Serializes `model`, within protobuf's 2 GiB limit.
fn encode_model(model: &ModelProto) -> Result<Vec<u8>, OnnxError> {
    let len = model.encoded_len();
    if len > MAX_MODEL_BYTES {
        return Err(OnnxError::Export {
            message: format!(
                "the model needs {len} bytes, more than protobuf's 2 GiB limit (external data is not supported)"
            ),
        });
    }
    Ok(model.encode_to_vec())
}

/// Exports `graph` to `path`. The file is replaced atomically: readers see
/// the old file or the complete new one, never a partial write.
pub fn write_onnx(graph: &Graph, path: &Path, opts: &ExportOptions) -> Result<(), OnnxError> {
    write_model(&export_model(graph, opts)?, path)
}

/// Writes `model` (e.g. [`export_model`]'s, rewritten) to `path`,
/// atomically as [`write_onnx`].
pub fn write_model(model: &ModelProto, path: &Path) -> Result<(), OnnxError> {
    let bytes = encode_model(model)?;
    qtune_tensor::write_atomic(path, |w| std::io::Write::write_all(w, &bytes)).map_err(|source| {
        OnnxError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

struct Exporter<'g> {
    graph: &'g Graph,
    /// The ONNX name of each value (the IR name, or a fresh one when empty).
    names: Vec<String>,
    taken_values: HashSet<String>,
    taken_nodes: HashSet<String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<crate::proto::TensorProto>,
}

/// One node being written: its name and op type for messages.
struct NodeCx<'a> {
    name: &'a str,
    op_type: &'static str,
}

impl NodeCx<'_> {
    fn err(&self, message: impl Into<String>) -> OnnxError {
        OnnxError::ExportNode {
            node: self.name.to_string(),
            op_type: self.op_type.to_string(),
            message: message.into(),
        }
    }
}

impl<'g> Exporter<'g> {
    fn new(graph: &'g Graph) -> Self {
        let mut taken_values: HashSet<String> = graph
            .values()
            .map(|(_, v)| v.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        let mut names = Vec::with_capacity(graph.value_count());
        for (id, v) in graph.values() {
            if v.name.is_empty() {
                // ONNX reads an empty name as "no input": invent one.
                let name = fresh(&mut taken_values, format!("value_{}", id.index()));
                names.push(name);
            } else {
                names.push(v.name.clone());
            }
        }
        Exporter {
            graph,
            names,
            taken_values,
            taken_nodes: HashSet::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
        }
    }

    fn export(&mut self, opts: &ExportOptions) -> Result<GraphProto, OnnxError> {
        let g = self.graph;
        let mut seen_outputs = HashSet::new();
        for &o in &g.outputs {
            if !seen_outputs.insert(o) {
                return Err(OnnxError::Export {
                    message: format!(
                        "value '{}' is listed twice as a graph output, which ONNX cannot express",
                        self.names[o.index()]
                    ),
                });
            }
        }

        // Constants: initializers for those nodes read, Constant nodes for
        // those that are graph outputs.
        let mut read = vec![false; g.value_count()];
        for (_, n) in g.nodes() {
            for i in n.inputs.iter().flatten() {
                read[i.index()] = true;
            }
        }
        for (id, v) in g.values() {
            let Some(t) = &v.constant else { continue };
            if v.producer.is_some() {
                continue;
            }
            let name = self.names[id.index()].clone();
            if g.outputs.contains(&id) {
                let node_name = self.unique_node(format!("{name}_Constant"));
                self.nodes.push(NodeProto {
                    name: Some(node_name),
                    op_type: Some("Constant".into()),
                    output: vec![name.clone()],
                    attribute: vec![attr_tensor("value", tensor_to_proto(t, &name)?)],
                    ..Default::default()
                });
            } else if read[id.index()] {
                self.initializers.push(tensor_to_proto(t, &name)?);
            }
        }

        for (_, node) in g.nodes() {
            self.export_node(node)?;
        }

        let input = g
            .inputs
            .iter()
            .map(|&i| self.value_info(i))
            .collect::<Result<Vec<_>, _>>()?;
        let output = g
            .outputs
            .iter()
            .map(|&o| self.value_info(o))
            .collect::<Result<Vec<_>, _>>()?;
        let name = opts.graph_name.clone().unwrap_or_else(|| {
            if g.name.is_empty() {
                "qtune".to_string()
            } else {
                g.name.clone()
            }
        });
        Ok(GraphProto {
            node: std::mem::take(&mut self.nodes),
            name: Some(name),
            initializer: std::mem::take(&mut self.initializers),
            input,
            output,
            ..Default::default()
        })
    }

    fn value_info(&self, id: ValueId) -> Result<ValueInfoProto, OnnxError> {
        let v = self.graph.value(id);
        let name = &self.names[id.index()];
        let shape = match &v.shape {
            Some(s) => Some(TensorShapeProto {
                dim: s
                    .dims()
                    .iter()
                    .map(|&d| {
                        Ok(Dimension {
                            value: Some(dimension::Value::DimValue(i64::try_from(d).map_err(
                                |_| OnnxError::Export {
                                    message: format!(
                                        "value '{name}' has dimension {d}, which does not fit an int64"
                                    ),
                                },
                            )?)),
                            ..Default::default()
                        })
                    })
                    .collect::<Result<Vec<_>, OnnxError>>()?,
            }),
            None => None,
        };
        Ok(ValueInfoProto {
            name: Some(name.clone()),
            r#type: Some(TypeProto {
                value: Some(TypeValue::TensorType(TensorType {
                    elem_type: Some(onnx_dtype(v.dtype) as i32),
                    shape,
                })),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn unique_node(&mut self, base: String) -> String {
        fresh(&mut self.taken_nodes, base)
    }

    /// Adds a constant initializer under a fresh name built from `base`.
    fn add_initializer(&mut self, base: String, t: &Tensor) -> Result<String, OnnxError> {
        let name = fresh(&mut self.taken_values, base);
        self.initializers.push(tensor_to_proto(t, &name)?);
        Ok(name)
    }

    /// Writes `t` as the initializer `<node>_<what>` read by input `slot`,
    /// which the node must leave empty.
    fn constant_input(
        &mut self,
        cx: &NodeCx<'_>,
        slot: usize,
        what: &str,
        t: &Tensor,
        inputs: &mut Vec<String>,
    ) -> Result<(), OnnxError> {
        if inputs.get(slot).is_some_and(|i| !i.is_empty()) {
            return Err(cx.err(format!(
                "'{what}' is given both as an attribute and as input {slot}"
            )));
        }
        let name = self.add_initializer(format!("{}_{what}", cx.name), t)?;
        if inputs.len() <= slot {
            inputs.resize(slot + 1, String::new());
        }
        inputs[slot] = name;
        Ok(())
    }

    fn export_node(&mut self, node: &Node) -> Result<(), OnnxError> {
        // A registered unary op is written as its ONNX type (the IR name when
        // ONNX lacks the op: those are decomposed below).
        let op_type = node
            .op
            .unary()
            .and_then(|u| u.spec.onnx)
            .unwrap_or_else(|| node.op.op_type());
        let base = if node.name.is_empty() {
            let first = node
                .outputs
                .first()
                .map(|o| self.names[o.index()].as_str())
                .unwrap_or("");
            format!("{first}_{op_type}")
        } else {
            node.name.clone()
        };
        let name = self.unique_node(base);
        let cx = NodeCx {
            name: &name,
            op_type,
        };
        let mut inputs: Vec<String> = node
            .inputs
            .iter()
            .map(|i| i.map_or_else(String::new, |v| self.names[v.index()].clone()))
            .collect();
        let mut outputs: Vec<String> = node
            .outputs
            .iter()
            .map(|o| self.names[o.index()].clone())
            .collect();
        // A fused Relu (TPU-MLIR's `do_relu`) is written as the op into a
        // fresh tensor, then Relu / Clip(0, limit) into the op's output.
        let relu = match (node.relu, outputs.as_mut_slice()) {
            (None, _) => None,
            (Some(r), [y]) => {
                let mid = fresh(&mut self.taken_values, format!("{y}_before_relu"));
                Some((r, std::mem::replace(y, mid)))
            }
            (Some(_), _) => return Err(cx.err("a fused Relu needs exactly one output")),
        };
        if self.export_composite(&cx, node, &inputs, &outputs)? {
            return self.export_fused_relu(&cx, relu, &outputs);
        }
        let mut attrs = Vec::new();
        match &node.op {
            Op::IntegerLayer(_) => {
                return Err(cx.err(
                    "IntegerLayer is qtune's simulation op and has no ONNX form; export the QDQ \
                     model it was built from",
                ));
            }
            Op::RoundFloat(format) => {
                return self.round_float(&cx, *format, inputs, outputs);
            }
            // Every other op is its family's (`qtune_ir::families`).
            op => {
                let Some(family) = families::of(op) else {
                    return Err(cx.err("internal: the op is in no family"));
                };
                let mut out = OnnxOut::default();
                let ir_err = |e: NodeError| match e {
                    NodeError::Attribute { attribute, message } => {
                        cx.err(format!("attribute '{attribute}': {message}"))
                    }
                    NodeError::Node { message } => cx.err(message),
                };
                let dims = ExportInputs {
                    slots: node
                        .inputs
                        .iter()
                        .map(|v| {
                            v.map(|v| ExportInput {
                                dims: self.graph.shape_of(v).ok().map(|s| s.dims().to_vec()),
                                dtype: self.graph.value(v).dtype,
                                constant: self.graph.constant_of(v).cloned(),
                            })
                        })
                        .collect(),
                    opset: EXPORT_OPSET,
                };
                (family.export)(op, &dims, &mut out).map_err(ir_err)?;
                for (name, value) in out.attrs {
                    attrs.push(match value {
                        OnnxValue::Int(v) => attr_int(name, v),
                        OnnxValue::Ints(v) => attr_ints(name, v),
                        OnnxValue::Float(v) => attr_float(name, v),
                        OnnxValue::Str(v) => attr_string(name, &v),
                    });
                }
                if let Some(n) = out.keep_inputs {
                    inputs.truncate(n);
                }
                for (slot, what, t) in out.constants {
                    self.constant_input(&cx, slot, what, &t, &mut inputs)?;
                }
            }
        }
        while inputs.last().is_some_and(String::is_empty) {
            inputs.pop();
        }
        self.nodes.push(NodeProto {
            input: inputs,
            output: outputs.clone(),
            name: Some(name.clone()),
            op_type: Some(op_type.to_string()),
            attribute: attrs,
            ..Default::default()
        });
        self.export_fused_relu(&cx, relu, &outputs)
    }

    /// Pushes one node.
    fn emit(
        &mut self,
        name: String,
        op_type: &str,
        input: Vec<String>,
        output: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        let name = self.unique_node(name);
        self.emit_own(name, op_type, input, output, attribute);
    }

    /// Pushes one node under a name already reserved (the IR node's own).
    fn emit_own(
        &mut self,
        name: String,
        op_type: &str,
        input: Vec<String>,
        output: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input,
            output,
            name: Some(name),
            op_type: Some(op_type.to_string()),
            attribute,
            ..Default::default()
        });
    }

    /// The Relu / Clip of a fused Relu, from the op's written output to the
    /// IR value's name.
    fn export_fused_relu(
        &mut self,
        cx: &NodeCx<'_>,
        relu: Option<(qtune_ir::FusedRelu, String)>,
        outputs: &[String],
    ) -> Result<(), OnnxError> {
        let Some((r, y)) = relu else { return Ok(()) };
        let mid = outputs[0].clone();
        match r.limit {
            None => self.emit(
                format!("{}_relu", cx.name),
                "Relu",
                vec![mid],
                vec![y],
                vec![],
            ),
            Some(hi) => {
                let lo = self
                    .add_initializer(format!("{}_relu_min", cx.name), &Tensor::scalar_f32(0.0))?;
                let hi =
                    self.add_initializer(format!("{}_relu_max", cx.name), &Tensor::scalar_f32(hi))?;
                self.emit(
                    format!("{}_relu", cx.name),
                    "Clip",
                    vec![mid, lo, hi],
                    vec![y],
                    vec![],
                );
            }
        }
        Ok(())
    }

    /// Ops ONNX opset 17 has no single node for (or that qtune extends),
    /// written as the ONNX nodes they stand for. Returns whether `node` was
    /// one of them.
    fn export_composite(
        &mut self,
        cx: &NodeCx<'_>,
        node: &Node,
        inputs: &[String],
        outputs: &[String],
    ) -> Result<bool, OnnxError> {
        let base = cx.name.to_string();
        let y = || outputs.first().cloned().unwrap_or_default();
        let x = || inputs.first().cloned().unwrap_or_default();
        let c = |s: &mut Self, what: &str, v: f32| {
            s.add_initializer(format!("{base}_{what}"), &Tensor::scalar_f32(v))
        };
        match &node.op {
            Op::MatMul if inputs.len() > 2 && !inputs[2].is_empty() => {
                // MatMul with a bias: MatMul then Add.
                let mid = fresh(&mut self.taken_values, format!("{}_matmul", y()));
                self.emit_own(
                    base.clone(),
                    "MatMul",
                    inputs[..2].to_vec(),
                    vec![mid.clone()],
                    vec![],
                );
                self.emit(
                    format!("{base}_bias"),
                    "Add",
                    vec![mid, inputs[2].clone()],
                    vec![y()],
                    vec![],
                );
            }
            Op::SiLU => {
                let s = fresh(&mut self.taken_values, format!("{}_sigmoid", y()));
                self.emit(
                    format!("{base}_sigmoid"),
                    "Sigmoid",
                    vec![x()],
                    vec![s.clone()],
                    vec![],
                );
                self.emit_own(base.clone(), "Mul", vec![x(), s], vec![y()], vec![]);
            }
            Op::Gelu { approximate } => {
                let t = |s: &mut Self, what: &str| {
                    fresh(&mut s.taken_values, format!("{}_{what}", y()))
                };
                match approximate {
                    GeluApproximation::None => {
                        // x * (erf(x / sqrt 2) + 1) * 0.5, the pattern the
                        // ONNX exporters write.
                        let sqrt2 = c(self, "sqrt2", std::f32::consts::SQRT_2)?;
                        let one = c(self, "one", 1.0)?;
                        let half = c(self, "half", 0.5)?;
                        let (d, e, a, m) = (
                            t(self, "div"),
                            t(self, "erf"),
                            t(self, "add"),
                            t(self, "mul"),
                        );
                        self.emit(
                            format!("{base}_div"),
                            "Div",
                            vec![x(), sqrt2],
                            vec![d.clone()],
                            vec![],
                        );
                        self.emit(
                            format!("{base}_erf"),
                            "Erf",
                            vec![d],
                            vec![e.clone()],
                            vec![],
                        );
                        self.emit(
                            format!("{base}_add"),
                            "Add",
                            vec![e, one],
                            vec![a.clone()],
                            vec![],
                        );
                        self.emit(
                            format!("{base}_mul"),
                            "Mul",
                            vec![x(), a],
                            vec![m.clone()],
                            vec![],
                        );
                        self.emit_own(base.clone(), "Mul", vec![m, half], vec![y()], vec![]);
                    }
                    GeluApproximation::Tanh => {
                        // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
                        let three = c(self, "three", 3.0)?;
                        let k3 = c(self, "cubic", 0.044715)?;
                        let k = c(self, "sqrt_2_over_pi", (2.0 / std::f32::consts::PI).sqrt())?;
                        let one = c(self, "one", 1.0)?;
                        let half = c(self, "half", 0.5)?;
                        let names: Vec<String> =
                            ["pow", "cubic", "inner", "scaled", "tanh", "add", "half"]
                                .iter()
                                .map(|w| t(self, w))
                                .collect();
                        let steps: [(&str, Vec<String>, &String); 7] = [
                            ("Pow", vec![x(), three], &names[0]),
                            ("Mul", vec![names[0].clone(), k3], &names[1]),
                            ("Add", vec![x(), names[1].clone()], &names[2]),
                            ("Mul", vec![names[2].clone(), k], &names[3]),
                            ("Tanh", vec![names[3].clone()], &names[4]),
                            ("Add", vec![names[4].clone(), one], &names[5]),
                            ("Mul", vec![x(), half], &names[6]),
                        ];
                        for (i, (op, ins, out)) in steps.into_iter().enumerate() {
                            self.emit(format!("{base}_{i}"), op, ins, vec![out.clone()], vec![]);
                        }
                        self.emit_own(
                            base.clone(),
                            "Mul",
                            vec![names[6].clone(), names[5].clone()],
                            vec![y()],
                            vec![],
                        );
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// RoundFloat as Cast(to=FLOAT16|BFLOAT16) -> Cast(to=FLOAT).
    fn round_float(
        &mut self,
        cx: &NodeCx<'_>,
        format: FloatFormat,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Result<(), OnnxError> {
        let ([x], [y]) = (inputs.as_slice(), outputs.as_slice()) else {
            return Err(cx.err(format!(
                "expected 1 input and 1 output, got {} and {}",
                inputs.len(),
                outputs.len()
            )));
        };
        let (narrow, suffix) = match format {
            FloatFormat::F16 => (DataType::Float16, "f16"),
            FloatFormat::BF16 => (DataType::Bfloat16, "bf16"),
        };
        let mid = fresh(&mut self.taken_values, format!("{y}_{suffix}"));
        self.nodes.push(NodeProto {
            input: vec![x.clone()],
            output: vec![mid.clone()],
            name: Some(cx.name.to_string()),
            op_type: Some("Cast".into()),
            attribute: vec![attr_int("to", narrow as i64)],
            ..Default::default()
        });
        let back = self.unique_node(format!("{}_to_float", cx.name));
        self.nodes.push(NodeProto {
            input: vec![mid],
            output: vec![y.clone()],
            name: Some(back),
            op_type: Some("Cast".into()),
            attribute: vec![attr_int("to", DataType::Float as i64)],
            ..Default::default()
        });
        Ok(())
    }
}

/// `base`, or `base_1`, `base_2`, ... : the first not in `taken`, which it
/// then joins.
fn fresh(taken: &mut HashSet<String>, base: String) -> String {
    let mut name = base.clone();
    let mut k = 1;
    while taken.contains(&name) {
        name = format!("{base}_{k}");
        k += 1;
    }
    taken.insert(name.clone());
    name
}

fn attr(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

pub(crate) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}

fn attr_ints(name: &str, v: Vec<i64>) -> AttributeProto {
    AttributeProto {
        ints: v,
        ..attr(name, AttributeType::Ints)
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, AttributeType::Float)
    }
}

fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: Some(Bytes::from(v.as_bytes().to_vec())),
        ..attr(name, AttributeType::String)
    }
}

fn attr_tensor(name: &str, t: crate::proto::TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(t),
        ..attr(name, AttributeType::Tensor)
    }
}
