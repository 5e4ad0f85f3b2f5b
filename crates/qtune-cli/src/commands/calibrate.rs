//! `run_calibration` / `qtune calibrate`: the calibration table of a model
//! (TPU-MLIR `python/tools/run_calibration.py`, plain calibration path).
//! The work is in `qtune-search`; this is flag handling and output.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use qtune_data::{Selection, select_data_list, select_dataset};
use qtune_exec::PrepareOptions;
use qtune_search::{BiasCorrectionSettings, CalibrationMethod, QuantMode, QuantizeTable, TimeLine};
use qtune_search::{CalibrationSettings, Progress, SampleLoader, TableHeader, calibrate};

use super::bias_correction::{self, BcRequest};
use super::preprocess_args::PreprocessArgs;
use super::weight_transforms::{self, TransformRequest};
use crate::model::{self, Naming};

/// Processors TPU-MLIR accepts for `--processor` / `--chip`, plus qtune's
/// QDQ-runtime profile (`onnxruntime`, alias `qdq`), whose searches simulate
/// that profile's plan.
const PROCESSORS: &[&str] = &[
    "bm1684x",
    "bm1684",
    "cv183x",
    "cv182x",
    "cv181x",
    "cv180x",
    "cv186x",
    "bm1688",
    "bm1690",
    "cv184x",
    "sgtpuv8",
    "sg2262",
    "onnxruntime",
    "qdq",
];

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
    pub(crate) quantize_table: Option<PathBuf>,
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
    pub(crate) fixed_time: Option<String>,
    /// Leave the `# genetated time:` line out (reproducible files).
    #[arg(long = "no_time", alias = "no-time")]
    pub(crate) no_time: bool,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// No progress bar and no summary.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// search_threshold | search_qtable | fast_search | mix_search (spec 3.8
    /// to 3.10; see the searches' section below). `False` (TPU-MLIR's
    /// default) is plain calibration.
    #[arg(long)]
    pub(crate) search: Option<String>,
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
    /// SmoothQuant migration strength alpha in [0, 1] (TPU-MLIR searches it).
    #[arg(long = "sq_alpha", alias = "sq-alpha", default_value_t = 0.5)]
    pub(crate) sq_alpha: f64,
    /// Softmax correction: not yet supported by qtune (planned).
    #[arg(long)]
    pub(crate) smc: bool,
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
    pub(crate) search_flags: super::search::SearchFlags,
    #[command(flatten)]
    pub(crate) report_flags: super::report::ReportFlags,
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
search.

Searches (--search; need --quantize_table, except search_threshold). Similarities are on
TPU-MLIR's mapped scale cos_sim = 0.5 + 0.5*cos (so --expected_cos 0.99 is a plain cosine of
0.98); a loss is 1 - cos_sim. Every quantized model is qtune's simulation of the chip
(--processor), as model_deploy builds it; a trial recomputes only the tensors its change
affects (activations cached per sample up to --cache_mb), samples run on every core, and
results do not depend on the thread count.
  search_threshold: calibrates kl, max, percentile9999 and mse in one statistics pass (each
    tuned), scores each all-int8 model on --inference_num samples (--benchmark_method cos or
    snr), copies the best table to -o (an existing -o is kept as is). Log: Search_Threshold.
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
    to float per round (spec 3.9.8). Log: Search_Qtable.
  mix_search: needs an existing -o; walks the ops, puts layers whose own similarity is below
    --min_layer_cos in float while the output improves, until --expected_cos (spec 3.10).
    Outputs the qtable and <quantize_table>_loss.txt. Log: Mix_Search.
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
--cache_mb bounds the cached activations of the trials.

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

/// TPU-MLIR's `FLOAT_MAP` (spec 4.4): the float mode of the qtable.
pub(crate) fn float_mode(processor: &str) -> QuantMode {
    match processor {
        "bm1684" => QuantMode::F32,
        p if p.starts_with("cv18") && p != "cv186x" => QuantMode::BF16,
        // sgtpuv8 is missing from TPU-MLIR's map (a KeyError there); F16 here.
        _ => QuantMode::F16,
    }
}

/// `str(datetime.now())` in UTC: `YYYY-MM-DD HH:MM:SS.ffffff`.
pub(crate) fn python_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// A progress bar on stderr, one per stage; hidden when stderr is not a
/// terminal or with --quiet.
pub(crate) struct Bar {
    pub(crate) visible: bool,
    pub(crate) bar: Mutex<Option<ProgressBar>>,
}

