//! The mixed-precision searches: `run_calibration --search
//! search_threshold|search_qtable|mix_search`, `run_qtable` and
//! `run_sensitive_layer` (spec sections 3.6 to 3.10). The work is in
//! `qtune_search::mix`; this is flag handling, sample loading and output.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use qtune_deploy::Processor;
use qtune_exec::PrepareOptions;
use qtune_ir::Graph;
use qtune_search::mix::{
    self, Benchmark, LayerSearch, MethodTable, MixEvaluator, MixSearch, Precision,
    journal::Journal, log::SearchLog,
};
use qtune_search::{
    CalibrationMethod, CalibrationSettings, CalibrationTable, QuantMode, QuantizeTable,
    TableHeader, TimeLine, calibrate_methods,
};
use qtune_tensor::Tensor;

use qtune::CalibrationInput;

use super::preprocess_args::PreprocessArgs;
use crate::flags::{
    Args as CalibrateArgs, SampleArgs, calibration_input, parse_bool_flag, parse_debug_cmd,
};
pub use crate::flags::{SearchCommonFlags, SearchFlags};
use crate::model::{self, Naming};
use crate::progress::Bar;

/// What every search needs.
struct SearchContext {
    cal: CalibrationInput,
    /// The evaluation graph: TPU-MLIR op names, BatchNorm folded into Conv
    /// (as TPU-MLIR's lowering and model_deploy do).
    graph: Graph,
    processor: Processor,
    chip: String,
    /// Float mode of the layers the search puts in float (and the qtable's).
    float_mode: QuantMode,
    /// Float type of the ops the chip keeps in float.
    chip_fp: QuantMode,
    shape_qtable: Vec<(String, QuantMode)>,
    /// `--transformer True`: the pattern layers (also in `shape_qtable`,
    /// the fixed float layers of every search; written as pattern layers).
    pattern_layers: Vec<String>,
    time_text: Option<String>,
    model_path: PathBuf,
    quiet: bool,
    /// `--data_list` or `--dataset`, for the report.
    dataset: String,
    /// `--memory_mb` in bytes.
    keep_memory_bytes: usize,
}

/// What the report of a search says about it.
struct ReportSpec<'a> {
    flags: &'a super::report::ReportFlags,
    /// `search_qtable`, `run_sensitive_layer`, ...
    kind: &'a str,
    /// What a per-layer loss measures.
    layer_loss: &'a str,
}

struct ContextArgs<'a> {
    model: &'a Path,
    input_shapes: Option<&'a str>,
    preprocess: &'a PreprocessArgs,
    samples: SampleArgs<'a>,
    processor: &'a str,
    fp_type: &'a str,
    fixed_time: Option<&'a str>,
    no_time: bool,
    quiet: bool,
}

fn context(a: &ContextArgs) -> Result<SearchContext> {
    let processor = Processor::parse(a.processor).with_context(|| {
        let all: Vec<&str> = Processor::ALL.iter().map(|p| p.name()).collect();
        format!(
            "--processor {}: the searches simulate {}",
            a.processor,
            all.join(", ")
        )
    })?;
    let profile = processor.profile();
    let chip_fp = profile
        .float_type(a.fp_type)
        .map_err(|e| anyhow::anyhow!("--fp_type: {e}"))?;
    let float_mode = chip_fp;
    let cal = calibration_input(a.model, a.input_shapes, a.preprocess, &a.samples, false)?;
    let mut prepare = PrepareOptions::default();
    prepare.fold_batchnorm = true;
    let graph = model::load_model(a.model, a.input_shapes, &prepare, Naming::TopOps)?
        .exec
        .graph()
        .clone();
    let shape_qtable = qtune_search::shape_layers(cal.loaded.exec.graph())
        .into_iter()
        .map(|l| (l, float_mode))
        .collect();
    let time_text = match (a.fixed_time, a.no_time) {
        (Some(t), _) => Some(t.to_string()),
        (None, true) => None,
        (None, false) => Some(qtune::python_now()),
    };
    Ok(SearchContext {
        cal,
        graph,
        processor,
        chip: a.processor.to_string(),
        float_mode,
        chip_fp,
        shape_qtable,
        pattern_layers: Vec::new(),
        time_text,
        model_path: a.model.to_path_buf(),
        quiet: a.quiet,
        dataset: a
            .samples
            .data_list
            .or(a.samples.dataset)
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        keep_memory_bytes: qtune_search::DEFAULT_KEEP_MEMORY_BYTES,
    })
}

impl SearchContext {
    fn bar(&self) -> Bar {
        Bar::new(self.quiet)
    }

    /// The graph inputs of the first `n` sample batches, by name.
    fn inference_samples(&self, n: usize) -> Result<Vec<Vec<(String, Tensor)>>> {
        let g = self.cal.loaded.exec.graph();
        let n = n.min(self.cal.loader.batch_count());
        (0..n)
            .map(|i| {
                Ok(self
                    .cal
                    .loader
                    .load(i)?
                    .into_iter()
                    .map(|(id, t)| (g.value(id).name.clone(), t))
                    .collect())
            })
            .collect()
    }

