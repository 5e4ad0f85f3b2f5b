//! `run_calibration --search search_threshold` (spec 3.6): the calibration
//! method whose all-int8 table scores best, with `--we` before and `--bc`
//! after it (the seed's case 4).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use qtune_calibrate::{CalibrationMethod, CalibrationTable, calibrate_methods};
use qtune_mixed::{self as mix, Benchmark, MethodTable};

use super::{Context, SearchOutcome, SearchReport, SearchSettings, failed};
use crate::calibration::{BiasCorrection, bias_correction_request, calibration_input};
use crate::weight_transforms::{self, TransformRequest};
use crate::{Reporter, Result};

/// `search_threshold`'s settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ThresholdSearchSettings {
    pub search: SearchSettings,
    /// The chosen table is written here (`-o`). When it exists already the
    /// search is skipped and it is used as-is, as TPU-MLIR does.
    pub calibration_table: PathBuf,
    /// The shape (and pattern) layers' qtable.
    pub qtable: PathBuf,
    /// How a table is scored: mean mapped output cosine or SNR.
    pub benchmark: Benchmark,
    /// Equalize the weights first and search on the equalized model.
    pub weight_equalization: bool,
    /// Correct the biases with the chosen table, then calibrate the
    /// corrected model with the chosen method (its table is `-o`).
    pub bias_correction: Option<BiasCorrection>,
}

impl ThresholdSearchSettings {
    pub fn new(search: SearchSettings, calibration_table: impl Into<PathBuf>) -> Self {
        let calibration_table = calibration_table.into();
        ThresholdSearchSettings {
            search,
            qtable: crate::qtable_default_path(&calibration_table),
            calibration_table,
            benchmark: Benchmark::Cos,
            weight_equalization: false,
            bias_correction: None,
        }
    }
}

const METHODS: [CalibrationMethod; 4] = [
    CalibrationMethod::Kl,
    CalibrationMethod::Max,
    CalibrationMethod::Percentile9999,
    CalibrationMethod::Mse,
];

fn benchmark_name(b: Benchmark) -> &'static str {
    match b {
        Benchmark::Cos => "cos",
        Benchmark::Snr => "snr",
    }
}

/// Runs search_threshold; writes `-o`, `new_cali_table.txt` (current
/// folder), each method's tables, the qtable and the log
/// `Search_Threshold`.
pub fn search_threshold(
    s: &ThresholdSearchSettings,
    reporter: &dyn Reporter,
) -> Result<SearchOutcome> {
    let start = Instant::now();
    let cs = &s.search;
    // With --we, the search runs on the equalized model (written next to
    // the table).
    let equalized = if s.weight_equalization {
        Some(equalized_model(s, reporter)?)
    } else {
        None
    };
    let ctx = Context::new(cs, equalized.as_deref(), reporter)?;
    let mut out = SearchOutcome::default();
    // TPU-MLIR writes the shape/pattern qtable at start-up, whatever the mode.
    ctx.qtable(&[]).write(&s.qtable)?;
    out.written.push(s.qtable.clone());
    let cali = &s.calibration_table;
    let mut log = ctx.log("Search_Threshold");
    if cali.exists() {
        log.warning(format!(
            "[search_threshold] {} already exists; skip threshold search and use it as-is.",
            cali.display()
        ));
        log.write()?;
        out.early_exit = true;
        return Ok(out);
    }
    log.info("Quantization threshold calculation method: ['kl', 'max', 'percentile9999', 'mse']");
    let tables = ctx.calibrate_methods(cs, &METHODS, cali, &mut out.written)?;
    let cal_time = start.elapsed();
    let mut ev = ctx.evaluator(cs.inference_num, cs)?;
    ctx.f32_reference(&mut ev)?;
    let tables: Vec<MethodTable> = tables
        .into_iter()
        .map(|(m, table)| MethodTable {
            label: m.name().to_string(),
            table,
        })
        .collect();
    for t in &tables {
        log.info(format!(
            "Trying multi algorithm threshold of {} with {}_{} in {}",
            t.label,
            cali.display(),
            t.label,
            mix::log::py_list(&["kl", "max", "percentile9999", "mse"])
        ));
    }
    // One record per scored table in `<-o>.journal`, kept until the run
    // (with --bc, the bias correction too) has finished.
    let mut own = vec![format!(
        "search_threshold {} {}",
        benchmark_name(s.benchmark),
        cs.inference_num
    )];
    own.extend(tables.iter().map(|t| t.table.to_text()));
    let mut journal = ctx.open_journal(cs, &ev, cali, own, "table score(s)")?;
    let (best, scores) = match mix::threshold_search(
        &mut ev,
        &tables,
        &ctx.shape_qtable,
        s.benchmark,
        &mut log,
        Some(&mut journal),
    ) {
        Ok(x) => x,
        Err(e) => return failed(&log, e),
    };
    drop(ev);
    // With --bc, -o is the corrected model's table, written once at the
    // end: a killed run leaves no -o (which would make its resume take the
    // "-o exists" branch).
    if s.bias_correction.is_none() {
        tables[best].table.write(cali)?;
        out.written.push(cali.clone());
    }
    tables[best].table.write(Path::new("new_cali_table.txt"))?;
    out.written.push(PathBuf::from("new_cali_table.txt"));
    log.print_info("success");
    log.write()?;
    if let Some(bc) = &s.bias_correction {
        // Then bias correction with the chosen table and a new calibration
        // of the corrected model by the chosen method.
        bias_correct_and_recalibrate(s, bc, &ctx, &tables[best].table, METHODS[best])?;
        out.written.push(cali.clone());
    }
    journal.finish()?;
    out.chosen_method = Some(tables[best].label.clone());
    out.layer_scores = tables
        .iter()
        .zip(&scores)
        .map(|(t, &sc)| (t.label.clone(), sc))
        .collect();
    if s.bias_correction.is_none() {
        ctx.report(SearchReport {
            title: "run_calibration --search search_threshold",
            table: &tables[best].table,
            float_layers: &[],
            method_tables: tables.iter().map(|t| (t.label.clone(), &t.table)).collect(),
            search: Some(qtune_report::Search {
                kind: "search_threshold".into(),
                scale: format!(
                    "{} of the all-int8 model with each method's table",
                    benchmark_name(s.benchmark)
                ),
                methods: tables.iter().map(|t| t.label.clone()).collect(),
                trajectory: tables
                    .iter()
                    .zip(&scores)
                    .map(|(t, &sc)| qtune_report::TrajectoryPoint {
                        float_layers: 0,
                        cos: sc,
                        label: t.label.clone(),
                    })
                    .collect(),
                layer_loss: String::new(),
                ..qtune_report::Search::default()
            }),
            timings: vec![
                qtune_report::Timing::new("calibration", cal_time.as_secs_f64()),
                qtune_report::Timing::new("run", start.elapsed().as_secs_f64()),
            ],
            outputs: vec![cali.display().to_string()],
        })?;
    }
    reporter.line(&format!(
        "search_threshold: {} chosen, wrote {} (calibration {:.2} s, total {:.2} s)",
        tables[best].label,
        cali.display(),
        cal_time.as_secs_f64(),
        start.elapsed().as_secs_f64()
    ));
    Ok(out)
}

