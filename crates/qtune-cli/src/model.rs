//! Loading a model file into an executor, and matching npz arrays to graph
//! inputs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use qtune_exec::{Executor, PrepareOptions};
use qtune_ir::ValueId;
use qtune_ir::mlir::{
    InputAttrs, MlirWriteOptions, read_top_mlir, read_top_mlir_file, write_top_mlir,
};
use qtune_onnx::ImportOptions;
use qtune_tensor::Tensor;

/// Parses TPU-MLIR's `--input_shapes` form: `[[1,3,224,224],[1,128]]`
/// (also accepts a single `[1,3,224,224]`).
pub fn parse_input_shapes(s: &str) -> Result<Vec<Vec<usize>>> {
    let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let inner = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .with_context(|| format!("--input_shapes `{s}`: expected a form like [[1,3,224,224]]"))?;
    let groups: Vec<&str> = if inner.starts_with('[') {
        inner
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .map(|t| t.split("],[").collect())
            .with_context(|| format!("--input_shapes `{s}`: unbalanced brackets"))?
    } else {
        vec![inner]
    };
    groups
        .iter()
        .map(|g| {
            g.split(',')
                .map(|d| {
                    d.parse::<usize>()
                        .with_context(|| format!("--input_shapes `{s}`: `{d}` is not a dimension"))
                })
                .collect()
        })
        .collect()
}

/// Imports and prepares a model (`.onnx` or Top-dialect `.mlir`); tensors
/// keep the names of the file (ONNX tensor names, or .mlir op names).
pub fn load(path: &Path, input_shapes: Option<&str>) -> Result<Executor> {
    load_with(path, input_shapes, &PrepareOptions::default())
}

/// Imports and prepares a model with explicit preparation options.
pub fn load_with(
    path: &Path,
    input_shapes: Option<&str>,
    prepare: &PrepareOptions,
) -> Result<Executor> {
    Ok(load_model(path, input_shapes, prepare, Naming::AsInFile)?.exec)
}

/// How the tensors of a loaded model are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// As in the file: ONNX tensor names, or the op names of a .mlir.
    AsInFile,
    /// TPU-MLIR op names (`<first output>_<OpType>`) for both file kinds, as
    /// calibration tables and qtables need. An ONNX model goes through the
    /// same .mlir writer and reader as `model_transform`.
    TopOps,
}

/// A prepared model and what its file says about input preprocessing.
pub struct LoadedModel {
    pub exec: Executor,
    /// `top.Input` attributes per graph input (empty for ONNX files).
    pub input_attrs: Vec<InputAttrs>,
    /// The graph's input and output names as the source ONNX model has
    /// them (see [`OnnxIoNames`]).
    pub onnx_io: OnnxIoNames,
}

/// The graph input and output names of the source ONNX model, in graph
/// order: what ONNX Runtime feeds and fetches by. Exact for a `.onnx` file;
/// for a `.mlir` the outputs are derived from TPU-MLIR's op names
/// (`<output>_<OnnxOpType>`, [`qtune_deploy::onnx_name_of`]) and the inputs
/// are the `top.Input` names, which TPU-MLIR takes from the ONNX inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnnxIoNames {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl OnnxIoNames {
    fn of_onnx(graph: &qtune_ir::Graph) -> Self {
        let names = |ids: &[ValueId]| ids.iter().map(|&v| graph.value(v).name.clone()).collect();
        OnnxIoNames {
            inputs: names(&graph.inputs),
            outputs: names(&graph.outputs),
        }
    }

    fn of_top(graph: &qtune_ir::Graph) -> Self {
        OnnxIoNames {
            inputs: graph
                .inputs
                .iter()
                .map(|&v| graph.value(v).name.clone())
                .collect(),
            outputs: graph
                .outputs
                .iter()
                .map(|&v| qtune_deploy::onnx_name_of(&graph.value(v).name).to_string())
                .collect(),
        }
    }
}