    fn evaluator(
        &self,
        n: usize,
        compare: Option<&str>,
        memory_bytes: usize,
        post_process: Option<&Path>,
    ) -> Result<MixEvaluator<'_>> {
        let compare = match compare {
            Some(s) => qtune_search::parse_compare_layers(s)
                .map_err(|e| anyhow::anyhow!("--global_compare_layers: {e}"))?,
            None => Vec::new(),
        };
        let mut ev = MixEvaluator::new(
            &self.graph,
            self.processor,
            self.chip_fp,
            self.inference_samples(n)?,
            compare,
            memory_bytes,
        )?;
        if let Some(script) = post_process {
            let p = qtune_search::PostProcess::start(script)?;
            ev.set_post_process(Box::new(p));
        }
        Ok(ev)
    }

    fn header(&self, tune_num: usize) -> TableHeader {
        TableHeader {
            version: format!("qtune-{}", env!("CARGO_PKG_VERSION")),
            mlir_file: self.model_path.display().to_string(),
            time: self
                .time_text
                .clone()
                .map_or(TimeLine::Omit, TimeLine::Text),
            tune_number: i64::try_from(tune_num).unwrap_or(i64::MAX),
        }
    }

    /// Calibrates `methods` in one statistics pass (every method tuned
    /// when tune_num > 0, as TPU-MLIR's search modes do) and writes each
    /// method's tables as TPU-MLIR names them (spec 2.1.1): `<cali>_<m>`
    /// without tuning, `<cali>_<m>.1` and `<cali>_<m>_tune` with it.
    fn calibrate_methods(
        &self,
        methods: &[CalibrationMethod],
        histogram_bin_num: usize,
        tune_steps: Option<u32>,
        cali: &Path,
    ) -> Result<Vec<(CalibrationMethod, CalibrationTable)>> {
        let mut settings = CalibrationSettings::new(methods[0]);
        settings.histogram_bin_num = histogram_bin_num;
        settings.tune_num = self.cal.tune_num;
        settings.keep_memory_bytes = self.keep_memory_bytes;
        if let Some(s) = tune_steps {
            settings.tune_steps = s;
        }
        let bar = self.bar();
        let outcomes = calibrate_methods(
            &self.cal.loaded.exec,
            &self.cal.loader,
            self.cal.tune_loader.as_ref(),
            methods,
            &settings,
            true,
            &bar,
        )
        .with_context(|| format!("calibrating `{}`", self.model_path.display()))?;
        let header = self.header(self.cal.tune_num);
        let mut out = Vec::new();
        for o in outcomes {
            let base = format!("{}_{}", cali.display(), o.method.name());
            let table = if o.tuned_rows.is_some() {
                o.table(&header, false)
                    .write(Path::new(&format!("{base}.1")))?;
                let t = o.table(&header, true);
                t.write(Path::new(&format!("{base}_tune")))?;
                t
            } else {
                let t = o.table(&header, false);
                t.write(Path::new(&base))?;
                t
            };
            out.push((o.method, table));
        }
        Ok(out)
    }

    fn qtable(&self, custom: &[String]) -> QuantizeTable {
        QuantizeTable {
            time: self.time_text.clone(),
            sample_number: self.cal.loader.batch_count(),
            chip: self.chip.clone(),
            shape_layers: self
                .shape_qtable
                .iter()
                .map(|(n, _)| n.clone())
                .filter(|n| !self.pattern_layers.contains(n))
                .collect(),
            shape_mode: self.float_mode,
            pattern_layers: self.pattern_layers.clone(),
            pattern_mode: self.float_mode,
            custom_layers: custom
                .iter()
                .map(|n| (n.clone(), self.float_mode))
                .collect(),
            ..QuantizeTable::default()
        }
    }

    /// Measures and writes the report of a search (or prints the text table).
    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        flags: &super::report::ReportFlags,
        title: &str,
        table: &CalibrationTable,
        float_layers: &[String],
        method_tables: Vec<(String, &CalibrationTable)>,
        search: Option<qtune_report::Search>,
        timings: Vec<qtune_report::Timing>,
        outputs: Vec<String>,
    ) -> Result<()> {
        if !flags.wanted(self.quiet) {
            return Ok(());
        }
        let mut qtable = self.shape_qtable.clone();
        qtable.extend(float_layers.iter().map(|n| (n.clone(), self.float_mode)));
        let fp = self.chip_fp.to_string();
        super::report::finish(
            flags,
            self.quiet,
            super::report::RunFacts {
                title: title.to_string(),
                model: &self.model_path,
                graph: &self.graph,
                processor: &self.chip,
                dataset: self.dataset.clone(),
                table: Some(table),
                qtable: &qtable,
                fp_type: &fp,
                quantize: QuantMode::Int8,
                asymmetric: false,
                matmul_per_channel: false,
                samples: self.inference_samples(super::report::RUN_REPORT_SAMPLES)?,
                method_tables,
                counts: vec![
                    qtune_report::Entry::new("calibration samples", self.cal.loader.sample_count()),
                    qtune_report::Entry::new("float layers chosen", float_layers.len()),
                ],
                timings,
                outputs,
                search,
                transforms: Vec::new(),
                notes: Vec::new(),
                prebuilt: None,
                measured: None,
            },
        )
    }

    /// `--transformer`: `True` adds the transformer pattern layers to the
    /// fixed float layers (spec 3.13); `False` leaves them int8.
    fn apply_transformer(&mut self, flag: &str) -> Result<()> {
        if !parse_bool_flag("--transformer", flag)? {
            return Ok(());
        }
        let pattern = qtune_search::transformer_pattern_layers(&self.graph);
        for n in &pattern {
            if !self.shape_qtable.iter().any(|(s, _)| s == n) {
                self.shape_qtable.push((n.clone(), self.float_mode));
            }
        }
        if !self.quiet {
            println!(
                "--transformer: {} pattern layers in {} (Adds feeding a LayerNorm, GELU / SiLU, MatMuls after a GELU)",
                pattern.len(),
                self.float_mode
            );
        }
        self.pattern_layers = pattern;
        Ok(())
    }

    /// The float reference (F32 model) of the evaluator.
    fn f32_reference(&self, ev: &mut MixEvaluator) -> Result<()> {
        let b = ev.build(&Precision {
            quantize: QuantMode::F32,
            table: None,
            qtable: &[],
        })?;
        ev.set_reference(&b)?;
        Ok(())
    }
}

/// `KL,MSE` -> methods with their log labels; unknown names are an error
/// (TPU-MLIR drops them silently).
fn parse_method_list(s: &str) -> Result<Vec<(CalibrationMethod, String)>> {
    let mut out: Vec<(CalibrationMethod, String)> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let m = CalibrationMethod::parse(item)
            .filter(|m| {
                matches!(
                    m,
                    CalibrationMethod::Kl
                        | CalibrationMethod::Mse
                        | CalibrationMethod::Max
                        | CalibrationMethod::Percentile9999
                )
            })
            .with_context(|| {
                format!(
                    "--quantize_method_list: `{item}` is not one of KL, MSE, MAX, Percentile9999"
                )
            })?;
        if !out.iter().any(|(x, _)| *x == m) {
            out.push((m, method_label(m).to_string()));
        }
    }
    if out.is_empty() {
        bail!("--quantize_method_list `{s}`: no method");
    }
    Ok(out)
}

fn method_label(m: CalibrationMethod) -> &'static str {
    match m {
        CalibrationMethod::Kl => "KL",
        CalibrationMethod::Mse => "MSE",
        CalibrationMethod::Max => "MAX",
        CalibrationMethod::Percentile9999 => "Percentile9999",
        CalibrationMethod::AciqGauss => "ACIQ_GAUSS",
        CalibrationMethod::AciqLaplace => "ACIQ_LAPLACE",
    }
}

fn console(quiet: bool) -> Box<dyn FnMut(&str)> {
    Box::new(move |line: &str| {
        if !quiet {
            println!("{line}");
        }
    })
}

/// `<path>.journal`.
fn journal_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

/// Opens the journal at `path` (see [`Journal::open`]), warning when
/// --resume finds none and saying how many records it reads back.
fn open_journal(
    path: &Path,
    fingerprint: &str,
    resume: bool,
    what: &str,
    quiet: bool,
) -> Result<Journal> {
    if resume && !path.exists() {
        eprintln!(
            "warning: --resume: no journal at `{}`; starting from the beginning",
            path.display()
        );
    }
    let journal = Journal::open(path, fingerprint, resume)?;
    let n = journal.records().len();
    if n > 0 && !quiet {
        println!("--resume: {n} {what} read from `{}`", path.display());
    }
    Ok(journal)
}

/// A fingerprint of everything a layer search's result depends on.
fn fingerprint(parts: &[String]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\0");
    }
    format!("{:032x}", h.digest128())
}

