//! The flags of `run_calibration` (plain and per `--search` mode) and the
//! search flags the standalone searches share: flag structs and their
//! parsing only; the commands turn them into the library's settings.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use qtune::report::ReportOutputs;
use qtune_calibrate::CalibrationMethod;

use crate::commands::preprocess_args::PreprocessArgs;

#[derive(clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// The float model: a Top-dialect .mlir from model_transform (its
    /// top.Input attributes give the image preprocessing) or an .onnx file.
    pub(crate) model: PathBuf,
    /// Folder of samples, searched recursively (images, npz or npy); the
    /// files are shuffled as TPU-MLIR does (seed 1684).
    #[arg(long)]
    pub(crate) dataset: Option<PathBuf>,
    /// Text file with one sample per line (comma-separated files for
    /// multi-input models); takes precedence over --dataset.
    #[arg(long = "data_list", alias = "data-list")]
    pub(crate) data_list: Option<PathBuf>,
    /// Number of calibration samples (0: all).
    #[arg(long = "input_num", alias = "input-num", default_value_t = 0)]
    pub(crate) input_num: usize,
    /// kl | mse | max | percentile9999 | aciq_gauss | aciq_laplace (also
    /// use_kl, use_mse, use_max, use_percentile9999; qtune also accepts
    /// use_aciq_gauss and use_aciq_laplace, which TPU-MLIR 1.30 rejects).
    #[arg(long = "cali_method", alias = "cali-method", default_value = "kl")]
    pub(crate) cali_method: String,
    /// Initial bins of the KLD histogram (and of the torch observer).
    #[arg(
        long = "histogram_bin_num",
        alias = "histogram-bin-num",
        default_value_t = 2048
    )]
    pub(crate) histogram_bin_num: usize,
    /// The table's min/max columns, which --asymmetric quantizes with:
    /// `minmax` (TPU-MLIR's: the observed min and max) or `mean` (the mean
    /// over samples of each sample's min and max, NNCF's activation range:
    /// rare extremes no longer stretch the grid). The threshold column is
    /// the method's either way.
    #[arg(long = "range", value_enum, default_value_t = RangeColumns::Minmax)]
    pub(crate) range: RangeColumns,
    /// Data list of the tuning samples (tune_num becomes its length).
    #[arg(long = "tune_list", alias = "tune-list")]
    pub(crate) tune_list: Option<PathBuf>,
    /// Tuning samples (first of the calibration samples); 0 turns tuning
    /// off. Tuning runs for kl, aciq_gauss and aciq_laplace only.
    #[arg(long = "tune_num", alias = "tune-num", default_value_t = 5)]
    pub(crate) tune_num: usize,
    /// Target processor (recorded in the qtable; sets its float mode).
    #[arg(long, alias = "chip", default_value = "bm1684x")]
    pub(crate) processor: String,
    /// The calibration table to write.
    #[arg(short = 'o', long = "calibration_table", alias = "calibration-table")]
    pub(crate) calibration_table: PathBuf,
    /// The qtable of shape-computing ops kept float (default:
    /// `shape_pattern_qtable` next to the calibration table).
    #[arg(long = "quantize_table", alias = "quantize-table")]
    pub quantize_table: Option<PathBuf>,
    /// TPU-MLIR debug keys, `;`- or `,`-separated. Honoured:
    /// use_torch_observer_for_cali, a method name (overrides --cali_method),
    /// tune_steps=N. Other keys are reported and ignored.
    #[arg(long = "debug_cmd", alias = "debug-cmd", default_value = "")]
    pub(crate) debug_cmd: String,
    /// Static shapes for dynamic inputs of an .onnx model, e.g. [[1,3,224,224]].
    #[arg(long = "input_shapes", alias = "input-shapes")]
    pub(crate) input_shapes: Option<String>,
    /// Image preprocessing for an .onnx model (a .mlir carries its own).
    #[command(flatten)]
    pub(crate) preprocess: PreprocessArgs,
    /// Write this text as the table's `# genetated time:` (reproducible files).
    #[arg(long = "fixed_time", alias = "fixed-time", conflicts_with = "no_time")]
    pub fixed_time: Option<String>,
    /// Leave the `# genetated time:` line out (reproducible files).
    #[arg(long = "no_time", alias = "no-time")]
    pub no_time: bool,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar and no summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// search_threshold | search_qtable | fast_search | mix_search (spec 3.8
    /// to 3.10; see the searches' section below). `False` (TPU-MLIR's
    /// default) is plain calibration.
    #[arg(long)]
    pub search: Option<String>,
    /// Weight equalization (spec 3.11) of Conv -> [Relu|LeakyRelu] -> Conv
    /// pairs before calibrating; the equalized model is written as
    /// `<table>_we.mlir` (see below), the input model is left unchanged.
    #[arg(long)]
    pub(crate) we: bool,
    /// Bias correction (spec 3.12) after calibration: Conv biases absorb
    /// the int8 model's mean per-channel error; the corrected model is
    /// written as `<table>_bc.mlir` (`<table>_we_bc.mlir` with --we) and
    /// calibrated again (see below).
    #[arg(long)]
    pub(crate) bc: bool,
    /// SmoothQuant (spec 3.17) of Gemm/MatMul layers fed by LayerNorms,
    /// before --we and calibration; the model is written as `<table>_sq.mlir`.
    #[arg(long)]
    pub(crate) sq: bool,
    /// SmoothQuant migration strength alpha in [0, 1] (TPU-MLIR searches
    /// it); default 0.5, 0.85 with --sq_scope all.
    #[arg(long = "sq_alpha", alias = "sq-alpha")]
    pub(crate) sq_alpha: Option<f64>,
    /// Which layers --sq smooths: `layernorm` (TPU-MLIR's candidates: the
    /// Gemm/MatMul layers fed by a LayerNorm, the scale folded into it) or
    /// `all` (also every other Gemm/MatMul with a constant weight, through
    /// an inserted per-channel Mul; scales clipped to [10% quantile, 100]
    /// as NNCF does). `all` suits `--processor onnxruntime`, which runs the
    /// Mul in float.
    #[arg(long = "sq_scope", alias = "sq-scope", value_enum, default_value_t = SqScope::Layernorm)]
    pub(crate) sq_scope: SqScope,
    /// Softmax correction: not yet supported by qtune (planned).
    #[arg(long)]
    pub smc: bool,
    /// Samples the searches compare model outputs on (the first of the
    /// shuffled list; default 30).
    #[arg(long = "inference_num", alias = "inference-num")]
    pub(crate) inference_num: Option<usize>,
    /// Samples of bias correction (the first of the shuffled dataset;
    /// default 30).
    #[arg(long = "bc_inference_num", alias = "bc-inference-num")]
    pub(crate) bc_inference_num: Option<usize>,
    /// Target output similarity of the searches, on TPU-MLIR's mapped scale
    /// 0.5 + 0.5*cos (default 0.99).
    #[arg(long = "expected_cos", alias = "expected-cos")]
    pub(crate) expected_cos: Option<f64>,
    /// Methods search_qtable tries per layer: KL, MSE, MAX, Percentile9999
    /// (comma-separated; default MSE).
    #[arg(long = "quantize_method_list", alias = "quantize-method-list")]
    pub(crate) quantize_method_list: Option<String>,
    /// Float layers search_qtable aims at (default 5), and mix_search's cap.
    #[arg(long = "max_float_layers", alias = "max-float-layers")]
    pub(crate) max_float_layers: Option<usize>,
    /// A Python file defining `PostProcess(data)`, applied to the model
    /// outputs before the searches compare them.
    #[arg(long = "post_process", alias = "post-process")]
    pub(crate) post_process: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) search_flags: SearchFlags,
    #[command(flatten)]
    pub report_flags: ReportFlags,
    /// The flags given on the command line (ids), for
    /// [`check_search_flags`].
    #[arg(skip)]
    pub(crate) given: Vec<String>,
}

