//! `--bc`: bias correction after the main calibration
//! (spec 1.1 and 3.12), with its log file `Bias_Correction` (spec 2.3).
//! The work is in `qtune_transforms::bias_correction`.
//!
//! Unlike TPU-MLIR, which rewrites the model's weight npz in place, the
//! corrected model is a new Top .mlir next to the table, named like the
//! other transforms' models: `<table>_bc.mlir` (`<table>_we_bc.mlir` after
//! --we, ...), weights in `<same stem>_weight.npz`. run_calibration then
//! calibrates that model, so the final table names it.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use qtune_calibrate::{CalibrationTable, Progress, QuantMode};
use qtune_data::PreprocessConfig;
use qtune_deploy::Processor;
use qtune_exec::Executor;
use qtune_ir::mlir::InputAttrs;
use qtune_mixed::journal::Journal;
use qtune_mixed::log::SearchLog;
use qtune_tensor::Tensor;
use qtune_transforms::{
    BiasCorrectionReport, BiasCorrectionSettings, CorrectionOutcome, bias_correction,
};

use crate::source::Selected;
use crate::weight_transforms::{self, Transformed, conv_op_name, output_stem};
use crate::{Reporter, Result};

/// What bias correction needs.
pub struct BcRequest<'a> {
    /// The input model (its stem names the written module).
    pub input_model: &'a Path,
    pub calibration_table: &'a Path,
    /// Transforms applied before (they name the output: `_sq_we_bc`).
    pub sq: bool,
    pub we: bool,
    pub processor: &'a str,
    pub fp_type: &'a str,
    pub bc_inference_num: usize,
    pub settings: BiasCorrectionSettings,
    /// The samples (the first `bc_inference_num` are used).
    pub source: &'a crate::CalibrationSource,
    pub tune_list: Option<&'a Path>,
    pub input_attrs: &'a [InputAttrs],
    /// Continue from the journal an interrupted run left
    /// (`<corrected model>.mlir.journal`).
    pub resume: bool,
}

/// The first `n` samples of the dataset (or data list) for `graph`, as the
/// graph inputs by name: TPU-MLIR selects them like calibration samples,
/// with `input_num = bc_inference_num`.
fn bc_samples(
    req: &BcRequest,
    graph: &qtune_ir::Graph,
    configs: &[Option<PreprocessConfig>],
) -> Result<Vec<Vec<(String, Tensor)>>> {
    let n = req.bc_inference_num;
    let selection = req.source.select(n, graph.inputs.len())?;
    let loader = selection.loader(graph, configs.to_vec())?;
    (0..loader.batch_count())
        .map(|i| {
            Ok(loader
                .load(i)?
                .into_iter()
                .map(|(id, t)| (graph.value(id).name.clone(), t))
                .collect())
        })
        .collect()
}

/// The `Bias_Correction` log (spec 2.3 texts), with op names as the
/// written model spells them.
fn log_lines(report: &BiasCorrectionReport, expected_cos: f64, log: &mut SearchLog) {
    if report.already_accurate {
        log.print_info(format!(
            "job success, current int8 cos:{} is higher than expected_cos:{expected_cos}, no need for bias correction",
            report.int8_cos
        ));
    }
    for c in &report.convs {
        let op = conv_op_name(&c.name);
        log.info(format!("old_layer_cos:{}", c.old_layer_cos));
        if let (Some(layer), Some(out)) = (c.new_layer_cos, c.outputs_cos) {
            let what = if c.outcome == CorrectionOutcome::Applied {
                "applied"
            } else {
                "revocation"
            };
            log.info(format!(
                "op:{op} bias correction {what}, layer_cos:{layer}, outputs_cos:{out}"
            ));
        }
    }
    log.info(">>>run result:");
    log.info(format!("int8 outputs_cos:{:.6} old", report.int8_cos));
    log.info("bias correction statistic:");
    for c in &report.convs {
        if let (Some(layer), Some(out)) = (c.new_layer_cos, c.outputs_cos) {
            log.info(format!(
                "  op:{}, old layer cos:{}, new layer cos:{layer}, new output cos:{out}",
                conv_op_name(&c.name),
                c.old_layer_cos
            ));
        }
    }
    for (name, reason) in &report.skipped {
        log.info(format!("skip {}: {reason}", conv_op_name(name)));
    }
    log.info(format!(
        "best mix model outputs_cos:{:.6}",
        report.final_cos
    ));
    log.info(format!("total time:{}", report.time.as_secs_f64()));
}

