//! The searches over one calibration table: `--search mix_search` and
//! `run_qtable` (spec 3.7, the walk by per-layer similarity) and `--search
//! fast_search` (spec 3.9.8).

use std::path::PathBuf;
use std::time::Instant;

use qtune_calibrate::{CalibrationMethod, calibrate};
use qtune_mixed::{self as mix, MixSearch};

use super::{Context, SearchOutcome, SearchReport, SearchSettings, failed, write_text};
use crate::deploy::read_calibration_table;
use crate::{Error, Reporter, Result};

/// Which loss-table header mix_search writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossTableStyle {
    /// `--search mix_search` (spec 2.5).
    Search,
    /// The seed's run_qtable `full_loss_table.txt`.
    RunQtable,
}

/// mix_search's (and run_qtable's) settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MixSearchSettings {
    pub search: SearchSettings,
    /// The calibration table searched (it must exist).
    pub calibration_table: PathBuf,
    /// The qtable written.
    pub qtable: PathBuf,
    /// The loss table written: every visited op's similarity, ascending.
    pub loss_table: PathBuf,
    pub loss_style: LossTableStyle,
    /// Target output similarity (mapped scale 0.5 + 0.5 cos).
    pub expected_cos: f64,
    /// Ops whose own similarity is below this go to float.
    pub min_layer_cos: f64,
    /// At most this many float layers (`None`: a quarter of the ops).
    pub max_float_layers: Option<usize>,
}

impl MixSearchSettings {
    pub fn new(
        search: SearchSettings,
        calibration_table: impl Into<PathBuf>,
        qtable: impl Into<PathBuf>,
    ) -> Self {
        let qtable = qtable.into();
        MixSearchSettings {
            search,
            calibration_table: calibration_table.into(),
            loss_table: PathBuf::from(format!("{}_loss.txt", qtable.display())),
            qtable,
            loss_style: LossTableStyle::Search,
            expected_cos: 0.99,
            min_layer_cos: 0.99,
            max_float_layers: None,
        }
    }
}

/// fast_search's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FastSearchSettings {
    pub search: SearchSettings,
    /// Read when it exists; otherwise calibrated with `method` and written.
    pub calibration_table: PathBuf,
    /// The qtable written.
    pub qtable: PathBuf,
    /// The calibration method when the table does not exist.
    pub method: CalibrationMethod,
    /// Target output similarity (mapped scale).
    pub expected_cos: f64,
}

impl FastSearchSettings {
    pub fn new(
        search: SearchSettings,
        calibration_table: impl Into<PathBuf>,
        qtable: impl Into<PathBuf>,
    ) -> Self {
        FastSearchSettings {
            search,
            calibration_table: calibration_table.into(),
            qtable: qtable.into(),
            method: CalibrationMethod::Kl,
            expected_cos: 0.99,
        }
    }
}

