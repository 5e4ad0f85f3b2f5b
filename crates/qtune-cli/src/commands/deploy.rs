//! `model_deploy` / `qtune deploy`: quantizes a model per processor profile,
//! calibration table and qtable, simulates it (fake quantization on the
//! executor), checks it against a reference, and writes it as a QDQ ONNX model.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use qtune_deploy::Processor;
use qtune_exec::{NoHook, Parallelism, RunOptions};
use qtune_quant::QuantMode;
use qtune_search::report::{EarlyHistograms, GatherRequest, Gathered, Measurer, Prebuilt};
use qtune_tensor::compare::Tolerance;
use qtune_tensor::{read_npz, write_npz};

use crate::model::QuantArgs;

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
    #[arg(long, requires = "test_reference")]
    pub tolerance: Option<String>,
    /// Compare (and write) every tensor, not only the model outputs.
    #[arg(long = "compare_all", alias = "compare-all", requires = "test_input")]
    pub compare_all: bool,
    /// Comma-separated tensor names not to compare.
    #[arg(long, requires = "test_reference")]
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
    /// Sets the weight-only method, AWQ and the calibration of `settings`
    /// from these flags; flags that do not apply are refused (by
    /// [`qtune::deploy::check_weight_method`], and here those that only
    /// refine `--calibration_data`).
    fn apply(&self, settings: &mut qtune::QuantizeSettings) -> Result<()> {
        let method = qtune::deploy::parse_weight_method(&self.q_method)?;
        settings.weight_only.method = method;
        settings.weight_only.act_order = self.q_act_order;
        settings.weight_only.damp_ppm = match self.q_damp {
            Some(d) => qtune::deploy::damp_ppm(d)?,
            None => 0,
        };
        settings.weight_only.clip_by_output = self.q_awq_clip;
        settings.awq = self.q_awq;
        if self.calibration_data.is_none() {
            let refine = [
                (self.calibration_num.is_some(), "--calibration_num"),
                (
                    self.calibration_mask_input.is_some(),
                    "--calibration_mask_input",
                ),
                (self.q_sequential, "--q_sequential"),
                (self.q_bias_correction, "--q_bias_correction"),
            ];
            if let Some((_, flag)) = refine.iter().find(|(given, _)| *given) {
                // --calibration_num / --calibration_mask_input also refine
                // AWQ's samples; --q_sequential / --q_bias_correction are
                // GPTQ's only.
                let awq_too = flag.starts_with("--calibration");
                if method.needs_calibration() || (awq_too && (self.q_awq || self.q_awq_clip)) {
                    bail!("{flag}: needs --calibration_data DIR");
                }
                bail!(
                    "{flag}: applies to --q_method gptq / gptq_clip{} only (--q_method is {})",
                    if awq_too {
                        " or --q_awq / --q_awq_clip"
                    } else {
                        ""
                    },
                    method.name()
                );
            }
        }
        if self.calibration_num == Some(0) {
            bail!("--calibration_num 0: expected a positive count; omit it for all samples");
        }
        settings.weight_calibration = self.calibration_data.as_ref().map(|dir| {
            let mut c =
                qtune::WeightCalibration::new(qtune::CalibrationSource::Dataset(dir.clone()));
            c.num = self.calibration_num.unwrap_or(0);
            c.mask_input = self.calibration_mask_input.clone();
            c.sequential = self.q_sequential;
            c.bias_correction = self.q_bias_correction;
            c
        });
        qtune::deploy::check_weight_method(settings)?;
        Ok(())
    }
}

/// `model_deploy`: the same flags under TPU-MLIR's tool name.
#[derive(clap::Parser)]
#[command(name = "model_deploy", version, about = "Quantizes a model and writes a QDQ ONNX model (qtune's model_deploy).", long_about = None)]
pub struct ToolArgs {
    #[command(flatten)]
    pub args: Args,
}

pub fn run(args: Args) -> Result<()> {
    super::with_threads(args.threads, || run_inner(args))
}

