//! The search log files (spec section 2.3): `LEVEL:root:<message>` lines,
//! written atomically at the end (and on failure, up to the failure), with
//! `print_info` lines also shown on the console.

use std::path::{Path, PathBuf};

use crate::PipelineError;

/// Lines of one search log file, and the console they echo to.
pub struct SearchLog<'a> {
    path: PathBuf,
    lines: Vec<String>,
    console: Box<dyn FnMut(&str) + 'a>,
}

impl<'a> SearchLog<'a> {
    /// A log written to `path`; `console` receives the lines TPU-MLIR
    /// prints (its `print_info`) and plain prints.
    pub fn new(path: impl Into<PathBuf>, console: Box<dyn FnMut(&str) + 'a>) -> Self {
        SearchLog {
            path: path.into(),
            lines: Vec::new(),
            console,
        }
    }

    /// An `INFO:root:` line of the file only.
    pub fn info(&mut self, msg: impl AsRef<str>) {
        self.lines.push(format!("INFO:root:{}", msg.as_ref()));
    }

    /// An `INFO:root:` line, also printed.
    pub fn print_info(&mut self, msg: impl AsRef<str>) {
        self.info(msg.as_ref());
        (self.console)(msg.as_ref());
    }

    /// Whether the all-int8 model already beats `expected_cos`; if so,
    /// logs and prints TPU-MLIR's early-exit line (its spelling kept).
    pub fn int8_is_enough(&mut self, int8_cos: f64, expected_cos: f64) -> bool {
        let enough = int8_cos > expected_cos;
        if enough {
            self.print_info(format!(
                "job success, current int8 cos:{int8_cos} is higher than expected_cos:{expected_cos},no need for mix precsion"
            ));
        }
        enough
    }

    /// A `WARNING:root:` line, also printed as `WARNING: <msg>`.
    pub fn warning(&mut self, msg: impl AsRef<str>) {
        self.lines.push(format!("WARNING:root:{}", msg.as_ref()));
        (self.console)(&format!("WARNING: {}", msg.as_ref()));
    }

    /// A console line that is not logged (TPU-MLIR's plain `print`).
    pub fn print(&mut self, msg: impl AsRef<str>) {
        (self.console)(msg.as_ref());
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Writes the file (atomically).
    pub fn write(&self) -> Result<(), PipelineError> {
        let mut text = self.lines.join("\n");
        text.push('\n');
        qtune_tensor::write_atomic(&self.path, |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })
        .map_err(|source| PipelineError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// A Python list repr of strings: `['a', 'b']`.
pub fn py_list<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("'{}'", s.as_ref())).collect();
    format!("[{}]", inner.join(", "))
}
