//! A qtable matched against a model, as TPU-MLIR's lowering uses one
//! (`ConvertTopToTpu::init_qtable` and `getOpQuantMode` in
//! `lib/Conversion/TopToTpu/TopToTpuPass.cpp`): the rows go into a map from
//! op name to mode, and each op looks its own name up. A row naming no op of
//! the model is therefore never looked up and has no effect, and a line with
//! one token is skipped; TPU-MLIR says nothing about either. qtune does the
//! same, and reports what it skipped ([`QtableMatch::skipped_summary`]) so
//! that a qtable written for another graph does not go unnoticed.

use std::collections::HashSet;
use std::path::Path;

use qtune_ir::Graph;
use qtune_quant::{QtableFile, QtableRow, QuantMode};

use crate::DeployError;

/// The rows of a qtable split by whether they name an op of the model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QtableMatch {
    /// Rows naming an op output or a graph input of the model, in file
    /// order: the rows that apply.
    pub rows: Vec<QtableRow>,
    /// Rows naming nothing in the model, in file order.
    pub unknown: Vec<QtableRow>,
    /// `(line, text)` of the lines with one token.
    pub one_token_lines: Vec<(usize, String)>,
}

/// Splits `file`'s rows into those naming an op of `graph` and the others.
/// A name matches when it is the name of an op output or of a graph input,
/// which is the rule [`crate::Plan::new`] applies to the rows it is given.
pub fn match_qtable(graph: &Graph, file: &QtableFile) -> QtableMatch {
    let mut names: HashSet<&str> = HashSet::new();
    for (_, node) in graph.nodes() {
        for &o in &node.outputs {
            names.insert(graph.value(o).name.as_str());
        }
    }
    for &i in &graph.inputs {
        names.insert(graph.value(i).name.as_str());
    }
    let (rows, unknown) = file
        .rows
        .iter()
        .cloned()
        .partition(|r| names.contains(r.name.as_str()));
    QtableMatch {
        rows,
        unknown,
        one_token_lines: file.one_token_lines.clone(),
    }
}

impl QtableMatch {
    /// The rows that apply, as [`crate::PlanRequest::qtable`] takes them.
    pub fn pairs(&self) -> Vec<(String, QuantMode)> {
        self.rows.iter().map(|r| (r.name.clone(), r.mode)).collect()
    }

    /// One line counting and listing the lines of the qtable at `path` that
    /// TPU-MLIR skips, or `None` when there are none.
    pub fn skipped_summary(&self, path: &Path) -> Option<String> {
        let total = self.unknown.len() + self.one_token_lines.len();
        if total == 0 {
            return None;
        }
        let mut parts = Vec::new();
        if !self.unknown.is_empty() {
            let list: Vec<String> = self
                .unknown
                .iter()
                .map(|r| format!("line {} `{}`", r.line, r.name))
                .collect();
            parts.push(format!(
                "{} naming no op of the model ({})",
                self.unknown.len(),
                list.join(", ")
            ));
        }
        if !self.one_token_lines.is_empty() {
            let list: Vec<String> = self
                .one_token_lines
                .iter()
                .map(|(line, text)| format!("line {line} `{text}`"))
                .collect();
            parts.push(format!(
                "{} with one token ({})",
                self.one_token_lines.len(),
                list.join(", ")
            ));
        }
        Some(format!(
            "qtable `{}`: {total} line(s) that TPU-MLIR skips: {}",
            path.display(),
            parts.join("; ")
        ))
    }

    /// Refuses the rows whose mode qtune cannot deploy, naming them:
    /// TPU-MLIR's INT4 / F8 / F4 modes (which need its backend). The rows that do not
    /// apply to the model are not checked, as TPU-MLIR never looks at them.
    pub fn check_modes(&self, path: &Path) -> Result<(), DeployError> {
        let list = |pick: &dyn Fn(QuantMode) -> bool| -> Vec<String> {
            self.rows
                .iter()
                .filter(|r| pick(r.mode))
                .map(|r| format!("line {} `{} {}`", r.line, r.name, r.mode))
                .collect()
        };
        let other = list(&|m| {
            !m.is_weight_only()
                && !matches!(
                    m,
                    QuantMode::F32 | QuantMode::F16 | QuantMode::BF16 | QuantMode::Int8
                )
        });
        let mut problems = Vec::new();
        if !other.is_empty() {
            problems.push(format!(
                "qtune deploys INT8, F16, BF16, F32 and weight-only (W8F16, W8BF16, W4F16, \
                 W4BF16) layers; TPU-MLIR's INT4, F8 and F4 modes need its backend: {}",
                other.join(", ")
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DeployError::Unsupported(format!(
                "qtable `{}`: {}",
                path.display(),
                problems.join("; ")
            )))
        }
    }
}