/// Runs bias correction of `exec`'s graph (BatchNorm folded, the model the
/// table was computed on) with `table`, writes the corrected model and the
/// log, and returns the corrected model loaded for recalibration on
/// `selection`.
pub fn apply(
    req: &BcRequest<'_>,
    exec: &Executor,
    table: &CalibrationTable,
    selection: Selected,
    configs: Vec<Option<PreprocessConfig>>,
    reporter: &dyn Reporter,
) -> Result<Transformed> {
    let progress: &dyn Progress = reporter;
    let start = Instant::now();
    let processor = Processor::parse(req.processor).ok_or_else(|| {
        let all: Vec<&str> = Processor::ALL.iter().map(|p| p.name()).collect();
        crate::Error::setting(
            "processor",
            format!(
                "--bc simulates the int8 model of {}, not --processor {}",
                all.join(", "),
                req.processor
            ),
        )
    })?;
    let fp_type = processor
        .profile()
        .float_type(req.fp_type)
        .map_err(|e| crate::Error::setting("fp_type", format!("--fp_type: {e}")))?;
    let graph = exec.graph();
    // The shape-computing ops stay float, as in the written qtable.
    let float_mode = processor.profile().fp_auto;
    let qtable: Vec<(String, QuantMode)> = qtune_calibrate::shape_layers(graph)
        .into_iter()
        .map(|l| (l, float_mode))
        .collect();
    let samples = bc_samples(req, graph, &configs)?;
    let stem = output_stem(req.calibration_table, req.sq, req.we, true);
    // One record per visited Conv, beside the corrected model; removed once
    // that model is written.
    let journal_path = {
        let mut p = weight_transforms::model_path(&stem).into_os_string();
        p.push(".journal");
        std::path::PathBuf::from(p)
    };
    if req.resume && !journal_path.exists() {
        eprintln!(
            "warning: --resume: no journal at `{}`; starting the bias correction from the beginning",
            journal_path.display()
        );
    }
    let fingerprint = qtune_transforms::bias_correction_fingerprint(
        graph,
        table,
        &qtable,
        processor,
        fp_type,
        &samples,
        &req.settings,
    );
    let mut journal = Journal::open(&journal_path, &fingerprint, req.resume)?;
    let resumed = journal.records().len();
    if resumed > 0 {
        reporter.line(&format!(
            "--resume: {resumed} record(s) of the bias correction read from `{}`",
            journal_path.display()
        ));
    }
    let (corrected, report) = bias_correction(
        graph,
        table,
        &qtable,
        processor,
        fp_type,
        samples,
        &req.settings,
        progress,
        Some(&mut journal),
    )
    .with_context(|| format!("bias correction of `{}`", req.input_model.display()))?;

    let mut console = Vec::new();
    let mut log = SearchLog::new(
        "Bias_Correction",
        Box::new(|line: &str| console.push(line.to_string())),
    );
    log_lines(&report, req.settings.expected_cos, &mut log);
    log.write()?;
    drop(log);

    let (mlir_path, weight_path) =
        weight_transforms::write_model(&corrected, &stem, req.input_model, req.input_attrs)?;
    journal.finish()?;
    if report.already_accurate {
        reporter.line(&format!(
            "bias correction on {} sample(s): the int8 output cos (mapped) {:.6} is above --expected_cos {}; no bias changed (log: Bias_Correction)",
            report.samples, report.int8_cos, req.settings.expected_cos
        ));
    } else {
        for line in &console {
            reporter.line(line);
        }
        let trials = report.applied() + report.reverted();
        reporter.line(&format!(
            "bias correction on {} sample(s): {} Conv(s) with a bias visited, {trials} below --min_layer_cos {}: {} corrected, {} reverted; output cos (mapped) {:.6} -> {:.6}{} in {:.2} s (log: Bias_Correction)",
            report.samples,
            report.convs.len(),
            req.settings.min_layer_cos,
            report.applied(),
            report.reverted(),
            report.int8_cos,
            report.final_cos,
            if report.reached_expected {
                ", reached --expected_cos"
            } else {
                ""
            },
            start.elapsed().as_secs_f64()
        ));
        reporter.line(&format!(
            "wrote the bias-corrected model {} and {}; calibrating it",
            mlir_path.display(),
            weight_path.display()
        ));
    }
    let mut reloaded = weight_transforms::reload(&mlir_path, selection, configs, req.tune_list)?;
    reloaded
        .transforms
        .push(qtune_transforms::report::bias_correction_transform(&report));
    Ok(reloaded)
}
