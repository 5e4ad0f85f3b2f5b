//! `fp_forward` / `qtune fp-forward`: a qtable keeping the layers before,
//! after or between named ops in float (TPU-MLIR's `fp_forward`; semantics
//! in `qtune_search::fp_forward_layers`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use qtune_exec::PrepareOptions;

use crate::model::{self, Naming};

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
    let processor = qtune_deploy::Processor::parse(&args.processor).with_context(|| {
        let all: Vec<&str> = qtune_deploy::Processor::ALL
            .iter()
            .map(|p| p.name())
            .collect();
        format!(
            "--processor {}: expected one of {}",
            args.processor,
            all.join(", ")
        )
    })?;
    let mode = processor
        .profile()
        .float_type(&args.fp_type)
        .map_err(anyhow::Error::msg)?;
    let inputs = list(&args.fpfwd_inputs);
    let outputs = list(&args.fpfwd_outputs);
    let blocks = args
        .fpfwd_blocks
        .iter()
        .map(|b| qtune_search::parse_block(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    if inputs.is_empty() && outputs.is_empty() && blocks.is_empty() {
        bail!("give at least one of --fpfwd_inputs, --fpfwd_outputs, --fpfwd_blocks");
    }
    // The ops as model_deploy plans them: BatchNorm folded into its Conv
    // (the Conv takes the BatchNorm's name), as TPU-MLIR's canonicalization does.
    let mut prepare = PrepareOptions::default();
    prepare.fold_batchnorm = true;
    let loaded = model::load_model(&args.mlir_file, None, &prepare, Naming::TopOps)?;
    let (layers, warnings) =
        qtune_search::fp_forward_layers(loaded.exec.graph(), &inputs, &outputs, &blocks);
    for w in &warnings {
        eprintln!("{w}");
    }
    let time = match (&args.fixed_time, args.no_time) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => None,
        (None, false) => Some(qtune::python_now()),
    };
    let text =
        qtune_search::fp_forward_table(time.as_deref(), processor.name(), mode.name(), &layers);
    qtune_tensor::write_atomic(&args.output, |w| {
        std::io::Write::write_all(w, text.as_bytes())
    })
    .with_context(|| format!("writing `{}`", args.output.display()))?;
    eprintln!(
        "wrote {} ({} {} layer(s))",
        args.output.display(),
        layers.len(),
        mode
    );
    Ok(())
}