impl Progress for Bar {
    fn start(&self, stage: &str, total: usize) {
        let target = if self.visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(u64::try_from(total).unwrap_or(0)), target);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed} (ETA {eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(stage.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }
    fn advance(&self, n: usize) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.inc(u64::try_from(n).unwrap_or(0));
        }
    }
    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
    }
}

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
    if searching {
        return super::with_threads(args.threads, || {
            super::search::run_calibration_search(&args)
        });
    }
    super::with_threads(args.threads, || run_inner(args))
}

fn run_inner(args: Args) -> Result<()> {
    let start = Instant::now();
    let model_path = &args.model;
    if !PROCESSORS.contains(&args.processor.as_str()) {
        bail!(
            "--processor `{}`: expected one of {}",
            args.processor,
            PROCESSORS.join(", ")
        );
    }
    let mut method = CalibrationMethod::parse(&args.cali_method).with_context(|| {
        format!(
            "--cali_method `{}`: expected kl, mse, max, percentile9999, aciq_gauss or aciq_laplace (or use_<method>)",
            args.cali_method
        )
    })?;
    let debug = parse_debug_cmd(&args.debug_cmd)?;
    debug.warn_ignored();
    // Plain calibration has no float layers to add the pattern to.
    if super::search::parse_bool_flag("--transformer", &args.search_flags.transformer)? {
        bail!(
            "--transformer True keeps the transformer pattern layers in float during a mixed-precision search: use it with --search (search_qtable, mix_search, fast_search, search_threshold), run_qtable or run_sensitive_layer"
        );
    }
    for (given, flag) in [
        (args.inference_num.is_some(), "--inference_num"),
        (
            args.bc_inference_num.is_some() && !args.bc,
            "--bc_inference_num",
        ),
        (args.expected_cos.is_some() && !args.bc, "--expected_cos"),
        (
            args.quantize_method_list.is_some(),
            "--quantize_method_list",
        ),
        (args.max_float_layers.is_some(), "--max_float_layers"),
        (args.post_process.is_some(), "--post_process"),
    ] {
        if given {
            eprintln!("warning: {flag} is only used by --search or --bc; ignored");
        }
    }
    if let Some(m) = debug.method {
        method = m;
    }
    if debug.torch_observer && method != CalibrationMethod::Kl {
        eprintln!(
            "warning: --debug_cmd use_torch_observer_for_cali replaces the kl threshold only; it has no effect with {method}"
        );
    }

    let ext = model_path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_mlir = ext == "mlir";
    let preprocess_given =
        format!("{:?}", args.preprocess) != format!("{:?}", PreprocessArgs::default());
    if is_mlir && preprocess_given {
        bail!(
            "preprocessing flags apply to .onnx models only; `{}` carries its own (top.Input attributes)",
            model_path.display()
        );
    }
    if args.dataset.is_none() && args.data_list.is_none() {
        bail!("give the calibration samples with --dataset <folder> or --data_list <file>");
    }

    // --sq, --we and --bc work on the model TPU-MLIR deploys: BatchNorm folded.
    let CalibrationInput {
        loaded,
        loader,
        tune_loader,
        tune_num,
        selection,
        configs,
    } = calibration_input(
        model_path,
        args.input_shapes.as_deref(),
        &args.preprocess,
        &SampleArgs {
            dataset: args.dataset.as_deref(),
            data_list: args.data_list.as_deref(),
            input_num: args.input_num,
            tune_list: args.tune_list.as_deref(),
            tune_num: args.tune_num,
        },
        args.we || args.sq || args.bc,
    )?;
    let exec = loaded.exec;
    // --bc reloads the corrected model on the same samples.
    let bc_inputs = args.bc.then(|| (selection.clone(), configs.clone()));

    let mut settings = CalibrationSettings::new(method);
    settings.histogram_bin_num = args.histogram_bin_num;
    settings.tune_num = tune_num;
    settings.keep_memory_bytes = args.search_flags.memory_bytes();
    settings.torch_observer = debug.torch_observer;
    if let Some(steps) = debug.tune_steps {
        settings.tune_steps = steps;
    }
    let bar = Bar {
        visible: !args.quiet && std::io::stderr().is_terminal(),
        bar: Mutex::new(None),
    };
    let request = TransformRequest {
        we: args.we,
        sq: args.sq,
        sq_alpha: args.sq_alpha,
        model: model_path,
        calibration_table: &args.calibration_table,
        tune_list: args.tune_list.as_deref(),
        input_attrs: &loaded.input_attrs,
        quiet: args.quiet,
    };
    let transformed = weight_transforms::apply(&request, &exec, &loader, selection, configs, &bar)?;
    let mut transforms = Vec::new();
    // With --sq/--we, calibration runs on the transformed model.
    let (exec, loader, tune_loader, model_path) = match transformed {
        Some(t) => {
            transforms.extend(t.transforms);
            (t.exec, t.loader, t.tune_loader, t.model)
        }
        None => (exec, loader, tune_loader, model_path.clone()),
    };
    let outcome = calibrate(&exec, &loader, tune_loader.as_ref(), &settings, &bar)
        .with_context(|| format!("calibrating `{}`", model_path.display()))?;
    // --bc: correct the biases with this table, then calibrate the
    // corrected model (TPU-MLIR's order); that table is the result.
    let (exec, loader, model_path, outcome) = match bc_inputs {
        Some((selection, configs)) => {
            let bc = bias_correction_request(&args, &loaded.input_attrs);
            // Only the rows matter to the int8 model; the header is not written.
            let table = outcome.final_table(&TableHeader {
                version: String::new(),
                mlir_file: model_path.display().to_string(),
                time: TimeLine::Omit,
                tune_number: 0,
            });
            let mut c = bias_correction::apply(&bc, &exec, &table, selection, configs, &bar)?;
            transforms.append(&mut c.transforms);
            let outcome = calibrate(&c.exec, &c.loader, c.tune_loader.as_ref(), &settings, &bar)
                .with_context(|| format!("calibrating `{}`", c.model.display()))?;
            (c.exec, c.loader, c.model, outcome)
        }
        None => (exec, loader, model_path, outcome),
    };
    let model_path = &model_path;
    let graph = exec.graph();
    let mut warnings = outcome.warnings.clone();
    warnings.dedup();
    for w in &warnings {
        eprintln!("{w}");
    }

    let time_text = match (&args.fixed_time, args.no_time) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => None,
        (None, false) => Some(python_now()),
    };
    let header = TableHeader {
        version: format!("qtune-{}", env!("CARGO_PKG_VERSION")),
        mlir_file: model_path.display().to_string(),
        time: time_text.clone().map_or(TimeLine::Omit, TimeLine::Text),
        tune_number: i64::try_from(tune_num).unwrap_or(i64::MAX),
    };

    // The shape-ops qtable (TPU-MLIR always writes it).
    let qtable_path = match &args.quantize_table {
        Some(p) => p.clone(),
        None => qtable_default_path(&args.calibration_table),
    };
    let qtable = QuantizeTable {
        time: time_text,
        sample_number: outcome.batches,
        chip: args.processor.clone(),
        shape_layers: qtune_search::shape_layers(graph),
        shape_mode: float_mode(&args.processor),
        pattern_mode: float_mode(&args.processor),
        ..QuantizeTable::default()
    };
    qtable.write(&qtable_path)?;
    outcome.write_tables(&header, &args.calibration_table)?;

    if !args.quiet {
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
        println!(
            "calibrated {} tensors of `{}` with {} on {} sample(s) ({} batch(es)) in {:.2} s (statistics {:.2} s{tuning})",
            outcome.rows().len(),
            model_path.display(),
            method,
            loader.sample_count(),
            outcome.batches,
            start.elapsed().as_secs_f64(),
            outcome.statistics_time.as_secs_f64(),
        );
        println!(
            "wrote {} and {} ({} shape layer(s))",
            args.calibration_table.display(),
            qtable_path.display(),
            qtable.shape_layers.len()
        );
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
        let float = float_mode(&args.processor);
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
                    &loader,
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
                transforms,
                notes: Vec::new(),
                prebuilt: None,
            },
        )?;
    }
    Ok(())
}

