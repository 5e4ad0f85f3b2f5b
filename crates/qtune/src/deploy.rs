//! Quantizing a model (`model_deploy`): the plan per processor profile,
//! calibration table and qtable; its integer simulation; the QDQ ONNX
//! export.

use std::path::{Path, PathBuf};

use anyhow::Context;
use qtune_deploy::{Processor, QuantizedModel, WeightMethod, WeightOnly};
use qtune_exec::{Executor, Keep, NoHook, PrepareOptions, Values};
use qtune_ir::{Graph, ValueId};
use qtune_quant::{CalibrationTable, QuantMode};
use qtune_tensor::Tensor;

use crate::model::{self, Naming, OnnxIoNames};
use crate::{CalibrationSource, Error, Preprocess, Reporter, Result, bail};

/// How to quantize a model (`model_deploy`'s quantization flags).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QuantizeSettings {
    /// `--quantize`: INT8, F16, BF16, F32 or a weight-only mode (see
    /// [`parse_quantize_mode`]).
    pub mode: QuantMode,
    /// Calibration table for the INT8 layers.
    pub calibration_table: Option<PathBuf>,
    /// Qtable: layers kept at another precision.
    pub quantize_table: Option<PathBuf>,
    /// Target processor (a name of [`qtune_deploy::Processor::ALL`], or `qdq`).
    pub processor: String,
    /// INT8 activations with a zero point (`--asymmetric`).
    pub asymmetric: bool,
    /// Gemm weights per output channel (`--matmul_perchannel`).
    pub matmul_per_channel: bool,
    /// Float type of the ops the chip keeps in float (`auto`: the chip's).
    pub fp_type: String,
    /// Qtable lines TPU-MLIR skips are errors instead of one warning.
    pub strict: bool,
    /// Weight-only groups (`--q_group_size`, `--q_symmetric`; see
    /// [`weight_only`]) and how their codes are chosen (`--q_method`,
    /// `--q_act_order`, `--q_damp`, `--q_awq_clip`: `method`, `act_order`,
    /// `damp_ppm`, `clip_by_output`).
    pub weight_only: WeightOnly,
    /// The samples whose layer inputs give GPTQ's Hessians
    /// (`--calibration_data` and the flags that go with it); needed by
    /// [`WeightMethod::needs_calibration`] methods, by `awq` and by
    /// `weight_only.clip_by_output`, refused otherwise.
    pub weight_calibration: Option<WeightCalibration>,
    /// AWQ before the weight-only method (`--q_awq`, see
    /// [`qtune_deploy::awq`]): per input channel of each weight-only layer
    /// a scale `mean|x|^alpha`, alpha searched per layer input over
    /// `weight_calibration`'s samples, folded exactly into what produces
    /// the input (a LayerNorm's gamma / beta, a projection's output
    /// channels); layers without such a fold stay unscaled. Needs
    /// `weight_calibration`, not `sequential`.
    pub awq: bool,
}

/// Where the GPTQ methods' layer-input Hessians come from (model_deploy's
/// `--calibration_data`, `--calibration_num`, `--calibration_mask_input`,
/// `--q_sequential`, `--q_bias_correction`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WeightCalibration {
    /// The samples (image files get the model's preprocessing).
    pub source: CalibrationSource,
    /// How many samples (0: all).
    pub num: usize,
    /// A graph input whose zeros mark padding rows of the layer inputs
    /// (e.g. `attention_mask`), left out of the Hessians.
    pub mask_input: Option<String>,
    /// Sequential GPTQ: each layer's Hessian comes from the model whose
    /// earlier weight-only layers are already quantized.
    pub sequential: bool,
    /// With `sequential`: each quantized layer's bias absorbs the mean
    /// output error over the calibration rows.
    pub bias_correction: bool,
    /// With `sequential`: before it is quantized, each layer's weight is
    /// refit so that, fed the quantized model's layer inputs, it gives the
    /// float model's outputs (GPTAQ's asymmetric calibration, see
    /// [`qtune_deploy::gptq::asymmetric_target`]); the value is the
    /// dampening of that least-squares fit relative to the mean of the
    /// Hessian's diagonal.
    pub float_target: Option<f64>,
}

impl WeightCalibration {
    /// All the samples of `source`, float Hessians, no mask.
    pub fn new(source: CalibrationSource) -> Self {
        WeightCalibration {
            source,
            num: 0,
            mask_input: None,
            sequential: false,
            bias_correction: false,
            float_target: None,
        }
    }
}

impl Default for QuantizeSettings {
    fn default() -> Self {
        QuantizeSettings {
            mode: QuantMode::Int8,
            calibration_table: None,
            quantize_table: None,
            processor: "bm1684x".to_string(),
            asymmetric: false,
            matmul_per_channel: false,
            fp_type: "auto".to_string(),
            strict: false,
            weight_only: WeightOnly::default(),
            weight_calibration: None,
            awq: false,
        }
    }
}

/// The `--quantize` mode: `text` in any case, or by default INT8 with a
/// calibration table and F32 without.
pub fn parse_quantize_mode(text: Option<&str>, has_calibration_table: bool) -> Result<QuantMode> {
    let default = if has_calibration_table { "INT8" } else { "F32" };
    let s = text.unwrap_or(default).to_ascii_uppercase();
    match QuantMode::parse(&s) {
        Some(m @ (QuantMode::Int8 | QuantMode::F16 | QuantMode::BF16 | QuantMode::F32)) => Ok(m),
        Some(m) if m.is_weight_only() => Ok(m),
        _ => Err(Error::setting(
            "quantize",
            format!(
                "--quantize {s}: qtune simulates and exports INT8, F16, BF16, F32 and the \
                 weight-only W8F16, W8BF16, W4F16, W4BF16 (TPU-MLIR's other modes need its \
                 backend)"
            ),
        )),
    }
}

