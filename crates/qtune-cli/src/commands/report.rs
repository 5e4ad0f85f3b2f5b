//! `--report FILE.html` / `--plot FILE.svg` on the quantization commands
//! (their flags), and `qtune report` (a report built afterwards from a
//! model and its tables). The measuring and writing are the library's
//! (`qtune::report`).

use std::path::PathBuf;

use anyhow::Result;
use qtune::report;

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
    let outputs = ReportFlags {
        report: Some(args.output.clone()),
        plot: args.plot.clone(),
    }
    .outputs(args.quiet);
    let source = crate::flags::flag_source(args.data_list.as_ref(), args.dataset.as_ref())?;
    let mut r = report::TablesReport::new(&args.model, &args.calibration_table, source, outputs);
    r.quantize_table = args.quantize_table.clone();
    r.input_num = args.input_num;
    r.processor = args.processor.clone();
    r.fp_type = args.fp_type.clone();
    r.input_shapes = args.input_shapes.clone();
    r.preprocess = args.preprocess.settings();
    report::report_of_tables(&r, &Bar::new(args.quiet))?;
    Ok(())
}
