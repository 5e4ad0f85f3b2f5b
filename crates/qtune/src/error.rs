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
            | Error::Internal { message } => message,
        }
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
            Error::Internal { .. } => Error::Internal { message },
        }
    }
}

/// The kind of the innermost error of a chain that says one: an [`Error`]
/// raised by the facade keeps its kind; the lower crates' errors are
/// classified by variant.
fn kind_of(e: &anyhow::Error, message: String) -> Error {
    for cause in e.chain() {
        if let Some(own) = cause.downcast_ref::<Error>() {
            return own.with_message(message);
        }
    }
    let file = |path: Option<&Path>| Error::File {
        path: path.map(Path::to_path_buf),
        message: message.clone(),
    };
    let unsupported = Error::Unsupported {
        message: message.clone(),
    };
    // The root cause decides: it is what went wrong; the rest is context.
    let Some(root) = e.chain().last() else {
        return Error::Input { message };
    };
    if root.downcast_ref::<std::io::Error>().is_some() {
        // The path is in the context above it.
        let path = e.chain().find_map(|c| {
            if let Some(qtune_data::DataError::Io { path, .. }) = c.downcast_ref() {
                return Some(path.clone());
            }
            if let Some(qtune_search::SearchError::Io { path, .. }) = c.downcast_ref() {
                return Some(path.clone());
            }
            if let Some(qtune_quant::QuantError::Io { path, .. }) = c.downcast_ref() {
                return Some(path.clone());
            }
            None
        });
        return file(path.as_deref());
    }
    if let Some(npz) = root.downcast_ref::<qtune_tensor::NpzError>() {
        return match npz {
            qtune_tensor::NpzError::Read { path, .. }
            | qtune_tensor::NpzError::Write { path, .. } => file(Some(path)),
            qtune_tensor::NpzError::UnsupportedType { .. } => unsupported,
        };
    }
    if let Some(qtune_ir::mlir::MlirError::Io { path, .. }) = root.downcast_ref() {
        return file(Some(path));
    }
    if let Some(onnx) = root.downcast_ref::<qtune_onnx::OnnxError>() {
        use qtune_onnx::OnnxError as O;
        if matches!(
            onnx,
            O::UnsupportedOpset { .. }
                | O::UnsupportedDomain { .. }
                | O::UnsupportedOp { .. }
                | O::UnsupportedDType { .. }
        ) {
            return unsupported;
        }
    }
    if let Some(qtune_ir::mlir::MlirError::Unsupported { .. }) = root.downcast_ref() {
        return unsupported;
    }
    Error::Input { message }
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
    qtune_search::SearchError,
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
    }
}
