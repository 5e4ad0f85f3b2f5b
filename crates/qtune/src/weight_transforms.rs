//! `--sq` and `--we`: the float-preserving transforms run
//! before calibration, in TPU-MLIR's order (SmoothQuant, then weight
//! equalization; spec 1.1), with their log files (spec 2.3).
//!
//! Unlike TPU-MLIR, which rewrites the input model's weight file in place,
//! the transformed model is a new Top .mlir next to the calibration table:
//! `<table>_sq.mlir`, `<table>_we.mlir` or `<table>_sq_we.mlir`, with its
//! weights in `<same stem>_weight.npz`, both written atomically. The
//! calibration table is computed on (and keyed by the op names of) that
//! model, so it is the model to deploy.

use std::path::{Path, PathBuf};

use anyhow::Context;
use qtune_calibrate::{Progress, SampleLoader};
use qtune_data::{PreprocessConfig, select_data_list};
use qtune_exec::{Executor, PrepareOptions};
use qtune_ir::mlir::{InputAttrs, MlirWriteOptions, write_top_mlir};
use qtune_tensor::{write_atomic, write_npz};
use qtune_transforms::{
    EqualizeReport, EqualizeSettings, SmoothQuantReport, SmoothQuantSettings, equalize_weights,
    smooth_quant,
};

use crate::Reporter;
use crate::Result;
use crate::model::{self, Naming};
use crate::source::Selected;

/// What the transforms need to know.
pub struct TransformRequest<'a> {
    pub we: bool,
    /// SmoothQuant (`--sq`) and its settings.
    pub sq: Option<SmoothQuantSettings>,
    pub model: &'a Path,
    pub calibration_table: &'a Path,
    pub tune_list: Option<&'a Path>,
    pub input_attrs: &'a [InputAttrs],
}

/// The transformed model, ready to calibrate.
pub struct Transformed {
    pub model: PathBuf,
    pub exec: Executor,
    pub loader: SampleLoader,
    pub tune_loader: Option<SampleLoader>,
    /// Before/after figures for the report.
    pub transforms: Vec<qtune_report::Transform>,
}

/// The transformed model's file stem: `<table>` followed by `_sq`, `_we`
/// and `_bc` for the transforms applied, in that order.
pub fn output_stem(table: &Path, sq: bool, we: bool, bc: bool) -> PathBuf {
    let name = table
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cali_table".to_string());
    let mut tag = String::new();
    for (on, t) in [(sq, "_sq"), (we, "_we"), (bc, "_bc")] {
        if on {
            tag.push_str(t);
        }
    }
    table.with_file_name(format!("{name}{tag}"))
}

/// A TPU-MLIR log file (`logging.basicConfig(filename=...)`): the old file
/// is replaced, every line is `INFO:root:<message>`.
pub fn write_log(name: &str, messages: &[String]) -> Result<()> {
    let path = Path::new(name);
    Ok(write_atomic(path, |w| {
        for m in messages {
            writeln!(w, "INFO:root:{m}")?;
        }
        Ok(())
    })
    .with_context(|| format!("cannot write log `{name}`"))?)
}

use std::io::Write as _;

/// The op name the .mlir writer gives a Conv writing tensor `name` (a
/// Conv with BatchNorm folded writes the BatchNorm's tensor).
pub fn conv_op_name(name: &str) -> String {
    if name.ends_with("_Conv") {
        name.to_string()
    } else {
        format!("{name}_Conv")
    }
}

/// The report with the op names of the written .mlir.
fn with_file_names(mut report: EqualizeReport) -> EqualizeReport {
    for p in &mut report.pairs {
        p.first = conv_op_name(&p.first);
        p.second = conv_op_name(&p.second);
    }
    for p in &mut report.skipped {
        p.first = conv_op_name(&p.first);
        p.second = conv_op_name(&p.second);
    }
    for (c, _) in &mut report.blocked_by_activation {
        *c = conv_op_name(c);
    }
    report
}

