//! The mixed-precision tools (spec sections 3.6 to 3.10) as library calls:
//!
//! * [`search_threshold`]: the calibration method whose table scores best
//!   (`run_calibration --search search_threshold`, with `--we` / `--bc`);
//! * [`search_qtable`]: per-layer method choice and the layers kept in
//!   float (`--search search_qtable`);
//! * [`fast_search`]: TPU-MLIR's fast qtable search (`--search fast_search`);
//! * [`mix_search`]: the walk by per-layer similarity (`--search
//!   mix_search`, and `run_qtable`, which is it with the old tool's loss
//!   table);
//! * [`sensitive_layers`]: `run_sensitive_layer`, and its per-layer
//!   sensitivity report;
//! * [`fp_forward`]: the float layers before, after and between named ops.
//!
//! Each writes the files TPU-MLIR's tool writes (the qtable, tables, loss
//! table, the log), atomically, and returns a [`SearchOutcome`]; long
//! searches record their progress in a journal beside their output so that
//! `resume` continues an interrupted run to the same files. The algorithms
//! are `qtune_mixed`'s; this is the pipeline around them.
//!
//! ```no_run
//! use qtune::CalibrationSource;
//! use qtune::search::{QtableSearchSettings, SearchSettings, parse_method_list, search_qtable};
//!
//! // run_calibration mobilenet_v2.mlir --dataset images --input_num 100
//! //   --inference_num 30 --expected_cos 0.99 --quantize_method_list KL,MSE
//! //   --search search_qtable --processor bm1684 --quantize_table qtable -o cali_table
//! let images = CalibrationSource::Dataset("images".into());
//! let mut common = SearchSettings::new("mobilenet_v2.mlir", images);
//! common.input_num = 100;
//! common.inference_num = 30;
//! common.processor = "bm1684".into();
//! let mut settings = QtableSearchSettings::new(common, "cali_table", "qtable");
//! settings.methods = parse_method_list("KL,MSE")?;
//! let found = search_qtable(&settings, &qtune::Silent)?;
//! println!("{} float layer(s), output cos {:?}", found.float_layers.len(), found.final_cos);
//! # Ok::<(), qtune::Error>(())
//! ```

mod fp_forward;
mod layers;
mod mix;
mod threshold;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use qtune_calibrate::{
    CalibrationMethod, CalibrationSettings, CalibrationTable, QuantMode, QuantizeTable,
    TableHeader, TimeLine, calibrate_methods,
};
use qtune_deploy::Processor;
use qtune_exec::PrepareOptions;
use qtune_ir::Graph;
use qtune_mixed::journal::Journal;
use qtune_mixed::{Built, MixEvaluator, Precision};
use qtune_tensor::Tensor;

use crate::calibration::{CalibrateSettings, CalibrationInput, calibration_input};
use crate::model::{self, Naming};
use crate::report::{self, ReportOutputs, RunFacts};
use crate::{CalibrationSource, Error, Preprocess, Reporter, Result};

pub use fp_forward::{FpForward, FpForwardSettings, fp_forward};
pub use layers::{QtableSearchSettings, SensitiveSettings, search_qtable, sensitive_layers};
pub use mix::{FastSearchSettings, LossTableStyle, MixSearchSettings, fast_search, mix_search};
pub use qtune_mixed::Benchmark;
pub use threshold::{ThresholdSearchSettings, search_threshold};

