//! `model_deploy` / `qtune deploy`: quantizes a model per processor profile,
//! calibration table and qtable, simulates it (fake quantization on the
//! executor), checks it against a reference, and writes it as a QDQ ONNX model.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use qtune_exec::{Keep, NoHook};
use qtune_quant::QuantMode;
use qtune_tensor::compare::Tolerance;
use qtune_tensor::{Tensor, read_npz, write_npz};

use crate::model::{self, QuantArgs};

/// Quantizes a model and writes it as a QDQ ONNX model (TPU-MLIR's
/// `model_deploy`; a `.bmodel` needs TPU-MLIR's backend).
#[derive(clap::Args)]
pub struct Args {
    /// The model: Top-dialect .mlir (model_transform's output) or .onnx.
    #[arg(long)]
    pub mlir: PathBuf,
    #[command(flatten)]
    pub quant: QuantArgs,
    /// Output model: `.onnx` (QDQ ONNX for ONNX Runtime, TensorRT, OpenVINO),
    /// with the source ONNX model's input and output names.
    #[arg(long)]
    pub model: PathBuf,
    /// Input arrays (npz keyed by input name, e.g. model_transform's
    /// `<name>_in_f32.npz`) to run the quantized model on. Several samples
    /// stacked on axis 0 run one by one and their outputs are written
    /// stacked (a comparison with --test_reference takes one sample).
    #[arg(long = "test_input", alias = "test-input")]
    pub test_input: Option<PathBuf>,
    /// Reference arrays (npz keyed by op name, e.g. model_transform's
    /// `--test_result`) to compare the quantized outputs with.
    #[arg(long = "test_reference", alias = "test-reference")]
    pub test_reference: Option<PathBuf>,
    /// Minimum similarity `cos,euclid` (default by --quantize: INT8
    /// 0.90,0.80; F16/BF16 0.99,0.90; F32 0.99,0.99).
    #[arg(long)]
    pub tolerance: Option<String>,
    /// Compare every tensor both files hold, not only the model outputs.
    #[arg(long = "compare_all", alias = "compare-all")]
    pub compare_all: bool,
    /// Comma-separated tensor names not to compare.
    #[arg(long)]
    pub excepts: Option<String>,
    #[command(flatten)]
    pub weights: WeightMethodArgs,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No summary on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub report: super::report::ReportFlags,
}

