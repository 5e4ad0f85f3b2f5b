//! The report's per-layer similarities on a workload model, checked against
//! independent computations: the isolated similarity of the one-run hook
//! against models built with only that layer quantized (the searches'
//! evaluator), the cumulative one against a plain run of the deployed model.

use std::path::PathBuf;

use qtune_deploy::Processor;
use qtune_exec::{Executor, Keep, NoHook, Parallelism, PrepareOptions, RunOptions};
use qtune_ir::Graph;
use qtune_mixed::report::{EarlyHistograms, GatherRequest, Measurer, gather};
use qtune_mixed::{MixEvaluator, Precision, layer_value};
use qtune_quant::{CalibrationRow, CalibrationTable, QuantMode};
use qtune_tensor::{Tensor, read_npz};

/// The hook run and the one-layer models compute the same integers; their
/// float arithmetic may differ by a rounding (fused vs unfused kernels).
const SAME_COMPUTATION_COS: f64 = 1e-6;

fn workloads() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ))
}

fn prepared(name: &str) -> Graph {
    let path = workloads().join(format!("models/{name}.onnx"));
    let graph = qtune_onnx::import_onnx(&path, &qtune_onnx::ImportOptions::default()).unwrap();
    let mut opts = PrepareOptions::default();
    opts.fold_batchnorm = true;
    qtune_exec::prepare(graph, &opts).unwrap().0
}

/// The first golden sample of `name`, by input name.
fn sample(graph: &Graph, name: &str) -> Vec<(String, Tensor)> {
    let arrays = read_npz(&workloads().join(format!("golden/{name}/input.npz"))).unwrap();
    graph
        .inputs
        .iter()
        .map(|&id| {
            let n = graph.value(id).name.clone();
            let (_, t) = arrays.iter().find(|(k, _)| *k == n).unwrap();
            (n, t.slice_outer(0, 1).unwrap())
        })
        .collect()
}

/// Every tensor of the float model on the sample.
fn float_run(graph: &Graph, sample: &[(String, Tensor)]) -> qtune_exec::Values {
    let exec = Executor::new(graph.clone()).unwrap();
    let inputs = sample
        .iter()
        .map(|(n, t)| (graph.value_by_name(n).unwrap(), t.clone()))
        .collect();
    exec.run(
        inputs,
        &RunOptions::new(Keep::All, Parallelism::Rayon),
        &mut NoHook,
    )
    .unwrap()
}

/// A max-method table of every float tensor on the sample.
fn max_table(graph: &Graph, sample: &[(String, Tensor)]) -> CalibrationTable {
    let values = float_run(graph, sample);
    let mut table = CalibrationTable::default();
    for (id, t) in values.iter() {
        if t.dtype() != qtune_tensor::DType::F32 || graph.constant_of(id).is_some() {
            continue;
        }
        let x = t.to_f32_vec();
        let lo = x.iter().fold(f32::INFINITY, |m, v| m.min(*v));
        let hi = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        let th = f64::from(lo.abs().max(hi.abs())).max(1e-5);
        table.rows.push(CalibrationRow::new(
            graph.value(id).name.clone(),
            th,
            f64::from(lo),
            f64::from(hi),
        ));
    }
    table
}

/// All-int8 bm1684x with every table tensor's histogram.
fn int8_request<'a>(graph: &'a Graph, table: &'a CalibrationTable) -> GatherRequest<'a> {
    GatherRequest {
        graph,
        processor: Processor::Bm1684x,
        quantize: QuantMode::Int8,
        table: Some(table),
        qtable: &[],
        fp_type: QuantMode::F16,
        asymmetric: false,
        matmul_per_channel: false,
        method_tables: Vec::new(),
        histograms: true,
        prebuilt: None,
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        d += x * y;
        na += x * x;
        nb += y * y;
    }
    d / (na.sqrt() * nb.sqrt())
}

