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
    /// `<name>_in_f32.npz`) to run the quantized model on.
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
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No summary on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub report: super::report::ReportFlags,
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
    let mut quant = args.quant.clone();
    quant.quantize = Some(mode.name().to_string());
    // The model as load_runnable loads a quantized one (TPU-MLIR op names,
    // BatchNorm folded), kept for the report.
    let mut prepare = qtune_exec::PrepareOptions::default();
    prepare.fold_batchnorm = true;
    let loaded = model::load_model(&args.mlir, None, &prepare, model::Naming::TopOps)?;
    let onnx_io = loaded.onnx_io;
    let graph = loaded.exec.graph().clone();
    let q = &quant.quantize(&graph)?;
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
        let mut one = Vec::new();
        for &id in &graph.inputs {
            let name = &graph.value(id).name;
            let t = arrays
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .with_context(|| {
                    format!("--test_input {} has no array `{name}`", input.display())
                })?;
            one.push((name.clone(), t));
        }
        samples.push(one);
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
    if samples.len() != 1 {
        bail!(
            "--test_input {}: holds {} samples for a batch-{} model; give one",
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
    let mut results = exec.run_samples(samples, &keep, |_| NoHook)?;
    let (values, _) = results.pop().context("one sample")?;
    let g = exec.graph();
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for (id, t) in values.iter() {
        let name = &g.value(id).name;
        if g.constant_of(id).is_none() && t.dtype() == qtune_tensor::DType::F32 {
            named.push((name.clone(), t.clone()));
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
