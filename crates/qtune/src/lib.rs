//! qtune's pipeline as a library: what the command-line tools
//! (`run_calibration`, `model_deploy`, ...) do, as typed calls a Rust
//! program (and the Python package) makes.
//!
//! * [`model_transform()`]: TPU-MLIR's `model_transform` (ONNX to Top
//!   `.mlir` and its weights, validated on a test input).
//! * [`model`]: load a model (`.onnx` or Top-dialect `.mlir`) with its
//!   preprocessing ([`Preprocess`]); [`parse_input_shapes`].
//! * [`CalibrationSource`]: the samples (a dataset folder, a data list, npz
//!   files, or arrays in memory).
//! * [`calibrate`]: `--sq`, `--we`, the statistics and thresholds, `--bc`,
//!   giving a [`Calibration`] (the table as a value, written by
//!   [`Calibration::write`]).
//! * [`deploy()`]: quantize a model per processor, calibration table and
//!   qtable ([`QuantizeSettings`]) into a [`Deployment`]: the plan, its
//!   integer simulation, the QDQ ONNX export.
//! * [`model_deploy()`]: TPU-MLIR's `model_deploy` as one call (quantize,
//!   check on test arrays, write the QDQ model and the report).
//! * [`compare::compare`]: two sets of named tensors compared as
//!   `npz_tool compare` does.
//! * [`search`]: the mixed-precision tools (`search_threshold`,
//!   `search_qtable`, `fast_search`, `mix_search` / run_qtable,
//!   `sensitive_layers`, `fp_forward`): settings in, TPU-MLIR's files
//!   written, a [`search::SearchOutcome`] back; resumable from their
//!   journals.
//! * [`report`]: the HTML report, chart or text table of a run
//!   ([`Calibration::report`], the searches' and model_deploy's).
//! * [`processor`]: the processors `--processor` names.
//! * [`Error`]: one error type whose variants say what kind of problem it
//!   is (a wrong setting, a file, the input's content, something
//!   unsupported, a bug).
//!
//! Nothing here prints or exits: console lines and progress go through a
//! [`Reporter`] (use [`Silent`] for none).
//!
//! ```no_run
//! use qtune::{CalibrateSettings, CalibrationSource, Silent, calibrate};
//!
//! let settings = CalibrateSettings::new(
//!     "model.onnx",
//!     CalibrationSource::Dataset("images".into()),
//!     "cali_table",
//! );
//! let calibration = calibrate(&settings, &Silent)?;
//! println!("{} thresholds", calibration.outcome.rows().len());
//! calibration.write("cali_table".as_ref(), "shape_pattern_qtable".as_ref(), None)?;
//! # Ok::<(), qtune::Error>(())
//! ```

mod bias_correction;
pub mod calibration;
pub mod compare;
pub mod deploy;
mod error;
pub mod model;
mod model_deploy;
mod model_transform;
mod preprocess;
pub mod processor;
pub mod report;
pub mod search;
mod source;
pub mod transforms;
mod weight_transforms;

pub use calibration::{
    BiasCorrection, CalibrateSettings, Calibration, CalibrationInput, WrittenTables,
    bias_correction_request, calibrate, calibration_input, check_preprocess, parse_method,
    python_now, qtable_default_path,
};
pub use deploy::{
    Deployment, QuantizeSettings, WeightCalibration, deploy, deploy_observed, quantize,
};
pub(crate) use error::bail;
pub use error::{Error, Result};
pub use model::{LoadedModel, Naming, OnnxIoNames, load_model, parse_input_shapes};
pub use model_deploy::{Deployed, ModelDeploy, model_deploy, outputs_path};
pub use model_transform::{TransformSettings, model_transform};
pub use preprocess::{Preprocess, model_preprocess};
pub use processor::{check_processor, float_mode, processor_names};
pub use source::{CalibrationSource, Selected};
// The types the results are made of.
pub use qtune_calibrate::{
    CalibrationMethod, CalibrationOutcome, CalibrationSettings, CalibrationTable, NoProgress,
    Progress, QuantMode, QuantizeTable, SampleLoader, TableHeader, TimeLine,
};
pub use qtune_deploy::{WeightMethod, WeightOnly};
pub use qtune_tensor::Tensor;
pub use qtune_transforms::{SmoothQuantScope, SmoothQuantSettings};

/// Receives what a long operation has to say: progress of its stages
/// ([`Progress`]) and console lines (summaries of the transforms, the
/// searches' log lines). The CLI prints the lines on stdout unless
/// `--quiet`; the Python package shows them when `verbose`.
pub trait Reporter: Progress {
    /// One line of console output (no trailing newline).
    fn line(&self, _line: &str) {}
    /// One warning line (the CLI prints them on stderr, even with
    /// `--quiet`).
    fn warning(&self, _line: &str) {}
    /// One status line about files written (the CLI prints them on stderr
    /// unless `--quiet`).
    fn note(&self, _line: &str) {}
}

/// A [`Reporter`] that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Progress for Silent {}
impl Reporter for Silent {}

/// Runs `f` inside a rayon pool of `threads` workers (default: all cores).
/// The whole operation runs on a pool thread, so the kernels' parallel
/// sections start without a hand-off from an outside thread. Results do
/// not depend on the thread count.
pub fn with_threads<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        builder = builder.num_threads(n.max(1));
    }
    let pool = builder.build().map_err(|e| Error::Internal {
        message: format!("cannot start {} threads: {e}", threads.unwrap_or(0)),
    })?;
    pool.install(f)
}