/// `--q_group_size` / `--q_symmetric`. An explicit 0 is refused (TPU-MLIR
/// reads 0 as per channel; here that is the setting's absence, so that a 0
/// computed by a script by mistake does not silently change the scheme).
pub fn weight_only(group_size: Option<usize>, symmetric: bool) -> Result<WeightOnly> {
    let group_size = match group_size {
        Some(0) => {
            return Err(Error::setting(
                "q_group_size",
                "--q_group_size 0: expected a positive group size (values per scale along the \
                 input axis); omit the flag for one scale per output channel",
            ));
        }
        Some(g) => g,
        None => 0,
    };
    if symmetric && group_size == 0 {
        return Err(Error::setting(
            "q_symmetric",
            "--q_symmetric needs --q_group_size: TPU-MLIR applies it to per-group weights \
             only (per-channel weights follow fixed rules)",
        ));
    }
    Ok(WeightOnly {
        group_size,
        symmetric,
        ..WeightOnly::default()
    })
}

/// The weight-only method of a name (`--q_method`).
pub fn parse_weight_method(name: &str) -> Result<WeightMethod> {
    WeightMethod::parse(name).ok_or_else(|| {
        let all: Vec<&str> = WeightMethod::ALL.iter().map(|m| m.name()).collect();
        Error::setting(
            "q_method",
            format!("--q_method {name}: expected one of {}", all.join(", ")),
        )
    })
}

/// GPTQ's dampening (`--q_damp`, a fraction of the mean Hessian diagonal
/// in (0, 10]) as [`WeightOnly::damp_ppm`].
pub fn damp_ppm(damp: f64) -> Result<u32> {
    if !(damp > 0.0 && damp <= 10.0) {
        return Err(Error::setting(
            "q_damp",
            format!("--q_damp {damp}: expected a fraction of the mean Hessian diagonal in (0, 10]"),
        ));
    }
    // In (0, 10]: at most 1e7.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(((damp * 1e6).round() as u32).max(1))
}

/// Refuses weight-method settings that do not go together: a method other
/// than TPU-MLIR's (or AWQ) for a mode without weight-only layers, GPTQ or
/// AWQ without calibration samples, AWQ with sequential GPTQ, GPTQ's
/// settings with another method, the output-error clip search with a
/// method without the clip search.
pub fn check_weight_method(settings: &QuantizeSettings) -> Result<()> {
    let wo = &settings.weight_only;
    let method = wo.method;
    let no_weight_only = !settings.mode.is_weight_only() && settings.quantize_table.is_none();
    if method != WeightMethod::Rtn && no_weight_only {
        return Err(Error::setting(
            "q_method",
            format!(
                "--q_method {}: applies to weight-only layers (--quantize W8F16, W8BF16, W4F16, \
             W4BF16, or qtable rows with those modes); --quantize {} has none",
                method.name(),
                settings.mode
            ),
        ));
    }
    let cal = settings.weight_calibration.as_ref();
    if settings.awq {
        if no_weight_only {
            return Err(Error::setting(
                "q_awq",
                format!(
                    "--q_awq: applies to weight-only layers (--quantize W8F16, W8BF16, W4F16, \
                     W4BF16, or qtable rows with those modes); --quantize {} has none",
                    settings.mode
                ),
            ));
        }
        if cal.is_none() {
            return Err(Error::setting(
                "q_awq",
                "--q_awq: needs --calibration_data DIR (the samples whose layer inputs give the \
                 activation scales and the errors alpha is searched on)",
            ));
        }
        if cal.is_some_and(|c| c.sequential) {
            return Err(Error::setting(
                "q_awq",
                "--q_awq: not with --q_sequential (the scales are searched on the float model's \
                 layer inputs)",
            ));
        }
    }
    if wo.clip_by_output {
        if !matches!(method, WeightMethod::Clip | WeightMethod::GptqClip) {
            return Err(Error::setting(
                "q_awq_clip",
                format!(
                    "--q_awq_clip: applies to --q_method clip / gptq_clip only (--q_method is {})",
                    method.name()
                ),
            ));
        }
        if cal.is_none() {
            return Err(Error::setting(
                "q_awq_clip",
                "--q_awq_clip: needs --calibration_data DIR (the samples whose layer inputs \
                 weigh each group's output error)",
            ));
        }
        if cal.is_some_and(|c| c.sequential) {
            return Err(Error::setting(
                "q_awq_clip",
                "--q_awq_clip: not with --q_sequential",
            ));
        }
    }
    let gptq = method.needs_calibration();
    if gptq && cal.is_none() {
        return Err(Error::setting(
            "q_method",
            format!(
                "--q_method {}: needs --calibration_data DIR (the samples whose layer inputs \
             give the Hessians)",
                method.name()
            ),
        ));
    }
    if !gptq {
        let awq = settings.awq || wo.clip_by_output;
        let only_gptq = [
            (!awq && cal.is_some(), "--calibration_data"),
            (wo.act_order, "--q_act_order"),
            (wo.damp_ppm != 0, "--q_damp"),
        ];
        if let Some((_, flag)) = only_gptq.iter().find(|(given, _)| *given) {
            return Err(Error::setting(
                flag.trim_start_matches("--"),
                format!(
                    "{flag}: applies to --q_method gptq / gptq_clip{} only (--q_method is {})",
                    if *flag == "--calibration_data" {
                        " or --q_awq / --q_awq_clip"
                    } else {
                        ""
                    },
                    method.name()
                ),
            ));
        }
    }
    if let Some(c) = cal
        && c.bias_correction
        && !c.sequential
    {
        return Err(Error::setting(
            "q_bias_correction",
            "--q_bias_correction: needs --q_sequential (the correction of each layer is \
             measured on the model with the layers before it quantized)",
        ));
    }
    if let Some(c) = cal
        && let Some(d) = c.float_target
    {
        if !c.sequential {
            return Err(Error::setting(
                "q_float_target",
                "--q_float_target: needs --q_sequential (the target compares the inputs of the \
                 quantized model with the float model's, stage by stage)",
            ));
        }
        if !(d.is_finite() && d > 0.0) {
            return Err(Error::setting(
                "q_target_damp",
                format!("--q_target_damp {d}: expected a positive number (e.g. 1)"),
            ));
        }
    }
    Ok(())
}

