use std::path::PathBuf;

/// Errors of the calibration math and of the table formats.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    #[error("tensor `{tensor}`: empty sample (0 elements) cannot be observed")]
    EmptySample { tensor: String },
    #[error("tensor `{tensor}`: no sample was observed")]
    NoSamples { tensor: String },
    #[error(
        "tensor `{tensor}`: sample size changed from {expected} to {actual} elements; the percentile tails need a fixed size"
    )]
    SampleSizeChanged {
        tensor: String,
        expected: usize,
        actual: usize,
    },
    #[error("invalid statistics configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot merge statistics of tensor `{tensor}`: {reason}")]
    Merge { tensor: String, reason: String },
    #[error("{path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
