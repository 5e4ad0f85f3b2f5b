//! TPU-MLIR's op names (spec 5.3): its ONNX converter names every op
//! `<first output tensor>_<ONNX op type>` (`474_Conv`), and its tools use
//! that loc as the name of the op and of the tensor it produces:
//! calibration tables, qtables and npz dumps are keyed by it. Graph inputs
//! keep their names; weights keep their initializer names.

use crate::Graph;

/// Renames every computed value (and its node) to TPU-MLIR's op name: each
/// output of a node becomes `<tensor>_<op type>`, where the op type is the
/// node's ONNX op type. Run it once, on a graph imported from ONNX and
/// before canonicalization (a fused op then keeps the name of its last
/// member, as TPU-MLIR's canonicalizers do). Returns how many values were
/// renamed.
pub fn name_as_top_ops(graph: &mut Graph) -> usize {
    let mut renamed = 0;
    let nodes: Vec<_> = graph
        .nodes()
        .map(|(id, n)| {
            (
                id,
                super::canonical::top_name_suffix(&n.op),
                n.outputs.clone(),
            )
        })
        .collect();
    for (id, op_type, outputs) in nodes {
        let mut first = None;
        for o in outputs {
            let name = format!("{}_{op_type}", graph.value(o).name);
            let given = graph.rename_value(o, &name);
            first.get_or_insert(given);
            renamed += 1;
        }
        if let Some(name) = first {
            graph.node_mut(id).name = name;
        }
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;
    use qtune_tensor::{DType, Shape};

    #[test]
    fn outputs_take_the_op_type_and_names_stay_unique() {
        let mut g = Graph::new("t");
        let x = g.add_value("x", DType::F32, Some(Shape(vec![1, 4])));
        g.inputs.push(x);
        // A tensor already called `y_Relu` must not be taken by the rename.
        let y = g.add_value("y", DType::F32, None);
        let taken = g.add_value("y_Relu", DType::F32, None);
        g.add_node("relu0", Op::Relu, vec![Some(x)], vec![y]);
        g.add_node("sig", Op::Sigmoid, vec![Some(y)], vec![taken]);
        g.outputs.push(taken);
        assert_eq!(name_as_top_ops(&mut g), 2);
        assert_eq!(g.value(x).name, "x");
        // Nodes are renamed in order: `y` becomes `y_Relu_1` only if the
        // other value held the name first.
        let names: Vec<&str> = [y, taken]
            .iter()
            .map(|&v| g.value(v).name.as_str())
            .collect();
        assert_eq!(names, ["y_Relu_1", "y_Relu_Sigmoid"]);
        let node_names: Vec<&str> = g.nodes().map(|(_, n)| n.name.as_str()).collect();
        assert_eq!(node_names, ["y_Relu_1", "y_Relu_Sigmoid"]);
        assert_eq!(g.find_value("y_Relu_1"), Some(y));
        assert_eq!(g.find_value("y"), None);
    }
}