/// The input Hessians of the weight-only layers of `loaded` over
/// `cal`'s samples: from the float model, or (`sequential`) stage by stage
/// from the model with the earlier layers quantized as `settings` plans
/// them (with `bias_correction`, also the corrected biases). With
/// `settings.awq`, the AWQ scales are then folded into a copy of the graph
/// and the Hessians become those of the scaled layer inputs (see [`awq`]).
fn hessians(
    cal: &WeightCalibration,
    loaded: &model::LoadedModel,
    settings: &QuantizeSettings,
    reporter: &dyn Reporter,
) -> Result<Collected> {
    let start = std::time::Instant::now();
    let graph = loaded.exec.graph();
    let what = match &cal.source {
        CalibrationSource::Dataset(d) | CalibrationSource::DataList(d) => {
            format!("--calibration_data {}", d.display())
        }
        CalibrationSource::NpzFiles(f) => format!("--calibration_data ({} npz files)", f.len()),
        CalibrationSource::Samples(s) => format!("--calibration_data ({} samples)", s.len()),
    };
    let ctx = |e: Error| e.context(&what);
    let selected = cal
        .source
        .select(cal.num, graph.inputs.len())
        .map_err(ctx)?;
    let mut configs = Vec::with_capacity(graph.inputs.len());
    for &id in &graph.inputs {
        let name = &graph.value(id).name;
        let shape = graph.shape_of(id)?.dims().to_vec();
        let pre = loaded
            .input_attrs
            .iter()
            .find(|a| &a.name == name)
            .and_then(|a| Preprocess::from_input_attrs(&a.attrs));
        configs.push(match pre {
            Some(p) if selected.is_images() => Some(p.config(&shape).map_err(|e| {
                e.context(&format!(
                    "input `{name}`: cannot preprocess the --calibration_data images for it"
                ))
            })?),
            _ => None,
        });
    }
    let loader = selected.loader(graph, configs).map_err(ctx)?;
    let hs = qtune_calibrate::HessianSettings::default()
        .with_mask_input(cal.mask_input.clone())
        .with_bias_correction(cal.bias_correction)
        .with_float_target(cal.float_target);
    let h = if cal.sequential {
        // Planning needs no Hessian: plan through TPU-MLIR's rule (the same
        // layers and groups), then quantize each stage by the method.
        let mut rtn = settings.clone();
        rtn.weight_only = WeightOnly {
            method: WeightMethod::Rtn,
            act_order: false,
            damp_ppm: 0,
            ..settings.weight_only
        };
        let mut plan = quantize_with_hessians(graph, &rtn, None, reporter)?.plan;
        plan.weight_only.method = settings.weight_only.method;
        plan.weight_only.act_order = settings.weight_only.act_order;
        plan.weight_only.damp_ppm = settings.weight_only.damp_ppm;
        qtune_calibrate::sequential_hessians(graph, &plan, &loader, &hs, &|_, _| {})
    } else {
        qtune_calibrate::collect_hessians(&loaded.exec, &loader, &hs, &|_| {}).map(|h| {
            qtune_calibrate::Sequential {
                hessians: h,
                constants: Vec::new(),
                refit_weights: 0,
            }
        })
    }
    .map_err(|e| Error::from(e).context(&what))?;
    let mut h = h;
    let awq = if settings.awq {
        Some(awq(graph, settings, &loader, &mut h.hessians).map_err(ctx)?)
    } else {
        None
    };
    let distinct: std::collections::BTreeSet<*const qtune_deploy::gptq::Hessian> =
        h.hessians.values().map(std::sync::Arc::as_ptr).collect();
    let line = format!(
        "GPTQ: {} layer Hessians ({} distinct inputs{}{}{}) from {} samples of {} in {:.2} s",
        h.hessians.len(),
        distinct.len(),
        if cal.sequential { ", sequential" } else { "" },
        match (h.refit_weights, cal.float_target) {
            (0, _) | (_, None) => String::new(),
            (n, Some(d)) => format!(", {n} weights refit to the float target (damp {d})"),
        },
        match h.constants.len() - h.refit_weights {
            0 => String::new(),
            n => format!(", {n} biases corrected"),
        },
        loader.sample_count(),
        what.trim_start_matches("--calibration_data "),
        start.elapsed().as_secs_f64()
    );
    Ok(Collected {
        hessians: h,
        line,
        awq,
    })
}

/// What [`hessians`] collects.
struct Collected {
    hessians: qtune_calibrate::Sequential,
    /// The GPTQ line of the summary.
    line: String,
    /// With AWQ: the scaled graph and the AWQ lines of the summary.
    awq: Option<(Graph, Vec<String>)>,
}