const AFTER_HELP: &str = "\
Outputs: the calibration table (-o) in TPU-MLIR's layout (rows `name threshold min max` in op
order, 7 decimals, keyed by the op names of the .mlir), written atomically: the untuned table
goes to `<table>.1` first; with tuning the tuned table is written to `<table>` and `<table>.1`
removed, otherwise `<table>.1` is renamed. The shape-ops qtable (`--quantize_table`, default
`shape_pattern_qtable` in the table's folder) lists the shape-computing ops left after constant
folding (usually none) at the processor's float mode. A summary goes to stdout, warnings and
the progress bar to stderr.

Samples: images are preprocessed per the .mlir's top.Input attributes. For an .onnx model the
preprocessing flags of this command are used instead (model_transform's defaults when absent);
running model_transform first and calibrating the .mlir is the TPU-MLIR way. npz samples are
keyed by input name (a single-input model may use any key); npy samples are zipped with the
inputs. Batch > 1 models batch consecutive images and pad the last batch, as TPU-MLIR does.

Tuning (kl, aciq_gauss, aciq_laplace with --tune_num > 0, spec 3.4): each op runs alone on the
float activations of its inputs, the tuned input fake-quantized (int8, half to even) with 22
candidate thresholds between its threshold and its abs-max, the other inputs with their current
thresholds, and its Conv/Gemm/MatMul weight fake-quantized per output channel (symmetric int8;
TPU-MLIR does this inside its interpreter). A threshold is raised when a candidate lowers
mean ||ref - out||_2 / ||ref||_1 over the tuning samples.

Memory: the statistics pass holds the activations of at most 2 x min(threads, 8) samples
(only per-tensor summaries for --cali_method max), whatever the sample count (the
percentile9999 tails grow with it by definition); tuning keeps the float activations of the
tuning samples.

--sq and --we (in this order, then calibration, as TPU-MLIR runs them) transform the float
model without changing its function and write it as a new Top .mlir next to the table:
`<table>_sq.mlir`, `<table>_we.mlir` or `<table>_sq_we.mlir`, weights in
`<same stem>_weight.npz` (TPU-MLIR rewrites the input's weight file instead). BatchNorm is
folded into Conv first. The table is computed on, and keyed by, that model: deploy it with the
table. The logs `SmoothQuant` and `Weight_Equalization` go to the current directory in
TPU-MLIR's format; the summary lists the layers touched with their ranges before and after.
Weight equalization skips pairs behind ReLU6/Clip (the clip bound does not scale, TPU-MLIR
changes the function there); SmoothQuant uses one alpha (--sq_alpha) instead of TPU-MLIR's
search. --sq_scope all also smooths the Gemm/MatMul layers no LayerNorm feeds (BERT's attention
output and FFN down projections) through an inserted per-channel Mul, as NNCF does: made for
--processor onnxruntime, where that Mul runs in float (MiniLM: 0.9981 embedding cosine with
--sq_alpha 0.85, its default there, and --asymmetric).

Searches (--search; need --quantize_table, except search_threshold). Similarities are on
TPU-MLIR's mapped scale cos_sim = 0.5 + 0.5*cos (so --expected_cos 0.99 is a plain cosine of
0.98); a loss is 1 - cos_sim. Every quantized model is qtune's simulation of the chip
(--processor), as model_deploy builds it; a trial recomputes only the tensors its change
affects (activations cached per sample within --memory_mb), samples run on every core, and
results do not depend on the thread count.
  search_threshold: calibrates kl, max, percentile9999 and mse in one statistics pass (each
    tuned), scores each all-int8 model on --inference_num samples (--benchmark_method cos or
    snr), copies the best table to -o (an existing -o is kept as is; with --bc -o is written
    once, by the bias correction). Log: Search_Threshold. --resume continues from <-o>.journal.
  search_qtable: calibrates --quantize_method_list (writes <cali>_<m>[.1|_tune] and -o = the
    mse table; an existing -o is reused with the first method). If all-int8 meets
    --expected_cos it stops. Otherwise every op type is tried in int8 alone on one sample; for
    each layer of the sensitive types, in op order, with every other searched layer in float,
    each method's threshold is tried and the lowest loss kept (new_cali_table.txt in the
    current folder holds the best thresholds); then the fewest most-sensitive layers whose float
    form reaches --expected_cos, up to --max_float_layers, or up to a fifth of the layers when
    that is not enough (TPU-MLIR's expansion; TPU-MLIR writes every searched layer instead).
    Log: Search_Qtable. --resume continues from <quantize_table>.journal.
  fast_search: rounds of one-sample trials against the model at the float type, five layers
    to float per round (spec 3.9.8). Log: Search_Qtable. --resume continues from
    <quantize_table>.journal.
  mix_search: needs an existing -o; walks the ops, puts layers whose own similarity is below
    --min_layer_cos in float while the output improves, until --expected_cos (spec 3.10).
    Outputs the qtable and <quantize_table>_loss.txt. Log: Mix_Search. --resume continues from
    <quantize_table>.journal.
--post_process FILE.py (a PostProcess(data) function, run in one python3 process) transforms
the compared outputs; --global_compare_layers compares named tensors instead (a:0.3,b:0.7).


--bc (after calibration, as TPU-MLIR runs it; spec 3.12): the int8 model as model_deploy
builds it is simulated on the first --bc_inference_num samples (default 30) of the dataset.
Conv by Conv in op order (Convs with a bias), where the int8 output's mean mapped cosine
0.5 + 0.5*cos to the float output is below --min_layer_cos (default 0.99), the per-channel mean
of (float - int8) is added to the bias; the change is kept only if neither that Conv's cosine
nor the model output cosine gets worse, and the walk stops once the output cosine exceeds
--expected_cos (default 0.99; nothing is corrected when the int8 model is already above it).
The corrected model is written as `<table>_bc.mlir` (`<table>_we_bc.mlir`, `<table>_sq_we_bc.mlir`
after the other transforms), weights in `<same stem>_weight.npz`, and calibrated again: the
table (-o) is that model's, and its `# mlir:` line names it. The log `Bias_Correction` goes to the
current directory; the summary gives the Convs corrected and reverted and the output cosine
before and after. TPU-MLIR instead compares a trial's layer cosine with the best of all earlier
Convs (which rejects most later corrections) and rewrites the weight file in place.
--memory_mb bounds the cached activations of the trials. Each visited Conv is recorded in
`<corrected model>.mlir.journal` (removed once the model is written); --resume continues an
interrupted run from it, to the same files.

Interrupted runs: a journal is written beside the output of each search and of --bc, one synced record per finished unit of work, headed by a fingerprint of the model,
tables, samples and settings. --resume reads it back (a journal of other inputs is refused,
exit 2) and gives byte-identical outputs; without --resume an old journal is replaced.

Exit codes: 0 success; 2 bad input or usage (unreadable model or data, unsupported flag such
as --smc).";

/// `run_calibration` under its own name.
#[derive(clap::Parser)]
#[command(
    name = "run_calibration",
    version,
    about = "Computes the calibration table of a float model (exit codes: 0 ok, 2 bad input or usage)"
)]
pub struct ToolArgs {
    #[command(flatten)]
    pub args: Args,
}