/// How the weight-only layers' codes are chosen (qtune's addition: the
/// codes, scales and zero points keep TPU-MLIR's layout, which the chip's
/// A16MatMul and ONNX Runtime run unchanged).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WeightMethodArgs {
    /// Weight-only codes: `rtn` (TPU-MLIR's rule: each group's min / max,
    /// round to nearest), `clip` (per group, the shrink of the range, 1.00
    /// to 0.50, that reconstructs the group's weights best; no data),
    /// `gptq` (GPTQ, Frantar et al. 2022: column-by-column rounding with
    /// error compensation from the layer inputs' Hessian over
    /// --calibration_data, min / max grids), `gptq_clip` (GPTQ on the clip
    /// search's grids). Needs weight-only layers (--quantize W8F16, W8BF16,
    /// W4F16, W4BF16 or qtable rows).
    #[arg(long = "q_method", alias = "q-method", default_value = "rtn")]
    pub q_method: String,
    /// GPTQ: quantize the columns in order of decreasing Hessian diagonal
    /// (act-order; the group grids are then fixed from the original weights,
    /// as the export's groups are consecutive columns).
    #[arg(long = "q_act_order", alias = "q-act-order")]
    pub q_act_order: bool,
    /// GPTQ: folder of calibration samples (npz keyed by input name, npy, or
    /// images with the .mlir's preprocessing), as run_calibration's
    /// --dataset.
    #[arg(long = "calibration_data", alias = "calibration-data")]
    pub calibration_data: Option<PathBuf>,
    /// GPTQ: number of calibration samples (default: all).
    #[arg(long = "calibration_num", alias = "calibration-num")]
    pub calibration_num: Option<usize>,
    /// GPTQ: a graph input whose zeros mark padding rows of the layer inputs
    /// (e.g. `attention_mask` of a [batch, sequence] tokenizer input), left
    /// out of the Hessians.
    #[arg(long = "calibration_mask_input", alias = "calibration-mask-input")]
    pub calibration_mask_input: Option<String>,
    /// GPTQ: sequential form (Frantar et al.): each layer's Hessian comes
    /// from the model whose earlier weight-only layers are already
    /// quantized (one pass over the samples per distinct layer input)
    /// instead of from the float model.
    #[arg(long = "q_sequential", alias = "q-sequential")]
    pub q_sequential: bool,
    /// GPTQ: dampening added to the Hessian's diagonal, as a fraction of its
    /// mean (default 0.01, as in the paper); larger values trust the
    /// calibration inputs' correlations less.
    #[arg(long = "q_damp", alias = "q-damp")]
    pub q_damp: Option<f64>,
    /// GPTQ with --q_sequential: after each layer is quantized its bias
    /// absorbs the mean output error over the calibration rows (the biases
    /// stay in the float type; the following layers see the corrected
    /// outputs).
    #[arg(long = "q_bias_correction", alias = "q-bias-correction")]
    pub q_bias_correction: bool,
    /// AWQ (Lin et al. 2023) before --q_method: per input channel of each
    /// weight-only layer a scale `mean|x|^alpha` (alpha searched per layer
    /// input on 0, 0.05, ..., 1 for the least output error over
    /// --calibration_data), folded exactly into what produces the input (a
    /// LayerNorm's gamma / beta, the output channels of a projection
    /// reached through Reshape / Transpose / attention's P V); layers
    /// without such a fold stay unscaled. The graph keeps its ops.
    #[arg(long = "q_awq", alias = "q-awq")]
    pub q_awq: bool,
    /// AWQ's clip search for --q_method clip / gptq_clip: each group's
    /// shrink of the range (1.00 to 0.50 by 0.025) minimises its output
    /// error over --calibration_data (`d^T H d` on the group's block of the
    /// input Hessian) instead of its weight error.
    #[arg(long = "q_awq_clip", alias = "q-awq-clip")]
    pub q_awq_clip: bool,
}

impl WeightMethodArgs {
    /// `--q_damp` in millionths (0: the default).
    fn damp_ppm(&self) -> u32 {
        // In (0, 10] by `method`'s check: at most 1e7.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        self.q_damp.map_or(0, |d| ((d * 1e6).round() as u32).max(1))
    }

