//! Pure calibration math for qtune, following TPU-MLIR v1.30.2
//! (`../shared/reference/tpu-mlir-quant-spec.md`, sections 2.1, 2.2, 3.1-3.3):
//! per-tensor statistics fed one sample at a time and mergeable
//! ([`TensorStats`]), the threshold methods (kl, max, mse, percentile9999,
//! aciq_gauss, aciq_laplace, PyTorch's HistogramObserver), the special cases
//! that need graph knowledge ([`special_case_overrides`]), and the
//! calibration-table and qtable formats. Knows nothing of graphs.
#![deny(clippy::as_conversions)]

pub mod cali_table;
mod conv;
pub mod distance;
mod error;
mod exact_sum;
pub mod histogram;
pub mod kl;
pub mod methods;
pub mod qtable;
mod simd;
pub mod special;
pub mod stats;
pub mod torch_observer;

pub use cali_table::{CalibrationRow, CalibrationTable, HistogramLine, TimeLine, format_7f};
pub use error::QuantError;
pub use histogram::{GrowingHistogram, HistogramLayout, MAX_HISTOGRAM_BINS};
pub use kl::{kl_diversity_hist, kl_threshold};
pub use methods::{
    PercentileSchedule, threshold_aciq_gauss, threshold_aciq_laplace, threshold_mse,
};
pub use qtable::{QtableFile, QtableRow, QuantMode, QuantizeTable, parse_qtable, read_qtable};
pub use special::{SpecialCaseTensor, special_case_overrides};
pub use stats::{
    CalibrationMethod, PercentileThreshold, SampleSummary, StatsConfig, TensorStats, Thresholds,
    zero_threshold_warning,
};
pub use torch_observer::TorchHistogramObserver;

#[cfg(test)]
mod tests;