/// Imports a model file into an executor; see [`Naming`].
pub fn load_model(
    path: &Path,
    input_shapes: Option<&str>,
    prepare: &PrepareOptions,
    naming: Naming,
) -> Result<LoadedModel> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut opts = ImportOptions::default();
    if let Some(s) = input_shapes {
        opts = ImportOptions::with_input_shapes(parse_input_shapes(s)?);
    }
    let mut onnx_io = None;
    let (graph, input_attrs) = match ext.as_str() {
        "onnx" => {
            let graph = import_onnx_named(path, &opts)?;
            onnx_io = Some(OnnxIoNames::of_onnx(&graph));
            if naming == Naming::TopOps {
                let graph = canonical_top_graph(graph, path)?;
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (text, weights) = write_top_mlir(&graph, &MlirWriteOptions::new(stem))?;
                let (g, _) = read_top_mlir(&text, &weights, &path.display().to_string())?;
                (g, Vec::new())
            } else {
                (graph, Vec::new())
            }
        }
        "mlir" => {
            if input_shapes.is_some() {
                bail!(
                    "--input_shapes applies to .onnx models; `{}` already has static shapes",
                    path.display()
                );
            }
            read_top_mlir_file(path)?
        }
        _ => bail!(
            "model `{}`: unknown model format (expected .onnx or .mlir)",
            path.display()
        ),
    };
    // A QDQ model (e.g. model_deploy's output) runs its int8 layers on
    // integers, as the quantized-model simulation does. Its `Conv -> Relu
    // -> QuantizeLinear` chains become fused Conv+Relu first, so that the
    // requantization clamps the activation as the simulation and ONNX
    // Runtime's integer kernels do (clamping the float value and then
    // quantizing rounds differently).
    let graph = if graph
        .nodes()
        .any(|(_, n)| matches!(n.op, qtune_ir::Op::DequantizeLinear { .. }))
    {
        let mut graph = graph;
        qtune_ir::passes::fuse_relus(&mut graph);
        qtune_deploy::integer_exact(&graph)
    } else {
        graph
    };
    let onnx_io = onnx_io.unwrap_or_else(|| OnnxIoNames::of_top(&graph));
    let graph = prepare_graph(graph, prepare, path)?;
    let exec = Executor::new(graph).with_context(|| format!("model `{}`", path.display()))?;
    Ok(LoadedModel {
        exec,
        input_attrs,
        onnx_io,
    })
}

/// TPU-MLIR's canonical Top graph of an imported ONNX model, as
/// `model_transform` writes it (`qtune_exec::prepare_top`).
pub fn canonical_top_graph(graph: qtune_ir::Graph, path: &Path) -> Result<qtune_ir::Graph> {
    let (graph, _) =
        qtune_exec::prepare_top(graph).with_context(|| format!("model `{}`", path.display()))?;
    Ok(graph)
}

fn prepare_graph(
    graph: qtune_ir::Graph,
    opts: &PrepareOptions,
    path: &Path,
) -> Result<qtune_ir::Graph> {
    let (graph, _) =
        qtune_exec::prepare(graph, opts).with_context(|| format!("model `{}`", path.display()))?;
    Ok(graph)
}

