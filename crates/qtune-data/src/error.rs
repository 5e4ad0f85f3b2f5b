//! The one error type of this crate.

use std::path::PathBuf;

use qtune_tensor::TensorError;

/// Everything that can go wrong while reading or preprocessing inputs.
///
/// Variants that concern a file carry its path; flag errors carry the TPU-MLIR
/// flag name and the offending text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    #[error("cannot read image `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode image `{path}`: {message}")]
    Decode { path: PathBuf, message: String },
    #[error("flag --{flag} `{value}`: {message}")]
    Flag {
        flag: &'static str,
        value: String,
        message: String,
    },
    #[error("invalid preprocess configuration: {0}")]
    Config(String),
    #[error("cannot preprocess a {width}x{height} image: {message}")]
    Geometry {
        width: usize,
        height: usize,
        message: String,
    },
    #[error("image `{path}`: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<DataError>,
    },
    #[error("cannot build a thread pool with {threads} threads: {message}")]
    ThreadPool { threads: usize, message: String },
    #[error("dataset `{path}`: {message}")]
    Dataset { path: PathBuf, message: String },
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

impl DataError {
    /// Attaches a file path to an error that does not name one yet.
    pub(crate) fn in_file(self, path: &std::path::Path) -> DataError {
        match self {
            DataError::Io { .. } | DataError::Decode { .. } | DataError::InFile { .. } => self,
            other => DataError::InFile {
                path: path.to_path_buf(),
                source: Box::new(other),
            },
        }
    }
}