fn equalization_log(report: &EqualizeReport) -> Vec<String> {
    let mut lines = Vec::new();
    for p in &report.pairs {
        // One line pair per iteration, as TPU-MLIR logs them; the last loss
        // is below the tolerance when the pair converged.
        for (k, loss) in p.losses.iter().enumerate() {
            lines.push(format!(
                "Cross Layer WE: {} --- {} Groups: {} Iter: {}",
                p.first,
                p.second,
                p.groups,
                k + 1
            ));
            lines.push(format!(">>>loss:{loss}"));
        }
        if !p.converged {
            lines.push(format!(
                "{} --- {}: not converged after {} iterations (qtune's cap)",
                p.first,
                p.second,
                p.iterations()
            ));
        }
    }
    for s in &report.skipped {
        lines.push(format!("skip {} --- {}: {}", s.first, s.second, s.reason));
    }
    for (c, act) in &report.blocked_by_activation {
        lines.push(format!(
            "skip {c}: its successor Conv is behind {act}, which is not positively homogeneous"
        ));
    }
    lines
}

fn smooth_quant_log(report: &SmoothQuantReport) -> Vec<String> {
    let mut lines = vec![format!("SmoothQuant alpha: {}", report.alpha)];
    for s in &report.smoothed {
        lines.push(format!(
            "smooth {}{} -> [{}] channels: {} act_max: {} -> {} weight_max: {} -> {}",
            s.source,
            match (&s.duplicate, &s.inserted) {
                (Some(d), _) => format!(" (as {d})"),
                (None, Some(m)) => format!(" (through {m})"),
                (None, None) => String::new(),
            },
            s.users.join(", "),
            s.channels,
            s.activation_before,
            s.activation_after,
            s.weight_before,
            s.weight_after
        ));
    }
    for (name, reason) in &report.skipped {
        lines.push(format!("skip {name}: {reason}"));
    }
    lines
}

/// Runs `--sq` then `--we` on `exec`'s graph (BatchNorm folded), writes the
/// new model and the logs, and returns it loaded with loaders for its
/// inputs. `None` when neither is asked for.
pub fn apply(
    req: &TransformRequest<'_>,
    exec: &Executor,
    loader: &SampleLoader,
    selection: Selected,
    configs: Vec<Option<PreprocessConfig>>,
    reporter: &dyn Reporter,
) -> Result<Option<Transformed>> {
    let progress: &dyn Progress = reporter;
    if !req.we && req.sq.is_none() {
        return Ok(None);
    }
    let mut summary = Vec::new();
    let mut transforms = Vec::new();
    let mut graph = exec.graph().clone();
    if let Some(settings) = &req.sq {
        let (smoothed, report) = smooth_quant(exec, loader, settings, progress)
            .with_context(|| format!("SmoothQuant of `{}`", req.model.display()))?;
        graph = smoothed;
        transforms.push(qtune_transforms::report::smooth_quant_transform(&report));
        write_log("SmoothQuant", &smooth_quant_log(&report))?;
        let users: usize = report.smoothed.iter().map(|s| s.users.len()).sum();
        let dup = report
            .smoothed
            .iter()
            .filter(|s| s.duplicate.is_some())
            .count();
        let inserted = report
            .smoothed
            .iter()
            .filter(|s| s.inserted.is_some())
            .count();
        summary.push(format!(
            "SmoothQuant (alpha {}): {} LayerNorm(s) ({dup} duplicated for their other readers), {inserted} inserted Mul(s), {users} Gemm/MatMul layer(s), {} LayerNorm(s) skipped (log: SmoothQuant)",
            report.alpha,
            report.smoothed.len() - inserted,
            report.skipped.len()
        ));
        for s in &report.smoothed {
            summary.push(format!(
                "  {} -> {} layer(s): activation abs-max {:.4} -> {:.4}, weight abs-max {:.4} -> {:.4}",
                s.source,
                s.users.len(),
                s.activation_before,
                s.activation_after,
                s.weight_before,
                s.weight_after
            ));
        }
    }
    if req.we {
        let report = equalize_weights(&mut graph, &EqualizeSettings::default())
            .with_context(|| format!("weight equalization of `{}`", req.model.display()))?;
        let report = with_file_names(report);
        transforms.push(qtune_transforms::report::equalize_transform(&report));
        write_log("Weight_Equalization", &equalization_log(&report))?;
        let not_converged = report.pairs.iter().filter(|p| !p.converged).count();
        summary.push(format!(
            "weight equalization: {} Conv pair(s), {not_converged} not converged, {} skipped, {} behind a non-homogeneous activation such as ReLU6 (log: Weight_Equalization)",
            report.pairs.len(),
            report.skipped.len(),
            report.blocked_by_activation.len()
        ));
        for p in &report.pairs {
            summary.push(format!(
                "  {} --- {}{} ({} iter): C1 channel ranges [{:.4}, {:.4}] -> [{:.4}, {:.4}], C2 [{:.4}, {:.4}] -> [{:.4}, {:.4}]",
                p.first,
                p.second,
                p.activation.map_or_else(String::new, |a| format!(" via {a}")),
                p.iterations(),
                p.first_before.min,
                p.first_before.max,
                p.first_after.min,
                p.first_after.max,
                p.second_before.min,
                p.second_before.max,
                p.second_after.min,
                p.second_after.max
            ));
        }
    }

    let stem = output_stem(req.calibration_table, req.sq.is_some(), req.we, false);
    let (mlir_path, weight_path) = write_model(&graph, &stem, req.model, req.input_attrs)?;
    summary.push(format!(
        "wrote the transformed model {} and {} (the input model is unchanged)",
        mlir_path.display(),
        weight_path.display()
    ));
    let mut reloaded = reload(&mlir_path, selection, configs, req.tune_list)?;
    reloaded.transforms = transforms;
    for line in &summary {
        reporter.line(line);
    }
    Ok(Some(reloaded))
}