fn model_fingerprint(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading `{}`", path.display()))?;
    let mut parts = vec![xxhash_rust::xxh3::xxh3_128(&bytes).to_string()];
    // A .mlir's weights are in its npz.
    if let Some(text) = std::str::from_utf8(&bytes).ok()
        && let Some(i) = text.find("module.weight_file = \"")
    {
        let rest = &text[i + 22..];
        if let Some(end) = rest.find('"') {
            let w = path.with_file_name(&rest[..end]);
            if let Ok(b) = std::fs::read(&w) {
                parts.push(xxhash_rust::xxh3::xxh3_128(&b).to_string());
            }
        }
    }
    Ok(parts.join(","))
}

/// The `--post_process` script for a fingerprint: its path and content.
fn post_process_key(p: Option<&Path>) -> Result<String> {
    Ok(match p {
        None => String::new(),
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading `{}`", p.display()))?;
            format!(
                "{} {:032x}",
                p.display(),
                xxhash_rust::xxh3::xxh3_128(&bytes)
            )
        }
    })
}

/// Atomic text write with the path in errors.
fn write_text(path: &Path, text: &str) -> Result<()> {
    qtune_tensor::write_atomic(path, |w| std::io::Write::write_all(w, text.as_bytes()))
        .with_context(|| format!("writing `{}`", path.display()))
}

/// `--we` before search_threshold: the equalized model's path.
fn equalized_model(args: &CalibrateArgs) -> Result<PathBuf> {
    let cal = calibration_input(
        &args.model,
        args.input_shapes.as_deref(),
        &args.preprocess,
        &SampleArgs {
            dataset: args.dataset.as_deref(),
            data_list: args.data_list.as_deref(),
            input_num: args.input_num,
            tune_list: args.tune_list.as_deref(),
            tune_num: args.tune_num,
        },
        true,
    )?;
    let bar = Bar::new(args.quiet);
    let request = qtune::transforms::TransformRequest {
        we: true,
        sq: None,
        model: &args.model,
        calibration_table: &args.calibration_table,
        tune_list: args.tune_list.as_deref(),
        input_attrs: &cal.loaded.input_attrs,
    };
    let t = qtune::transforms::apply_weight_transforms(
        &request,
        &cal.loaded.exec,
        &cal.loader,
        cal.selection,
        cal.configs,
        &bar,
    )?
    .context("weight equalization produced no model")?;
    Ok(t.model)
}

/// `--bc` after search_threshold: corrects the biases with the chosen
/// table, calibrates the corrected model again with the chosen method (tuned
/// as the search tunes) and writes that table to -o.
fn bias_correct_and_recalibrate(
    args: &CalibrateArgs,
    ctx: &SearchContext,
    table: &CalibrationTable,
    method: CalibrationMethod,
    tune_steps: Option<u32>,
) -> Result<()> {
    let settings = args.settings(method, &parse_debug_cmd(&args.debug_cmd)?, None)?;
    let bc_settings = args.bias_correction().unwrap_or_default();
    let bc = qtune::bias_correction_request(&settings, &bc_settings, &ctx.cal.loaded.input_attrs);
    let exec = qtune_exec::Executor::new(ctx.graph.clone())?;
    let bar = ctx.bar();
    let c = qtune::transforms::correct_biases(
        &bc,
        &exec,
        table,
        ctx.cal.selection.clone(),
        ctx.cal.configs.clone(),
        &bar,
    )?;
    let mut settings = CalibrationSettings::new(method);
    settings.histogram_bin_num = args.histogram_bin_num;
    settings.tune_num = ctx.cal.tune_num;
    settings.keep_memory_bytes = ctx.keep_memory_bytes;
    if let Some(s) = tune_steps {
        settings.tune_steps = s;
    }
    let mut outcomes = calibrate_methods(
        &c.exec,
        &c.loader,
        c.tune_loader.as_ref(),
        &[method],
        &settings,
        true,
        &bar,
    )
    .with_context(|| format!("calibrating `{}`", c.model.display()))?;
    let o = outcomes
        .pop()
        .context("calibration of the corrected model gave no table")?;
    let mut header = ctx.header(ctx.cal.tune_num);
    header.mlir_file = c.model.display().to_string();
    o.final_table(&header).write(&args.calibration_table)?;
    if !args.quiet {
        println!(
            "bias correction: wrote {} and its {} table {}",
            c.model.display(),
            method,
            args.calibration_table.display()
        );
    }
    Ok(())
}