/// Runs fast_search; writes the qtable, the calibration table when it did
/// not exist, and the log `Search_Qtable`.
pub fn fast_search(s: &FastSearchSettings, reporter: &dyn Reporter) -> Result<SearchOutcome> {
    let start = Instant::now();
    let cs = &s.search;
    let ctx = Context::new(cs, None, reporter)?;
    let mut out = SearchOutcome::default();
    ctx.qtable(&[]).write(&s.qtable)?;
    out.written.push(s.qtable.clone());
    let cali = &s.calibration_table;
    let mut log = ctx.log("Search_Qtable");
    let t0 = Instant::now();
    let table = if cali.exists() {
        read_calibration_table(cali, reporter)?
    } else {
        let mut settings = cs.calibration(s.method);
        settings.tune_num = ctx.cal.tune_num;
        let o = calibrate(
            &ctx.cal.loaded.exec,
            &ctx.cal.loader,
            ctx.cal.tune_loader.as_ref(),
            &settings,
            reporter,
        )?;
        o.write_tables(&ctx.header(ctx.cal.tune_num), cali)?;
        out.written.push(cali.clone());
        read_calibration_table(cali, reporter)?
    };
    let cal_time = t0.elapsed();
    let mut ev = ctx.evaluator(cs.inference_num, cs)?;
    // The reference is the model at the float type (spec 3.9.8).
    ctx.reference_at(&mut ev, ctx.float_mode)?;
    let search = mix::FastSearch {
        table,
        base_qtable: ctx.shape_qtable.clone(),
        float_mode: ctx.float_mode,
        expected_cos: s.expected_cos,
        max_rounds: cs.inference_num,
    };
    // One record per score in `<qtable>.journal`, kept until the qtable is
    // written. An interrupted first run left its calibration table (written
    // whole) for the resumed one to read, so both search the same table.
    let own = vec![
        format!(
            "fast_search {} {}",
            mix::journal::f64_hex(s.expected_cos),
            search.max_rounds
        ),
        search.table.to_text(),
    ];
    let mut journal = ctx.open_journal(cs, &ev, &s.qtable, own, "score(s)")?;
    let outcome = match mix::fast_search(&mut ev, &search, &mut log, reporter, Some(&mut journal)) {
        Ok(o) => o,
        Err(e) => return failed(&log, e),
    };
    if !outcome.early_exit {
        ctx.qtable(&outcome.float_layers).write(&s.qtable)?;
        log.print_info(">>>run result:");
        log.print_info(format!("int8 outputs_cos:{:.6} old", outcome.int8_cos));
        log.print_info(format!("mix model outputs_cos:{:.6}", outcome.mix_cos));
        log.print_info(format!(
            "Output mix quantization table to {}",
            s.qtable.display()
        ));
        log.print_info(format!("total time:{}", start.elapsed().as_secs_f64()));
        log.print("success search qtable");
    }
    log.write()?;
    journal.finish()?;
    reporter.line(&format!(
        "fast_search: {} round(s), calibration {:.2} s, total {:.2} s",
        outcome.rounds,
        cal_time.as_secs_f64(),
        start.elapsed().as_secs_f64()
    ));
    out.float_layers = outcome.float_layers;
    out.all_int8_cos = Some(outcome.int8_cos);
    out.final_cos = Some(outcome.mix_cos);
    out.early_exit = outcome.early_exit;
    Ok(out)
}