/// AWQ (`settings.awq`): searches and folds the scales of every
/// weight-only layer input with an exact fold ([`qtune_deploy::awq`]),
/// replaces the layers' Hessians by those of the scaled inputs, and checks
/// on the first sample of `loader` that the scaled float graph computes the
/// original's outputs (within 1e-4 of each output's largest magnitude).
/// Returns the scaled graph and the summary lines: the alphas, then one
/// line per group of layers left unscaled with the reason.
fn awq(
    graph: &Graph,
    settings: &QuantizeSettings,
    loader: &qtune_calibrate::SampleLoader,
    hessians: &mut qtune_deploy::gptq::Hessians,
) -> Result<(Graph, Vec<String>)> {
    let start = std::time::Instant::now();
    // Which layers are weight-only, and their modes: TPU-MLIR's plan (the
    // final quantization gives the plan's warnings).
    let mut rtn = settings.clone();
    rtn.weight_only = WeightOnly {
        method: WeightMethod::Rtn,
        act_order: false,
        damp_ppm: 0,
        clip_by_output: false,
        ..settings.weight_only
    };
    let plan = quantize_with_hessians(graph, &rtn, None, &crate::Silent)?.plan;
    let mode_of = |id: qtune_ir::NodeId| {
        plan.modes
            .get(id.index())
            .copied()
            .filter(|m| m.is_weight_only())
    };
    let wo = WeightOnly {
        method: settings.weight_only.method,
        act_order: settings.weight_only.act_order,
        damp_ppm: settings.weight_only.damp_ppm,
        clip_by_output: settings.weight_only.clip_by_output,
        ..plan.weight_only
    };
    let mut scaled = graph.clone();
    let report = qtune_deploy::awq::apply_awq(&mut scaled, hessians, &mode_of, wo)?;
    // The float function is unchanged.
    let sample = loader.load(0)?;
    let opts = qtune_exec::RunOptions::new(Keep::Outputs, qtune_exec::Parallelism::Rayon);
    let before = Executor::new(graph.clone())?.run(sample.clone(), &opts, &mut NoHook)?;
    let after = Executor::new(scaled.clone())?.run(sample, &opts, &mut NoHook)?;
    for &o in &graph.outputs {
        let name = &graph.value(o).name;
        let (Some(a), Some(b)) = (before.get(o), after.get(o)) else {
            return Err(Error::Internal {
                message: format!("--q_awq: output `{name}` was not computed"),
            });
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
            return Err(Error::Internal {
                message: format!(
                    "--q_awq: the scaled float model's output `{name}` differs from the original \
                     by {worst} (largest magnitude {top}): a fold is not exact"
                ),
            });
        }
    }
    let alphas: Vec<String> = report
        .scaled
        .iter()
        .map(|s| format!("{:.2}", s.alpha))
        .collect();
    let unscaled: usize = report.unscaled.iter().map(|u| u.layers.len()).sum();
    let mut lines = vec![format!(
        "AWQ: {} layer inputs scaled (alpha {}), {unscaled} layers unscaled, in {:.2} s",
        report.scaled.len(),
        alphas.join(" "),
        start.elapsed().as_secs_f64()
    )];
    for u in &report.unscaled {
        lines.push(format!("  unscaled {}: {}", u.layers.join(", "), u.reason));
    }
    Ok((scaled, lines))
}

/// `model_deploy`'s default minimum similarity `cos,euclid` of the
/// quantized outputs against a reference, by `--quantize` mode.
pub fn default_tolerance(mode: QuantMode) -> &'static str {
    match mode {
        QuantMode::F32 => "0.99,0.99",
        QuantMode::F16 | QuantMode::BF16 => "0.99,0.90",
        _ => "0.90,0.80",
    }
}

/// The processor of a name (`qdq` is `onnxruntime`).
pub fn parse_processor(name: &str) -> Result<Processor> {
    Processor::parse(name).ok_or_else(|| {
        let all: Vec<&str> = Processor::ALL.iter().map(|p| p.name()).collect();
        Error::setting(
            "processor",
            format!("--processor {name}: expected one of {}", all.join(", ")),
        )
    })
}

/// Reads a calibration table; its reader warnings (rows set aside because
/// a number is not finite) go to `reporter`.
pub fn read_calibration_table(path: &Path, reporter: &dyn Reporter) -> Result<CalibrationTable> {
    let table = CalibrationTable::read(path)?;
    for w in table.warnings() {
        reporter.warning(&format!(
            "warning: calibration table `{}`: {w}",
            path.display()
        ));
    }
    Ok(table)
}

/// The op of a node as TPU-MLIR prints it (`top.Conv`), with its fused
/// Relu (`do_relu`, and the limit when there is one).
pub fn op_label(g: &Graph, id: qtune_ir::NodeId) -> String {
    let n = g.node(id);
    let top = qtune_ir::mlir::top_op_type(g, id)
        .map_or_else(|| n.op.op_type().to_string(), str::to_string);
    match n.relu.map(|r| r.limit) {
        None => top,
        Some(None) => format!("{top} do_relu"),
        Some(Some(l)) => format!("{top} do_relu relu_limit={l}"),
    }
}