fn run_inner(args: Args) -> Result<()> {
    let start = std::time::Instant::now();
    qtune::deploy::check_output(&args.model)?;
    args.report.check()?;
    let mode = args.quant.mode()?;
    let tol_text = args
        .tolerance
        .clone()
        .unwrap_or_else(|| qtune::deploy::default_tolerance(mode).to_string());
    let tol = Tolerance::parse(&tol_text).map_err(|e| anyhow::anyhow!("--tolerance: {e}"))?;
    if args.test_reference.is_some() && args.test_input.is_none() {
        bail!("--test_reference needs --test_input (the arrays to run the model on)");
    }
    let mut settings = args.quant.settings()?;
    settings.mode = mode;
    args.weights.apply(&mut settings)?;
    // `--test_reference` is read on another thread while the model is
    // quantized (which leaves a core idle); with an HTML report that thread
    // also computes the report's histograms of the reference's tensors.
    let early_wanted = args.report.report.is_some()
        && args.test_input.is_some()
        && Processor::parse(&args.quant.processor).is_some();
    let (deployment, reference) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<qtune_ir::Graph>();
        let reader = args.test_reference.as_deref().map(|p| {
            s.spawn(move || -> Result<(Arrays, Option<EarlyHistograms>)> {
                let refs = read_npz(p)?;
                let early = match rx.recv() {
                    Ok(g) => EarlyHistograms::compute(&g, &refs).context("measuring the report")?,
                    Err(_) => None,
                };
                Ok((refs, early))
            })
        });
        let mut tx = early_wanted.then_some(tx);
        let deployment =
            qtune::deploy_observed(&args.mlir, &settings, &crate::progress::Stderr, &mut |g| {
                if let Some(tx) = tx.take() {
                    // A closed channel only means the reader stopped on an
                    // error, which it reports itself.
                    let _ = tx.send(g.clone());
                }
            });
        drop(tx);
        let reference = reader.map(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("reading --test_reference: the thread panicked"))
        });
        (deployment, reference)
    });
    let deployment = deployment?;
    let (refs, early) = match reference {
        Some(r) => {
            let (refs, early) = r??;
            (Some(refs), early)
        }
        None => (None, None),
    };
    let graph = &deployment.graph;
    if !args.quiet {
        for line in deployment.summary() {
            eprintln!("{line}");
        }
    }
    let arrays = match &args.test_input {
        Some(p) => Some(read_npz(p)?),
        None => None,
    };
    // The report is measured beside the runs the command makes anyway: its
    // tables are read and its measurer made before them.
    let tables = if args.report.wanted(args.quiet) {
        Some(ReportTables::read(&args, graph)?)
    } else {
        None
    };
    let mut measurer = match &tables {
        Some(t) => measurer(&args, &deployment, t, arrays.as_deref())?
            .map(|m| m.with_early_histograms(early)),
        None => None,
    };
    if let (Some(input), Some(arrays)) = (&args.test_input, &arrays) {
        verify(
            &args,
            &deployment,
            input,
            arrays,
            refs.as_deref(),
            (tol, &tol_text),
            measurer.as_mut(),
        )?;
    }
    // The npz written above keeps TPU-MLIR's op names, as TPU-MLIR's
    // `_tpu_outputs.npz` and `--test_reference` files do; the model takes
    // the source's ONNX names. The report's last pending measures (the
    // last sample's isolated run and histograms) run meanwhile.
    let (packed, measured) = std::thread::scope(|s| {
        let pending = measurer.map(|m| s.spawn(move || m.finish()));
        let packed = deployment.write_onnx(&args.model);
        let measured = pending.map(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("measuring the report: the thread panicked"))
        });
        (packed, measured)
    });
    let packed = packed?;
    let measured = match measured {
        Some(m) => Some(m?.context("measuring the report")?),
        None => None,
    };
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
    if let Some(t) = &tables {
        report(&args, mode, deploy_time, graph, t, measured)?;
    }
    Ok(())
}

/// Named arrays, as an npz file holds them.
type Arrays = Vec<(String, qtune_tensor::Tensor)>;

/// The tables a report of the deployment shows.
struct ReportTables {
    table: Option<qtune_quant::CalibrationTable>,
    qtable: Vec<(String, QuantMode)>,
}

impl ReportTables {
    fn read(args: &Args, graph: &qtune_ir::Graph) -> Result<Self> {
        Ok(ReportTables {
            table: match &args.quant.calibration_table {
                Some(p) => Some(qtune_quant::CalibrationTable::read(p)?),
                None => None,
            },
            qtable: match &args.quant.quantize_table {
                Some(p) => qtune::report::qtable_rows(graph, p, None)?,
                None => Vec::new(),
            },
        })
    }
}

