use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use qtune_exec::{Keep, NoHook};

use super::preprocess_args::PreprocessArgs;
use crate::model;

#[derive(clap::Args)]
pub struct Args {
    /// The model (.onnx) with one image input and a class-score output.
    model: PathBuf,
    /// An image file or a folder of images (jpg, jpeg, png, bmp; sorted by name).
    #[arg(long)]
    dataset: PathBuf,
    /// Class names, one per line, in output order.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    #[command(flatten)]
    preprocess: PreprocessArgs,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Run the model quantized (fake quantization, as model_deploy
    /// simulates it) with these tables and processor.
    #[command(flatten)]
    quant: model::QuantArgs,
}

fn list_images(path: &Path) -> Result<Vec<PathBuf>> {
    let is_image = |p: &Path| {
        p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "jpg" | "jpeg" | "png" | "bmp"
            )
        })
    };
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let rd = std::fs::read_dir(path).with_context(|| format!("dataset `{}`", path.display()))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "dataset `{}` has no jpg, jpeg, png or bmp file",
            path.display()
        );
    }
    Ok(files)
}

/// Softmax, unless the scores already form a probability distribution.
fn probabilities(scores: &[f32]) -> Vec<f32> {
    let sum: f32 = scores.iter().sum();
    if scores.iter().all(|&s| (0.0..=1.0).contains(&s)) && (sum - 1.0).abs() < 1e-3 {
        return scores.to_vec();
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

pub fn run(args: Args) -> Result<()> {
    super::with_threads(args.threads, || run_inner(args))
}

fn run_inner(args: Args) -> Result<()> {
    let loaded = model::load_runnable(&args.model, &args.quant)?;
    let cfg = super::preprocess_args::model_preprocess(
        &args.preprocess,
        &loaded,
        &args.model,
        "classify",
    )?;
    let exec = loaded.exec;
    let input = exec.graph().inputs[0];
    let labels: Vec<String> = match &args.labels {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("labels file `{}`", p.display()))?
            .lines()
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    let files = list_images(&args.dataset)?;
    let threads = rayon::current_num_threads();
    let stream = qtune_data::preprocess_files(&files, &cfg, threads)?;
    let mut batch = Vec::new();
    let mut names = Vec::new();
    let flush = |batch: &mut Vec<_>, names: &mut Vec<PathBuf>| -> Result<()> {
        let results = exec.run_samples(std::mem::take(batch), &Keep::Outputs, |_| NoHook)?;
        for ((values, _), name) in results.iter().zip(names.drain(..)) {
            let out = values.get(exec.graph().outputs[0]).context("no output")?;
            let probs = probabilities(&out.to_f32_vec());
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
            let file = name
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            println!("{file}");
            for &c in order.iter().take(args.top) {
                let label = labels
                    .get(c)
                    .map_or_else(|| format!("class {c}"), Clone::clone);
                println!("  {:>6.2}%  {label} ({c})", probs[c] * 100.0);
            }
        }
        Ok(())
    };
    for item in stream {
        let (path, tensor) = item?;
        batch.push(vec![(input, tensor)]);
        names.push(path);
        if batch.len() == 2 * threads {
            flush(&mut batch, &mut names)?;
        }
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut names)?;
    }
    Ok(())
}
