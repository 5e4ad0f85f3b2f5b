//! The one error type of the facade.
//!
//! Every variant carries the whole message a user reads (the context chain
//! joined with `: `, outermost first, as the command-line tools print it),
//! and says what kind of problem it is, so that a caller (the CLI, the
//! Python package) can map kinds to exit codes or exception classes without
//! parsing text.

use std::path::{Path, PathBuf};

/// What went wrong, by kind. The `message` of every variant is the complete
/// text to show; the other fields say where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is wrong: a value outside its domain, or settings that do
    /// not go together. `setting` names it as the command line spells it
    /// (`processor`, `cali_method`, ...), or is empty for a combination.
    #[error("{message}")]
    Setting { setting: String, message: String },
    /// A file cannot be found, read or written. `path` is the file when the
    /// error came with one.
    #[error("{message}")]
    File {
        path: Option<PathBuf>,
        message: String,
    },
    /// The content of an input (model, sample, table) is malformed or does
    /// not fit the model.
    #[error("{message}")]
    Input { message: String },
    /// The model uses something qtune does not support (an operator, an
    /// opset, a domain, a data type).
    #[error("{message}")]
    Unsupported { message: String },
    /// A check ran and failed: the quantized model's outputs are below the
    /// tolerance against the reference (the command-line tools exit 1, not
    /// 2: the inputs were fine).
    #[error("{message}")]
    CheckFailed { message: String },
    /// An invariant of qtune does not hold: a bug.
    #[error("{message}")]
    Internal { message: String },
}

/// The facade's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A wrong setting `setting` (as the command line names it).
    pub fn setting(setting: &str, message: impl Into<String>) -> Self {
        Error::Setting {
            setting: setting.to_string(),
            message: message.into(),
        }
    }

    /// A problem with the file at `path`.
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Error::File {
            path: Some(path.to_path_buf()),
            message: message.into(),
        }
    }

    /// The text to show (the same as `Display`).
    pub fn message(&self) -> &str {
        match self {
            Error::Setting { message, .. }
            | Error::File { message, .. }
            | Error::Input { message }
            | Error::Unsupported { message }
            | Error::CheckFailed { message }
            | Error::Internal { message } => message,
        }
    }

    /// The same error with `what: ` before its message (the context of a
    /// lower-level error, as anyhow's `context` adds it).
    #[must_use]
    pub fn context(self, what: &str) -> Self {
        let message = format!("{what}: {}", self.message());
        self.with_message(message)
    }

    /// The same kind and fields with another message.
    fn with_message(&self, message: String) -> Self {
        match self {
            Error::Setting { setting, .. } => Error::Setting {
                setting: setting.clone(),
                message,
            },
            Error::File { path, .. } => Error::File {
                path: path.clone(),
                message,
            },
            Error::Input { .. } => Error::Input { message },
            Error::Unsupported { .. } => Error::Unsupported { message },
            Error::CheckFailed { .. } => Error::CheckFailed { message },
            Error::Internal { .. } => Error::Internal { message },
        }
    }
}

/// What a lower crate's error says about its kind: `Some(File(path))` for
/// a file that cannot be found, read or written, `Some(Unsupported)` for
/// what qtune does not support, `None` otherwise. Transparent wrappers
/// (`PipelineError::Npz`, ...) forward `source()` past the wrapped error, so
/// they are opened here.
enum Kind {
    File(Option<PathBuf>),
    Unsupported,
    /// A wrong setting (the pipeline's `Settings`).
    Setting,
    /// A broken invariant (the pipeline's `Internal`).
    Internal,
}

