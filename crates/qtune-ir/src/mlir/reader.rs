//! Top-dialect text -> graph. See the module docs for the naming contract.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use qtune_tensor::{DType, Shape, Tensor, TensorData};

use super::parse::{Loc, ParsedModule, ParsedOp, Parser, TypeSpec};
use super::{InputAttrs, MlirAttr, MlirError, dtype_of_element};
use crate::{AutoPad, FusedRelu, Graph, ValueId};

/// Reads Top-dialect text. `weights` are the contents of the module's
/// weight file (keyed by `top.Weight` loc name); `source` names the text in
/// error messages. Returns the graph (value names are op locs) and the
/// preprocessing attributes of each `top.Input`.
pub fn read_top_mlir(
    text: &str,
    weights: &[(String, Tensor)],
    source: &str,
) -> Result<(Graph, Vec<InputAttrs>), MlirError> {
    let module = Parser::new(text, source).parse_module()?;
    Builder::new(&module, weights, source).build()
}

/// Reads a `.mlir` file and the weight file its `module.weight_file` names,
/// relative to the `.mlir`'s directory.
pub fn read_top_mlir_file(path: &Path) -> Result<(Graph, Vec<InputAttrs>), MlirError> {
    let text = std::fs::read_to_string(path).map_err(|e| MlirError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let source = path.display().to_string();
    let module = Parser::new(&text, &source).parse_module()?;
    let weight_file = module
        .attrs
        .iter()
        .find(|(k, _)| k == "module.weight_file")
        .and_then(|(_, v)| v.as_str().map(str::to_string));
    let weights = match weight_file {
        Some(w) => {
            let wp = path.parent().unwrap_or(Path::new(".")).join(w);
            qtune_tensor::read_npz(&wp).map_err(|e| MlirError::Io {
                path: wp.clone(),
                message: e.to_string(),
            })?
        }
        None => Vec::new(),
    };
    Builder::new(&module, &weights, &source).build()
}

pub(crate) struct Builder<'a> {
    m: &'a ParsedModule,
    weights: HashMap<&'a str, &'a Tensor>,
    source: &'a str,
    pub(crate) graph: Graph,
    ssa: HashMap<String, Option<ValueId>>,
    names: HashSet<String>,
    input_attrs: Vec<InputAttrs>,
}

fn type_parts(t: &TypeSpec) -> Option<(DType, Option<Shape>)> {
    match t {
        TypeSpec::Tensor { dims, elem } => Some((
            dtype_of_element(elem)?,
            dims.as_ref().map(|d| Shape::new(d.clone())),
        )),
        _ => None,
    }
}

/// The attributes of one op.
#[derive(Clone, Copy)]
pub(crate) struct Attrs<'a> {
    list: &'a [(String, MlirAttr)],
}

impl Attrs<'_> {
    pub(crate) fn get(&self, k: &str) -> Option<&MlirAttr> {
        self.list.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }
    pub(crate) fn ints(&self, k: &str) -> Option<Vec<i64>> {
        self.get(k)
            .and_then(|v| v.as_i64_array().map(<[i64]>::to_vec))
    }
    pub(crate) fn f64_or(&self, k: &str, d: f64) -> f64 {
        self.get(k).and_then(MlirAttr::as_f64).unwrap_or(d)
    }
    pub(crate) fn i64_or(&self, k: &str, d: i64) -> i64 {
        self.get(k).and_then(MlirAttr::as_i64).unwrap_or(d)
    }
    pub(crate) fn bool_or(&self, k: &str, d: bool) -> bool {
        self.get(k).and_then(MlirAttr::as_bool).unwrap_or(d)
    }
    pub(crate) fn str(&self, k: &str) -> Option<&str> {
        self.get(k).and_then(MlirAttr::as_str)
    }
}

/// An F64 attribute as the f32 it was written from.
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn f32_of(v: f64) -> f32 {
    // Attributes written from f32 values convert back exactly.
    v as f32
}

/// One Top op being read, for the op families' readers
/// ([`crate::movement::read_top`]): they set the node's inputs and whether
/// it carries a fused Relu, and return its IR op.
pub(crate) struct TopIn<'r, 'a> {
    pub(crate) b: &'r mut Builder<'a>,
    pub(crate) op: &'r ParsedOp,
    pub(crate) a: Attrs<'r>,
    /// The op's name (its loc), which names the constants it makes.
    pub(crate) loc: String,
    pub(crate) line: usize,
    pub(crate) inputs: Vec<Option<ValueId>>,
    pub(crate) fuse_relu: bool,
}

