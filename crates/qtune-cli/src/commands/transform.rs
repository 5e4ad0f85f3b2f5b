//! `model_transform`: imports a model, writes TPU-MLIR Top-dialect `.mlir`
//! and its weight npz, and with `--test_input` runs the written model and
//! checks it against the source model. The work is the library's
//! (`qtune::model_transform`); this is flags to settings and one call.

use std::path::PathBuf;

use anyhow::Result;

use super::preprocess_args::PreprocessArgs;

#[derive(clap::Args)]
pub struct Args {
    /// Model name: names the weight file `<name>_top_f32_all_weight.npz` and the test files.
    #[arg(long = "model_name", alias = "model-name")]
    model_name: String,
    /// The source model (.onnx).
    #[arg(long = "model_def", alias = "model-def")]
    model_def: PathBuf,
    /// Input shapes, e.g. [[1,3,224,224]] (required for dynamic dimensions).
    #[arg(long = "input_shapes", alias = "input-shapes")]
    input_shapes: Option<String>,
    #[command(flatten)]
    preprocess: PreprocessArgs,
    /// Comma-separated tensor names at which to cut the graph; they become its outputs.
    #[arg(long = "output_names", alias = "output-names")]
    output_names: Option<String>,
    /// An image (preprocessed with the flags above), .npz (keyed by input name) or .npy to validate with.
    #[arg(long = "test_input", alias = "test-input")]
    test_input: Option<PathBuf>,
    /// Where to write every tensor of the validation run, keyed by op name.
    #[arg(long = "test_result", alias = "test-result")]
    test_result: Option<PathBuf>,
    /// Minimum `cos,euclid` similarity of the .mlir outputs to the source model's.
    #[arg(long, default_value = "0.99,0.99")]
    tolerance: String,
    /// Comma-separated output names to leave out of the validation ("-": none).
    #[arg(long, default_value = "-")]
    excepts: String,
    /// The .mlir file to write.
    #[arg(long)]
    mlir: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// `model_transform` under its own name.
#[derive(clap::Parser)]
#[command(
    name = "model_transform",
    version,
    about = "Imports a model and writes TPU-MLIR Top-dialect .mlir (exit codes: 0 ok, 1 validation below tolerance, 2 bad input)"
)]
pub struct ToolArgs {
    #[command(flatten)]
    pub args: Args,
}

impl Args {
    /// The library's settings of this model_transform run.
    pub fn settings(&self) -> qtune::TransformSettings {
        let mut s = qtune::TransformSettings::new(&self.model_name, &self.model_def, &self.mlir);
        s.input_shapes = self.input_shapes.clone();
        s.preprocess = self.preprocess.settings();
        s.output_names = self.output_names.clone();
        s.test_input = self.test_input.clone();
        s.test_result = self.test_result.clone();
        s.tolerance = self.tolerance.clone();
        s.excepts = self
            .excepts
            .split(',')
            .map(|e| e.trim().to_string())
            .collect();
        s
    }

    /// Worker threads (`--threads`).
    pub fn threads(&self) -> Option<usize> {
        self.threads
    }
}

pub fn run(args: Args) -> Result<()> {
    let settings = args.settings();
    let bar = crate::progress::Bar::new(false);
    qtune::with_threads(args.threads, || qtune::model_transform(&settings, &bar))?;
    Ok(())
}