/// The reader's warning about calibration-table rows that are not finite
/// (one line), followed by the ops of `graph` that write and read each
/// such tensor. The reader has set the rows aside, as TPU-MLIR's importer
/// ignores them: the tensors are uncalibrated, so an INT8 op reading one
/// fails the plan unless the qtable keeps it in float, and these names are
/// what the user needs for that.
pub fn warn_non_finite_rows(
    table: &CalibrationTable,
    path: &Path,
    graph: &Graph,
    reporter: &dyn Reporter,
) {
    let Some(head) = table.warnings().into_iter().next() else {
        return;
    };
    let per_row: Vec<String> = table
        .non_finite_rows
        .iter()
        .map(|row| {
            let mut ops = Vec::new();
            if let Some(v) = graph.find_value(&row.name) {
                for (id, n) in graph.nodes() {
                    let writes = n.outputs.contains(&v);
                    if writes || n.inputs.contains(&Some(v)) {
                        ops.push(format!(
                            "{} ({}, {})",
                            n.name,
                            op_label(graph, id),
                            if writes { "writes it" } else { "reads it" }
                        ));
                    }
                }
            }
            if ops.is_empty() {
                format!("`{}`: no op of the model uses it", row.name)
            } else {
                format!("`{}`: ops affected: {}", row.name, ops.join(", "))
            }
        })
        .collect();
    reporter.warning(&format!(
        "warning: calibration table `{}`: {head}; {}",
        path.display(),
        per_row.join("; ")
    ));
}

/// Says which sections of a calibration table qtune reads but does not
/// apply when it deploys: `#asym_op` (TPU-MLIR quantizes the listed
/// SiLU/GELU outputs and Conv/MatMul inputs asymmetrically) and
/// `#weight_scale` (MQBench's weight scales). `#int4_th` and `#int4_op`
/// only matter to INT4 layers, which qtune does not deploy.
fn warn_unapplied_sections(table: &CalibrationTable, path: &Path, reporter: &dyn Reporter) {
    if !table.asym_ops.is_empty() {
        reporter.warning(&format!(
            "warning: calibration table `{}`: the #asym_op section ({} ops: {}) is not applied: \
             qtune quantizes those ops as the rest of the model",
            path.display(),
            table.asym_ops.len(),
            table.asym_ops.join(", ")
        ));
    }
    if !table.weight_scales.is_empty() {
        let names: Vec<&str> = table
            .weight_scales
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        reporter.warning(&format!(
            "warning: calibration table `{}`: the #weight_scale section ({} weights: {}) is not \
             applied: qtune computes weight scales from the weights",
            path.display(),
            names.len(),
            names.join(", ")
        ));
    }
}

/// The rows of the qtable at `path` that apply to `graph`. Lines TPU-MLIR
/// skips are skipped with one warning line, or refused with `strict`; rows
/// with a mode qtune cannot deploy are refused.
pub fn read_qtable_for(
    graph: &Graph,
    path: &Path,
    strict: bool,
    reporter: &dyn Reporter,
) -> Result<Vec<(String, QuantMode)>> {
    let file = qtune_quant::read_qtable(path)?;
    let matched = qtune_deploy::match_qtable(graph, &file);
    if let Some(summary) = matched.skipped_summary(path) {
        if strict {
            bail!("{summary} (refused: --strict)");
        }
        reporter.warning(&format!(
            "warning: {summary} (skipped; --strict makes this an error)"
        ));
    }
    matched.check_modes(path)?;
    Ok(matched.pairs())
}

/// Plans and builds the quantized model of `graph` (TPU-MLIR op names,
/// BatchNorm folded: as [`load_for_quantization`] loads it).
pub fn quantize(
    graph: &Graph,
    settings: &QuantizeSettings,
    reporter: &dyn Reporter,
) -> Result<QuantizedModel> {
    quantize_with_hessians(graph, settings, None, reporter)
}

/// [`quantize`] with the layer-input Hessians the GPTQ methods need.
pub fn quantize_with_hessians(
    graph: &Graph,
    settings: &QuantizeSettings,
    hessians: Option<&qtune_deploy::gptq::Hessians>,
    reporter: &dyn Reporter,
) -> Result<QuantizedModel> {
    let processor = parse_processor(&settings.processor)?;
    let profile = processor.profile();
    let fp_type = profile
        .float_type(&settings.fp_type)
        .map_err(|e| Error::setting("fp_type", e))?;
    // The reader's warning about rows that are not finite is given here,
    // once, with the ops of this graph each row affects.
    let table = match &settings.calibration_table {
        Some(p) => Some(CalibrationTable::read(p)?),
        None => None,
    };
    if let (Some(t), Some(p)) = (&table, &settings.calibration_table) {
        warn_non_finite_rows(t, p, graph, reporter);
        warn_unapplied_sections(t, p, reporter);
    }
    let qtable = match &settings.quantize_table {
        Some(p) => read_qtable_for(graph, p, settings.strict, reporter)?,
        None => Vec::new(),
    };
    let req = qtune_deploy::PlanRequest {
        quantize: settings.mode,
        calibration: table.as_ref(),
        qtable: &qtable,
        fp_type,
        asymmetric: settings.asymmetric,
        matmul_per_channel: settings.matmul_per_channel,
        weight_only: settings.weight_only,
    };
    qtune_deploy::quantize_with_hessians(graph, processor, &req, hessians).map_err(|e| {
        let ctx = match (&settings.calibration_table, &settings.quantize_table) {
            (Some(c), Some(t)) => format!(
                " (calibration table `{}`, qtable `{}`)",
                c.display(),
                t.display()
            ),
            (Some(c), None) => format!(" (calibration table `{}`)", c.display()),
            (None, Some(t)) => format!(" (qtable `{}`)", t.display()),
            (None, None) => String::new(),
        };
        Error::from(anyhow::anyhow!("{e}{ctx}"))
    })
}