impl TopIn<'_, '_> {
    /// The `auto_pad` attribute (absent or unknown: not set).
    pub(crate) fn auto_pad(&self) -> AutoPad {
        auto_pad_of(self.a)
    }
    /// The element type of result `i`, when its type is a tensor.
    pub(crate) fn result_dtype(&self, i: usize) -> Option<DType> {
        self.op
            .result_types
            .get(i)
            .and_then(type_parts)
            .map(|(d, _)| d)
    }
    pub(crate) fn err<T>(&self, message: impl Into<String>) -> Result<T, MlirError> {
        self.b.err(self.line, message)
    }
    /// Operand `i`, which must not be `none`.
    pub(crate) fn req(&self, i: usize) -> Result<ValueId, MlirError> {
        self.b.required(self.op, i)
    }
    /// The one operand of a unary op.
    pub(crate) fn unary(&self) -> Result<Vec<Option<ValueId>>, MlirError> {
        Ok(vec![Some(self.req(0)?)])
    }
    /// The two operands of a binary op.
    pub(crate) fn binary(&self) -> Result<Vec<Option<ValueId>>, MlirError> {
        Ok(vec![Some(self.req(0)?), Some(self.req(1)?)])
    }
    /// The dims of result `i`, when its type is ranked.
    pub(crate) fn result_dims(&self, i: usize) -> Option<Vec<usize>> {
        result_dims(self.op, i)
    }
    /// An integer-list attribute that must not hold negative values.
    pub(crate) fn usizes(&self, k: &str) -> Result<Vec<usize>, MlirError> {
        usizes_attr(self.b, self.a, self.line, k)
    }
}

/// An op's `auto_pad` attribute (absent or unknown: not set).
fn auto_pad_of(a: Attrs) -> AutoPad {
    a.str("auto_pad")
        .and_then(AutoPad::parse)
        .unwrap_or(AutoPad::NotSet)
}

fn result_dims(op: &ParsedOp, i: usize) -> Option<Vec<usize>> {
    op.result_types
        .get(i)
        .and_then(type_parts)
        .and_then(|(_, s)| s)
        .map(|s| s.0)
}

fn usizes_attr(b: &Builder, a: Attrs, line: usize, k: &str) -> Result<Vec<usize>, MlirError> {
    a.ints(k)
        .unwrap_or_default()
        .into_iter()
        .map(usize::try_from)
        .collect::<Result<_, _>>()
        .map_err(|_| MlirError::Parse {
            file: b.source.to_string(),
            line,
            message: format!("attribute `{k}` must not be negative"),
        })
}

impl<'a> Builder<'a> {
    fn new(m: &'a ParsedModule, weights: &'a [(String, Tensor)], source: &'a str) -> Self {
        Builder {
            m,
            weights: weights.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            source,
            graph: Graph::new(m.name.clone()),
            ssa: HashMap::new(),
            names: HashSet::new(),
            input_attrs: Vec::new(),
        }
    }

    pub(crate) fn err<T>(&self, line: usize, message: impl Into<String>) -> Result<T, MlirError> {
        Err(MlirError::Parse {
            file: self.source.to_string(),
            line,
            message: message.into(),
        })
    }

    fn loc_names(&self, loc: &Loc, depth: usize, out: &mut Vec<String>) {
        if depth > 16 {
            return;
        }
        match loc {
            Loc::Unknown => {}
            Loc::Name(n) => out.push(n.clone()),
            Loc::Alias(a) => {
                if let Some(l) = self.m.loc_aliases.get(a) {
                    self.loc_names(l, depth + 1, out);
                }
            }
            Loc::Fused(parts) => {
                for p in parts {
                    self.loc_names(p, depth + 1, out);
                }
            }
        }
    }

    fn claim(&mut self, line: usize, name: &str) -> Result<(), MlirError> {
        if !self.names.insert(name.to_string()) {
            return self.err(line, format!("the name `{name}` is used by two ops"));
        }
        Ok(())
    }

    fn build(mut self) -> Result<(Graph, Vec<InputAttrs>), MlirError> {
        let m = self.m;
        for op in &m.ops {
            self.op(op)?;
        }
        for r in &m.returns {
            let Some(Some(v)) = self.ssa.get(r).copied() else {
                return self.err(
                    m.return_line,
                    format!("`return` uses undefined value `{r}`"),
                );
            };
            self.graph.outputs.push(v);
        }
        self.graph
            .check_topological()
            .map_err(|e| MlirError::Parse {
                file: self.source.to_string(),
                line: m.return_line,
                message: e.to_string(),
            })?;
        Ok((self.graph, self.input_attrs))
    }

