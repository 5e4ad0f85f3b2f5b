//! The calibration driver of qtune (TPU-MLIR's `run_calibration` as a
//! library; `../shared/reference/tpu-mlir-quant-spec.md` sections 2.1, 2.4,
//! 2.7 and 3.1 to 3.4). The later searches (search_threshold,
//! search_qtable, ...) will live here too.
//!
//! * [`SampleLoader`]: selected sample files to the graph inputs of one batch.
//! * [`calibrate`]: one streaming statistics pass through the executor's
//!   value hook, thresholds with the special cases, threshold tuning.
//! * [`CalibrationOutcome::write_tables`]: the table files, as TPU-MLIR
//!   writes them (`<cali>.1` first).
//! * [`shape_layers`]: the shape-computing ops for the float qtable.
//! * [`equalize_weights`] (`--we`) and [`smooth_quant`] (`--sq`): graph
//!   transforms that keep the float function and ease int8 quantization.
//! * [`bias_correction`] (`--bc`): per-channel bias correction of the int8
//!   model's mean error, Conv by Conv.

mod bias_correction;
mod calibrate;
mod equalize;
mod error;
pub mod fake_quant;
mod fp_forward;
pub mod hessian;
mod inputs;
pub mod mix;
pub mod post_process;
pub mod report;
mod shape_ops;
mod smooth_quant;
mod transformer_pattern;
mod tune_elementwise;
mod tune_refs;

pub use bias_correction::{
    BiasCorrectionReport, BiasCorrectionSettings, ConvCorrection, CorrectionOutcome,
    bias_correction, bias_correction_fingerprint,
};
pub use calibrate::{
    CalibrationOutcome, CalibrationSettings, DEFAULT_KEEP_MEMORY_BYTES, NoProgress, Progress,
    TableEntry, TableHeader, ThresholdRows, calibrate, calibrate_methods, collect_statistics,
    table_entries, thresholds_to_rows, untuned_path,
};
pub use equalize::{
    ChannelRanges, EqualizeReport, EqualizeSettings, EqualizedPair, SkippedPair, equalize_weights,
};
pub use error::SearchError;
pub use fp_forward::{fp_forward_layers, fp_forward_table, parse_block};
pub use hessian::{HessianSettings, Sequential, collect_hessians, sequential_hessians};
pub use inputs::SampleLoader;
pub use post_process::{PostProcess, PostProcessError, parse_compare_layers};
pub use shape_ops::shape_layers;
pub use smooth_quant::{
    SmoothQuantReport, SmoothQuantScope, SmoothQuantSettings, SmoothedLayerNorm, smooth_quant,
};
pub use transformer_pattern::transformer_pattern_layers;
// The calibration-math types callers need alongside the driver.
pub use qtune_quant::{
    CalibrationMethod, CalibrationRow, CalibrationTable, QuantMode, QuantizeTable, TimeLine,
};
