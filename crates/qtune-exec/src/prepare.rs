//! Turns an imported graph into an executable one, in one topological pass:
//! each node's output shapes are inferred, and a node whose inputs are all
//! constants (including `Shape` of a statically shaped value) is evaluated
//! once and replaced by its constant outputs. This folds the
//! shape-computing subgraphs that exporters emit. Dead nodes are removed
//! last, and optionally BatchNormalization is folded into Conv.

use qtune_ir::{Graph, NodeId, Op, infer_node, passes};
use qtune_kernels::Parallelism;

use crate::ExecError;
use crate::eval::eval_node;

/// Options of [`prepare`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PrepareOptions {
    /// Fold inference BatchNormalization into the preceding Conv. The folded
    /// Conv writes the BatchNormalization's output tensor, so tensor names
    /// used by tables are kept, but the Conv's own output disappears.
    pub fold_batchnorm: bool,
}

/// What [`prepare`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrepareReport {
    pub folded_nodes: usize,
    pub dead_nodes: usize,
    pub folded_batchnorms: usize,
}

/// Infers every shape and folds constants; see the module docs.
pub fn prepare(
    mut graph: Graph,
    opts: &PrepareOptions,
) -> Result<(Graph, PrepareReport), ExecError> {
    graph.check_topological()?;
    // Declared input shapes come from the model file (or --input_shapes):
    // a crafted one must not reach preprocessing or the executor's buffers.
    for &i in &graph.inputs {
        let v = graph.value(i);
        if let Some(shape) = &v.shape {
            let what = || format!("graph input `{}`", v.name);
            qtune_tensor::check_shape(&what, shape.dims(), v.dtype)?;
        }
    }
    let mut report = PrepareReport::default();
    let mut folded = vec![false; graph.node_count()];
    for (i, is_folded) in folded.iter_mut().enumerate() {
        let id = NodeId::from_index(i);
        let outs = infer_node(&graph, id)?;
        let node = graph.node(id);
        if outs.len() != node.outputs.len() {
            return Err(ExecError::Node {
                node: node.name.clone(),
                op: node.op.op_type(),
                message: format!(
                    "has {} outputs, the op produces {}",
                    node.outputs.len(),
                    outs.len()
                ),
            });
        }
        let out_ids = node.outputs.clone();
        for (&o, inferred) in out_ids.iter().zip(&outs) {
            let v = graph.value_mut(o);
            v.shape = Some(inferred.shape.clone());
            v.dtype = inferred.dtype;
        }
        let node = graph.node(id);
        let foldable = match node.op {
            Op::Shape { .. } => true,
            _ => node
                .inputs
                .iter()
                .flatten()
                .all(|v| graph.constant_of(*v).is_some()),
        };
        if foldable && !out_ids.iter().any(|o| graph.outputs.contains(o)) {
            let inputs = node
                .inputs
                .iter()
                .map(|i| i.and_then(|v| graph.constant_of(v).cloned()))
                .collect();
            let tensors = eval_node(&graph, id, inputs, Parallelism::Sequential)?;
            for (o, t) in out_ids.iter().zip(tensors) {
                graph.value_mut(*o).constant = Some(t);
            }
            *is_folded = true;
            report.folded_nodes += 1;
        }
    }
    graph.retain_nodes(|id, _| !folded[id.index()]);
    if opts.fold_batchnorm {
        report.folded_batchnorms = passes::fold_batchnorm_into_conv(&mut graph);
    }
    report.dead_nodes = passes::remove_dead_nodes(&mut graph);
    Ok((graph, report))
}

/// TPU-MLIR's canonical Top graph of an imported ONNX model, as
/// `model_transform` writes it: [`prepare`] (constants folded, shapes
/// inferred), then [`qtune_ir::passes::canonicalize`] (fused ops, TPU-MLIR op
/// names), then [`prepare`] again for the values the rewrites created.
pub fn prepare_top(graph: Graph) -> Result<(Graph, qtune_ir::passes::CanonicalReport), ExecError> {
    let (mut graph, _) = prepare(graph, &PrepareOptions::default())?;
    let report = passes::canonicalize(&mut graph);
    let (graph, _) = prepare(graph, &PrepareOptions::default())?;
    Ok((graph, report))
}
