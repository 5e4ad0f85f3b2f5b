//! The mixed-precision searches' flags: `run_calibration --search
//! search_threshold|search_qtable|mix_search|fast_search`, `run_qtable` and
//! `run_sensitive_layer` (spec sections 3.6 to 3.10). The work is the
//! library's (`qtune::search`); this is flags to settings, one call, and
//! the exit.

use std::path::PathBuf;

use anyhow::{Result, bail};
use qtune::search::{
    self, Benchmark, FastSearchSettings, LossTableStyle, MixSearchSettings, QtableSearchSettings,
    SearchOutcome, SearchSettings, SensitiveSettings, ThresholdSearchSettings,
};
use qtune::{CalibrationSource, Reporter};

use super::preprocess_args::PreprocessArgs;
use crate::flags::{Args as CalibrateArgs, flag_source, parse_bool_flag, parse_debug_cmd};
pub use crate::flags::{SearchCommonFlags, SearchFlags};
use crate::progress::Bar;

/// The time line of the files: `--fixed_time`, none with `--no_time`, else
/// now.
fn time_line(fixed: Option<&str>, no_time: bool) -> Option<String> {
    match (fixed, no_time) {
        (Some(t), _) => Some(t.to_string()),
        (None, true) => None,
        (None, false) => Some(qtune::python_now()),
    }
}

/// The settings every search shares, from the flags they share.
fn common_settings(
    model: &std::path::Path,
    source: CalibrationSource,
    flags: &SearchCommonFlags,
    processor: &str,
) -> Result<SearchSettings> {
    let mut s = SearchSettings::new(model, source);
    s.processor = processor.to_string();
    s.fp_type = flags.fp_type.clone();
    s.transformer = parse_bool_flag("--transformer", &flags.transformer)?;
    s.compare_layers = flags.global_compare_layers.clone();
    s.memory_bytes = flags.memory_bytes();
    Ok(s)
}

/// A `run_calibration --search` run, as the library's settings.
pub enum CalibrationSearch {
    Threshold(ThresholdSearchSettings),
    Qtable(QtableSearchSettings),
    Fast(FastSearchSettings),
    Mix(MixSearchSettings),
}

