//! Shape-computing ops kept in float (spec sections 2.4 and 3.15,
//! `calibration/shape_ops.py: ShapeOps.run`).
//!
//! qtune runs this on the prepared graph, after constant folding. With
//! static input shapes every `Shape` op and what it feeds is folded away,
//! so for the workload models the list is empty; what remains (shape
//! arithmetic on dynamic data, integer casts) is listed. TopK and ArgMax
//! generators do not exist in the qtune IR yet; `Pack`, `Repeat`,
//! `GatherElements` and `Interp` have no IR op either (Resize plays
//! `Interp`'s role as a stop point). The data-movement ops take their role
//! from their registry entry ([`qtune_ir::movement::ShapeRole`]).

use qtune_ir::movement::ShapeRole;
use qtune_ir::{Graph, NodeId, Op};
use qtune_tensor::DType;

fn is_generator(op: &Op) -> bool {
    matches!(
        op,
        Op::Shape { .. }
            | Op::Cast {
                to: DType::I32 | DType::I8
            }
    )
}

fn shape_role(op: &Op) -> Option<ShapeRole> {
    op.movement().map(|s| s.shape_role)
}

fn is_stop(op: &Op) -> bool {
    matches!(op, Op::Resize(_) | Op::Cast { to: DType::F32 })
        || shape_role(op) == Some(ShapeRole::Stop)
}

fn is_transparent(op: &Op) -> bool {
    shape_role(op) == Some(ShapeRole::Transparent)
}