fn kind_of_lower(e: &(dyn std::error::Error + 'static)) -> Option<Kind> {
    use qtune_calibrate::PipelineError;
    use qtune_data::DataError;
    use qtune_onnx::OnnxError;
    if e.downcast_ref::<std::io::Error>().is_some() {
        return Some(Kind::File(None));
    }
    if let Some(s) = e.downcast_ref::<PipelineError>() {
        return match s {
            PipelineError::Io { path, .. } => Some(Kind::File(Some(path.clone()))),
            PipelineError::Npz(n) => kind_of_lower(n),
            PipelineError::Data(d) => kind_of_lower(d),
            PipelineError::Quant(q) => kind_of_lower(q),
            PipelineError::Settings(_) => Some(Kind::Setting),
            PipelineError::Internal(_) => Some(Kind::Internal),
            _ => None,
        };
    }
    if let Some(d) = e.downcast_ref::<DataError>() {
        return match d {
            DataError::Io { path, .. } | DataError::Dataset { path, .. } => {
                Some(Kind::File(Some(path.clone())))
            }
            _ => None,
        };
    }
    if let Some(qtune_quant::QuantError::Io { path, .. }) = e.downcast_ref() {
        return Some(Kind::File(Some(path.clone())));
    }
    if let Some(n) = e.downcast_ref::<qtune_tensor::NpzError>() {
        return match n {
            qtune_tensor::NpzError::Read { path, .. }
            | qtune_tensor::NpzError::Write { path, .. } => Some(Kind::File(Some(path.clone()))),
            qtune_tensor::NpzError::UnsupportedType { .. } => Some(Kind::Unsupported),
        };
    }
    if let Some(m) = e.downcast_ref::<qtune_ir::mlir::MlirError>() {
        return match m {
            qtune_ir::mlir::MlirError::Io { path, .. } => Some(Kind::File(Some(path.clone()))),
            qtune_ir::mlir::MlirError::Unsupported { .. } => Some(Kind::Unsupported),
            _ => None,
        };
    }
    if let Some(o) = e.downcast_ref::<OnnxError>() {
        return match o {
            OnnxError::Io(_) => Some(Kind::File(None)),
            OnnxError::UnsupportedOpset { .. }
            | OnnxError::UnsupportedDomain { .. }
            | OnnxError::UnsupportedOp { .. }
            | OnnxError::UnsupportedDType { .. } => Some(Kind::Unsupported),
            _ => None,
        };
    }
    None
}

/// The kind of an error chain: an [`Error`] raised by the facade keeps its
/// kind; otherwise the innermost lower-crate error that says one decides
/// (the rest is context); anything else is about the input's content.
fn kind_of(e: &anyhow::Error, message: String) -> Error {
    for cause in e.chain() {
        if let Some(own) = cause.downcast_ref::<Error>() {
            return own.with_message(message);
        }
    }
    let kinds: Vec<Kind> = e.chain().filter_map(kind_of_lower).collect();
    match kinds.last() {
        Some(Kind::Unsupported) => Error::Unsupported { message },
        Some(Kind::Setting) => Error::Setting {
            setting: String::new(),
            message,
        },
        Some(Kind::Internal) => Error::Internal { message },
        Some(Kind::File(_)) => {
            // A bare I/O error at the root: the path is in its context.
            let path = kinds.iter().rev().find_map(|k| match k {
                Kind::File(p) => p.clone(),
                _ => None,
            });
            Error::File { path, message }
        }
        None => Error::Input { message },
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        // `{:#}` joins the chain with ": ", as the tools print errors.
        let message = format!("{e:#}");
        kind_of(&e, message)
    }
}

/// The lower crates' errors convert through the classification above.
macro_rules! from_lower {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::from(anyhow::Error::new(e))
            }
        })*
    };
}

from_lower!(
    std::io::Error,
    qtune_tensor::TensorError,
    qtune_tensor::NpzError,
    qtune_ir::IrError,
    qtune_ir::mlir::MlirError,
    qtune_onnx::OnnxError,
    qtune_exec::ExecError,
    qtune_data::DataError,
    qtune_quant::QuantError,
    qtune_deploy::DeployError,
    qtune_calibrate::PipelineError,
    qtune_report::ReportError,
);

/// `return Err(..)` with a formatted message of kind [`Error::Input`]
/// (anyhow's `bail!`, returning the facade's error).
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::from(anyhow::anyhow!($($arg)*)))
    };
}
pub(crate) use bail;

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn kinds_survive_context_and_messages_join_the_chain() {
        let own: Result<()> = Err(Error::setting(
            "processor",
            "--processor `x`: expected one of a",
        ));
        let wrapped = own.context("calibrating `m.onnx`").unwrap_err();
        let e = Error::from(wrapped);
        assert_eq!(
            e,
            Error::Setting {
                setting: "processor".into(),
                message: "calibrating `m.onnx`: --processor `x`: expected one of a".into()
            }
        );
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = Error::from(anyhow::Error::new(io).context("reading `t.txt`"));
        assert!(matches!(e, Error::File { path: None, .. }), "{e:?}");
        assert_eq!(e.message(), "reading `t.txt`: gone");
        let npz = qtune_tensor::NpzError::Read {
            path: PathBuf::from("a.npz"),
            message: "bad".into(),
        };
        match Error::from(npz) {
            Error::File { path, message } => {
                assert_eq!(path, Some(PathBuf::from("a.npz")));
                assert_eq!(message, "cannot read npz file `a.npz`: bad");
            }
            other => panic!("{other:?}"),
        }
        let e = Error::from(anyhow::anyhow!("node `n`: wrong"));
        assert!(matches!(e, Error::Input { .. }));
        // The pipeline's wrong setting and broken invariant keep their kinds.
        use qtune_calibrate::PipelineError;
        let e = Error::from(PipelineError::Settings(
            "--histogram_bin_num must be at least 2".into(),
        ));
        assert!(matches!(e, Error::Setting { .. }), "{e:?}");
        let e = Error::from(
            anyhow::Error::new(PipelineError::Internal("no reference model was run".into()))
                .context("run_qtable"),
        );
        assert_eq!(
            e,
            Error::Internal {
                message: "run_qtable: internal error: no reference model was run".into()
            }
        );
    }
}
