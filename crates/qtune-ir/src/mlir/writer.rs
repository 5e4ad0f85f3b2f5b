//! Graph -> Top-dialect text. See the module docs for the format and names.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use qtune_tensor::{Tensor, TensorData};

use super::attr::quote;
use super::{InputAttrs, MlirAttr, MlirError, MlirWriteOptions, tensor_type};
use crate::{Graph, Node, NodeId, ValueId};

/// Largest integer magnitude float32 holds exactly.
const F32_EXACT_INT: i64 = 1 << 24;

/// One operand of a Top op.
pub(crate) enum Operand {
    Value(ValueId),
    None,
}

/// A Top op ready to print.
pub(crate) struct TopOp {
    name: &'static str,
    operands: Vec<Operand>,
    attrs: Vec<(&'static str, MlirAttr)>,
}

/// Writes `graph` as Top-dialect MLIR text and returns it with the weights
/// (float32, keyed by `top.Weight` loc name) to save as
/// `opts.weight_file`. Every value must have a static shape (run
/// `qtune_exec::prepare` first). Nothing is fused or folded.
pub fn write_top_mlir(
    graph: &Graph,
    opts: &MlirWriteOptions,
) -> Result<(String, Vec<(String, Tensor)>), MlirError> {
    Writer::new(graph).write(opts)
}

struct Writer<'g> {
    graph: &'g Graph,
    body: String,
    /// `#locN` bodies; index 0 is `unknown`.
    locs: Vec<String>,
    used_names: HashSet<String>,
    ssa: HashMap<ValueId, String>,
    next_ssa: usize,
    weights: Vec<(String, Tensor)>,
}

fn shape_dims(graph: &Graph, v: ValueId) -> Result<&[usize], MlirError> {
    let value = graph.value(v);
    value
        .shape
        .as_ref()
        .map(|s| s.dims())
        .ok_or_else(|| MlirError::Value {
            name: value.name.clone(),
            message: "has no static shape (prepare the graph before writing it)".into(),
        })
}

fn value_type(graph: &Graph, v: ValueId) -> Result<String, MlirError> {
    Ok(tensor_type(shape_dims(graph, v)?, graph.value(v).dtype))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.'))
}

impl<'g> Writer<'g> {
    fn new(graph: &'g Graph) -> Self {
        Writer {
            graph,
            body: String::new(),
            locs: vec!["unknown".to_string()],
            used_names: HashSet::new(),
            ssa: HashMap::new(),
            next_ssa: 0,
            weights: Vec::new(),
        }
    }

    /// Reserves a unique op name.
    fn unique(&mut self, base: String) -> String {
        let mut name = base.clone();
        let mut n = 1;
        while !self.used_names.insert(name.clone()) {
            name = format!("{base}_{n}");
            n += 1;
        }
        name
    }

    fn add_loc(&mut self, body: String) -> usize {
        self.locs.push(body);
        self.locs.len() - 1
    }

    fn fresh_ssa(&mut self) -> String {
        let s = format!("%{}", self.next_ssa);
        self.next_ssa += 1;
        s
    }

