//! Small graph queries and edits shared by the canonicalization rules.

use qtune_tensor::{DType, Tensor};

use crate::{Graph, Node, NodeId, Op, ValueId};

/// The readers of every value, computed once per rule.
pub(super) struct Readers {
    /// For each value, the nodes that read it (a node once, however many of
    /// its inputs it is).
    nodes: Vec<Vec<NodeId>>,
    /// For each value, how many node inputs and graph outputs read it.
    uses: Vec<usize>,
}

impl Readers {
    pub(super) fn new(g: &Graph) -> Self {
        Readers {
            nodes: g.consumers(),
            uses: g.use_counts(),
        }
    }

    /// The one node that reads `v`, reading it once, when `v` is not a
    /// graph output (TPU-MLIR's `hasOneUse`).
    pub(super) fn only_reader(&self, v: ValueId) -> Option<NodeId> {
        match self.nodes[v.index()].as_slice() {
            [n] if self.uses[v.index()] == 1 => Some(*n),
            _ => None,
        }
    }

    pub(super) fn readers(&self, v: ValueId) -> &[NodeId] {
        &self.nodes[v.index()]
    }

    pub(super) fn uses(&self, v: ValueId) -> usize {
        self.uses[v.index()]
    }
}

/// Input `i` of a node, when present.
pub(super) fn input(n: &Node, i: usize) -> Option<ValueId> {
    n.inputs.get(i).copied().flatten()
}

/// The node producing `v` and its op.
pub(super) fn producer(g: &Graph, v: Option<ValueId>) -> Option<(NodeId, &Node)> {
    let id = g.value(v?).producer?;
    Some((id, g.node(id)))
}

/// The value of a float32 constant whose elements are all equal (TPU-MLIR's
/// `isScalar`: one element, or any shape with one value).
pub(super) fn uniform_const(g: &Graph, v: Option<ValueId>) -> Option<f32> {
    let t = g.constant_of(v?)?;
    if t.dtype() != DType::F32 {
        return None;
    }
    let data = t.as_f32().ok()?;
    let first = *data.first()?;
    data.iter()
        .all(|x| x.to_bits() == first.to_bits())
        .then_some(first)
}

/// A float32 constant with exactly this value everywhere.
pub(super) fn is_const(g: &Graph, v: Option<ValueId>, value: f32) -> bool {
    uniform_const(g, v) == Some(value)
}

/// Whether broadcasting `c` against `x` leaves `x`'s shape unchanged, so a
/// constant operand can become an attribute without changing the output.
pub(super) fn broadcasts_into(g: &Graph, x: ValueId, c: ValueId) -> bool {
    let (Some(xs), Some(cs)) = (g.value(x).shape.as_ref(), g.value(c).shape.as_ref()) else {
        return false;
    };
    crate::broadcast_shapes(xs.dims(), cs.dims()).as_deref() == Some(xs.dims())
}

/// For a binary node, `(other, constant)` when exactly one input is a
/// uniform constant and the other is computed.
pub(super) fn with_uniform_const(g: &Graph, n: &Node) -> Option<(ValueId, ValueId, f32)> {
    let (a, b) = (input(n, 0)?, input(n, 1)?);
    match (uniform_const(g, Some(a)), uniform_const(g, Some(b))) {
        (None, Some(c)) if g.constant_of(a).is_none() => Some((a, b, c)),
        (Some(c), None) if g.constant_of(b).is_none() => Some((b, a, c)),
        _ => None,
    }
}

/// Whether `n` is a binary op of type `op` reading `x` and a constant equal
/// to `value` (in either order when `commutative`).
pub(super) fn binary_with_const(
    g: &Graph,
    n: &Node,
    op: &Op,
    x: ValueId,
    value: f32,
    commutative: bool,
) -> bool {
    if std::mem::discriminant(&n.op) != std::mem::discriminant(op) || n.relu.is_some() {
        return false;
    }
    let (a, b) = (input(n, 0), input(n, 1));
    (a == Some(x) && is_const(g, b, value))
        || (commutative && b == Some(x) && is_const(g, a, value))
}

/// The bounds of a Clip with constant (or attribute) bounds.
pub(super) fn clip_bounds(g: &Graph, n: &Node) -> Option<(f32, f32)> {
    let Op::Clip(a) = &n.op else { return None };
    let bound = |attr: Option<f32>, i: usize, default: f32| -> Option<f32> {
        match (attr, input(n, i)) {
            (Some(v), _) => Some(v),
            (None, None) => Some(default),
            (None, Some(v)) => g.constant_of(v)?.to_f32_vec().first().copied(),
        }
    };
    Some((
        bound(a.min, 1, f32::NEG_INFINITY)?,
        bound(a.max, 2, f32::INFINITY)?,
    ))
}

/// Points every reader of `old` (node inputs and graph outputs) at `new`.
pub(crate) fn replace_uses(g: &mut Graph, old: ValueId, new: ValueId) {
    let ids: Vec<NodeId> = g.nodes().map(|(id, _)| id).collect();
    for id in ids {
        for i in &mut g.node_mut(id).inputs {
            if *i == Some(old) {
                *i = Some(new);
            }
        }
    }
    for o in &mut g.outputs {
        if *o == old {
            *o = new;
        }
    }
}

/// Adds a constant under an unused name derived from `base`.
pub(super) fn add_const(g: &mut Graph, base: &str, t: Tensor) -> ValueId {
    let name = unused_name(g, base);
    g.add_constant(name, t)
}

/// A 1-D int64 tensor.
pub(super) fn i64_tensor(data: Vec<i64>) -> Tensor {
    let n = data.len();
    Tensor::new(
        vec![n],
        qtune_tensor::TensorData::I64(std::sync::Arc::new(data)),
    )
    .unwrap_or_else(|_| unreachable!("a 1-D shape of the data's length"))
}

/// `base`, or `base_1`, `base_2`, ... when taken.
pub(super) fn unused_name(g: &Graph, base: &str) -> String {
    let mut name = base.to_string();
    let mut k = 1;
    while g.find_value(&name).is_some() {
        name = format!("{base}_{k}");
        k += 1;
    }
    name
}

/// Removes the nodes marked dead, keeping the order of the others.
pub(super) fn sweep(g: &mut Graph, dead: &[bool]) {
    g.retain_nodes(|id, _| !dead.get(id.index()).copied().unwrap_or(false));
}
