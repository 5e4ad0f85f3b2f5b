//! Builds a [`Graph`] from a decoded `ModelProto`: constants, inputs, nodes
//! (through [`crate::ops`]) and outputs.
//!
//! Node order: ONNX requires nodes in topological order. When a model
//! breaks that rule the importer sorts the nodes (stably, so valid models
//! keep their order); a real cycle, or a read of a value nothing defines,
//! is an error naming the node.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use qtune_ir::{Graph, Op, SUPPORTED_OPS, ValueId};
use qtune_tensor::{DType, Shape, Tensor};

use crate::attrs::NodeCx;
use crate::proto::tensor_shape_proto::dimension::Value as Dim;
use crate::proto::type_proto::Value as TypeValue;
use crate::proto::{GraphProto, ModelProto, NodeProto, ValueInfoProto};
use crate::tensor::{ExternalData, onnx_type_name, runtime_dtype, tensor_from_proto};
use crate::{ImportOptions, MAX_OPSET, MIN_OPSET, ModelInfo, OnnxError};

pub(crate) fn import_graph(
    model: &ModelProto,
    info: &ModelInfo,
    source_name: &str,
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Graph, OnnxError> {
    let model_err = |message: String| OnnxError::Model {
        source_name: source_name.to_string(),
        message,
    };
    if !(MIN_OPSET..=MAX_OPSET).contains(&info.opset) {
        return Err(OnnxError::UnsupportedOpset {
            version: info.opset,
        });
    }
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| model_err("the model has no graph".into()))?;
    if !g.sparse_initializer.is_empty() {
        return Err(model_err(format!(
            "the graph has {} sparse initializers, which qtune does not support",
            g.sparse_initializer.len()
        )));
    }

    let mut im = Importer::new(g, info.opset, base_dir);

    // Initializers first: graph inputs that are also initializers are
    // constants (ONNX's "overridable initializer"), not inputs.
    for init in &g.initializer {
        let name = init.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(model_err("an initializer has no name".into()));
        }
        let t = tensor_from_proto(init, &name, &mut im.external)?;
        im.graph.add_constant(name, t);
    }

    im.add_inputs(g, opts)?;

    for node in sorted_nodes(g, &im.graph, source_name)? {
        im.import_node(node)?;
    }

    for out in &g.output {
        let name = out.name.as_deref().unwrap_or("");
        let id = im.graph.find_value(name).ok_or_else(|| {
            model_err(format!(
                "graph output '{name}' is not produced by any node, initializer or input"
            ))
        })?;
        im.graph.outputs.push(id);
    }
    im.graph.check_topological()?;
    Ok(im.graph)
}