    pub(crate) fn operand(&self, op: &ParsedOp, i: usize) -> Result<Option<ValueId>, MlirError> {
        let Some(name) = op.operands.get(i) else {
            return self.err(op.line, format!("`{}` expects operand {i}", op.name));
        };
        match self.ssa.get(name) {
            Some(v) => Ok(*v),
            None => self.err(op.line, format!("use of undefined value `{name}`")),
        }
    }

    pub(crate) fn required(&self, op: &ParsedOp, i: usize) -> Result<ValueId, MlirError> {
        match self.operand(op, i)? {
            Some(v) => Ok(v),
            None => self.err(
                op.line,
                format!("`{}` operand {i} must not be none", op.name),
            ),
        }
    }

    fn constant(&mut self, name: String, t: Tensor) -> ValueId {
        let mut n = name.clone();
        let mut k = 1;
        while self.graph.find_value(&n).is_some() {
            n = format!("{name}_{k}");
            k += 1;
        }
        self.graph.add_constant(n, t)
    }

    pub(crate) fn i64_const(&mut self, name: String, v: Vec<i64>) -> Result<ValueId, MlirError> {
        let t = Tensor::from_i64(vec![v.len()], v).map_err(|e| MlirError::Value {
            name: name.clone(),
            message: e.to_string(),
        })?;
        Ok(self.constant(name, t))
    }

    pub(crate) fn f32_const(
        &mut self,
        name: String,
        dims: Vec<usize>,
        v: Vec<f32>,
    ) -> Result<ValueId, MlirError> {
        let t = Tensor::from_f32(dims, v).map_err(|e| MlirError::Value {
            name: name.clone(),
            message: e.to_string(),
        })?;
        Ok(self.constant(name, t))
    }

