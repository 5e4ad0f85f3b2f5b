use std::collections::HashMap;

use qtune_tensor::{DType, Shape, Tensor};

use crate::{IrError, NodeId, Op, ValueId};

/// An edge of the graph: a tensor with the name it had in the source model.
#[derive(Debug, Clone)]
pub struct Value {
    pub name: String,
    pub dtype: DType,
    /// Known after shape inference; graph inputs always have one.
    pub shape: Option<Shape>,
    /// The node that computes it; `None` for graph inputs and constants.
    pub producer: Option<NodeId>,
    /// Set for initializers, Constant nodes and folded values.
    pub constant: Option<Tensor>,
}

/// TPU-MLIR's `do_relu` / `relu_limit`: the op's (only) output goes through
/// a Relu, capped at `limit` when there is one (`Clip(0, limit)`). TPU-MLIR
/// fuses a Relu (or `Clip(0, max)`) into the op before it this way, and the
/// fused op is one op with one output: the value before the Relu does not
/// exist in the graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedRelu {
    /// `relu_limit` when positive; `None` for a plain Relu (TPU-MLIR prints
    /// `relu_limit = -1.0` then).
    pub limit: Option<f32>,
}

impl FusedRelu {
    /// A plain Relu.
    pub const RELU: FusedRelu = FusedRelu { limit: None };

    /// From TPU-MLIR's attribute: a limit that is not positive means none.
    pub fn from_limit(limit: f64) -> FusedRelu {
        #[allow(clippy::cast_possible_truncation)]
        let l = limit as f32;
        FusedRelu {
            limit: (limit > 0.0 && l.is_finite()).then_some(l),
        }
    }

    /// TPU-MLIR's `relu_limit` attribute value (`-1.0` for none).
    pub fn limit_attr(self) -> f64 {
        self.limit.map_or(-1.0, f64::from)
    }

    /// The upper bound (`+inf` without a limit).
    pub fn upper(self) -> f32 {
        self.limit.unwrap_or(f32::INFINITY)
    }

    /// Applies the activation to one value (NaN stays NaN, as with `Clip`).
    pub fn apply(self, x: f32) -> f32 {
        if x < 0.0 {
            0.0
        } else if x > self.upper() {
            self.upper()
        } else {
            x
        }
    }
}

/// An operator application.
#[derive(Debug, Clone)]
pub struct Node {
    /// The ONNX node name, or `<first output>_<OpType>` when the model left it
    /// empty; a `.mlir` op's loc name.
    pub name: String,
    pub op: Op,
    /// `None` marks an omitted optional input (ONNX's empty name).
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    /// A Relu fused into the op (TPU-MLIR's `do_relu`); see [`FusedRelu`].
    /// Only single-output float ops carry one.
    pub relu: Option<FusedRelu>,
}