#[test]
fn isolated_similarity_equals_one_layer_models() {
    let name = "mobilenetv2_nsfw";
    let graph = prepared(name);
    let s = sample(&graph, name);
    let table = max_table(&graph, &s);
    let gathered = gather(&int8_request(&graph, &table), std::slice::from_ref(&s)).unwrap();
    let measured: Vec<_> = gathered
        .layers
        .iter()
        .filter(|l| l.isolated.is_some() && l.mode == "INT8")
        .collect();
    assert!(measured.len() > 40, "{} layers measured", measured.len());
    // The first layer reads the graph input: isolated and cumulative agree.
    let first = &measured[0];
    assert_eq!(first.isolated, first.cumulative, "{}", first.name);
    // Later layers accumulate error: somewhere cumulative is clearly worse.
    assert!(
        measured
            .iter()
            .any(|l| l.cumulative.unwrap().sqnr_db + 3.0 < l.isolated.unwrap().sqnr_db),
        "no layer shows accumulated error"
    );

    // Independently: every other layer in F32, only this one in INT8, built
    // and run by the searches' evaluator; its dequantized output against
    // the float model's.
    let mut ev = MixEvaluator::new(
        &graph,
        Processor::Bm1684x,
        QuantMode::F16,
        vec![s.clone()],
        Vec::new(),
        1 << 30,
    )
    .unwrap();
    let reference = ev
        .build(&Precision {
            quantize: QuantMode::F32,
            table: None,
            qtable: &[],
        })
        .unwrap();
    ev.set_reference(&reference).unwrap();
    let all: Vec<String> = qtune_mixed::layers(&graph)
        .into_iter()
        .map(|l| l.name)
        .collect();
    let mut checked = 0;
    for l in measured.iter().step_by(6) {
        // A Conv read only by this activation is measured with it (one
        // fused layer): both run in INT8.
        let node = graph
            .value(graph.find_value(&l.name).unwrap())
            .producer
            .unwrap();
        let mut unit = vec![l.name.clone()];
        for input in graph.node(node).inputs.iter().flatten() {
            let n = &graph.value(*input).name;
            if gathered
                .layers
                .iter()
                .any(|x| &x.name == n && x.mode == "INT8" && x.isolated.is_none())
            {
                unit.push(n.clone());
            }
        }
        let qtable: Vec<(String, QuantMode)> = all
            .iter()
            .filter(|n| !unit.contains(n))
            .map(|n| (n.clone(), QuantMode::F32))
            .collect();
        let built = ev
            .build(&Precision {
                quantize: QuantMode::Int8,
                table: Some(&table),
                qtable: &qtable,
            })
            .unwrap();
        let Some(v) = layer_value(built.graph(), &l.name) else {
            continue;
        };
        let vname = built.graph().value(v).name.clone();
        let got = ev.tensors(&built, &[vname.as_str()]).unwrap();
        let float = ev.tensors(&reference, &[l.name.as_str()]).unwrap();
        let cos = cosine(&float[0][0].to_f32_vec(), &got[0][0].to_f32_vec());
        let iso = l.isolated.unwrap().cos;
        assert!(
            (cos - iso).abs() <= SAME_COMPUTATION_COS,
            "{} ({}): one-layer model cos {cos}, report isolated {iso}",
            l.name,
            l.op_type
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} layers compared");

    // Histograms: one per float tensor, counts over the sample's elements.
    assert!(!gathered.histograms.is_empty());
    for h in &gathered.histograms {
        let t = table.get(&h.tensor).unwrap();
        assert_eq!(h.chosen, Some(t.threshold));
        assert_eq!(h.thresholds.len(), 3, "{}", h.tensor);
        assert!(h.counts.len() <= qtune_mixed::report::REPORT_BINS);
    }
    // Weights: one entry per Conv/Gemm, the per-tensor max above each channel's.
    assert!(gathered.weights.len() > 40);
    for w in &gathered.weights {
        for (lo, hi) in w.channel_min.iter().zip(&w.channel_max) {
            assert!(lo <= hi && hi.abs() <= w.tensor_abs_max && lo.abs() <= w.tensor_abs_max);
        }
    }
}

/// model_deploy computes the report's histograms of a `--test_reference`
/// sample while it quantizes the model (`EarlyHistograms`): the measurer
/// that takes them reports the same histograms, bit for bit, as one that
/// observes the reference's tensors itself; a reference that lacks a table
/// tensor gives none.
#[test]
fn early_histograms_equal_the_measurers_own() {
    let name = "mobilenetv2_nsfw";
    let graph = prepared(name);
    let s = sample(&graph, name);
    let table = max_table(&graph, &s);
    // The float model's every tensor, by name: a model_transform
    // --test_result.
    let values = float_run(&graph, &s);
    let reference: Vec<(String, Tensor)> = values
        .iter()
        .filter(|(id, _)| graph.constant_of(*id).is_none())
        .map(|(id, t)| (graph.value(id).name.clone(), t.clone()))
        .collect();
    let req = int8_request(&graph, &table);
    let measure = |early: Option<EarlyHistograms>| {
        let mut m = Measurer::new(&req, 1).unwrap().with_early_histograms(early);
        m.sample(&s, Some(&reference), &Keep::Outputs).unwrap();
        m.finish().unwrap()
    };
    let own = measure(None);
    let early = EarlyHistograms::compute(&graph, &reference).unwrap();
    assert!(early.is_some(), "the reference holds every table tensor");
    let taken = measure(early);
    assert_eq!(own.float_from_reference, 1);
    assert_eq!(taken.float_from_reference, 1);
    assert!(
        own.histograms.len() > 100,
        "{} histograms",
        own.histograms.len()
    );
    assert_eq!(own.histograms, taken.histograms);
    assert_eq!(own.histogram_source, taken.histogram_source);

    // Without one float table tensor the early statistics are refused.
    let dropped = table.rows[5].name.clone();
    let partial: Vec<(String, Tensor)> = reference
        .iter()
        .filter(|(n, _)| *n != dropped)
        .cloned()
        .collect();
    assert!(
        EarlyHistograms::compute(&graph, &partial)
            .unwrap()
            .is_none(),
        "{dropped} is missing"
    );
}
