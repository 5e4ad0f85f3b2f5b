//! AWQ's folds (`model_deploy --q_awq`, [`qtune_deploy::awq`]) on the real
//! MiniLM: which layer inputs take scales, and the scaled float model
//! computes the original's outputs on the 60 validation sentences.

use std::path::PathBuf;
use std::sync::Arc;

use qtune_calibrate::{HessianSettings, SampleLoader, collect_hessians};
use qtune_deploy::awq::{apply_awq, fold_scales, fold_sites, scales};
use qtune_deploy::weight_only::weight_layer;
use qtune_deploy::{WeightMethod, WeightOnly};
use qtune_exec::{Executor, Keep, NoHook, Parallelism, RunOptions};
use qtune_ir::{Graph, NodeId};
use qtune_quant::QuantMode;

mod common;
use common::max_relative_difference;

/// The folds only reassociate float products.
const SAME_FUNCTION_REL_TOL: f64 = 1e-4;

fn workloads() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/workloads"
    ))
}

fn prepared(name: &str) -> Graph {
    let path = workloads().join(format!("models/{name}.onnx"));
    let graph = qtune_onnx::import_onnx(&path, &qtune_onnx::ImportOptions::default()).unwrap();
    qtune_exec::prepare_top(graph).unwrap().0
}

fn loader(graph: &Graph, dir: &str, n: usize) -> SampleLoader {
    let selection = qtune_data::select_dataset(&workloads().join(dir), n).unwrap();
    SampleLoader::new(graph, selection, vec![None; graph.inputs.len()]).unwrap()
}

/// The outputs of `graph` on every sample of `loader`.
fn outputs(graph: &Graph, loader: &SampleLoader) -> Vec<Vec<f32>> {
    let exec = Executor::new(graph.clone()).unwrap();
    let opts = RunOptions::new(Keep::Outputs, Parallelism::Rayon);
    let mut all = Vec::new();
    for i in 0..loader.batch_count() {
        let values = exec
            .run(loader.load(i).unwrap(), &opts, &mut NoHook)
            .unwrap();
        for &o in &graph.outputs {
            all.push(values.get(o).unwrap().to_f32_vec());
        }
    }
    all
}

#[test]
fn minilm_awq_scales_the_attention_output_projections_and_keeps_the_function() {
    let graph = prepared("minilm_l6_s128");
    let mode_of = |id: NodeId| weight_layer(&graph, id).map(|_| QuantMode::W4F16);
    let (sites, unscaled) = fold_sites(&graph, &mode_of);
    // Post-LN BERT: the LayerNorm outputs before Q/K/V and FFN-up also feed
    // the residual Adds, FFN-down reads a GELU: only the 6 attention output
    // projections (their input comes from V through P V) can be scaled.
    assert_eq!(sites.len(), 6, "{unscaled:#?}");
    for s in &sites {
        assert_eq!(s.layers.len(), 1);
        assert!(matches!(s.producer, qtune_deploy::awq::Producer::Layer(_)));
    }
    let left: usize = unscaled.iter().map(|u| u.layers.len()).sum();
    assert_eq!(left, 30, "{unscaled:#?}");
    assert!(
        unscaled
            .iter()
            .filter(|u| u.reason.contains("scaling it would change them too"))
            .count()
            == 12
            && unscaled
                .iter()
                .filter(|u| u.reason.contains("do not fold exactly"))
                .count()
                == 6,
        "{unscaled:#?}"
    );

    let exec = Executor::new(graph.clone()).unwrap();
    let calib = loader(&graph, "text/calib", 8);
    let settings = HessianSettings::default().with_mask_input(Some("attention_mask".into()));
    let mut hessians = collect_hessians(&exec, &calib, &settings, &|_| {}).unwrap();
    let original = hessians.clone();
    let wo = WeightOnly {
        group_size: 128,
        method: WeightMethod::GptqClip,
        ..Default::default()
    };
    let mut searched = graph.clone();
    let report = apply_awq(&mut searched, &mut hessians, &mode_of, wo).unwrap();
    assert_eq!(report.scaled.len(), 6);
    // The scaled layers' Hessians are those of the scaled inputs.
    for (site, s) in sites.iter().zip(&report.scaled) {
        let w = weight_layer(&graph, site.layers[0]).unwrap().weight;
        let name = &graph.value(w).name;
        let same = Arc::ptr_eq(&hessians[name], &original[name]);
        assert_eq!(same, s.alpha == 0.0, "{name}: alpha {}", s.alpha);
    }
    // The most extreme scales of the grid (alpha 1) on every site.
    let mut forced = graph.clone();
    for site in &sites {
        let w = weight_layer(&graph, site.layers[0]).unwrap().weight;
        let h = &original[&graph.value(w).name];
        fold_scales(&mut forced, site, &scales(&h.mean_abs(), 1.0)).unwrap();
    }
    let val = loader(&graph, "text/val", 0);
    assert_eq!(val.batch_count(), 60);
    let before = outputs(&graph, &val);
    for (tag, g) in [("searched", &searched), ("alpha 1", &forced)] {
        let d = max_relative_difference(&before, &outputs(g, &val));
        println!("{tag}: max relative difference {d:e}");
        assert!(d <= SAME_FUNCTION_REL_TOL, "{tag}: {d}");
    }
}
