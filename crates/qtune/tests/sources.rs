//! The calibration sources give the same table for the same samples: the
//! demo's photos from a dataset folder, the same preprocessed arrays in
//! memory, and the same arrays as npz files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qtune::{CalibrateSettings, CalibrationSource, Error, Silent, Tensor, calibrate};

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/demo")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qtune-facade-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo model with model_transform's preprocessing of scripts/demo.sh,
/// `max` thresholds (no tuning: the sources are what is compared).
fn settings(source: CalibrationSource, table: &Path) -> CalibrateSettings {
    let mut s = CalibrateSettings::new(demo().join("efficientnet_lite0.onnx"), source, table);
    s.input_shapes = Some("[[1,3,224,224]]".into());
    s.input_num = 3;
    s.preprocess.resize_dims = Some("224,224".into());
    s.preprocess.pixel_format = Some("rgb".into());
    s.preprocess.mean = Some("127,127,127".into());
    s.preprocess.scale = Some("0.0078125,0.0078125,0.0078125".into());
    s.calibration = qtune::CalibrationSettings::new(qtune::CalibrationMethod::Max);
    s.calibration.tune_num = 0;
    s
}

#[test]
fn dataset_memory_and_npz_sources_give_the_same_table() {
    let dir = scratch("sources");
    let table = dir.join("cali_table");
    let from_files = settings(CalibrationSource::Dataset(demo().join("images")), &table);
    // The selected photos, preprocessed, as the loader feeds them.
    let input = qtune::calibration_input(&from_files, false).unwrap();
    let graph = input.loaded.exec.graph();
    let mut samples = Vec::new();
    for i in 0..input.loader.batch_count() {
        let arrays: BTreeMap<String, Tensor> = input
            .loader
            .load(i)
            .unwrap()
            .into_iter()
            .map(|(id, t)| (graph.value(id).name.clone(), t))
            .collect();
        samples.push(arrays);
    }
    assert_eq!(samples.len(), 3);

    let reference = calibrate(&from_files, &Silent).unwrap();
    let rows = |c: &qtune::Calibration| c.table(None).to_text();
    let want = rows(&reference);
    // 62 calibrated tensors of EfficientNet-Lite0 after the header.
    assert!(want.lines().count() > 60, "{want}");

    let in_memory = settings(CalibrationSource::from_samples(samples.clone()), &table);
    assert_eq!(rows(&calibrate(&in_memory, &Silent).unwrap()), want);

    let mut files = Vec::new();
    for (k, s) in samples.iter().enumerate() {
        let path = dir.join(format!("s{k}.npz"));
        let arrays: Vec<(String, Tensor)> = s.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
        qtune_tensor::write_npz(&path, &arrays).unwrap();
        files.push(path);
    }
    let npz = settings(CalibrationSource::NpzFiles(files), &table);
    assert_eq!(rows(&calibrate(&npz, &Silent).unwrap()), want);

    // input_num takes the first samples of any source.
    let mut two = settings(CalibrationSource::from_samples(samples), &table);
    two.input_num = 2;
    assert_eq!(calibrate(&two, &Silent).unwrap().loader.sample_count(), 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_settings_are_typed_errors() {
    let dir = scratch("bad");
    let table = dir.join("t");
    let mut s = settings(CalibrationSource::Dataset(demo().join("images")), &table);
    s.processor = "bm9999".into();
    match calibrate(&s, &Silent) {
        Err(Error::Setting { setting, message }) => {
            assert_eq!(setting, "processor");
            assert!(message.contains("`bm9999`"), "{message}");
        }
        other => panic!("expected a setting error, got {:?}", other.err()),
    }
    let s = settings(CalibrationSource::from_samples(Vec::new()), &table);
    let e = calibrate(&s, &Silent).err().expect("no samples");
    assert!(e.message().contains("no calibration samples"), "{e}");
    let s = settings(
        CalibrationSource::NpzFiles(vec![dir.join("missing.npz")]),
        &table,
    );
    match calibrate(&s, &Silent) {
        Err(Error::File { path, message }) => {
            assert_eq!(path, Some(dir.join("missing.npz")), "{message}");
        }
        other => panic!("expected a file error, got {:?}", other.err()),
    }
    // A sample that does not fit the input names it.
    let wrong = Tensor::from_f32(vec![1, 3], vec![0.0; 3]).unwrap();
    let mut sample = BTreeMap::new();
    sample.insert("input".to_string(), wrong);
    let s = settings(CalibrationSource::from_samples(vec![sample]), &table);
    let e = calibrate(&s, &Silent).err().expect("wrong shape");
    assert!(
        e.message().contains("<in-memory sample 0>") && e.message().contains("shape"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