impl CalibrationSearch {
    /// The settings of `args` (a search mode); `source` replaces
    /// `--dataset` / `--data_list` when given (samples in memory from the
    /// Python package). Debug-key warnings go to stderr.
    pub fn from_args(args: &CalibrateArgs, source: Option<CalibrationSource>) -> Result<Self> {
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
        let qtable = match &args.quantize_table {
            Some(p) => p.clone(),
            None if mode == "search_threshold" => {
                qtune::qtable_default_path(&args.calibration_table)
            }
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
        let source = match source {
            Some(s) => s,
            None => args.source()?,
        };
        let mut s = common_settings(&args.model, source, &flags.common, &args.processor)?;
        s.input_shapes = args.input_shapes.clone();
        s.preprocess = args.preprocess.settings();
        s.input_num = args.input_num;
        s.tune_list = args.tune_list.clone();
        s.tune_num = args.tune_num;
        s.histogram_bin_num = args.histogram_bin_num;
        s.tune_steps = debug.tune_steps;
        s.time = time_line(args.fixed_time.as_deref(), args.no_time);
        s.inference_num = args.inference_num.unwrap_or(30);
        s.post_process = args.post_process.clone();
        s.resume = flags.resume;
        s.report = args.report_flags.outputs(args.quiet);
        let expected_cos = args.expected_cos.unwrap_or(0.99);
        let cali = args.calibration_table.clone();
        Ok(match mode {
            "search_threshold" => {
                let mut t = ThresholdSearchSettings::new(s, cali);
                t.qtable = qtable;
                t.benchmark = benchmark;
                t.weight_equalization = args.we;
                t.bias_correction = args.bias_correction();
                CalibrationSearch::Threshold(t)
            }
            "search_qtable" => {
                let mut q = QtableSearchSettings::new(s, cali, qtable);
                q.methods = search::parse_method_list(
                    args.quantize_method_list.as_deref().unwrap_or("mse"),
                )?;
                q.expected_cos = expected_cos;
                q.max_float_layers = args.max_float_layers.unwrap_or(5);
                CalibrationSearch::Qtable(q)
            }
            "fast_search" => {
                let mut f = FastSearchSettings::new(s, cali, qtable);
                f.method = qtune::parse_method(&args.cali_method)?;
                f.expected_cos = expected_cos;
                CalibrationSearch::Fast(f)
            }
            _ => {
                let mut m = MixSearchSettings::new(s, cali, qtable);
                if let Some(l) = &flags.loss_table {
                    m.loss_table = l.clone();
                }
                m.expected_cos = expected_cos;
                m.min_layer_cos = flags.min_layer_cos.unwrap_or(0.99);
                m.max_float_layers = args.max_float_layers;
                CalibrationSearch::Mix(m)
            }
        })
    }

    /// Runs the search.
    pub fn run(&self, reporter: &dyn Reporter) -> qtune::Result<SearchOutcome> {
        match self {
            CalibrationSearch::Threshold(s) => search::search_threshold(s, reporter),
            CalibrationSearch::Qtable(s) => search::search_qtable(s, reporter),
            CalibrationSearch::Fast(s) => search::fast_search(s, reporter),
            CalibrationSearch::Mix(s) => search::mix_search(s, reporter),
        }
    }
}

/// `run_calibration --search ...`.
pub fn run_calibration_search(args: &CalibrateArgs) -> Result<()> {
    let search = CalibrationSearch::from_args(args, None)?;
    search.run(&Bar::new(args.quiet))?;
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
    report: crate::flags::ReportFlags,
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
    report: crate::flags::ReportFlags,
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

impl CommonArgs {
    /// The settings every standalone search shares.
    fn settings(
        &self,
        model: &std::path::Path,
        source: CalibrationSource,
        flags: &SearchCommonFlags,
        processor: &str,
    ) -> Result<SearchSettings> {
        let mut s = common_settings(model, source, flags, processor)?;
        s.input_shapes = self.input_shapes.clone();
        s.preprocess = self.preprocess.settings();
        s.time = time_line(self.fixed_time.as_deref(), self.no_time);
        Ok(s)
    }
}

impl QtableArgs {
    /// The library's settings of this run_qtable; `source` replaces
    /// `--dataset` / `--data_list` when given.
    pub fn settings(&self, source: Option<CalibrationSource>) -> Result<MixSearchSettings> {
        self.report.check()?;
        parse_debug_cmd(&self.debug_cmd)?.warn_ignored();
        let source = match source {
            Some(s) => s,
            None => flag_source(self.data_list.as_ref(), self.dataset.as_ref())?,
        };
        let mut s = self
            .common
            .settings(&self.model, source, &self.flags, &self.processor)?;
        s.input_num = self.input_num;
        s.tune_num = 0;
        // run_qtable compares the outputs on its --input_num samples.
        s.inference_num = self.input_num;
        s.post_process = self.post_process.clone();
        s.resume = self.resume;
        s.report = self.report.outputs(self.common.quiet);
        let mut m = MixSearchSettings::new(s, &self.calibration_table, &self.output);
        m.loss_table = self
            .loss_table
            .clone()
            .unwrap_or_else(|| PathBuf::from("full_loss_table.txt"));
        m.loss_style = LossTableStyle::RunQtable;
        m.expected_cos = self.expected_cos;
        m.min_layer_cos = self.min_layer_cos.unwrap_or(0.99);
        m.max_float_layers = self.max_float_layers;
        Ok(m)
    }
}

impl QtableArgs {
    /// Runs this run_qtable in its thread pool; `source` replaces
    /// `--dataset` / `--data_list` when given.
    pub fn execute(
        &self,
        source: Option<CalibrationSource>,
        reporter: &dyn Reporter,
    ) -> Result<SearchOutcome> {
        let settings = self.settings(source)?;
        Ok(qtune::with_threads(self.common.threads, || {
            search::mix_search(&settings, reporter)
        })?)
    }

    /// `--quiet`.
    pub fn quiet(&self) -> bool {
        self.common.quiet
    }
}

pub fn run_qtable(args: QtableArgs) -> Result<()> {
    args.execute(None, &Bar::new(args.common.quiet))?;
    Ok(())
}

impl SensitiveArgs {
    /// The library's settings of this run_sensitive_layer; `source`
    /// replaces `--dataset` / `--data_list` when given.
    pub fn settings(&self, source: Option<CalibrationSource>) -> Result<SensitiveSettings> {
        self.report.check()?;
        if self.output.is_none() {
            // Report-only mode runs no method search: its flags would be
            // ignored. (Values at their defaults cannot be told from absent.)
            for (given, flag) in [
                (self.max_float_layers != 5, "--max_float_layers"),
                (self.tune_num != 5, "--tune_num"),
                (self.tune_list.is_some(), "--tune_list"),
                (self.histogram_bin_num != 2048, "--histogram_bin_num"),
                (self.resume, "--resume"),
                (self.report.report.is_some(), "--report"),
                (self.report.plot.is_some(), "--plot"),
            ] {
                if given {
                    bail!(
                        "{flag} applies to the sensitive-layer search, which runs only with -o; --sensitivity_table alone writes the report only"
                    );
                }
            }
        }
        let debug = parse_debug_cmd(&self.debug_cmd)?;
        debug.warn_ignored();
        let source = match source {
            Some(s) => s,
            None => flag_source(self.data_list.as_ref(), self.dataset.as_ref())?,
        };
        let mut s = self
            .common
            .settings(&self.model, source, &self.flags, &self.processor)?;
        s.input_num = self.input_num;
        s.tune_list = self.tune_list.clone();
        s.tune_num = self.tune_num;
        s.histogram_bin_num = self.histogram_bin_num;
        s.tune_steps = debug.tune_steps;
        s.inference_num = self.inference_num;
        s.post_process = self.post_process.clone();
        s.resume = self.resume;
        s.report = self.report.outputs(self.common.quiet);
        let mut out = SensitiveSettings::new(s, &self.calibration_table);
        out.qtable = self.output.clone();
        out.max_float_layers = self.max_float_layers;
        out.expected_cos = self.expected_cos;
        out.sensitivity_table = self.sensitivity_table.clone();
        out.sensitivity_output = self.sensitivity_output.clone();
        Ok(out)
    }
}

impl SensitiveArgs {
    /// Runs this run_sensitive_layer in its thread pool; `source` replaces
    /// `--dataset` / `--data_list` when given.
    pub fn execute(
        &self,
        source: Option<CalibrationSource>,
        reporter: &dyn Reporter,
    ) -> Result<SearchOutcome> {
        let settings = self.settings(source)?;
        Ok(qtune::with_threads(self.common.threads, || {
            search::sensitive_layers(&settings, reporter)
        })?)
    }

    /// `--quiet`.
    pub fn quiet(&self) -> bool {
        self.common.quiet
    }
}

pub fn run_sensitive_layer(args: SensitiveArgs) -> Result<()> {
    args.execute(None, &Bar::new(args.common.quiet))?;
    Ok(())
}
