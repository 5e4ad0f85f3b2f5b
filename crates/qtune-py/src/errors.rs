//! The exceptions of the package and the mapping of Rust errors onto them.
//!
//! `QtuneError` is the base; `InputError` is a bad file, array or argument
//! (what the command-line tools answer with exit code 2); `UnsupportedError`
//! a model or op qtune cannot handle (an ONNX op, opset, domain or element
//! type it does not know, a node the `.mlir` writer cannot express, a layer a
//! processor cannot quantize). A failed check (a deployed model below its
//! tolerance) and an internal error (a panic caught at the boundary) are
//! plain `QtuneError`s. No Rust panic crosses into the interpreter.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    qtune,
    QtuneError,
    PyException,
    "Base class of the errors qtune raises."
);
create_exception!(
    qtune,
    InputError,
    QtuneError,
    "A bad file, array or argument; the message names it and what was expected."
);
create_exception!(
    qtune,
    UnsupportedError,
    QtuneError,
    "A model, op or setting qtune does not support; the message names it."
);

/// Whether any error of the chain says that qtune does not support
/// something (rather than that the input is malformed).
fn is_unsupported(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        if let Some(onnx) = cause.downcast_ref::<qtune_onnx::OnnxError>() {
            return matches!(
                onnx,
                qtune_onnx::OnnxError::UnsupportedOp { .. }
                    | qtune_onnx::OnnxError::UnsupportedDomain { .. }
                    | qtune_onnx::OnnxError::UnsupportedOpset { .. }
                    | qtune_onnx::OnnxError::UnsupportedDType { .. }
            );
        }
        if let Some(mlir) = cause.downcast_ref::<qtune_ir::mlir::MlirError>() {
            return matches!(mlir, qtune_ir::mlir::MlirError::Unsupported { .. });
        }
        if let Some(deploy) = cause.downcast_ref::<qtune_deploy::DeployError>() {
            return matches!(deploy, qtune_deploy::DeployError::Unsupported(_));
        }
        false
    })
}

/// The Python exception of an error of a qtune call: the whole chain in
/// one message, as the tools print it after `error:`.
pub fn to_py(e: anyhow::Error) -> PyErr {
    let message = format!("{e:#}");
    // The facade's errors say their kind.
    if let Some(kind) = e.chain().find_map(|c| c.downcast_ref::<qtune::Error>()) {
        return match kind {
            qtune::Error::Unsupported { .. } => UnsupportedError::new_err(message),
            qtune::Error::Internal { .. } | qtune::Error::CheckFailed { .. } => {
                QtuneError::new_err(message)
            }
            _ => InputError::new_err(message),
        };
    }
    if e.downcast_ref::<qtune_cli::CheckFailed>().is_some() {
        QtuneError::new_err(message)
    } else if is_unsupported(&e) {
        UnsupportedError::new_err(message)
    } else {
        InputError::new_err(message)
    }
}

/// Runs `f`, turning a panic into an `anyhow` error that says it is a bug,
/// so that it reaches Python as a `QtuneError` instead of aborting the
/// interpreter.
pub fn no_panic<T>(f: impl FnOnce() -> anyhow::Result<T>) -> Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Error(e)),
        Err(payload) if qtune_exec::cancel::is_cancelled(payload.as_ref()) => {
            Err(Failure::Cancelled)
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(Failure::Panic(what))
        }
    }
}

/// Why a call failed: an error of the work, a panic (a qtune bug), or a
/// cancellation (Ctrl-C, see `work`).
#[derive(Debug)]
pub enum Failure {
    Error(anyhow::Error),
    Panic(String),
    Cancelled,
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        match f {
            Failure::Error(e) => to_py(e),
            Failure::Panic(what) => QtuneError::new_err(format!(
                "internal error (a qtune bug, please report it): {what}"
            )),
            Failure::Cancelled => {
                pyo3::exceptions::PyKeyboardInterrupt::new_err("the qtune call was cancelled")
            }
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Error(e)
    }
}