/// Splits npz arrays into per-sample graph inputs. An array may hold
/// several samples stacked on axis 0 (shape `[k * n, ...]` for an input of
/// shape `[n, ...]`); every input must hold the same number of samples.
pub fn samples_from_arrays(
    exec: &Executor,
    arrays: &[(String, Tensor)],
    source: &str,
) -> Result<Vec<Vec<(ValueId, Tensor)>>> {
    let g = exec.graph();
    let mut per_input = Vec::new();
    let mut count = None;
    for &id in &g.inputs {
        let v = g.value(id);
        let expected = g.shape_of(id)?;
        let Some((_, t)) = arrays.iter().find(|(n, _)| *n == v.name) else {
            let have: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
            bail!(
                "{source} has no array for graph input `{}` (it has: {})",
                v.name,
                have.join(", ")
            );
        };
        if t.dtype() != v.dtype {
            bail!(
                "{source}, array `{}`: expected {} data, got {}",
                v.name,
                v.dtype,
                t.dtype()
            );
        }
        let (ed, td) = (expected.dims(), t.dims());
        let k = if td == ed {
            1
        } else if !ed.is_empty()
            && td.len() == ed.len()
            && td[1..] == ed[1..]
            && ed[0] > 0
            && td[0] % ed[0] == 0
            && td[0] > 0
        {
            td[0] / ed[0]
        } else {
            bail!(
                "{source}, array `{}`: expected shape {expected} (or a multiple of it along axis 0), got {}",
                v.name,
                t.shape()
            );
        };
        if *count.get_or_insert(k) != k {
            bail!(
                "{source}: arrays hold different numbers of samples ({} for `{}`)",
                k,
                v.name
            );
        }
        per_input.push((id, t.clone(), ed.first().copied().unwrap_or(1)));
    }
    let count = count.unwrap_or(1);
    (0..count)
        .map(|s| {
            per_input
                .iter()
                .map(|(id, t, n)| {
                    let part = if count == 1 {
                        t.clone()
                    } else {
                        t.slice_outer(s * n, (s + 1) * n)?
                    };
                    Ok((*id, part))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_shapes_forms() {
        assert_eq!(
            parse_input_shapes("[[1,3,224,224]]").unwrap(),
            vec![vec![1, 3, 224, 224]]
        );
        assert_eq!(
            parse_input_shapes("[[1,128], [1,128]]").unwrap(),
            vec![vec![1, 128], vec![1, 128]]
        );
        assert_eq!(parse_input_shapes("[1,3]").unwrap(), vec![vec![1, 3]]);
        assert!(parse_input_shapes("1,3").is_err());
        assert!(
            parse_input_shapes("[[1,x]]")
                .unwrap_err()
                .to_string()
                .contains("`x`")
        );
    }
}

/// How to quantize a model before running it (`model_deploy`'s flags; the
/// examples take them too, to run the fake-quantized model).
#[derive(clap::Args, Debug, Clone)]
pub struct QuantArgs {
    /// INT8, F16, BF16 or F32 (default: INT8 with a calibration table, else F32).
    #[arg(long)]
    pub quantize: Option<String>,
    /// Calibration table (run_calibration's output) for the INT8 layers.
    #[arg(long = "calibration_table", alias = "calibration-table")]
    pub calibration_table: Option<std::path::PathBuf>,
    /// Qtable: layers kept at another precision (`name F16` per line, mode in
    /// any case). Rows naming no op of the model and one-token lines are
    /// skipped with a warning, as TPU-MLIR skips them (see --strict).
    #[arg(long = "quantize_table", alias = "quantize-table")]
    pub quantize_table: Option<std::path::PathBuf>,
    /// Target processor: bm1684x, bm1684, bm1688, bm1690, cv186x, cv183x,
    /// cv182x, cv181x, cv180x.
    #[arg(long, visible_alias = "chip", default_value = "bm1684x")]
    pub processor: String,
    /// INT8 asymmetric: activations use the table's (min, max) with a zero
    /// point instead of the symmetric threshold (TPU-MLIR's --asymmetric).
    #[arg(long)]
    pub asymmetric: bool,
    /// Gemm / fully connected weights per output channel instead of per
    /// tensor (TPU-MLIR's --matmul_perchannel; BM1684X family and cv18xx).
    #[arg(long = "matmul_perchannel", alias = "matmul-perchannel")]
    pub matmul_perchannel: bool,
    /// Float type of the ops the chip keeps in float (auto: the chip's).
    #[arg(long = "fp_type", alias = "fp-type", default_value = "auto")]
    pub fp_type: String,
    /// Qtable lines TPU-MLIR skips (rows naming no op of the model, lines
    /// with one token) are errors (exit 2) instead of one warning line.
    #[arg(long)]
    pub strict: bool,
    /// Weight-only layers (W8F16, W8BF16, W4F16, W4BF16): one scale per
    /// group of N weights along the input (reduction) axis; N must divide
    /// every such layer's K. Omitted: one scale per output channel
    /// (TPU-MLIR's default 0).
    #[arg(long = "q_group_size", alias = "q-group-size")]
    pub q_group_size: Option<usize>,
    /// Weight-only groups are symmetric (zero point 128 / 8) instead of
    /// asymmetric (TPU-MLIR's --q_symmetric; needs --q_group_size).
    #[arg(long = "q_symmetric", alias = "q-symmetric")]
    pub q_symmetric: bool,
}

impl QuantArgs {
    /// Whether any quantization was asked for.
    pub fn requested(&self) -> bool {
        self.quantize.is_some()
            || self.calibration_table.is_some()
            || self.quantize_table.is_some()
            || self.asymmetric
    }

    /// The `--quantize` mode.
    pub fn mode(&self) -> Result<qtune_quant::QuantMode> {
        use qtune_quant::QuantMode;
        let default = if self.calibration_table.is_some() {
            "INT8"
        } else {
            "F32"
        };
        let s = self
            .quantize
            .as_deref()
            .unwrap_or(default)
            .to_ascii_uppercase();
        match QuantMode::parse(&s) {
            Some(m @ (QuantMode::Int8 | QuantMode::F16 | QuantMode::BF16 | QuantMode::F32)) => {
                Ok(m)
            }
            Some(m) if m.is_weight_only() => Ok(m),
            _ => bail!(
                "--quantize {s}: qtune simulates and exports INT8, F16, BF16, F32 and the \
                 weight-only W8F16, W8BF16, W4F16, W4BF16 (TPU-MLIR's other modes need its \
                 backend)"
            ),
        }
    }

    /// `--q_group_size` / `--q_symmetric`. An explicit 0 is refused (TPU-MLIR
    /// reads 0 as per channel; here that is the flag's absence, so that a 0
    /// computed by a script by mistake does not silently change the scheme).
    pub fn weight_only(&self) -> Result<qtune_deploy::WeightOnly> {
        let group_size = match self.q_group_size {
            Some(0) => bail!(
                "--q_group_size 0: expected a positive group size (values per scale along the \
                 input axis); omit the flag for one scale per output channel"
            ),
            Some(g) => g,
            None => 0,
        };
        if self.q_symmetric && group_size == 0 {
            bail!(
                "--q_symmetric needs --q_group_size: TPU-MLIR applies it to per-group weights \
                 only (per-channel weights follow fixed rules)"
            );
        }
        Ok(qtune_deploy::WeightOnly {
            group_size,
            symmetric: self.q_symmetric,
            ..Default::default()
        })
    }

    pub fn processor(&self) -> Result<qtune_deploy::Processor> {
        qtune_deploy::Processor::parse(&self.processor).with_context(|| {
            let all: Vec<&str> = qtune_deploy::Processor::ALL
                .iter()
                .map(|p| p.name())
                .collect();
            format!(
                "--processor {}: expected one of {}",
                self.processor,
                all.join(", ")
            )
        })
    }

    /// The rows of the qtable at `path` that apply to `graph`. Lines
    /// TPU-MLIR skips are skipped with one warning line, or refused with
    /// `--strict`; rows with a mode qtune cannot deploy are refused.
    fn read_qtable_for(
        &self,
        graph: &qtune_ir::Graph,
        path: &Path,
    ) -> Result<Vec<(String, qtune_quant::QuantMode)>> {
        let file = qtune_quant::read_qtable(path)?;
        let matched = qtune_deploy::match_qtable(graph, &file);
        if let Some(summary) = matched.skipped_summary(path) {
            if self.strict {
                bail!("{summary} (refused: --strict)");
            }
            eprintln!("warning: {summary} (skipped; --strict makes this an error)");
        }
        matched.check_modes(path)?;
        Ok(matched.pairs())
    }

    /// Plans and builds the quantized model of `graph`.
    pub fn quantize(&self, graph: &qtune_ir::Graph) -> Result<qtune_deploy::QuantizedModel> {
        self.quantize_with(graph, qtune_deploy::WeightOnly::default(), None)
    }

    /// [`QuantArgs::quantize`] with a weight-only method other than
    /// TPU-MLIR's (model_deploy's `--q_method`, `--q_act_order`,
    /// `--q_damp`: the `method`, `act_order` and `damp_ppm` of `method`;
    /// the group size and symmetry come from these flags) and the input
    /// Hessians the GPTQ methods need.
    pub fn quantize_with(
        &self,
        graph: &qtune_ir::Graph,
        method: qtune_deploy::WeightOnly,
        hessians: Option<&qtune_deploy::gptq::Hessians>,
    ) -> Result<qtune_deploy::QuantizedModel> {
        let quantize = self.mode()?;
        let processor = self.processor()?;
        let profile = processor.profile();
        let fp_type = profile
            .float_type(&self.fp_type)
            .map_err(anyhow::Error::msg)?;
        // The reader's warning about rows that are not finite is given
        // here, once, with the ops of this graph each row affects.
        let table = match &self.calibration_table {
            Some(p) => Some(qtune_quant::CalibrationTable::read(p)?),
            None => None,
        };
        if let (Some(t), Some(p)) = (&table, &self.calibration_table) {
            warn_non_finite_rows(t, p, graph);
            warn_unapplied_sections(t, p);
        }
        let qtable = match &self.quantize_table {
            Some(p) => self.read_qtable_for(graph, p)?,
            None => Vec::new(),
        };
        let req = qtune_deploy::PlanRequest {
            quantize,
            calibration: table.as_ref(),
            qtable: &qtable,
            fp_type,
            asymmetric: self.asymmetric,
            matmul_per_channel: self.matmul_perchannel,
            weight_only: qtune_deploy::WeightOnly {
                method: method.method,
                act_order: method.act_order,
                damp_ppm: method.damp_ppm,
                clip_by_output: method.clip_by_output,
                ..self.weight_only()?
            },
        };
        let q = qtune_deploy::quantize_with_hessians(graph, processor, &req, hessians).map_err(
            |e| {
                let ctx = match (&self.calibration_table, &self.quantize_table) {
                    (Some(c), Some(t)) => format!(
                        " (calibration table `{}`, qtable `{}`)",
                        c.display(),
                        t.display()
                    ),
                    (Some(c), None) => format!(" (calibration table `{}`)", c.display()),
                    (None, Some(t)) => format!(" (qtable `{}`)", t.display()),
                    (None, None) => String::new(),
                };
                anyhow::anyhow!("{e}{ctx}")
            },
        )?;
        Ok(q)
    }
}

/// Reads a calibration table and prints its reader warnings (rows set
/// aside because a number is not finite) on stderr.
pub fn read_calibration_table(path: &Path) -> Result<qtune_quant::CalibrationTable> {
    let table = qtune_quant::CalibrationTable::read(path)?;
    for w in table.warnings() {
        eprintln!("warning: calibration table `{}`: {w}", path.display());
    }
    Ok(table)
}

/// Says which sections of a calibration table qtune reads but does not
/// apply when it deploys: `#asym_op` (TPU-MLIR quantizes the listed
/// SiLU/GELU outputs and Conv/MatMul inputs asymmetrically) and
/// `#weight_scale` (MQBench's weight scales). `#int4_th` and `#int4_op`
/// only matter to INT4 layers, which qtune does not deploy.
fn warn_unapplied_sections(table: &qtune_quant::CalibrationTable, path: &Path) {
    if !table.asym_ops.is_empty() {
        eprintln!(
            "warning: calibration table `{}`: the #asym_op section ({} ops: {}) is not applied: \
             qtune quantizes those ops as the rest of the model",
            path.display(),
            table.asym_ops.len(),
            table.asym_ops.join(", ")
        );
    }
    if !table.weight_scales.is_empty() {
        let names: Vec<&str> = table
            .weight_scales
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        eprintln!(
            "warning: calibration table `{}`: the #weight_scale section ({} weights: {}) is not \
             applied: qtune computes weight scales from the weights",
            path.display(),
            names.len(),
            names.join(", ")
        );
    }
}

/// A model ready to run: float, or quantized per `quant` (the QDQ graph,
/// run with fake quantization).
pub struct RunnableModel {
    pub exec: Executor,
    pub quantized: Option<qtune_deploy::QuantizedModel>,
    /// The source model's graph input and output names.
    pub onnx_io: OnnxIoNames,
}

/// Loads `path` and, when `quant` asks for it, quantizes it. Quantized
/// models are loaded with TPU-MLIR op names (the tables' keys) and
/// BatchNorm folded into Conv, as TPU-MLIR's lowering does.
pub fn load_runnable(path: &Path, quant: &QuantArgs) -> Result<RunnableModel> {
    if !quant.requested() {
        let loaded = load_model(path, None, &PrepareOptions::default(), Naming::AsInFile)?;
        return Ok(RunnableModel {
            exec: loaded.exec,
            quantized: None,
            onnx_io: loaded.onnx_io,
        });
    }
    let mut prepare = PrepareOptions::default();
    prepare.fold_batchnorm = true;
    let loaded = load_model(path, None, &prepare, Naming::TopOps)?;
    let q = quant.quantize(loaded.exec.graph())?;
    let exec = executor_of(&q.simulation_graph(), path)?;
    Ok(RunnableModel {
        exec,
        quantized: Some(q),
        onnx_io: loaded.onnx_io,
    })
}

/// [`load_model`] with the model's own names when `quant` asks for no
/// quantization; else the quantized model (TPU-MLIR op names), with the
/// input attributes of the file.
pub fn load_model_quantized(path: &Path, quant: &QuantArgs) -> Result<LoadedModel> {
    if !quant.requested() {
        return load_model(path, None, &PrepareOptions::default(), Naming::AsInFile);
    }
    let mut prepare = PrepareOptions::default();
    prepare.fold_batchnorm = true;
    let loaded = load_model(path, None, &prepare, Naming::TopOps)?;
    let q = quant.quantize(loaded.exec.graph())?;
    Ok(LoadedModel {
        exec: executor_of(&q.simulation_graph(), path)?,
        input_attrs: loaded.input_attrs,
        onnx_io: loaded.onnx_io,
    })
}

/// The executor of a quantized graph (weights' DequantizeLinear folded).
pub fn executor_of(qdq: &qtune_ir::Graph, path: &Path) -> Result<Executor> {
    let (graph, _) = qtune_exec::prepare(qdq.clone(), &PrepareOptions::default())
        .with_context(|| format!("quantized model of `{}`", path.display()))?;
    Executor::new(graph).with_context(|| format!("quantized model of `{}`", path.display()))
}

/// The reader's warning about calibration-table rows that are not finite
/// (one line, as [`read_calibration_table`] gives it), followed by the ops
/// of `graph` that write and read each such tensor. The reader has set the
/// rows aside, as TPU-MLIR's importer ignores them: the tensors are
/// uncalibrated, so an INT8 op reading one fails the plan unless the qtable
/// keeps it in float, and these names are what the user needs for that.
pub fn warn_non_finite_rows(
    table: &qtune_quant::CalibrationTable,
    path: &Path,
    graph: &qtune_ir::Graph,
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
                            crate::commands::info::op_label(graph, id),
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
    eprintln!(
        "warning: calibration table `{}`: {head}; {}",
        path.display(),
        per_row.join("; ")
    );
}

/// [`qtune_onnx::import_onnx`] with every error naming the model file
/// (the importer names the file for file-level errors, and the tensor or
/// node for the others).
pub fn import_onnx_named(path: &Path, opts: &qtune_onnx::ImportOptions) -> Result<qtune_ir::Graph> {
    qtune_onnx::import_onnx(path, opts).map_err(|e| {
        let shown = path.display().to_string();
        if e.to_string().contains(&shown) {
            anyhow::Error::new(e)
        } else {
            anyhow::Error::new(e).context(format!("model `{shown}`"))
        }
    })
}
