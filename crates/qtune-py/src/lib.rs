//! `qtune._native`: the extension module of the qtune Python package.
//!
//! The pure-Python part (`python/qtune/`) wraps these functions with the
//! public API, docstrings and type stubs; this module converts between
//! numpy arrays and qtune tensors, releases the GIL while qtune works, runs
//! the work so that Ctrl-C reaches Python at once, and turns every error
//! (and any panic) into an exception of `qtune.QtuneError`'s hierarchy.
//! The pipeline itself is reached through `pipeline` only.

mod convert;
mod errors;
mod pipeline;
mod tables;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use qtune_tensor::Tensor;

use errors::{QtuneError, no_panic};
use pipeline::Flag;

/// A worker whose call was cancelled by Ctrl-C and had not stopped when
/// the caller got its `KeyboardInterrupt`; the next call waits for it.
static STOPPING: std::sync::Mutex<Option<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(None);

/// Runs `f` on a worker thread while the calling thread waits without the
/// GIL, checking for signals ten times a second. Ctrl-C raises
/// `KeyboardInterrupt` at once and cancels the work (`qtune_exec::cancel`:
/// the graph runs stop at their next node and unwind); the caller waits up
/// to a second for that, and a call that had not stopped by then is waited
/// for by the next call, which its cancellation would otherwise stop too.
/// Outputs are written atomically: a cancelled call leaves none. The
/// cancellation is process-wide: Ctrl-C stops every qtune call running in
/// the process, as it would end the command-line tools.
fn work<T: Send + 'static>(
    py: Python<'_>,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> PyResult<T> {
    let previous = STOPPING.lock().map(|mut s| s.take()).unwrap_or(None);
    if let Some(h) = previous {
        py.detach(move || {
            let _ = h.join();
        });
    }
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("qtune-work".to_string())
        // The command-line tools run on the main thread's 8 MiB stack.
        .stack_size(8 << 20)
        .spawn(move || {
            let result = no_panic(f);
            // The work is over (finished, failed or unwound): a request
            // made for it must not stop the next call.
            qtune_exec::cancel::clear();
            let _ = tx.send(result);
        })
        .map_err(|e| QtuneError::new_err(format!("cannot start a worker thread: {e}")))?;
    let mut rx = rx;
    loop {
        // The receiver is not `Sync`: it goes into the GIL-free section and
        // comes back out.
        let (got, back) = py.detach(move || (rx.recv_timeout(Duration::from_millis(100)), rx));
        rx = back;
        match got {
            Ok(result) => {
                let _ = handle.join();
                return result.map_err(PyErr::from);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    qtune_exec::cancel::request();
                    let (got, _) = py.detach(move || (rx.recv_timeout(Duration::from_secs(1)), rx));
                    match got {
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if let Ok(mut s) = STOPPING.lock() {
                                *s = Some(handle);
                            }
                        }
                        _ => {
                            let _ = handle.join();
                        }
                    }
                    return Err(interrupt);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(QtuneError::new_err(
                    "internal error: the worker thread ended without a result",
                ));
            }
        }
    }
}

/// Runs the command-line tool `tool` (`qtune`, `run_calibration`, ...) in
/// this process on `argv` (`argv[0]` first) and returns its exit code. The
/// console scripts call this after restoring the default SIGINT action, so
/// that Ctrl-C ends them as it ends the binaries. A panic exits 101, as a
/// panicking binary does.
#[pyfunction]
fn tool_main(py: Python<'_>, tool: String, argv: Vec<OsString>) -> PyResult<u8> {
    let code = py.detach(|| {
        let code = std::panic::catch_unwind(move || qtune_cli::tool_main(&tool, argv).ok_or(tool));
        // A binary's stdout is flushed when its `main` returns; here the
        // interpreter goes on (or exits without Rust's clean-up).
        let _ = std::io::Write::flush(&mut std::io::stdout());
        code
    });
    match code {
        Ok(Ok(code)) => Ok(code),
        Ok(Err(tool)) => Err(errors::InputError::new_err(format!(
            "unknown tool `{tool}` (expected one of {})",
            qtune_cli::TOOLS.join(", ")
        ))),
        Err(_) => Ok(101),
    }
}