/// `run_calibration --search ...`.
pub fn run_calibration_search(args: &CalibrateArgs) -> Result<()> {
    let start = Instant::now();
    args.report_flags.check()?;
    let mode = args.search.as_deref().unwrap_or("False");
    let flags = &args.search_flags;
    if !matches!(
        mode,
        "search_threshold" | "search_qtable" | "mix_search" | "fast_search"
    ) {
        bail!(
            "--search {mode}: expected search_threshold, search_qtable, fast_search, mix_search or False"
        );
    }
    // TPU-MLIR's parser demands --quantize_table with --search, yet the
    // seed's search_threshold command has none: default as plain
    // calibration does.
    let qtable_path = match &args.quantize_table {
        Some(p) => p.clone(),
        None if mode == "search_threshold" => qtune::qtable_default_path(&args.calibration_table),
        None => bail!(
            "--search {mode} needs --quantize_table (the qtable to write), as TPU-MLIR requires"
        ),
    };
    let debug = parse_debug_cmd(&args.debug_cmd)?;
    debug.warn_ignored();
    let benchmark = match flags.benchmark_method.as_str() {
        "cos" => Benchmark::Cos,
        "snr" => Benchmark::Snr,
        other => bail!("--benchmark_method {other}: expected cos or snr"),
    };
    let inference_num = args.inference_num.unwrap_or(30);
    let expected_cos = args.expected_cos.unwrap_or(0.99);
    // search_threshold with --we (the seed's case 4): equalize first, then
    // search on the equalized model (written next to the table).
    let mut model_path = args.model.clone();
    if args.we {
        model_path = equalized_model(args)?;
    }
    let ctx = context(&ContextArgs {
        model: &model_path,
        input_shapes: args.input_shapes.as_deref(),
        preprocess: &args.preprocess,
        samples: SampleArgs {
            dataset: args.dataset.as_deref(),
            data_list: args.data_list.as_deref(),
            input_num: args.input_num,
            tune_list: args.tune_list.as_deref(),
            tune_num: args.tune_num,
        },
        processor: &args.processor,
        fp_type: &flags.common.fp_type,
        fixed_time: args.fixed_time.as_deref(),
        no_time: args.no_time,
        quiet: args.quiet,
    })?;
    let mut ctx = ctx;
    ctx.keep_memory_bytes = flags.memory_bytes();
    ctx.apply_transformer(&flags.common.transformer)?;
    // TPU-MLIR writes the shape/pattern qtable at start-up, whatever the mode.
    ctx.qtable(&[]).write(&qtable_path)?;
    let cali = &args.calibration_table;
    match mode {
        "search_threshold" => {
            let mut log = SearchLog::new("Search_Threshold", console(args.quiet));
            if cali.exists() {
                log.warning(format!(
                    "[search_threshold] {} already exists; skip threshold search and use it as-is.",
                    cali.display()
                ));
                log.write()?;
                return Ok(());
            }
            let methods = [
                CalibrationMethod::Kl,
                CalibrationMethod::Max,
                CalibrationMethod::Percentile9999,
                CalibrationMethod::Mse,
            ];
            log.info(
                "Quantization threshold calculation method: ['kl', 'max', 'percentile9999', 'mse']",
            );
            let tables =
                ctx.calibrate_methods(&methods, args.histogram_bin_num, debug.tune_steps, cali)?;
            let cal_time = start.elapsed();
            let mut ev = ctx.evaluator(
                inference_num,
                flags.common.global_compare_layers.as_deref(),
                flags.common.memory_bytes(),
                args.post_process.as_deref(),
            )?;
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
            // One record per scored table in `<-o>.journal`, kept until the
            // run (with --bc, the bias correction too) has finished.
            let mut parts = vec![
                model_fingerprint(&model_path)?,
                format!("{mode} {} {inference_num}", flags.benchmark_method),
                format!(
                    "{} {} {}",
                    ctx.chip,
                    ctx.float_mode,
                    flags.common.global_compare_layers.as_deref().unwrap_or("")
                ),
                post_process_key(args.post_process.as_deref())?,
                format!("{:?}", ctx.shape_qtable),
                ev.samples_key(),
            ];
            parts.extend(tables.iter().map(|t| t.table.to_text()));
            let mut journal = open_journal(
                &journal_path(cali),
                &fingerprint(&parts),
                flags.resume,
                "table score(s)",
                args.quiet,
            )?;
            let (best, scores) = match mix::threshold_search(
                &mut ev,
                &tables,
                &ctx.shape_qtable,
                benchmark,
                &mut log,
                Some(&mut journal),
            ) {
                Ok(x) => x,
                Err(e) => {
                    let _ = log.write();
                    return Err(e.into());
                }
            };
            drop(ev);
            // With --bc, -o is the corrected model's table, written once at
            // the end: a killed run leaves no -o (which would make its
            // --resume take the "-o exists" branch).
            if !args.bc {
                tables[best].table.write(cali)?;
            }
            tables[best].table.write(Path::new("new_cali_table.txt"))?;
            log.print_info("success");
            log.write()?;
            if args.bc {
                // Then bias correction with the chosen table and a new
                // calibration of the corrected model by the chosen method.
                let method = methods[best];
                bias_correct_and_recalibrate(
                    args,
                    &ctx,
                    &tables[best].table,
                    method,
                    debug.tune_steps,
                )?;
            }
            journal.finish()?;
            if args.report_flags.wanted(args.quiet) && !args.bc {
                ctx.report(
                    &args.report_flags,
                    "run_calibration --search search_threshold",
                    &tables[best].table,
                    &[],
                    tables.iter().map(|t| (t.label.clone(), &t.table)).collect(),
                    Some(qtune_report::Search {
                        kind: "search_threshold".into(),
                        scale: format!(
                            "{} of the all-int8 model with each method's table",
                            flags.benchmark_method
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
                    vec![
                        qtune_report::Timing::new("calibration", cal_time.as_secs_f64()),
                        qtune_report::Timing::new("run", start.elapsed().as_secs_f64()),
                    ],
                    vec![cali.display().to_string()],
                )?;
            }
            if !args.quiet {
                println!(
                    "search_threshold: {} chosen, wrote {} (calibration {:.2} s, total {:.2} s)",
                    tables[best].label,
                    cali.display(),
                    cal_time.as_secs_f64(),
                    start.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
        "search_qtable" => {
            let list = args.quantize_method_list.as_deref().unwrap_or("mse");
            let methods = parse_method_list(list)?;
            let labels: Vec<&str> = methods.iter().map(|(_, l)| l.as_str()).collect();
            let mut log = SearchLog::new("Search_Qtable", console(args.quiet));
            log.info(format!(
                "quantize_method_list ={}",
                mix::log::py_list(&labels)
            ));
            let t0 = Instant::now();
            // `-o` is written once the search has finished, not before as
            // TPU-MLIR does: an interrupted run then leaves no `-o`, and its
            // --resume calibrates every method again (the same tables, so
            // the journal's fingerprint matches) instead of taking the
            // "-o exists: first method only" branch, whose tables differ.
            let mut write_cali_after: Option<CalibrationTable> = None;
            let (method_tables, table) = if cali.exists() {
                // TPU-MLIR: only the first method, thresholds from -o.
                let t = crate::model::read_calibration_table(cali)?;
                (
                    vec![MethodTable {
                        label: methods[0].1.clone(),
                        table: t.clone(),
                    }],
                    t,
                )
            } else {
                let ms: Vec<CalibrationMethod> = methods.iter().map(|(m, _)| *m).collect();
                let tables =
                    ctx.calibrate_methods(&ms, args.histogram_bin_num, debug.tune_steps, cali)?;
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
            let mut ev = ctx.evaluator(
                inference_num,
                flags.common.global_compare_layers.as_deref(),
                flags.common.memory_bytes(),
                args.post_process.as_deref(),
            )?;
            log.info(format!("run float mode: {}", ctx.model_path.display()));
            ctx.f32_reference(&mut ev)?;
            let ref_time = t1.elapsed();
            log.info(format!("run int8 mode: {}", ctx.model_path.display()));
            let search = LayerSearch {
                methods: method_tables,
                table,
                base_qtable: ctx.shape_qtable.clone(),
                float_mode: ctx.float_mode,
                expected_cos,
                max_float_layers: args.max_float_layers.unwrap_or(5),
                prescreen: true,
                adjust: true,
            };
            let mut parts = vec![
                model_fingerprint(&args.model)?,
                format!(
                    "{mode} {list} {inference_num} {expected_cos} {}",
                    search.max_float_layers
                ),
                format!(
                    "{} {} {}",
                    ctx.chip,
                    ctx.float_mode,
                    flags.common.global_compare_layers.as_deref().unwrap_or("")
                ),
                args.post_process
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ];
            parts.extend(search.methods.iter().map(|m| m.table.to_text()));
            parts.push(search.table.to_text());
            parts.push(ev.samples_key());
            run_layer_search(
                &ctx,
                &mut ev,
                &search,
                &mut log,
                &qtable_path,
                &fingerprint(&parts),
                flags.resume,
                "success search qtable",
                start,
                [cal_time, ref_time],
                &ReportSpec {
                    flags: &args.report_flags,
                    kind: "search_qtable",
                    layer_loss: "the output loss (1 - mapped cos) with only this layer of the searched ones in int8, at each method's threshold",
                },
            )?;
            if let Some(t) = write_cali_after {
                t.write(cali)?;
            }
            Ok(())
        }
        "fast_search" => {
            let mut log = SearchLog::new("Search_Qtable", console(args.quiet));
            let t0 = Instant::now();
            let table = if cali.exists() {
                crate::model::read_calibration_table(cali)?
            } else {
                let m = CalibrationMethod::parse(&args.cali_method).with_context(|| {
                    format!(
                        "--cali_method `{}`: not a calibration method",
                        args.cali_method
                    )
                })?;
                let mut settings = CalibrationSettings::new(m);
                settings.histogram_bin_num = args.histogram_bin_num;
                settings.tune_num = ctx.cal.tune_num;
                settings.keep_memory_bytes = ctx.keep_memory_bytes;
                let bar = ctx.bar();
                let o = qtune_search::calibrate(
                    &ctx.cal.loaded.exec,
                    &ctx.cal.loader,
                    ctx.cal.tune_loader.as_ref(),
                    &settings,
                    &bar,
                )?;
                o.write_tables(&ctx.header(ctx.cal.tune_num), cali)?;
                crate::model::read_calibration_table(cali)?
            };
            let cal_time = t0.elapsed();
            let mut ev = ctx.evaluator(
                inference_num,
                flags.common.global_compare_layers.as_deref(),
                flags.common.memory_bytes(),
                args.post_process.as_deref(),
            )?;
            // The reference is the model at the float type (spec 3.9.8).
            let reference = ev.build(&Precision {
                quantize: ctx.float_mode,
                table: None,
                qtable: &[],
            })?;
            ev.set_reference(&reference)?;
            let search = mix::FastSearch {
                table,
                base_qtable: ctx.shape_qtable.clone(),
                float_mode: ctx.float_mode,
                expected_cos,
                max_rounds: inference_num,
            };
            // One record per score in `<quantize_table>.journal`, kept
            // until the qtable is written. An interrupted first run left
            // its calibration table (written whole) for the resumed one to
            // read, so both search the same table.
            let parts = vec![
                "fast_search".to_string(),
                model_fingerprint(&args.model)?,
                format!(
                    "{} {} {} {} {}",
                    mix::journal::f64_hex(expected_cos),
                    search.max_rounds,
                    ctx.chip,
                    ctx.float_mode,
                    flags.common.global_compare_layers.as_deref().unwrap_or("")
                ),
                post_process_key(args.post_process.as_deref())?,
                format!("{:?}", search.base_qtable),
                search.table.to_text(),
                ev.samples_key(),
            ];
            let mut journal = open_journal(
                &journal_path(&qtable_path),
                &fingerprint(&parts),
                flags.resume,
                "score(s)",
                ctx.quiet,
            )?;
            let bar = ctx.bar();
            let outcome =
                match mix::fast_search(&mut ev, &search, &mut log, &bar, Some(&mut journal)) {
                    Ok(o) => o,
                    Err(e) => {
                        // The log up to the failure; the journal stays for
                        // --resume.
                        let _ = log.write();
                        return Err(e.into());
                    }
                };
            if !outcome.early_exit {
                ctx.qtable(&outcome.float_layers).write(&qtable_path)?;
                log.print_info(">>>run result:");
                log.print_info(format!("int8 outputs_cos:{:.6} old", outcome.int8_cos));
                log.print_info(format!("mix model outputs_cos:{:.6}", outcome.mix_cos));
                log.print_info(format!(
                    "Output mix quantization table to {}",
                    qtable_path.display()
                ));
                log.print_info(format!("total time:{}", start.elapsed().as_secs_f64()));
                log.print("success search qtable");
            }
            log.write()?;
            journal.finish()?;
            if !args.quiet {
                println!(
                    "fast_search: {} round(s), calibration {:.2} s, total {:.2} s",
                    outcome.rounds,
                    cal_time.as_secs_f64(),
                    start.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
        "mix_search" => {
            if !cali.exists() {
                bail!(
                    "--search mix_search needs an existing calibration table at `{}` (it does not calibrate)",
                    cali.display()
                );
            }
            let table = crate::model::read_calibration_table(cali)?;
            let mut log = SearchLog::new("Mix_Search", console(args.quiet));
            let loss_path = flags
                .loss_table
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}_loss.txt", qtable_path.display())));
            let ev = ctx.evaluator(
                inference_num,
                flags.common.global_compare_layers.as_deref(),
                flags.common.memory_bytes(),
                args.post_process.as_deref(),
            )?;
            run_mix_search(
                &ctx,
                ev,
                MixSearch {
                    table,
                    base_qtable: ctx.shape_qtable.clone(),
                    float_mode: ctx.float_mode,
                    expected_cos,
                    min_layer_cos: flags.min_layer_cos.unwrap_or(0.99),
                    max_float_layers: args.max_float_layers,
                },
                &mut log,
                &qtable_path,
                &loss_path,
                LossHeader::Search,
                start,
                &ReportSpec {
                    flags: &args.report_flags,
                    kind: "mix_search",
                    layer_loss: "1 - the layer's own output similarity (mapped) in the configuration the walk had reached",
                },
                (
                    flags.common.global_compare_layers.as_deref(),
                    args.post_process.as_deref(),
                ),
                flags.resume,
            )
        }
        _ => unreachable!("checked above"),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_layer_search(
    ctx: &SearchContext,
    ev: &mut MixEvaluator,
    search: &LayerSearch,
    log: &mut SearchLog,
    qtable_path: &Path,
    fingerprint: &str,
    resume: bool,
    success: &str,
    start: Instant,
    [cal_time, ref_time]: [std::time::Duration; 2],
    report: &ReportSpec,
) -> Result<()> {
    let jpath = journal_path(qtable_path);
    if resume && !jpath.exists() {
        eprintln!(
            "warning: --resume: no journal at `{}`; starting from the beginning",
            jpath.display()
        );
    }
    let mut journal = Journal::open(&jpath, fingerprint, resume)?;
    let bar = ctx.bar();
    let t2 = Instant::now();
    let outcome = mix::layer_search(ev, search, log, &bar, Some(&mut journal));
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // The log up to the failure; the journal stays for --resume.
            let _ = log.write();
            return Err(e.into());
        }
    };
    let search_time = t2.elapsed();
    if !outcome.early_exit {
        ctx.qtable(&outcome.float_layers).write(qtable_path)?;
        outcome.table.write(Path::new("new_cali_table.txt"))?;
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
    if !ctx.quiet {
        let s = &ev.stats;
        println!(
            "time: calibration {:.2} s, float reference {:.2} s, layer search {:.2} s ({} models built in {:.2} s, {} runs; {:.1}% of the nodes recomputed; cache peak {} MiB)",
            cal_time.as_secs_f64(),
            ref_time.as_secs_f64(),
            search_time.as_secs_f64(),
            s.builds,
            s.build_time.as_secs_f64(),
            s.runs,
            100.0 * s.nodes_run as f64 / s.nodes_total.max(1) as f64,
            s.cache_peak_bytes >> 20
        );
    }
    if report.flags.wanted(ctx.quiet) {
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
        ctx.report(
            report.flags,
            report.kind,
            table,
            &outcome.float_layers,
            search
                .methods
                .iter()
                .map(|m| (m.label.clone(), &m.table))
                .collect(),
            Some(super::report::search_of_layers(
                report.kind,
                search.expected_cos,
                &methods,
                &outcome,
                report.layer_loss,
            )),
            vec![
                qtune_report::Timing::new("calibration", cal_time.as_secs_f64()),
                qtune_report::Timing::new("float reference", ref_time.as_secs_f64()),
                qtune_report::Timing::new("layer search", search_time.as_secs_f64()),
                qtune_report::Timing::new("run", start.elapsed().as_secs_f64()),
            ],
            outputs,
        )?;
    }
    Ok(())
}

/// Which loss-table header to write.
enum LossHeader {
    /// `--search mix_search` (spec 2.5).
    Search,
    /// The seed's run_qtable `full_loss_table.txt`.
    RunQtable,
}

#[allow(clippy::too_many_arguments)]
fn run_mix_search(
    ctx: &SearchContext,
    mut ev: MixEvaluator,
    s: MixSearch,
    log: &mut SearchLog,
    qtable_path: &Path,
    loss_path: &Path,
    header: LossHeader,
    start: Instant,
    report: &ReportSpec,
    (compare, post_process): (Option<&str>, Option<&Path>),
    resume: bool,
) -> Result<()> {
    // One record per scored configuration in `<qtable>.journal`.
    let parts = vec![
        "mix_search".to_string(),
        model_fingerprint(&ctx.model_path)?,
        format!(
            "{} {} {:?} {} {} {}",
            mix::journal::f64_hex(s.expected_cos),
            mix::journal::f64_hex(s.min_layer_cos),
            s.max_float_layers,
            ctx.chip,
            ctx.float_mode,
            compare.unwrap_or("")
        ),
        post_process_key(post_process)?,
        format!("{:?}", s.base_qtable),
        s.table.to_text(),
        ev.samples_key(),
    ];
    let mut journal = open_journal(
        &journal_path(qtable_path),
        &fingerprint(&parts),
        resume,
        "scored configuration(s)",
        ctx.quiet,
    )?;
    // The reference: the model at the float type (TPU-MLIR lowers it at
    // high precision).
    let reference = ev.build(&Precision {
        quantize: ctx.float_mode,
        table: None,
        qtable: &[],
    })?;
    ev.set_reference(&reference)?;
    let bar = ctx.bar();
    let outcome = match mix::mix_search(&mut ev, &reference, &s, log, &bar, Some(&mut journal)) {
        Ok(o) => o,
        Err(e) => {
            let _ = log.write();
            return Err(e.into());
        }
    };
    let mut qtable = String::from("# op_name   quantize_mode\n");
    for (n, m) in &ctx.shape_qtable {
        qtable.push_str(&format!("{n} {m}\n"));
    }
    for n in &outcome.float_layers {
        qtable.push_str(&format!("{n} {}\n", ctx.float_mode));
    }
    write_text(qtable_path, &qtable)?;
    let mut rows = outcome.losses.clone();
    rows.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut loss = String::new();
    match header {
        LossHeader::Search => {
            if let Some(t) = &ctx.time_text {
                loss.push_str(&format!("# genetated time: {t}\n"));
            }
            loss.push_str(&format!("# sample number: {}\n", ev.sample_count()));
            loss.push_str(&format!(
                "# chip: {}  mix_mode: {}\n",
                ctx.chip, ctx.float_mode
            ));
        }
        LossHeader::RunQtable => {
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
    write_text(loss_path, &loss)?;
    for (i, (name, c)) in rows.iter().enumerate() {
        log.info(format!("No.{i}: Layer: {name} Cos: {c}"));
    }
    if !outcome.early_exit {
        log.print_info(format!("int8 outputs_cos:{:.6} old", outcome.int8_cos));
        log.print_info(format!("mix model outputs_cos:{:.6}", outcome.mix_cos));
    }
    log.print_info(format!(
        "Output mix quantization table to {}",
        qtable_path.display()
    ));
    log.print_info(format!("total time:{} second", start.elapsed().as_secs()));
    log.write()?;
    journal.finish()?;
    if !ctx.quiet {
        println!(
            "{} float layer(s), {} configurations scored in {:.2} s",
            outcome.float_layers.len(),
            outcome.trials,
            start.elapsed().as_secs_f64()
        );
    }
    if report.flags.wanted(ctx.quiet) {
        let graph_layers = mix::layers(&ctx.graph);
        let search = qtune_report::Search {
            kind: report.kind.into(),
            scale: "TPU-MLIR's mapped scale 0.5 + 0.5 cos; a loss is 1 minus it".into(),
            expected_cos: Some(s.expected_cos),
            methods: vec!["layer loss".into()],
            trajectory: super::report::trajectory(&outcome.trajectory, |k| {
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
                    threshold: s.table.get(name).map(|r| r.threshold),
                })
                .collect(),
            layer_loss: report.layer_loss.into(),
            float_layers: outcome.float_layers.clone(),
            all_int8_cos: Some(outcome.int8_cos),
            final_cos: Some(outcome.mix_cos),
        };
        ctx.report(
            report.flags,
            report.kind,
            &s.table,
            &outcome.float_layers,
            Vec::new(),
            Some(search),
            vec![qtune_report::Timing::new(
                "run",
                start.elapsed().as_secs_f64(),
            )],
            vec![
                qtable_path.display().to_string(),
                loss_path.display().to_string(),
            ],
        )?;
    }
    Ok(())
}

/// `run_qtable`: the seed's mix-precision search for a model and an
/// existing calibration table (TPU-MLIR's old run_qtable, now
/// `--search mix_search`).
#[derive(clap::Args)]
#[command(after_long_help = QTABLE_HELP)]
pub struct QtableArgs {
    /// The float model (.mlir from model_transform, or .onnx).
    model: PathBuf,
    #[arg(long)]
    dataset: Option<PathBuf>,
    #[arg(long = "data_list", alias = "data-list")]
    data_list: Option<PathBuf>,
    /// The calibration table (input).
    #[arg(long = "calibration_table", alias = "calibration-table")]
    calibration_table: PathBuf,
    /// Target processor.
    #[arg(long, alias = "chip", default_value = "bm1684x")]
    processor: String,
    /// Samples compared (default 10).
    #[arg(long = "input_num", alias = "input-num", default_value_t = 10)]
    input_num: usize,
    /// Target output similarity (mapped scale 0.5 + 0.5*cos).
    #[arg(long = "expected_cos", alias = "expected-cos", default_value_t = 0.99)]
    expected_cos: f64,
    /// Float layers cap (default: a quarter of the ops).
    #[arg(long = "max_float_layers", alias = "max-float-layers")]
    max_float_layers: Option<usize>,
    /// TPU-MLIR debug keys (reported and ignored).
    #[arg(long = "debug_cmd", alias = "debug-cmd", default_value = "")]
    debug_cmd: String,
    /// The qtable to write.
    #[arg(short = 'o')]
    output: PathBuf,
    /// A Python file defining `PostProcess(data)`.
    #[arg(long = "post_process", alias = "post-process")]
    post_process: Option<PathBuf>,
    /// Per-layer similarity floor, on the mapped scale 0.5 + 0.5*cos
    /// (default 0.99).
    #[arg(long = "min_layer_cos", alias = "min-layer-cos")]
    min_layer_cos: Option<f64>,
    /// The loss table to write (default `full_loss_table.txt`).
    #[arg(long = "loss_table", alias = "loss-table")]
    loss_table: Option<PathBuf>,
    /// Continue an interrupted run from its journal (`<-o>.journal`, one
    /// record per scored configuration) without scoring those again; the
    /// outputs are those of an uninterrupted run. A journal of other
    /// inputs is refused.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    flags: SearchCommonFlags,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    report: super::report::ReportFlags,
}

/// Flags every standalone search shares.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Static shapes for dynamic inputs of an .onnx model.
    #[arg(long = "input_shapes", alias = "input-shapes")]
    input_shapes: Option<String>,
    #[command(flatten)]
    preprocess: PreprocessArgs,
    /// Write this text as the files' time line (reproducible files).
    #[arg(long = "fixed_time", alias = "fixed-time", conflicts_with = "no_time")]
    fixed_time: Option<String>,
    /// Leave the time lines out (reproducible files).
    #[arg(long = "no_time", alias = "no-time")]
    no_time: bool,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar and no console lines.
    #[arg(short, long)]
    quiet: bool,
}

impl CommonArgs {
    /// The search context of a standalone tool.
    fn context(
        &self,
        model: &Path,
        samples: SampleArgs<'_>,
        processor: &str,
        fp_type: &str,
    ) -> Result<SearchContext> {
        context(&ContextArgs {
            model,
            input_shapes: self.input_shapes.as_deref(),
            preprocess: &self.preprocess,
            samples,
            processor,
            fp_type,
            fixed_time: self.fixed_time.as_deref(),
            no_time: self.no_time,
            quiet: self.quiet,
        })
    }
}

const QTABLE_HELP: &str = "\
Walks the ops in order. Where an op's own output similarity to the float model (mapped scale,
mean over the samples) is below --min_layer_cos, the op and the ops since the previous visited
op go to float; the change is kept unless the model output gets worse than all-int8, and the
walk stops once the output similarity exceeds --expected_cos. The reference is the model at the
float type (F16 on bm1684x, as TPU-MLIR). Outputs: the qtable (-o), the loss table
(--loss_table, default full_loss_table.txt: every visited op's similarity, ascending) and the
log `Mix_Search`, written atomically. Each scored configuration is recorded in `<-o>.journal`
(removed at the end); --resume continues an interrupted run from it to the same files.

Exit codes: 0 success; 2 bad input or usage.";

/// `run_qtable`.
#[derive(clap::Parser)]
#[command(
    name = "run_qtable",
    version,
    about = "Mixed-precision qtable by per-layer similarity (exit codes: 0 ok, 2 bad input)"
)]
pub struct QtableTool {
    #[command(flatten)]
    pub args: QtableArgs,
}

pub fn run_qtable(args: QtableArgs) -> Result<()> {
    let threads = args.common.threads;
    super::with_threads(threads, || run_qtable_inner(args))
}

fn run_qtable_inner(args: QtableArgs) -> Result<()> {
    let start = Instant::now();
    args.report.check()?;
    let debug = parse_debug_cmd(&args.debug_cmd)?;
    debug.warn_ignored();
    let ctx = args.common.context(
        &args.model,
        SampleArgs {
            dataset: args.dataset.as_deref(),
            data_list: args.data_list.as_deref(),
            input_num: args.input_num,
            tune_list: None,
            tune_num: 0,
        },
        &args.processor,
        &args.flags.fp_type,
    )?;
    let mut ctx = ctx;
    ctx.apply_transformer(&args.flags.transformer)?;
    let table = crate::model::read_calibration_table(&args.calibration_table)?;
    let mut log = SearchLog::new("Mix_Search", console(args.common.quiet));
    let loss_path = args
        .loss_table
        .clone()
        .unwrap_or_else(|| PathBuf::from("full_loss_table.txt"));
    let ev = ctx.evaluator(
        args.input_num,
        args.flags.global_compare_layers.as_deref(),
        args.flags.memory_bytes(),
        args.post_process.as_deref(),
    )?;
    run_mix_search(
        &ctx,
        ev,
        MixSearch {
            table,
            base_qtable: ctx.shape_qtable.clone(),
            float_mode: ctx.float_mode,
            expected_cos: args.expected_cos,
            min_layer_cos: args.min_layer_cos.unwrap_or(0.99),
            max_float_layers: args.max_float_layers,
        },
        &mut log,
        &args.output,
        &loss_path,
        LossHeader::RunQtable,
        start,
        &ReportSpec {
            flags: &args.report,
            kind: "run_qtable",
            layer_loss: "1 - the layer's own output similarity (mapped) in the configuration the walk had reached",
        },
        (
            args.flags.global_compare_layers.as_deref(),
            args.post_process.as_deref(),
        ),
        args.resume,
    )
}

/// `run_sensitive_layer`.
#[derive(clap::Args)]
#[command(after_long_help = SENSITIVE_HELP)]
pub struct SensitiveArgs {
    /// The float model (.mlir from model_transform, or .onnx).
    model: PathBuf,
    #[arg(long)]
    dataset: Option<PathBuf>,
    #[arg(long = "data_list", alias = "data-list")]
    data_list: Option<PathBuf>,
    /// The calibration table (input; the starting thresholds).
    #[arg(long = "calibration_table", alias = "calibration-table")]
    calibration_table: PathBuf,
    #[arg(long, alias = "chip", default_value = "bm1684x")]
    processor: String,
    /// Samples of the per-method calibration (default 10).
    #[arg(long = "input_num", alias = "input-num", default_value_t = 10)]
    input_num: usize,
    /// Samples the outputs are compared on (default 10).
    #[arg(long = "inference_num", alias = "inference-num", default_value_t = 10)]
    inference_num: usize,
    /// Layers written to the qtable.
    #[arg(
        long = "max_float_layers",
        alias = "max-float-layers",
        default_value_t = 5
    )]
    max_float_layers: usize,
    #[arg(long = "tune_list", alias = "tune-list")]
    tune_list: Option<PathBuf>,
    #[arg(long = "tune_num", alias = "tune-num", default_value_t = 5)]
    tune_num: usize,
    #[arg(
        long = "histogram_bin_num",
        alias = "histogram-bin-num",
        default_value_t = 2048
    )]
    histogram_bin_num: usize,
    /// A Python file defining `PostProcess(data)`.
    #[arg(long = "post_process", alias = "post-process")]
    post_process: Option<PathBuf>,
    /// Accepted for TPU-MLIR compatibility (the old tool ignored it too).
    #[arg(long = "expected_cos", alias = "expected-cos", default_value_t = 0.99)]
    expected_cos: f64,
    #[arg(long = "debug_cmd", alias = "debug-cmd", default_value = "")]
    debug_cmd: String,
    /// The qtable to write (not needed with --sensitivity_table alone).
    #[arg(short = 'o', required_unless_present = "sensitivity_table")]
    output: Option<PathBuf>,
    /// Write the per-layer sensitivity report (Markdown) here: each int8
    /// layer alone in int8 at the --calibration_table threshold, every
    /// other in float; plain cosine of --sensitivity_output to the float
    /// model, mean and min over the inference samples, worst first.
    #[arg(long = "sensitivity_table", alias = "sensitivity-table")]
    sensitivity_table: Option<PathBuf>,
    /// The output the sensitivity report compares (default: the first).
    #[arg(
        long = "sensitivity_output",
        alias = "sensitivity-output",
        requires = "sensitivity_table"
    )]
    sensitivity_output: Option<String>,
    /// Continue an interrupted search from its journal (`<-o>.journal`)
    /// without redoing finished layers.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    flags: SearchCommonFlags,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    report: super::report::ReportFlags,
}

const SENSITIVE_HELP: &str = "\
For every layer the chip runs in int8, with every other such layer in float: the output loss
(1 - mapped cos) of the layer's int8 form with the MAX, Percentile9999 and KL thresholds; the
best threshold is kept. The --max_float_layers layers with the largest losses go to the qtable
(-o); new_cali_table.txt (current folder) holds the best thresholds; the log is
`SensitiveLayerSearch`. --resume continues from `<qtable>.journal`.

With --sensitivity_table FILE: first the per-layer sensitivity report (see the flag); without
-o, only the report is computed (no method calibration, no qtable).

Exit codes: 0 success; 2 bad input or usage.";

/// `run_sensitive_layer`.
#[derive(clap::Parser)]
#[command(
    name = "run_sensitive_layer",
    version,
    about = "Sensitive-layer search: per-layer best thresholds and the layers to keep in float (exit codes: 0 ok, 2 bad input)"
)]
pub struct SensitiveTool {
    #[command(flatten)]
    pub args: SensitiveArgs,
}

pub fn run_sensitive_layer(args: SensitiveArgs) -> Result<()> {
    let threads = args.common.threads;
    super::with_threads(threads, || run_sensitive_inner(args))
}

fn run_sensitive_inner(args: SensitiveArgs) -> Result<()> {
    let start = Instant::now();
    args.report.check()?;
    if args.output.is_none() {
        // Report-only mode runs no method search: its flags would be
        // ignored. (Values at their defaults cannot be told from absent.)
        for (given, flag) in [
            (args.max_float_layers != 5, "--max_float_layers"),
            (args.tune_num != 5, "--tune_num"),
            (args.tune_list.is_some(), "--tune_list"),
            (args.histogram_bin_num != 2048, "--histogram_bin_num"),
            (args.resume, "--resume"),
            (args.report.report.is_some(), "--report"),
            (args.report.plot.is_some(), "--plot"),
        ] {
            if given {
                bail!(
                    "{flag} applies to the sensitive-layer search, which runs only with -o;                      --sensitivity_table alone writes the report only"
                );
            }
        }
    }
    let debug = parse_debug_cmd(&args.debug_cmd)?;
    debug.warn_ignored();
    let ctx = args.common.context(
        &args.model,
        SampleArgs {
            dataset: args.dataset.as_deref(),
            data_list: args.data_list.as_deref(),
            input_num: args.input_num,
            tune_list: args.tune_list.as_deref(),
            tune_num: args.tune_num,
        },
        &args.processor,
        &args.flags.fp_type,
    )?;
    let mut ctx = ctx;
    ctx.keep_memory_bytes = args.flags.memory_bytes();
    ctx.apply_transformer(&args.flags.transformer)?;
    let table = crate::model::read_calibration_table(&args.calibration_table)?;
    if let Some(path) = &args.sensitivity_table {
        sensitivity_report(&ctx, &args, &table, path)?;
    }
    let Some(output) = args.output.clone() else {
        return Ok(());
    };
    let methods = [
        CalibrationMethod::Max,
        CalibrationMethod::Percentile9999,
        CalibrationMethod::Kl,
    ];
    let t0 = Instant::now();
    let tables = ctx.calibrate_methods(
        &methods,
        args.histogram_bin_num,
        debug.tune_steps,
        &args.calibration_table,
    )?;
    let cal_time = t0.elapsed();
    let t1 = Instant::now();
    let mut log = SearchLog::new("SensitiveLayerSearch", console(args.common.quiet));
    let mut ev = ctx.evaluator(
        args.inference_num,
        args.flags.global_compare_layers.as_deref(),
        args.flags.memory_bytes(),
        args.post_process.as_deref(),
    )?;
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
        expected_cos: args.expected_cos,
        max_float_layers: args.max_float_layers,
        prescreen: false,
        adjust: false,
    };
    let mut parts = vec![
        model_fingerprint(&args.model)?,
        format!(
            "sensitive {} {} {}",
            args.inference_num, args.max_float_layers, ctx.chip
        ),
        format!(
            "{} {}",
            ctx.float_mode,
            args.flags.global_compare_layers.as_deref().unwrap_or("")
        ),
    ];
    parts.extend(search.methods.iter().map(|m| m.table.to_text()));
    parts.push(search.table.to_text());
    run_layer_search(
        &ctx,
        &mut ev,
        &search,
        &mut log,
        &output,
        &fingerprint(&parts),
        args.resume,
        "success sensitive layer search",
        start,
        [cal_time, ref_time],
        &ReportSpec {
            flags: &args.report,
            kind: "run_sensitive_layer",
            layer_loss: "the output loss (1 - mapped cos) with only this layer in int8, at each method's threshold",
        },
    )
}

