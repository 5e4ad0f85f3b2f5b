use std::path::PathBuf;

use anyhow::Result;
use qtune_tensor::{read_npz, write_npz};

use crate::model;

#[derive(clap::Args)]
pub struct Args {
    /// The model (.onnx or .mlir).
    model: PathBuf,
    /// Input arrays keyed by graph input name; arrays may stack several
    /// samples on axis 0.
    #[arg(long)]
    input: PathBuf,
    /// Output npz file.
    #[arg(short, long)]
    output: PathBuf,
    /// Write every tensor (graph inputs and every node output), keyed by
    /// tensor name, not only the graph outputs.
    #[arg(long = "dump_all", alias = "dump-all")]
    dump_all: bool,
    /// Static shapes for dynamic inputs, e.g. [[1,3,224,224]].
    #[arg(long = "input_shapes", alias = "input-shapes")]
    input_shapes: Option<String>,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// Run the model quantized (fake quantization, as model_deploy
    /// simulates it) with these tables and processor.
    #[command(flatten)]
    quant: model::QuantArgs,
}

pub fn run(args: Args) -> Result<()> {
    super::with_threads(args.threads, || run_inner(args))
}

fn run_inner(args: Args) -> Result<()> {
    let exec = if args.quant.requested() {
        if args.input_shapes.is_some() {
            anyhow::bail!("--input_shapes cannot be combined with quantization flags");
        }
        model::load_runnable(&args.model, &args.quant)?.exec
    } else {
        model::load(&args.model, args.input_shapes.as_deref())?
    };
    let arrays = read_npz(&args.input)?;
    let source = format!("input file `{}`", args.input.display());
    let (out, samples) = qtune::model::run_arrays(&exec, &arrays, &source, args.dump_all)?;
    write_npz(&args.output, &out)?;
    eprintln!(
        "wrote {} tensors for {} samples to {}",
        out.len(),
        samples,
        args.output.display()
    );
    Ok(())
}