/// What `--debug_cmd` asks for.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct DebugCmd {
    pub(crate) method: Option<CalibrationMethod>,
    pub(crate) torch_observer: bool,
    pub(crate) tune_steps: Option<u32>,
    pub(crate) ignored: Vec<String>,
}

impl DebugCmd {
    /// Reports the keys qtune does not honour (they are ignored).
    pub(crate) fn warn_ignored(&self) {
        for key in &self.ignored {
            eprintln!("warning: --debug_cmd key `{key}` is not honoured by qtune; ignored");
        }
    }
}

/// Parses `k1;k2=v;...` (also `,`-separated) as TPU-MLIR's
/// `parse_debug_cmd`: keys are lowercased and `use_<method>` means `<method>`.
pub(crate) fn parse_debug_cmd(s: &str) -> Result<DebugCmd> {
    let mut out = DebugCmd::default();
    for item in s.split([';', ',']) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim().to_lowercase(), Some(v.trim())),
            None => (item.to_lowercase(), None),
        };
        if key == "use_torch_observer_for_cali" {
            out.torch_observer = true;
        } else if key == "tune_steps" {
            let v = value.unwrap_or("");
            let n: u32 = v
                .parse()
                .with_context(|| format!("--debug_cmd tune_steps=`{v}`: not a whole number"))?;
            out.tune_steps = Some(n);
        } else if let Some(m) = CalibrationMethod::parse(&key) {
            out.method = Some(m);
        } else {
            out.ignored.push(item.to_string());
        }
    }
    Ok(out)
}