/// Float inference; see `qtune.run`.
#[pyfunction]
#[pyo3(signature = (model, inputs, input_shapes=None, threads=None))]
fn run<'py>(
    py: Python<'py>,
    model: PathBuf,
    inputs: &Bound<'py, PyDict>,
    input_shapes: Option<String>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut arrays: Vec<(String, Tensor)> = Vec::with_capacity(inputs.len());
    for (k, v) in inputs.iter() {
        let name: String = k.extract().map_err(|_| {
            errors::InputError::new_err(format!(
                "inputs: keys must be graph input names (str), got {}",
                k.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let t = convert::tensor_of(&v, &name)?;
        arrays.push((name, t));
    }
    let outputs = work(py, move || {
        pipeline::run(&model, input_shapes.as_deref(), &arrays, threads)
    })?;
    convert::dict_of(py, outputs)
}

/// Reads an npz file into a dict of arrays (qtune's npz reader).
#[pyfunction]
fn read_npz<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let arrays = py
        .detach(|| no_panic(|| Ok(qtune_tensor::read_npz(&path)?)))
        .map_err(PyErr::from)?;
    convert::dict_of(py, arrays)
}

/// Writes a dict of arrays as an npz file (atomically).
#[pyfunction]
fn write_npz(py: Python<'_>, path: PathBuf, arrays: &Bound<'_, PyDict>) -> PyResult<()> {
    let mut tensors = Vec::with_capacity(arrays.len());
    for (k, v) in arrays.iter() {
        let name: String = k.extract()?;
        let t = convert::tensor_of(&v, &name)?;
        tensors.push((name, t));
    }
    py.detach(|| no_panic(|| Ok(qtune_tensor::write_npz(&path, &tensors)?)))
        .map_err(PyErr::from)
}

/// Compares a target array with a reference array as `npz_tool compare`
/// does: `(verdict, cosine, euclidean, sqnr, max_abs_diff)`; the measures
/// are `None` when the element counts differ (`NOT_MATCH`).
#[pyfunction]
#[pyo3(signature = (target, reference, cosine=0.99, euclidean=0.99))]
#[allow(clippy::type_complexity)]
fn compare_arrays(
    py: Python<'_>,
    target: &Bound<'_, PyAny>,
    reference: &Bound<'_, PyAny>,
    cosine: f64,
    euclidean: f64,
) -> PyResult<(&'static str, Option<(f64, f64, f64, f64)>)> {
    let a = convert::tensor_of(target, "target")?;
    let b = convert::tensor_of(reference, "reference")?;
    let tol = qtune_tensor::compare::Tolerance { cosine, euclidean };
    let mut c = py.detach(|| pipeline::compare(&[(String::new(), a)], &[(String::new(), b)], tol));
    let Some((_, c)) = c.pop() else {
        return Err(QtuneError::new_err(
            "internal error: the comparison of two arrays gave no result",
        ));
    };
    Ok((
        c.verdict.name(),
        c.similarity
            .map(|s| (s.cosine, s.euclidean, s.sqnr, s.max_abs_diff)),
    ))
}

/// The flags of a pipeline call, as `(name, value or None)` pairs.
fn flags_of(flags: Vec<(String, Option<String>)>) -> Vec<Flag> {
    flags
        .into_iter()
        .map(|(name, value)| Flag { name, value })
        .collect()
}

/// `model_transform` in this process; see `qtune.transform`.
#[pyfunction]
fn transform(
    py: Python<'_>,
    model_def: PathBuf,
    mlir: PathBuf,
    flags: Vec<(String, Option<String>)>,
) -> PyResult<()> {
    let flags = flags_of(flags);
    work(py, move || pipeline::transform(&model_def, &mlir, &flags))
}

/// Calibration in this process (the facade's `calibrate`, or with
/// `search` its searches); see `qtune.calibrate`. `samples`: calibration
/// samples in memory (dicts of arrays), instead of a dataset flag. A search
/// returns what it found (see `outcome_dict`), plain calibration `None`.
#[pyfunction]
#[pyo3(signature = (model, table, flags, samples=None))]
fn calibrate<'py>(
    py: Python<'py>,
    model: PathBuf,
    table: PathBuf,
    flags: Vec<(String, Option<String>)>,
    samples: Option<Vec<Bound<'py, PyDict>>>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let flags = flags_of(flags);
    let samples = samples_of(samples)?;
    let found = work(py, move || {
        pipeline::calibrate(&model, &table, &flags, samples)
    })?;
    found.map(|f| outcome_dict(py, &f)).transpose()
}

/// Calibration samples in memory: each a dict of graph input name -> array.
type Samples = Option<Vec<std::collections::BTreeMap<String, Tensor>>>;

fn samples_of(samples: Option<Vec<Bound<'_, PyDict>>>) -> PyResult<Samples> {
    let Some(list) = samples else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, d) in list.iter().enumerate() {
        let mut sample = std::collections::BTreeMap::new();
        for (k, v) in d.iter() {
            let name: String = k.extract().map_err(|_| {
                errors::InputError::new_err(format!(
                    "calibration_data sample {i}: keys must be graph input names (str)"
                ))
            })?;
            let t = convert::tensor_of(&v, &format!("sample {i} `{name}`"))?;
            sample.insert(name, t);
        }
        out.push(sample);
    }
    Ok(Some(out))
}

