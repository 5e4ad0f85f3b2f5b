//! Weight equalization and SmoothQuant on the workload models: the
//! transformed float model computes the same function (golden inputs).

use std::path::PathBuf;

use qtune_calibrate::{NoProgress, SampleLoader};
use qtune_exec::{Executor, Keep, NoHook, Parallelism, RunOptions};
use qtune_ir::Graph;
use qtune_mixed::transformer_pattern_layers;
use qtune_tensor::{Tensor, read_npz};
use qtune_transforms::{
    EqualizeSettings, SmoothQuantScope, SmoothQuantSettings, equalize_weights, smooth_quant,
};

mod common;
use common::max_relative_difference;

/// The transforms only reassociate float products: outputs may differ by
/// a few ulps of the largest output, far below this.
const SAME_FUNCTION_REL_TOL: f64 = 1e-5;

fn workloads() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ))
}

/// The canonical Top graph (BatchNorm folded, Relu fused, LayerNorm as one
/// op), as calibration with `--we` / `--sq` sees it.
fn prepared(name: &str) -> Graph {
    let path = workloads().join(format!("models/{name}.onnx"));
    let graph = qtune_onnx::import_onnx(&path, &qtune_onnx::ImportOptions::default()).unwrap();
    qtune_exec::prepare_top(graph).unwrap().0
}

/// The outputs of `graph` on each golden sample.
fn outputs(graph: &Graph, name: &str) -> Vec<Vec<f32>> {
    let exec = Executor::new(graph.clone()).unwrap();
    let arrays = read_npz(&workloads().join(format!("golden/{name}/input.npz"))).unwrap();
    let samples = arrays[0].1.dims()[0];
    let opts = RunOptions::new(Keep::Outputs, Parallelism::Rayon);
    let mut all = Vec::new();
    for s in 0..samples {
        let inputs: Vec<(qtune_ir::ValueId, Tensor)> = graph
            .inputs
            .iter()
            .map(|&id| {
                let (_, t) = arrays
                    .iter()
                    .find(|(n, _)| *n == graph.value(id).name)
                    .unwrap();
                (id, t.slice_outer(s, s + 1).unwrap())
            })
            .collect();
        let values = exec.run(inputs, &opts, &mut NoHook).unwrap();
        for &o in &graph.outputs {
            all.push(values.get(o).unwrap().to_f32_vec());
        }
    }
    all
}

fn check_equalization(name: &str) -> usize {
    let graph = prepared(name);
    let before = outputs(&graph, name);
    let mut equalized = graph.clone();
    let report = equalize_weights(&mut equalized, &EqualizeSettings::default()).unwrap();
    for p in &report.pairs {
        assert!(
            p.converged,
            "{name}: {} --- {} did not converge",
            p.first, p.second
        );
        assert!(p.first_after.max.is_finite() && p.second_after.max.is_finite());
    }
    let after = outputs(&equalized, name);
    let rel = max_relative_difference(&before, &after);
    assert!(
        rel <= SAME_FUNCTION_REL_TOL,
        "{name}: equalized outputs differ by {rel:e} (relative)"
    );
    report.pairs.len()
}

#[test]
fn equalized_mobilenet_computes_the_same_function() {
    // Only the linear projection convs feeding an expansion conv qualify:
    // every other pair has a ReLU6 between the convs.
    let pairs = check_equalization("mobilenetv2_nsfw");
    assert!(pairs > 0, "no pair was equalized");
}

#[test]
fn equalized_efficientnet_computes_the_same_function() {
    check_equalization("efficientnet_lite0");
}

/// MiniLM's canonical graph, its golden outputs, an executor and a loader
/// of 4 calibration sentences: what SmoothQuant starts from.
fn minilm_to_smooth() -> (Graph, Vec<Vec<f32>>, Executor, SampleLoader) {
    let graph = prepared("minilm_l6_s128");
    let before = outputs(&graph, "minilm_l6_s128");
    let exec = Executor::new(graph.clone()).unwrap();
    let selection = qtune_data::select_dataset(&workloads().join("text/calib"), 4).unwrap();
    let loader = SampleLoader::new(&graph, selection, vec![None; graph.inputs.len()]).unwrap();
    (graph, before, exec, loader)
}