    fn weight(&mut self, op: &ParsedOp, name: &str) -> Result<ValueId, MlirError> {
        let Some(ty) = op.result_types.first() else {
            return self.err(op.line, "`top.Weight` has no result");
        };
        let Some((dtype, shape)) = type_parts(ty) else {
            return self.err(op.line, format!("unsupported weight type {ty:?}"));
        };
        let Some(t) = self.weights.get(name) else {
            return self.err(
                op.line,
                format!("weight `{name}` is missing from the weight file"),
            );
        };
        let dims = shape.map(|s| s.0).unwrap_or_else(|| t.dims().to_vec());
        let vals = t.to_f32_vec();
        // Checked: a type like tensor<4294967296x4294967296x5x5xf32> must not
        // wrap to a count that some array matches.
        let Some(needed) = qtune_tensor::checked_numel(&dims) else {
            return self.err(
                op.line,
                format!("weight `{name}`: the element count of its type {ty:?} overflows"),
            );
        };
        if vals.len() != needed {
            return self.err(
                op.line,
                format!(
                    "weight `{name}` has {} elements, its type {ty:?} needs {needed}",
                    vals.len(),
                ),
            );
        }
        let bad = |what: &str| MlirError::Parse {
            file: self.source.to_string(),
            line: op.line,
            message: format!("weight `{name}` holds a value that is not {what}"),
        };
        let integral = |x: f32| x.fract() == 0.0 && x.abs() <= 16_777_216.0;
        #[allow(clippy::cast_possible_truncation)]
        let data = match dtype {
            DType::F32 => TensorData::F32(vals.into()),
            DType::I64 => TensorData::I64(
                vals.iter()
                    .map(|&x| {
                        integral(x)
                            .then_some(x as i64)
                            .ok_or_else(|| bad("an integer"))
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .into(),
            ),
            DType::I32 => TensorData::I32(
                vals.iter()
                    .map(|&x| {
                        integral(x)
                            .then_some(x as i32)
                            .ok_or_else(|| bad("an integer"))
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .into(),
            ),
            DType::Bool => {
                TensorData::Bool(vals.iter().map(|&x| x != 0.0).collect::<Vec<_>>().into())
            }
            DType::U8 => TensorData::U8(
                vals.iter()
                    .map(|&x| {
                        (integral(x) && (0.0..=255.0).contains(&x))
                            .then_some(x as u8)
                            .ok_or_else(|| bad("a uint8"))
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .into(),
            ),
            DType::I8 => TensorData::I8(
                vals.iter()
                    .map(|&x| {
                        (integral(x) && (-128.0..=127.0).contains(&x))
                            .then_some(x as i8)
                            .ok_or_else(|| bad("an int8"))
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .into(),
            ),
        };
        let tensor = Tensor::new(dims, data).map_err(|e| MlirError::Value {
            name: name.to_string(),
            message: e.to_string(),
        })?;
        if self.graph.find_value(name).is_some() {
            return self.err(op.line, format!("the name `{name}` is used twice"));
        }
        Ok(self.graph.add_constant(name.to_string(), tensor))
    }

    fn op(&mut self, op: &ParsedOp) -> Result<(), MlirError> {
        let mut names = Vec::new();
        self.loc_names(&op.loc, 0, &mut names);
        if op.name == "top.None" {
            for r in &op.results {
                self.ssa.insert(r.clone(), None);
            }
            return Ok(());
        }
        // One name per result.
        let names: Vec<String> = if names.len() == op.results.len() {
            names
        } else if op.results.len() == 1 && !names.is_empty() {
            // TPU-MLIR's Python tools call such an op by the fused string.
            let quoted: Vec<String> = names.iter().map(|n| super::attr::quote(n)).collect();
            vec![format!("fused[{}]", quoted.join(", "))]
        } else {
            let base = names
                .first()
                .cloned()
                .unwrap_or_else(|| format!("{}_{}", op.name, op.line));
            (0..op.results.len())
                .map(|i| format!("{base}_{i}"))
                .collect()
        };
        for n in &names {
            self.claim(op.line, n)?;
        }
        let loc = names.first().cloned().unwrap_or_default();
        match op.name.as_str() {
            "top.Input" => {
                let arg = op.operands.first().cloned().unwrap_or_default();
                if !self.m.args.iter().any(|(a, _)| *a == arg) {
                    return self.err(
                        op.line,
                        format!("`top.Input` operand `{arg}` is not a function argument"),
                    );
                }
                let Some((dtype, shape)) = op.result_types.first().and_then(type_parts) else {
                    return self.err(op.line, "`top.Input` needs a tensor result type");
                };
                let v = self.graph.add_value(loc.clone(), dtype, shape);
                self.graph.inputs.push(v);
                self.input_attrs.push(InputAttrs {
                    name: loc,
                    attrs: op.attrs.clone(),
                });
                self.bind(op, vec![v]);
                Ok(())
            }
            "top.Weight" => {
                let v = self.weight(op, &loc)?;
                self.bind(op, vec![v]);
                Ok(())
            }
            name if !super::ops::is_supported(name) => self.err(
                op.line,
                format!(
                    "unsupported op `{name}` (qtune runs the Top ops listed in docs/tpu-mlir-top-ops.md)"
                ),
            ),
            _ => self.compute_op(op, &names),
        }
    }

    fn bind(&mut self, op: &ParsedOp, values: Vec<ValueId>) {
        for (r, v) in op.results.iter().zip(values) {
            self.ssa.insert(r.clone(), Some(v));
        }
    }

    /// Adds a value typed from result `i`.
    pub(crate) fn result_value(
        &mut self,
        op: &ParsedOp,
        i: usize,
        name: &str,
    ) -> Result<ValueId, MlirError> {
        let (dtype, shape) = match op.result_types.get(i) {
            Some(t) => match type_parts(t) {
                Some(p) => p,
                None => return self.err(op.line, format!("unsupported result type {t:?}")),
            },
            None => return self.err(op.line, "missing result type"),
        };
        if self.graph.find_value(name).is_some() {
            return self.err(op.line, format!("the name `{name}` is used twice"));
        }
        Ok(self.graph.add_value(name.to_string(), dtype, shape))
    }

    fn compute_op(&mut self, op: &ParsedOp, names: &[String]) -> Result<(), MlirError> {
        let a = Attrs { list: &op.attrs };
        let loc = names.first().cloned().unwrap_or_default();
        let line = op.line;
        // Every Top op of an op family (`crate::families`).
        let Some(family) = crate::families::reading_top(&op.name, a.str("mode")) else {
            return self.err(line, format!("unsupported op `{}`", op.name));
        };
        let mut r = TopIn {
            b: self,
            op,
            a,
            loc: loc.clone(),
            line,
            inputs: Vec::new(),
            fuse_relu: false,
        };
        let node_op = (family.read_top)(&mut r)?;
        let (inputs, fuse_relu) = (r.inputs, r.fuse_relu);
        if names.len() != op.results.len() {
            return self.err(line, "result names do not match the results");
        }
        // `do_relu` stays on the op: the fused op is one op with one output,
        // named by its loc, as TPU-MLIR's tools see it.
        let relu = if fuse_relu {
            if op.results.len() != 1 {
                return self.err(line, "do_relu on a multi-result op");
            }
            Some(FusedRelu::from_limit(a.f64_or("relu_limit", -1.0)))
        } else {
            None
        };
        let outs: Vec<ValueId> = names
            .iter()
            .enumerate()
            .map(|(i, n)| self.result_value(op, i, n))
            .collect::<Result<_, _>>()?;
        self.graph
            .add_node_with_relu(loc, node_op, inputs, outs.clone(), relu);
        self.bind(op, outs);
        Ok(())
    }
}
