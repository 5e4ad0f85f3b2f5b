//! Calibration tables and qtables in TPU-MLIR's formats, read and written
//! by `qtune-quant` (the readers the tools use, with their tolerance of
//! TPU-MLIR's variants). `qtune.CalibrationTable` and `qtune.QuantizeTable`
//! are the Python faces of these.

use std::path::{Path, PathBuf};

use pyo3::prelude::*;
use qtune_quant::qtable::{QuantMode, QuantizeTable, read_qtable as read_qtable_file};
use qtune_quant::{CalibrationRow, CalibrationTable};

use crate::errors::{InputError, no_panic};

/// A calibration table as `qtune-quant` holds it: the rows, the header and
/// the trailing sections (`#int4_th`, `#asym_op`, ...), which a load and a
/// save keep.
#[pyclass(module = "qtune._native")]
#[derive(Clone, Default)]
pub struct NativeCalibrationTable {
    table: CalibrationTable,
}

#[pymethods]
impl NativeCalibrationTable {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Reads a table file (TPU-MLIR's formats).
    #[staticmethod]
    fn read(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let table = py
            .detach(|| no_panic(|| Ok(CalibrationTable::read(&path)?)))
            .map_err(PyErr::from)?;
        Ok(NativeCalibrationTable { table })
    }

    /// `(name, threshold, min, max)` per row, in file order.
    fn rows(&self) -> Vec<(String, f64, f64, f64)> {
        self.table
            .rows
            .iter()
            .map(|r| (r.name.clone(), r.threshold, r.min, r.max))
            .collect()
    }

    /// Replaces the rows.
    fn set_rows(&mut self, rows: Vec<(String, f64, f64, f64)>) -> PyResult<()> {
        let mut out = Vec::with_capacity(rows.len());
        for (name, threshold, min, max) in rows {
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Err(InputError::new_err(format!(
                    "calibration table row `{name}`: a tensor name must be one word \
                     without whitespace"
                )));
            }
            out.push(CalibrationRow::new(name, threshold, min, max));
        }
        self.table.rows = out;
        Ok(())
    }

    /// Writes the table atomically, in TPU-MLIR's layout.
    fn write(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| no_panic(|| Ok(self.table.write(&path)?)))
            .map_err(PyErr::from)
    }

    /// The file text.
    fn to_text(&self) -> String {
        self.table.to_text()
    }

    /// What the reader skipped or will not apply (rows with a NaN, ...).
    fn warnings(&self) -> Vec<String> {
        self.table.warnings()
    }

    /// The calibration method of the header (`kl`, `['kl']` when tuned).
    #[getter]
    fn method(&self) -> String {
        self.table.method.clone()
    }

    #[setter]
    fn set_method(&mut self, method: String) {
        self.table.method = method;
    }

    /// The number of calibration samples of the header.
    #[getter]
    fn sample_number(&self) -> usize {
        self.table.sample_number
    }

    #[setter]
    fn set_sample_number(&mut self, n: usize) {
        self.table.sample_number = n;
    }

    /// The model file named by the header.
    #[getter]
    fn mlir_file(&self) -> String {
        self.table.mlir_file.clone()
    }

    fn __copy__(&self) -> Self {
        self.clone()
    }
}

/// Reads a qtable: `((name, mode), ...)` in file order (modes in TPU-MLIR's
/// spelling) and the one-token lines TPU-MLIR skips, as `(line, text)`.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn read_qtable(
    py: Python<'_>,
    path: PathBuf,
) -> PyResult<(Vec<(String, String)>, Vec<(usize, String)>)> {
    let file = py
        .detach(|| no_panic(|| Ok(read_qtable_file(&path)?)))
        .map_err(PyErr::from)?;
    let rows = file
        .rows
        .iter()
        .map(|r| (r.name.clone(), r.mode.name().to_string()))
        .collect();
    Ok((rows, file.one_token_lines))
}

/// The mode of a qtable row, or an error naming the layer.
fn mode_of(layer: &str, mode: &str, path: &Path) -> PyResult<QuantMode> {
    QuantMode::parse(mode).ok_or_else(|| {
        let known: Vec<&str> = QuantMode::ALL.iter().map(|m| m.name()).collect();
        InputError::new_err(format!(
            "qtable `{}`, layer `{layer}`: unknown quantize mode `{mode}` (expected one of {}, \
             in any case)",
            path.display(),
            known.join(", ")
        ))
    })
}

/// Writes a qtable (TPU-MLIR's `QuantizeTable.dump` layout, no time line):
/// the rows as custom layers, in order; `chip` goes to the header.
#[pyfunction]
#[pyo3(signature = (path, rows, chip="bm1684x".to_string()))]
pub fn write_qtable(
    py: Python<'_>,
    path: PathBuf,
    rows: Vec<(String, String)>,
    chip: String,
) -> PyResult<()> {
    let mut custom = Vec::with_capacity(rows.len());
    for (layer, mode) in rows {
        if layer.is_empty() || layer.chars().any(char::is_whitespace) || layer.starts_with('#') {
            return Err(InputError::new_err(format!(
                "qtable `{}`: layer `{layer}` must be one word without whitespace, not \
                 starting with `#`",
                path.display()
            )));
        }
        let m = mode_of(&layer, &mode, &path)?;
        custom.push((layer, m));
    }
    let table = QuantizeTable {
        chip,
        custom_layers: custom,
        ..QuantizeTable::default()
    };
    py.detach(|| no_panic(|| Ok(table.write(&path)?)))
        .map_err(PyErr::from)
}
