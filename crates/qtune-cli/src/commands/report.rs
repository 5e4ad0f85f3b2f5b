//! `--report FILE.html` / `--plot FILE.svg` on the quantization commands
//! (their flags), and `qtune report` (a report built afterwards from a
//! model and its tables). The measuring and writing are the library's
//! (`qtune::report`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use qtune::report::{self, RunFacts, dataset_label, deploy_graph, loader_samples};
use qtune_quant::{CalibrationTable, QuantMode};
use qtune_report::{Entry, Timing};

pub use crate::flags::ReportFlags;
use crate::progress::Bar;

/// `qtune report`: a report of a model quantized with existing tables.
#[derive(clap::Args)]
pub struct Args {
    /// The float model (.mlir from model_transform, or .onnx).
    pub model: PathBuf,
    /// The calibration table.
    #[arg(long = "calibration_table", alias = "calibration-table")]
    pub calibration_table: PathBuf,
    /// A qtable of layers kept in float.
    #[arg(long = "quantize_table", alias = "quantize-table")]
    pub quantize_table: Option<PathBuf>,
    /// Samples (images, npz or npy), chosen as run_calibration chooses them.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    #[arg(long = "data_list", alias = "data-list")]
    pub data_list: Option<PathBuf>,
    /// Samples to measure on.
    #[arg(long = "input_num", alias = "input-num", default_value_t = 4)]
    pub input_num: usize,
    #[arg(long, alias = "chip", default_value = "bm1684x")]
    pub processor: String,
    /// Float type of the layers kept in float (auto: the chip's).
    #[arg(long = "fp_type", alias = "fp-type", default_value = "auto")]
    pub fp_type: String,
    /// Static shapes for dynamic inputs of an .onnx model.
    #[arg(long = "input_shapes", alias = "input-shapes")]
    pub input_shapes: Option<String>,
    #[command(flatten)]
    pub preprocess: super::preprocess_args::PreprocessArgs,
    /// The HTML report to write.
    #[arg(short = 'o')]
    pub output: PathBuf,
    /// Also write the per-layer chart as FILE.svg.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> Result<()> {
    super::with_threads(args.threads, || run_inner(args))
}

fn run_inner(args: Args) -> Result<()> {
    let start = Instant::now();
    let flags = ReportFlags {
        report: Some(args.output.clone()),
        plot: args.plot.clone(),
    };
    flags.check()?;
    if args.input_num == 0 {
        bail!("--input_num must be at least 1");
    }
    let cal = crate::flags::calibration_input(
        &args.model,
        args.input_shapes.as_deref(),
        &args.preprocess,
        &crate::flags::SampleArgs {
            dataset: args.dataset.as_deref(),
            data_list: args.data_list.as_deref(),
            input_num: args.input_num,
            tune_list: None,
            tune_num: 0,
        },
        false,
    )?;
    let samples = loader_samples(cal.loaded.exec.graph(), &cal.loader, args.input_num)?;
    let graph = deploy_graph(&args.model, args.input_shapes.as_deref())?;
    let table = CalibrationTable::read(&args.calibration_table)?;
    let bar = Bar::new(args.quiet);
    let qtable = match &args.quantize_table {
        Some(p) => report::qtable_rows(&graph, p, (!args.quiet).then_some(&bar as _))?,
        None => Vec::new(),
    };
    let load_time = start.elapsed().as_secs_f64();
    report::finish(
        &flags.outputs(args.quiet),
        RunFacts {
            title: "qtune report".into(),
            model: &args.model,
            graph: &graph,
            processor: &args.processor,
            dataset: dataset_label(args.data_list.as_ref(), args.dataset.as_ref()),
            table: Some(&table),
            qtable: &qtable,
            fp_type: &args.fp_type,
            quantize: QuantMode::Int8,
            asymmetric: false,
            matmul_per_channel: false,
            samples,
            method_tables: Vec::new(),
            counts: vec![Entry::new(
                "calibration table",
                args.calibration_table.display(),
            )],
            timings: vec![Timing::new("load", load_time)],
            outputs: vec![args.output.display().to_string()],
            search: None,
            transforms: Vec::new(),
            notes: Vec::new(),
            prebuilt: None,
            measured: None,
        },
        &bar,
    )?;
    Ok(())
}