/// Flags every search honours (run_calibration's search modes,
/// run_qtable, run_sensitive_layer).
#[derive(clap::Args, Debug, Clone)]
pub struct SearchCommonFlags {
    /// Float type of the layers a search keeps in float: auto (the chip's:
    /// F16 on bm1684x/bm1688/cv186x/bm1690, F32 on bm1684, BF16 on cv18xx),
    /// F16, F32 or BF16 (must be one the chip runs).
    #[arg(long = "fp_type", alias = "fp-type", default_value = "auto")]
    pub fp_type: String,
    /// Compare these tensors instead of the model outputs: `a,b` or
    /// `a:0.3,b:0.7` (rates summing to 1).
    #[arg(long = "global_compare_layers", alias = "global-compare-layers")]
    pub global_compare_layers: Option<String>,
    /// True: keep TPU-MLIR's transformer pattern layers in float throughout
    /// the search and in its qtable (spec 3.13: the Adds feeding a
    /// LayerNorm, every GELU / SiLU, the MatMul reading a GELU). The op-type
    /// pre-screen (spec 3.9.3) runs in search_qtable either way.
    #[arg(long, default_value = "False")]
    pub transformer: String,
    /// The memory budget, in MiB, of what the command keeps beside the
    /// model, phase by phase: the calibration tuner's float activations
    /// (past it they go to a scratch file in the temporary directory), then
    /// a search's or --bc's activations: the float model's layer tensors
    /// (up to half; the rest go to a scratch file) and the cached tensors
    /// of the configuration being refined (past it they are recomputed when
    /// needed). Results do not depend on it. `--cache_mb` is its former
    /// name, still accepted.
    #[arg(
        long = "memory_mb",
        visible_alias = "cache_mb",
        aliases = ["memory-mb", "cache-mb"],
        default_value_t = DEFAULT_MEMORY_MB
    )]
    pub memory_mb: usize,
}