/// What every search needs: the model, its samples, the chip, and how the
/// outputs are compared.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SearchSettings {
    /// The float model: a Top `.mlir` or an `.onnx` file.
    pub model: PathBuf,
    /// Static shapes for dynamic inputs of an `.onnx` model.
    pub input_shapes: Option<String>,
    /// Image preprocessing of an `.onnx` model.
    pub preprocess: Preprocess,
    /// The samples.
    pub source: CalibrationSource,
    /// Samples used for calibration (0: all); the first `inference_num` of
    /// them are the ones the outputs are compared on.
    pub input_num: usize,
    /// A data list of the tuning samples.
    pub tune_list: Option<PathBuf>,
    /// Tuning samples of the calibrations a search runs.
    pub tune_num: usize,
    /// Histogram bins of those calibrations.
    pub histogram_bin_num: usize,
    /// Tuning steps (`--debug_cmd tune_steps=N`; `None`: the default).
    pub tune_steps: Option<u32>,
    /// Target processor (its integer semantics are simulated).
    pub processor: String,
    /// Float type of the layers put in float: `auto` (the chip's), F16,
    /// F32, BF16.
    pub fp_type: String,
    /// Keep TPU-MLIR's transformer pattern layers in float throughout
    /// (`--transformer True`, spec 3.13).
    pub transformer: bool,
    /// The files' time line (`None`: none).
    pub time: Option<String>,
    /// Samples the outputs are compared on.
    pub inference_num: usize,
    /// Compare these tensors instead of the outputs: `a,b` or `a:0.3,b:0.7`
    /// (`--global_compare_layers`).
    pub compare_layers: Option<String>,
    /// A Python file defining `PostProcess(data)`, applied to the outputs
    /// before they are compared.
    pub post_process: Option<PathBuf>,
    /// The memory budget of the calibration tuner and the search caches, in
    /// bytes (`--memory_mb`). Results do not depend on it.
    pub memory_bytes: usize,
    /// Continue an interrupted run from its journal.
    pub resume: bool,
    /// The report of the run.
    pub report: ReportOutputs,
}

impl SearchSettings {
    /// Settings with the tools' defaults (bm1684x, F16 float layers, 30
    /// compared samples, the current time) for `model` and `source`.
    pub fn new(model: impl Into<PathBuf>, source: CalibrationSource) -> Self {
        SearchSettings {
            model: model.into(),
            input_shapes: None,
            preprocess: Preprocess::default(),
            source,
            input_num: 0,
            tune_list: None,
            tune_num: 5,
            histogram_bin_num: 2048,
            tune_steps: None,
            processor: "bm1684x".to_string(),
            fp_type: "auto".to_string(),
            transformer: false,
            time: Some(crate::python_now()),
            inference_num: 30,
            compare_layers: None,
            post_process: None,
            memory_bytes: qtune_calibrate::DEFAULT_KEEP_MEMORY_BYTES,
            resume: false,
            report: ReportOutputs::none(),
        }
    }

    /// The calibration settings of these samples with `method`, writing
    /// transformed models beside `table_path`.
    fn calibrate_settings(
        &self,
        method: CalibrationMethod,
        table_path: &Path,
    ) -> CalibrateSettings {
        let mut s = CalibrateSettings::new(self.model.clone(), self.source.clone(), table_path);
        s.input_shapes = self.input_shapes.clone();
        s.preprocess = self.preprocess.clone();
        s.input_num = self.input_num;
        s.tune_list = self.tune_list.clone();
        s.calibration = self.calibration(method);
        s.processor = self.processor.clone();
        s
    }

    fn calibration(&self, method: CalibrationMethod) -> CalibrationSettings {
        let mut c = CalibrationSettings::new(method);
        c.histogram_bin_num = self.histogram_bin_num;
        c.tune_num = self.tune_num;
        c.keep_memory_bytes = self.memory_bytes;
        if let Some(s) = self.tune_steps {
            c.tune_steps = s;
        }
        c
    }
}

/// What a search found and wrote.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct SearchOutcome {
    /// The layers the search put in float (the qtable's rows beyond the
    /// shape and pattern layers).
    pub float_layers: Vec<String>,
    /// The calibration method chosen (search_threshold).
    pub chosen_method: Option<String>,
    /// The output similarity of the all-int8 model.
    pub all_int8_cos: Option<f64>,
    /// The output similarity of the final model.
    pub final_cos: Option<f64>,
    /// Per layer: what the search measured (mix_search: the layer's own
    /// mapped similarity; the layer searches: the best output loss; the
    /// threshold search: each method's score).
    pub layer_scores: Vec<(String, f64)>,
    /// The search stopped before its walk (all-int8 already met the goal,
    /// or the table it would compute existed).
    pub early_exit: bool,
    /// The files written, in order.
    pub written: Vec<PathBuf>,
}