/// A computation graph with nodes in topological order.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub name: String,
    values: Vec<Value>,
    nodes: Vec<Node>,
    /// Graph inputs (non-constant), in model order.
    pub inputs: Vec<ValueId>,
    /// Graph outputs, in model order.
    pub outputs: Vec<ValueId>,
    by_name: HashMap<String, ValueId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a value; names are unique, so adding an existing name returns
    /// the existing id unchanged.
    pub fn add_value(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: Option<Shape>,
    ) -> ValueId {
        let name = name.into();
        if let Some(&id) = self.by_name.get(&name) {
            return id;
        }
        let id = ValueId::from_index(self.values.len());
        self.by_name.insert(name.clone(), id);
        self.values.push(Value {
            name,
            dtype,
            shape,
            producer: None,
            constant: None,
        });
        id
    }

    pub fn add_constant(&mut self, name: impl Into<String>, tensor: Tensor) -> ValueId {
        let id = self.add_value(name, tensor.dtype(), Some(tensor.shape().clone()));
        let v = &mut self.values[id.index()];
        v.dtype = tensor.dtype();
        v.shape = Some(tensor.shape().clone());
        v.constant = Some(tensor);
        id
    }

    /// Appends a node; it must come after the producers of its inputs.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<ValueId>,
    ) -> NodeId {
        let id = NodeId::from_index(self.nodes.len());
        for &o in &outputs {
            self.values[o.index()].producer = Some(id);
        }
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
            outputs,
            relu: None,
        });
        id
    }

    /// Appends a node like [`Graph::add_node`], with a fused Relu.
    pub fn add_node_with_relu(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<ValueId>,
        relu: Option<FusedRelu>,
    ) -> NodeId {
        let id = self.add_node(name, op, inputs, outputs);
        self.nodes[id.index()].relu = relu;
        id
    }

    /// Renames a value. Names are unique: when `name` is taken by another
    /// value, `_1`, `_2`, ... is appended; returns the name given.
    pub fn rename_value(&mut self, id: ValueId, name: &str) -> String {
        if self.values[id.index()].name == name {
            return name.to_string();
        }
        let mut new = name.to_string();
        let mut n = 1;
        while self.by_name.contains_key(&new) {
            new = format!("{name}_{n}");
            n += 1;
        }
        let old = std::mem::replace(&mut self.values[id.index()].name, new.clone());
        self.by_name.remove(&old);
        self.by_name.insert(new.clone(), id);
        new
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.index()]
    }
    pub fn value_mut(&mut self, id: ValueId) -> &mut Value {
        &mut self.values[id.index()]
    }
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }
    pub fn values(&self) -> impl Iterator<Item = (ValueId, &Value)> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (ValueId::from_index(i), v))
    }
    pub fn value_count(&self) -> usize {
        self.values.len()
    }
    /// Nodes in topological (execution) order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (NodeId::from_index(i), n))
    }
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
    /// Renames value `id` to `name`, which no other value may hold.
    pub fn rename_value_exact(&mut self, id: ValueId, name: &str) -> Result<(), IrError> {
        match self.by_name.get(name) {
            Some(&other) if other == id => return Ok(()),
            Some(_) => return Err(IrError::DuplicateValue(name.to_string())),
            None => {}
        }
        let old = std::mem::replace(&mut self.values[id.index()].name, name.to_string());
        if self.by_name.get(&old) == Some(&id) {
            self.by_name.remove(&old);
        }
        self.by_name.insert(name.to_string(), id);
        Ok(())
    }
    pub fn find_value(&self, name: &str) -> Option<ValueId> {
        self.by_name.get(name).copied()
    }
    pub fn value_by_name(&self, name: &str) -> Result<ValueId, IrError> {
        self.find_value(name)
            .ok_or_else(|| IrError::NoSuchValue(name.to_string()))
    }
    pub fn shape_of(&self, id: ValueId) -> Result<&Shape, IrError> {
        let v = self.value(id);
        v.shape
            .as_ref()
            .ok_or_else(|| IrError::UnknownShape(v.name.clone()))
    }
    pub fn constant_of(&self, id: ValueId) -> Option<&Tensor> {
        self.value(id).constant.as_ref()
    }

    /// Checks that every node reads only graph inputs, constants, or values
    /// produced by an earlier node.
    pub fn check_topological(&self) -> Result<(), IrError> {
        let mut ready = vec![false; self.values.len()];
        for (i, v) in self.values.iter().enumerate() {
            ready[i] = v.constant.is_some();
        }
        for &i in &self.inputs {
            ready[i.index()] = true;
        }
        for n in &self.nodes {
            if n.inputs.iter().flatten().any(|i| !ready[i.index()]) {
                return Err(IrError::NotTopological(n.name.clone()));
            }
            for o in &n.outputs {
                ready[o.index()] = true;
            }
        }
        Ok(())
    }

    /// Rebuilds the node list keeping only the nodes `keep` says yes to,
    /// in order, and re-links producers. Values are kept (ids stay valid).
    pub fn retain_nodes(&mut self, mut keep: impl FnMut(NodeId, &Node) -> bool) {
        let old = std::mem::take(&mut self.nodes);
        for v in &mut self.values {
            v.producer = None;
        }
        for (i, n) in old.into_iter().enumerate() {
            if keep(NodeId::from_index(i), &n) {
                let id = NodeId::from_index(self.nodes.len());
                for &o in &n.outputs {
                    self.values[o.index()].producer = Some(id);
                }
                self.nodes.push(n);
            }
        }
    }

    /// Moves `nodes` (in the given order) to just after `after`, keeping the
    /// order of every other node, and re-links producers. The caller keeps
    /// the order topological (the moved nodes must only read values
    /// produced up to `after`). Node ids change.
    pub fn move_nodes_after(&mut self, nodes: &[NodeId], after: NodeId) {
        if nodes.is_empty() {
            return;
        }
        let mut moved = vec![false; self.nodes.len()];
        for n in nodes {
            moved[n.index()] = true;
        }
        let mut old: Vec<Option<Node>> = std::mem::take(&mut self.nodes)
            .into_iter()
            .map(Some)
            .collect();
        let mut order = Vec::with_capacity(old.len());
        for (i, &was_moved) in moved.iter().enumerate().take(old.len()) {
            if was_moved {
                continue;
            }
            order.push(i);
            if i == after.index() {
                order.extend(nodes.iter().map(|n| n.index()));
            }
        }
        for v in &mut self.values {
            v.producer = None;
        }
        for i in order {
            if let Some(n) = old[i].take() {
                let id = NodeId::from_index(self.nodes.len());
                for &o in &n.outputs {
                    self.values[o.index()].producer = Some(id);
                }
                self.nodes.push(n);
            }
        }
    }

    /// How many node inputs and graph outputs read each value.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0usize; self.values.len()];
        for n in &self.nodes {
            for i in n.inputs.iter().flatten() {
                uses[i.index()] += 1;
            }
        }
        for o in &self.outputs {
            uses[o.index()] += 1;
        }
        uses
    }

    /// The nodes that read each value.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut cons = vec![Vec::new(); self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for v in n.inputs.iter().flatten() {
                let list: &mut Vec<NodeId> = &mut cons[v.index()];
                let id = NodeId::from_index(i);
                if list.last() != Some(&id) {
                    list.push(id);
                }
            }
        }
        cons
    }
}