pub(crate) fn bias_correction_request<'a>(
    args: &'a Args,
    input_attrs: &'a [qtune_ir::mlir::InputAttrs],
) -> BcRequest<'a> {
    let mut settings = BiasCorrectionSettings::default();
    settings.min_layer_cos = args.search_flags.min_layer_cos.unwrap_or(0.99);
    settings.expected_cos = args.expected_cos.unwrap_or(0.99);
    settings.cache_budget = args.search_flags.cache_mb.saturating_mul(1 << 20);
    BcRequest {
        input_model: &args.model,
        calibration_table: &args.calibration_table,
        sq: args.sq,
        we: args.we,
        processor: &args.processor,
        fp_type: &args.search_flags.fp_type,
        bc_inference_num: args.bc_inference_num.unwrap_or(30),
        settings,
        dataset: args.dataset.as_deref(),
        data_list: args.data_list.as_deref(),
        tune_list: args.tune_list.as_deref(),
        input_attrs,
        quiet: args.quiet,
    }
}

/// Where the calibration samples come from.
pub(crate) struct SampleArgs<'a> {
    pub dataset: Option<&'a Path>,
    pub data_list: Option<&'a Path>,
    pub input_num: usize,
    pub tune_list: Option<&'a Path>,
    pub tune_num: usize,
}