#[test]
fn smoothed_minilm_computes_the_same_function() {
    let name = "minilm_l6_s128";
    let (_, before, exec, loader) = minilm_to_smooth();
    let (smoothed, report) =
        smooth_quant(&exec, &loader, &SmoothQuantSettings::default(), &NoProgress).unwrap();
    // The embedding LayerNorm and the two of each of the 6 layers but the
    // last one (which feeds the pooling, no Gemm).
    assert_eq!(report.smoothed.len(), 12, "{:?}", report.skipped);
    for s in &report.smoothed {
        assert!(s.duplicate.is_some(), "{}: residual readers", s.source);
        assert!(s.activation_after < s.activation_before, "{}", s.source);
    }
    assert_eq!(
        report.smoothed[0].users.len(),
        3,
        "Q, K and V share a scale"
    );
    let after = outputs(&smoothed, name);
    let rel = max_relative_difference(&before, &after);
    assert!(
        rel <= SAME_FUNCTION_REL_TOL,
        "smoothed outputs differ by {rel:e} (relative)"
    );
}

/// `--sq_scope all` on MiniLM: besides the 12 LayerNorm groups, every other
/// Gemm/MatMul with a constant weight (counted here from the graph: the 6
/// attention output and 6 FFN down projections) is smoothed through one
/// inserted `Mul` per distinct input, that `Mul` is the only thing between
/// the input and those layers, the scales respect the clipping, and the
/// model computes the same function.
#[test]
fn smoothed_every_linear_layer_of_minilm_computes_the_same_function() {
    let name = "minilm_l6_s128";
    let (graph, before, exec, loader) = minilm_to_smooth();
    let mut settings = SmoothQuantSettings::default();
    settings.alpha = 0.95;
    settings.scope = SmoothQuantScope::AllLinear;
    settings.min_scale_quantile = Some(0.1);
    settings.max_scale = Some(100.0);
    let (smoothed, report) = smooth_quant(&exec, &loader, &settings, &NoProgress).unwrap();

    // Independent count: linear layers with a constant 2-D weight, minus
    // those the LayerNorm groups reach.
    let linear: Vec<String> = graph
        .nodes()
        .filter(|(_, n)| matches!(n.op, qtune_ir::Op::Gemm(_) | qtune_ir::Op::MatMul))
        .filter(|(_, n)| {
            n.inputs
                .get(1)
                .copied()
                .flatten()
                .and_then(|w| graph.constant_of(w))
                .is_some_and(|t| t.dims().len() == 2)
        })
        .map(|(_, n)| graph.value(n.outputs[0]).name.clone())
        .collect();
    let by_layer_norm: Vec<&String> = report
        .smoothed
        .iter()
        .filter(|s| s.inserted.is_none())
        .flat_map(|s| &s.users)
        .collect();
    let inserted: Vec<_> = report
        .smoothed
        .iter()
        .filter(|s| s.inserted.is_some())
        .collect();
    assert_eq!(report.smoothed.len() - inserted.len(), 12);
    assert_eq!(
        inserted.len(),
        12,
        "one Mul per attention output and FFN down input"
    );
    let mut all: Vec<&String> = by_layer_norm
        .into_iter()
        .chain(inserted.iter().flat_map(|s| &s.users))
        .collect();
    all.sort();
    let mut expected: Vec<&String> = linear.iter().collect();
    expected.sort();
    assert_eq!(all, expected, "every linear layer, each once");

    for s in &inserted {
        let mul = smoothed.find_value(s.inserted.as_ref().unwrap()).unwrap();
        let node = smoothed.node(smoothed.value(mul).producer.unwrap());
        assert_eq!(node.op, qtune_ir::Op::Mul);
        assert_eq!(smoothed.value(node.inputs[0].unwrap()).name, s.source);
        let inv = smoothed
            .constant_of(node.inputs[1].unwrap())
            .unwrap()
            .to_f32_vec();
        assert_eq!(inv.len(), s.channels);
        // 1/s with s <= 100, and s at least its 10% quantile: at most 10 %
        // of the channels sit at the floor's value or below.
        assert!(
            inv.iter().all(|&v| v >= 0.01 * (1.0 - 1e-6)),
            "{}",
            s.source
        );
        let floor = inv.iter().copied().fold(0.0f32, f32::max);
        let at_floor = inv.iter().filter(|&&v| v >= floor * (1.0 - 1e-6)).count();
        assert!(
            at_floor >= s.channels / 10,
            "{}: {at_floor} at the floor",
            s.source
        );
        // Its readers are exactly the smoothed layers.
        let readers: Vec<String> = smoothed
            .nodes()
            .filter(|(_, n)| n.inputs.contains(&Some(mul)))
            .map(|(_, n)| smoothed.value(n.outputs[0]).name.clone())
            .collect();
        assert_eq!(readers, s.users, "{}", s.source);
        assert!(s.activation_after < s.activation_before, "{}", s.source);
    }
    let after = outputs(&smoothed, name);
    let rel = max_relative_difference(&before, &after);
    assert!(
        rel <= SAME_FUNCTION_REL_TOL,
        "smoothed outputs differ by {rel:e} (relative)"
    );
}