/// `--we` before search_threshold: the equalized model's path.
fn equalized_model(s: &ThresholdSearchSettings, reporter: &dyn Reporter) -> Result<PathBuf> {
    let settings = s
        .search
        .calibrate_settings(CalibrationMethod::Kl, &s.calibration_table);
    let cal = calibration_input(&settings, true)?;
    let request = TransformRequest {
        we: true,
        sq: None,
        model: &s.search.model,
        calibration_table: &s.calibration_table,
        tune_list: s.search.tune_list.as_deref(),
        input_attrs: &cal.loaded.input_attrs,
    };
    let t = weight_transforms::apply(
        &request,
        &cal.loaded.exec,
        &cal.loader,
        cal.selection,
        cal.configs,
        reporter,
    )?
    .context("weight equalization produced no model")?;
    Ok(t.model)
}

/// `--bc` after search_threshold: corrects the biases with the chosen
/// table, calibrates the corrected model again with the chosen method
/// (tuned as the search tunes) and writes that table to `-o`.
fn bias_correct_and_recalibrate(
    s: &ThresholdSearchSettings,
    bc_settings: &BiasCorrection,
    ctx: &Context,
    table: &CalibrationTable,
    method: CalibrationMethod,
) -> Result<()> {
    let mut settings = s.search.calibrate_settings(method, &s.calibration_table);
    settings.weight_equalization = s.weight_equalization;
    let bc = bias_correction_request(&settings, bc_settings, &ctx.cal.loaded.input_attrs);
    let exec = qtune_exec::Executor::new(ctx.graph.clone())?;
    let c = crate::bias_correction::apply(
        &bc,
        &exec,
        table,
        ctx.cal.selection.clone(),
        ctx.cal.configs.clone(),
        ctx.reporter,
    )?;
    let mut calibration = s.search.calibration(method);
    calibration.tune_num = ctx.cal.tune_num;
    let mut outcomes = calibrate_methods(
        &c.exec,
        &c.loader,
        c.tune_loader.as_ref(),
        &[method],
        &calibration,
        true,
        ctx.reporter,
    )
    .with_context(|| format!("calibrating `{}`", c.model.display()))?;
    let o = outcomes
        .pop()
        .context("calibration of the corrected model gave no table")?;
    let mut header = ctx.header(ctx.cal.tune_num);
    header.mlir_file = c.model.display().to_string();
    o.final_table(&header).write(&s.calibration_table)?;
    ctx.reporter.line(&format!(
        "bias correction: wrote {} and its {} table {}",
        c.model.display(),
        method,
        s.calibration_table.display()
    ));
    Ok(())
}
