//! The per-layer searches: `run_calibration --search search_qtable` (spec
//! 3.9) and `run_sensitive_layer` (spec 3.10), with the sensitivity report.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qtune_calibrate::{CalibrationMethod, CalibrationTable, QuantMode};
use qtune_mixed::{self as mix, LayerSearch, MethodTable, MixEvaluator};

use super::{
    Context, SearchOutcome, SearchReport, SearchSettings, failed, method_label, write_text,
};
use crate::deploy::read_calibration_table;
use crate::{Error, Reporter, Result};

/// `search_qtable`'s settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QtableSearchSettings {
    pub search: SearchSettings,
    /// Each method's tables are written beside it, the default method's
    /// (MSE when listed, else the first) at it once the search has
    /// finished. When it exists already, only the first method is searched,
    /// with its thresholds, as TPU-MLIR does.
    pub calibration_table: PathBuf,
    /// The qtable written.
    pub qtable: PathBuf,
    /// The methods compared per layer (`--quantize_method_list`).
    pub methods: Vec<CalibrationMethod>,
    /// Target output similarity (mapped scale 0.5 + 0.5 cos).
    pub expected_cos: f64,
    /// At most this many layers go to float.
    pub max_float_layers: usize,
}

impl QtableSearchSettings {
    pub fn new(
        search: SearchSettings,
        calibration_table: impl Into<PathBuf>,
        qtable: impl Into<PathBuf>,
    ) -> Self {
        QtableSearchSettings {
            search,
            calibration_table: calibration_table.into(),
            qtable: qtable.into(),
            methods: vec![CalibrationMethod::Mse],
            expected_cos: 0.99,
            max_float_layers: 5,
        }
    }
}

/// `run_sensitive_layer`'s settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SensitiveSettings {
    pub search: SearchSettings,
    /// The calibration table (the starting thresholds; each method's tables
    /// are written beside it).
    pub calibration_table: PathBuf,
    /// The qtable of the most sensitive layers (`None`: the sensitivity
    /// report alone).
    pub qtable: Option<PathBuf>,
    /// Layers written to the qtable.
    pub max_float_layers: usize,
    /// Accepted for TPU-MLIR compatibility: the old tool's target.
    pub expected_cos: f64,
    /// The per-layer sensitivity report (Markdown): each int8 layer alone
    /// in int8 at the table's threshold, every other in float.
    pub sensitivity_table: Option<PathBuf>,
    /// The output that report compares (`None`: the first).
    pub sensitivity_output: Option<String>,
}

impl SensitiveSettings {
    pub fn new(search: SearchSettings, calibration_table: impl Into<PathBuf>) -> Self {
        SensitiveSettings {
            search,
            calibration_table: calibration_table.into(),
            qtable: None,
            max_float_layers: 5,
            expected_cos: 0.99,
            sensitivity_table: None,
            sensitivity_output: None,
        }
    }
}

/// Runs search_qtable; writes the qtable, `new_cali_table.txt` (current
/// folder), each method's tables, the calibration table and the log
/// `Search_Qtable`.
pub fn search_qtable(s: &QtableSearchSettings, reporter: &dyn Reporter) -> Result<SearchOutcome> {
    let start = Instant::now();
    let cs = &s.search;
    if s.methods.is_empty() {
        return Err(Error::setting(
            "quantize_method_list",
            "--quantize_method_list: no method",
        ));
    }
    let ctx = Context::new(cs, None, reporter)?;
    let mut out = SearchOutcome::default();
    ctx.qtable(&[]).write(&s.qtable)?;
    out.written.push(s.qtable.clone());
    let cali = &s.calibration_table;
    let labels: Vec<&str> = s.methods.iter().map(|m| method_label(*m)).collect();
    let mut log = ctx.log("Search_Qtable");
    log.info(format!(
        "quantize_method_list ={}",
        mix::log::py_list(&labels)
    ));
    let t0 = Instant::now();
    // `-o` is written once the search has finished, not before as TPU-MLIR
    // does: an interrupted run then leaves no `-o`, and its resume
    // calibrates every method again (the same tables, so the journal's
    // fingerprint matches) instead of taking the "-o exists: first method
    // only" branch, whose tables differ.
    let mut write_cali_after: Option<CalibrationTable> = None;
    let (method_tables, table) = if cali.exists() {
        // TPU-MLIR: only the first method, thresholds from -o.
        let t = read_calibration_table(cali, reporter)?;
        (
            vec![MethodTable {
                label: labels[0].to_string(),
                table: t.clone(),
            }],
            t,
        )
    } else {
        let tables = ctx.calibrate_methods(cs, &s.methods, cali, &mut out.written)?;
        let default = tables
            .iter()
            .find(|(m, _)| *m == CalibrationMethod::Mse)
            .unwrap_or(&tables[0])
            .1
            .clone();
        write_cali_after = Some(default.clone());
        let mt = tables
            .into_iter()
            .map(|(m, table)| MethodTable {
                label: method_label(m).to_string(),
                table,
            })
            .collect();
        (mt, default)
    };
    let cal_time = t0.elapsed();
    let t1 = Instant::now();
    let mut ev = ctx.evaluator(cs.inference_num, cs)?;
    log.info(format!("run float mode: {}", ctx.model_path.display()));
    ctx.f32_reference(&mut ev)?;
    let ref_time = t1.elapsed();
    log.info(format!("run int8 mode: {}", ctx.model_path.display()));
    let search = LayerSearch {
        methods: method_tables,
        table,
        base_qtable: ctx.shape_qtable.clone(),
        float_mode: ctx.float_mode,
        expected_cos: s.expected_cos,
        max_float_layers: s.max_float_layers,
        prescreen: true,
        adjust: true,
    };
    let mut own = vec![format!(
        "search_qtable {} {} {} {}",
        labels.join(","),
        cs.inference_num,
        s.expected_cos,
        search.max_float_layers
    )];
    own.extend(search.methods.iter().map(|m| m.table.to_text()));
    own.push(search.table.to_text());
    run_layer_search(
        &ctx,
        &mut ev,
        &search,
        LayerRun {
            log: &mut log,
            qtable_path: &s.qtable,
            settings: cs,
            own,
            success: "success search qtable",
            start,
            times: [cal_time, ref_time],
            kind: "search_qtable",
            layer_loss: "the output loss (1 - mapped cos) with only this layer of the searched ones in int8, at each method's threshold",
        },
        &mut out,
    )?;
    if let Some(t) = write_cali_after {
        t.write(cali)?;
        out.written.push(cali.clone());
    }
    Ok(out)
}