/// The op names (first output names) of the shape layers, in op order.
pub fn shape_layers(graph: &Graph) -> Vec<String> {
    let n = graph.node_count();
    let mut in_set = vec![false; n];
    for (id, node) in graph.nodes() {
        in_set[id.index()] = is_generator(&node.op);
    }
    if !in_set.iter().any(|&b| b) {
        return Vec::new();
    }
    let consumers = graph.consumers();
    let is_graph_output = |id: NodeId| {
        graph
            .node(id)
            .outputs
            .iter()
            .any(|o| graph.outputs.contains(o))
    };
    let producers_of = |id: NodeId| -> Vec<NodeId> {
        graph
            .node(id)
            .inputs
            .iter()
            .flatten()
            .filter(|v| graph.constant_of(**v).is_none())
            .filter_map(|v| graph.value(*v).producer)
            .collect()
    };
    loop {
        let mut changed = false;
        for s in 0..n {
            if !in_set[s] {
                continue;
            }
            let sid = NodeId::from_index(s);
            let outs: Vec<NodeId> = graph
                .node(sid)
                .outputs
                .iter()
                .flat_map(|o| consumers[o.index()].iter().copied())
                .collect();
            // Forward.
            if !is_graph_output(sid) {
                for &c in &outs {
                    if in_set[c.index()] {
                        continue;
                    }
                    let op = &graph.node(c).op;
                    let where_cond = matches!(op, Op::Where)
                        && graph
                            .node(c)
                            .inputs
                            .first()
                            .copied()
                            .flatten()
                            .and_then(|v| graph.value(v).producer)
                            == Some(sid);
                    if is_graph_output(c) || (!is_stop(op) && !where_cond && is_transparent(op)) {
                        in_set[c.index()] = true;
                        changed = true;
                    }
                }
            }
            // Backward.
            for p in producers_of(sid) {
                if !in_set[p.index()] && is_transparent(&graph.node(p).op) {
                    in_set[p.index()] = true;
                    changed = true;
                }
            }
            // Consumers whose every producer is a shape op.
            for &c in &outs {
                if in_set[c.index()] {
                    continue;
                }
                // Graph inputs are not shape ops.
                let all_shape = graph
                    .node(c)
                    .inputs
                    .iter()
                    .flatten()
                    .filter(|v| graph.constant_of(**v).is_none())
                    .all(|v| graph.value(*v).producer.is_some_and(|p| in_set[p.index()]));
                if all_shape {
                    in_set[c.index()] = true;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    graph
        .nodes()
        .filter(|(id, _)| in_set[id.index()])
        .filter_map(|(_, node)| node.outputs.first().map(|&o| graph.value(o).name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use qtune_tensor::Shape;

    /// x -> Shape -> Concat(., c) -> Reshape(x, .) -> Relu: Shape and Concat
    /// are shape layers, the Reshape (a stop point) is not.
    #[test]
    fn shape_chain_stops_at_reshape() {
        let mut g = Graph::new("t");
        let x = g.add_value("x", DType::F32, Some(Shape::new(vec![2, 3])));
        g.inputs.push(x);
        let s = g.add_value("s_Shape", DType::I64, Some(Shape::new(vec![2])));
        g.add_node(
            "s",
            Op::Shape {
                start: 0,
                end: None,
            },
            vec![Some(x)],
            vec![s],
        );
        let c = g.add_constant(
            "c",
            qtune_tensor::Tensor::from_i64(vec![1], vec![1]).unwrap(),
        );
        let cat = g.add_value("cat_Concat", DType::I64, Some(Shape::new(vec![3])));
        g.add_node(
            "cat",
            Op::Concat { axis: 0 },
            vec![Some(s), Some(c)],
            vec![cat],
        );
        let r = g.add_value("r_Reshape", DType::F32, Some(Shape::new(vec![2, 3, 1])));
        g.add_node(
            "r",
            Op::Reshape { allowzero: false },
            vec![Some(x), Some(cat)],
            vec![r],
        );
        let out = g.add_value("out_Relu", DType::F32, Some(Shape::new(vec![2, 3, 1])));
        g.add_node("out", Op::Relu, vec![Some(r)], vec![out]);
        g.outputs.push(out);
        assert_eq!(shape_layers(&g), vec!["s_Shape", "cat_Concat"]);
    }

    /// The data-movement ops take their role from their registry entry: a
    /// Tile is transparent (spec 3.15), a Transpose is not. Shape(x) is
    /// concatenated with Tile(i) and with Transpose(i) (`i` an integer
    /// input), each Concat feeding a Reshape of x: the Concats join forward,
    /// and backward from them the Tile joins, the Transpose does not.
    #[test]
    fn the_backward_rule_takes_a_tile_but_not_a_transpose() {
        let mut g = Graph::new("t");
        let x = g.add_value("x", DType::F32, Some(Shape::new(vec![2, 3])));
        let i = g.add_value("i", DType::I64, Some(Shape::new(vec![1])));
        g.inputs.extend([x, i]);
        let s = g.add_value("s_Shape", DType::I64, Some(Shape::new(vec![2])));
        g.add_node(
            "s",
            Op::Shape {
                start: 0,
                end: None,
            },
            vec![Some(x)],
            vec![s],
        );
        let reps = g.add_constant(
            "reps",
            qtune_tensor::Tensor::from_i64(vec![1], vec![1]).unwrap(),
        );
        let t = g.add_value("t_Tile", DType::I64, Some(Shape::new(vec![1])));
        g.add_node("t", Op::Tile, vec![Some(i), Some(reps)], vec![t]);
        let p = g.add_value("p_Transpose", DType::I64, Some(Shape::new(vec![1])));
        g.add_node(
            "p",
            Op::Transpose {
                perm: Some(vec![0]),
            },
            vec![Some(i)],
            vec![p],
        );
        for (k, other) in [(1, t), (2, p)] {
            let c = g.add_value(
                format!("c{k}_Concat"),
                DType::I64,
                Some(Shape::new(vec![3])),
            );
            g.add_node(
                format!("c{k}"),
                Op::Concat { axis: 0 },
                vec![Some(s), Some(other)],
                vec![c],
            );
            let r = g.add_value(
                format!("r{k}_Reshape"),
                DType::F32,
                Some(Shape::new(vec![2, 3, 1])),
            );
            g.add_node(
                format!("r{k}"),
                Op::Reshape { allowzero: false },
                vec![Some(x), Some(c)],
                vec![r],
            );
            let out = g.add_value(
                format!("o{k}_Relu"),
                DType::F32,
                Some(Shape::new(vec![2, 3, 1])),
            );
            g.add_node(format!("o{k}"), Op::Relu, vec![Some(r)], vec![out]);
            g.outputs.push(out);
        }
        assert_eq!(
            shape_layers(&g),
            vec!["s_Shape", "t_Tile", "c1_Concat", "c2_Concat"]
        );
    }

    #[test]
    fn no_generator_no_shape_layers() {
        let mut g = Graph::new("t");
        let x = g.add_value("x", DType::F32, Some(Shape::new(vec![2])));
        g.inputs.push(x);
        let y = g.add_value("y_Relu", DType::F32, Some(Shape::new(vec![2])));
        g.add_node("y", Op::Relu, vec![Some(x)], vec![y]);
        g.outputs.push(y);
        assert!(shape_layers(&g).is_empty());
    }
}
