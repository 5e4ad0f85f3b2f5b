//! The error of the pipeline's steps: calibration here, and the weight
//! transforms (`qtune-transforms`) and the searches (`qtune-mixed`).

use std::path::PathBuf;

use qtune_data::DataError;
use qtune_exec::ExecError;
use qtune_quant::QuantError;
use qtune_tensor::{NpzError, TensorError};

/// Everything that can go wrong while calibrating. Variants that concern a
/// file carry its path; those that concern a tensor or an op name it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Deploy(#[from] qtune_deploy::DeployError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Ir(#[from] qtune_ir::IrError),
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error(transparent)]
    Npz(#[from] NpzError),
    #[error("sample `{path}`: {message}")]
    Sample { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `--post_process` script or its python3 child failed. The problem
    /// is part of the message rather than a `source`, so that printing the
    /// error chain does not repeat it.
    #[error("post_process script `{script}`: {problem}")]
    PostProcess {
        script: PathBuf,
        /// `qtune_mixed::PostProcessError`.
        problem: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A setting (a flag, an option of a call) is wrong or does not fit
    /// the model.
    #[error("invalid calibration settings: {0}")]
    Settings(String),
    /// An invariant of the pipeline does not hold: a bug in qtune, not a
    /// problem of the inputs.
    #[error("internal error: {0}")]
    Internal(String),
    /// A graph transform (weight equalization, SmoothQuant) cannot handle
    /// a node.
    #[error("node `{node}` ({op}): {message}")]
    Transform {
        node: String,
        op: &'static str,
        message: String,
    },
}