/// The nodes in an order where each reads only values defined before it.
fn sorted_nodes<'g>(
    g: &'g GraphProto,
    graph: &Graph,
    source_name: &str,
) -> Result<Vec<&'g NodeProto>, OnnxError> {
    let is_defined_outside = |name: &str| name.is_empty() || graph.find_value(name).is_some();
    let mut defined: HashSet<&str> = HashSet::new();
    let in_order = g.node.iter().all(|n| {
        let ok = n
            .input
            .iter()
            .all(|i| is_defined_outside(i) || defined.contains(i.as_str()));
        defined.extend(n.output.iter().map(String::as_str));
        ok
    });
    if in_order {
        return Ok(g.node.iter().collect());
    }

    // Kahn's algorithm, always taking the earliest ready node.
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in &n.output {
            if !o.is_empty() {
                producer.insert(o.as_str(), i);
            }
        }
    }
    let mut pending = vec![0usize; g.node.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        for input in &n.input {
            if is_defined_outside(input) {
                continue;
            }
            match producer.get(input.as_str()) {
                Some(&p) => {
                    pending[i] += 1;
                    users[p].push(i);
                }
                None => {
                    return Err(OnnxError::Node {
                        node: n.name.clone().unwrap_or_default(),
                        op_type: n.op_type.clone().unwrap_or_default(),
                        message: format!(
                            "reads '{input}', which is not a graph input, an initializer or the output of any node"
                        ),
                    });
                }
            }
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..g.node.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(g.node.len());
    while let Some(i) = ready.pop_first() {
        order.push(&g.node[i]);
        for &u in &users[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() != g.node.len() {
        let stuck = (0..g.node.len())
            .find(|&i| pending[i] > 0)
            .map(|i| g.node[i].name.clone().unwrap_or_default())
            .unwrap_or_default();
        return Err(OnnxError::Model {
            source_name: source_name.to_string(),
            message: format!("the graph has a cycle (through node '{stuck}')"),
        });
    }
    Ok(order)
}

pub(crate) struct Importer<'a> {
    pub graph: Graph,
    pub opset: i64,
    pub external: ExternalData<'a>,
    /// Element types declared in `value_info`, inputs and outputs.
    value_types: HashMap<String, i32>,
    /// Ranks declared in `value_info`, inputs and outputs.
    pub value_ranks: HashMap<String, usize>,
    /// Every value name in the model, so generated names never collide.
    taken_values: HashSet<String>,
    taken_nodes: HashSet<String>,
    /// Names read by some node or listed as graph outputs.
    consumed: HashSet<String>,
    /// `Cast(to=FLOAT16|BFLOAT16) -> Cast(to=FLOAT)` pairs imported as one
    /// RoundFloat: the first Cast's output name -> the second Cast's output
    /// name, which the RoundFloat writes instead.
    round_float_pairs: HashMap<String, String>,
    /// Output names of the second Casts of those pairs, which are skipped.
    fused_casts: HashSet<String>,
}

impl<'a> Importer<'a> {
    fn new(g: &GraphProto, opset: i64, base_dir: Option<&'a Path>) -> Self {
        let mut value_types = HashMap::new();
        let mut value_ranks = HashMap::new();
        for vi in g.value_info.iter().chain(&g.input).chain(&g.output) {
            let Some(name) = vi.name.clone() else {
                continue;
            };
            if let Some(TypeValue::TensorType(t)) =
                vi.r#type.as_ref().and_then(|t| t.value.as_ref())
            {
                if let Some(e) = t.elem_type {
                    value_types.insert(name.clone(), e);
                }
                if let Some(s) = &t.shape {
                    value_ranks.insert(name, s.dim.len());
                }
            }
        }
        let mut taken_values: HashSet<String> = HashSet::new();
        let mut consumed = HashSet::new();
        for n in &g.node {
            taken_values.extend(n.input.iter().cloned());
            taken_values.extend(n.output.iter().cloned());
            consumed.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        }
        taken_values.extend(g.initializer.iter().filter_map(|t| t.name.clone()));
        for vi in g.input.iter().chain(&g.output).chain(&g.value_info) {
            taken_values.extend(vi.name.clone());
        }
        consumed.extend(g.output.iter().filter_map(|o| o.name.clone()));
        let round_float_pairs = round_float_pairs(g);
        let fused_casts = round_float_pairs.values().cloned().collect();
        Importer {
            graph: Graph::new(g.name.clone().unwrap_or_default()),
            opset,
            external: ExternalData::new(base_dir),
            value_types,
            value_ranks,
            taken_values,
            taken_nodes: HashSet::new(),
            consumed,
            round_float_pairs,
            fused_casts,
        }
    }

    fn add_inputs(&mut self, g: &GraphProto, opts: &ImportOptions) -> Result<(), OnnxError> {
        let inputs: Vec<&ValueInfoProto> = g
            .input
            .iter()
            .filter(|i| {
                self.graph
                    .find_value(i.name.as_deref().unwrap_or(""))
                    .is_none()
            })
            .collect();
        if let Some(shapes) = &opts.input_shapes
            && shapes.len() != inputs.len()
        {
            let names: Vec<&str> = inputs
                .iter()
                .map(|i| i.name.as_deref().unwrap_or(""))
                .collect();
            return Err(OnnxError::InputShapes {
                message: format!(
                    "{} shapes given, but the model has {} inputs ({})",
                    shapes.len(),
                    inputs.len(),
                    names.join(", ")
                ),
            });
        }
        for (index, vi) in inputs.into_iter().enumerate() {
            let name = vi.name.clone().unwrap_or_default();
            let tensor_type = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(TypeValue::TensorType(t)) => t,
                _ => {
                    return Err(OnnxError::InputShapes {
                        message: format!("input '{name}' is not a tensor"),
                    });
                }
            };
            let elem = tensor_type.elem_type.unwrap_or(0);
            let dtype = runtime_dtype(elem).ok_or_else(|| OnnxError::UnsupportedDType {
                tensor: name.clone(),
                dtype: onnx_type_name(elem),
                context: " (graph input)".into(),
            })?;
            // Each model dimension: Ok(static extent) or Err(symbolic name).
            let model_dims: Option<Vec<Result<usize, String>>> =
                tensor_type.shape.as_ref().map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(Dim::DimValue(v)) => {
                                usize::try_from(*v).map_err(|_| v.to_string())
                            }
                            Some(Dim::DimParam(p)) => Err(p.clone()),
                            None => Err("?".to_string()),
                        })
                        .collect()
                });
            let given = opts.input_shapes.as_ref().map(|s| &s[index]);
            let dims = match (model_dims, given) {
                (None, None) => {
                    return Err(OnnxError::InputShapes {
                        message: format!(
                            "input '{name}' has no shape in the model; give --input_shapes"
                        ),
                    });
                }
                (None, Some(g)) => g.clone(),
                (Some(m), None) => m
                    .into_iter()
                    .enumerate()
                    .map(|(dim, d)| {
                        d.map_err(|param| OnnxError::DynamicInput {
                            input: name.clone(),
                            dim,
                            param,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                (Some(m), Some(g)) => {
                    if m.len() != g.len() {
                        return Err(OnnxError::InputShapes {
                            message: format!(
                                "input '{name}' has rank {} in the model, but the given shape {:?} has rank {}",
                                m.len(),
                                g,
                                g.len()
                            ),
                        });
                    }
                    for (dim, (md, &gd)) in m.iter().zip(g).enumerate() {
                        if let Ok(md) = md
                            && *md != gd
                        {
                            return Err(OnnxError::InputShapes {
                                message: format!(
                                    "input '{name}' dim {dim} is {md} in the model, but the given shape {g:?} says {gd}"
                                ),
                            });
                        }
                    }
                    g.clone()
                }
            };
            let id = self.graph.add_value(name, dtype, Some(Shape(dims)));
            self.graph.inputs.push(id);
        }
        Ok(())
    }

    /// A node name not used yet: `base`, else `base_1`, `base_2`, ...
    pub fn unique_node_name(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut k = 1;
        while self.taken_nodes.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.taken_nodes.insert(name.clone());
        name
    }

    /// A value name not used anywhere in the model, for values the importer
    /// creates (legacy attributes turned into inputs, decompositions).
    pub fn fresh_value_name(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut k = 1;
        while self.taken_values.contains(&name) || self.graph.find_value(&name).is_some() {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.taken_values.insert(name.clone());
        name
    }

    pub fn add_generated_constant(&mut self, base: String, tensor: Tensor) -> ValueId {
        let name = self.fresh_value_name(base);
        self.graph.add_constant(name, tensor)
    }

    pub fn is_consumed(&self, name: &str) -> bool {
        self.consumed.contains(name)
    }

    /// Declares a node output value, checking it is defined only once.
    pub fn add_output_value(
        &mut self,
        cx: &NodeCx<'_>,
        name: &str,
        op: &Op,
    ) -> Result<ValueId, OnnxError> {
        if self.graph.find_value(name).is_some() {
            return Err(cx.node_err(format!(
                "output '{name}' is already defined (by an initializer, a graph input or an earlier node)"
            )));
        }
        let dtype = match op {
            Op::Shape { .. } => DType::I64,
            Op::Cast { to } => *to,
            // Comparisons and logic (the binary registry's boolean kinds).
            Op::Not => DType::Bool,
            op if op.binary().is_some_and(|b| b.kind.is_bool()) => DType::Bool,
            // A placeholder when the model does not say; inference overwrites it.
            _ => self
                .value_types
                .get(name)
                .and_then(|&t| runtime_dtype(t))
                .unwrap_or(DType::F32),
        };
        Ok(self.graph.add_value(name, dtype, None))
    }

    fn import_node(&mut self, node: &NodeProto) -> Result<(), OnnxError> {
        if let [out] = node.output.as_slice()
            && self.fused_casts.contains(out)
        {
            // The Cast(to=FLOAT) of a RoundFloat pair: already written.
            return Ok(());
        }
        let op_type = node.op_type.as_deref().unwrap_or("");
        let base = match node.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => format!(
                "{}_{op_type}",
                node.output.first().map(String::as_str).unwrap_or("")
            ),
        };
        let name = self.unique_node_name(base);
        let domain = node.domain.as_deref().unwrap_or("");
        if !matches!(domain, "" | "ai.onnx") {
            return Err(OnnxError::UnsupportedDomain {
                node: name,
                op_type: op_type.to_string(),
                domain: domain.to_string(),
            });
        }
        if op_type != "Constant"
            && !SUPPORTED_OPS.contains(&op_type)
            && !crate::ops::REWRITTEN_OPS.contains(&op_type)
        {
            return Err(OnnxError::UnsupportedOp {
                node: name,
                op_type: op_type.to_string(),
                supported: SUPPORTED_OPS.join(", "),
            });
        }
        let cx = NodeCx {
            name: &name,
            op_type,
            attrs: &node.attribute,
            opset: self.opset,
        };
        let mut inputs = Vec::with_capacity(node.input.len());
        for input in &node.input {
            if input.is_empty() {
                inputs.push(None);
            } else {
                let id = self.graph.find_value(input).ok_or_else(|| {
                    cx.node_err(format!(
                        "reads '{input}', which is not a graph input, an initializer or the output of an earlier node"
                    ))
                })?;
                inputs.push(Some(id));
            }
        }
        // Trailing optional inputs may be spelled as empty names.
        while matches!(inputs.last(), Some(None)) {
            inputs.pop();
        }
        match node.output.as_slice() {
            [out] if op_type == "Cast" => match self.round_float_pairs.get(out) {
                Some(fused) => {
                    let fused = [fused.clone()];
                    crate::ops::import_node(self, &cx, inputs, &fused)
                }
                None => crate::ops::import_node(self, &cx, inputs, &node.output),
            },
            outputs => crate::ops::import_node(self, &cx, inputs, outputs),
        }
    }
}

/// Finds `Cast(to=FLOAT16|BFLOAT16) -> Cast(to=FLOAT)` pairs whose middle
/// value (the half-precision tensor) is read only by the second Cast and is
/// not a graph output. The first Cast imports as RoundFloat, which keeps
/// float32 values, so the second Cast would be an identity: the pair becomes
/// one RoundFloat node (named like the first Cast) writing the second Cast's
/// output. This is the form the exporter writes RoundFloat in, so export and
/// import round-trip.
fn round_float_pairs(g: &GraphProto) -> HashMap<String, String> {
    use crate::proto::tensor_proto::DataType;
    let cast_to = |n: &NodeProto| -> Option<i64> {
        if n.op_type.as_deref() != Some("Cast")
            || !matches!(n.domain.as_deref(), None | Some("" | "ai.onnx"))
        {
            return None;
        }
        n.attribute
            .iter()
            .rev()
            .find(|a| a.name.as_deref() == Some("to"))
            .and_then(|a| a.i)
    };
    let mut readers: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
    for n in &g.node {
        for i in &n.input {
            readers.entry(i.as_str()).or_default().push(n);
        }
    }
    let outputs: HashSet<&str> = g.output.iter().filter_map(|o| o.name.as_deref()).collect();
    let narrow = [DataType::Float16 as i64, DataType::Bfloat16 as i64];
    let mut pairs = HashMap::new();
    for n in &g.node {
        let [mid] = n.output.as_slice() else {
            continue;
        };
        if mid.is_empty()
            || outputs.contains(mid.as_str())
            || !cast_to(n).is_some_and(|t| narrow.contains(&t))
        {
            continue;
        }
        if let Some([second]) = readers.get(mid.as_str()).map(Vec::as_slice)
            && cast_to(second) == Some(DataType::Float as i64)
            && second.input.len() == 1
            && let [out] = second.output.as_slice()
            && !out.is_empty()
        {
            pairs.insert(mid.clone(), out.clone());
        }
    }
    pairs
}
