//! `fp_forward` / `qtune fp-forward`: a qtable keeping the layers before,
//! after or between named ops in float (TPU-MLIR's `fp_forward`; semantics
//! in `qtune_mixed::fp_forward_layers`).

use std::path::PathBuf;

use anyhow::{Result, bail};

/// Writes a qtable that keeps the layers before (`--fpfwd_inputs`), after
/// (`--fpfwd_outputs`) or between (`--fpfwd_blocks`) named ops in float.
#[derive(clap::Args)]
pub struct Args {
    /// The model: Top-dialect .mlir (model_transform's output) or .onnx.
    pub mlir_file: PathBuf,
    /// Ops (comma-separated) that, with everything before them, stay float.
    #[arg(long = "fpfwd_inputs", alias = "fpfwd-inputs", default_value = "")]
    pub fpfwd_inputs: String,
    /// Ops (comma-separated) that, with everything after them, stay float.
    #[arg(long = "fpfwd_outputs", alias = "fpfwd-outputs", default_value = "")]
    pub fpfwd_outputs: String,
    /// Blocks `s1,s2:e1,e2` (space-separated): the ops on paths from a start
    /// to an end stay float.
    #[arg(long = "fpfwd_blocks", alias = "fpfwd-blocks", num_args = 1..)]
    pub fpfwd_blocks: Vec<String>,
    /// Target processor (decides `--fp_type auto`).
    #[arg(long, visible_alias = "chip")]
    pub processor: String,
    /// Float type of the listed layers: auto (the chip's), F16, F32, BF16.
    #[arg(long = "fp_type", alias = "fp-type", default_value = "auto")]
    pub fp_type: String,
    /// Accepted as in the seed's command (fp_forward is for INT8 models).
    #[arg(long, default_value = "INT8")]
    pub quantize: String,
    /// The qtable to write.
    #[arg(
        short = 'o',
        long = "quantize_free_table",
        alias = "quantize-free-table"
    )]
    pub output: PathBuf,
    /// Write this text as the `# genetated time:` line (reproducible files).
    #[arg(long = "fixed_time", alias = "fixed-time", conflicts_with = "no_time")]
    pub fixed_time: Option<String>,
    /// Leave the `# genetated time:` line out (reproducible files).
    #[arg(long = "no_time", alias = "no-time")]
    pub no_time: bool,
}

/// `fp_forward`: the same flags under TPU-MLIR's tool name.
#[derive(clap::Parser)]
#[command(name = "fp_forward", version, about = "Writes a qtable keeping the layers before, after or between named ops in float (qtune's fp_forward).", long_about = None)]
pub struct ToolArgs {
    #[command(flatten)]
    pub args: Args,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn run(args: Args) -> Result<()> {
    if !args.quantize.eq_ignore_ascii_case("INT8") {
        bail!(
            "--quantize {}: fp_forward chooses float layers of an INT8 model",
            args.quantize
        );
    }
    let mut settings = qtune::search::FpForwardSettings::default();
    settings.model = args.mlir_file.clone();
    settings.processor = args.processor.clone();
    settings.fp_type = args.fp_type.clone();
    settings.inputs = list(&args.fpfwd_inputs);
    settings.outputs = list(&args.fpfwd_outputs);
    settings.blocks = args.fpfwd_blocks.clone();
    let found = qtune::search::fp_forward(&settings, &crate::progress::Stderr)?;
    let time = match (&args.fixed_time, args.no_time) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => None,
        (None, false) => Some(qtune::python_now()),
    };
    found.write(&args.output, time.as_deref())?;
    eprintln!(
        "wrote {} ({} {} layer(s))",
        args.output.display(),
        found.layers.len(),
        found.mode
    );
    Ok(())
}
