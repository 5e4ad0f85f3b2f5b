//! Every calibration table and qtable that TPU-MLIR itself wrote
//! (`../shared/reference/tpu-mlir-files/`, see its README) reads, and reads
//! to what the file says: row counts, names and numbers are checked against
//! a separate, deliberately simple reading of each file done here.

use std::path::{Path, PathBuf};

use qtune_quant::{CalibrationTable, HistogramLine, QuantMode, read_qtable};

fn files_dir() -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/tpu-mlir-files"
    ));
    assert!(p.is_dir(), "{} is missing", p.display());
    p
}

/// What kind of fixture a file of the directory is, by its name.
#[derive(Debug, PartialEq)]
enum Kind {
    Table,
    Qtable,
    Other,
}

fn kind(name: &str) -> Kind {
    if name.contains("cali_table") {
        Kind::Table
    } else if name.ends_with("_qtable") {
        Kind::Qtable
    } else if name.ends_with(".mlir") || name == "README.md" {
        Kind::Other
    } else {
        panic!("fixture `{name}`: not a table, qtable, .mlir or README: teach this test about it")
    }
}

/// The data lines of a file (not blank, not `#`), split on whitespace.
fn data_lines(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn num(s: &str) -> f64 {
    s.parse().unwrap()
}

fn names_in_dir(k: Kind) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(files_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| kind(n) == k)
        .collect();
    names.sort();
    names
}

#[test]
fn every_table_reads_as_written() {
    let names = names_in_dir(Kind::Table);
    assert_eq!(
        names,
        [
            "mobilenet_v2_cali_table",
            "resnet50_v2_cali_table_f8e4m3_head"
        ]
    );
    for name in &names {
        let path = files_dir().join(name);
        let table = CalibrationTable::read(&path).unwrap();
        let lines = data_lines(&path);
        assert!(!lines.is_empty(), "{name}");
        assert_eq!(table.rows.len(), lines.len(), "{name}: row count");
        assert!(table.non_finite_rows.is_empty(), "{name}");
        let fp8 = table.histogram == HistogramLine::Fp8;
        for (row, fields) in table.rows.iter().zip(&lines) {
            assert_eq!(fields.len(), 4, "{name}: {fields:?}");
            assert_eq!(row.name, fields[0], "{name}");
            assert_eq!(row.threshold, num(&fields[1]), "{name}: {}", row.name);
            if fp8 {
                // TPU-MLIR's importer reads fp8 rows as [-th, th].
                assert_eq!((row.min, row.max), (-row.threshold, row.threshold));
            } else {
                assert_eq!(row.min, num(&fields[2]), "{name}: {}", row.name);
                assert_eq!(row.max, num(&fields[3]), "{name}: {}", row.name);
            }
        }
    }
}

/// The header fields of each table, and a few rows by value.
#[test]
fn table_headers_and_values() {
    // The old 4-line header of 2022.
    let t = CalibrationTable::read(&files_dir().join("mobilenet_v2_cali_table")).unwrap();
    assert_eq!(t.histogram, HistogramLine::Bins(2048));
    assert_eq!(t.sample_number, 100);
    assert_eq!(t.tune_number, 5);
    assert_eq!(t.mlir_version, "");
    assert_eq!(t.rows.len(), 67);
    let first = &t.rows[0];
    assert_eq!(
        (first.name.as_str(), first.threshold, first.min, first.max),
        ("data", 2.6355782, -2.1148427, 2.6355782)
    );
    let relu = t.get("mobilenetv20_features_relu0_fwd_Relu").unwrap();
    assert_eq!(
        (relu.threshold, relu.min, relu.max),
        (4.0572147, 0.0, 6.4883742)
    );
    // The newer header with the fp8 marker.
    let t =
        CalibrationTable::read(&files_dir().join("resnet50_v2_cali_table_f8e4m3_head")).unwrap();
    assert_eq!(t.histogram, HistogramLine::Fp8);
    assert_eq!(t.mlir_version, "v1.7.beta.155-gbfe0297ea-20240508");
    assert_eq!(t.mlir_file, "resnet50_v2.mlir");
    assert_eq!(t.sample_number, 100);
    assert_eq!(t.rows.len(), 4);
    let relu = t.get("resnetv24_relu0_fwd_Relu").unwrap();
    // The file's min column says -1.8410520; the importer uses -th.
    assert_eq!(
        (relu.threshold, relu.min, relu.max),
        (1.8266687, -1.8266687, 1.8266687)
    );
}

#[test]
fn every_qtable_reads_as_written() {
    let names = names_in_dir(Kind::Qtable);
    assert_eq!(
        names,
        [
            "bert-tiny_from_pt_qtable",
            "densenet121-12_qtable",
            "yolov8s_qtable"
        ]
    );
    for name in &names {
        let path = files_dir().join(name);
        let q = read_qtable(&path).unwrap();
        let lines = data_lines(&path);
        assert_eq!(q.rows.len(), lines.len(), "{name}: row count");
        assert!(q.one_token_lines.is_empty(), "{name}");
        for (row, fields) in q.rows.iter().zip(&lines) {
            assert_eq!(fields.len(), 2, "{name}: {fields:?}");
            assert_eq!(row.name, fields[0], "{name}");
            assert_eq!(row.mode.name(), fields[1], "{name}");
        }
    }
    let count = |name: &str, mode: QuantMode| {
        read_qtable(&files_dir().join(name))
            .unwrap()
            .rows
            .iter()
            .filter(|r| r.mode == mode)
            .count()
    };
    assert_eq!(count("yolov8s_qtable", QuantMode::F16), 10);
    assert_eq!(count("densenet121-12_qtable", QuantMode::F32), 10);
    assert_eq!(count("bert-tiny_from_pt_qtable", QuantMode::F32), 2);
    let y = read_qtable(&files_dir().join("yolov8s_qtable")).unwrap();
    assert_eq!(y.rows[0].name, "/model.1/conv/Conv_output_0_Conv");
    assert_eq!(y.rows[0].line, 7);
    assert_eq!(y.rows[9].name, "output0_Concat");
}
