use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use qtune_exec::{Keep, NoHook};
use qtune_tensor::read_npz;

use crate::model;

#[derive(clap::Args)]
pub struct Args {
    /// The model (.onnx).
    model: PathBuf,
    /// Input arrays; samples stacked on axis 0 form the batch.
    #[arg(long)]
    input: PathBuf,
    /// Samples per batch (taken from the input file, cycling if it has fewer).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Worker threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Timed iterations.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed iterations first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
}

pub fn run(args: Args) -> Result<()> {
    super::init_threads(args.threads)?;
    if args.batch == 0 || args.iters == 0 {
        bail!("--batch and --iters must be at least 1");
    }
    let exec = model::load(&args.model, None)?;
    let arrays = read_npz(&args.input)?;
    let samples = model::samples_from_arrays(
        &exec,
        &arrays,
        &format!("input file `{}`", args.input.display()),
    )?;
    let batch: Vec<_> = (0..args.batch)
        .map(|i| samples[i % samples.len()].clone())
        .collect();
    let mut times = Vec::with_capacity(args.iters);
    for i in 0..args.warmup + args.iters {
        let start = Instant::now();
        let out = exec.run_samples(batch.clone(), &Keep::Outputs, |_| NoHook)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        drop(out);
        if i >= args.warmup {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    #[allow(clippy::cast_precision_loss)]
    let per_image = median / args.batch as f64;
    println!(
        "{{\"model\":\"{}\",\"batch\":{},\"threads\":{},\"ms_per_batch_median\":{median:.4},\"ms_per_image_median\":{per_image:.4},\"ms_min\":{:.4}}}",
        args.model.display(),
        args.batch,
        rayon::current_num_threads(),
        times[0]
    );
    Ok(())
}