/// Runs run_sensitive_layer: with `sensitivity_table`, the per-layer report
/// first; with `qtable`, the sensitive-layer search, which writes it,
/// `new_cali_table.txt` (current folder), each method's tables and the log
/// `SensitiveLayerSearch`.
pub fn sensitive_layers(s: &SensitiveSettings, reporter: &dyn Reporter) -> Result<SearchOutcome> {
    let start = Instant::now();
    let cs = &s.search;
    if s.qtable.is_none() && s.sensitivity_table.is_none() {
        return Err(Error::setting(
            "output",
            "give the qtable to write (-o) or --sensitivity_table",
        ));
    }
    let ctx = Context::new(cs, None, reporter)?;
    let table = read_calibration_table(&s.calibration_table, reporter)?;
    let mut out = SearchOutcome::default();
    if let Some(path) = &s.sensitivity_table {
        sensitivity_report(&ctx, s, &table, path)?;
        out.written.push(path.clone());
    }
    let Some(output) = &s.qtable else {
        return Ok(out);
    };
    let methods = [
        CalibrationMethod::Max,
        CalibrationMethod::Percentile9999,
        CalibrationMethod::Kl,
    ];
    let t0 = Instant::now();
    let tables = ctx.calibrate_methods(cs, &methods, &s.calibration_table, &mut out.written)?;
    let cal_time = t0.elapsed();
    let t1 = Instant::now();
    let mut log = ctx.log("SensitiveLayerSearch");
    let mut ev = ctx.evaluator(cs.inference_num, cs)?;
    ctx.f32_reference(&mut ev)?;
    let ref_time = t1.elapsed();
    let search = LayerSearch {
        methods: tables
            .into_iter()
            .map(|(m, table)| MethodTable {
                label: method_label(m).to_string(),
                table,
            })
            .collect(),
        table,
        base_qtable: ctx.shape_qtable.clone(),
        float_mode: ctx.float_mode,
        expected_cos: s.expected_cos,
        max_float_layers: s.max_float_layers,
        prescreen: false,
        adjust: false,
    };
    let mut own = vec![format!(
        "sensitive {} {}",
        cs.inference_num, s.max_float_layers
    )];
    own.extend(search.methods.iter().map(|m| m.table.to_text()));
    own.push(search.table.to_text());
    run_layer_search(
        &ctx,
        &mut ev,
        &search,
        LayerRun {
            log: &mut log,
            qtable_path: output,
            settings: cs,
            own,
            success: "success sensitive layer search",
            start,
            times: [cal_time, ref_time],
            kind: "run_sensitive_layer",
            layer_loss: "the output loss (1 - mapped cos) with only this layer in int8, at each method's threshold",
        },
        &mut out,
    )?;
    Ok(out)
}

/// How a layer search runs and reports.
struct LayerRun<'a, 'l> {
    log: &'a mut mix::log::SearchLog<'l>,
    qtable_path: &'a Path,
    settings: &'a SearchSettings,
    /// The search's own part of its journal's fingerprint.
    own: Vec<String>,
    success: &'a str,
    start: Instant,
    /// Calibration and float reference times.
    times: [Duration; 2],
    /// `search_qtable` or `run_sensitive_layer`.
    kind: &'a str,
    /// What a per-layer loss measures.
    layer_loss: &'a str,
}