/// What every search works with.
struct Context<'r> {
    cal: CalibrationInput,
    /// The evaluation graph: TPU-MLIR op names, BatchNorm folded into Conv
    /// (as TPU-MLIR's lowering and model_deploy do).
    graph: Graph,
    processor: Processor,
    chip: String,
    /// Float mode of the layers the search puts in float (and the qtable's),
    /// which is also the type of the ops the chip keeps in float.
    float_mode: QuantMode,
    shape_qtable: Vec<(String, QuantMode)>,
    /// `transformer`: the pattern layers (also in `shape_qtable`, the fixed
    /// float layers of every search; written as pattern layers).
    pattern_layers: Vec<String>,
    time_text: Option<String>,
    model_path: PathBuf,
    dataset: String,
    report: ReportOutputs,
    reporter: &'r dyn Reporter,
}

/// The processor a search simulates.
fn search_processor(name: &str) -> Result<Processor> {
    Processor::parse(name).ok_or_else(|| {
        let all: Vec<&str> = Processor::ALL.iter().map(|p| p.name()).collect();
        Error::setting(
            "processor",
            format!(
                "--processor {name}: the searches simulate {}",
                all.join(", ")
            ),
        )
    })
}

impl<'r> Context<'r> {
    /// The context of `s` on its model (or on `model` when given: the
    /// equalized model of search_threshold's `--we`).
    fn new(s: &SearchSettings, model: Option<&Path>, reporter: &'r dyn Reporter) -> Result<Self> {
        s.report.check()?;
        let processor = search_processor(&s.processor)?;
        let float_mode = processor
            .profile()
            .float_type(&s.fp_type)
            .map_err(|e| Error::setting("fp_type", format!("--fp_type: {e}")))?;
        let model_path = model.unwrap_or(&s.model).to_path_buf();
        let mut cs = s.calibrate_settings(CalibrationMethod::Kl, Path::new(""));
        cs.model = model_path.clone();
        let cal = calibration_input(&cs, false)?;
        let mut prepare = PrepareOptions::default();
        prepare.fold_batchnorm = true;
        let graph = model::load_model(
            &model_path,
            s.input_shapes.as_deref(),
            &prepare,
            Naming::TopOps,
        )?
        .exec
        .graph()
        .clone();
        let shape_qtable = qtune_calibrate::shape_layers(cal.loaded.exec.graph())
            .into_iter()
            .map(|l| (l, float_mode))
            .collect();
        let mut ctx = Context {
            cal,
            graph,
            processor,
            chip: s.processor.clone(),
            float_mode,
            shape_qtable,
            pattern_layers: Vec::new(),
            time_text: s.time.clone(),
            model_path,
            dataset: s.source.label(),
            report: s.report.clone(),
            reporter,
        };
        if s.transformer {
            ctx.apply_transformer();
        }
        Ok(ctx)
    }

    /// The graph inputs of the first `n` sample batches, by name.
    fn inference_samples(&self, n: usize) -> Result<Vec<Vec<(String, Tensor)>>> {
        report::loader_samples(self.cal.loaded.exec.graph(), &self.cal.loader, n)
    }