    /// The method, with every flag combination that does not apply
    /// refused.
    fn method(&self, mode: QuantMode, has_qtable: bool) -> Result<qtune_deploy::WeightMethod> {
        use qtune_deploy::WeightMethod;
        let Some(method) = WeightMethod::parse(&self.q_method) else {
            let all: Vec<&str> = WeightMethod::ALL.iter().map(|m| m.name()).collect();
            bail!(
                "--q_method {}: expected one of {}",
                self.q_method,
                all.join(", ")
            );
        };
        if method != WeightMethod::Rtn && !mode.is_weight_only() && !has_qtable {
            bail!(
                "--q_method {}: applies to weight-only layers (--quantize W8F16, W8BF16, W4F16, \
                 W4BF16, or qtable rows with those modes); --quantize {mode} has none",
                method.name()
            );
        }
        if self.q_awq && !mode.is_weight_only() && !has_qtable {
            bail!(
                "--q_awq: applies to weight-only layers (--quantize W8F16, W8BF16, W4F16, \
                 W4BF16, or qtable rows with those modes); --quantize {mode} has none"
            );
        }
        if self.q_awq && self.calibration_data.is_none() {
            bail!(
                "--q_awq: needs --calibration_data DIR (the samples whose layer inputs give the \
                 activation scales and the errors alpha is searched on)"
            );
        }
        if self.q_awq && self.q_sequential {
            bail!(
                "--q_awq: not with --q_sequential (the scales are searched on the float model's \
                 layer inputs)"
            );
        }
        if self.q_awq_clip {
            if !matches!(method, WeightMethod::Clip | WeightMethod::GptqClip) {
                bail!(
                    "--q_awq_clip: applies to --q_method clip / gptq_clip only (--q_method is {})",
                    method.name()
                );
            }
            if self.calibration_data.is_none() {
                bail!(
                    "--q_awq_clip: needs --calibration_data DIR (the samples whose layer inputs \
                     weigh each group's output error)"
                );
            }
            if self.q_sequential {
                bail!("--q_awq_clip: not with --q_sequential");
            }
        }
        let gptq = method.needs_calibration();
        if gptq && self.calibration_data.is_none() {
            bail!(
                "--q_method {}: needs --calibration_data DIR (the samples whose layer inputs \
                 give the Hessians)",
                method.name()
            );
        }
        let data = !(self.q_awq || self.q_awq_clip);
        let only_gptq = [
            (
                data && self.calibration_data.is_some(),
                "--calibration_data",
            ),
            (data && self.calibration_num.is_some(), "--calibration_num"),
            (
                data && self.calibration_mask_input.is_some(),
                "--calibration_mask_input",
            ),
            (self.q_act_order, "--q_act_order"),
            (self.q_sequential, "--q_sequential"),
            (self.q_damp.is_some(), "--q_damp"),
            (self.q_bias_correction, "--q_bias_correction"),
        ];
        if !gptq && let Some((_, flag)) = only_gptq.iter().find(|(given, _)| *given) {
            bail!(
                "{flag}: applies to --q_method gptq / gptq_clip{} only (--q_method is {})",
                if flag.starts_with("--calibration") {
                    " or --q_awq / --q_awq_clip"
                } else {
                    ""
                },
                method.name()
            );
        }
        if let Some(d) = self.q_damp
            && !(d > 0.0 && d <= 10.0)
        {
            bail!("--q_damp {d}: expected a fraction of the mean Hessian diagonal in (0, 10]");
        }
        if self.q_bias_correction && !self.q_sequential {
            bail!(
                "--q_bias_correction: needs --q_sequential (the correction of each layer is \
                 measured on the model with the layers before it quantized)"
            );
        }
        if self.calibration_num == Some(0) {
            bail!("--calibration_num 0: expected a positive count; omit it for all samples");
        }
        Ok(method)
    }
}

/// The input Hessians of the weight-only layers over `--calibration_data`:
/// from the float model, or (`--q_sequential`) stage by stage from the
/// model with the earlier layers quantized, planned as `quant` plans them
/// (with `--q_bias_correction`, also the corrected biases).
fn hessians(
    w: &WeightMethodArgs,
    loaded: &model::LoadedModel,
    quant: &QuantArgs,
    method: qtune_deploy::WeightMethod,
    quiet: bool,
) -> Result<Option<(qtune_search::Sequential, Option<qtune_ir::Graph>)>> {
    let Some(dir) = &w.calibration_data else {
        return Ok(None);
    };
    let start = std::time::Instant::now();
    let graph = loaded.exec.graph();
    let selection = qtune_data::select_dataset(dir, w.calibration_num.unwrap_or(0))
        .with_context(|| format!("--calibration_data {}", dir.display()))?;
    let image_samples = selection.kind == qtune_data::SampleKind::Image;
    let mut configs = Vec::with_capacity(graph.inputs.len());
    for &id in &graph.inputs {
        let name = &graph.value(id).name;
        let shape = graph.shape_of(id)?.dims().to_vec();
        let pre = loaded
            .input_attrs
            .iter()
            .find(|a| &a.name == name)
            .and_then(|a| super::preprocess_args::PreprocessArgs::from_input_attrs(&a.attrs));
        configs.push(match pre {
            Some(p) if image_samples => Some(p.config(&shape).with_context(|| {
                format!("input `{name}`: cannot preprocess the --calibration_data images for it")
            })?),
            _ => None,
        });
    }
    let loader = qtune_search::SampleLoader::new(graph, selection, configs)
        .with_context(|| format!("--calibration_data {}", dir.display()))?;
    let settings = qtune_search::HessianSettings::default()
        .with_mask_input(w.calibration_mask_input.clone())
        .with_bias_correction(w.q_bias_correction);
    let h = if w.q_sequential {
        // The plan of the deploy (which layers are weight-only, their
        // groups), with the method that quantizes each stage.
        // Planning needs no Hessian: plan through TPU-MLIR's rule (the same
        // layers and groups), then quantize each stage by the method.
        let plan = quant.quantize_with(graph, qtune_deploy::WeightOnly::default(), None);
        let mut plan = plan?.plan;
        plan.weight_only.method = method;
        plan.weight_only.act_order = w.q_act_order;
        plan.weight_only.damp_ppm = w.damp_ppm();
        qtune_search::sequential_hessians(graph, &plan, &loader, &settings, &|_, _| {})
    } else {
        qtune_search::collect_hessians(&loaded.exec, &loader, &settings, &|_| {}).map(|h| {
            qtune_search::Sequential {
                hessians: h,
                biases: Vec::new(),
            }
        })
    }
    .with_context(|| format!("--calibration_data {}", dir.display()))?;
    let mut h = h;
    let scaled = if w.q_awq {
        Some(awq(
            w,
            graph,
            quant,
            method,
            &loader,
            &mut h.hessians,
            quiet,
        )?)
    } else {
        None
    };
    if !quiet {
        let distinct: std::collections::BTreeSet<*const qtune_deploy::gptq::Hessian> =
            h.hessians.values().map(std::sync::Arc::as_ptr).collect();
        eprintln!(
            "GPTQ: {} layer Hessians ({} distinct inputs{}{}) from {} samples of {} in {:.2} s",
            h.hessians.len(),
            distinct.len(),
            if w.q_sequential { ", sequential" } else { "" },
            match h.biases.len() {
                0 => String::new(),
                n => format!(", {n} biases corrected"),
            },
            loader.sample_count(),
            dir.display(),
            start.elapsed().as_secs_f64()
        );
    }
    Ok(Some((h, scaled)))
}