    fn write(
        mut self,
        opts: &MlirWriteOptions,
    ) -> Result<(String, Vec<(String, Tensor)>), MlirError> {
        let g = self.graph;
        // Signature.
        let mut args = Vec::new();
        for (i, &v) in g.inputs.iter().enumerate() {
            args.push(format!("%arg{i}: {} loc(unknown)", value_type(g, v)?));
        }
        let out_types: Vec<String> = g
            .outputs
            .iter()
            .map(|&v| value_type(g, v))
            .collect::<Result<_, _>>()?;
        let results = if out_types.len() == 1 {
            out_types[0].clone()
        } else {
            format!("({})", out_types.join(", "))
        };
        let none = self.fresh_ssa();
        let _ = writeln!(
            self.body,
            "    {none} = \"top.None\"() : () -> none loc(#loc)"
        );
        for (i, &v) in g.inputs.iter().enumerate() {
            let name = self.unique(g.value(v).name.clone());
            let loc = self.add_loc(quote(&name));
            let ty = value_type(g, v)?;
            let attrs = opts
                .input_attrs
                .iter()
                .find(|a| a.name == g.value(v).name)
                .map(|a: &InputAttrs| a.attrs.clone())
                .unwrap_or_default();
            let ssa = self.fresh_ssa();
            let _ = writeln!(
                self.body,
                "    {ssa} = \"top.Input\"(%arg{i}){} : ({ty}) -> {ty} loc(#loc{loc})",
                format_attrs(attrs.iter().map(|(k, v)| (k.as_str(), v)))
            );
            self.ssa.insert(v, ssa);
        }
        for (id, node) in g.nodes() {
            self.write_node(id, node, &none)?;
        }
        let mut ret_vals = Vec::new();
        for &v in &g.outputs {
            ret_vals.push(self.operand(v)?);
        }
        let _ = writeln!(
            self.body,
            "    return {} : {} loc(#loc)",
            ret_vals.join(", "),
            out_types.join(", ")
        );

        let mut text = String::new();
        let name = if is_identifier(&opts.model_name) {
            opts.model_name.clone()
        } else {
            quote(&opts.model_name)
        };
        let _ = writeln!(
            text,
            "module @{name} attributes {{module.chip = {}, module.platform = {}, module.state = \"TOP_F32\", module.top_run_mode = \"STATIC\", module.weight_file = {}}} {{",
            quote(&opts.chip),
            quote(&opts.platform),
            quote(&opts.weight_file)
        );
        let _ = writeln!(
            text,
            "  func.func @main({}) -> {results} {{",
            args.join(", ")
        );
        text.push_str(&self.body);
        text.push_str("  } loc(#loc)\n} loc(#loc)\n");
        for (i, body) in self.locs.iter().enumerate() {
            if i == 0 {
                let _ = writeln!(text, "#loc = loc({body})");
            } else {
                let _ = writeln!(text, "#loc{i} = loc({body})");
            }
        }
        Ok((text, self.weights))
    }

    /// The SSA name of a value, emitting a `top.Weight` for a constant the
    /// first time it is used.
    fn operand(&mut self, v: ValueId) -> Result<String, MlirError> {
        if let Some(s) = self.ssa.get(&v) {
            return Ok(s.clone());
        }
        let g = self.graph;
        let value = g.value(v);
        let Some(t) = value.constant.as_ref() else {
            return Err(MlirError::Value {
                name: value.name.clone(),
                message: "is used before it is produced".into(),
            });
        };
        let data = weight_f32(t).map_err(|message| MlirError::Value {
            name: value.name.clone(),
            message,
        })?;
        let name = self.unique(value.name.clone());
        // npz stores 0-d weights as [1], as TPU-MLIR does; the result type
        // keeps the real shape.
        let dims = if t.dims().is_empty() {
            vec![1]
        } else {
            t.dims().to_vec()
        };
        let tensor = Tensor::from_f32(dims, data).map_err(|e| MlirError::Value {
            name: value.name.clone(),
            message: e.to_string(),
        })?;
        self.weights.push((name.clone(), tensor));
        let loc = self.add_loc(quote(&name));
        let ssa = self.fresh_ssa();
        let _ = writeln!(
            self.body,
            "    {ssa} = \"top.Weight\"() : () -> {} loc(#loc{loc})",
            tensor_type(t.dims(), t.dtype())
        );
        self.ssa.insert(v, ssa.clone());
        Ok(ssa)
    }

    fn write_node(&mut self, id: NodeId, node: &Node, none: &str) -> Result<(), MlirError> {
        let g = self.graph;
        let top = lower(g, id, node)?;
        let mut operands = Vec::new();
        let mut operand_types = Vec::new();
        for o in &top.operands {
            match o {
                Operand::Value(v) => {
                    operands.push(self.operand(*v)?);
                    operand_types.push(value_type(g, *v)?);
                }
                Operand::None => {
                    operands.push(none.to_string());
                    operand_types.push("none".to_string());
                }
            }
        }
        // The op's loc is its output's name: run
        // `passes::name_as_top_ops` on a graph with ONNX tensor names first.
        let mut names = Vec::new();
        for &o in &node.outputs {
            names.push(self.unique(g.value(o).name.clone()));
        }
        let loc = if names.len() == 1 {
            quote(&names[0])
        } else {
            let parts: Vec<String> = names.iter().map(|n| quote(n)).collect();
            format!("fused[{}]", parts.join(", "))
        };
        let loc = self.add_loc(loc);
        let result_types: Vec<String> = node
            .outputs
            .iter()
            .map(|&o| value_type(g, o))
            .collect::<Result<_, _>>()?;
        let ssa = self.fresh_ssa();
        let lhs = if node.outputs.len() == 1 {
            self.ssa.insert(node.outputs[0], ssa.clone());
            ssa
        } else {
            for (i, &o) in node.outputs.iter().enumerate() {
                self.ssa.insert(o, format!("{ssa}#{i}"));
            }
            format!("{ssa}:{}", node.outputs.len())
        };
        let results = if result_types.len() == 1 {
            result_types[0].clone()
        } else {
            format!("({})", result_types.join(", "))
        };
        let _ = writeln!(
            self.body,
            "    {lhs} = \"{}\"({}){} : ({}) -> {results} loc(#loc{loc})",
            top.name,
            operands.join(", "),
            format_attrs(top.attrs.iter().map(|(k, v)| (*k, v))),
            operand_types.join(", ")
        );
        Ok(())
    }
}

