//! `qtune export`: import (.onnx or .mlir), prepare, and write ONNX.

use std::path::PathBuf;

use anyhow::{Context, Result};
use qtune_exec::PrepareOptions;
use qtune_onnx::{EXPORT_OPSET, ExportOptions, write_onnx};

use crate::model;

#[derive(clap::Args)]
pub struct Args {
    /// The model (.onnx or Top-dialect .mlir).
    model: PathBuf,
    /// The ONNX file to write (replaced atomically).
    #[arg(short, long)]
    output: PathBuf,
    /// Static shapes for dynamic inputs, e.g. [[1,3,224,224]].
    #[arg(long = "input_shapes", alias = "input-shapes")]
    input_shapes: Option<String>,
    /// Keep BatchNormalization as separate nodes (by default it is folded
    /// into the preceding Conv).
    #[arg(long = "no_fold_bn", alias = "no-fold-bn")]
    no_fold_bn: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut prepare = PrepareOptions::default();
    prepare.fold_batchnorm = !args.no_fold_bn;
    let exec = model::load_with(&args.model, args.input_shapes.as_deref(), &prepare)?;
    let g = exec.graph();
    write_onnx(g, &args.output, &ExportOptions::default())
        .with_context(|| format!("exporting `{}`", args.model.display()))?;
    eprintln!(
        "wrote {} (ONNX opset {EXPORT_OPSET}, {} nodes)",
        args.output.display(),
        g.node_count()
    );
    Ok(())
}