/// `--q_awq`: searches and folds the scales of every weight-only layer
/// input with an exact fold ([`qtune_deploy::awq`]), replaces the layers'
/// Hessians by those of the scaled inputs, and checks on the first
/// calibration sample that the scaled float graph computes the original's
/// outputs (within 1e-4 of each output's largest magnitude). Returns the
/// scaled graph.
fn awq(
    w: &WeightMethodArgs,
    graph: &qtune_ir::Graph,
    quant: &QuantArgs,
    method: qtune_deploy::WeightMethod,
    loader: &qtune_search::SampleLoader,
    hessians: &mut qtune_deploy::gptq::Hessians,
    quiet: bool,
) -> Result<qtune_ir::Graph> {
    let start = std::time::Instant::now();
    // Which layers are weight-only, and their modes: TPU-MLIR's plan.
    let plan = quant
        .quantize_with(graph, qtune_deploy::WeightOnly::default(), None)?
        .plan;
    let mode_of = |id: qtune_ir::NodeId| {
        plan.modes
            .get(id.index())
            .copied()
            .filter(|m| m.is_weight_only())
    };
    let wo = qtune_deploy::WeightOnly {
        method,
        act_order: w.q_act_order,
        damp_ppm: w.damp_ppm(),
        clip_by_output: w.q_awq_clip,
        ..plan.weight_only
    };
    let mut scaled = graph.clone();
    let report = qtune_deploy::awq::apply_awq(&mut scaled, hessians, &mode_of, wo)?;
    // The float function is unchanged.
    let sample = loader.load(0)?;
    let opts = qtune_exec::RunOptions::new(Keep::Outputs, qtune_exec::Parallelism::Rayon);
    let before =
        qtune_exec::Executor::new(graph.clone())?.run(sample.clone(), &opts, &mut NoHook)?;
    let after = qtune_exec::Executor::new(scaled.clone())?.run(sample, &opts, &mut NoHook)?;
    for &o in &graph.outputs {
        let (Some(a), Some(b)) = (before.get(o), after.get(o)) else {
            bail!("--q_awq: output `{}` was not computed", graph.value(o).name);
        };
        let (a, b) = (a.to_f32_vec(), b.to_f32_vec());
        let top = a
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE);
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        if worst.is_nan() || worst > 1e-4 * top {
            bail!(
                "--q_awq: the scaled float model's output `{}` differs from the original by {worst} \
                 (largest magnitude {top}): a fold is not exact",
                graph.value(o).name
            );
        }
    }
    if !quiet {
        let alphas: Vec<String> = report
            .scaled
            .iter()
            .map(|s| format!("{:.2}", s.alpha))
            .collect();
        let unscaled: usize = report.unscaled.iter().map(|u| u.layers.len()).sum();
        eprintln!(
            "AWQ: {} layer inputs scaled (alpha {}), {unscaled} layers unscaled, in {:.2} s",
            report.scaled.len(),
            alphas.join(" "),
            start.elapsed().as_secs_f64()
        );
        for u in &report.unscaled {
            eprintln!("  unscaled {}: {}", u.layers.join(", "), u.reason);
        }
    }
    Ok(scaled)
}

