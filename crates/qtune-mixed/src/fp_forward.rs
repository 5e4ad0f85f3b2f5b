//! `fp_forward`: the layers to keep in float before, after or between named
//! ops (spec section 1.2, TPU-MLIR's `utils/fp_layer_search.py`).
//!
//! Ops are the graph inputs (`top.Input`) and the nodes, named by their
//! first output (the Top op names of a `.mlir`). An edge A -> B exists when
//! B reads an output of A.
//!
//! * inputs: the op, its direct predecessors (graph inputs included), then
//!   every further ancestor that has predecessors of its own (TPU-MLIR's
//!   walk skips graph inputs beyond the first level; kept as is).
//! * outputs: the op and every descendant.
//! * blocks `s1,s2:e1,e2`: (ancestors-closure of the ends) intersected with
//!   (descendants-closure of the starts) — the ops on paths from a start to
//!   an end, both included.
//!
//! TPU-MLIR returns a Python set, so its file order is arbitrary; qtune
//! lists the layers in op order (graph inputs first), which makes the file
//! reproducible.

use std::collections::VecDeque;

use qtune_ir::{Graph, NodeId, ValueId};

/// An op of the `fp_forward` graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpRef {
    Input(usize),
    Node(NodeId),
}

struct OpGraph {
    names: Vec<String>,
    preds: Vec<Vec<usize>>,
    succs: Vec<Vec<usize>>,
}