    /// The evaluator of `n` samples, comparing as `s` says.
    fn evaluator(&self, n: usize, s: &SearchSettings) -> Result<MixEvaluator<'_>> {
        let compare = match s.compare_layers.as_deref() {
            Some(c) => qtune_mixed::parse_compare_layers(c).map_err(|e| {
                Error::setting(
                    "global_compare_layers",
                    format!("--global_compare_layers: {e}"),
                )
            })?,
            None => Vec::new(),
        };
        let mut ev = MixEvaluator::new(
            &self.graph,
            self.processor,
            self.float_mode,
            self.inference_samples(n)?,
            compare,
            s.memory_bytes,
        )?;
        if let Some(script) = &s.post_process {
            let p = qtune_mixed::PostProcess::start(script)?;
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
        s: &SearchSettings,
        methods: &[CalibrationMethod],
        cali: &Path,
        written: &mut Vec<PathBuf>,
    ) -> Result<Vec<(CalibrationMethod, CalibrationTable)>> {
        let mut settings = s.calibration(methods[0]);
        settings.tune_num = self.cal.tune_num;
        let outcomes = calibrate_methods(
            &self.cal.loaded.exec,
            &self.cal.loader,
            self.cal.tune_loader.as_ref(),
            methods,
            &settings,
            true,
            self.reporter,
        )
        .with_context(|| format!("calibrating `{}`", self.model_path.display()))?;
        let header = self.header(self.cal.tune_num);
        let mut out = Vec::new();
        for o in outcomes {
            let base = format!("{}_{}", cali.display(), o.method.name());
            let table = if o.tuned_rows.is_some() {
                let first = PathBuf::from(format!("{base}.1"));
                o.table(&header, false).write(&first)?;
                let t = o.table(&header, true);
                let tuned = PathBuf::from(format!("{base}_tune"));
                t.write(&tuned)?;
                written.extend([first, tuned]);
                t
            } else {
                let t = o.table(&header, false);
                t.write(Path::new(&base))?;
                written.push(PathBuf::from(base));
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

    /// Measures and writes the report of a search (or gives the text
    /// table to the reporter).
    fn report(&self, r: SearchReport<'_>) -> Result<()> {
        if !self.report.wanted() {
            return Ok(());
        }
        let mut qtable = self.shape_qtable.clone();
        qtable.extend(r.float_layers.iter().map(|n| (n.clone(), self.float_mode)));
        let fp = self.float_mode.to_string();
        report::finish(
            &self.report,
            RunFacts {
                title: r.title.to_string(),
                model: &self.model_path,
                graph: &self.graph,
                processor: &self.chip,
                dataset: self.dataset.clone(),
                table: Some(r.table),
                qtable: &qtable,
                fp_type: &fp,
                quantize: QuantMode::Int8,
                asymmetric: false,
                matmul_per_channel: false,
                samples: self.inference_samples(report::RUN_REPORT_SAMPLES)?,
                method_tables: r.method_tables,
                counts: vec![
                    qtune_report::Entry::new("calibration samples", self.cal.loader.sample_count()),
                    qtune_report::Entry::new("float layers chosen", r.float_layers.len()),
                ],
                timings: r.timings,
                outputs: r.outputs,
                search: r.search,
                transforms: Vec::new(),
                notes: Vec::new(),
                prebuilt: None,
                measured: None,
            },
            self.reporter,
        )
    }

    /// `transformer`: adds the transformer pattern layers to the fixed
    /// float layers (spec 3.13).
    fn apply_transformer(&mut self) {
        let pattern = qtune_mixed::transformer_pattern_layers(&self.graph);
        for n in &pattern {
            if !self.shape_qtable.iter().any(|(s, _)| s == n) {
                self.shape_qtable.push((n.clone(), self.float_mode));
            }
        }
        self.reporter.line(&format!(
            "--transformer: {} pattern layers in {} (Adds feeding a LayerNorm, GELU / SiLU, MatMuls after a GELU)",
            pattern.len(),
            self.float_mode
        ));
        self.pattern_layers = pattern;
    }

    /// The float reference (F32 model) of the evaluator.
    fn f32_reference(&self, ev: &mut MixEvaluator) -> Result<()> {
        self.reference_at(ev, QuantMode::F32)?;
        Ok(())
    }

    /// Makes the whole model at `mode` the evaluator's reference; returns
    /// that model.
    fn reference_at(&self, ev: &mut MixEvaluator, mode: QuantMode) -> Result<Built> {
        let b = ev.build(&Precision {
            quantize: mode,
            table: None,
            qtable: &[],
        })?;
        ev.set_reference(&b)?;
        Ok(b)
    }

    /// A search log whose console lines go to the reporter.
    fn log(&self, name: &str) -> qtune_mixed::log::SearchLog<'r> {
        let reporter = self.reporter;
        qtune_mixed::log::SearchLog::new(name, Box::new(move |l: &str| reporter.line(l)))
    }

    /// Opens the journal of a search beside its output (`<output>.journal`,
    /// see [`Journal::open`]), warning when `s.resume` finds none and saying
    /// how many records it reads back.
    ///
    /// Its fingerprint covers what every search's result depends on: the
    /// model's bytes (and its weights), the chip and float type, the
    /// compared tensors, the post-process script's content, the fixed float
    /// layers (shape and `--transformer` pattern layers) and the compared
    /// samples; then `own`, the search's kind, parameters and tables. A
    /// journal of other inputs is refused.
    fn open_journal(
        &self,
        s: &SearchSettings,
        ev: &MixEvaluator,
        output: &Path,
        own: Vec<String>,
        what: &str,
    ) -> Result<Journal> {
        let mut parts = vec![
            model_fingerprint(&self.model_path)?,
            format!(
                "{} {} {}",
                self.chip,
                self.float_mode,
                s.compare_layers.as_deref().unwrap_or("")
            ),
            post_process_key(s.post_process.as_deref())?,
            format!("{:?}", self.shape_qtable),
            ev.samples_key(),
        ];
        parts.extend(own);
        let path = &journal_path(output);
        let resume = s.resume;
        let fingerprint = fingerprint(&parts);
        if resume && !path.exists() {
            self.reporter.warning(&format!(
                "warning: --resume: no journal at `{}`; starting from the beginning",
                path.display()
            ));
        }
        let journal = Journal::open(path, &fingerprint, resume)?;
        let n = journal.records().len();
        if n > 0 {
            self.reporter.line(&format!(
                "--resume: {n} {what} read from `{}`",
                path.display()
            ));
        }
        Ok(journal)
    }
}

/// What the report of a search says about it.
struct SearchReport<'a> {
    title: &'a str,
    table: &'a CalibrationTable,
    float_layers: &'a [String],
    method_tables: Vec<(String, &'a CalibrationTable)>,
    search: Option<qtune_report::Search>,
    timings: Vec<qtune_report::Timing>,
    outputs: Vec<String>,
}

/// `KL,MSE` -> the methods search_qtable compares, in order, without
/// repeats; unknown names are an error (TPU-MLIR drops them silently).
pub fn parse_method_list(s: &str) -> Result<Vec<CalibrationMethod>> {
    let mut out: Vec<CalibrationMethod> = Vec::new();
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
            .ok_or_else(|| {
                Error::setting(
                    "quantize_method_list",
                    format!(
                        "--quantize_method_list: `{item}` is not one of KL, MSE, MAX, Percentile9999"
                    ),
                )
            })?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        return Err(Error::setting(
            "quantize_method_list",
            format!("--quantize_method_list `{s}`: no method"),
        ));
    }
    Ok(out)
}

/// How TPU-MLIR's searches label a method in their logs and qtables.
pub fn method_label(m: CalibrationMethod) -> &'static str {
    match m {
        CalibrationMethod::Kl => "KL",
        CalibrationMethod::Mse => "MSE",
        CalibrationMethod::Max => "MAX",
        CalibrationMethod::Percentile9999 => "Percentile9999",
        CalibrationMethod::AciqGauss => "ACIQ_GAUSS",
        CalibrationMethod::AciqLaplace => "ACIQ_LAPLACE",
    }
}

/// `<path>.journal`.
fn journal_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

/// A fingerprint of everything a search's result depends on.
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

/// The `post_process` script for a fingerprint: its path and content.
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
        .with_context(|| format!("writing `{}`", path.display()))?;
    Ok(())
}

/// Writes the log (its lines up to a failure) and passes the failure on;
/// the journal stays for `resume`.
fn failed<T>(log: &qtune_mixed::log::SearchLog, e: qtune_calibrate::PipelineError) -> Result<T> {
    let _ = log.write();
    Err(e.into())
}