/// The `.mlir` [`write_model`] writes for `stem`: `<stem>.mlir`.
pub fn model_path(stem: &Path) -> PathBuf {
    stem.with_file_name(format!(
        "{}.mlir",
        stem.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ))
}

/// Writes `graph` as `<stem>.mlir` with its weights in
/// `<stem>_weight.npz` (weights first, then the .mlir that names them;
/// both atomically) and returns both paths. `model` is the input model
/// (its stem names the module).
pub fn write_model(
    graph: &qtune_ir::Graph,
    stem: &Path,
    model: &Path,
    input_attrs: &[InputAttrs],
) -> Result<(PathBuf, PathBuf)> {
    let mlir_path = model_path(stem);
    let weight_name = format!(
        "{}_weight.npz",
        stem.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let model_name = model
        .file_stem()
        .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned());
    let mut wopts = MlirWriteOptions::new(model_name);
    wopts.weight_file = weight_name.clone();
    wopts.input_attrs = input_attrs.to_vec();
    let (text, weights) = write_top_mlir(graph, &wopts)
        .with_context(|| format!("writing the transformed model of `{}`", model.display()))?;
    let weight_path = mlir_path.with_file_name(&weight_name);
    write_npz(&weight_path, &weights)?;
    write_atomic(&mlir_path, |w| w.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write `{}`", mlir_path.display()))?;
    Ok((mlir_path, weight_path))
}

/// Loads a written model with loaders for its inputs: what is calibrated
/// next (the table is keyed by its op names).
pub fn reload(
    mlir_path: &Path,
    selection: Selected,
    configs: Vec<Option<PreprocessConfig>>,
    tune_list: Option<&Path>,
) -> Result<Transformed> {
    let loaded = model::load_model(mlir_path, None, &PrepareOptions::default(), Naming::TopOps)?;
    let exec = loaded.exec;
    let g = exec.graph();
    let loader = selection
        .loader(g, configs.clone())
        .with_context(|| format!("model `{}`", mlir_path.display()))?;
    let tune_loader = match tune_list {
        Some(list) => Some(SampleLoader::new(
            g,
            select_data_list(list, 0, g.inputs.len())?,
            configs,
        )?),
        None => None,
    };
    Ok(Transformed {
        model: mlir_path.to_path_buf(),
        exec,
        loader,
        tune_loader,
        transforms: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_follow_the_table() {
        assert_eq!(
            output_stem(Path::new("out/cali_table"), false, true, false),
            PathBuf::from("out/cali_table_we")
        );
        assert_eq!(
            output_stem(Path::new("t"), true, true, false),
            PathBuf::from("t_sq_we")
        );
        assert_eq!(
            output_stem(Path::new("t"), true, false, false),
            PathBuf::from("t_sq")
        );
        assert_eq!(
            output_stem(Path::new("t"), false, false, true),
            PathBuf::from("t_bc")
        );
        assert_eq!(
            output_stem(Path::new("t"), false, true, true),
            PathBuf::from("t_we_bc")
        );
    }
}