/// Loads a model as quantization sees it: TPU-MLIR op names (the tables'
/// keys) and BatchNorm folded into Conv, as TPU-MLIR's lowering does.
pub fn load_for_quantization(path: &Path) -> Result<model::LoadedModel> {
    let mut prepare = PrepareOptions::default();
    prepare.fold_batchnorm = true;
    model::load_model(path, None, &prepare, Naming::TopOps)
}

/// A quantized model: the float graph it came from, the plan and QDQ
/// graph, and the simulation that runs it.
pub struct Deployment {
    /// The float model (TPU-MLIR op names, BatchNorm folded; with AWQ its
    /// scales folded, which leaves the float outputs unchanged).
    pub graph: Graph,
    /// The plan, the QDQ graph and its counts.
    pub quantized: QuantizedModel,
    /// The integer simulation of the QDQ graph.
    pub simulation: Executor,
    /// The source ONNX model's input and output names.
    pub onnx_io: OnnxIoNames,
    /// The model file.
    pub model: PathBuf,
    /// The `--quantize` mode.
    pub mode: QuantMode,
    /// The GPTQ methods' line about the Hessians (how many, from how many
    /// samples, how long).
    pub hessian_summary: Option<String>,
    /// With AWQ: the line of the alphas, then one line per group of layers
    /// left unscaled and why.
    pub awq_summary: Vec<String>,
}

/// One run of the simulation on a sample's inputs, keeping what `Keep`
/// says (see [`Deployment::simulate_each`]).
pub type SampleRun<'a> = dyn FnMut(Vec<(ValueId, Tensor)>, &Keep) -> Result<Values> + 'a;

/// Quantizes the model at `model` per `settings` (`model_deploy` up to the
/// export).
pub fn deploy(
    model: &Path,
    settings: &QuantizeSettings,
    reporter: &dyn Reporter,
) -> Result<Deployment> {
    deploy_observed(model, settings, reporter, &mut |_| {})
}

/// [`deploy`], handing `on_graph` the float graph it quantizes (the
/// [`Deployment::graph`] to be) as soon as it is known, before the plan
/// and the weights are computed: a caller can start work on it meanwhile
/// (model_deploy's report computes its histograms then).
pub fn deploy_observed(
    model: &Path,
    settings: &QuantizeSettings,
    reporter: &dyn Reporter,
    on_graph: &mut dyn FnMut(&Graph),
) -> Result<Deployment> {
    check_weight_method(settings)?;
    let loaded = load_for_quantization(model)?;
    let (hessians, hessian_summary, awq) = match &settings.weight_calibration {
        Some(cal) => {
            let c = hessians(cal, &loaded, settings, reporter)?;
            (Some(c.hessians), Some(c.line), c.awq)
        }
        None => (None, None, None),
    };
    // With AWQ the scaled graph (the same float function) is quantized.
    let (mut graph, awq_summary) = match awq {
        Some((g, lines)) => (g, lines),
        None => (loaded.exec.graph().clone(), Vec::new()),
    };
    // Sequential GPTQ with bias correction or a float target: the
    // corrected biases and refit weights replace the float ones.
    let hessians = hessians.map(|h| {
        for (name, t) in h.constants {
            graph.add_constant(name, t);
        }
        h.hessians
    });
    on_graph(&graph);
    let quantized = quantize_with_hessians(&graph, settings, hessians.as_ref(), reporter)?;
    drop(hessians);
    let method = settings.weight_only.method;
    if method != WeightMethod::Rtn && quantized.report.weight_only_weights == 0 {
        return Err(Error::setting(
            "q_method",
            format!(
                "--q_method {}: the plan has no weight-only layer (the qtable's weight-only \
                 rows name none, or the chip runs them in float)",
                method.name()
            ),
        ));
    }
    let simulation = model::executor_of(&quantized.simulation_graph(), model)?;
    Ok(Deployment {
        graph,
        quantized,
        simulation,
        onnx_io: loaded.onnx_io,
        model: model.to_path_buf(),
        mode: settings.mode,
        hessian_summary,
        awq_summary,
    })
}

/// The output path of a deployed model, checked before any work: `.onnx`
/// only (a `.bmodel` needs TPU-MLIR's backend).
pub fn check_output(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "onnx" => Ok(()),
        "bmodel" | "cvimodel" => Err(Error::setting(
            "model",
            format!(
                "--model {}: a .{ext} is compiled by TPU-MLIR's backend (tpuc-opt and the chip's code \
                 generator), which qtune does not include. The calibration table and qtable qtune \
                 wrote are TPU-MLIR files: pass them to TPU-MLIR's model_deploy as they are. qtune \
                 writes the quantized model as QDQ ONNX: use --model {}",
                path.display(),
                path.with_extension("onnx").display()
            ),
        )),
        _ => Err(Error::setting(
            "model",
            format!(
                "--model {}: expected a .onnx output (a QDQ ONNX model)",
                path.display()
            ),
        )),
    }
}

impl Deployment {
    /// The one-line summary `model_deploy` prints: mode, processor, layer
    /// counts per precision, tensors quantized.
    pub fn summary(&self) -> Vec<String> {
        let q = &self.quantized;
        let counts: Vec<String> = q
            .plan
            .counts()
            .iter()
            .map(|(m, n)| format!("{n} {m}"))
            .collect();
        let mut lines = self.awq_summary.clone();
        lines.extend(self.hessian_summary.iter().cloned());
        lines.push(format!(
            "{}: {} for {} ({}); {} tensors quantized, {} int8 weights, {} int32 biases, {} tensors rounded to a float type{}",
            self.model.display(),
            self.mode,
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
        ));
        for name in &q.report.f32_fallbacks {
            lines.push(format!(
                "  {name}: F32 (the weight shift would be negative on this chip)"
            ));
        }
        lines
    }