/// ` {a = 1 : i64, b = true}` sorted by name, or nothing.
fn format_attrs<'a>(attrs: impl Iterator<Item = (&'a str, &'a MlirAttr)>) -> String {
    let mut list: Vec<(&str, &MlirAttr)> = attrs.collect();
    if list.is_empty() {
        return String::new();
    }
    list.sort_by(|a, b| a.0.cmp(b.0));
    let items: Vec<String> = list
        .iter()
        .map(|(k, v)| {
            let key = if is_identifier(k) {
                (*k).to_string()
            } else {
                quote(k)
            };
            format!("{key} = {v}")
        })
        .collect();
    format!(" {{{}}}", items.join(", "))
}

/// A constant as float32, refusing integers float32 cannot hold exactly.
fn weight_f32(t: &Tensor) -> Result<Vec<f32>, String> {
    let ints = |v: &mut dyn Iterator<Item = i64>| -> Result<Vec<f32>, String> {
        v.map(|x| {
            if x.abs() > F32_EXACT_INT {
                Err(format!(
                    "integer constant {x} cannot be stored exactly in a float32 weight"
                ))
            } else {
                #[allow(clippy::cast_precision_loss)]
                Ok(x as f32)
            }
        })
        .collect()
    };
    match t.data() {
        TensorData::F32(v) => Ok(v.to_vec()),
        TensorData::I64(v) => ints(&mut v.iter().copied()),
        TensorData::I32(v) => ints(&mut v.iter().map(|&x| i64::from(x))),
        TensorData::U8(v) => Ok(v.iter().map(|&x| f32::from(x)).collect()),
        TensorData::I8(v) => Ok(v.iter().map(|&x| f32::from(x)).collect()),
        TensorData::Bool(v) => Ok(v.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect()),
    }
}

pub(crate) fn usizes(v: &[usize]) -> MlirAttr {
    MlirAttr::I64Array(
        v.iter()
            .map(|&x| i64::try_from(x).unwrap_or(i64::MAX))
            .collect(),
    )
}

/// The Top op a node is written as (`top.Conv`, `top.AddConst`, ...), or
/// `None` when it has no Top form (quantized ops) or the graph lacks the
/// static shapes the mapping needs.
pub fn top_op_type(graph: &Graph, id: NodeId) -> Option<&'static str> {
    lower(graph, id, graph.node(id)).ok().map(|t| t.name)
}

/// Maps one IR node to its Top op. See the table in the crate docs.
fn lower(g: &Graph, id: NodeId, node: &Node) -> Result<TopOp, MlirError> {
    let w = TopOut { g, id, node };
    // Every op but the simulation's own is in a family (`crate::families`).
    let Some(f) = crate::families::of(&node.op) else {
        return Err(w.err(
            "a quantized graph has no Top-dialect form (the Top .mlir is the float model; \
             write quantized models as QDQ ONNX)"
                .into(),
        ));
    };
    let top = (f.write_top)(&w)?;
    with_fused_relu(top, node).map_err(|m| w.err(m))
}