/// `model_deploy`: the same flags under TPU-MLIR's tool name.
#[derive(clap::Parser)]
#[command(name = "model_deploy", version, about = "Quantizes a model and writes a QDQ ONNX model (qtune's model_deploy).", long_about = None)]
pub struct ToolArgs {
    #[command(flatten)]
    pub args: Args,
}

fn default_tolerance(mode: QuantMode) -> &'static str {
    match mode {
        QuantMode::F32 => "0.99,0.99",
        QuantMode::F16 | QuantMode::BF16 => "0.99,0.90",
        _ => "0.90,0.80",
    }
}

/// The output path, checked before any work: `.onnx` only.
fn check_output(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "onnx" => Ok(()),
        "bmodel" | "cvimodel" => bail!(
            "--model {}: a .{ext} is compiled by TPU-MLIR's backend (tpuc-opt and the chip's code \
             generator), which qtune does not include. The calibration table and qtable qtune \
             wrote are TPU-MLIR files: pass them to TPU-MLIR's model_deploy as they are. qtune \
             writes the quantized model as QDQ ONNX: use --model {}",
            path.display(),
            path.with_extension("onnx").display()
        ),
        _ => bail!(
            "--model {}: expected a .onnx output (a QDQ ONNX model)",
            path.display()
        ),
    }
}

pub fn run(args: Args) -> Result<()> {
    super::with_threads(args.threads, || run_inner(args))
}

fn run_inner(args: Args) -> Result<()> {
    let start = std::time::Instant::now();
    check_output(&args.model)?;
    args.report.check()?;
    let mode = args.quant.mode()?;
    let tol_text = args
        .tolerance
        .clone()
        .unwrap_or_else(|| default_tolerance(mode).to_string());
    let tol = Tolerance::parse(&tol_text).map_err(|e| anyhow::anyhow!("--tolerance: {e}"))?;
    if args.test_reference.is_some() && args.test_input.is_none() {
        bail!("--test_reference needs --test_input (the arrays to run the model on)");
    }
    let method = args
        .weights
        .method(mode, args.quant.quantize_table.is_some())?;
    let mut quant = args.quant.clone();
    quant.quantize = Some(mode.name().to_string());
    // The model as load_runnable loads a quantized one (TPU-MLIR op names,
    // BatchNorm folded), kept for the report.
    let mut prepare = qtune_exec::PrepareOptions::default();
    prepare.fold_batchnorm = true;
    let loaded = model::load_model(&args.mlir, None, &prepare, model::Naming::TopOps)?;
    let hessians = hessians(&args.weights, &loaded, &quant, method, args.quiet)?;
    let onnx_io = loaded.onnx_io;
    let (hessians, scaled) = match hessians {
        Some((h, g)) => (Some(h), g),
        None => (None, None),
    };
    let mut graph = scaled.unwrap_or_else(|| loaded.exec.graph().clone());
    let hessians = hessians.map(|h| {
        for (name, t) in h.biases {
            graph.add_constant(name, t);
        }
        h.hessians
    });
    let wo = qtune_deploy::WeightOnly {
        method,
        act_order: args.weights.q_act_order,
        damp_ppm: args.weights.damp_ppm(),
        clip_by_output: args.weights.q_awq_clip,
        ..Default::default()
    };
    let q = &quant.quantize_with(&graph, wo, hessians.as_ref())?;
    drop(hessians);
    if method != qtune_deploy::WeightMethod::Rtn && q.report.weight_only_weights == 0 {
        bail!(
            "--q_method {}: the plan has no weight-only layer (the qtable's weight-only rows \
             name none, or the chip runs them in float)",
            method.name()
        );
    }
    let exec = model::executor_of(&q.simulation_graph(), &args.mlir)?;
    if !args.quiet {
        let counts: Vec<String> = q
            .plan
            .counts()
            .iter()
            .map(|(m, n)| format!("{n} {m}"))
            .collect();
        eprintln!(
            "{}: {} for {} ({}); {} tensors quantized, {} int8 weights, {} int32 biases, {} tensors rounded to a float type{}",
            args.mlir.display(),
            mode,
            q.plan.profile.processor,
            counts.join(", "),
            q.report.quantized_tensors,
            q.report.int8_weights,
            q.report.int32_biases,
            q.report.rounded_tensors,
            match q.report.weight_only_weights {
                0 => String::new(),
                n => format!(", {n} weight-only weights"),
            }
        );
        for name in &q.report.f32_fallbacks {
            eprintln!("  {name}: F32 (the weight shift would be negative on this chip)");
        }
    }
    if let Some(input) = &args.test_input {
        verify(&args, &exec, input, tol, &tol_text)?;
    }
    // The exported model is a drop-in replacement for the source model, so
    // its inputs and outputs carry the source's ONNX names; the npz written
    // above keeps TPU-MLIR's op names, as TPU-MLIR's `_tpu_outputs.npz` and
    // `--test_reference` files do.
    let mut qdq = q.qdq.clone();
    qtune_deploy::rename_io(&mut qdq, &onnx_io.inputs, &onnx_io.outputs)
        .with_context(|| format!("naming the outputs of `{}`", args.model.display()))?;
    let packed = write_model(&qdq, &args.model)?;
    let deploy_time = start.elapsed().as_secs_f64();
    if !args.quiet {
        let nbits = match packed {
            0 => String::new(),
            n => format!(" ({n} 4-bit weight-only layers as com.microsoft MatMulNBits)"),
        };
        eprintln!(
            "wrote {}{nbits} in {deploy_time:.2} s",
            args.model.display()
        );
    }
    if args.report.wanted(args.quiet) {
        let prebuilt = qtune_search::report::Prebuilt {
            plan: &q.plan,
            sim: &exec,
        };
        report(&args, mode, deploy_time, &graph, prebuilt)?;
    }
    Ok(())
}