/// The measurer of the report, for the samples of `--test_input` it
/// measures: all of them for a report or chart, the first for the text
/// table alone. None when qtune does not simulate the processor.
fn measurer<'a>(
    args: &Args,
    deployment: &'a qtune::Deployment,
    tables: &'a ReportTables,
    arrays: Option<&[(String, qtune_tensor::Tensor)]>,
) -> Result<Option<Measurer<'a>>> {
    let Some(processor) = Processor::parse(&args.quant.processor) else {
        return Ok(None);
    };
    let fp_type = processor
        .profile()
        .float_type(&args.quant.fp_type)
        .map_err(anyhow::Error::msg)?;
    let count = match (arrays, &args.test_input) {
        (Some(a), Some(p)) => {
            let n = deployment.sample_count(a, &p.display().to_string())?;
            if args.report.report.is_some() || args.report.plot.is_some() {
                n
            } else {
                n.min(qtune::report::RUN_REPORT_SAMPLES)
            }
        }
        _ => 0,
    };
    let m = Measurer::new(
        &GatherRequest {
            graph: &deployment.graph,
            processor,
            quantize: deployment.mode,
            table: tables.table.as_ref(),
            qtable: &tables.qtable,
            fp_type,
            asymmetric: args.quant.asymmetric,
            matmul_per_channel: args.quant.matmul_perchannel,
            method_tables: Vec::new(),
            histograms: args.report.report.is_some(),
            prebuilt: Some(Prebuilt {
                plan: &deployment.quantized.plan,
                sim: &deployment.simulation,
            }),
        },
        count,
    )
    .context("measuring the report")?;
    Ok(Some(m))
}

/// The report of the deployed model, measured on `--test_input`.
fn report(
    args: &Args,
    mode: QuantMode,
    deploy_time: f64,
    graph: &qtune_ir::Graph,
    tables: &ReportTables,
    measured: Option<Gathered>,
) -> Result<()> {
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
    qtune::report::finish(
        &args.report.outputs(args.quiet),
        qtune::report::RunFacts {
            title: "model_deploy".into(),
            model: &args.mlir,
            graph,
            processor: &args.quant.processor,
            dataset: args
                .test_input
                .as_ref()
                .map(|p| format!("{} (--test_input)", p.display()))
                .unwrap_or_else(|| "none (no --test_input)".into()),
            table: tables.table.as_ref(),
            qtable: &tables.qtable,
            fp_type: &args.quant.fp_type,
            quantize: mode,
            asymmetric: args.quant.asymmetric,
            matmul_per_channel: args.quant.matmul_perchannel,
            samples: Vec::new(),
            method_tables: Vec::new(),
            counts,
            timings: vec![qtune_report::Timing::new("deploy", deploy_time)],
            outputs,
            search: None,
            transforms: Vec::new(),
            notes: Vec::new(),
            prebuilt: None,
            measured,
        },
        &crate::progress::Bar::new(args.quiet),
    )?;
    Ok(())
}

/// Runs the simulation on `--test_input` (`arrays`), writes its outputs,
/// and compares them with `--test_reference`. With a report, `measurer`
/// measures beside the runs (the reference arrays serve as the float
/// model's tensors when they hold every one it reads).
fn verify(
    args: &Args,
    deployment: &qtune::Deployment,
    input: &Path,
    arrays: &[(String, qtune_tensor::Tensor)],
    refs: Option<&[(String, qtune_tensor::Tensor)]>,
    (tol, tol_text): (Tolerance, &str),
    measurer: Option<&mut Measurer>,
) -> Result<()> {
    let source = input.display().to_string();
    // Several stacked samples run one by one and their outputs are written
    // stacked the same way (to check the export on a whole validation set);
    // a comparison with --test_reference takes one sample, as TPU-MLIR's.
    if args.test_reference.is_some() {
        let n = deployment.sample_count(arrays, &source)?;
        if n != 1 {
            let g = deployment.simulation.graph();
            bail!(
                "--test_input {source}: holds {n} samples for a batch-{} model; give one with \
                 --test_reference",
                g.inputs
                    .first()
                    .and_then(|&i| g.shape_of(i).ok())
                    .and_then(|s| s.dims().first().copied())
                    .unwrap_or(1)
            );
        }
    }
    let named = match measurer {
        None => deployment.simulate(arrays, args.compare_all, &source)?,
        Some(m) => {
            let sim = &deployment.simulation;
            let g = sim.graph();
            deployment.simulate_each(arrays, args.compare_all, &source, &mut |inputs, keep| {
                if m.wants_sample() {
                    let named: Vec<(String, qtune_tensor::Tensor)> = inputs
                        .into_iter()
                        .map(|(id, t)| (g.value(id).name.clone(), t))
                        .collect();
                    Ok(m.sample(&named, refs, keep)?)
                } else {
                    let opts = RunOptions::new(keep.clone(), Parallelism::Rayon);
                    Ok(sim.run(inputs, &opts, &mut NoHook)?)
                }
            })?
        }
    };
    let out_npz = outputs_path(&args.model);
    write_npz(&out_npz, &named)?;
    if let (Some(reference), Some(refs)) = (&args.test_reference, refs) {
        let excepts: Vec<&str> = args
            .excepts
            .as_deref()
            .map(|s| s.split(',').map(str::trim).collect())
            .unwrap_or_default();
        super::compare::check(
            &named,
            refs,
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
