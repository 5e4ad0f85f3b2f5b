//! `--transformer True`: the float layers TPU-MLIR's MatchPattern gives a
//! BERT-class transformer (spec 3.13, `calibration/transformer_pattern.py`,
//! the generic rule plus the bert block's addition):
//!
//! * an Add whose output is the only op input of a LayerNorm (the residual
//!   adds: they carry the outlier channels, hundreds against most values
//!   below 2, that no per-tensor int8 grid holds);
//! * every GELU and SiLU;
//! * the MatMul that reads a GELU (the FFN down projection; TPU-MLIR adds it
//!   for its bert blocks);
//! * a Reshape between two of these (see below).
//!
//! TPU-MLIR applies these only when the op-type string of the model
//! contains one of its block signatures, and always (run_calibration writes
//! them to its qtable). qtune applies them when `--transformer True` asks
//! for them, on the graph structure alone: its canonical graph differs from
//! TPU-MLIR's in ops that do not change the rule (a Reshape between the
//! FFN MatMul and its residual Add), so a byte-for-byte type-string match
//! would miss models TPU-MLIR matches.

use qtune_ir::Graph;

use crate::top_type;

/// The pattern layers of `graph` (op names, in op order, no duplicates).
pub fn transformer_pattern_layers(graph: &Graph) -> Vec<String> {
    let consumers = graph.consumers();
    let mut out: Vec<String> = Vec::new();
    let mut push = |name: String| {
        if !out.contains(&name) {
            out.push(name);
        }
    };
    let name_of = |id: qtune_ir::NodeId| -> Option<String> {
        let first = *graph.node(id).outputs.first()?;
        Some(graph.value(first).name.clone())
    };
    for (id, n) in graph.nodes() {
        let t = top_type(graph, id);
        match t.as_str() {
            "top.LayerNorm" => {
                // The producers of its non-constant inputs (the "pre ops").
                let mut pre: Vec<qtune_ir::NodeId> = Vec::new();
                for v in n.inputs.iter().flatten() {
                    let val = graph.value(*v);
                    if val.constant.is_some() {
                        continue;
                    }
                    if let Some(p) = val.producer
                        && !pre.contains(&p)
                    {
                        pre.push(p);
                    }
                }
                if let [p] = pre[..]
                    && top_type(graph, p) == "top.Add"
                    && let Some(name) = name_of(p)
                {
                    push(name);
                }
            }
            "top.GELU" | "top.SiLU" => {
                if let Some(name) = name_of(id) {
                    push(name);
                }
                if t == "top.GELU"
                    && let Some(&o) = n.outputs.first()
                    && let Some(&next) = consumers[o.index()].first()
                    && top_type(graph, next) == "top.MatMul"
                    && let Some(name) = name_of(next)
                {
                    push(name);
                }
            }
            _ => {}
        }
    }
    // qtune's canonical graph keeps a Reshape between the FFN down MatMul
    // ([S, 1536] x [1536, 384]) and its residual Add ([1, S, 384]), which
    // TPU-MLIR's graph does not have: left int8 between two float ops it
    // would quantize the very tensor the pattern keeps in float. Shape-only
    // ops whose producer and readers are all pattern layers follow them.
    loop {
        let mut added = false;
        for (id, n) in graph.nodes() {
            if !matches!(
                top_type(graph, id).as_str(),
                "top.Reshape" | "top.Squeeze" | "top.Unsqueeze"
            ) {
                continue;
            }
            let Some(name) = name_of(id) else { continue };
            if out.contains(&name) {
                continue;
            }
            let from_pattern = n.inputs.first().copied().flatten().is_some_and(|v| {
                graph
                    .value(v)
                    .producer
                    .and_then(name_of)
                    .is_some_and(|p| out.contains(&p))
            });
            let readers: Vec<_> = n
                .outputs
                .iter()
                .flat_map(|o| consumers[o.index()].iter().copied())
                .collect();
            let to_pattern = !readers.is_empty()
                && readers
                    .iter()
                    .all(|&r| name_of(r).is_some_and(|x| out.contains(&x)));
            if from_pattern && to_pattern {
                out.push(name);
                added = true;
            }
        }
        if !added {
            break;
        }
    }
    out
}
