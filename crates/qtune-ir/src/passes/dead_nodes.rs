//! Removes nodes none of whose outputs reach a graph output.

use crate::Graph;

/// Removes dead nodes; returns how many were removed.
pub fn remove_dead_nodes(graph: &mut Graph) -> usize {
    let mut live = vec![false; graph.value_count()];
    for &o in &graph.outputs {
        live[o.index()] = true;
    }
    let mut keep = vec![false; graph.node_count()];
    let nodes: Vec<_> = graph
        .nodes()
        .map(|(id, n)| (id, n.outputs.clone(), n.inputs.clone()))
        .collect();
    for (id, outputs, inputs) in nodes.iter().rev() {
        if outputs.iter().any(|o| live[o.index()]) {
            keep[id.index()] = true;
            for i in inputs.iter().flatten() {
                live[i.index()] = true;
            }
        }
    }
    let before = graph.node_count();
    graph.retain_nodes(|id, _| keep[id.index()]);
    before - graph.node_count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Op;
    use qtune_tensor::{DType, Shape};

    #[test]
    fn drops_only_unreachable_nodes() {
        let mut g = Graph::new("t");
        let x = g.add_value("x", DType::F32, Some(Shape::new(vec![1])));
        g.inputs.push(x);
        let a = g.add_value("a", DType::F32, None);
        let b = g.add_value("b", DType::F32, None);
        let c = g.add_value("c", DType::F32, None);
        g.add_node("relu_a", Op::Relu, vec![Some(x)], vec![a]);
        g.add_node("relu_b", Op::Relu, vec![Some(x)], vec![b]);
        g.add_node("relu_c", Op::Relu, vec![Some(a)], vec![c]);
        g.outputs.push(c);
        assert_eq!(remove_dead_nodes(&mut g), 1);
        let names: Vec<_> = g.nodes().map(|(_, n)| n.name.clone()).collect();
        assert_eq!(names, ["relu_a", "relu_c"]);
        assert_eq!(g.value(c).producer.map(|p| p.index()), Some(1));
        assert!(g.value(b).producer.is_none());
    }
}