    /// How many samples `arrays` (keyed by input name) stack for this
    /// model's batch. `source` names the arrays in messages.
    pub fn sample_count(&self, arrays: &[(String, Tensor)], source: &str) -> Result<usize> {
        Ok(model::samples_from_arrays(&self.simulation, arrays, source)?.len())
    }

    /// Runs the simulation on named arrays (keyed by input name; the npz of
    /// `--test_input`), and returns its float tensors by name: the
    /// outputs, or with `all` every tensor. Arrays that stack several
    /// samples on axis 0 run one by one and the tensors come back stacked
    /// the same way. `source` names the arrays in messages.
    pub fn simulate(
        &self,
        arrays: &[(String, Tensor)],
        all: bool,
        source: &str,
    ) -> Result<Vec<(String, Tensor)>> {
        let samples = self.simulation_samples(arrays, source)?;
        let keep = if all { Keep::All } else { Keep::Outputs };
        let results = self.simulation.run_samples(samples, &keep, |_| NoHook)?;
        self.stack_results(results.into_iter().map(|(v, _)| v).collect())
    }

    /// [`Deployment::simulate`] with each sample's run made by `run`, one
    /// sample after the other in order: a caller that watches the runs (a
    /// report's value hook, measurements beside each run) makes them with
    /// `self.simulation` and returns the values it kept with the `Keep`
    /// given. The tensors returned are the same as `simulate`'s when `run`
    /// runs the simulation unchanged.
    pub fn simulate_each(
        &self,
        arrays: &[(String, Tensor)],
        all: bool,
        source: &str,
        run: &mut SampleRun<'_>,
    ) -> Result<Vec<(String, Tensor)>> {
        let samples = self.simulation_samples(arrays, source)?;
        let keep = if all { Keep::All } else { Keep::Outputs };
        let results = samples
            .into_iter()
            .map(|s| run(s, &keep))
            .collect::<Result<Vec<_>>>()?;
        self.stack_results(results)
    }

    fn simulation_samples(
        &self,
        arrays: &[(String, Tensor)],
        source: &str,
    ) -> Result<Vec<Vec<(ValueId, Tensor)>>> {
        let samples = model::samples_from_arrays(&self.simulation, arrays, source)?;
        if samples.is_empty() {
            bail!("--test_input {source}: holds no sample");
        }
        Ok(samples)
    }

