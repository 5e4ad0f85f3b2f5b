//! Property tests: merging statistics, and the calibration table round trip.

use proptest::prelude::*;
use qtune_quant::{
    CalibrationMethod as M, CalibrationRow, CalibrationTable, PercentileSchedule, StatsConfig,
    TensorStats, TimeLine, format_7f,
};
use std::path::Path;

fn config(bins: usize) -> StatsConfig {
    let mut c = StatsConfig::with_methods(&M::ALL);
    c.histogram_bin_num = bins;
    c
}

fn feed(stats: &mut TensorStats, samples: &[Vec<f32>]) {
    for x in samples {
        stats.observe(x).unwrap();
    }
}

fn sample_strategy(size: usize) -> impl Strategy<Value = Vec<f32>> {
    (0.01f32..50.0, prop::collection::vec(-1.0f32..1.0, size))
        .prop_map(|(scale, v)| v.into_iter().map(|x| x * scale).collect())
}

const SIZE: usize = 64;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// min, max, abs-max, mse, aciq and the percentile tails merge exactly,
    /// for any split point, without forking.
    #[test]
    fn non_histogram_statistics_merge_exactly(
        samples in prop::collection::vec(sample_strategy(SIZE), 2..8),
        split in 1usize..7,
    ) {
        let split = split.min(samples.len() - 1);
        let n = samples.len();
        let schedule = PercentileSchedule::new(2, 5, n);
        let cfg = config(64);
        let mut whole = TensorStats::new("t", &cfg, schedule).unwrap();
        feed(&mut whole, &samples);
        let mut a = TensorStats::new("t", &cfg, schedule).unwrap();
        feed(&mut a, &samples[..split]);
        let mut b = TensorStats::new("t", &cfg, schedule).unwrap();
        feed(&mut b, &samples[split..]);
        let merged = TensorStats::merge(a, b).unwrap();
        let tw = whole.thresholds().unwrap();
        let tm = merged.thresholds().unwrap();
        for m in [M::Max, M::Mse, M::AciqGauss, M::AciqLaplace, M::Percentile9999] {
            prop_assert_eq!(tw.table_row(m), tm.table_row(m), "method {}", m);
        }
        prop_assert_eq!(tw.abs_percentile, tm.abs_percentile);
        prop_assert_eq!(merged.samples(), n);
        // The histogram of a plain merge keeps the total count.
        let count = |s: &TensorStats| s.histogram().map_or(0, |h| h.counts().iter().sum::<u64>());
        prop_assert_eq!(count(&whole), count(&merged));
    }

    /// Fork rule: after a common prefix, `a` takes samples within the
    /// prefix's histogram range and `b = prefix.fork()` takes any samples
    /// (its range may grow). The merge equals the sequential pass exactly,
    /// histogram and KL threshold included.
    #[test]
    fn forked_merge_equals_sequential_pass(
        prefix in prop::collection::vec(sample_strategy(SIZE), 1..3),
        middle in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, SIZE), 0..4),
        later in prop::collection::vec(sample_strategy(SIZE), 1..4),
    ) {
        let n = prefix.len() + middle.len() + later.len();
        let schedule = PercentileSchedule::new(1, 3, n);
        let cfg = config(32);
        let mut s = TensorStats::new("t", &cfg, schedule).unwrap();
        feed(&mut s, &prefix);
        let range = s.histogram().map_or(0.0, |h| h.range());
        // Scale the middle part into the prefix's histogram range.
        let middle: Vec<Vec<f32>> = middle
            .iter()
            .map(|v| v.iter().map(|x| x * range).collect())
            .collect();
        let mut whole = s.clone();
        feed(&mut whole, &middle);
        feed(&mut whole, &later);
        let mut b = s.fork();
        let mut a = s;
        feed(&mut a, &middle);
        feed(&mut b, &later);
        let merged = TensorStats::merge(a, b).unwrap();
        prop_assert!(merged.histogram_is_exact());
        prop_assert_eq!(whole.histogram(), merged.histogram());
        let tw = whole.thresholds().unwrap();
        let tm = merged.thresholds().unwrap();
        for m in M::ALL {
            prop_assert_eq!(tw.table_row(m), tm.table_row(m), "method {}", m);
        }
    }

    /// Writing then reading a table gives the rows rounded to 7 decimals,
    /// and writing that again gives the same text.
    #[test]
    fn calibration_table_round_trip(
        rows in prop::collection::vec(
            ("[a-zA-Z_][a-zA-Z0-9_./:-]{0,20}", -1e6f64..1e6, -1e6f64..1e6, -1e6f64..1e6),
            0..20,
        ),
        samples in 0usize..1000,
    ) {
        let table = CalibrationTable {
            mlir_version: "v1.30.2".to_string(),
            mlir_file: "model.mlir".to_string(),
            time: TimeLine::Omit,
            sample_number: samples,
            rows: rows
                .iter()
                .map(|(n, t, a, b)| CalibrationRow::new(n.clone(), *t, *a, *b))
                .collect(),
            ..CalibrationTable::default()
        };
        let text = table.to_text();
        let back = CalibrationTable::parse(&text, Path::new("t.txt")).unwrap();
        prop_assert_eq!(back.rows.len(), rows.len());
        for (r, (n, t, a, b)) in back.rows.iter().zip(&rows) {
            prop_assert_eq!(&r.name, n);
            let rounded = |v: f64| format_7f(v).parse::<f64>().unwrap();
            prop_assert_eq!(r.threshold, rounded(*t));
            prop_assert_eq!(r.min, rounded(*a));
            prop_assert_eq!(r.max, rounded(*b));
        }
        prop_assert_eq!(back.sample_number, samples);
        prop_assert_eq!(back.to_text(), text);
    }
}

#[test]
fn table_write_and_read_file() {
    let dir = std::env::temp_dir().join(format!("qtune-quant-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cali_table");
    let table = CalibrationTable {
        rows: vec![CalibrationRow::new("conv1", 1.5, -1.0, 1.5)],
        int4_rows: vec![CalibrationRow::new("conv1", 1.0, -8.0 / 7.0, 1.0)],
        asym_ops: vec!["silu1".to_string()],
        ..CalibrationTable::default()
    };
    table.write(&path).unwrap();
    let back = CalibrationTable::read(&path).unwrap();
    assert_eq!(back.rows, table.rows);
    assert_eq!(back.asym_ops, table.asym_ops);
    assert_eq!(back.int4_rows[0].name, "conv1");
    std::fs::remove_dir_all(&dir).unwrap();
}
