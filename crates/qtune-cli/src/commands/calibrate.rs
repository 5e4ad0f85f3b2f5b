//! `run_calibration` / `qtune calibrate`: the calibration table of a model
//! (TPU-MLIR `python/tools/run_calibration.py`, plain calibration path).
//! The work is in the library (`qtune::calibrate`); this is flags to
//! settings, one call, and output.

use std::time::Instant;

use anyhow::{Result, bail};

use qtune_calibrate::CalibrationMethod;

pub use crate::flags::{Args, ToolArgs};
use crate::flags::{parse_bool_flag, parse_debug_cmd};
use crate::progress::Bar;

pub fn run(args: Args) -> Result<()> {
    check(&args)?;
    if args.searching() {
        return super::with_threads(args.threads, || {
            super::search::run_calibration_search(&args)
        });
    }
    let bar = Bar::new(args.quiet);
    super::with_threads(args.threads, || run_plain(&args, None, &bar))
}

/// The checks of flag combinations before any work: unsupported modes
/// fail, never silently ignored.
pub fn check(args: &Args) -> Result<()> {
    let searching = args.searching();
    // The seed's case 4 combines --we --bc with search_threshold (TPU-MLIR
    // itself ignores them there); the other searches refuse them.
    let threshold_search = args.search.as_deref() == Some("search_threshold");
    if searching && (args.sq || ((args.we || args.bc) && !threshold_search)) {
        bail!(
            "--we and --bc go with plain calibration or --search search_threshold, --sq with plain calibration; run without --search or with search_threshold"
        );
    }
    if args.smc {
        bail!("--smc is not yet supported by qtune (planned); run without it");
    }
    args.report_flags.check()?;
    crate::flags::check_search_flags(args)
}

/// The library's settings of plain calibration (no `--search`) from these
/// flags, after the checks they need (the processor, the method and
/// `--debug_cmd`, `--transformer`, the preprocessing, the samples).
/// `source` replaces `--dataset` / `--data_list` when given (samples in
/// memory from the Python package). Warnings go to stderr.
pub fn plain_settings(
    args: &Args,
    source: Option<qtune::CalibrationSource>,
) -> Result<qtune::CalibrateSettings> {
    qtune::check_processor(&args.processor)?;
    let mut method = qtune::parse_method(&args.cali_method)?;
    let debug = parse_debug_cmd(&args.debug_cmd)?;
    debug.warn_ignored();
    // Plain calibration has no float layers to add the pattern to.
    if parse_bool_flag("--transformer", &args.search_flags.common.transformer)? {
        bail!(
            "--transformer True keeps the transformer pattern layers in float during a mixed-precision search: use it with --search (search_qtable, mix_search, fast_search, search_threshold), run_qtable or run_sensitive_layer"
        );
    }
    if let Some(m) = debug.method {
        method = m;
    }
    if debug.torch_observer && method != CalibrationMethod::Kl {
        eprintln!(
            "warning: --debug_cmd use_torch_observer_for_cali replaces the kl threshold only; it has no effect with {method}"
        );
    }
    qtune::check_preprocess(&args.model, &args.preprocess.settings())?;
    if source.is_none() && args.dataset.is_none() && args.data_list.is_none() {
        bail!("give the calibration samples with --dataset <folder> or --data_list <file>");
    }
    if source.is_some() && (args.dataset.is_some() || args.data_list.is_some()) {
        bail!("the samples are given in memory: --dataset and --data_list do not apply");
    }
    args.settings(method, &debug, source)
}

/// The lines `run_calibration` prints after a plain calibration that
/// started at `start` and wrote `table` and the shape-ops qtable.
pub fn summary_lines(
    calibration: &qtune::Calibration,
    start: Instant,
    table: &std::path::Path,
    qtable_path: &std::path::Path,
    qtable: &qtune::QuantizeTable,
) -> Vec<String> {
    let outcome = &calibration.outcome;
    let tuning = if outcome.tuned_rows.is_some() {
        format!(
            ", tuning {:.2} s on {} batch(es), {} threshold(s) raised",
            outcome.tuning_time.as_secs_f64(),
            outcome.tune_batches,
            outcome.tuned_changes
        )
    } else {
        String::new()
    };
    vec![
        format!(
            "calibrated {} tensors of `{}` with {} on {} sample(s) ({} batch(es)) in {:.2} s (statistics {:.2} s{tuning})",
            outcome.rows().len(),
            calibration.model.display(),
            outcome.method,
            calibration.loader.sample_count(),
            outcome.batches,
            start.elapsed().as_secs_f64(),
            outcome.statistics_time.as_secs_f64(),
        ),
        format!(
            "wrote {} and {} ({} shape layer(s))",
            table.display(),
            qtable_path.display(),
            qtable.shape_layers.len()
        ),
    ]
}

/// Plain calibration (no `--search`): the table, the shape-ops qtable, the
/// summary lines and the report. `source` replaces `--dataset` /
/// `--data_list` when given (samples in memory from the Python package).
pub fn run_plain(
    args: &Args,
    source: Option<qtune::CalibrationSource>,
    reporter: &dyn qtune::Reporter,
) -> Result<()> {
    let start = Instant::now();
    let dataset = match &source {
        Some(s) => s.label(),
        None => qtune::report::dataset_label(args.data_list.as_ref(), args.dataset.as_ref()),
    };
    let settings = plain_settings(args, source)?;
    let calibration = qtune::calibrate(&settings, reporter)?;
    let mut warnings = calibration.outcome.warnings.clone();
    warnings.dedup();
    for w in &warnings {
        reporter.warning(w);
    }

    let time_text = match (&args.fixed_time, args.no_time) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => None,
        (None, false) => Some(qtune::python_now()),
    };
    // The shape-ops qtable (TPU-MLIR always writes it).
    let qtable_path = match &args.quantize_table {
        Some(p) => p.clone(),
        None => qtune::qtable_default_path(&args.calibration_table),
    };
    let qtable = calibration.write(&args.calibration_table, &qtable_path, time_text.as_deref())?;

    for line in summary_lines(
        &calibration,
        start,
        &args.calibration_table,
        &qtable_path,
        &qtable,
    ) {
        reporter.line(&line);
    }
    let run_seconds = start.elapsed().as_secs_f64();
    calibration.report(
        &args.report_flags.outputs(args.quiet),
        &qtune::WrittenTables {
            table_path: &args.calibration_table,
            qtable_path: &qtable_path,
            qtable: &qtable,
            time: time_text.as_deref(),
            input_shapes: args.input_shapes.as_deref(),
            dataset: &dataset,
            run_seconds,
        },
        reporter,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::flags::{DebugCmd, parse_debug_cmd};
    use qtune_calibrate::CalibrationMethod;

    #[test]
    fn debug_cmd_keys() {
        let d =
            parse_debug_cmd("use_torch_observer_for_cali;Use_MSE,tune_steps=10;dump_list").unwrap();
        assert!(d.torch_observer);
        assert_eq!(d.method, Some(CalibrationMethod::Mse));
        assert_eq!(d.tune_steps, Some(10));
        assert_eq!(d.ignored, vec!["dump_list".to_string()]);
        assert_eq!(parse_debug_cmd("").unwrap(), DebugCmd::default());
        assert!(parse_debug_cmd("tune_steps=x").is_err());
    }
}
