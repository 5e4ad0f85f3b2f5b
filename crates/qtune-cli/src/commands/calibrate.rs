//! `run_calibration` / `qtune calibrate`: the calibration table of a model
//! (TPU-MLIR `python/tools/run_calibration.py`, plain calibration path).
//! The work is in the library (`qtune::calibrate`); this is flags to
//! settings, one call, and output.

use std::time::Instant;

use anyhow::{Result, bail};

use qtune_search::{CalibrationMethod, QuantMode};

pub use crate::flags::{Args, ToolArgs};
use crate::flags::{parse_bool_flag, parse_debug_cmd};
use crate::progress::Bar;

pub fn run(args: Args) -> Result<()> {
    // Unsupported modes fail before any work, never silently ignored.
    let searching = args.search.as_deref().is_some_and(|s| s != "False");
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
    crate::flags::check_search_flags(&args)?;
    if searching {
        return super::with_threads(args.threads, || {
            super::search::run_calibration_search(&args)
        });
    }
    super::with_threads(args.threads, || run_inner(args))
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

fn run_inner(args: Args) -> Result<()> {
    let start = Instant::now();
    let settings = plain_settings(&args, None)?;
    let method = settings.calibration.method;
    let bar = Bar::new(args.quiet);
    let calibration = qtune::calibrate(&settings, &bar)?;
    let outcome = &calibration.outcome;
    let model_path = &calibration.model;
    let exec = &calibration.executor;
    let loader = &calibration.loader;
    let transforms = &calibration.transforms;
    let mut warnings = outcome.warnings.clone();
    warnings.dedup();
    for w in &warnings {
        eprintln!("{w}");
    }

    let time_text = match (&args.fixed_time, args.no_time) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => None,
        (None, false) => Some(qtune::python_now()),
    };
    let header = calibration.header(time_text.as_deref());
    // The shape-ops qtable (TPU-MLIR always writes it).
    let qtable_path = match &args.quantize_table {
        Some(p) => p.clone(),
        None => qtune::qtable_default_path(&args.calibration_table),
    };
    let qtable = calibration.write(&args.calibration_table, &qtable_path, time_text.as_deref())?;

    if !args.quiet {
        for line in summary_lines(
            &calibration,
            start,
            &args.calibration_table,
            &qtable_path,
            &qtable,
        ) {
            println!("{line}");
        }
    }
    let run_time = start.elapsed().as_secs_f64();
    if args.report_flags.wanted(args.quiet) {
        // The transformed models are .mlir files with static shapes.
        let shapes = if model_path.extension().is_some_and(|e| e == "mlir") {
            None
        } else {
            args.input_shapes.as_deref()
        };
        let deploy = super::report::deploy_graph(model_path, shapes)?;
        let table = outcome.final_table(&header);
        let float = calibration.float_mode();
        let qtable_rows: Vec<(String, QuantMode)> = qtable
            .shape_layers
            .iter()
            .map(|n| (n.clone(), float))
            .collect();
        let mut timings = vec![qtune_report::Timing::new(
            "statistics",
            outcome.statistics_time.as_secs_f64(),
        )];
        if outcome.tuned_rows.is_some() {
            timings.push(qtune_report::Timing::new(
                "tuning",
                outcome.tuning_time.as_secs_f64(),
            ));
        }
        timings.push(qtune_report::Timing::new("run", run_time));
        let mut counts = vec![
            qtune_report::Entry::new("calibration samples", loader.sample_count()),
            qtune_report::Entry::new("calibration batches", outcome.batches),
            qtune_report::Entry::new("method", method),
            qtune_report::Entry::new("tuning batches", outcome.tune_batches),
            qtune_report::Entry::new("thresholds raised by tuning", outcome.tuned_changes),
            qtune_report::Entry::new("tensors calibrated", outcome.rows().len()),
        ];
        counts.retain(|e| e.value != "0" || e.label == "tensors calibrated");
        super::report::finish(
            &args.report_flags,
            args.quiet,
            super::report::RunFacts {
                title: "run_calibration".into(),
                model: model_path,
                graph: &deploy,
                processor: &args.processor,
                dataset: super::report::dataset_label(
                    args.data_list.as_ref(),
                    args.dataset.as_ref(),
                ),
                table: Some(&table),
                qtable: &qtable_rows,
                fp_type: "auto",
                quantize: QuantMode::Int8,
                asymmetric: false,
                matmul_per_channel: false,
                samples: super::report::loader_samples(
                    exec.graph(),
                    loader,
                    super::report::RUN_REPORT_SAMPLES,
                )?,
                method_tables: Vec::new(),
                counts,
                timings,
                outputs: vec![
                    args.calibration_table.display().to_string(),
                    qtable_path.display().to_string(),
                ],
                search: None,
                transforms: transforms.clone(),
                notes: Vec::new(),
                prebuilt: None,
                measured: None,
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::flags::{DebugCmd, parse_debug_cmd};
    use qtune_search::CalibrationMethod;

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