/// Flags of run_calibration's search modes (and of --bc) beyond its own;
/// each mode accepts only those it honours (see `check_search_flags`).
#[derive(clap::Args, Debug, Clone)]
pub struct SearchFlags {
    #[command(flatten)]
    pub common: SearchCommonFlags,
    /// Per-layer similarity floor of mix_search and --bc, on the mapped
    /// scale 0.5 + 0.5*cos (default 0.99).
    #[arg(long = "min_layer_cos", alias = "min-layer-cos")]
    pub min_layer_cos: Option<f64>,
    /// How search_threshold scores a table: cos (mean mapped output cosine)
    /// or snr (1 - noise/signal power).
    #[arg(
        long = "benchmark_method",
        alias = "benchmark-method",
        default_value = "cos"
    )]
    pub benchmark_method: String,
    /// Loss table of mix_search (default `<quantize_table>_loss.txt`).
    #[arg(long = "loss_table", alias = "loss-table")]
    pub loss_table: Option<PathBuf>,
    /// Continue an interrupted run from the journal it left, without
    /// redoing finished work: search_qtable from `<quantize_table>.journal`
    /// (one record per layer), mix_search from `<quantize_table>.journal`
    /// (per configuration), search_threshold from `<-o>.journal` (per
    /// method), --bc from `<corrected model>.mlir.journal` (per Conv). A
    /// journal of other inputs is refused; the outputs are those of an
    /// uninterrupted run.
    #[arg(long)]
    pub resume: bool,
}