impl OpGraph {
    fn new(graph: &Graph) -> Self {
        let mut ops = Vec::new();
        let mut names = Vec::new();
        let mut of_value: Vec<Option<usize>> = vec![None; graph.value_count()];
        for (i, &v) in graph.inputs.iter().enumerate() {
            of_value[v.index()] = Some(ops.len());
            ops.push(OpRef::Input(i));
            names.push(graph.value(v).name.clone());
        }
        for (id, n) in graph.nodes() {
            let Some(&first) = n.outputs.first() else {
                continue;
            };
            for &o in &n.outputs {
                of_value[o.index()] = Some(ops.len());
            }
            ops.push(OpRef::Node(id));
            names.push(graph.value(first).name.clone());
        }
        let mut preds = vec![Vec::new(); ops.len()];
        let mut succs = vec![Vec::new(); ops.len()];
        for (i, op) in ops.iter().enumerate() {
            let OpRef::Node(id) = *op else { continue };
            let inputs: Vec<ValueId> = graph.node(id).inputs.iter().flatten().copied().collect();
            for v in inputs {
                if let Some(p) = of_value[v.index()]
                    && !preds[i].contains(&p)
                {
                    preds[i].push(p);
                    succs[p].push(i);
                }
            }
        }
        OpGraph {
            names,
            preds,
            succs,
        }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    fn ancestors(&self, op: usize) -> Vec<bool> {
        let mut mark = vec![false; self.names.len()];
        mark[op] = true;
        let mut queue = VecDeque::new();
        for &p in &self.preds[op] {
            mark[p] = true;
            queue.push_back(p);
        }
        while let Some(x) = queue.pop_front() {
            for &p in &self.preds[x] {
                if !mark[p] && !self.preds[p].is_empty() {
                    mark[p] = true;
                    queue.push_back(p);
                }
            }
        }
        mark
    }

    fn descendants(&self, op: usize) -> Vec<bool> {
        let mut mark = vec![false; self.names.len()];
        mark[op] = true;
        let mut queue = VecDeque::from([op]);
        while let Some(x) = queue.pop_front() {
            for &s in &self.succs[x] {
                if !mark[s] {
                    mark[s] = true;
                    queue.push_back(s);
                }
            }
        }
        mark
    }
}

/// The layers `fp_forward` keeps in float, in op order, and a warning per
/// name that is not an op of the model (TPU-MLIR's wording).
pub fn fp_forward_layers(
    graph: &Graph,
    inputs: &[String],
    outputs: &[String],
    blocks: &[(Vec<String>, Vec<String>)],
) -> (Vec<String>, Vec<String>) {
    let g = OpGraph::new(graph);
    let n = g.names.len();
    let mut chosen = vec![false; n];
    let mut warnings = Vec::new();
    let mut lookup = |name: &str| {
        let found = g.find(name);
        if found.is_none() {
            warnings.push(format!(
                "warning, op: {name} not found in mlir file, please check it again"
            ));
        }
        found
    };
    let or_into = |acc: &mut [bool], m: &[bool]| {
        for (a, &b) in acc.iter_mut().zip(m) {
            *a |= b;
        }
    };
    for name in inputs {
        if let Some(op) = lookup(name) {
            or_into(&mut chosen, &g.ancestors(op));
        }
    }
    for name in outputs {
        if let Some(op) = lookup(name) {
            or_into(&mut chosen, &g.descendants(op));
        }
    }
    for (starts, ends) in blocks {
        let mut down = vec![false; n];
        for s in starts {
            if let Some(op) = lookup(s) {
                or_into(&mut down, &g.descendants(op));
            }
        }
        let mut up = vec![false; n];
        for e in ends {
            if let Some(op) = lookup(e) {
                or_into(&mut up, &g.ancestors(op));
            }
        }
        for i in 0..n {
            chosen[i] |= down[i] && up[i];
        }
    }
    let layers = (0..n)
        .filter(|&i| chosen[i])
        .map(|i| g.names[i].clone())
        .collect();
    (layers, warnings)
}

/// Parses one `--fpfwd_blocks` item, `s1,s2:e1,e2`.
pub fn parse_block(item: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let (s, e) = item.split_once(':').ok_or_else(|| {
        format!("--fpfwd_blocks `{item}`: expected starts:ends, e.g. 474_Conv:622_Conv")
    })?;
    let list = |t: &str| -> Vec<String> {
        t.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    let (starts, ends) = (list(s), list(e));
    if starts.is_empty() || ends.is_empty() {
        return Err(format!(
            "--fpfwd_blocks `{item}`: both the starts and the ends need an op name"
        ));
    }
    Ok((starts, ends))
}

/// The file `fp_forward` writes (spec 2.2.2); `time: None` leaves the time
/// line out.
pub fn fp_forward_table(time: Option<&str>, chip: &str, mode: &str, layers: &[String]) -> String {
    let mut s = String::new();
    if let Some(t) = time {
        s.push_str(&format!("# genetated time: {t}\n"));
    }
    s.push_str(&format!("# chip: {chip}  mix_mode: {mode}\n"));
    s.push_str(&format!("# number of {mode} layer: {}\n", layers.len()));
    s.push_str("###\n# op_name   quantize_mode\n");
    for l in layers {
        s.push_str(&format!("{l} {mode}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use qtune_ir::Op;
    use qtune_tensor::{DType, Shape};

    /// x -> a -> b -> d
    ///        \-> c -/
    /// y ----------> d ... and d -> e
    fn diamond() -> Graph {
        let mut g = Graph::new("d");
        let shape = Some(Shape(vec![1, 4]));
        let x = g.add_value("x", DType::F32, shape.clone());
        let y = g.add_value("y", DType::F32, shape.clone());
        g.inputs = vec![x, y];
        let node = |g: &mut Graph, name: &str, inputs: &[ValueId]| {
            let v = g.add_value(name, DType::F32, shape.clone());
            g.add_node(
                name,
                Op::Add,
                inputs.iter().map(|&i| Some(i)).collect(),
                vec![v],
            );
            v
        };
        let a = node(&mut g, "a", &[x, x]);
        let b = node(&mut g, "b", &[a, a]);
        let c = node(&mut g, "c", &[a, a]);
        let d = node(&mut g, "d", &[b, c]);
        let d2 = node(&mut g, "d2", &[d, y]);
        let e = node(&mut g, "e", &[d2, d2]);
        g.outputs = vec![e];
        g
    }

    fn names(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    #[test]
    fn inputs_outputs_and_blocks() {
        let g = diamond();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // Ancestors of d2: d2, its direct preds d and the graph input y, then
        // b, c, a; x is a graph input beyond the first level and is skipped.
        let (l, w) = fp_forward_layers(&g, &s(&["d2"]), &[], &[]);
        assert!(w.is_empty());
        assert_eq!(names(&l), ["y", "a", "b", "c", "d", "d2"]);
        let (l, _) = fp_forward_layers(&g, &[], &s(&["b"]), &[]);
        assert_eq!(names(&l), ["b", "d", "d2", "e"]);
        let block = parse_block("a:d").unwrap();
        let (l, _) = fp_forward_layers(&g, &[], &[], &[block]);
        assert_eq!(names(&l), ["a", "b", "c", "d"]);
        let (l, w) = fp_forward_layers(&g, &s(&["nope"]), &[], &[]);
        assert!(l.is_empty());
        assert_eq!(
            w,
            ["warning, op: nope not found in mlir file, please check it again"]
        );
        assert!(parse_block("a").is_err());
        assert!(parse_block(":d").is_err());
    }

    #[test]
    fn table_layout() {
        let t = fp_forward_table(None, "bm1684x", "F16", &["a".into(), "b".into()]);
        assert_eq!(
            t,
            "# chip: bm1684x  mix_mode: F16\n# number of F16 layer: 2\n###\n# op_name   quantize_mode\na F16\nb F16\n"
        );
    }
}