/// The model (TPU-MLIR op names, BatchNorm not folded: the statistics see
/// every Top op's output) and its sample loaders.
pub(crate) struct CalibrationInput {
    pub loaded: model::LoadedModel,
    pub loader: SampleLoader,
    pub tune_loader: Option<SampleLoader>,
    /// `--tune_num`, or the length of `--tune_list`.
    pub tune_num: usize,
    pub selection: Selection,
    /// Per graph input, its image preprocessing (image samples only).
    pub configs: Vec<Option<qtune_data::PreprocessConfig>>,
}

/// Loads the model and selects its calibration (and tuning) samples.
pub(crate) fn calibration_input(
    model_path: &Path,
    input_shapes: Option<&str>,
    preprocess: &PreprocessArgs,
    samples: &SampleArgs,
    fold_batchnorm: bool,
) -> Result<CalibrationInput> {
    let ext = model_path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_mlir = ext == "mlir";
    let preprocess_given =
        format!("{:?}", preprocess) != format!("{:?}", PreprocessArgs::default());
    if is_mlir && preprocess_given {
        bail!(
            "preprocessing flags apply to .onnx models only; `{}` carries its own (top.Input attributes)",
            model_path.display()
        );
    }
    if samples.dataset.is_none() && samples.data_list.is_none() {
        bail!("give the calibration samples with --dataset <folder> or --data_list <file>");
    }
    let mut prepare = PrepareOptions::default();
    prepare.fold_batchnorm = fold_batchnorm;
    let loaded = model::load_model(model_path, input_shapes, &prepare, Naming::TopOps)?;
    let graph = loaded.exec.graph();
    let inputs = graph.inputs.len();
    let selection: Selection = match (samples.data_list, samples.dataset) {
        (Some(list), _) => select_data_list(list, samples.input_num, inputs)?,
        (None, Some(dir)) => select_dataset(dir, samples.input_num)?,
        (None, None) => unreachable!("checked above"),
    };
    let mut configs = Vec::with_capacity(inputs);
    let image_samples = selection.kind == qtune_data::SampleKind::Image;
    for &id in &graph.inputs {
        let name = &graph.value(id).name;
        let shape = graph.shape_of(id)?.dims().to_vec();
        let pre = if is_mlir {
            loaded
                .input_attrs
                .iter()
                .find(|a| &a.name == name)
                .and_then(|a| PreprocessArgs::from_input_attrs(&a.attrs))
        } else {
            Some(preprocess.clone())
        };
        let cfg = match pre {
            Some(p) if image_samples => Some(p.config(&shape).with_context(|| {
                format!(
                    "model `{}`, input `{name}`: cannot preprocess images for it",
                    model_path.display()
                )
            })?),
            _ => None,
        };
        configs.push(cfg);
    }
    let loader = SampleLoader::new(graph, selection.clone(), configs.clone())
        .with_context(|| format!("model `{}`", model_path.display()))?;
    let mut tune_num = samples.tune_num;
    let tune_loader = match samples.tune_list {
        Some(list) => {
            let sel = select_data_list(list, 0, inputs)?;
            tune_num = sel.samples.len();
            Some(SampleLoader::new(graph, sel, configs.clone())?)
        }
        None => None,
    };
    Ok(CalibrationInput {
        loaded,
        loader,
        tune_loader,
        tune_num,
        selection,
        configs,
    })
}

/// `shape_pattern_qtable`, in the calibration table's folder when its path
/// has one (TPU-MLIR: when `-o` contains `/`).
pub(crate) fn qtable_default_path(cali: &Path) -> PathBuf {
    match cali.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("shape_pattern_qtable"),
        _ => PathBuf::from("shape_pattern_qtable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn time_line_looks_like_python() {
        let t = python_now();
        assert_eq!(t.len(), "2026-01-01 00:00:00.000000".len(), "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], " ");
    }

    #[test]
    fn float_modes() {
        assert_eq!(float_mode("bm1684"), QuantMode::F32);
        assert_eq!(float_mode("cv183x"), QuantMode::BF16);
        assert_eq!(float_mode("cv186x"), QuantMode::F16);
        assert_eq!(float_mode("bm1684x"), QuantMode::F16);
    }
}