impl SearchFlags {
    /// `--memory_mb` in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.common.memory_bytes()
    }
}

impl SearchCommonFlags {
    /// `--memory_mb` in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mb.saturating_mul(1 << 20)
    }
}

/// Default of `--memory_mb`: with it, each of the seed's long commands on
/// the workloads stays under 2 GB peak RSS (BENCHMARKS.md, Memory).
pub const DEFAULT_MEMORY_MB: usize = qtune_calibrate::DEFAULT_KEEP_MEMORY_BYTES >> 20;

/// TPU-MLIR's `str2bool` values of a True/False flag.
pub(crate) fn parse_bool_flag(flag: &str, v: &str) -> Result<bool> {
    match v {
        "True" | "true" | "1" | "yes" => Ok(true),
        "False" | "false" | "0" | "no" => Ok(false),
        other => bail!("{flag} {other}: expected True or False"),
    }
}

impl Args {
    /// Whether `--search` names a search mode (not `False`).
    pub fn searching(&self) -> bool {
        self.search.as_deref().is_some_and(|s| s != "False")
    }

    /// The calibration samples: `--data_list` (first) or `--dataset`.
    pub(crate) fn source(&self) -> Result<qtune::CalibrationSource> {
        flag_source(self.data_list.as_ref(), self.dataset.as_ref())
    }

    /// `--bc`'s settings (`None` without --bc).
    pub(crate) fn bias_correction(&self) -> Option<qtune::BiasCorrection> {
        self.bc.then(|| {
            let mut bc = qtune::BiasCorrection::default();
            bc.min_layer_cos = self.search_flags.min_layer_cos.unwrap_or(0.99);
            bc.expected_cos = self.expected_cos.unwrap_or(0.99);
            bc.inference_num = self.bc_inference_num.unwrap_or(30);
            bc.cache_bytes = self.search_flags.memory_bytes();
            bc.fp_type = self.search_flags.common.fp_type.clone();
            bc.resume = self.search_flags.resume;
            bc
        })
    }

    /// The library's settings of plain calibration with `method` (after
    /// `--debug_cmd`) and the debug keys.
    pub(crate) fn settings(
        &self,
        method: CalibrationMethod,
        debug: &DebugCmd,
        source: Option<qtune::CalibrationSource>,
    ) -> Result<qtune::CalibrateSettings> {
        let source = match source {
            Some(s) => s,
            None => self.source()?,
        };
        let mut s = qtune::CalibrateSettings::new(
            self.model.clone(),
            source,
            self.calibration_table.clone(),
        );
        s.input_shapes = self.input_shapes.clone();
        s.preprocess = self.preprocess.settings();
        s.input_num = self.input_num;
        s.tune_list = self.tune_list.clone();
        let mut c = qtune::CalibrationSettings::new(method);
        c.histogram_bin_num = self.histogram_bin_num;
        c.mean_range = self.range == RangeColumns::Mean;
        c.tune_num = self.tune_num;
        c.keep_memory_bytes = self.search_flags.memory_bytes();
        c.torch_observer = debug.torch_observer;
        if let Some(steps) = debug.tune_steps {
            c.tune_steps = steps;
        }
        s.calibration = c;
        s.processor = self.processor.clone();
        s.smooth_quant = self.sq.then(|| self.sq_scope.settings(self.sq_alpha));
        s.weight_equalization = self.we;
        s.bias_correction = self.bias_correction();
        Ok(s)
    }
}