/// `run_sensitive_layer --sensitivity_table`: the per-layer report.
fn sensitivity_report(
    ctx: &SearchContext,
    args: &SensitiveArgs,
    table: &CalibrationTable,
    path: &Path,
) -> Result<()> {
    let t0 = Instant::now();
    let mut ev = ctx.evaluator(
        args.inference_num,
        None,
        args.flags.memory_bytes(),
        args.post_process.as_deref(),
    )?;
    ctx.f32_reference(&mut ev)?;
    let output = match &args.sensitivity_output {
        Some(o) => o.clone(),
        None => ev
            .reference()
            .first()
            .and_then(|s| s.first())
            .map(|(n, _)| n.clone())
            .ok_or_else(|| anyhow::anyhow!("the model has no output to compare"))?,
    };
    let bar = ctx.bar();
    let rep = mix::sensitivity(
        &mut ev,
        table,
        &ctx.shape_qtable,
        // "Everything else float" in F32, so a row measures the int8 form
        // of its layer alone, not the chip float type's rounding too.
        QuantMode::F32,
        &output,
        &bar,
    )?;
    write_text(
        path,
        &rep.to_markdown(&args.calibration_table.display().to_string()),
    )?;
    if !ctx.quiet {
        println!(
            "sensitivity report of {} layers written to {} ({:.1} s)",
            rep.rows.len(),
            path.display(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