/// A Top op from its parts.
pub(crate) fn mk(
    name: &'static str,
    operands: Vec<Operand>,
    attrs: Vec<(&'static str, MlirAttr)>,
) -> TopOp {
    TopOp {
        name,
        operands,
        attrs,
    }
}

/// One node being written, for the op families' writers
/// ([`crate::movement::write_top`]).
pub(crate) struct TopOut<'a> {
    pub(crate) g: &'a Graph,
    pub(crate) id: NodeId,
    pub(crate) node: &'a Node,
}

impl TopOut<'_> {
    pub(crate) fn err(&self, message: String) -> MlirError {
        MlirError::Unsupported {
            node: self.node.name.clone(),
            op: self.node.op.op_type(),
            message,
        }
    }
    /// Input `i`, when present.
    pub(crate) fn input(&self, i: usize) -> Option<ValueId> {
        self.node.inputs.get(i).copied().flatten()
    }
    /// Input `i`, which must be present.
    pub(crate) fn x(&self, i: usize) -> Result<ValueId, MlirError> {
        self.input(i)
            .ok_or_else(|| self.err(format!("input {i} is missing")))
    }
    fn constant(&self, v: ValueId, i: usize) -> Result<&Tensor, MlirError> {
        self.g.constant_of(v).ok_or_else(|| {
            self.err(format!(
                "input {i} `{}` must be a constant to be written as an attribute",
                self.g.value(v).name
            ))
        })
    }
    /// A constant integer input, or `None` when the input is absent.
    pub(crate) fn const_ints(&self, i: usize) -> Result<Option<Vec<i64>>, MlirError> {
        let Some(v) = self.input(i) else {
            return Ok(None);
        };
        self.constant(v, i)?
            .to_i64_vec()
            .map(Some)
            .map_err(|e| self.err(e.to_string()))
    }
    /// A constant float input, or `None` when the input is absent.
    pub(crate) fn const_f32(&self, i: usize) -> Result<Option<Vec<f32>>, MlirError> {
        let Some(v) = self.input(i) else {
            return Ok(None);
        };
        Ok(Some(self.constant(v, i)?.to_f32_vec()))
    }
    /// The dims of a value.
    pub(crate) fn dims(&self, v: ValueId) -> Result<&[usize], MlirError> {
        shape_dims(self.g, v)
    }
    /// The dims of output `i`.
    pub(crate) fn out_dims(&self, i: usize) -> Result<&[usize], MlirError> {
        let v = self
            .node
            .outputs
            .get(i)
            .copied()
            .ok_or_else(|| self.err("has no output".into()))?;
        shape_dims(self.g, v)
    }
    /// The rank of input `i`.
    pub(crate) fn in_rank(&self, i: usize) -> Result<usize, MlirError> {
        Ok(self.dims(self.x(i)?)?.len())
    }
    /// Input `i` as an operand, `none` when absent.
    pub(crate) fn opt(&self, i: usize) -> Operand {
        match self.input(i) {
            Some(v) => Operand::Value(v),
            None => Operand::None,
        }
    }
    /// The first `n` inputs as operands; each must be present.
    pub(crate) fn values(&self, n: usize) -> Result<Vec<Operand>, MlirError> {
        (0..n).map(|i| self.x(i).map(Operand::Value)).collect()
    }
    /// Every input as an operand; each must be present.
    pub(crate) fn all_inputs(&self) -> Result<Vec<Operand>, MlirError> {
        (0..self.node.inputs.len())
            .map(|i| self.x(i).map(Operand::Value))
            .collect()
    }
}

/// Sets `do_relu` / `relu_limit` of a Top op from the node's fused Relu.
/// Only ops that carry a `do_relu` attribute can have one.
fn with_fused_relu(mut top: TopOp, node: &Node) -> Result<TopOp, String> {
    let Some(relu) = node.relu else {
        // TPU-MLIR prints the default limit beside `do_relu = false`.
        if top.attrs.iter().any(|(k, _)| *k == "do_relu") {
            top.attrs.push(("relu_limit", MlirAttr::F64(-1.0)));
        }
        return Ok(top);
    };
    let Some(slot) = top.attrs.iter_mut().find(|(k, _)| *k == "do_relu") else {
        return Err(format!(
            "`{}` has no do_relu attribute, so it cannot carry a fused Relu",
            top.name
        ));
    };
    slot.1 = MlirAttr::Bool(true);
    top.attrs
        .push(("relu_limit", MlirAttr::F64(relu.limit_attr())));
    Ok(top)
}