/// The samples `--data_list` (first) or `--dataset` name.
pub(crate) fn flag_source(
    data_list: Option<&PathBuf>,
    dataset: Option<&PathBuf>,
) -> Result<qtune::CalibrationSource> {
    match (data_list, dataset) {
        (Some(list), _) => Ok(qtune::CalibrationSource::DataList(list.clone())),
        (None, Some(dir)) => Ok(qtune::CalibrationSource::Dataset(dir.clone())),
        (None, None) => {
            bail!("give the calibration samples with --dataset <folder> or --data_list <file>")
        }
    }
}

/// Whether run_calibration honours `flag` in `mode` (`None`: plain
/// calibration), with or without `--bc`; `None` for the flags every mode
/// honours (or checks itself, like `--transformer`, `--we`, `--bc`, `--sq`).
fn honoured(flag: &str, mode: Option<&str>, bc: bool) -> Option<bool> {
    let threshold = mode == Some("search_threshold");
    Some(match flag {
        "cali_method" => matches!(mode, None | Some("fast_search")),
        // Calibration: every mode but mix_search calibrates.
        "histogram_bin_num" | "tune_list" | "tune_num" => mode != Some("mix_search"),
        // The searches calibrate with TPU-MLIR's observed ranges.
        "range" => mode.is_none(),
        "sq_alpha" | "sq_scope" => mode.is_none(),
        "bc_inference_num" => bc,
        "inference_num" | "global_compare_layers" | "post_process" => mode.is_some(),
        "fp_type" => mode.is_some() || bc,
        // The budget of the tuner (every mode but mix_search calibrates),
        // of the searches and of --bc: every mode honours it.
        "expected_cos" => {
            matches!(mode, Some("search_qtable" | "fast_search" | "mix_search")) || bc
        }
        "min_layer_cos" => mode == Some("mix_search") || bc,
        "quantize_method_list" => mode == Some("search_qtable"),
        "max_float_layers" => matches!(mode, Some("search_qtable" | "mix_search")),
        "benchmark_method" => threshold,
        "loss_table" => mode == Some("mix_search"),
        // Every search journals its work, and so does --bc.
        "resume" => mode.is_some() || bc,
        // fast_search writes no report; search_threshold with --bc neither.
        "report" | "plot" => match mode {
            Some("fast_search") => false,
            Some("search_threshold") => !bc,
            _ => true,
        },
        _ => return None,
    })
}

/// Refuses the flags given to run_calibration that its `--search` mode
/// (or plain calibration) does not honour, naming the flag and the mode.
pub(crate) fn check_search_flags(args: &Args) -> Result<()> {
    let mode = args.search.as_deref().filter(|m| *m != "False");
    for flag in &args.given {
        if honoured(flag, mode, args.bc) != Some(false) {
            continue;
        }
        let what = match mode {
            Some(m) => format!("--search {m}"),
            None => "plain calibration (no --search)".to_string(),
        };
        // A flag that --bc would honour says so.
        let hint = if !args.bc && honoured(flag, mode, true) == Some(true) {
            " without --bc"
        } else {
            ""
        };
        bail!("--{flag} is not honoured by run_calibration {what}{hint}; run without it");
    }
    if !args.sq
        && let Some(flag) = args
            .given
            .iter()
            .find(|f| matches!(f.as_str(), "sq_alpha" | "sq_scope"))
    {
        bail!("--{flag} sets up SmoothQuant, which runs only with --sq");
    }
    Ok(())
}

/// `--range`: what the table's min/max columns hold.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeColumns {
    /// The observed min and max over every sample (TPU-MLIR's).
    Minmax,
    /// The mean over samples of each sample's min and max.
    Mean,
}