/// Runs mix_search (run_qtable with [`LossTableStyle::RunQtable`]); writes
/// the qtable, the loss table and the log `Mix_Search`.
pub fn mix_search(s: &MixSearchSettings, reporter: &dyn Reporter) -> Result<SearchOutcome> {
    let start = Instant::now();
    let cs = &s.search;
    let run_qtable = s.loss_style == LossTableStyle::RunQtable;
    let ctx = Context::new(cs, None, reporter)?;
    let mut out = SearchOutcome::default();
    if !run_qtable {
        // TPU-MLIR's run_calibration writes the shape/pattern qtable at
        // start-up, whatever the mode.
        ctx.qtable(&[]).write(&s.qtable)?;
    }
    let cali = &s.calibration_table;
    if !run_qtable && !cali.exists() {
        return Err(Error::setting(
            "calibration_table",
            format!(
                "--search mix_search needs an existing calibration table at `{}` (it does not calibrate)",
                cali.display()
            ),
        ));
    }
    let table = read_calibration_table(cali, reporter)?;
    let mut log = ctx.log("Mix_Search");
    let mut ev = ctx.evaluator(cs.inference_num, cs)?;
    let search = MixSearch {
        table,
        base_qtable: ctx.shape_qtable.clone(),
        float_mode: ctx.float_mode,
        expected_cos: s.expected_cos,
        min_layer_cos: s.min_layer_cos,
        max_float_layers: s.max_float_layers,
    };
    // One record per scored configuration in `<qtable>.journal`.
    let own = vec![
        format!(
            "mix_search {} {} {:?}",
            mix::journal::f64_hex(search.expected_cos),
            mix::journal::f64_hex(search.min_layer_cos),
            search.max_float_layers
        ),
        search.table.to_text(),
    ];
    let mut journal = ctx.open_journal(cs, &ev, &s.qtable, own, "scored configuration(s)")?;
    // The reference: the model at the float type (TPU-MLIR lowers it at
    // high precision).
    let reference = ctx.reference_at(&mut ev, ctx.float_mode)?;
    let outcome = match mix::mix_search(
        &mut ev,
        &reference,
        &search,
        &mut log,
        reporter,
        Some(&mut journal),
    ) {
        Ok(o) => o,
        Err(e) => return failed(&log, e),
    };
    let mut qtable = String::from("# op_name   quantize_mode\n");
    for (n, m) in &ctx.shape_qtable {
        qtable.push_str(&format!("{n} {m}\n"));
    }
    for n in &outcome.float_layers {
        qtable.push_str(&format!("{n} {}\n", ctx.float_mode));
    }
    write_text(&s.qtable, &qtable)?;
    let mut rows = outcome.losses.clone();
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut loss = String::new();
    match s.loss_style {
        LossTableStyle::Search => {
            if let Some(t) = &ctx.time_text {
                loss.push_str(&format!("# genetated time: {t}\n"));
            }
            loss.push_str(&format!("# sample number: {}\n", ev.sample_count()));
            loss.push_str(&format!(
                "# chip: {}  mix_mode: {}\n",
                ctx.chip, ctx.float_mode
            ));
        }
        LossTableStyle::RunQtable => {
            loss.push_str(&format!(
                "# platform: {}  mix_mode: {}\n",
                ctx.chip, ctx.float_mode
            ));
        }
    }
    loss.push_str("###\n");
    for (i, (name, c)) in rows.iter().enumerate() {
        loss.push_str(&format!("No.{i:<4}: Layer: {name:<50}\t\t\tCos: {c:.6}\n"));
    }
    write_text(&s.loss_table, &loss)?;
    out.written.extend([s.qtable.clone(), s.loss_table.clone()]);
    for (i, (name, c)) in rows.iter().enumerate() {
        log.info(format!("No.{i}: Layer: {name} Cos: {c}"));
    }
    if !outcome.early_exit {
        log.print_info(format!("int8 outputs_cos:{:.6} old", outcome.int8_cos));
        log.print_info(format!("mix model outputs_cos:{:.6}", outcome.mix_cos));
    }
    log.print_info(format!(
        "Output mix quantization table to {}",
        s.qtable.display()
    ));
    log.print_info(format!("total time:{} second", start.elapsed().as_secs()));
    log.write()?;
    journal.finish()?;
    reporter.line(&format!(
        "{} float layer(s), {} configurations scored in {:.2} s",
        outcome.float_layers.len(),
        outcome.trials,
        start.elapsed().as_secs_f64()
    ));
    let kind = if run_qtable {
        "run_qtable"
    } else {
        "mix_search"
    };
    if ctx.report.wanted() {
        let graph_layers = mix::layers(&ctx.graph);
        let report_search = qtune_report::Search {
            kind: kind.into(),
            scale: "TPU-MLIR's mapped scale 0.5 + 0.5 cos; a loss is 1 minus it".into(),
            expected_cos: Some(search.expected_cos),
            methods: vec!["layer loss".into()],
            trajectory: crate::report::trajectory(&outcome.trajectory, |k| {
                format!("trial with {k} float layer(s)")
            }),
            layers: outcome
                .losses
                .iter()
                .map(|(name, c)| qtune_report::SearchLayer {
                    name: name.clone(),
                    op_type: graph_layers
                        .iter()
                        .find(|l| &l.name == name)
                        .map(|l| l.top_type.clone())
                        .unwrap_or_default(),
                    losses: vec![Some(1.0 - c)],
                    chosen_method: None,
                    threshold: search.table.get(name).map(|r| r.threshold),
                })
                .collect(),
            layer_loss: "1 - the layer's own output similarity (mapped) in the configuration the walk had reached".into(),
            float_layers: outcome.float_layers.clone(),
            all_int8_cos: Some(outcome.int8_cos),
            final_cos: Some(outcome.mix_cos),
        };
        ctx.report(SearchReport {
            title: kind,
            table: &search.table,
            float_layers: &outcome.float_layers,
            method_tables: Vec::new(),
            search: Some(report_search),
            timings: vec![qtune_report::Timing::new(
                "run",
                start.elapsed().as_secs_f64(),
            )],
            outputs: vec![
                s.qtable.display().to_string(),
                s.loss_table.display().to_string(),
            ],
        })?;
    }
    out.float_layers = outcome.float_layers;
    out.all_int8_cos = Some(outcome.int8_cos);
    out.final_cos = Some(outcome.mix_cos);
    out.early_exit = outcome.early_exit;
    out.layer_scores = rows;
    Ok(out)
}
