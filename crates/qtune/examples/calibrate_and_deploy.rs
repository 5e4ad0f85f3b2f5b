//! Calibrates the bundled demo model (EfficientNet-Lite0) on its 32 photos
//! and deploys it as an INT8 QDQ ONNX model for bm1684x, through the
//! library alone:
//!
//! ```sh
//! cargo run --release -p qtune --example calibrate_and_deploy [OUT_DIR]
//! ```
//!
//! The same as `scripts/demo.sh`'s `run_calibration` and `model_deploy`
//! steps, except that the .onnx is calibrated directly (with
//! model_transform's preprocessing given as settings) instead of its .mlir.

use std::path::{Path, PathBuf};
use std::time::Instant;

use qtune::{
    CalibrateSettings, CalibrationSource, QuantizeSettings, Silent, calibrate, deploy, with_threads,
};

fn main() -> Result<(), qtune::Error> {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/demo");
    let out = std::env::args()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("qtune-example"), PathBuf::from);
    std::fs::create_dir_all(&out)?;
    let model = demo.join("efficientnet_lite0.onnx");
    let table = out.join("efficientnet_lite0_cali_table");

    // Calibration: kl with 5 tuning samples (the defaults), on the photos
    // preprocessed as model_transform is told to in scripts/demo.sh.
    let start = Instant::now();
    let mut settings = CalibrateSettings::new(
        &model,
        CalibrationSource::Dataset(demo.join("images")),
        &table,
    );
    settings.input_shapes = Some("[[1,3,224,224]]".into());
    settings.input_num = 32;
    settings.preprocess.resize_dims = Some("224,224".into());
    settings.preprocess.pixel_format = Some("rgb".into());
    settings.preprocess.mean = Some("127,127,127".into());
    settings.preprocess.scale = Some("0.0078125,0.0078125,0.0078125".into());
    let calibration = with_threads(None, || calibrate(&settings, &Silent))?;
    let qtable = out.join("shape_pattern_qtable");
    calibration.write(&table, &qtable, None)?;
    println!(
        "calibrated {} tensors on {} photos in {:.2} s: {}",
        calibration.outcome.rows().len(),
        calibration.loader.sample_count(),
        start.elapsed().as_secs_f64(),
        table.display()
    );

    // Deployment: the INT8 plan for bm1684x, its simulation, the QDQ model.
    let start = Instant::now();
    let mut quantize = QuantizeSettings::default();
    quantize.calibration_table = Some(table.clone());
    let deployment = deploy(&calibration.model, &quantize, &Silent)?;
    for line in deployment.summary() {
        println!("{line}");
    }
    let qdq = out.join("efficientnet_lite0_int8.onnx");
    deployment.write_onnx(&qdq)?;
    println!(
        "wrote {} in {:.2} s",
        qdq.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