    /// The float tensors the runs kept, by name, stacked over the samples.
    fn stack_results(&self, results: Vec<Values>) -> Result<Vec<(String, Tensor)>> {
        let g = self.simulation.graph();
        let mut named: Vec<(String, Tensor)> = Vec::new();
        let mut parts: Vec<Vec<Tensor>> = Vec::new();
        for (s, values) in results.iter().enumerate() {
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
        Ok(named)
    }

    /// Writes the QDQ ONNX model at `path` (atomically), with the source
    /// ONNX model's input and output names, its 4-bit weight-only layers
    /// packed as MatMulNBits where they fit; returns how many were packed.
    pub fn write_onnx(&self, path: &Path) -> Result<usize> {
        // The exported model is a drop-in replacement for the source model,
        // so its inputs and outputs carry the source's ONNX names.
        let mut qdq = self.quantized.qdq.clone();
        qtune_deploy::rename_io(&mut qdq, &self.onnx_io.inputs, &self.onnx_io.outputs)
            .with_context(|| format!("naming the outputs of `{}`", path.display()))?;
        let context = || format!("writing `{}`", path.display());
        let mut model = qtune_onnx::export_model(&qdq, &qtune_onnx::ExportOptions::default())
            .with_context(context)?;
        let packed = qtune_onnx::pack_int4(&qdq, &mut model);
        qtune_onnx::write_model(&model, path).with_context(context)?;
        Ok(packed)
    }
}

/// `path` loaded to run: as it is (the file's names) when `settings` is
/// `None`, else quantized per `settings` and simulated (TPU-MLIR op names,
/// BatchNorm folded into Conv, as TPU-MLIR's lowering does); the input
/// attributes and ONNX names are the file's either way.
pub fn load_runnable(
    path: &Path,
    settings: Option<&QuantizeSettings>,
    reporter: &dyn Reporter,
) -> Result<model::LoadedModel> {
    let Some(settings) = settings else {
        return crate::model::load_model(path, None, &PrepareOptions::default(), Naming::AsInFile);
    };
    let mut prepare = PrepareOptions::default();
    prepare.fold_batchnorm = true;
    let loaded = crate::model::load_model(path, None, &prepare, Naming::TopOps)?;
    let q = quantize(loaded.exec.graph(), settings, reporter)?;
    Ok(model::LoadedModel {
        exec: crate::model::executor_of(&q.simulation_graph(), path)?,
        input_attrs: loaded.input_attrs,
        onnx_io: loaded.onnx_io,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting_of(r: Result<()>) -> String {
        match r {
            Err(Error::Setting { setting, .. }) => setting,
            other => panic!("expected a setting error, got {other:?}"),
        }
    }

    #[test]
    fn weight_methods_are_checked_against_the_mode_and_the_samples() {
        let mut s = QuantizeSettings {
            mode: QuantMode::W4F16,
            ..QuantizeSettings::default()
        };
        // TPU-MLIR's rule needs nothing.
        assert!(check_weight_method(&s).is_ok());
        s.weight_only.method = WeightMethod::Clip;
        assert!(check_weight_method(&s).is_ok());
        // GPTQ needs samples; with them it passes.
        s.weight_only.method = WeightMethod::Gptq;
        assert_eq!(setting_of(check_weight_method(&s)), "q_method");
        let mut cal = WeightCalibration::new(CalibrationSource::Dataset("d".into()));
        s.weight_calibration = Some(cal.clone());
        assert!(check_weight_method(&s).is_ok());
        cal.bias_correction = true;
        s.weight_calibration = Some(cal.clone());
        assert_eq!(setting_of(check_weight_method(&s)), "q_bias_correction");
        cal.sequential = true;
        s.weight_calibration = Some(cal);
        assert!(check_weight_method(&s).is_ok());
        // Samples, act-order and dampening are GPTQ's only.
        s.weight_only.method = WeightMethod::Clip;
        assert_eq!(setting_of(check_weight_method(&s)), "calibration_data");
        s.weight_calibration = None;
        s.weight_only.damp_ppm = 5;
        assert_eq!(setting_of(check_weight_method(&s)), "q_damp");
        s.weight_only.damp_ppm = 0;
        s.weight_only.act_order = true;
        assert_eq!(setting_of(check_weight_method(&s)), "q_act_order");
        // A method other than rtn needs weight-only layers: a mode with
        // them or a qtable that may name some.
        s.weight_only.act_order = false;
        s.mode = QuantMode::Int8;
        let e = check_weight_method(&s).unwrap_err();
        assert!(e.message().contains("--quantize INT8 has none"), "{e}");
        s.quantize_table = Some("qtable".into());
        assert!(check_weight_method(&s).is_ok());
    }

    #[test]
    fn awq_settings_are_checked_against_the_mode_method_and_samples() {
        let cal = WeightCalibration::new(CalibrationSource::Dataset("d".into()));
        let mut s = QuantizeSettings {
            mode: QuantMode::W4F16,
            awq: true,
            ..QuantizeSettings::default()
        };
        // AWQ needs samples, with any method (rtn included).
        let e = check_weight_method(&s).unwrap_err();
        assert_eq!(setting_of(Err(e.clone())), "q_awq");
        assert!(e.message().contains("needs --calibration_data"), "{e}");
        s.weight_calibration = Some(cal.clone());
        assert!(check_weight_method(&s).is_ok());
        // Its samples are not a GPTQ-only setting then; sequential GPTQ is
        // refused (the scales come from the float model's inputs).
        s.weight_only.method = WeightMethod::Gptq;
        assert!(check_weight_method(&s).is_ok());
        let mut seq = cal.clone();
        seq.sequential = true;
        s.weight_calibration = Some(seq.clone());
        let e = check_weight_method(&s).unwrap_err();
        assert!(e.message().contains("not with --q_sequential"), "{e}");
        // A mode without weight-only layers and no qtable: nothing to scale.
        s.weight_only.method = WeightMethod::Rtn;
        s.weight_calibration = Some(cal.clone());
        s.mode = QuantMode::F16;
        let e = check_weight_method(&s).unwrap_err();
        assert_eq!(setting_of(Err(e.clone())), "q_awq");
        assert!(e.message().contains("--quantize F16 has none"), "{e}");
        s.quantize_table = Some("qtable".into());
        assert!(check_weight_method(&s).is_ok());

        // The output-error clip search: clip / gptq_clip only, with samples,
        // not sequential.
        let mut s = QuantizeSettings {
            mode: QuantMode::W4F16,
            ..QuantizeSettings::default()
        };
        s.weight_only.clip_by_output = true;
        s.weight_calibration = Some(cal.clone());
        let e = check_weight_method(&s).unwrap_err();
        assert_eq!(setting_of(Err(e.clone())), "q_awq_clip");
        assert!(e.message().contains("(--q_method is rtn)"), "{e}");
        s.weight_only.method = WeightMethod::Clip;
        assert!(check_weight_method(&s).is_ok());
        s.weight_only.method = WeightMethod::GptqClip;
        assert!(check_weight_method(&s).is_ok());
        s.weight_calibration = Some(seq);
        assert_eq!(setting_of(check_weight_method(&s)), "q_awq_clip");
        s.weight_only.method = WeightMethod::Clip;
        s.weight_calibration = None;
        let e = check_weight_method(&s).unwrap_err();
        assert!(e.message().contains("needs --calibration_data"), "{e}");
        // Without AWQ, samples with clip are GPTQ's setting, and the message
        // says what else takes them.
        s.weight_only.clip_by_output = false;
        s.weight_calibration = Some(cal);
        let e = check_weight_method(&s).unwrap_err();
        assert_eq!(setting_of(Err(e.clone())), "calibration_data");
        assert!(
            e.message()
                .contains("gptq / gptq_clip or --q_awq / --q_awq_clip only"),
            "{e}"
        );
    }

    #[test]
    fn damping_is_kept_in_millionths_within_its_range() {
        assert_eq!(damp_ppm(0.01).unwrap(), 10_000);
        assert_eq!(damp_ppm(10.0).unwrap(), 10_000_000);
        // The smallest positive value is not the default's 0.
        assert_eq!(damp_ppm(1e-9).unwrap(), 1);
        for bad in [0.0, -0.1, 10.5, f64::NAN] {
            assert!(damp_ppm(bad).is_err(), "{bad}");
        }
    }
}