/// The report of the deployed model, measured on `--test_input`.
fn report(
    args: &Args,
    mode: QuantMode,
    deploy_time: f64,
    graph: &qtune_ir::Graph,
    prebuilt: qtune_search::report::Prebuilt,
) -> Result<()> {
    let table = match &args.quant.calibration_table {
        Some(p) => Some(qtune_quant::CalibrationTable::read(p)?),
        None => None,
    };
    let qtable = match &args.quant.quantize_table {
        Some(p) => super::report::qtable_rows(graph, p, false)?,
        None => Vec::new(),
    };
    let mut samples = Vec::new();
    if let Some(input) = &args.test_input {
        let arrays = read_npz(input)?;
        // Arrays may stack several samples on axis 0 (as verify runs them).
        let mut per_input = Vec::new();
        let mut count = 1;
        for &id in &graph.inputs {
            let name = &graph.value(id).name;
            let t = arrays
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .with_context(|| {
                    format!("--test_input {} has no array `{name}`", input.display())
                })?;
            let rows = graph
                .shape_of(id)?
                .dims()
                .first()
                .copied()
                .unwrap_or(1)
                .max(1);
            count = t.dims().first().map_or(1, |&d| (d / rows).max(1));
            per_input.push((name.clone(), t, rows));
        }
        for s in 0..count {
            let mut one = Vec::new();
            for (name, t, rows) in &per_input {
                let part = if count == 1 {
                    t.clone()
                } else {
                    t.slice_outer(s * rows, (s + 1) * rows)?
                };
                one.push((name.clone(), part));
            }
            samples.push(one);
        }
    }
    let mut outputs = vec![args.model.display().to_string()];
    if args.test_input.is_some() {
        outputs.push(outputs_path(&args.model).display().to_string());
    }
    let mut counts = vec![qtune_report::Entry::new("quantize", mode)];
    if let Some(p) = &args.quant.calibration_table {
        counts.push(qtune_report::Entry::new("calibration table", p.display()));
    }
    if let Some(p) = &args.quant.quantize_table {
        counts.push(qtune_report::Entry::new("qtable", p.display()));
    }
    super::report::finish(
        &args.report,
        args.quiet,
        super::report::RunFacts {
            title: "model_deploy".into(),
            model: &args.mlir,
            graph,
            processor: &args.quant.processor,
            dataset: args
                .test_input
                .as_ref()
                .map(|p| format!("{} (--test_input)", p.display()))
                .unwrap_or_else(|| "none (no --test_input)".into()),
            table: table.as_ref(),
            qtable: &qtable,
            fp_type: &args.quant.fp_type,
            quantize: mode,
            asymmetric: args.quant.asymmetric,
            matmul_per_channel: args.quant.matmul_perchannel,
            samples,
            method_tables: Vec::new(),
            counts,
            timings: vec![qtune_report::Timing::new("deploy", deploy_time)],
            outputs,
            search: None,
            transforms: Vec::new(),
            notes: Vec::new(),
            prebuilt: Some(prebuilt),
        },
    )
}

