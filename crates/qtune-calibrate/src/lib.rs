//! The calibration driver of qtune (TPU-MLIR's `run_calibration`;
//! `../shared/reference/tpu-mlir-quant-spec.md` sections 2.1, 2.4, 2.7 and
//! 3.1 to 3.4).
//!
//! * [`SampleLoader`]: selected sample files (or arrays in memory) to the
//!   graph inputs of one batch.
//! * [`calibrate`]: one streaming statistics pass through the executor's
//!   value hook, thresholds with the special cases, threshold tuning
//!   (`tune_refs`, `tune_elementwise`: the tuner's float references and its
//!   fake-quantized re-runs).
//! * [`CalibrationOutcome::write_tables`]: the table files, as TPU-MLIR
//!   writes them (`<cali>.1` first).
//! * [`fake_quant`]: int8 fake quantization of activations and weights.
//! * [`shape_layers`]: the shape-computing ops for the float qtable.
//! * [`hessian`]: the layer inputs' Hessians (GPTQ's calibration).
//! * [`PipelineError`]: the error of the pipeline's steps, shared by
//!   `qtune-transforms` and `qtune-mixed`.

mod calibrate;
mod error;
pub mod fake_quant;
pub mod hessian;
mod inputs;
mod shape_ops;
mod tune_elementwise;
pub mod tune_refs;

pub use calibrate::{
    CalibrationOutcome, CalibrationSettings, DEFAULT_KEEP_MEMORY_BYTES, NoProgress, Progress,
    TableEntry, TableHeader, ThresholdRows, calibrate, calibrate_methods, collect_statistics,
    table_entries, thresholds_to_rows, untuned_path,
};
pub use error::PipelineError;
pub use hessian::{HessianSettings, Sequential, collect_hessians, sequential_hessians};
pub use inputs::SampleLoader;
pub use shape_ops::shape_layers;
// The calibration-math types callers need alongside the driver.
pub use qtune_quant::{
    CalibrationMethod, CalibrationRow, CalibrationTable, QuantMode, QuantizeTable, TimeLine,
};