/// What a search found, as a dict: `float_layers`, `chosen_method`,
/// `all_int8_cos`, `final_cos`, `layer_scores` (list of (name, value)),
/// `early_exit`, `written` (paths).
fn outcome_dict<'py>(
    py: Python<'py>,
    o: &qtune::search::SearchOutcome,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("float_layers", o.float_layers.clone())?;
    d.set_item("chosen_method", o.chosen_method.clone())?;
    d.set_item("all_int8_cos", o.all_int8_cos)?;
    d.set_item("final_cos", o.final_cos)?;
    d.set_item("layer_scores", o.layer_scores.clone())?;
    d.set_item("early_exit", o.early_exit)?;
    d.set_item("written", o.written.clone())?;
    Ok(d)
}

/// The facade's deploy in this process; see `qtune.quantize`.
#[pyfunction]
#[pyo3(signature = (model, output, *, quantize, processor, calibration_table=None,
    quantize_table=None, asymmetric=false, test_input=None, test_reference=None,
    threads=None, verbose=true))]
#[allow(clippy::too_many_arguments)]
fn deploy(
    py: Python<'_>,
    model: PathBuf,
    output: PathBuf,
    quantize: String,
    processor: String,
    calibration_table: Option<PathBuf>,
    quantize_table: Option<PathBuf>,
    asymmetric: bool,
    test_input: Option<PathBuf>,
    test_reference: Option<PathBuf>,
    threads: Option<usize>,
    verbose: bool,
) -> PyResult<()> {
    let request = pipeline::DeployRequest {
        model,
        output,
        quantize,
        processor,
        calibration_table,
        quantize_table,
        asymmetric,
        test_input,
        test_reference,
        threads,
        verbose,
    };
    work(py, move || pipeline::deploy(&request))
}

/// `run_qtable` in this process (the facade's `mix_search`); see
/// `qtune.run_qtable`.
#[pyfunction]
#[pyo3(signature = (model, qtable, flags, samples=None))]
fn run_qtable<'py>(
    py: Python<'py>,
    model: PathBuf,
    qtable: PathBuf,
    flags: Vec<(String, Option<String>)>,
    samples: Option<Vec<Bound<'py, PyDict>>>,
) -> PyResult<Bound<'py, PyDict>> {
    let flags = flags_of(flags);
    let samples = samples_of(samples)?;
    let found = work(py, move || {
        pipeline::run_qtable(&model, &qtable, &flags, samples)
    })?;
    outcome_dict(py, &found)
}

/// `run_sensitive_layer` in this process (the facade's
/// `sensitive_layers`); see `qtune.sensitive_layers`.
#[pyfunction]
#[pyo3(signature = (model, qtable, flags, samples=None))]
fn sensitive_layers<'py>(
    py: Python<'py>,
    model: PathBuf,
    qtable: PathBuf,
    flags: Vec<(String, Option<String>)>,
    samples: Option<Vec<Bound<'py, PyDict>>>,
) -> PyResult<Bound<'py, PyDict>> {
    let flags = flags_of(flags);
    let samples = samples_of(samples)?;
    let found = work(py, move || {
        pipeline::sensitive_layers(&model, &qtable, &flags, samples)
    })?;
    outcome_dict(py, &found)
}

/// A fresh temporary directory (for outputs the caller does not keep).
#[pyfunction]
fn temp_dir(prefix: String) -> PyResult<PathBuf> {
    no_panic(|| pipeline::temp_dir(&prefix)).map_err(PyErr::from)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("QtuneError", py.get_type::<errors::QtuneError>())?;
    m.add("InputError", py.get_type::<errors::InputError>())?;
    m.add(
        "UnsupportedError",
        py.get_type::<errors::UnsupportedError>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("TOOLS", qtune_cli::TOOLS.to_vec())?;
    let modes: Vec<&str> = qtune_quant::QuantMode::ALL
        .iter()
        .map(|m| m.name())
        .collect();
    m.add("QUANT_MODES", modes)?;
    m.add_function(wrap_pyfunction!(tool_main, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(read_npz, m)?)?;
    m.add_function(wrap_pyfunction!(write_npz, m)?)?;
    m.add_function(wrap_pyfunction!(compare_arrays, m)?)?;
    m.add_function(wrap_pyfunction!(transform, m)?)?;
    m.add_function(wrap_pyfunction!(calibrate, m)?)?;
    m.add_function(wrap_pyfunction!(deploy, m)?)?;
    m.add_function(wrap_pyfunction!(run_qtable, m)?)?;
    m.add_function(wrap_pyfunction!(sensitive_layers, m)?)?;
    m.add_function(wrap_pyfunction!(temp_dir, m)?)?;
    m.add_class::<tables::NativeCalibrationTable>()?;
    m.add_function(wrap_pyfunction!(tables::read_qtable, m)?)?;
    m.add_function(wrap_pyfunction!(tables::write_qtable, m)?)?;
    Ok(())
}