fn verify(
    args: &Args,
    exec: &qtune_exec::Executor,
    input: &Path,
    tol: Tolerance,
    tol_text: &str,
) -> Result<()> {
    let arrays = read_npz(input)?;
    let samples = model::samples_from_arrays(exec, &arrays, &input.display().to_string())?;
    // Several stacked samples run one by one and their outputs are written
    // stacked the same way (to check the export on a whole validation set);
    // a comparison with --test_reference takes one sample, as TPU-MLIR's.
    if samples.len() != 1 && (args.test_reference.is_some() || samples.is_empty()) {
        bail!(
            "--test_input {}: holds {} samples for a batch-{} model; give one with --test_reference",
            input.display(),
            samples.len(),
            exec.graph()
                .inputs
                .first()
                .and_then(|&i| exec.graph().shape_of(i).ok())
                .and_then(|s| s.dims().first().copied())
                .unwrap_or(1)
        );
    }
    let keep = if args.compare_all {
        Keep::All
    } else {
        Keep::Outputs
    };
    let results = exec.run_samples(samples, &keep, |_| NoHook)?;
    let g = exec.graph();
    let mut named: Vec<(String, Tensor)> = Vec::new();
    let mut parts: Vec<Vec<Tensor>> = Vec::new();
    for (s, (values, _)) in results.iter().enumerate() {
        let mut i = 0;
        for (id, t) in values.iter() {
            if g.constant_of(id).is_none() && t.dtype() == qtune_tensor::DType::F32 {
                if s == 0 {
                    named.push((g.value(id).name.clone(), t.clone()));
                    parts.push(vec![t.clone()]);
                } else if let Some(p) = parts.get_mut(i) {
                    p.push(t.clone());
                }
                i += 1;
            }
        }
    }
    if results.len() > 1 {
        for ((name, t), p) in named.iter_mut().zip(&parts) {
            *t = Tensor::concat_outer(p).with_context(|| format!("stacking `{name}`"))?;
        }
    }
    let out_npz = outputs_path(&args.model);
    write_npz(&out_npz, &named)?;
    if let Some(reference) = &args.test_reference {
        let refs = read_npz(reference)?;
        let excepts: Vec<&str> = args
            .excepts
            .as_deref()
            .map(|s| s.split(',').map(str::trim).collect())
            .unwrap_or_default();
        super::compare::check(
            &named,
            &refs,
            tol,
            tol_text,
            &excepts,
            !args.quiet,
            (&out_npz, reference),
        )?;
    }
    Ok(())
}

/// `<model without extension>_tpu_outputs.npz`, as TPU-MLIR names it.
fn outputs_path(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    model.with_file_name(format!("{stem}_tpu_outputs.npz"))
}

/// Writes the QDQ model, its 4-bit weight-only layers packed as
/// MatMulNBits where they fit (see [`qtune_onnx::pack_int4`]); returns how
/// many.
fn write_model(qdq: &qtune_ir::Graph, path: &Path) -> Result<usize> {
    let context = || format!("writing `{}`", path.display());
    let mut model = qtune_onnx::export_model(qdq, &qtune_onnx::ExportOptions::default())
        .with_context(context)?;
    let packed = qtune_onnx::pack_int4(qdq, &mut model);
    qtune_onnx::write_model(&model, path).with_context(context)?;
    Ok(packed)
}