fn run_layer_search(
    ctx: &Context,
    ev: &mut MixEvaluator,
    search: &LayerSearch,
    run: LayerRun,
    out: &mut SearchOutcome,
) -> Result<()> {
    let LayerRun {
        log,
        qtable_path,
        settings,
        own,
        success,
        start,
        times: [cal_time, ref_time],
        kind,
        layer_loss,
    } = run;
    let mut journal = ctx.open_journal(settings, ev, qtable_path, own, "layer result(s)")?;
    let t2 = Instant::now();
    let outcome = match mix::layer_search(ev, search, log, ctx.reporter, Some(&mut journal)) {
        Ok(o) => o,
        Err(e) => return failed(log, e),
    };
    let search_time = t2.elapsed();
    if !outcome.early_exit {
        ctx.qtable(&outcome.float_layers).write(qtable_path)?;
        outcome.table.write(Path::new("new_cali_table.txt"))?;
        out.written.push(PathBuf::from("new_cali_table.txt"));
        log.print_info(">>>run result:");
        log.print_info(format!("int8 outputs_cos:{:.6} old", outcome.all_int8_cos));
        log.print_info(format!("mix model outputs_cos:{:.6}", outcome.mix_cos));
        log.print_info(format!(
            "Output mix quantization table to {}",
            qtable_path.display()
        ));
        log.print_info(format!("total time:{}", start.elapsed().as_secs_f64()));
        log.print(success);
    }
    log.write()?;
    journal.finish()?;
    let st = &ev.stats;
    ctx.reporter.line(&format!(
        "time: calibration {:.2} s, float reference {:.2} s, layer search {:.2} s ({} models built in {:.2} s, {} runs; {:.1}% of the nodes recomputed; cache peak {} MiB)",
        cal_time.as_secs_f64(),
        ref_time.as_secs_f64(),
        search_time.as_secs_f64(),
        st.builds,
        st.build_time.as_secs_f64(),
        st.runs,
        100.0 * st.nodes_run as f64 / st.nodes_total.max(1) as f64,
        st.cache_peak_bytes >> 20
    ));
    out.float_layers = outcome.float_layers.clone();
    out.all_int8_cos = Some(outcome.all_int8_cos);
    out.final_cos = Some(outcome.mix_cos);
    out.early_exit = outcome.early_exit;
    out.layer_scores = outcome
        .results
        .iter()
        .map(|r| (r.name.clone(), r.loss))
        .collect();
    if ctx.report.wanted() {
        let methods: Vec<String> = search.methods.iter().map(|m| m.label.clone()).collect();
        let table = if outcome.early_exit {
            &search.table
        } else {
            &outcome.table
        };
        let mut outputs = vec![qtable_path.display().to_string()];
        if !outcome.early_exit {
            outputs.push("new_cali_table.txt".into());
        }
        ctx.report(SearchReport {
            title: kind,
            table,
            float_layers: &outcome.float_layers,
            method_tables: search
                .methods
                .iter()
                .map(|m| (m.label.clone(), &m.table))
                .collect(),
            search: Some(crate::report::search_of_layers(
                kind,
                search.expected_cos,
                &methods,
                &outcome,
                layer_loss,
            )),
            timings: vec![
                qtune_report::Timing::new("calibration", cal_time.as_secs_f64()),
                qtune_report::Timing::new("float reference", ref_time.as_secs_f64()),
                qtune_report::Timing::new("layer search", search_time.as_secs_f64()),
                qtune_report::Timing::new("run", start.elapsed().as_secs_f64()),
            ],
            outputs,
        })?;
    }
    Ok(())
}

/// `run_sensitive_layer --sensitivity_table`: the per-layer report.
fn sensitivity_report(
    ctx: &Context,
    s: &SensitiveSettings,
    table: &CalibrationTable,
    path: &Path,
) -> Result<()> {
    let t0 = Instant::now();
    let mut cs = s.search.clone();
    cs.compare_layers = None;
    let mut ev = ctx.evaluator(cs.inference_num, &cs)?;
    ctx.f32_reference(&mut ev)?;
    let output = match &s.sensitivity_output {
        Some(o) => o.clone(),
        None => ev
            .reference()
            .first()
            .and_then(|s| s.first())
            .map(|(n, _)| n.clone())
            .ok_or_else(|| Error::Input {
                message: "the model has no output to compare".into(),
            })?,
    };
    let rep = mix::sensitivity(
        &mut ev,
        table,
        &ctx.shape_qtable,
        // "Everything else float" in F32, so a row measures the int8 form
        // of its layer alone, not the chip float type's rounding too.
        QuantMode::F32,
        &output,
        ctx.reporter,
    )?;
    write_text(
        path,
        &rep.to_markdown(&s.calibration_table.display().to_string()),
    )?;
    ctx.reporter.line(&format!(
        "sensitivity report of {} layers written to {} ({:.1} s)",
        rep.rows.len(),
        path.display(),
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}