/// `--transformer True`'s pattern layers on MiniLM, against a count made
/// here from the value graph (not the op-name walk of the library): each
/// LayerNorm's data input produced by an Add, each GELU, and the one reader
/// of each GELU (the FFN down projection). On a CNN the list is empty, so
/// the flag cannot change a CNN's plan.
#[test]
fn transformer_pattern_of_minilm_and_none_on_a_cnn() {
    let graph = prepared("minilm_l6_s128");
    let got = transformer_pattern_layers(&graph);
    let op_of = |v: qtune_ir::ValueId| {
        graph
            .value(v)
            .producer
            .map(|p| (p, graph.node(p).op.op_type().to_string()))
    };
    let first_name = |p: qtune_ir::NodeId| graph.value(graph.node(p).outputs[0]).name.clone();
    let mut want: Vec<String> = Vec::new();
    let (mut adds, mut gelus, mut downs) = (0, 0, 0);
    for (id, n) in graph.nodes() {
        let t = n.op.op_type();
        if t == "LayerNormalization" || t == "LayerNorm" {
            let x = n.inputs[0].unwrap();
            if let Some((p, pt)) = op_of(x)
                && pt == "Add"
            {
                want.push(first_name(p));
                adds += 1;
            }
        }
        if t == "Gelu" || t == "GELU" {
            want.push(first_name(id));
            gelus += 1;
            for (rid, r) in graph.nodes() {
                if r.inputs.iter().flatten().any(|v| *v == n.outputs[0]) {
                    want.push(first_name(rid));
                    downs += 1;
                }
            }
        }
    }
    // The Reshape between each FFN down MatMul and its residual Add: read
    // from a wanted op, read only by wanted ops.
    let mut reshapes = 0;
    for (id, n) in graph.nodes() {
        if n.op.op_type() != "Reshape" {
            continue;
        }
        let src = n.inputs[0].and_then(&op_of).map(|(p, _)| first_name(p));
        let readers: Vec<String> = graph
            .nodes()
            .filter(|(_, r)| r.inputs.iter().flatten().any(|v| *v == n.outputs[0]))
            .map(|(rid, _)| first_name(rid))
            .collect();
        if src.is_some_and(|p| want.contains(&p))
            && !readers.is_empty()
            && readers.iter().all(|r| want.contains(r))
        {
            want.push(first_name(id));
            reshapes += 1;
        }
    }
    // 1 embedding + 2 per layer residual Adds; 6 GELUs, each read by one
    // MatMul, whose output reaches its Add through one Reshape.
    assert_eq!((adds, gelus, downs, reshapes), (13, 6, 6, 6), "{want:?}");
    let mut g = got.clone();
    g.sort();
    want.sort();
    assert_eq!(g, want);
    let cnn = prepared("mobilenetv2_nsfw");
    assert!(transformer_pattern_layers(&cnn).is_empty());
}
