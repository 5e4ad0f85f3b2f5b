//! The weight transforms of `run_calibration` (spec 3.11, 3.12, 3.17):
//! graph rewrites that keep the float function (or, for bias correction,
//! correct the int8 model's mean error) and ease int8 quantization.
//!
//! * [`equalize_weights`] (`--we`): cross-layer equalization of
//!   Conv -> (Relu) -> Conv pairs.
//! * [`smooth_quant`] (`--sq`): SmoothQuant's per-channel migration of
//!   activation outliers into the weights of Gemm/MatMul layers.
//! * [`bias_correction`] (`--bc`): per-channel bias correction of the int8
//!   model's mean error, Conv by Conv (on `qtune-mixed`'s evaluator).

// The calibration crate's error and progress, as `crate::` paths.
pub(crate) use qtune_calibrate::{PipelineError, Progress};

mod bias_correction;
mod equalize;
pub mod report;
mod smooth_quant;

pub use bias_correction::{
    BiasCorrectionReport, BiasCorrectionSettings, ConvCorrection, CorrectionOutcome,
    bias_correction, bias_correction_fingerprint,
};
pub use equalize::{
    ChannelRanges, EqualizeReport, EqualizeSettings, EqualizedPair, SkippedPair, equalize_weights,
};
pub use smooth_quant::{
    SmoothQuantReport, SmoothQuantScope, SmoothQuantSettings, SmoothedLayerNorm, smooth_quant,
};