/// `--sq_scope`: which layers SmoothQuant smooths.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SqScope {
    /// TPU-MLIR's: the Gemm/MatMul layers a LayerNorm feeds.
    Layernorm,
    /// Every Gemm/MatMul with a constant weight (inserted Muls where no
    /// LayerNorm can take the scale), scales clipped as NNCF does.
    All,
}

impl SqScope {
    /// The library's settings for this scope and `--sq_alpha` (its default
    /// when absent: 0.5, TPU-MLIR's, or 0.85 with `all`, the best of 0.5,
    /// 0.65, 0.75, 0.85 and 0.95 on MiniLM for `--processor onnxruntime`).
    pub(crate) fn settings(self, alpha: Option<f64>) -> qtune::SmoothQuantSettings {
        let mut sq = qtune::SmoothQuantSettings::default();
        match self {
            SqScope::Layernorm => sq.alpha = alpha.unwrap_or(0.5),
            SqScope::All => {
                sq.alpha = alpha.unwrap_or(0.85);
                sq.scope = qtune::SmoothQuantScope::AllLinear;
                sq.min_scale_quantile = Some(0.1);
                sq.max_scale = Some(100.0);
            }
        }
        sq
    }
}

#[cfg(test)]
mod tests {
    use super::honoured;

    /// Each mode-specific flag against the code paths that read it.
    #[test]
    fn modes_honour_their_flags_only() {
        let modes = [
            None,
            Some("search_threshold"),
            Some("search_qtable"),
            Some("fast_search"),
            Some("mix_search"),
        ];
        // (flag, honoured per mode without --bc, in the order above)
        let cases: [(&str, [bool; 5]); 8] = [
            ("cali_method", [true, false, false, true, false]),
            ("tune_num", [true, true, true, true, false]),
            ("resume", [false, true, true, true, true]),
            ("benchmark_method", [false, true, false, false, false]),
            ("min_layer_cos", [false, false, false, false, true]),
            ("loss_table", [false, false, false, false, true]),
            ("inference_num", [false, true, true, true, true]),
            ("report", [true, true, true, false, true]),
        ];
        for (flag, want) in cases {
            for (mode, w) in modes.iter().zip(want) {
                assert_eq!(honoured(flag, *mode, false), Some(w), "{flag} {mode:?}");
            }
        }
        // --bc brings its own flags to plain calibration and search_threshold.
        assert_eq!(honoured("expected_cos", None, true), Some(true));
        assert_eq!(honoured("resume", None, true), Some(true));
        assert_eq!(
            honoured("min_layer_cos", Some("search_threshold"), true),
            Some(true)
        );
        assert_eq!(
            honoured("report", Some("search_threshold"), true),
            Some(false)
        );
        assert_eq!(honoured("model", Some("mix_search"), false), None);
    }
}

/// The report flags every quantization command takes.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ReportFlags {
    /// Write a self-contained HTML report of the run (per-layer similarity
    /// to the float model, tensor histograms with each method's threshold,
    /// weight ranges, the search, a sortable layer table). Without it, the
    /// per-layer similarity is printed as a text table (not with --quiet).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the per-layer similarity chart alone, as FILE.svg or FILE.png.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

impl ReportFlags {
    /// Whether the run measures anything for a report, chart or table.
    pub fn wanted(&self, quiet: bool) -> bool {
        self.report.is_some() || self.plot.is_some() || !quiet
    }

    /// Checks the output paths before any work.
    pub fn check(&self) -> Result<()> {
        Ok(self.outputs(true).check()?)
    }

    /// The library's report outputs: the report and chart asked for, and
    /// the text table unless `quiet`.
    pub fn outputs(&self, quiet: bool) -> ReportOutputs {
        ReportOutputs {
            html: self.report.clone(),
            plot: self.plot.clone(),
            text_table: !quiet,
            command_line: command_line(),
        }
    }
}

/// The command line as typed, for the report header.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "\"'$;&|<>()".contains(c))
            {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
