//! Snapshots of what a report embeds (the JSON the page's script and the
//! browser test read) and of the text table, for a fixed report. A change
//! of field names or layout shows here first; `UPDATE_SNAPSHOTS=1` rewrites
//! the files after a deliberate change.

use std::path::PathBuf;

use qtune_report::{
    BeforeAfter, Entry, Header, Histogram, Layer, Report, Search, SearchLayer, Similarity,
    Threshold, Timing, TrajectoryPoint, Transform, WeightRanges,
};

fn fixed_report() -> Report {
    Report {
        header: Header {
            title: "run_calibration --search search_qtable".into(),
            command_line: "run_calibration m.mlir --dataset d --search search_qtable".into(),
            model: "m.mlir".into(),
            processor: "bm1684x".into(),
            dataset: "d".into(),
            counts: vec![Entry::new("calibration samples", 4)],
            versions: vec![Entry::new("qtune", "0.1.0")],
            timings: vec![Timing::new("calibration", 1.5), Timing::new("report", 0.25)],
            outputs: vec!["cali".into()],
        },
        layers: vec![
            Layer {
                index: 0,
                name: "conv1".into(),
                op_type: "top.Conv".into(),
                mode: "INT8".into(),
                float_reason: None,
                threshold: Some(2.5),
                cumulative: Some(Similarity {
                    cos: 0.999,
                    sqnr_db: 27.5,
                }),
                isolated: Some(Similarity {
                    cos: 0.999,
                    sqnr_db: 27.5,
                }),
            },
            Layer {
                index: 1,
                name: "softmax".into(),
                op_type: "top.Softmax".into(),
                mode: "F16".into(),
                float_reason: Some("qtable".into()),
                threshold: Some(1.0),
                cumulative: Some(Similarity {
                    cos: 0.99,
                    sqnr_db: 18.0,
                }),
                isolated: Some(Similarity {
                    cos: 1.0,
                    sqnr_db: 66.0,
                }),
            },
        ],
        similarity_samples: 2,
        histograms: vec![Histogram {
            tensor: "conv1".into(),
            min: -2.0,
            max: 3.0,
            bin_width: 0.75,
            counts: vec![10, 4, 0, 1],
            thresholds: vec![Threshold {
                method: "kl".into(),
                value: 2.0,
            }],
            chosen: Some(2.5),
        }],
        histogram_source: "the report's 2 samples".into(),
        weights: vec![WeightRanges {
            layer: "conv1".into(),
            op_type: "top.Conv".into(),
            weight: "conv1_w".into(),
            scheme: "per channel".into(),
            channel_min: vec![-0.5, -1.0],
            channel_max: vec![0.25, 2.0],
            tensor_abs_max: 2.0,
        }],
        search: Some(Search {
            kind: "search_qtable".into(),
            scale: "mapped".into(),
            expected_cos: Some(0.99),
            methods: vec!["KL".into(), "MSE".into()],
            trajectory: vec![TrajectoryPoint {
                float_layers: 0,
                cos: 0.98,
                label: "all int8".into(),
            }],
            layers: vec![SearchLayer {
                name: "conv1".into(),
                op_type: "top.Conv".into(),
                losses: vec![Some(0.01), None],
                chosen_method: Some("KL".into()),
                threshold: Some(2.5),
            }],
            layer_loss: "output loss".into(),
            float_layers: vec!["softmax".into()],
            all_int8_cos: Some(0.98),
            final_cos: Some(0.995),
        }),
        transforms: vec![Transform {
            kind: "we".into(),
            caption: "c".into(),
            quantity: "spread".into(),
            rows: vec![BeforeAfter {
                name: "conv1 -> conv2".into(),
                before: 8.0,
                after: 2.0,
            }],
        }],
        notes: vec![],
    }
}

fn check(name: &str, actual: &str) {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots")).join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} changed (UPDATE_SNAPSHOTS=1 to accept)",
        path.display()
    );
}

#[test]
fn embedded_json_snapshot() {
    let json = fixed_report().to_json().unwrap();
    let pretty: serde_json::Value = serde_json::from_str(&json).unwrap();
    check(
        "report.json",
        &(serde_json::to_string_pretty(&pretty).unwrap() + "\n"),
    );
    // The page embeds exactly this JSON (with `<` escaped).
    let html = qtune_report::html::to_html(&fixed_report()).unwrap();
    assert!(html.contains(&json.replace('<', "\\u003c")));
}

#[test]
fn text_table_snapshot() {
    check(
        "layer_table.txt",
        &qtune_report::text::layer_table(&fixed_report()),
    );
}
