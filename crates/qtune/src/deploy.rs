//! Quantizing a model (`model_deploy`): the plan per processor profile,
//! calibration table and qtable; its integer simulation; the QDQ ONNX
//! export.

use std::path::{Path, PathBuf};

use anyhow::Context;
use qtune_deploy::{Processor, QuantizedModel, WeightOnly};
use qtune_exec::{Executor, Keep, NoHook, PrepareOptions};
use qtune_ir::Graph;
use qtune_quant::{CalibrationTable, QuantMode};
use qtune_tensor::Tensor;

use crate::model::{self, Naming, OnnxIoNames};
use crate::{Error, Reporter, Result, bail};

/// How to quantize a model (`model_deploy`'s quantization flags).
#[derive(Debug, Clone, PartialEq)]
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
    /// [`weight_only`]).
    pub weight_only: WeightOnly,
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
    })
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
    qtune_deploy::quantize(graph, processor, &req).map_err(|e| {
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
    /// The float model (TPU-MLIR op names, BatchNorm folded).
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
}

/// Quantizes the model at `model` per `settings` (`model_deploy` up to the
/// export).
pub fn deploy(
    model: &Path,
    settings: &QuantizeSettings,
    reporter: &dyn Reporter,
) -> Result<Deployment> {
    let loaded = load_for_quantization(model)?;
    let graph = loaded.exec.graph().clone();
    let quantized = quantize(&graph, settings, reporter)?;
    let simulation = model::executor_of(&quantized.simulation_graph(), model)?;
    Ok(Deployment {
        graph,
        quantized,
        simulation,
        onnx_io: loaded.onnx_io,
        model: model.to_path_buf(),
        mode: settings.mode,
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
        let mut lines = vec![format!(
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
        )];
        for name in &q.report.f32_fallbacks {
            lines.push(format!(
                "  {name}: F32 (the weight shift would be negative on this chip)"
            ));
        }
        lines
    }

    /// Runs the simulation on one sample given as named arrays (keyed by
    /// input name; the npz of `--test_input`), and returns its float
    /// tensors by name: the outputs, or with `all` every tensor. `source`
    /// names the arrays in messages.
    pub fn simulate(
        &self,
        arrays: &[(String, Tensor)],
        all: bool,
        source: &str,
    ) -> Result<Vec<(String, Tensor)>> {
        let exec = &self.simulation;
        let samples = model::samples_from_arrays(exec, arrays, source)?;
        if samples.len() != 1 {
            bail!(
                "--test_input {source}: holds {} samples for a batch-{} model; give one",
                samples.len(),
                exec.graph()
                    .inputs
                    .first()
                    .and_then(|&i| exec.graph().shape_of(i).ok())
                    .and_then(|s| s.dims().first().copied())
                    .unwrap_or(1)
            );
        }
        let keep = if all { Keep::All } else { Keep::Outputs };
        let mut results = exec.run_samples(samples, &keep, |_| NoHook)?;
        let (values, _) = results.pop().ok_or_else(|| Error::Internal {
            message: "the simulation of one sample gave no result".into(),
        })?;
        let g = exec.graph();
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for (id, t) in values.iter() {
            let name = &g.value(id).name;
            if g.constant_of(id).is_none() && t.dtype() == qtune_tensor::DType::F32 {
                named.push((name.clone(), t.clone()));
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
