//! The layers the searches talk about: nodes of the float graph named by
//! their first output (the Top op names of a `.mlir`), with the Top op
//! type TPU-MLIR prints (`top.Conv`, ...).

use qtune_deploy::Plan;
use qtune_ir::{Graph, NodeId};
use qtune_quant::QuantMode;

/// The Top dialect op type of a node, as TPU-MLIR's logs print it
/// (`top.Conv`, `top.AddConst`, ...): what the `.mlir` writer writes it as.
pub fn top_type(graph: &Graph, node: NodeId) -> String {
    qtune_ir::mlir::top_op_type(graph, node)
        .map(str::to_string)
        .unwrap_or_else(|| format!("top.{}", graph.node(node).op.op_type()))
}

/// A layer of the float graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub node: NodeId,
    /// The op name (first output).
    pub name: String,
    /// `top.Conv`, ...
    pub top_type: String,
}

/// The nodes of `graph` in op order, as layers.
pub fn layers(graph: &Graph) -> Vec<Layer> {
    graph
        .nodes()
        .filter_map(|(id, n)| {
            let first = *n.outputs.first()?;
            Some(Layer {
                node: id,
                name: graph.value(first).name.clone(),
                top_type: top_type(graph, id),
            })
        })
        .collect()
}

/// The layers `plan` runs in INT8: the candidates of the searches. The
/// others (chip float ops, qtable ops, non-float data) are the fixed float
/// layers.
pub fn int8_layers(graph: &Graph, plan: &Plan) -> Vec<Layer> {
    layers(graph)
        .into_iter()
        .filter(|l| plan.mode(l.node) == QuantMode::Int8)
        .collect()
}
