//! `model_deploy` / `qtune deploy`: quantizes a model per processor profile,
//! calibration table and qtable, simulates it (fake quantization on the
//! executor), checks it against a reference, and writes it as a QDQ ONNX model.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use qtune_quant::QuantMode;
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
    /// `<name>_in_f32.npz`) to run the quantized model on.
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
        .unwrap_or_else(|| default_tolerance(mode).to_string());
    let tol = Tolerance::parse(&tol_text).map_err(|e| anyhow::anyhow!("--tolerance: {e}"))?;
    if args.test_reference.is_some() && args.test_input.is_none() {
        bail!("--test_reference needs --test_input (the arrays to run the model on)");
    }
    let mut settings = args.quant.settings()?;
    settings.mode = mode;
    let deployment = qtune::deploy(&args.mlir, &settings, &crate::progress::Stderr)?;
    let graph = &deployment.graph;
    let q = &deployment.quantized;
    let exec = &deployment.simulation;
    if !args.quiet {
        for line in deployment.summary() {
            eprintln!("{line}");
        }
    }
    if let Some(input) = &args.test_input {
        verify(&args, &deployment, input, tol, &tol_text)?;
    }
    // The npz written above keeps TPU-MLIR's op names, as TPU-MLIR's
    // `_tpu_outputs.npz` and `--test_reference` files do; the model takes
    // the source's ONNX names.
    let packed = deployment.write_onnx(&args.model)?;
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
            sim: exec,
        };
        report(&args, mode, deploy_time, graph, prebuilt)?;
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
    deployment: &qtune::Deployment,
    input: &Path,
    tol: Tolerance,
    tol_text: &str,
) -> Result<()> {
    let arrays = read_npz(input)?;
    let named = deployment.simulate(&arrays, args.compare_all, &input.display().to_string())?;
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
